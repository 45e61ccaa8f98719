//! What the broker does with each packet a connected client sends.
//!
//! [`Client`] holds the per-connection state the packets need (topic aliases, the agreed
//! terms) and turns each packet into session changes, routed messages and answers queued on
//! the [`Outbox`]. Handling never waits: it locks, changes, unlocks, so the reader can be
//! cancelled at any await point without losing a half-handled packet.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, MutexGuard};

use crate::protocol::{
    Ack, DecodeError, Packet, Properties, ProtocolVersion, Publish, QoS, SubAck, Subscribe,
    SubscriptionOptions, UnsubAck, Unsubscribe, reason, topic,
};

use super::Broker;
use super::connect::{Terms, is_sys_topic, within_limits};
use super::flow::{self, Waiter};
use super::groups::{self, Filter, GroupFilterError};
use super::message::{Delivery, Message};
use super::outbox::Outbox;
use super::registry::Opened;
use super::session::{Qos2Receipt, Sender, Session, SessionHandle};

/// How a connection ended, which decides whether its Will is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The client sent DISCONNECT; 5.0 reason 0x04 asks for the Will all the same.
    Disconnected { publish_will: bool },
    /// The stream ended or failed without DISCONNECT.
    Lost,
    /// The broker closed it with this reason code (protocol error, takeover, ...).
    Closed(u8),
}

impl End {
    /// The Will is published unless the client disconnected normally (MQTT-3.1.2-8/10) or the
    /// broker itself is going away.
    pub fn publishes_will(&self) -> bool {
        match self {
            End::Disconnected { publish_will } => *publish_will,
            End::Closed(reason::SERVER_SHUTTING_DOWN) => false,
            End::Lost | End::Closed(_) => true,
        }
    }
}

/// Refused filters named in a SUBACK's reason string; the rest are counted.
const REASONS_SHOWN: usize = 8;

/// A connected client, as the reader sees it.
pub struct Client {
    broker: Arc<Broker>,
    outbox: Arc<Outbox>,
    session: Arc<SessionHandle>,
    generation: u64,
    version: ProtocolVersion,
    problem_info: bool,
    /// Session expiry from CONNECT; DISCONNECT may change it, but not from 0 (MQTT-3.14.2-2).
    session_expiry: u32,
    /// Topic aliases the client set (5.0), alias → topic. Bounded by our Topic Alias Maximum.
    /// Boxed and made on first use: most clients set none, and the client lives in its
    /// connection's memory for good.
    #[allow(clippy::box_collection)] // a HashMap is 48 bytes even when empty; the box is 8
    aliases: Option<Box<HashMap<u16, String>>>,
    /// The client's deliveries parked beside full queues, and the acks that wait for them.
    /// Boxed and made on the first PUBLISH: the client lives in its connection's memory for
    /// good.
    hold: Option<Box<Hold>>,
}

/// A publisher held back by full queues ([`super::flow`]).
struct Hold {
    waiter: Arc<Waiter>,
    /// Sessions where its deliveries are parked (since it last had none parked).
    sessions: Vec<Arc<SessionHandle>>,
}

/// A client's [`Hold`], made on first use. A function of the fields it needs rather than a
/// method, so that the caller can go on using the client's other fields meanwhile.
fn made_hold<'h>(
    hold: &'h mut Option<Box<Hold>>,
    outbox: &Arc<Outbox>,
    version: ProtocolVersion,
    session: &Arc<SessionHandle>,
) -> &'h mut Hold {
    hold.get_or_insert_with(|| {
        Box::new(Hold {
            waiter: Arc::new(Waiter::new(
                Arc::clone(outbox),
                version.is_v5(),
                Some(Arc::clone(session)),
            )),
            sessions: Vec::new(),
        })
    })
}

impl Client {
    pub fn new(broker: &Arc<Broker>, terms: &Terms, opened: Opened, outbox: &Arc<Outbox>) -> Self {
        Client {
            broker: Arc::clone(broker),
            outbox: Arc::clone(outbox),
            session: opened.session,
            generation: opened.generation,
            version: terms.version,
            problem_info: terms.problem_info,
            session_expiry: terms.session_expiry,
            aliases: None,
            hold: None,
        }
    }

