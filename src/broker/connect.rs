//! CONNECT negotiation (MQTT §3.1, §3.2): decides whether a CONNECT is accepted and on what
//! terms, and builds the CONNACK that says so.
//!
//! Everything the connection needs to know about the client for its whole life comes out of
//! here as a [`Terms`]: protocol version, client id (assigned if empty), keep alive, session
//! expiry, the client's limits on what we send it (Receive Maximum, Maximum Packet Size) and
//! whether it wants reason strings.

use std::time::Duration;

use crate::auth::Denied;
use crate::config::Limits;
use crate::protocol::{
    ConnAck, Connect, Properties, PropertyValues, ProtocolVersion, Will, reason, topic,
};

/// The agreed terms of an accepted connection.
#[derive(Debug)]
pub struct Terms {
    pub version: ProtocolVersion,
    pub client_id: String,
    /// True if the broker chose the client id (the client sent an empty one).
    pub assigned_id: bool,
    pub clean_start: bool,
    /// The keep alive enforced (the client's, or the broker's cap for a 5.0 client).
    pub keep_alive: u16,
    /// True if the broker changed the client's keep alive (sent as Server Keep Alive).
    pub keep_alive_changed: bool,
    pub session_expiry: u32,
    pub session_expiry_changed: bool,
    /// QoS 1/2 messages we may have in flight to the client.
    pub send_window: u16,
    /// The largest packet the client accepts from us.
    pub max_packet_out: usize,
    /// Topic aliases we may use towards the client (5.0): the smaller of its Topic Alias
    /// Maximum and `limits.max_topic_aliases_out`; 0 for none.
    pub aliases_out: u16,
    /// Reason strings and user properties may be sent on acks (Request Problem Information).
    pub problem_info: bool,
    pub will: Option<Will>,
    /// Where the client connects from (set once the socket's CONNECT is accepted).
    pub peer: Option<std::net::SocketAddr>,
    /// The user name the client connected as, once authenticated ([`crate::auth`]).
    pub username: Option<String>,
}

impl Terms {
    /// How long the connection may stay silent: 1.5 × keep alive (MQTT-3.1.2-24), or forever.
    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.keep_alive > 0).then(|| Duration::from_millis(u64::from(self.keep_alive) * 1500))
    }

    /// The CONNACK accepting the connection.
    pub fn connack(&self, session_present: bool, limits: &Limits) -> ConnAck {
        let mut properties = Properties::default();
        if self.version.is_v5() {
            if limits.max_inflight < u16::MAX {
                properties.receive_maximum = Some(limits.max_inflight);
            }
            properties.maximum_packet_size = Some(limits.max_packet_size);
            if limits.max_topic_aliases > 0 {
                properties.topic_alias_maximum = Some(limits.max_topic_aliases);
            }
            if self.assigned_id {
                properties.assigned_client_identifier = Some(self.client_id.clone());
            }
            if self.keep_alive_changed {
                properties.server_keep_alive = Some(self.keep_alive);
            }
            if self.session_expiry_changed {
                properties.session_expiry_interval = Some(self.session_expiry);
            }
        }
        ConnAck {
            session_present,
            code: reason::SUCCESS,
            properties,
        }
    }
}

/// A refused CONNECT: the 5.0 reason code and a reason string for the log and the client.
#[derive(Debug)]
pub struct Refusal {
    pub code: u8,
    pub why: &'static str,
}

impl Refusal {
    /// The CONNACK refusing the connection, in the client's protocol version.
    pub fn connack(&self, version: ProtocolVersion) -> ConnAck {
        if version.is_v5() {
            ConnAck {
                session_present: false,
                code: self.code,
                properties: PropertyValues {
                    reason_string: Some(self.why.to_string()),
                    ..PropertyValues::default()
                }
                .into(),
            }
        } else {
            ConnAck {
                session_present: false,
                code: reason::connack_code_v3(self.code),
                properties: Properties::default(),
            }
        }
    }
}

impl From<Denied> for Refusal {
    fn from(denied: Denied) -> Refusal {
        match denied {
            Denied::BadCredentials => Refusal {
                code: reason::BAD_USER_NAME_OR_PASSWORD,
                why: "bad user name or password",
            },
            Denied::Anonymous => Refusal {
                code: reason::NOT_AUTHORIZED,
                why: "a user name is required (auth.allow_anonymous = false)",
            },
        }
    }
}

