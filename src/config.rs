//! The configuration: types, defaults, environment overrides and validation.
//!
//! The file is TOML (config/appserver.conf documents every key). Every key has a default, so an
//! empty file and no file at all are both valid; unknown keys are errors. Each key can be
//! overridden from the environment as `SUPERMQ_<SECTION>_<KEY>` (README, Configuration).
//!
//! [`load`] goes file → environment → validation: the file is parsed into a TOML table whose
//! sections and keys are checked one by one against the defaults, the `SUPERMQ_*` variables are
//! laid over it, the result is deserialized into [`Config`] and [`Config::validate`]d. Checking
//! key by key, rather than letting serde reject the whole document, is what lets every
//! [`ConfigError`] be one line that names where the value came from (the file or the variable),
//! the key as `section.key`, and the problem.

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// The whole configuration, one field per TOML section.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub mqtt: MqttConfig,
    pub tls: TlsConfig,
    pub limits: Limits,
    pub auth: AuthConfig,
    pub http: HttpConfig,
    pub cluster: ClusterConfig,
    pub log: LogConfig,
    pub sys: SysConfig,
    pub storage: StorageConfig,
}

/// `[node]`: who this broker is.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique in the cluster; defaults to the host name.
    pub name: String,
    /// Worker threads of the runtime; 0 means [`NodeConfig::worker_threads`]'s default.
    pub threads: usize,
}

impl NodeConfig {
    /// The runtime's worker threads: `threads`, or for 0 one per CPU core but one, and at
    /// least one. A thread per core leaves none for what a broker's work also needs — the
    /// kernel's TCP stack (loopback and softirq work runs in the sender's and receiver's
    /// time), the clients on the same host, the store's writer — and a worker that must be
    /// woken on another core for every batch costs more than the batch: on 2 cores one
    /// worker delivered 1→1 QoS 1 at 1.4 s of CPU per million against 2.7 s with two, and
    /// faster (docs/BENCHMARKS.md, issue 16).
    pub fn worker_threads(&self) -> usize {
        if self.threads > 0 {
            return self.threads;
        }
        std::thread::available_parallelism()
            .map_or(1, |cores| cores.get().saturating_sub(1))
            .max(1)
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: default_node_name(),
            threads: 0,
        }
    }
}

/// `[mqtt]`: the client listeners. An empty address turns a listener off.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
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
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file with the server certificate chain.
    pub cert: String,
    /// PEM file with the server's private key.
    pub key: String,
    /// PEM file with CA certificates; when set, clients must present a certificate it signed.
    pub client_ca: String,
    /// With `client_ca`: the subject CN of a client's certificate is its user name (for the
    /// ACL), and no password is asked of it (mosquitto's `use_identity_as_username`).
    pub use_identity_as_username: bool,
}

/// `[auth]`: who may connect ([`crate::auth`]), and what they may publish and subscribe to.
/// Both files are read again on SIGHUP.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// A CONNECT without a user name is let in (false: refused, 0x87 / 0x05).
    pub allow_anonymous: bool,
    /// `user:hash` lines (mosquitto's `$7$` or argon2id, as `supermq passwd` writes); "" means
    /// user names are not checked.
    pub password_file: String,
    /// mosquitto's ACL syntax; "" means every client may publish and subscribe to anything.
    pub acl_file: String,
    /// Failed authentications per second one IP address may have, in bursts of as many;
    /// later attempts wait their turn (at most 5 s, then they are refused unchecked). 0 means
    /// no limit.
    pub failed_auth_per_ip_per_sec: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            allow_anonymous: true,
            password_file: String::new(),
            acl_file: String::new(),
            failed_auth_per_ip_per_sec: 2,
        }
    }
}

