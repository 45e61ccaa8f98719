//! Exit codes of the client tools, and the error type that carries them to `main`.
//!
//! Each failure a script may want to tell apart has its own code, documented in every tool's
//! `--help` ([`HELP`]). Code 2 is clap's own for usage errors, so a bad QoS exits the same way
//! whether clap or the tool catches it.

use crate::client::ClientError;

/// The exit codes, as `--help` lists them.
pub const HELP: &str = "\
Exit codes:
   0  success
   1  local problem: cannot read a file or stdin, too few file descriptors
   2  usage error (unknown option, bad value such as a QoS other than 0, 1 or 2)
   3  connection refused: nothing listens on HOST:PORT
   4  host unreachable, or no answer within the connect timeout
   5  host name does not resolve
   6  TLS setup or handshake failed
   7  WebSocket upgrade failed
   8  the broker refused the connection (CONNACK reason code)
   9  the broker refused a subscription (SUBACK failure)
  10  the broker refused a publication (MQTT 5 PUBACK/PUBREC reason, packet too large)
  11  connection lost, or the broker sent DISCONNECT or something unexpected
  12  timed out (sub -W) before the messages asked for (-C) arrived
  13  ctl: the admin API answered an error (not found, bad request; 8 for a refused key)";

pub const LOCAL: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const UNREACHABLE: u8 = 4;
pub const RESOLVE: u8 = 5;
pub const TLS: u8 = 6;
pub const WEBSOCKET: u8 = 7;
pub const CONNACK: u8 = 8;
pub const SUBACK: u8 = 9;
pub const PUBLISH: u8 = 10;
pub const LOST: u8 = 11;
pub const TIMEOUT: u8 = 12;
pub const API: u8 = 13;

/// Why a tool stopped; [`ToolError::exit_code`] says with which code.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A client error with more to say (which connection, what to do about it).
    #[error("{message}")]
    Context {
        message: String,
        source: ClientError,
    },
    /// Options that make no sense together, a topic that cannot be published to, ...
    #[error("{0}")]
    Usage(String),
    /// A problem on this machine: an unreadable file, too few file descriptors.
    #[error("{0}")]
    Local(String),
    /// `sub -W` ran out before `-C` messages arrived.
    #[error("timed out after {secs} s with {received} message(s) received")]
    TimedOut { secs: u64, received: u64 },
    /// The admin API answered an error (`status`), or no HTTP at all (status 0).
    #[error("{message}")]
    Api { status: u16, message: String },
}

impl ToolError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ToolError::Usage(_) => USAGE,
            ToolError::Local(_) => LOCAL,
            ToolError::TimedOut { .. } => TIMEOUT,
            ToolError::Api {
                status: 401 | 403, ..
            } => CONNACK,
            ToolError::Api { status: 0, .. } => LOST,
            ToolError::Api { .. } => API,
            ToolError::Client(error) | ToolError::Context { source: error, .. } => match error {
                ClientError::Refused { .. } => REFUSED,
                ClientError::Unreachable { .. } => UNREACHABLE,
                ClientError::Resolve { .. } => RESOLVE,
                ClientError::TlsSetup(_) | ClientError::TlsHandshake { .. } => TLS,
                ClientError::WebSocket { .. } => WEBSOCKET,
                ClientError::ConnAckRefused { .. } => CONNACK,
                ClientError::SubAckRefused { .. } => SUBACK,
                ClientError::PublishRefused { .. } | ClientError::TooLarge { .. } => PUBLISH,
                ClientError::Encode(_) => USAGE,
                ClientError::Disconnected { .. }
                | ClientError::Closed
                | ClientError::Io(_)
                | ClientError::Decode(_)
                | ClientError::Unexpected(_)
                | ClientError::Timeout { .. } => LOST,
            },
        }
    }
}