    /// Handles one packet; returns how the connection ends if it does.
    pub fn handle(&mut self, packet: Packet) -> Option<End> {
        match packet {
            Packet::Publish(publish) => self.publish(publish),
            Packet::PubAck(ack) => {
                self.on_session(|s| s.acknowledge(ack.packet_id));
                None
            }
            Packet::PubRec(ack) => self.pubrec(&ack),
            Packet::PubRel(ack) => self.pubrel(ack.packet_id),
            Packet::PubComp(ack) => {
                self.on_session(|s| s.completed(ack.packet_id));
                None
            }
            Packet::Subscribe(subscribe) => self.subscribe(subscribe),
            Packet::Unsubscribe(unsubscribe) => self.unsubscribe(unsubscribe),
            Packet::PingReq => {
                self.outbox.send(Packet::PingResp);
                None
            }
            Packet::Disconnect(disconnect) => {
                self.disconnect(&disconnect.properties, disconnect.reason)
            }
            Packet::Auth(auth) => Some(if auth.properties.authentication_method.is_some() {
                self.close(
                    reason::BAD_AUTHENTICATION_METHOD,
                    "authentication method not supported",
                )
            } else {
                self.close(
                    reason::PROTOCOL_ERROR,
                    "AUTH without an authentication method",
                )
            }),
            Packet::Connect(_) => Some(self.close(reason::PROTOCOL_ERROR, "second CONNECT")),
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                Some(self.close(reason::PROTOCOL_ERROR, "packet only a server may send"))
            }
        }
    }

    /// The client sent bytes that are not a valid packet.
    pub fn malformed(&mut self, error: &DecodeError) -> End {
        self.close(error.reason_code(), error.to_string())
    }

    /// Ends the connection with a DISCONNECT carrying `code` (5.0) and the reason.
    fn close(&self, code: u8, why: impl Into<String>) -> End {
        let why = why.into();
        tracing::info!(
            client_id = self.session.client_id(),
            code,
            why,
            "closing connection"
        );
        self.broker.stats.protocol_errors.inc();
        self.outbox.close(code, why);
        End::Closed(code)
    }

    /// Runs `f` on the session if this connection still owns it, then wakes the writer (an
    /// ack may have opened the in-flight window). Returns `f`'s result, or its default if the
    /// session was taken over meanwhile (the writer is already closing then).
    fn on_session<T: Default>(&self, f: impl FnOnce(&mut Session) -> T) -> T {
        let result = match self.session() {
            Some(mut session) => f(&mut session),
            None => T::default(),
        };
        self.outbox.wake();
        result
    }

    fn session(&self) -> Option<MutexGuard<'_, Session>> {
        let session = self.session.lock();
        session.is_attached(self.generation).then_some(session)
    }

    fn v5(&self) -> bool {
        self.version.is_v5()
    }

    /// An ack with a reason code and, where the client wants them, a reason string.
    fn ack(&self, packet_id: u16, code: u8, why: Option<&str>) -> Ack {
        let mut ack = Ack::new(packet_id);
        if self.v5() {
            ack.reason = code;
            if self.problem_info {
                ack.properties.reason_string = why.map(str::to_string);
            }
        }
        ack
    }

    fn publish(&mut self, mut publish: Publish) -> Option<End> {
        self.broker.stats.messages_received.inc();
        if !publish.properties.subscription_identifiers.is_empty() {
            // MQTT-3.3.4-6: only the server puts subscription identifiers on a PUBLISH.
            return Some(self.close(
                reason::PROTOCOL_ERROR,
                "subscription identifier in a PUBLISH from a client",
            ));
        }
        if let Some(end) = self.resolve_alias(&mut publish) {
            return Some(end);
        }
        if !within_limits(&publish.topic, &self.broker.limits) {
            return self.refuse_publish(
                &publish,
                reason::TOPIC_NAME_INVALID,
                "topic exceeds limits.max_topic_length or limits.max_topic_levels",
            );
        }
        if is_sys_topic(&publish.topic) {
            return self.refuse_publish(
                &publish,
                reason::NOT_AUTHORIZED,
                "clients may not publish to $SYS",
            );
        }
        if !self
            .broker
            .auth
            .may_publish(self.session.access(), &publish.topic)
        {
            return self.deny_publish(&publish);
        }
        let packet_id = publish.packet_id;
        match publish.qos {
            QoS::AtMostOnce => {
                self.route(publish, false);
            }
            QoS::AtLeastOnce => {
                let matched = self.route(publish, false);
                let ack = self.delivered_ack(packet_id, matched);
                self.send_ack(Packet::PubAck(ack));
            }
            QoS::ExactlyOnce => {
                // A 3.1.1 client cannot be told a Receive Maximum, so it is never held to one:
                // its packet ids bound its unreleased messages to 65,535.
                let limit = if self.v5() {
                    usize::from(self.broker.limits.max_inflight)
                } else {
                    usize::from(u16::MAX)
                };
                let retracted = self.session.take_retracted();
                let mut persisted = false;
                let receipt = self.session().map(|mut s| {
                    for id in retracted {
                        s.release_qos2(id);
                    }
                    persisted = s.is_persisted();
                    s.receive_qos2(packet_id, limit)
                });
                match receipt {
                    None => return Some(End::Closed(reason::SESSION_TAKEN_OVER)),
                    Some(Qos2Receipt::OverLimit) => {
                        return Some(self.close(
                            reason::RECEIVE_MAXIMUM_EXCEEDED,
                            "more QoS 2 messages in flight than Receive Maximum",
                        ));
                    }
                    Some(Qos2Receipt::Duplicate) => {
                        self.send_ack(Packet::PubRec(Ack::new(packet_id)));
                    }
                    Some(Qos2Receipt::New) => {
                        let matched = self.route(publish, persisted);
                        let ack = self.delivered_ack(packet_id, matched);
                        self.send_ack(Packet::PubRec(ack));
                    }
                }
            }
        }
        None
    }

    /// Replaces a 5.0 topic alias by its topic, or records a new alias (§3.3.2.3.4).
    fn resolve_alias(&mut self, publish: &mut Publish) -> Option<End> {
        let alias = publish.properties.edit(|p| p.topic_alias.take())??;
        if alias == 0 || alias > self.broker.limits.max_topic_aliases {
            return Some(self.close(reason::TOPIC_ALIAS_INVALID, "topic alias out of range"));
        }
        if publish.topic.is_empty() {
            match self
                .aliases
                .as_ref()
                .and_then(|aliases| aliases.get(&alias))
            {
                Some(topic) => publish.topic.clone_from(topic),
                None => return Some(self.close(reason::PROTOCOL_ERROR, "unknown topic alias")),
            }
        } else {
            self.aliases
                .get_or_insert_default()
                .insert(alias, publish.topic.clone());
        }
        None
    }

    /// A PUBLISH the broker will not route. 5.0 clients get a negative ack for QoS 1/2;
    /// 3.1.1 has none, so a bad topic closes the connection and a forbidden one is acked and
    /// dropped, as 3.1.1 brokers do for publishes their ACL denies.
    fn refuse_publish(&self, publish: &Publish, code: u8, why: &str) -> Option<End> {
        tracing::info!(
            client_id = self.session.client_id(),
            topic = %publish.topic,
            why,
            "publish refused"
        );
        self.broker.stats.publishes_refused.inc();
        self.answer_refused(publish, code, why)
    }

    /// A PUBLISH the ACL does not let through: out of line and cold, as it is rare and
    /// `publish` is the hot path.
    #[cold]
    #[inline(never)]
    fn deny_publish(&self, publish: &Publish) -> Option<End> {
        // Debug only: a client can send these as fast as it can write, and each is counted.
        tracing::debug!(
            client_id = self.session.client_id(),
            topic = %publish.topic,
            "publish not authorized (auth.acl_file); dropped"
        );
        self.broker.stats.publishes_denied.inc();
        self.answer_refused(publish, reason::NOT_AUTHORIZED, "not authorized")
    }

    /// Answers a PUBLISH that is not routed: a negative ack (5.0, QoS 1/2); for 3.1.1, a bad
    /// topic closes the connection and a forbidden one is acked and dropped, as 3.1.1 has no
    /// way to say no.
    fn answer_refused(&self, publish: &Publish, code: u8, why: &str) -> Option<End> {
        if !self.v5() && code != reason::NOT_AUTHORIZED {
            return Some(self.close(code, why));
        }
        let ack = self.ack(publish.packet_id, code, Some(why));
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => self.send_ack(Packet::PubAck(ack)),
            QoS::ExactlyOnce => self.send_ack(Packet::PubRec(ack)),
        }
        None
    }

    /// PUBACK/PUBREC for a routed message: 5.0 says when nobody was subscribed.
    fn delivered_ack(&self, packet_id: u16, matched: usize) -> Ack {
        let code = if matched == 0 {
            reason::NO_MATCHING_SUBSCRIBERS
        } else {
            reason::SUCCESS
        };
        self.ack(packet_id, code, None)
    }

    /// Routes the message; returns how many sessions matched. Deliveries parked beside full
    /// queues hold the message's ack back ([`flow::Waiter`]).
    ///
    /// In `immediate` mode the ack also waits until what was written for the message is on
    /// disk — the retained message, the publisher's own QoS 2 id (its copies for persistent
    /// sessions hold the ack themselves, [`super::persist`]) — and is negative if it could not
    /// be written.
    fn route(&mut self, publish: Publish, wrote_id: bool) -> usize {
        let qos = publish.qos;
        let origin = self.session.id();
        let hold = made_hold(&mut self.hold, &self.outbox, self.version, &self.session);
        let broker = &self.broker;
        let persist = broker.persist.get().filter(|p| p.immediate());
        if hold.waiter.outstanding() == 0 {
            hold.sessions.clear();
        }
        hold.waiter.begin();
        let routed = broker.publish(
            Message::from_publish(publish, origin),
            Sender::Publisher(&hold.waiter),
        );
        for session in routed.parked {
            if !hold.sessions.iter().any(|s| Arc::ptr_eq(s, &session)) {
                hold.sessions.push(session);
            }
        }
        if let Some(persist) = persist
            && qos != QoS::AtMostOnce
            && (routed.stored || wrote_id)
        {
            persist.hold(hold.waiter.forwarded());
        }
        routed.matched
    }

    /// The client's waiter, made on first use.
    fn hold(&mut self) -> &mut Hold {
        made_hold(&mut self.hold, &self.outbox, self.version, &self.session)
    }

    /// Sends a PUBACK or PUBREC: now, or after the parked deliveries it must follow (the
    /// publisher only learns its message was taken once it really was, and acks stay in
    /// order).
    fn send_ack(&self, ack: Packet) {
        match &self.hold {
            Some(hold) => hold.waiter.ack(ack),
            None => self.outbox.send(ack),
        }
    }

    /// Whether the client has as many deliveries parked as it may, and its reader must wait.
    pub fn is_blocked(&self) -> bool {
        self.hold.as_ref().is_some_and(|hold| hold.waiter.is_full())
    }

    /// Waits until the client's parked deliveries have moved in (or been dropped, once the
    /// sessions holding them up are declared slow). This is the broker's flow control: a
    /// publisher that outpaces a subscriber is slowed to its pace (its acks are late and its
    /// socket is not read meanwhile) instead of losing messages, for at most
    /// `limits.queue_full_wait_ms` ([`super::flow`]). Does not borrow the client, so that its
    /// acknowledgements can be handled meanwhile.
    pub fn settle(&self) -> Option<impl Future<Output = ()> + use<>> {
        let hold = self.hold.as_ref()?;
        let waiter = Arc::clone(&hold.waiter);
        let sessions = hold.sessions.clone();
        let broker = Arc::clone(&self.broker);
        Some(async move { flow::settle(&waiter, &sessions, &broker.bounds, &broker.stats).await })
    }

    /// PUBREC for a message we sent: release it with PUBREL, or forget it if the 5.0 client
    /// refused it.
    fn pubrec(&self, ack: &Ack) -> Option<End> {
        if self.v5() && ack.reason >= 0x80 {
            self.on_session(|s| s.refused(ack.packet_id));
            return None;
        }
        let known = self.on_session(|s| s.received(ack.packet_id));
        self.answer_release(Packet::PubRel, ack.packet_id, known)
    }

    /// PUBREL for a QoS 2 message the client sent: the packet id is free again. Once the
    /// client has PUBCOMP it may use the id for a new message, so in `immediate` mode the
    /// PUBCOMP waits until the release is on disk: a restart must not take the new message
    /// for a resend of the old one.
    fn pubrel(&mut self, packet_id: u16) -> Option<End> {
        let (known, persisted) = self.session().map_or((false, false), |mut s| {
            (s.release_qos2(packet_id), s.is_persisted())
        });
        if !(known && persisted) {
            return self.answer_release(Packet::PubComp, packet_id, known);
        }
        let waiter = Arc::clone(&self.hold().waiter);
        waiter.begin();
        if let Some(persist) = self.broker.persist.get().filter(|p| p.immediate()) {
            persist.hold(waiter.forwarded());
        }
        waiter.ack(Packet::PubComp(Ack::new(packet_id)));
        None
    }

    /// Answers PUBREC with PUBREL or PUBREL with PUBCOMP; an unknown packet id still gets
    /// its answer, with 0x92 in 5.0, so the client can finish the exchange.
    fn answer_release(&self, make: fn(Ack) -> Packet, packet_id: u16, known: bool) -> Option<End> {
        let ack = if known {
            Ack::new(packet_id)
        } else {
            self.ack(
                packet_id,
                reason::PACKET_IDENTIFIER_NOT_FOUND,
                Some("unknown packet identifier"),
            )
        };
        self.outbox.send(make(ack));
        None
    }

    fn subscribe(&mut self, subscribe: Subscribe) -> Option<End> {
        let id = subscribe
            .properties
            .subscription_identifiers
            .first()
            .copied();
        // Each filter once, with the options of its last mention (a repeat replaces the
        // subscription, MQTT-3.8.4-3), before any lock is taken: a packet that repeats a filter
        // thousands of times costs one subscription, not thousands.
        let mut distinct: Vec<(&str, SubscriptionOptions)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (filter, options) in &subscribe.filters {
            match index.get(filter.as_str()) {
                Some(&i) => distinct[i].1 = *options,
                None => {
                    index.insert(filter, distinct.len());
                    distinct.push((filter, *options));
                }
            }
        }
        let (outcomes, room, saved) = {
            let Some(mut session) = self.session() else {
                return Some(End::Closed(reason::SESSION_TAKEN_OVER));
            };
            let outcomes: Vec<_> = distinct
                .iter()
                .map(|&(filter, options)| self.subscribe_one(&mut session, filter, options, id))
                .collect();
            let saved = outcomes.iter().any(Result::is_ok) && session.is_persisted();
            if saved {
                session.save();
            }
            (outcomes, session.room(&self.broker.bounds), saved)
        };
        let mut reasons = Vec::with_capacity(subscribe.filters.len());
        for (filter, options) in &subscribe.filters {
            reasons.push(match &outcomes[index[filter.as_str()]] {
                Ok(_) => options.qos as u8,
                Err(_) if !self.v5() => reason::V3_SUBACK_FAILURE,
                Err((code, _)) => *code,
            });
        }
        let refusals: Vec<String> = distinct
            .iter()
            .zip(&outcomes)
            .filter_map(|((filter, _), outcome)| {
                outcome
                    .as_ref()
                    .err()
                    .map(|(_, why)| format!("{filter}: {why}"))
            })
            .collect();
        if let Some(first) = refusals.first() {
            // One line per packet, however many filters it has.
            tracing::info!(
                client_id = self.session.client_id(),
                refused = refusals.len(),
                first,
                "subscriptions refused"
            );
        }
        let mut properties = Properties::default();
        if self.v5() && self.problem_info && !refusals.is_empty() {
            let mut why = refusals[..refusals.len().min(REASONS_SHOWN)].join("; ");
            if refusals.len() > REASONS_SHOWN {
                why.push_str(&format!("; and {} more", refusals.len() - REASONS_SHOWN));
            }
            properties.reason_string = Some(why);
        }
        // Retained messages are looked up outside the session's lock, which every publisher
        // to this client takes.
        let wanted: Vec<(&str, QoS)> = distinct
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Ok(true)))
            .map(|(&(filter, options), _)| (filter, options.qos))
            .collect();
        let retained = self.retained_for(&wanted, id, room);
        let suback = Packet::SubAck(SubAck {
            packet_id: subscribe.packet_id,
            reasons,
            properties,
        });
        if saved && let Some(persist) = self.broker.persist.get().filter(|p| p.immediate()) {
            // The SUBACK (and the retained messages after it) once the subscription is on
            // disk: a restart must not bring the session back without it.
            persist.answer(
                suback,
                retained,
                Arc::clone(&self.outbox),
                Arc::clone(&self.session),
                self.broker.bounds,
            );
            return None;
        }
        self.outbox.send(suback);
        // Retained messages go after the SUBACK, which is why they are queued only now.
        if !retained.is_empty() {
            if let Some(mut session) = self.session() {
                for delivery in retained {
                    if !session.enqueue(delivery, &self.broker.bounds) {
                        self.broker.stats.dropped_queue_full.inc();
                    }
                }
            }
            self.outbox.wake();
        }
        None
    }

    /// The retained messages for the `wanted` filters, as deliveries at each filter's granted
    /// QoS, no more than `room` (what the session's queue still takes): one SUBSCRIBE costs
    /// at most its subscriber's queue, however many filters it has or messages are retained.
    fn retained_for(&self, wanted: &[(&str, QoS)], id: Option<u32>, room: usize) -> Vec<Delivery> {
        let mut out = Vec::new();
        let (auth, access) = (&self.broker.auth, self.session.access());
        let store = self.broker.retained_store();
        // Only a filter that starts with `$SYS` matches a `$SYS` topic (MQTT-4.7.2-1), and
        // only the broker's tree, kept apart, has such topics: such a filter looks there.
        // (A leaf lock, taken under the retained store's.)
        let sys = self.broker.sys.store();
        // The walks of one SUBSCRIBE together visit at most twice the stores' tries: wildcard
        // filters that match little cannot make it walk a store over and over.
        let mut budget = (store.nodes() + sys.nodes()) * 2 + 1024;
        for (filter, qos) in wanted {
            let from = if is_sys_topic(filter) { &sys } else { &store };
            let (messages, more) = from.matching(filter, room - out.len(), &mut budget);
            let before = messages.len();
            let readable: Vec<_> = messages
                .into_iter()
                .filter(|message| auth.may_read(access, &message.topic))
                .collect();
            let denied = before - readable.len();
            self.broker.stats.deliveries_denied.add(denied as u64);
            out.extend(readable.into_iter().map(|message| Delivery {
                qos: message.qos.min(*qos),
                // MQTT-3.3.1-9: retained messages sent on subscribe carry RETAIN.
                retain: true,
                subscription_ids: id.into_iter().collect(),
                group: None,
                stored: None,
                message,
            }));
            if more {
                self.broker.stats.retained_not_sent.inc();
                tracing::info!(
                    client_id = self.session.client_id(),
                    filter,
                    room,
                    "retained messages not all sent: more match than the session's queue holds (limits.max_queued_messages), or than one SUBSCRIBE may walk"
                );
                break;
            }
        }
        out
    }

    /// Adds one subscription; returns whether its retained messages are to be sent, or the
    /// 5.0 reason code and why not.
    fn subscribe_one(
        &self,
        session: &mut Session,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> Result<bool, (u8, &'static str)> {
        let limits = &self.broker.limits;
        let group = match groups::parse(filter) {
            Ok(Filter::Plain(_)) => false,
            Ok(Filter::Group { .. }) if options.no_local => {
                // MQTT-3.8.3-4 forbids it; a failure code is clearer than a dropped option.
                return Err((
                    reason::TOPIC_FILTER_INVALID,
                    "no local is not allowed on a group subscription",
                ));
            }
            Ok(Filter::Group { .. }) => true,
            Err(GroupFilterError::BadName) => {
                return Err((
                    reason::TOPIC_FILTER_INVALID,
                    "group name must be at least one character without '/', '+' or '#'",
                ));
            }
            Err(GroupFilterError::NoFilter) => {
                return Err((
                    reason::TOPIC_FILTER_INVALID,
                    "a group subscription needs a valid topic filter after the group name",
                ));
            }
        };
        if !topic::valid_filter(filter) {
            return Err((reason::TOPIC_FILTER_INVALID, "invalid topic filter"));
        }
        if !within_limits(filter, limits) {
            return Err((
                reason::TOPIC_FILTER_INVALID,
                "filter exceeds limits.max_topic_length or limits.max_topic_levels",
            ));
        }
        let guarded = match groups::parse(filter) {
            Ok(Filter::Group { filter, .. }) => filter,
            _ => filter,
        };
        if !self
            .broker
            .auth
            .may_subscribe(self.session.access(), guarded)
        {
            self.broker.stats.subscriptions_denied.inc();
            return Err((reason::NOT_AUTHORIZED, "not authorized"));
        }
        let is_new = !session.subscriptions().contains_key(filter);
        if is_new && session.subscriptions().len() >= limits.max_subscriptions {
            return Err((reason::QUOTA_EXCEEDED, "limits.max_subscriptions reached"));
        }
        session.add_subscription(filter, options, id);
        self.broker
            .subscribe_filter(filter, &self.session, options, id);
        // Group members get no retained messages on subscribe (MQTT 5 §4.8.2).
        Ok(!group
            && match options.retain_handling {
                0 => true,
                1 => is_new,
                _ => false,
            })
    }

    fn unsubscribe(&mut self, unsubscribe: Unsubscribe) -> Option<End> {
        let Some(mut session) = self.session() else {
            return Some(End::Closed(reason::SESSION_TAKEN_OVER));
        };
        let mut reasons = Vec::with_capacity(unsubscribe.filters.len());
        for filter in &unsubscribe.filters {
            let existed = session.remove_subscription(filter);
            if existed {
                self.broker
                    .unsubscribe_filters([filter.as_str()], self.session.id());
            }
            reasons.push(if existed {
                reason::SUCCESS
            } else {
                reason::NO_SUBSCRIPTION_EXISTED
            });
        }
        let saved = reasons.contains(&reason::SUCCESS) && session.is_persisted();
        if saved {
            session.save();
        }
        drop(session);
        let unsuback = Packet::UnsubAck(UnsubAck {
            packet_id: unsubscribe.packet_id,
            // 3.1.1 UNSUBACK has no payload.
            reasons: if self.v5() { reasons } else { Vec::new() },
            properties: Properties::default(),
        });
        match self.broker.persist.get().filter(|p| saved && p.immediate()) {
            Some(persist) => persist.answer(
                unsuback,
                Vec::new(),
                Arc::clone(&self.outbox),
                Arc::clone(&self.session),
                self.broker.bounds,
            ),
            None => self.outbox.send(unsuback),
        }
        None
    }

    fn disconnect(&mut self, properties: &Properties, code: u8) -> Option<End> {
        if self.v5()
            && let Some(expiry) = properties.session_expiry_interval
        {
            if self.session_expiry == 0 && expiry != 0 {
                return Some(self.close(
                    reason::PROTOCOL_ERROR,
                    "session expiry set on DISCONNECT after 0 on CONNECT",
                ));
            }
            let expiry = expiry.min(self.broker.limits.max_session_expiry_secs);
            if let Some(mut session) = self.session() {
                session.expiry_interval = expiry;
            }
        }
        self.outbox.finish();
        Some(End::Disconnected {
            publish_will: self.v5() && code == reason::DISCONNECT_WITH_WILL,
        })
    }
}
