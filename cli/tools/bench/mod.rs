//! `supermq bench`: a load generator that measures a broker honestly and cheaply.
//!
//! Publishers send pre-encoded frames, patched in place with a sequence number and a send
//! timestamp, many per write, under an in-flight window and an optional rate limit;
//! subscribers read in large batches and account for every message by publisher and sequence
//! number. A run reports what was sent, confirmed, delivered, lost, duplicated and reordered,
//! the publish and delivery rates and the latency percentiles — as a table and as one JSON line
//! for scripts ([`report`]). `bench conns` measures idle connections instead ([`conns`]).
//! `--isolation` runs a shape twice, alone and beside a slow subscriber (`slow`), and reports
//! how much the slow one costs the others.
//!
//! - [`scenario`]: what to run (options, micro-mq presets), checked once;
//! - [`run`](mod@run): connect, warm up, publish, drain, add up;
//! - `publisher`, `subscriber`: the two hot loops, over `buffers` and `frame`; `slow`: the
//!   slow subscriber;
//! - `payload`: the message header and the pre-encoded frames;
//! - `tracker`, `histogram`, `counters`: the accounting;
//! - [`report`] and `json`: the output; `procfs`: memory, CPU and descriptor limits.

mod buffers;
mod conns;
mod counters;
mod frame;
mod histogram;
mod json;
mod payload;
mod procfs;
mod publisher;
pub mod report;
pub mod run;
pub mod scenario;
mod slow;
mod subscriber;
mod tracker;

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use self::conns::ConnsArgs;
use self::scenario::{GroupSyntax, Preset, Request, Scenario};
use supermq::protocol::{ProtocolVersion, QoS};

use super::ToolError;
use super::args::{AuthArgs, HelpArg, TransportArgs, parse_qos, parse_secs, parse_version};
use crate::client::Endpoint;

/// Measure a broker: throughput, loss, latency; or idle connection memory (`bench conns`)
#[derive(Debug, Args)]
#[command(
    disable_help_flag = true,
    args_conflicts_with_subcommands = true,
    after_help = super::exit::HELP
)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    target: TargetArgs,
    /// Broker host(s) for the publishers [default: --host].
    #[arg(long, value_name = "HOSTS")]
    pub_host: Option<String>,
    /// Broker port for the publishers [default: --port].
    #[arg(long, value_name = "PORT")]
    pub_port: Option<u16>,
    /// Broker host(s) for the subscribers [default: --host].
    #[arg(long, value_name = "HOSTS")]
    sub_host: Option<String>,
    /// Broker port for the subscribers [default: --port].
    #[arg(long, value_name = "PORT")]
    sub_port: Option<u16>,
    /// Publishers [default: 1, or the preset's].
    #[arg(long, value_name = "N")]
    pubs: Option<usize>,
    /// Subscribers [default: 1, or the preset's].
    #[arg(long, value_name = "N")]
    subs: Option<usize>,
    /// Messages per publisher [default: 10000, or the preset's].
    #[arg(short = 'n', long, value_name = "N")]
    messages: Option<u32>,
    /// Payload size in bytes, at least 16 [default: 64].
    #[arg(short = 's', long, value_name = "BYTES")]
    size: Option<usize>,
    /// QoS of the publications [default: 0; with --legacy, the QoS levels micro-mq reported].
    #[arg(short = 'q', long, value_name = "QOS", value_parser = parse_qos)]
    qos: Option<QoS>,
    /// QoS of the subscriptions [default: --qos].
    #[arg(long, value_name = "QOS", value_parser = parse_qos)]
    sub_qos: Option<QoS>,
    /// Topic prefix: publisher i sends to PREFIX/i [default: bench/<random run id>].
    #[arg(short = 't', long, value_name = "PREFIX")]
    topic: Option<String>,
    /// All publishers send to PREFIX itself.
    #[arg(long)]
    shared_topic: bool,
    /// Subscribers keep their session after they disconnect, so a broker with persistence
    /// stores what it queues for them: MQTT 3.1.1 clean session 0; MQTT 5 clean start with a
    /// Session Expiry Interval of 3600 s. Client ids are new each run, so a run never resumes
    /// an earlier one's session; the sessions stay in the broker after the run (a 3.1.1 one
    /// until the broker expires or drops it).
    #[arg(long)]
    persistent: bool,
    /// Subscribers join this consumer group: each message goes to one of them.
    #[arg(long, value_name = "NAME")]
    group: Option<String>,
    /// How the group filter is spelled: $share/NAME/... or $g/NAME/...
    #[arg(long, value_name = "SYNTAX", value_enum, default_value = "share")]
    group_syntax: GroupSyntax,
    /// QoS 1/2 messages in flight per publisher (capped by the broker's Receive Maximum).
    #[arg(long, value_name = "N", default_value_t = 64)]
    inflight: usize,
    /// Total messages per second over all publishers, for latency runs [default: unlimited].
    #[arg(long, value_name = "MSGS")]
    rate: Option<f64>,
    /// Messages per publisher sent and delivered before measuring.
    #[arg(long, value_name = "N", default_value_t = 0)]
    warmup: u32,
    /// Once publishing is done, stop waiting for deliveries after this many seconds without one.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    drain_timeout: Duration,
    /// A micro-mq load shape (64-byte payloads).
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Run the three micro-mq shapes and print micro-mq's "Total sent ..." lines.
    #[arg(long, conflicts_with = "preset")]
    legacy: bool,
    /// Run the shape twice, alone and beside a slow subscriber (MQTT 5, Receive Maximum 1,
    /// QoS 1, on every topic of the run), and compare the subscribers' delivery rate and
    /// latency. Publishes at QoS 1 unless -q says 2 (QoS 0 does not count against a Receive
    /// Maximum); needs a subscriber.
    #[arg(long, conflicts_with = "legacy")]
    isolation: bool,
    /// How often the slow subscriber of --isolation acknowledges one message.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 1500,
        requires = "isolation"
    )]
    slow_ack_ms: u64,
    /// Name of the run in the report [default: derived from the shape].
    #[arg(long, value_name = "NAME")]
    scenario: Option<String>,
    /// Output: a table, micro-mq's line, or only the JSON line (all print the JSON line).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
    /// The broker's process id: report the CPU it used.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    #[command(flatten)]
    help: HelpArg,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    Conns(ConnsArgs),
}

