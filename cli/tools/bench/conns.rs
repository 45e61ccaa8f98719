//! `supermq bench conns`: open many idle MQTT connections and measure what each costs the
//! broker in resident memory.
//!
//! One local address has about 28,000 ephemeral ports (32768-60999 by default), so beyond
//! that the connections are spread over several source addresses (`--source-ips`; for a
//! loopback broker, 127.0.0.1 and up by default, all of which Linux routes to itself). Each
//! connection sends CONNECT and waits for its CONNACK; then only the byte stream is kept, so
//! the bench itself stays small. With `--pid`, the broker's VmRSS is read before and after,
//! once it has settled, and divided by the number of connections.
//!
//! Every connection is a file descriptor, here and in the broker. The bench raises its own
//! soft limit to the hard limit if it must (with `prlimit`, as the crate has no libc binding);
//! past the hard limit it stops with a line saying how far to raise `ulimit -n`.

use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use supermq::transport::BoxStream;

use super::TargetArgs;
use super::json::JsonLine;
use super::procfs;
use super::run::connect_all;
use crate::client::{Client, ClientError, ConnectOptions};
use crate::tools::ToolError;
use crate::tools::args::HelpArg;

/// Connections per source address before the next one is used, by default.
const PER_SOURCE: usize = 20_000;

/// Descriptors kept free for everything else the process opens.
const SPARE_FILES: u64 = 64;

/// Largest source address range accepted.
const MAX_SOURCES: u32 = 1 << 16;

const PINGREQ: [u8; 2] = [0xC0, 0x00];

/// Open idle connections and report the broker's memory per connection
#[derive(Debug, Args)]
#[command(disable_help_flag = true, after_help = crate::tools::exit::HELP)]
pub struct ConnsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open.
    #[arg(
        short = 'n',
        long = "connections",
        value_name = "N",
        default_value_t = 1000
    )]
    count: usize,
    /// The broker's process id: report its resident memory (VmRSS) per connection.
    #[arg(long, value_name = "PID")]
    pid: Option<u32>,
    /// Local addresses to connect from, in turn: a range (127.0.0.1-127.0.0.20) or a list
    /// (a,b,c) [default for a loopback broker: 127.0.0.1 and up, one per 20000 connections].
    #[arg(long, value_name = "ADDRESSES")]
    source_ips: Option<String>,
    /// Seconds to keep the connections open after measuring.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    hold: u64,
    /// Seconds to let the broker settle before reading its memory.
    #[arg(long, value_name = "SECS", default_value_t = 1)]
    settle: u64,
    /// Keep alive asked for in CONNECT, in seconds; 0 (the default) for none. With one, the
    /// bench pings every connection at half that interval while holding.
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    keep_alive: u16,
    /// Print only the JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    help: HelpArg,
}

impl ConnsArgs {
    pub fn threads(&self) -> usize {
        self.target.threads()
    }
}

