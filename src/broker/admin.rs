//! What the admin API (`crate::http`) reads from the broker and does to it: snapshots of the
//! sessions, their subscriptions and the retained store, disconnecting a client, and
//! publishing as the broker itself.
//!
//! Snapshots take the session table's lock only to copy the list of sessions, then each
//! session's lock for a moment in turn, so an operator's question never holds up clients for
//! longer than one session's copy. They are as large as the tables (bounded by
//! `limits.max_sessions`, `max_subscriptions` and the retained limits); the API pages them.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::protocol::{ProtocolVersion, Publish, QoS, reason};

use super::Broker;
use super::groups::{self, Filter};
use super::message::Message;
use super::session::{Sender, SessionHandle};

/// A session as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClientInfo {
    pub clientid: String,
    pub username: Option<String>,
    /// The node that holds the session (filled by whoever gathers the lists).
    pub node: String,
    pub connected: bool,
    /// 3 (3.1), 4 (3.1.1) or 5.
    pub proto_ver: u8,
    pub ip_address: Option<String>,
    pub port: Option<u16>,
    pub keepalive: u16,
    pub clean_start: bool,
    /// Seconds the session outlives its connection.
    pub session_expiry: u32,
    pub subscriptions: usize,
    pub inflight: usize,
    pub queued: usize,
    /// When the last connection connected, in milliseconds since the Unix epoch.
    pub connected_at: u64,
}

/// A subscription as the API lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SubscriptionInfo {
    pub node: String,
    pub clientid: String,
    /// The filter, without a group's `$share/{group}/` or `$g/{group}/`.
    pub topic: String,
    pub qos: u8,
    /// The consumer group, for a group membership.
    pub group: Option<String>,
}

/// A retained message as the API shows it.
#[derive(Debug, Clone)]
pub struct RetainedInfo {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
}

impl Broker {
    fn handles(&self) -> Vec<Arc<SessionHandle>> {
        self.sessions().values().cloned().collect()
    }

    /// Every session here, connected or waiting for its client.
    pub fn client_list(&self) -> Vec<ClientInfo> {
        self.handles()
            .iter()
            .map(|handle| client_info(handle))
            .collect()
    }

    /// `client_id`'s session, if it is here.
    pub fn client(&self, client_id: &str) -> Option<ClientInfo> {
        let handle = self.sessions().get(client_id).cloned()?;
        Some(client_info(&handle))
    }

    /// Every subscription here.
    pub fn subscription_list(&self) -> Vec<SubscriptionInfo> {
        let mut out = Vec::new();
        for handle in self.handles() {
            let session = handle.lock();
            for (filter, (options, _)) in session.subscriptions() {
                let (topic, group) = match groups::parse(filter) {
                    Ok(Filter::Group { group, filter }) => (filter, Some(group.to_string())),
                    _ => (filter.as_str(), None),
                };
                out.push(SubscriptionInfo {
                    node: String::new(),
                    clientid: handle.client_id().to_string(),
                    topic: topic.to_string(),
                    qos: options.qos as u8,
                    group,
                });
            }
        }
        out
    }

    /// Disconnects `client_id`'s connection here, if it has one (MQTT 5: DISCONNECT 0x98
    /// Administrative action). The session stays, as after any disconnection. True if there
    /// was a connection.
    pub fn kick(&self, client_id: &str) -> bool {
        let Some(handle) = self.sessions().get(client_id).cloned() else {
            return false;
        };
        let session = handle.lock();
        let Some(outbox) = session.outbox() else {
            return false;
        };
        tracing::info!(client_id, "disconnected by the admin API");
        outbox.close(
            reason::ADMINISTRATIVE_ACTION,
            "disconnected by an administrator",
        );
        true
    }

    /// The retained messages, not expired, by topic.
    pub fn retained_list(&self) -> Vec<RetainedInfo> {
        let now = Instant::now();
        let store = self.retained_store();
        let mut topics = store.topics();
        topics.sort();
        topics
            .iter()
            .filter_map(|topic| store.get(topic))
            .filter(|m| !m.is_expired(now))
            .map(|m| RetainedInfo {
                topic: m.topic.clone(),
                payload: m.payload.clone(),
                qos: m.qos,
            })
            .collect()
    }

    /// Publishes `publish` as the broker itself (the admin API's publish): to every matching
    /// session and peer, retained if it says so; nobody waits for it. Returns how many
    /// sessions and peers it went to.
    pub fn publish_as_broker(&self, publish: Publish) -> usize {
        self.stats.messages_received.inc();
        self.publish(Message::from_publish(publish, 0), Sender::Broker)
            .matched
    }
}

fn client_info(handle: &SessionHandle) -> ClientInfo {
    let session = handle.lock();
    let details = session.details();
    let (inflight, queued) = session.backlog();
    ClientInfo {
        clientid: handle.client_id().to_string(),
        username: handle.access().username().map(str::to_string),
        node: String::new(),
        connected: session.outbox().is_some(),
        proto_ver: match details.map(|d| d.version) {
            Some(ProtocolVersion::V31) => 3,
            Some(ProtocolVersion::V311) => 4,
            _ => 5,
        },
        ip_address: details
            .and_then(|d| d.peer)
            .map(|peer| peer.ip().to_canonical().to_string()),
        port: details.and_then(|d| d.peer).map(|peer| peer.port()),
        keepalive: details.map_or(0, |d| d.keep_alive),
        clean_start: details.is_some_and(|d| d.clean_start),
        session_expiry: session.expiry_interval,
        subscriptions: session.subscriptions().len(),
        inflight,
        queued,
        connected_at: session.connected_at() / 1000,
    }
}