/// How a run is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Legacy,
    Json,
}

/// Where the broker is and how to reach it; shared by `bench` and `bench conns`.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// Broker host(s), comma-separated, each HOST or HOST:PORT; clients are spread over them.
    #[arg(short = 'h', long, value_name = "HOSTS", default_value = "127.0.0.1")]
    host: String,
    /// Broker port [default: 1883; 8883 with TLS; 8083 with --ws; 8084 with both].
    #[arg(short = 'p', long, value_name = "PORT")]
    port: Option<u16>,
    /// MQTT version: 311 (also 3.1.1, mqttv311) or 5 (also mqttv5).
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", default_value = "311",
          value_parser = parse_version)]
    version: ProtocolVersion,
    #[command(flatten)]
    auth: AuthArgs,
    #[command(flatten)]
    transport: TransportArgs,
    /// Worker threads of the bench [default: one per CPU].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

impl TargetArgs {
    fn threads(&self) -> usize {
        self.threads
            .or_else(|| std::thread::available_parallelism().ok().map(usize::from))
            .unwrap_or(1)
            .max(1)
    }

    /// One endpoint per host of `hosts` (else `--host`), on `port` (else `--port`, else the
    /// transport's usual port) unless the host names its own.
    fn endpoints(
        &self,
        hosts: Option<&str>,
        port: Option<u16>,
    ) -> Result<Vec<Endpoint>, ToolError> {
        let port = port
            .or(self.port)
            .unwrap_or_else(|| self.transport.default_port());
        let mut endpoints = Vec::new();
        for entry in hosts.unwrap_or(&self.host).split(',') {
            let (host, own_port) = split_host_port(entry.trim())?;
            endpoints.push(self.transport.endpoint(host, own_port.unwrap_or(port))?);
        }
        Ok(endpoints)
    }
}