pub async fn run(args: ConnsArgs) -> Result<(), ToolError> {
    if args.count == 0 {
        return Err(ToolError::Usage("-n must be at least 1".to_string()));
    }
    ensure_open_files(args.count as u64 + SPARE_FILES)?;
    let endpoints = args.target.endpoints(None, None)?;
    let sources = match &args.source_ips {
        Some(text) => parse_sources(text)?,
        None => default_sources(&args.target.host, args.count),
    };
    let rss_before = broker_rss(args.pid)?;

    let started = Instant::now();
    let prefix = format!("sqc-{:06x}", rand::random::<u32>() & 0xFF_FFFF);
    let opened = connect_all(args.count, |index| {
        let endpoint = endpoints[index % endpoints.len()].clone();
        let source = (!sources.is_empty()).then(|| sources[index % sources.len()]);
        let mut options = ConnectOptions::new(args.target.version, format!("{prefix}-{index}"));
        options.keep_alive = args.keep_alive;
        args.target.auth.apply(&mut options);
        async move {
            let (client, _) = Client::connect_from(&endpoint, &options, source).await?;
            // Only the stream is kept: the bench's own memory stays small.
            Ok(client.into_parts().stream)
        }
    })
    .await;
    let mut streams =
        opened.map_err(|failure| connect_failure(failure.opened, args.count, failure.error))?;
    let connect_time = started.elapsed();

    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_after = broker_rss(args.pid)?;
    let per_connection = rss_before
        .zip(rss_after)
        .map(|(before, after)| after.saturating_sub(before) as f64 / args.count as f64);

    let line = JsonLine::new()
        .string("scenario", "conns")
        .integer("connections", args.count as u64)
        .integer("source_ips", sources.len().max(1) as u64)
        .number("connect_secs", connect_time.as_secs_f64(), 3)
        .number(
            "connect_rate",
            args.count as f64 / connect_time.as_secs_f64().max(f64::EPSILON),
            1,
        )
        .optional_number("rss_before", rss_before.map(|b| b as f64), 0)
        .optional_number("rss_after", rss_after.map(|b| b as f64), 0)
        .optional_number("bytes_per_conn", per_connection, 0)
        .finish();
    if !args.json {
        println!(
            "connections  {} opened in {:.3} s ({:.0}/s) from {} source address(es)",
            args.count,
            connect_time.as_secs_f64(),
            args.count as f64 / connect_time.as_secs_f64().max(f64::EPSILON),
            sources.len().max(1)
        );
        match (rss_before, rss_after, per_connection) {
            (Some(before), Some(after), Some(each)) => println!(
                "broker rss   {:.1} MiB before, {:.1} MiB after: {each:.0} bytes ({:.2} KiB) per connection",
                before as f64 / 1048576.0,
                after as f64 / 1048576.0,
                each / 1024.0
            ),
            _ => println!("broker rss   not measured (give the broker's --pid)"),
        }
    }
    println!("{line}");

    hold(
        &mut streams,
        Duration::from_secs(args.hold),
        args.keep_alive,
    )
    .await;
    let mut closing = tokio::task::JoinSet::new();
    for mut stream in streams {
        closing.spawn(async move {
            let _ = stream.write_all(&[0xE0, 0x00]).await;
            let _ = stream.shutdown().await;
        });
    }
    while closing.join_next().await.is_some() {}
    Ok(())
}

/// Keeps the connections open for `duration`, pinging each at half the keep alive.
async fn hold(streams: &mut [BoxStream], duration: Duration, keep_alive: u16) {
    let end = Instant::now() + duration;
    if keep_alive == 0 {
        tokio::time::sleep_until(end.into()).await;
        return;
    }
    let interval = Duration::from_secs(u64::from(keep_alive)) / 2;
    while Instant::now() < end {
        tokio::time::sleep(interval.min(end - Instant::now())).await;
        for stream in streams.iter_mut() {
            // Errors mean the broker closed the connection; the others go on.
            let _ = stream.write_all(&PINGREQ).await;
            let mut answers = [0u8; 64];
            // A zero timeout takes what has arrived (the PINGRESPs) without waiting.
            while let Ok(Ok(read)) =
                tokio::time::timeout(Duration::ZERO, stream.read(&mut answers)).await
            {
                if read == 0 {
                    break;
                }
            }
        }
    }
}

/// The error for a connection that failed, with the likely fix for running out of
/// descriptors or ports.
fn connect_failure(opened: usize, wanted: usize, error: ClientError) -> ToolError {
    let hint = match &error {
        ClientError::Unreachable { error, .. } => match error.raw_os_error() {
            // EMFILE, ENFILE
            Some(24 | 23) => "; out of file descriptors: raise `ulimit -n`",
            // EADDRNOTAVAIL
            Some(99) => "; out of local ports: add source addresses with --source-ips",
            _ => "",
        },
        ClientError::Timeout { .. } => {
            "; the broker stopped answering (is it out of file descriptors? check its `ulimit -n`)"
        }
        _ => "",
    };
    ToolError::Context {
        message: format!("after {opened} of {wanted} connections: {error}{hint}"),
        source: error,
    }
}

