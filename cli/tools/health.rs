//! `supermq health`: is this broker serving MQTT? Dials it, sends CONNECT, waits for a
//! successful CONNACK and disconnects; exit code 0 means yes.
//!
//! It exists for container health checks: the Docker image is `FROM scratch`, with no shell,
//! curl or nc, so the binary checks itself. Without `-h`/`-p` it reads the node's own
//! configuration, the same file and `SUPERMQ_` environment the broker was started with, and
//! dials its `[mqtt] tcp` listener, so a health check never repeats a port that could drift
//! from the configuration.
//!
//! The check connects with an empty client id and a clean start, letting the broker assign an
//! id: client ids are unique cluster-wide, and a fixed one would take over a health check that
//! runs at the same moment on another node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use supermq::config;
use supermq::protocol::ProtocolVersion;

use super::ToolError;
use super::args::HelpArg;
use crate::client::{Client, ClientError, ConnectOptions, Endpoint};

/// Check that a broker answers MQTT.
#[derive(Debug, Args)]
#[command(disable_help_flag = true, after_help = super::exit::HELP)]
pub struct HealthArgs {
    /// The node's configuration file; its [mqtt] tcp listener is dialled (a wildcard address
    /// as loopback). SUPERMQ_ environment variables apply, as for the broker.
    #[arg(short = 'c', long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Dial this host instead of the configured listener.
    #[arg(short = 'h', long, value_name = "HOST")]
    host: Option<String>,
    /// Dial this port instead of the configured listener's.
    #[arg(short = 'p', long, value_name = "PORT")]
    port: Option<u16>,
    /// Give up after this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 3000)]
    timeout_ms: u64,
    #[command(flatten)]
    help: HelpArg,
}

pub async fn run(args: HealthArgs) -> Result<(), ToolError> {
    let endpoint = endpoint(&args)?;
    let options = ConnectOptions::new(ProtocolVersion::V5, "");
    let limit = Duration::from_millis(args.timeout_ms);
    let address = endpoint.address();
    let check = async {
        let (client, _) = Client::connect(&endpoint, &options).await?;
        client.disconnect().await;
        Ok::<(), ClientError>(())
    };
    match tokio::time::timeout(limit, check).await {
        Ok(Ok(())) => {
            println!("{address}: serving");
            Ok(())
        }
        Ok(Err(source)) => Err(ToolError::Context {
            message: format!("{address}: not serving: {source}"),
            source,
        }),
        Err(_) => Err(ToolError::Context {
            message: format!("{address}: no CONNACK within {} ms", args.timeout_ms),
            source: ClientError::Timeout {
                waiting_for: "CONNACK",
                after: limit,
            },
        }),
    }
}

/// Where to dial: `-h`/`-p` where given, the rest from the configured TCP listener.
fn endpoint(args: &HealthArgs) -> Result<Endpoint, ToolError> {
    if let (Some(host), Some(port)) = (&args.host, args.port) {
        return Ok(Endpoint::tcp(host.clone(), port));
    }
    let config =
        config::load(args.config.as_deref()).map_err(|e| ToolError::Usage(e.to_string()))?;
    if config.mqtt.tcp.is_empty() {
        return Err(ToolError::Usage(
            "the configuration has no [mqtt] tcp listener to check; give -h HOST -p PORT".into(),
        ));
    }
    // The configuration was validated, so the listener is an IP:port.
    let listener: SocketAddr =
        config.mqtt.tcp.parse().map_err(|_| {
            ToolError::Usage(format!("mqtt.tcp {:?} is not IP:port", config.mqtt.tcp))
        })?;
    let host = match (&args.host, listener.ip()) {
        (Some(host), _) => host.clone(),
        (None, ip) if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".into(),
        (None, ip) if ip.is_unspecified() => "::1".into(),
        (None, ip) => ip.to_string(),
    };
    Ok(Endpoint::tcp(host, args.port.unwrap_or(listener.port())))
}
