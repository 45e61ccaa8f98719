//! What a client asks for in its CONNECT.

use bytes::Bytes;

use supermq::protocol::{Connect, Properties, ProtocolVersion};

/// The CONNECT a client sends, in the terms a user thinks in.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub version: ProtocolVersion,
    /// May be empty with a clean start: the broker then assigns one.
    pub client_id: String,
    /// False keeps the session (and its subscriptions and queued messages) across connections.
    pub clean_start: bool,
    /// Seconds; 0 turns keep alive off. The client pings when it has sent nothing for this long.
    pub keep_alive: u16,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    /// MQTT 5.0: how long the broker keeps the session after the connection ends, in seconds.
    pub session_expiry: Option<u32>,
    /// MQTT 5.0: most QoS 1/2 messages the broker may have unacknowledged towards this client
    /// (Receive Maximum); none means the protocol's 65,535.
    pub receive_maximum: Option<u16>,
    /// Print every packet sent and received on stderr (`-d`).
    pub debug: bool,
}

impl ConnectOptions {
    /// Clean start, keep alive 60 s, no credentials.
    pub fn new(version: ProtocolVersion, client_id: impl Into<String>) -> ConnectOptions {
        ConnectOptions {
            version,
            client_id: client_id.into(),
            clean_start: true,
            keep_alive: 60,
            username: None,
            password: None,
            session_expiry: None,
            receive_maximum: None,
            debug: false,
        }
    }

    /// The CONNECT packet. Properties exist only in MQTT 5.0.
    pub(super) fn packet(&self) -> Connect {
        let mut properties = Properties::default();
        if self.version.is_v5() {
            properties.session_expiry_interval = self.session_expiry;
            properties.receive_maximum = self.receive_maximum;
        }
        Connect {
            protocol: self.version,
            clean_start: self.clean_start,
            keep_alive: self.keep_alive,
            client_id: self.client_id.clone(),
            will: None,
            username: self.username.clone(),
            password: self.password.clone(),
            properties,
        }
    }
}