impl BenchArgs {
    /// Worker threads for the runtime.
    pub fn threads(&self) -> usize {
        match &self.command {
            Some(BenchCommand::Conns(conns)) => conns.threads(),
            None => self.target.threads(),
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<(), ToolError> {
    if let Some(BenchCommand::Conns(conns)) = args.command {
        return conns::run(conns).await;
    }
    if args.isolation {
        return isolation(&args).await;
    }
    let runs: Vec<(Option<Preset>, QoS)> = if args.legacy {
        Preset::ALL
            .into_iter()
            .flat_map(|preset| match args.qos {
                Some(qos) => vec![(Some(preset), qos)],
                None => preset
                    .reported_qos()
                    .map(|qos| (Some(preset), qos))
                    .to_vec(),
            })
            .collect()
    } else {
        vec![(args.preset, args.qos.unwrap_or(QoS::AtMostOnce))]
    };
    let format = if args.legacy {
        Format::Legacy
    } else {
        args.format
    };
    for (preset, qos) in runs {
        let scenario = Scenario::build(request(&args, preset, qos)?)?;
        let outcome = run::run(&scenario, !args.quiet, args.broker_pid).await?;
        match format {
            Format::Table => print!("{}", report::table(&scenario, &outcome)),
            Format::Legacy => {
                if let Some(preset) = scenario.preset {
                    println!("{}, QoS {}:", preset.description(), scenario.qos as u8);
                }
                println!("{}", report::legacy(&scenario, &outcome));
            }
            Format::Json => {}
        }
        println!("{}", report::json(&scenario, &outcome));
    }
    Ok(())
}

/// `--isolation`: the shape alone, then beside the slow subscriber; one report of both.
async fn isolation(args: &BenchArgs) -> Result<(), ToolError> {
    if args.format == Format::Legacy {
        return Err(ToolError::Usage(
            "--isolation prints a table or JSON, not micro-mq's line".to_string(),
        ));
    }
    let qos = args.qos.unwrap_or(QoS::AtLeastOnce);
    let beside = Scenario::build(Request {
        slow_ack: Some(Duration::from_millis(args.slow_ack_ms)),
        ..request(args, args.preset, qos)?
    })?;
    let alone = beside.alone();
    let alone_outcome = run::run(&alone, !args.quiet, args.broker_pid).await?;
    let beside_outcome = run::run(&beside, !args.quiet, args.broker_pid).await?;
    if args.format == Format::Table {
        print!("{}", report::table(&alone, &alone_outcome));
        println!();
        print!("{}", report::table(&beside, &beside_outcome));
        print!(
            "{}",
            report::isolation(&beside, &alone_outcome, &beside_outcome)
        );
    }
    println!(
        "{}",
        report::isolation_json(&beside, &alone_outcome, &beside_outcome)
    );
    Ok(())
}

/// The run the command line asks for, in the shape of `preset` at `qos`.
fn request(args: &BenchArgs, preset: Option<Preset>, qos: QoS) -> Result<Request, ToolError> {
    Ok(Request {
        name: args.scenario.clone(),
        preset,
        publishers: args.pubs,
        subscribers: args.subs,
        messages: args.messages,
        size: args.size,
        qos,
        sub_qos: args.sub_qos,
        topic: args.topic.clone(),
        shared_topic: args.shared_topic,
        persistent: args.persistent,
        group: args.group.clone().map(|name| (name, args.group_syntax)),
        inflight: args.inflight,
        rate: args.rate,
        warmup: args.warmup,
        drain_timeout: args.drain_timeout,
        slow_ack: None,
        version: args.target.version,
        pub_endpoints: args
            .target
            .endpoints(args.pub_host.as_deref(), args.pub_port)?,
        sub_endpoints: args
            .target
            .endpoints(args.sub_host.as_deref(), args.sub_port)?,
        auth: args.target.auth.clone(),
        transport: args.target.transport.name(),
    })
}

/// `host`, `host:port`, `[v6]`, `[v6]:port`, or a bare IPv6 address.
fn split_host_port(entry: &str) -> Result<(&str, Option<u16>), ToolError> {
    let bad = || ToolError::Usage(format!("\"{entry}\" is not HOST or HOST:PORT"));
    let parse_port = |port: &str| port.parse::<u16>().map_err(|_| bad());
    if let Some(rest) = entry.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(parse_port(port)?))),
            None if after.is_empty() => Ok((host, None)),
            None => Err(bad()),
        };
    }
    match entry.split_once(':') {
        _ if entry.is_empty() => Err(bad()),
        Some((host, port)) if !port.contains(':') => Ok((host, Some(parse_port(port)?))),
        _ => Ok((entry, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_accept_ports_and_ipv6() {
        let cases = [
            ("a", ("a", None)),
            ("a:1884", ("a", Some(1884))),
            ("[::1]:1885", ("::1", Some(1885))),
            ("[::1]", ("::1", None)),
            ("::1", ("::1", None)),
        ];
        for (entry, want) in cases {
            assert_eq!(split_host_port(entry).ok(), Some(want), "{entry}");
        }
        for bad in ["", "a:port", "[::1]x"] {
            assert!(split_host_port(bad).is_err(), "{bad}");
        }
    }
}