/// `[limits]`: every bound the broker enforces. What happens when one is reached is written
/// next to it in config/appserver.conf and the README.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent client connections, counting only those that completed CONNECT; past it
    /// CONNECT is refused (3.1.1: 0x03, 5.0: 0x97).
    pub max_connections: usize,
    /// Largest packet accepted from a client, in bytes (5.0 Maximum Packet Size). Also the
    /// largest WebSocket message and frame.
    pub max_packet_size: u32,
    /// Largest CONNECT accepted, in bytes (Will and password included; at most
    /// `max_packet_size` counts). It bounds what a socket can make the broker hold before its
    /// CONNECT is accepted: a larger one is refused from its fixed header.
    pub max_connect_size: u32,
    /// Seconds a new connection has, from accept, to finish its TLS or WebSocket handshake and
    /// send CONNECT before it is closed.
    pub connect_timeout_secs: u64,
    /// Sockets accepted that have not completed CONNECT yet (handshake in progress, or waiting
    /// for CONNECT). When full, the oldest of them is closed to make room for a new one.
    pub max_pending_connections: usize,
    /// Sockets open at once from one IP address, pending or connected; 0 means no limit.
    pub max_connections_per_ip: usize,
    /// New connections per second from one IP address, in bursts of up to as many; 0 means no
    /// limit.
    pub max_connect_rate_per_ip: u32,
    /// Largest keep alive granted, in seconds; larger (or zero) requests get this (5.0 Server
    /// Keep Alive). 0 means no cap.
    pub max_keep_alive: u16,
    /// QoS 1/2 messages in flight per direction and session (5.0 Receive Maximum).
    pub max_inflight: u16,
    /// Messages queued per session beyond the in-flight window, online or offline.
    pub max_queued_messages: usize,
    /// Bytes (topic and payload) queued per session; a queue is full at either bound.
    pub max_queued_bytes: usize,
    /// Longest a message waits for room in a connected subscriber's full queue, counted from
    /// when it began waiting; a session that keeps a message waiting this long is slow.
    pub queue_full_wait_ms: u64,
    /// What happens to a slow session: "drop" its messages until its queue has drained to
    /// half, or "disconnect" its client.
    pub slow_consumer_policy: String,
    /// Sessions kept, connected or not; past it a CONNECT that needs a new session is refused.
    pub max_sessions: usize,
    /// Longest topic name or filter, in bytes.
    pub max_topic_length: usize,
    /// Most levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Most subscriptions one session may hold.
    pub max_subscriptions: usize,
    /// Topic aliases a 5.0 client may use towards the broker (Topic Alias Maximum).
    pub max_topic_aliases: u16,
    /// Topic aliases the broker uses towards a 5.0 client that accepts them (at most the
    /// client's Topic Alias Maximum); 0 turns them off.
    pub max_topic_aliases_out: u16,
    /// Longest session expiry interval granted, in seconds.
    pub max_session_expiry_secs: u32,
    /// Seconds an MQTT 3.1.1 persistent session (clean session 0, which asks for no expiry)
    /// is kept after its client disconnects; 0 means forever (mosquitto's
    /// `persistent_client_expiration`).
    pub persistent_client_expiration_secs: u32,
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
            max_connect_size: 64 * 1024,
            connect_timeout_secs: 10,
            max_pending_connections: 10_000,
            max_connections_per_ip: 0,
            max_connect_rate_per_ip: 0,
            max_keep_alive: 0,
            max_inflight: 256,
            max_queued_messages: 1000,
            max_queued_bytes: 16 * 1024 * 1024,
            queue_full_wait_ms: 2000,
            slow_consumer_policy: "drop".to_string(),
            max_sessions: 100_000,
            max_topic_length: 1024,
            max_topic_levels: 32,
            max_subscriptions: 1000,
            max_topic_aliases: 64,
            max_topic_aliases_out: 64,
            max_session_expiry_secs: u32::MAX,
            persistent_client_expiration_secs: 0,
            max_client_id_length: 256,
            max_retained_messages: 100_000,
            max_retained_bytes: 256 * 1024 * 1024,
        }
    }
}

/// `[http]`: admin API, metrics and console (a later issue).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Health, metrics and the admin API ([`crate::http`]); empty turns it off.
    pub listen: String,
    /// `"name:role:hash"`: who may use the API, as `admin` or `viewer`, proving the secret
    /// whose hash (in the password file's formats) is given. With none, the API answers
    /// anyone, and so may only listen on a loopback address.
    pub api_keys: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:11883".to_string(),
            api_keys: Vec::new(),
        }
    }
}

