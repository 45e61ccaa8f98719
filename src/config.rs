//! The configuration: types, defaults, environment overrides and validation.
//!
//! The file is TOML (config/appserver.conf documents every key). Every key has a default, so an
//! empty file and no file at all are both valid; unknown keys are errors. Each key can be
//! overridden from the environment as `SUPERMQ_<SECTION>_<KEY>` (DESIGN.md §1).

use serde::Deserialize;

/// The whole configuration, one field per TOML section.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub mqtt: MqttConfig,
    pub tls: TlsConfig,
    pub limits: Limits,
    pub http: HttpConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
}

/// `[node]`: who this broker is.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique in the cluster; defaults to the host name.
    pub name: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: default_node_name(),
        }
    }
}

/// `[mqtt]`: the client listeners. An empty address turns a listener off.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MqttConfig {
    /// MQTT over TCP.
    pub tcp: String,
    /// MQTT over TLS; needs `[tls] cert` and `key`.
    pub tls: String,
    /// MQTT over WebSocket, path `/mqtt`.
    pub ws: String,
    /// MQTT over secure WebSocket, path `/mqtt`; needs `[tls]`.
    pub wss: String,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            tcp: "0.0.0.0:1883".to_string(),
            tls: String::new(),
            ws: String::new(),
            wss: String::new(),
        }
    }
}

/// `[tls]`: certificate and key for the `tls` and `wss` listeners.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain.
    pub cert: String,
    /// PEM file with the server's private key.
    pub key: String,
    /// PEM file with CA certificates; when set, clients must present a certificate it signed.
    pub client_ca: String,
}

/// `[limits]`: every bound the broker enforces. What happens when one is reached is written
/// next to it in config/appserver.conf and the README.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent client connections; past it CONNECT is refused (3.1.1: 0x03, 5.0: 0x97).
    pub max_connections: usize,
    /// Largest packet accepted from a client, in bytes (5.0 Maximum Packet Size).
    pub max_packet_size: u32,
    /// Seconds a new connection has to send CONNECT before it is closed.
    pub connect_timeout_secs: u64,
    /// Largest keep alive granted, in seconds; larger (or zero) requests get this (5.0 Server
    /// Keep Alive). 0 means no cap.
    pub max_keep_alive: u16,
    /// QoS 1/2 messages in flight per direction and session (5.0 Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session beyond the in-flight window, online or offline.
    pub max_queued_messages: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Most subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Topic aliases a 5.0 client may use towards the broker (Topic Alias Maximum).
    pub max_topic_aliases: u16,
    /// Longest session expiry interval granted, in seconds.
    pub max_session_expiry_secs: u32,
    /// Longest client identifier accepted, in bytes.
    pub max_client_id_length: usize,
    /// Retained messages kept; a new topic past it is not retained (the message is still
    /// delivered).
    pub max_retained_messages: usize,
    /// Total payload bytes of retained messages kept.
    pub max_retained_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 100_000,
            max_packet_size: 1024 * 1024,
            connect_timeout_secs: 10,
            max_keep_alive: 0,
            max_inflight: 256,
            max_queued_messages: 1000,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_subscriptions: 1000,
            max_topic_aliases: 64,
            max_session_expiry_secs: u32::MAX,
            max_client_id_length: 256,
            max_retained_messages: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `[http]`: admin API, metrics and console (a later issue).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    pub listen: String,
}

/// `[cluster]`: the route layer (a later issue); the cluster is on when `listen` is set.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub listen: String,
    pub advertise: String,
    pub routes: Vec<String>,
    pub name: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: String::new(),
            advertise: String::new(),
            routes: Vec::new(),
            name: "supermq".to_string(),
        }
    }
}

/// `[log]`: `level` is a tracing filter ("info", "supermq=debug"); `RUST_LOG` wins over it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "supermq".to_string())
}