fn refuse(code: u8, why: &'static str) -> Result<Terms, Refusal> {
    Err(Refusal { code, why })
}

/// Checks a CONNECT against the broker's rules and limits.
pub fn negotiate(connect: Connect, limits: &Limits, over_capacity: bool) -> Result<Terms, Refusal> {
    let version = connect.protocol;
    let v5 = version.is_v5();
    let props = &connect.properties;
    if over_capacity {
        return refuse(
            reason::QUOTA_EXCEEDED,
            "too many connections (limits.max_connections)",
        );
    }
    if props.authentication_method.is_some() {
        return refuse(
            reason::BAD_AUTHENTICATION_METHOD,
            "no extended authentication method is supported",
        );
    }

    let mut client_id = connect.client_id;
    let assigned_id = client_id.is_empty();
    if assigned_id {
        // 3.1 requires an id; 3.1.1 allows an empty one only with a clean session
        // (MQTT-3.1.3-7, 3.1.3-8); 5.0 lets the server assign one in any case.
        let allowed = match version {
            ProtocolVersion::V31 => false,
            ProtocolVersion::V311 => connect.clean_start,
            ProtocolVersion::V5 => true,
        };
        if !allowed {
            return refuse(
                reason::CLIENT_IDENTIFIER_NOT_VALID,
                "empty client identifier",
            );
        }
        client_id = format!("auto-{:016x}", rand::random::<u64>());
    } else if client_id.len() > limits.max_client_id_length {
        return refuse(
            reason::CLIENT_IDENTIFIER_NOT_VALID,
            "client identifier too long (limits.max_client_id_length)",
        );
    }

    if let Some(will) = &connect.will {
        if !topic_acceptable(&will.topic, limits) {
            return refuse(reason::TOPIC_NAME_INVALID, "will topic not valid");
        }
        if is_sys_topic(&will.topic) {
            return refuse(reason::NOT_AUTHORIZED, "clients may not publish to $SYS");
        }
    }

    let (keep_alive, keep_alive_changed) =
        keep_alive(connect.keep_alive, limits.max_keep_alive, v5);
    let requested_expiry = if v5 {
        props.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else if limits.persistent_client_expiration_secs > 0 {
        limits.persistent_client_expiration_secs
    } else {
        u32::MAX
    };
    let session_expiry = requested_expiry.min(limits.max_session_expiry_secs);
    let send_window = props
        .receive_maximum
        .unwrap_or(u16::MAX)
        .min(limits.max_inflight);
    let max_packet_out = props.maximum_packet_size.map_or(usize::MAX, |size| {
        usize::try_from(size).unwrap_or(usize::MAX)
    });

    Ok(Terms {
        version,
        client_id,
        assigned_id,
        clean_start: connect.clean_start,
        keep_alive,
        keep_alive_changed,
        session_expiry,
        session_expiry_changed: v5 && session_expiry != requested_expiry,
        send_window,
        max_packet_out,
        aliases_out: props
            .topic_alias_maximum
            .unwrap_or(0)
            .min(limits.max_topic_aliases_out),
        problem_info: props.request_problem_information.unwrap_or(1) == 1,
        will: connect.will,
        username: None,
        peer: None,
    })
}

/// The keep alive to enforce. A 5.0 client is told the broker's cap through Server Keep
/// Alive; a 3.1.1 client cannot be told, so it keeps its own value (capping it silently would
/// disconnect a client that does nothing wrong).
fn keep_alive(requested: u16, max: u16, v5: bool) -> (u16, bool) {
    if v5 && max > 0 && (requested == 0 || requested > max) {
        (max, true)
    } else {
        (requested, false)
    }
}

/// A topic name the broker accepts: valid, and within the length and level limits.
pub fn topic_acceptable(name: &str, limits: &Limits) -> bool {
    topic::valid_name(name) && within_limits(name, limits)
}

/// True for `$SYS` and the topics below it, which only the broker may publish to.
pub fn is_sys_topic(name: &str) -> bool {
    name == "$SYS" || name.starts_with("$SYS/")
}

/// A topic name or filter within `limits.max_topic_length` and `max_topic_levels`.
pub fn within_limits(topic: &str, limits: &Limits) -> bool {
    topic.len() <= limits.max_topic_length && topic.split('/').count() <= limits.max_topic_levels
}