/// `[cluster]`: the route layer ([`crate::cluster`]); the cluster is on when `listen` is set.
/// What happens when each bound is reached is written in config/appserver.conf and the README.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    pub listen: String,
    pub advertise: String,
    pub routes: Vec<String>,
    pub name: String,
    /// Shared by every node; a peer that cannot prove it (by challenge and response, it never
    /// crosses the wire) is refused. Required, of at least [`MIN_CLUSTER_SECRET`] characters,
    /// once `listen` is set.
    pub secret: String,
    /// Route TLS: this node's certificate chain (PEM), presented on every route, dialled or
    /// accepted. Set all three `tls_*` keys or none.
    pub tls_cert: String,
    /// Route TLS: the private key of `tls_cert` (PEM).
    pub tls_key: String,
    /// Route TLS: the cluster's CA (PEM); a peer's certificate must chain to it, both ways.
    pub tls_ca: String,
    /// Milliseconds between heartbeats on an idle route.
    pub heartbeat_ms: u64,
    /// Milliseconds without any frame from a peer after which its route is closed.
    pub heartbeat_timeout_ms: u64,
    /// First and largest pause between dials of a lost route, in milliseconds (doubling, with
    /// jitter).
    pub redial_min_ms: u64,
    pub redial_max_ms: u64,
    /// Failed dials in a row after which a discovered (not configured) peer is given up.
    pub discovered_redial_attempts: u32,
    /// Bytes of messages queued for one peer; past it QoS 0 messages for it are dropped and
    /// counted (QoS 1/2 ones are bounded by `route_replay_bytes`).
    pub route_queue_bytes: usize,
    /// When a QoS 1/2 publisher gets its PUBACK/PUBREC for a message other nodes must
    /// deliver: "cluster" (default) once every node with matching interest took it into its
    /// sessions' queues, a negative ack if one did not in `ack_timeout_ms`; "local" once it is
    /// queued here and on the routes, without waiting for the peers.
    pub acks: String,
    /// Milliseconds a QoS 1/2 message sent to a peer waits for the peer's acknowledgement
    /// (across route flaps) before it is given up and its publisher gets a negative ack.
    pub ack_timeout_ms: u64,
    /// Bytes of QoS 1/2 messages one peer has not acknowledged yet, kept to be sent again if
    /// its route drops; past it a message for that peer is not sent, counted, and its
    /// publisher gets a negative ack (0x97).
    pub route_replay_bytes: usize,
    /// Milliseconds a peer whose route dropped keeps its interest and its unacknowledged
    /// messages, waiting for it to come back; a peer back within it gets them replayed.
    pub peer_grace_ms: u64,
    /// Bytes of one peer's messages that may wait beside full local queues (instead of
    /// holding the route up); past it such messages are dropped and counted.
    pub route_backlog_bytes: usize,
    /// Peers (routes) one node keeps; past it a new peer is refused.
    pub max_peers: usize,
    /// Filters one peer may declare interest in; past it the route is closed.
    pub max_peer_interest: usize,
    /// Route connections in their handshake (not yet authenticated) at once; when all places
    /// are taken, a new one closes the oldest handshake to make room.
    pub max_pending_routes: usize,
    /// How a consumer group picks its member: "random", "round_robin" or "prefer_local".
    pub group_strategy: String,
    /// Seconds a retained clear's tombstone is kept, so a peer cut off meanwhile cannot bring
    /// the cleared message back when its route heals (0: no tombstones).
    pub retained_tombstone_secs: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            listen: String::new(),
            advertise: String::new(),
            routes: Vec::new(),
            name: "supermq".to_string(),
            secret: String::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            tls_ca: String::new(),
            heartbeat_ms: 1000,
            heartbeat_timeout_ms: 5000,
            redial_min_ms: 100,
            redial_max_ms: 5000,
            discovered_redial_attempts: 20,
            route_queue_bytes: 64 * 1024 * 1024,
            acks: "cluster".to_string(),
            ack_timeout_ms: 8000,
            route_replay_bytes: 64 * 1024 * 1024,
            peer_grace_ms: 10_000,
            route_backlog_bytes: 64 * 1024 * 1024,
            max_peers: 64,
            max_peer_interest: 1_000_000,
            max_pending_routes: 64,
            group_strategy: "random".to_string(),
            retained_tombstone_secs: 24 * 60 * 60,
        }
    }
}

/// The shortest `cluster.secret` accepted, in characters: anyone who can reach the route
/// port may try secrets as fast as handshakes go, so a short one is guessed.
pub const MIN_CLUSTER_SECRET: usize = 16;

/// `[log]`: what the broker logs, and how each line is written.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A tracing filter ("info", "supermq=debug"); `RUST_LOG` wins over it.
    pub level: String,
    /// "text" (one human-readable line per event) or "json" (one JSON object per line, for a
    /// log collector).
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_string(),
            format: "text".to_string(),
        }
    }
}

/// The largest `sys.interval_secs`: a day. Longer would be no tree worth reading, and a bound
/// keeps the timer's arithmetic far from overflowing.
const MAX_SYS_INTERVAL_SECS: u64 = 24 * 60 * 60;

/// `[sys]`: the `$SYS/broker/...` tree of this node's figures (`broker::sys`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SysConfig {
    /// Seconds between two publications of the tree; 0 turns it off.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        SysConfig { interval_secs: 10 }
    }
}

/// The largest `storage.flush_ms`: a second. A longer loss window would be a snapshot, which
/// is not what `batched` promises.
const MAX_FLUSH_MS: u64 = 1000;

/// `[storage]`: where sessions, their messages and retained messages are kept across restarts
/// (`store`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The directory of the store (created if missing); empty: in memory only.
    pub dir: String,
    /// "immediate": a QoS 1/2 message that must be stored is acknowledged once it is on disk;
    /// "batched": acknowledged at once and written within `flush_ms`.
    pub durability: String,
    /// How long `batched` gathers writes before one commit, in milliseconds.
    pub flush_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            dir: String::new(),
            durability: "immediate".to_string(),
            flush_ms: 10,
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

/// The prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "SUPERMQ_";

/// Where a value came from. Every message about a value starts with it, so the operator knows
/// whether to fix the file or the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file.
    File(PathBuf),
    /// An environment variable, by name.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(var) => f.write_str(var),
        }
    }
}

