//! Sessions follow their clients: a client that connects to this node with clean start = 0
//! while its session lives on another node gets that session here, moved.
//!
//! Before a resuming CONNECT that finds no session here is answered, the broker asks the other
//! nodes for it ([`super::Peers::fetch_session`]); the node that has it hands it over
//! ([`Broker::export_session`]): it closes the client's connection there (MQTT 5: DISCONNECT
//! 0x8E), takes everything out of the session — subscriptions with their options and
//! identifiers, the messages in flight with their packet ids and QoS 2 states, the queued
//! ones in order, the inbound QoS 2 ids not yet released — and keeps nothing. This node
//! takes it in ([`Broker::adopt`]): the subscriptions go into its router (and so to the
//! other nodes as interest), the in-flight messages are sent again with DUP before anything
//! else, and the CONNACK says session present. A node that does not answer within 10 s is
//! taken not to have it: the client gets a new session (session present = 0), and the log
//! says which node did not answer.
//!
//! What is carried is checked as a client's would be: filters and topics against this node's
//! limits and ACL, the queue against its bounds (what does not fit is dropped and counted).
//! Messages published for the session while it moves — after the old node took its
//! subscriptions out of its router and before this node's reached the publisher's node, one
//! route's latency — find no subscriber (docs/ARCHITECTURE.md, "Sessions that move").

use std::sync::Arc;
use std::time::Instant;

use crate::protocol::{Publish, QoS, SubscriptionOptions, reason, topic};

use super::groups::{self, GroupRef};
use super::message::{Delivery, Message};
use super::session::{Session, SessionHandle};
use super::{Broker, is_sys_topic, within_limits};

/// A session on its way from one node to another.
#[derive(Debug, Default)]
pub struct SessionImage {
    pub subscriptions: Vec<MovedSubscription>,
    /// In flight first, then queued, in the order the client is to get them.
    pub messages: Vec<MovedMessage>,
    /// Inbound QoS 2 packet ids answered with PUBREC and not yet released.
    pub inbound_qos2: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MovedSubscription {
    pub filter: String,
    pub options: SubscriptionOptions,
    pub id: Option<u32>,
}

/// A message of the session, as the client is to get it: the PUBLISH carries the delivery's
/// QoS, RETAIN flag, subscription identifiers and remaining expiry.
#[derive(Debug, Clone, PartialEq)]
pub struct MovedMessage {
    pub publish: Publish,
    /// In flight: the packet id it was sent with, and whether PUBREL was sent (QoS 2).
    pub in_flight: Option<(u16, bool)>,
    /// The consumer group it was given to this session for.
    pub group: Option<GroupRef>,
}

/// What the other nodes answered about a session.
#[derive(Debug)]
pub enum Fetched {
    Found(Box<SessionImage>),
    NotFound,
    /// These nodes did not answer in time, or their route ended first; none of the others
    /// has it.
    Unreachable(Vec<String>),
}

impl Broker {
    /// Another node asks for `client_id`'s session, as its client connected there: hands it
    /// over if it is here and belongs to `username`, and keeps nothing of it.
    pub fn export_session(&self, client_id: &str, username: Option<&str>) -> Option<SessionImage> {
        let mut sessions = self.sessions();
        let handle = sessions.get(client_id).cloned()?;
        if handle.access().username() != username {
            tracing::info!(
                client_id,
                "session not handed over: the client connected elsewhere as another user"
            );
            return None;
        }
        sessions.remove(client_id);
        // Resumed elsewhere before its Will Delay ran out: the Will is not sent (MQTT-3.1.3-9).
        drop(self.expiry.cancel(handle.id()));
        let mut session = handle.lock();
        if let Some(outbox) = session.outbox() {
            outbox.close(
                reason::SESSION_TAKEN_OVER,
                "the client connected to another node, which took the session over",
            );
        }
        handle.set_online(false);
        let exported = session.export();
        drop(session);
        self.unsubscribe_filters(exported.filters.iter().map(String::as_str), handle.id());
        drop(sessions);
        let now = Instant::now();
        let image = SessionImage {
            subscriptions: exported
                .subscriptions
                .into_iter()
                .map(|(filter, options, id)| MovedSubscription {
                    filter,
                    options,
                    id,
                })
                .collect(),
            messages: exported
                .messages
                .into_iter()
                // `$SYS` updates not yet written are this node's figures, not the client's
                // messages: they are left out (the other node publishes its own tree).
                .filter(|(delivery, _)| {
                    !delivery.message.is_expired(now) && !is_sys_topic(&delivery.message.topic)
                })
                .map(|(delivery, in_flight)| moved(&delivery, in_flight, now))
                .collect(),
            inbound_qos2: exported.inbound_qos2,
        };
        self.stats.sessions_moved_out.inc();
        tracing::info!(
            client_id,
            subscriptions = image.subscriptions.len(),
            messages = image.messages.len(),
            "session handed over to the node the client connected to"
        );
        Some(image)
    }

