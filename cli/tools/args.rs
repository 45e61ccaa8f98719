//! Command-line options shared by the client tools, in mosquitto_pub/mosquitto_sub spelling
//! (`-h HOST`, `-p PORT`, `-V 311|5`, `-i ID`, `-u/-P`, `--tls --ca`, ...), and their
//! translation into an [`Endpoint`] and [`ConnectOptions`].
//!
//! `-h` is the host, as in mosquitto's tools, so these commands turn off clap's `-h` help;
//! `--help` still works ([`HelpArg`]).

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use clap::{ArgAction, Args};

use supermq::protocol::{ProtocolVersion, QoS};

use super::ToolError;
use crate::client::{ConnectOptions, Endpoint, TlsOptions, client_config};

/// `--help` without `-h`.
#[derive(Debug, Clone, Args)]
pub struct HelpArg {
    /// Print help
    #[arg(long, action = ArgAction::Help)]
    help: Option<bool>,
}

/// How to reach the broker: encryption and WebSocket.
#[derive(Debug, Clone, Args)]
pub struct TransportArgs {
    /// Use TLS (implied by --ca, --cert).
    #[arg(long)]
    pub tls: bool,
    /// CA certificates (PEM) to trust instead of the system bundle.
    #[arg(long, alias = "cafile", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Client certificate chain (PEM), for brokers that require one.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) of --cert.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Speak MQTT over WebSocket (secure WebSocket with --tls).
    #[arg(long)]
    pub ws: bool,
    /// WebSocket path.
    #[arg(long, value_name = "PATH", default_value = "/mqtt")]
    pub ws_path: String,
}

impl TransportArgs {
    fn uses_tls(&self) -> bool {
        self.tls || self.ca.is_some() || self.cert.is_some()
    }

    /// `tcp`, `tls`, `ws` or `wss`, for reports.
    pub fn name(&self) -> &'static str {
        match (self.uses_tls(), self.ws) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }

    /// The usual port for the transport: 1883, 8883 (TLS), 8083 (WebSocket), 8084 (both).
    pub fn default_port(&self) -> u16 {
        match (self.uses_tls(), self.ws) {
            (false, false) => 1883,
            (true, false) => 8883,
            (false, true) => 8083,
            (true, true) => 8084,
        }
    }

    /// An endpoint for `host:port` with these transport settings.
    pub fn endpoint(&self, host: &str, port: u16) -> Result<Endpoint, ToolError> {
        let mut endpoint = Endpoint::tcp(host, port);
        if self.uses_tls() {
            let options = TlsOptions {
                ca: self.ca.clone(),
                identity: self.cert.clone().zip(self.key.clone()),
            };
            endpoint.tls = Some(client_config(&options)?);
        }
        if self.ws {
            endpoint.websocket = Some(self.ws_path.clone());
        }
        Ok(endpoint)
    }
}

/// User name and password.
#[derive(Debug, Clone, Args)]
pub struct AuthArgs {
    /// User name.
    #[arg(short = 'u', long, value_name = "USER")]
    pub username: Option<String>,
    /// Password.
    #[arg(short = 'P', long = "pw", value_name = "PASS")]
    pub password: Option<String>,
}

impl AuthArgs {
    pub fn apply(&self, options: &mut ConnectOptions) {
        options.username.clone_from(&self.username);
        options.password = self.password.clone().map(Bytes::from);
    }
}

/// Everything `pub` and `sub` need to connect.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Broker host name or address.
    #[arg(short = 'h', long, value_name = "HOST", default_value = "localhost")]
    pub host: String,
    /// Broker port [default: 1883; 8883 with TLS; 8083 with --ws; 8084 with both].
    #[arg(short = 'p', long, value_name = "PORT")]
    pub port: Option<u16>,
    /// MQTT version: 311 (also 3.1.1, mqttv311), 5 (also mqttv5) or 31 (also 3.1, mqttv31).
    #[arg(short = 'V', long = "protocol-version", value_name = "VERSION", default_value = "311",
          value_parser = parse_version)]
    pub version: ProtocolVersion,
    /// Client identifier [default: a random one].
    #[arg(short = 'i', long = "id", value_name = "ID")]
    pub id: Option<String>,
    /// Keep alive in seconds; 0 turns it off.
    #[arg(short = 'k', long, value_name = "SECS", default_value_t = 60)]
    pub keepalive: u16,
    /// Print every packet sent and received on stderr.
    #[arg(short = 'd', long)]
    pub debug: bool,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub transport: TransportArgs,
}

impl ConnectArgs {
    /// The endpoint and CONNECT for these options; `tool` names the default client id.
    pub fn resolve(&self, tool: &str) -> Result<(Endpoint, ConnectOptions), ToolError> {
        let port = self.port.unwrap_or_else(|| self.transport.default_port());
        let endpoint = self.transport.endpoint(&self.host, port)?;
        let client_id = self
            .id
            .clone()
            .unwrap_or_else(|| format!("supermq-{tool}-{:08x}", rand::random::<u32>()));
        let mut options = ConnectOptions::new(self.version, client_id);
        options.keep_alive = self.keepalive;
        options.debug = self.debug;
        self.auth.apply(&mut options);
        Ok((endpoint, options))
    }
}

/// `-V`: the names mosquitto's tools accept, and the plain level numbers.
pub fn parse_version(text: &str) -> Result<ProtocolVersion, String> {
    match text.to_ascii_lowercase().as_str() {
        "5" | "5.0" | "mqttv5" => Ok(ProtocolVersion::V5),
        "311" | "3.1.1" | "4" | "mqttv311" => Ok(ProtocolVersion::V311),
        "31" | "3.1" | "3" | "mqttv31" => Ok(ProtocolVersion::V31),
        _ => Err("expected 5 (mqttv5), 311 (3.1.1, mqttv311) or 31 (3.1, mqttv31)".to_string()),
    }
}

/// `-q`: 0, 1 or 2.
pub fn parse_qos(text: &str) -> Result<QoS, String> {
    text.parse::<u8>()
        .ok()
        .and_then(QoS::from_u8)
        .ok_or_else(|| "QoS must be 0, 1 or 2".to_string())
}

/// A number of seconds, at least 1.
pub fn parse_secs(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(secs) if secs > 0 => Ok(Duration::from_secs(secs)),
        _ => Err("expected a whole number of seconds, at least 1".to_string()),
    }
}
