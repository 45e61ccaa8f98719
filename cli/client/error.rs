//! Why a client connection failed, one variant per thing a user can act on.
//!
//! The tools turn each variant into its own exit code (see `tools::exit`), so the variants
//! follow the order a connection is made in: name resolution, TCP, TLS, WebSocket, CONNACK,
//! then what can go wrong once connected. Every message is one self-contained line.

use std::io;
use std::time::Duration;

use supermq::protocol::{DecodeError, EncodeError};

/// Why connecting, subscribing, publishing or receiving failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The host name did not resolve (or resolved to no address).
    #[error("cannot resolve host \"{host}\": {detail}")]
    Resolve { host: String, detail: String },
    /// Nothing listens on the address: the TCP connection was actively refused.
    #[error("connection refused by {addr}")]
    Refused { addr: String },
    /// The address could not be reached: no route, timeout, out of local ports or descriptors.
    /// `error` is kept whole so callers can tell EMFILE and EADDRNOTAVAIL apart.
    #[error("cannot connect to {addr}: {error}")]
    Unreachable { addr: String, error: io::Error },
    /// The TLS settings could not be loaded (CA, certificate or key file).
    #[error("TLS setup: {0}")]
    TlsSetup(String),
    /// The TLS handshake failed (untrusted certificate, wrong host name, not a TLS port...).
    #[error("TLS handshake with {addr} failed: {error}")]
    TlsHandshake { addr: String, error: io::Error },
    /// The WebSocket upgrade failed (wrong path, not a WebSocket port...).
    #[error("WebSocket handshake with {url} failed: {error}")]
    WebSocket { url: String, error: String },
    /// The broker answered CONNECT with a refusal.
    #[error(
        "connection refused by the broker: CONNACK {code:#04x} ({name}){}",
        why(reason)
    )]
    ConnAckRefused {
        code: u8,
        name: &'static str,
        reason: Option<String>,
    },
    /// The broker refused a subscription.
    #[error(
        "subscription to \"{filter}\" refused: SUBACK {code:#04x} ({name}){}",
        why(reason)
    )]
    SubAckRefused {
        filter: String,
        code: u8,
        name: &'static str,
        reason: Option<String>,
    },
    /// The broker refused a QoS 1 or 2 publication (MQTT 5.0 reason code in PUBACK or PUBREC).
    #[error("publish refused: {packet} {code:#04x} ({name}){}", why(reason))]
    PublishRefused {
        packet: &'static str,
        code: u8,
        name: &'static str,
        reason: Option<String>,
    },
    /// The broker sent DISCONNECT (MQTT 5.0).
    #[error(
        "the broker closed the connection: DISCONNECT {code:#04x} ({name}){}",
        why(reason)
    )]
    Disconnected {
        code: u8,
        name: &'static str,
        reason: Option<String>,
    },
    /// The connection ended without a DISCONNECT.
    #[error("the broker closed the connection")]
    Closed,
    /// Reading or writing an established connection failed.
    #[error("connection lost: {0}")]
    Io(io::Error),
    /// The broker sent bytes that are not a valid packet.
    #[error("the broker sent an invalid packet: {0}")]
    Decode(#[from] DecodeError),
    /// The broker sent a valid packet that makes no sense at this point.
    #[error("the broker sent an unexpected {0}")]
    Unexpected(&'static str),
    /// The broker did not answer in time.
    #[error("no {waiting_for} from the broker within {} s", after.as_secs())]
    Timeout {
        waiting_for: &'static str,
        after: Duration,
    },
    /// A packet could not be encoded (a topic or payload too long for MQTT, for instance).
    #[error("{0}")]
    Encode(#[from] EncodeError),
    /// A packet is larger than the broker accepts (its MQTT 5.0 Maximum Packet Size).
    #[error("a {size}-byte packet exceeds the broker's maximum packet size of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

/// The reason string an MQTT 5.0 broker gave, as a suffix for messages.
fn why(reason: &Option<String>) -> String {
    match reason {
        Some(reason) if !reason.is_empty() => format!(": {reason}"),
        _ => String::new(),
    }
}