    /// A resuming CONNECT found no session for `client_id` here: asks the other nodes for it
    /// (see the module docs). `None` when no node has it, none answered, or this node is not
    /// part of a cluster.
    pub(super) async fn fetch_session(
        &self,
        client_id: &str,
        username: Option<&str>,
    ) -> Option<SessionImage> {
        let peers = self.peers.get()?;
        if self.sessions().contains_key(client_id) {
            return None;
        }
        match peers.fetch_session(client_id, username)?.await {
            Fetched::Found(image) => Some(*image),
            Fetched::NotFound => None,
            Fetched::Unreachable(nodes) => {
                tracing::warn!(
                    client_id,
                    ?nodes,
                    "nodes that may hold the client's session could not be asked (no answer within 10 s, or their route ended): it gets a new one (session present = 0)"
                );
                None
            }
        }
    }

    /// Takes a session moved from another node into `session`, new and not yet attached
    /// ([`Broker::take_in`]).
    pub(super) fn adopt(
        &self,
        handle: &Arc<SessionHandle>,
        session: &mut Session,
        image: SessionImage,
    ) {
        let client_id = handle.client_id();
        let (refused, dropped) = self.take_in(handle, session, image);
        self.stats.dropped_handover.add(dropped as u64);
        self.stats.sessions_moved_in.inc();
        if refused > 0 || dropped > 0 {
            tracing::warn!(
                client_id,
                refused_subscriptions = refused,
                dropped_messages = dropped,
                "part of a session moved from another node was not taken (this node's limits, ACL or queue bounds)"
            );
        }
        tracing::info!(
            client_id,
            subscriptions = session.subscriptions().len(),
            "session moved here from another node"
        );
    }

    /// Takes a session image into `session`, not attached: its subscriptions (checked as a
    /// client's SUBSCRIBE would be) and its messages (within this node's bounds). Returns how
    /// many subscriptions were refused and how many messages dropped. A session moved from
    /// another node comes this way, and so does one read back from the store
    /// ([`super::restore`]).
    pub(super) fn take_in(
        &self,
        handle: &Arc<SessionHandle>,
        session: &mut Session,
        image: SessionImage,
    ) -> (usize, usize) {
        let mut refused = 0usize;
        for sub in image.subscriptions {
            let guarded = match groups::parse(&sub.filter) {
                Ok(groups::Filter::Group { filter, .. }) => filter,
                Ok(groups::Filter::Plain(filter)) => filter,
                Err(_) => {
                    refused += 1;
                    continue;
                }
            };
            let allowed = topic::valid_filter(&sub.filter)
                && within_limits(&sub.filter, &self.limits)
                && session.subscriptions().len() < self.limits.max_subscriptions
                && self.auth.may_subscribe(handle.access(), guarded);
            if !allowed {
                refused += 1;
                continue;
            }
            session.add_subscription(&sub.filter, sub.options, sub.id);
            self.subscribe_filter(&sub.filter, handle, sub.options, sub.id);
        }
        let now = Instant::now();
        let mut invalid = 0usize;
        let deliveries: Vec<_> = image
            .messages
            .into_iter()
            .filter_map(|m| {
                // No node sends `$SYS` (its tree stays its own), and a peer's is not taken.
                let ok = topic::valid_name(&m.publish.topic)
                    && within_limits(&m.publish.topic, &self.limits)
                    && !is_sys_topic(&m.publish.topic);
                invalid += usize::from(!ok);
                ok.then(|| delivery(m))
            })
            .filter(|(d, _)| !d.message.is_expired(now))
            .collect();
        let dropped = session.adopt(deliveries, &image.inbound_qos2, &self.bounds) + invalid;
        (refused, dropped)
    }
}

/// A queued or in-flight delivery as it travels.
fn moved(delivery: &Delivery, in_flight: Option<(u16, bool)>, now: Instant) -> MovedMessage {
    let mut publish = delivery.message.to_publish(now);
    publish.qos = delivery.qos;
    publish.retain = delivery.retain;
    publish
        .properties
        .subscription_identifiers
        .clone_from(&delivery.subscription_ids);
    publish.packet_id = match in_flight {
        Some((packet_id, _)) => packet_id,
        None => u16::from(delivery.qos != QoS::AtMostOnce),
    };
    MovedMessage {
        publish,
        in_flight,
        group: delivery.group.as_deref().cloned(),
    }
}

/// A travelled message as a delivery again.
fn delivery(moved: MovedMessage) -> (Delivery, Option<(u16, bool)>) {
    let mut publish = moved.publish;
    let subscription_ids = publish
        .properties
        .edit(|p| std::mem::take(&mut p.subscription_identifiers))
        .unwrap_or_default();
    let (qos, retain) = (publish.qos, publish.retain);
    let delivery = Delivery {
        message: Arc::new(Message::from_publish(publish, 0)),
        qos,
        retain,
        subscription_ids,
        group: moved.group.map(Arc::new),
        stored: None,
    };
    (delivery, moved.in_flight)
}