/// Why the configuration could not be loaded. `Display` is one line naming the file or the
/// variable, the key and the problem; the command line prints it and exits with code 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML; `text` is the offending line.
    #[error("{}:{line}:{column}: {message} (invalid TOML in line {text:?})", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
        text: String,
    },
    /// A section (or top-level key) that supermq does not have.
    #[error("{}: unknown section \"{section}\" (the sections are {known})", path.display())]
    UnknownSection {
        path: PathBuf,
        section: String,
        known: String,
    },
    /// A key, as `section.key`, that its section does not have.
    #[error("{}: unknown key \"{key}\" (the keys in [{section}] are {known})", path.display())]
    UnknownKey {
        path: PathBuf,
        section: String,
        key: String,
        known: String,
    },
    /// A `SUPERMQ_*` environment variable that names no key: most likely a typo, which would
    /// otherwise leave the setting silently at its default.
    #[error("{var}: names no configuration key ({hint})")]
    UnknownEnv { var: String, hint: String },
    /// A `SUPERMQ_*` environment variable whose value is not UTF-8.
    #[error("{var}: the value is not valid UTF-8")]
    EnvNotUnicode { var: String },
    /// A key's value is unusable: wrong type, out of range, or against a rule. `origin` is where
    /// the value came from; `None` when it is a built-in default or the config was built in code.
    #[error("{}{key}: {problem}", OriginPrefix(.origin))]
    Invalid {
        origin: Option<Origin>,
        key: String,
        problem: String,
    },
}

/// Writes `origin: ` before a key, or nothing when the value has no origin to blame.
struct OriginPrefix<'a>(&'a Option<Origin>);

impl fmt::Display for OriginPrefix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(origin) => write!(f, "{origin}: "),
            None => Ok(()),
        }
    }
}

/// Loads the configuration from `path` (or the defaults when there is none), with the process
/// environment's `SUPERMQ_*` overrides, and validates it.
pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
    let mut env = Vec::new();
    for (name, value) in std::env::vars_os() {
        // Only our own variables matter; any other may hold anything, UTF-8 or not.
        let name = name.to_string_lossy().into_owned();
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        let value = value
            .into_string()
            .map_err(|_| ConfigError::EnvNotUnicode { var: name.clone() })?;
        env.push((name, value));
    }
    load_from(path, env)
}

/// [`load`] with the environment given explicitly, so tests need not touch the process's.
/// Variables without the `SUPERMQ_` prefix are ignored.
pub fn load_from(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Config, ConfigError> {
    let schema = schema();
    let mut table = Table::new();
    // Where each `section.key` that is not a default came from, to blame the right place when
    // validation fails.
    let mut origins = HashMap::new();
    if let Some(path) = path {
        table = read_file(path)?;
        check_file(path, &schema, &table)?;
        for (section, keys) in &table {
            if let Value::Table(keys) = keys {
                for key in keys.keys() {
                    origins.insert(format!("{section}.{key}"), Origin::File(path.to_path_buf()));
                }
            }
        }
    }
    apply_env(&schema, &mut table, &mut origins, env)?;
    // Every key was checked on its own above, so this only fails if the checks missed a case;
    // toml's message then still names the key, on what would be a second line.
    let config: Config = table.try_into().map_err(|e| ConfigError::Invalid {
        origin: path.map(|p| Origin::File(p.to_path_buf())),
        key: "config".to_string(),
        problem: one_line(&e.to_string()),
    })?;
    config.check().map_err(|p| {
        let origin = origins.get(p.key).cloned();
        p.into_error(origin)
    })?;
    Ok(config)
}

/// The defaults as a TOML table. It is the list of sections and keys, and of the kind of value
/// each key takes, read off the types themselves, so checking and overriding cannot drift from
/// the structs when a key is added.
fn schema() -> Table {
    Table::try_from(Config::default()).expect("the default configuration serializes to TOML")
}

/// Reads and parses the file; a syntax error says where, as a line and a column.
fn read_file(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    text.parse::<Table>().map_err(|e| {
        // toml points at the error with a byte span; an operator wants a line and a column.
        let at = e.span().map_or(0, |span| span.start);
        let before = text.get(..at).unwrap_or(&text);
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before.get(line_start..).unwrap_or("").chars().count() + 1;
        ConfigError::Syntax {
            path: path.to_path_buf(),
            line: before.matches('\n').count() + 1,
            column,
            message: one_line(e.message()),
            text: text
                .get(line_start..)
                .and_then(|rest| rest.lines().next())
                .unwrap_or("")
                .trim()
                .to_string(),
        }
    })
}

/// Checks every section and key of the file against the schema: known, and of the right type.
fn check_file(path: &Path, schema: &Table, table: &Table) -> Result<(), ConfigError> {
    for (section, value) in table {
        let Some(Value::Table(known)) = schema.get(section) else {
            return Err(ConfigError::UnknownSection {
                path: path.to_path_buf(),
                section: section.clone(),
                known: names(schema),
            });
        };
        let Value::Table(keys) = value else {
            return Err(ConfigError::Invalid {
                origin: Some(Origin::File(path.to_path_buf())),
                key: section.clone(),
                problem: format!("expected a table ([{section}]), found {}", a(value)),
            });
        };
        for (key, value) in keys {
            let Some(default) = known.get(key) else {
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    section: section.clone(),
                    key: format!("{section}.{key}"),
                    known: names(known),
                });
            };
            check_value(section, key, default, value).map_err(|problem| ConfigError::Invalid {
                origin: Some(Origin::File(path.to_path_buf())),
                key: format!("{section}.{key}"),
                problem,
            })?;
        }
    }
    Ok(())
}