/// Makes sure this process may open `needed` files, raising its soft limit if it must.
fn ensure_open_files(needed: u64) -> Result<(), ToolError> {
    let limits = |_: ()| {
        procfs::open_files_limit()
            .map_err(|error| ToolError::Local(format!("cannot read the open-file limit: {error}")))
    };
    let (soft, hard) = limits(())?;
    if soft.is_none_or(|soft| soft >= needed) {
        return Ok(());
    }
    if hard.is_none_or(|hard| hard >= needed) {
        let hard = hard.map_or("unlimited".to_string(), |hard| hard.to_string());
        // prlimit(1) calls prlimit(2) on this process: the same as `ulimit -n` in our shell.
        let raised = Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={needed}:{hard}"))
            .status();
        if raised.is_ok_and(|status| status.success())
            && limits(())?.0.is_none_or(|soft| soft >= needed)
        {
            return Ok(());
        }
    }
    Err(ToolError::Local(format!(
        "{needed} open files are needed but the limit is {} (hard limit {}): raise it with \
         `ulimit -n {needed}` (the broker needs as many)",
        soft.map_or("unlimited".to_string(), |soft| soft.to_string()),
        hard.map_or("unlimited".to_string(), |hard| hard.to_string()),
    )))
}

/// The broker's resident memory, if its pid was given.
fn broker_rss(pid: Option<u32>) -> Result<Option<u64>, ToolError> {
    pid.map(|pid| {
        procfs::rss_bytes(pid).map_err(|error: io::Error| {
            ToolError::Local(format!("cannot read the memory of process {pid}: {error}"))
        })
    })
    .transpose()
}

/// `127.0.0.1-127.0.0.20` or `a,b,c`.
fn parse_sources(text: &str) -> Result<Vec<IpAddr>, ToolError> {
    let bad = || {
        ToolError::Usage(format!(
            "--source-ips \"{text}\": expected a range of IPv4 addresses (127.0.0.1-127.0.0.20) \
             or a comma-separated list of addresses"
        ))
    };
    if let Some((first, last)) = text.split_once('-') {
        let first = u32::from(first.trim().parse::<Ipv4Addr>().map_err(|_| bad())?);
        let last = u32::from(last.trim().parse::<Ipv4Addr>().map_err(|_| bad())?);
        if last < first || last - first >= MAX_SOURCES {
            return Err(bad());
        }
        return Ok((first..=last)
            .map(|ip| IpAddr::V4(Ipv4Addr::from(ip)))
            .collect());
    }
    text.split(',')
        .map(|ip| ip.trim().parse::<IpAddr>().map_err(|_| bad()))
        .collect()
}

/// For a loopback broker and more connections than one address has ports: 127.0.0.1 and up.
fn default_sources(host: &str, count: usize) -> Vec<IpAddr> {
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback || count <= PER_SOURCE {
        return Vec::new();
    }
    let addresses = count.div_ceil(PER_SOURCE) as u32;
    (1..=addresses)
        .map(|last| {
            IpAddr::V4(Ipv4Addr::from(
                u32::from(Ipv4Addr::new(127, 0, 0, 0)) + last,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ranges_and_lists() {
        let range = parse_sources("127.0.0.1-127.0.0.3").expect("a range");
        assert_eq!(
            range,
            ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
                .map(|ip| ip.parse::<IpAddr>().expect("ip"))
                .to_vec()
        );
        assert_eq!(parse_sources("10.0.0.1, ::1").expect("a list").len(), 2);
        assert!(parse_sources("127.0.0.9-127.0.0.1").is_err());
        assert!(parse_sources("nonsense").is_err());
    }

    #[test]
    fn loopback_brokers_get_enough_sources() {
        assert!(default_sources("127.0.0.1", 20_000).is_empty());
        assert_eq!(default_sources("localhost", 50_000).len(), 3);
        assert!(default_sources("10.1.1.1", 50_000).is_empty());
    }
}