/// Lays the `SUPERMQ_*` variables over the file's table; the environment wins.
fn apply_env(
    schema: &Table,
    table: &mut Table,
    origins: &mut HashMap<String, Origin>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), ConfigError> {
    let mut vars: Vec<_> = env
        .into_iter()
        .filter(|(name, _)| name.starts_with(ENV_PREFIX))
        .collect();
    // The environment has no order; sorting makes the first error the same on every start.
    vars.sort();
    let mut overrides = Table::new();
    for (var, raw) in vars {
        let (section, key, default) = env_key(schema, &var)?;
        let value = env_value(default, &raw)
            .and_then(|value| check_value(section, key, default, &value).map(|()| value))
            .map_err(|problem| ConfigError::Invalid {
                origin: Some(Origin::Env(var.clone())),
                key: format!("{section}.{key}"),
                problem,
            })?;
        if let Value::Table(keys) = overrides
            .entry(section)
            .or_insert_with(|| Value::Table(Table::new()))
        {
            keys.insert(key.to_string(), value);
        }
        origins.insert(format!("{section}.{key}"), Origin::Env(var));
    }
    for (section, keys) in overrides {
        match (table.get_mut(&section), keys) {
            (Some(Value::Table(file_keys)), Value::Table(keys)) => file_keys.extend(keys),
            // The file has no such section (check_file has made sure that any it has are
            // tables), so the overrides are the whole section.
            (_, keys) => {
                table.insert(section, keys);
            }
        }
    }
    Ok(())
}

/// Finds the `(section, key, default)` that an environment variable names.
fn env_key<'s>(schema: &'s Table, var: &str) -> Result<(&'s str, &'s str, &'s Value), ConfigError> {
    for (section, keys) in schema {
        if let Value::Table(keys) = keys {
            for (key, default) in keys {
                if var == env_name(section, key) {
                    return Ok((section, key, default));
                }
            }
        }
    }
    // Section names have no underscore, so the section is what precedes the first one.
    let rest = var.get(ENV_PREFIX.len()..).unwrap_or("");
    let section = rest.split('_').next().unwrap_or("").to_lowercase();
    let hint = match schema.get(&section) {
        Some(Value::Table(keys)) => format!(
            "the keys in [{section}] are {}, as {ENV_PREFIX}{}_<KEY>",
            names(keys),
            section.to_uppercase()
        ),
        _ => format!(
            "variables are {ENV_PREFIX}<SECTION>_<KEY>, and the sections are {}",
            names(schema)
        ),
    };
    Err(ConfigError::UnknownEnv {
        var: var.to_string(),
        hint,
    })
}

/// The environment variable that overrides `section.key`.
pub fn env_name(section: &str, key: &str) -> String {
    format!(
        "{ENV_PREFIX}{}_{}",
        section.to_uppercase(),
        key.to_uppercase()
    )
}

/// Turns an environment value into a TOML value of the same kind as the key's default.
/// Lists are comma-separated, items trimmed, empty items dropped (so "" is the empty list), or
/// a TOML array (`["a", "b"]`) for items that hold commas themselves (an argon2 hash in an
/// API key); all list keys hold strings, and if one ever does not, `check_value` rejects the
/// items by name.
fn env_value(default: &Value, raw: &str) -> Result<Value, String> {
    match default {
        Value::Array(_) if raw.trim_start().starts_with('[') => {
            toml::from_str::<Table>(&format!("list = {raw}"))
                .ok()
                .and_then(|mut table| table.remove("list"))
                .ok_or_else(|| {
                    format!("{raw:?} starts with '[' but is not a TOML array of strings")
                })
        }
        Value::String(_) => Ok(Value::String(raw.to_string())),
        Value::Integer(_) => raw
            .trim()
            .parse()
            .map(Value::Integer)
            .map_err(|_| format!("expected an integer, found {raw:?}")),
        Value::Boolean(_) => match raw.trim() {
            "true" => Ok(Value::Boolean(true)),
            "false" => Ok(Value::Boolean(false)),
            _ => Err(format!("expected true or false, found {raw:?}")),
        },
        Value::Array(_) => Ok(Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| Value::String(item.to_string()))
                .collect(),
        )),
        other => Err(format!(
            "{} keys cannot be set from the environment",
            other.type_str()
        )),
    }
}

/// Checks one value for `section.key`: of the default's TOML type, and accepted by serde (which
/// knows what the TOML type cannot say: an integer's range, the type of a list's items).
/// Returns the problem, without the key.
fn check_value(section: &str, key: &str, default: &Value, value: &Value) -> Result<(), String> {
    if value.type_str() != default.type_str() {
        return Err(format!("expected {}, found {}", a(default), a(value)));
    }
    let probe = Table::from_iter([(
        section.to_string(),
        Value::Table(Table::from_iter([(key.to_string(), value.clone())])),
    )]);
    probe
        .try_into::<Config>()
        .map(drop)
        .map_err(|e| serde_problem(e.message()))
}

/// serde says an integer is out of its field's range as "invalid value: integer `70000`,
/// expected u16"; an operator should not need to know what a u16 holds.
fn serde_problem(message: &str) -> String {
    let out_of_range = message
        .strip_prefix("invalid value: integer `")
        .and_then(|rest| rest.split_once("`, expected "))
        .and_then(|(found, ty)| {
            let max = match ty {
                "u16" => u64::from(u16::MAX),
                "u32" => u64::from(u32::MAX),
                "u64" => u64::MAX,
                "usize" => u64::try_from(usize::MAX).ok()?,
                _ => return None,
            };
            Some(format!("must be between 0 and {max}, found {found}"))
        });
    out_of_range.unwrap_or_else(|| one_line(message))
}

/// "a string", "an integer": the TOML type of a value, for messages.
fn a(value: &Value) -> String {
    match value.type_str() {
        kind @ ("integer" | "array") => format!("an {kind}"),
        kind => format!("a {kind}"),
    }
}

/// The keys of a table, for messages: "tcp, tls, ws, wss".
fn names(table: &Table) -> String {
    table
        .keys()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Error messages are one line (main prints them as such), whatever a library said.
fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A rule that a value breaks, before it is known where the value came from.
struct Problem {
    key: &'static str,
    problem: String,
}

impl Problem {
    fn new(key: &'static str, problem: String) -> Self {
        Problem { key, problem }
    }

    fn into_error(self, origin: Option<Origin>) -> ConfigError {
        ConfigError::Invalid {
            origin,
            key: self.key.to_string(),
            problem: self.problem,
        }
    }
}

impl Config {
    /// Checks the rules that the types cannot express: listener addresses, TLS files, limits,
    /// node name, log filter and format, `$SYS` interval. [`load`] already does this; call it
    /// for a `Config` built in code.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.check().map_err(|p| p.into_error(None))
    }

    fn check(&self) -> Result<(), Problem> {
        let mqtt = &self.mqtt;
        let listeners = [
            ("mqtt.tcp", &mqtt.tcp),
            ("mqtt.tls", &mqtt.tls),
            ("mqtt.ws", &mqtt.ws),
            ("mqtt.wss", &mqtt.wss),
        ];
        for (key, addr) in listeners {
            if !addr.is_empty() {
                addr.parse::<SocketAddr>().map_err(|e| {
                    Problem::new(
                        key,
                        format!(
                            "{addr:?} is not an IP address and port like \"0.0.0.0:1883\" ({e})"
                        ),
                    )
                })?;
            }
        }
        let http = &self.http;
        if !http.listen.is_empty() {
            let addr = http.listen.parse::<SocketAddr>().map_err(|e| {
                Problem::new(
                    "http.listen",
                    format!(
                        "{:?} is not an IP address and port like \"127.0.0.1:11883\" ({e})",
                        http.listen
                    ),
                )
            })?;
            if http.api_keys.is_empty() && !addr.ip().is_loopback() {
                return Err(Problem::new(
                    "http.listen",
                    format!(
                        "{addr} is not a loopback address, and http.api_keys is empty: the admin API would answer anyone who can reach it; set api_keys or listen on 127.0.0.1"
                    ),
                ));
            }
        }
        if let Err(why) = crate::http::ApiKeys::parse(&http.api_keys) {
            return Err(Problem::new("http.api_keys", why.to_string()));
        }
        if listeners.iter().all(|(_, addr)| addr.is_empty()) {
            // Blame tcp: it is the only listener on by default, so emptying it is what did this.
            return Err(Problem::new(
                "mqtt.tcp",
                "no listener is set: mqtt.tcp, mqtt.tls, mqtt.ws and mqtt.wss are all empty"
                    .to_string(),
            ));
        }
        let tls = &self.tls;
        for (key, addr) in [("mqtt.tls", &mqtt.tls), ("mqtt.wss", &mqtt.wss)] {
            let missing: Vec<_> = [("tls.cert", &tls.cert), ("tls.key", &tls.key)]
                .into_iter()
                .filter(|(_, file)| file.is_empty())
                .map(|(name, _)| name)
                .collect();
            if !addr.is_empty() && !missing.is_empty() {
                return Err(Problem::new(
                    key,
                    format!("needs {} to be set", missing.join(" and ")),
                ));
            }
        }
        for (key, file) in [
            ("tls.cert", &tls.cert),
            ("tls.key", &tls.key),
            ("tls.client_ca", &tls.client_ca),
        ] {
            // Only readability: the transport parses the PEM and reports its own errors.
            if !file.is_empty() {
                check_readable(file)
                    .map_err(|e| Problem::new(key, format!("cannot read {file:?}: {e}")))?;
            }
        }
        if tls.use_identity_as_username && tls.client_ca.is_empty() {
            return Err(Problem::new(
                "tls.use_identity_as_username",
                "needs tls.client_ca: without client certificates there is no identity to use"
                    .to_string(),
            ));
        }
        // Only readability here: the files are parsed at start-up, where an error names the
        // line ([`crate::auth::FileError`]).
        for (key, file) in [
            ("auth.password_file", &self.auth.password_file),
            ("auth.acl_file", &self.auth.acl_file),
        ] {
            if !file.is_empty() {
                check_readable(file)
                    .map_err(|e| Problem::new(key, format!("cannot read {file:?}: {e}")))?;
            }
        }
        between(
            "auth.failed_auth_per_ip_per_sec",
            self.auth.failed_auth_per_ip_per_sec,
            0,
            1_000_000,
        )?;

        let l = &self.limits;
        at_least("limits.max_connections", l.max_connections, 1)?;
        // 268_435_455 is the largest size MQTT's variable byte integer can express.
        between("limits.max_packet_size", l.max_packet_size, 16, 268_435_455)?;
        // Enough for a CONNECT with the 23-byte client id every server must take, and more.
        between(
            "limits.max_connect_size",
            l.max_connect_size,
            128,
            268_435_455,
        )?;
        at_least("limits.connect_timeout_secs", l.connect_timeout_secs, 1)?;
        at_least(
            "limits.max_pending_connections",
            l.max_pending_connections,
            1,
        )?;
        // More than a million a second would be no limit at all, and a rate that fine would
        // round its interval to nothing.
        between(
            "limits.max_connect_rate_per_ip",
            l.max_connect_rate_per_ip,
            0,
            1_000_000,
        )?;
        at_least("limits.max_inflight", l.max_inflight, 1)?;
        at_least("limits.max_queued_messages", l.max_queued_messages, 1)?;
        at_least("limits.max_queued_bytes", l.max_queued_bytes, 1024)?;
        if !["drop", "disconnect"].contains(&l.slow_consumer_policy.as_str()) {
            return Err(Problem::new(
                "limits.slow_consumer_policy",
                format!(
                    "{:?} is not one of \"drop\", \"disconnect\"",
                    l.slow_consumer_policy
                ),
            ));
        }
        at_least("limits.max_sessions", l.max_sessions, 1)?;
        // Topics are length-prefixed with two bytes on the wire.
        between("limits.max_topic_length", l.max_topic_length, 1, 65_535)?;
        // The tries are walked level by level: a bound on levels bounds the walk's depth.
        between("limits.max_topic_levels", l.max_topic_levels, 1, 1024)?;
        at_least("limits.max_subscriptions", l.max_subscriptions, 1)?;
        if l.max_client_id_length < 23 {
            return Err(Problem::new(
                "limits.max_client_id_length",
                format!(
                    "must be at least 23, found {}: MQTT servers must accept 23-byte client ids",
                    l.max_client_id_length
                ),
            ));
        }

        let c = &self.cluster;
        if !c.listen.is_empty() {
            c.listen.parse::<SocketAddr>().map_err(|e| {
                Problem::new(
                    "cluster.listen",
                    format!(
                        "{:?} is not an IP address and port like \"0.0.0.0:9999\" ({e})",
                        c.listen
                    ),
                )
            })?;
        }
        if !c.listen.is_empty() && c.secret.chars().count() < MIN_CLUSTER_SECRET {
            let problem = if c.secret.is_empty() {
                "must be set when cluster.listen is".to_string()
            } else {
                format!("is {} characters long", c.secret.chars().count())
            };
            return Err(Problem::new(
                "cluster.secret",
                format!(
                    "{problem}: every node needs the same secret of at least \
                     {MIN_CLUSTER_SECRET} characters (for example `openssl rand -hex 32`)"
                ),
            ));
        }
        let route_tls = [
            ("cluster.tls_cert", &c.tls_cert),
            ("cluster.tls_key", &c.tls_key),
            ("cluster.tls_ca", &c.tls_ca),
        ];
        if let Some((given, _)) = route_tls.iter().find(|(_, f)| !f.is_empty())
            && let Some((missing, _)) = route_tls.iter().find(|(_, f)| f.is_empty())
        {
            return Err(Problem::new(
                missing,
                format!(
                    "must be set too, as {given} is: route TLS needs cluster.tls_cert, \
                     cluster.tls_key and cluster.tls_ca"
                ),
            ));
        }
        for (key, file) in route_tls {
            if !file.is_empty() {
                check_readable(file)
                    .map_err(|e| Problem::new(key, format!("cannot read {file:?}: {e}")))?;
            }
        }
        for (key, addr) in std::iter::once(("cluster.advertise", &c.advertise))
            .chain(c.routes.iter().map(|r| ("cluster.routes", r)))
        {
            // Held to what peers accept (src/cluster/validate.rs), so they can dial it.
            if !addr.is_empty()
                && let Err(why) = crate::cluster::check_address(addr)
            {
                return Err(Problem::new(key, format!("{addr:?} {why}")));
            }
        }
        if c.name.is_empty() {
            return Err(Problem::new(
                "cluster.name",
                "must not be empty".to_string(),
            ));
        }
        if c.name.len() > crate::cluster::MAX_NAME {
            return Err(Problem::new(
                "cluster.name",
                format!(
                    "is {} bytes long; peers accept at most {}",
                    c.name.len(),
                    crate::cluster::MAX_NAME
                ),
            ));
        }
        at_least("cluster.heartbeat_ms", c.heartbeat_ms, 10)?;
        at_least(
            "cluster.heartbeat_timeout_ms",
            c.heartbeat_timeout_ms,
            2 * c.heartbeat_ms,
        )?;
        at_least("cluster.redial_min_ms", c.redial_min_ms, 1)?;
        at_least("cluster.redial_max_ms", c.redial_max_ms, c.redial_min_ms)?;
        at_least("cluster.route_queue_bytes", c.route_queue_bytes, 1024)?;
        at_least("cluster.route_backlog_bytes", c.route_backlog_bytes, 1024)?;
        at_least("cluster.route_replay_bytes", c.route_replay_bytes, 1024)?;
        at_least("cluster.ack_timeout_ms", c.ack_timeout_ms, 100)?;
        if c.ack_timeout_ms > 10_000 {
            return Err(Problem::new(
                "cluster.ack_timeout_ms",
                format!(
                    "is {}; a publisher must hear within 10 s (10000) that its message was not delivered",
                    c.ack_timeout_ms
                ),
            ));
        }
        if !["cluster", "local"].contains(&c.acks.as_str()) {
            return Err(Problem::new(
                "cluster.acks",
                format!("{:?} is not one of \"cluster\", \"local\"", c.acks),
            ));
        }
        at_least("cluster.max_peers", c.max_peers, 1)?;
        at_least("cluster.max_peer_interest", c.max_peer_interest, 1)?;
        at_least("cluster.max_pending_routes", c.max_pending_routes, 1)?;
        if !["random", "round_robin", "prefer_local"].contains(&c.group_strategy.as_str()) {
            return Err(Problem::new(
                "cluster.group_strategy",
                format!(
                    "{:?} is not one of \"random\", \"round_robin\", \"prefer_local\"",
                    c.group_strategy
                ),
            ));
        }

        let name = &self.node.name;
        if name.is_empty() {
            return Err(Problem::new("node.name", "must not be empty".to_string()));
        }
        // Held to what peers accept in a handshake (src/cluster/validate.rs).
        if let Err(why) = crate::cluster::check_node_name(name) {
            return Err(Problem::new("node.name", format!("{name:?} {why}")));
        }

        let level = &self.log.level;
        if level.trim().is_empty() {
            return Err(Problem::new(
                "log.level",
                "must not be empty (for example \"info\")".to_string(),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(level).map_err(|e| {
            Problem::new(
                "log.level",
                format!(
                    "{level:?} is not a tracing filter: {}",
                    one_line(&e.to_string())
                ),
            )
        })?;
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(Problem::new(
                "log.format",
                format!("{:?} is not one of \"text\", \"json\"", self.log.format),
            ));
        }

        between(
            "sys.interval_secs",
            self.sys.interval_secs,
            0,
            MAX_SYS_INTERVAL_SECS,
        )?;

        if !["immediate", "batched"].contains(&self.storage.durability.as_str()) {
            return Err(Problem::new(
                "storage.durability",
                format!(
                    "{:?} is not one of \"immediate\", \"batched\"",
                    self.storage.durability
                ),
            ));
        }
        between("storage.flush_ms", self.storage.flush_ms, 1, MAX_FLUSH_MS)?;
        Ok(())
    }
}

/// Checks `value >= min`.
fn at_least<T: PartialOrd + fmt::Display>(
    key: &'static str,
    value: T,
    min: T,
) -> Result<(), Problem> {
    if value >= min {
        return Ok(());
    }
    Err(Problem::new(
        key,
        format!("must be at least {min}, found {value}"),
    ))
}

/// Checks `min <= value <= max`.
fn between<T: PartialOrd + fmt::Display>(
    key: &'static str,
    value: T,
    min: T,
    max: T,
) -> Result<(), Problem> {
    if value >= min && value <= max {
        return Ok(());
    }
    Err(Problem::new(
        key,
        format!("must be between {min} and {max}, found {value}"),
    ))
}

/// Opens the file and reads a byte: a directory opens fine on Unix and fails only on read.
fn check_readable(path: &str) -> std::io::Result<()> {
    File::open(path)?.read(&mut [0u8; 1]).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    // No key is a boolean yet; these make sure one added later can be set from the environment.
    #[test]
    fn env_booleans_and_unsupported_kinds() {
        let default = Value::Boolean(false);
        assert_eq!(env_value(&default, " true"), Ok(Value::Boolean(true)));
        assert_eq!(env_value(&default, "false"), Ok(Value::Boolean(false)));
        assert_eq!(
            env_value(&default, "yes"),
            Err("expected true or false, found \"yes\"".to_string())
        );
        assert_eq!(
            env_value(&Value::Float(1.0), "1.5"),
            Err("float keys cannot be set from the environment".to_string())
        );
    }

    #[test]
    fn serde_messages_other_than_ranges_pass_through_on_one_line() {
        assert_eq!(
            serde_problem("invalid value: integer `-1`, expected usize"),
            format!("must be between 0 and {}, found -1", usize::MAX)
        );
        assert_eq!(serde_problem("something\n  else"), "something else");
    }
}
