//! Session state (MQTT §4.1): what the broker remembers about a client between packets and,
//! for a persistent session, between connections.
//!
//! A session outlives its connections. It holds the client's subscriptions, the messages
//! waiting for it ([`Queue`], bounded), the QoS 1/2 messages sent but not yet acknowledged (the
//! in-flight window), and the QoS 2 packet ids received but not yet released. Publishers put
//! messages in through [`SessionHandle::offer`]; the connection's writer takes them out with
//! [`Session::fill`], which also assigns packet ids and encodes, under the same short lock.
//! What happens when the queue is full is [`super::flow`]'s business.
//! All state is plain data so that a later issue can persist it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use bytes::BytesMut;

use crate::auth::Access;

use crate::protocol::{
    self, Ack, Packet, ProtocolVersion, QoS, SubscriptionOptions, TopicAlias, reason,
};

use super::aliases::Aliases;
use super::connect::is_sys_topic;
use super::flow::{Backlog, Bounds, Parked, SlowPolicy, Waiter};
use super::message::Delivery;
use super::outbox::Outbox;
use super::persist::Persisted;
use super::queue::Queue;
use super::stats::Stats;
use super::unreleased::Unreleased;

/// How many times `limits.queue_full_wait_ms` a session that was slow makes nobody wait: a
/// subscriber just under the speed that makes it slow would otherwise pace its publishers
/// again each time it has drained to half.
const DISTRUST: u32 = 10;

/// Stop filling the write buffer past this many bytes, so one busy session cannot make its
/// writer's buffer grow without bound; the rest goes out on the next round.
const FILL_BYTES: usize = 64 * 1024;

/// The shared handle to a session: subscriptions in the router point here.
pub struct SessionHandle {
    id: u64,
    /// Who the client is (its client id, shared with the broker's session table, which is
    /// keyed by it, and its user name) and its compiled ACL rules. A session belongs to one
    /// user: a CONNECT by another user name starts a new one.
    access: Access,
    /// A connection is attached: kept beside the lock so that choosing a consumer group's
    /// member, which prefers connected ones, need not lock every member.
    online: AtomicBool,
    /// Inbound QoS 2 packet ids whose PUBREC was negative because a peer node did not take
    /// the message ([`super::flow::Waiter`]): forgotten before the next QoS 2 PUBLISH, so
    /// the client may use the id again. A lock of its own, taken under any other (it takes
    /// none), as the waiter answers under locks of its own.
    retracted: Mutex<Vec<u16>>,
    state: Mutex<Session>,
}

/// Who offers a message, which decides what a full queue does to it ([`super::flow`]).
#[derive(Clone, Copy)]
pub enum Sender<'a> {
    /// A local client's PUBLISH: parked, and the publisher waits for it.
    Publisher(&'a Arc<Waiter>),
    /// Another node's message: parked on the route's budget; the route does not wait.
    Route(&'a Arc<Backlog>),
    /// The broker itself (Wills, group hand-overs): dropped when there is no room. (Retained
    /// messages for a new subscription take the same rule through [`Session::enqueue`], under
    /// a lock the subscriber already holds.)
    Broker,
}

/// What became of a message offered to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// Parked beside the full queue, until it has room ([`super::flow`]); `began`: the
    /// session began keeping messages waiting with this one.
    Parked {
        began: bool,
    },
    /// Not queued: QoS 0 for an offline session (by design), or no room and no waiting
    /// (counted, by reason).
    Dropped,
}

impl SessionHandle {
    /// An anonymous client's session.
    #[cfg(test)]
    pub fn new(client_id: impl Into<Arc<str>>) -> Arc<SessionHandle> {
        SessionHandle::for_user(client_id.into(), None)
    }

    /// The session of `client_id`, connected as `username`.
    pub fn for_user(client_id: Arc<str>, username: Option<Arc<str>>) -> Arc<SessionHandle> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(SessionHandle {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            access: Access::new(client_id, username),
            online: AtomicBool::new(false),
            retracted: Mutex::new(Vec::new()),
            state: Mutex::new(Session::new()),
        })
    }

    /// The client as the ACL sees it.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// True while a connection is attached.
    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
    }

    /// Records whether a connection is attached; set under the session's lock, by whoever
    /// attaches or detaches one.
    pub fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Relaxed);
    }

    /// A negative PUBREC freed inbound QoS 2 `packet_id` (MQTT-4.3.3): the session forgets
    /// it before the client's next QoS 2 PUBLISH ([`Session::receive_qos2`]'s caller).
    pub fn retract_qos2(&self, packet_id: u16) {
        self.retracted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(packet_id);
    }

    /// The QoS 2 packet ids negative PUBRECs freed since the last call.
    pub fn take_retracted(&self) -> Vec<u16> {
        std::mem::take(
            &mut *self
                .retracted
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// A number unique to this session for the broker's lifetime (0 is never used).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn client_id(&self) -> &str {
        self.access.client_id()
    }

    /// The client id, shared.
    pub fn client_id_shared(&self) -> Arc<str> {
        self.access.client_id_shared()
    }

    pub fn lock(&self) -> MutexGuard<'_, Session> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a message to the session: queued (and the connection woken) if it fits, else
    /// parked or dropped as [`super::flow`] says for `sender`.
    pub fn offer(
        self: &Arc<Self>,
        delivery: Delivery,
        sender: Sender<'_>,
        bounds: &Bounds,
        stats: &Stats,
    ) -> Offer {
        let mut guard = self.lock();
        // Reborrowed, so that the outbox and the queue can be used side by side.
        let session = &mut *guard;
        let size = delivery.size();
        let Some(outbox) = &session.outbox else {
            if delivery.qos == QoS::AtMostOnce {
                // QoS 0 messages are not kept for offline sessions (MQTT-3.1.2-5 makes it
                // optional).
                return Offer::Dropped;
            }
            if session.queue.has_room(size, bounds) {
                let delivery = session.kept(delivery, sender);
                session.queue.push(delivery);
                return Offer::Queued;
            }
            stats.dropped_queue_full.inc();
            tracing::debug!(
                client_id = self.client_id(),
                "offline session's queue full; message dropped"
            );
            return Offer::Dropped;
        };
        if session.slow {
            stats.dropped_slow_consumer.inc();
            return Offer::Dropped;
        }
        // Behind parked messages a new one parks too, so none overtakes another; the broker's
        // own messages come from no publisher whose order they could break.
        let in_line = !session.queue.has_parked() || matches!(sender, Sender::Broker);
        if in_line && session.queue.has_room(size, bounds) {
            let delivery = session.kept(delivery, sender);
            session.queue.push(delivery);
            outbox.wake();
            return Offer::Queued;
        }
        let now = Instant::now();
        if session.distrusted_until.is_some_and(|until| now < until) {
            // Slow a moment ago: it takes what fits, but makes nobody wait again so soon.
            stats.dropped_slow_consumer.inc();
            return Offer::Dropped;
        }
        if session
            .queue
            .waiting_since(now, bounds)
            .is_some_and(|since| now.duration_since(since) >= bounds.patience)
        {
            session.declare_slow(self.client_id(), bounds, stats);
            stats.dropped_slow_consumer.inc();
            return Offer::Dropped;
        }
        let claim = match sender {
            Sender::Publisher(waiter) => waiter.parked(size),
            Sender::Route(backlog) => match backlog.claim(size) {
                Some(claim) => claim,
                None => {
                    stats.dropped_route_backlog.inc();
                    tracing::debug!(
                        client_id = self.client_id(),
                        "route backlog full (cluster.route_backlog_bytes); message dropped"
                    );
                    return Offer::Dropped;
                }
            },
            Sender::Broker => {
                stats.dropped_queue_full.inc();
                tracing::debug!(
                    client_id = self.client_id(),
                    "session queue full; message dropped"
                );
                return Offer::Dropped;
            }
        };
        let delivery = session.kept(delivery, sender);
        let began = session.queue.park(Parked { delivery, claim }, now, bounds);
        Offer::Parked { began }
    }

    /// When the session began keeping messages waiting for room, if it does.
    pub fn waiting_since(&self, bounds: &Bounds) -> Option<Instant> {
        self.lock().queue.waiting_since(Instant::now(), bounds)
    }

    /// Declares the session slow ([`super::flow`]) if it has kept messages waiting for
    /// `limits.queue_full_wait_ms`: its parked messages are dropped.
    pub fn expire_stale(&self, bounds: &Bounds, stats: &Stats) {
        let mut session = self.lock();
        let now = Instant::now();
        let stale = session
            .queue
            .waiting_since(now, bounds)
            .is_some_and(|since| now.duration_since(since) >= bounds.patience);
        if stale {
            session.declare_slow(self.client_id(), bounds, stats);
        }
    }
}

/// What an inbound QoS 2 PUBLISH is to the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Qos2Receipt {
    /// First time: deliver it.
    New,
    /// A resend before PUBREL: answer PUBREC again, but do not deliver twice (§4.3.3).
    Duplicate,
    /// More unreleased QoS 2 messages than the Receive Maximum allows.
    OverLimit,
}

/// A QoS 1 or 2 message sent to the client and not yet fully acknowledged.
struct Inflight {
    packet_id: u16,
    delivery: Delivery,
    /// QoS 2: PUBREC received and PUBREL sent; waiting for PUBCOMP.
    released: bool,
}

/// How a session's last connection connected, as the admin API shows it.
#[derive(Debug, Clone)]
pub struct Details {
    pub version: ProtocolVersion,
    pub peer: Option<std::net::SocketAddr>,
    pub keep_alive: u16,
    pub clean_start: bool,
}

/// What a session held, taken out for its move to another node ([`Session::export`]).
pub struct Exported {
    pub subscriptions: Vec<(String, SubscriptionOptions, Option<u32>)>,
    /// In flight first (packet id, PUBREL sent), then queued.
    pub messages: Vec<(Delivery, Option<(u16, bool)>)>,
    pub inbound_qos2: Vec<u16>,
    /// The filters to take out of the router.
    pub filters: Vec<String>,
}

/// The session's state, behind the handle's lock.
pub struct Session {
    /// The connection attached now, if any.
    outbox: Option<Arc<Outbox>>,
    /// Counts attachments, so a connection that lost the session to a newer one can tell.
    generation: u64,
    /// When the attached connection connected, in microseconds since the Unix epoch: which of
    /// two connections of one client id on two nodes stays ([`super::Broker::client_connected_elsewhere`]).
    connected_at: u64,
    /// filter → options and subscription identifier.
    subscriptions: HashMap<String, (SubscriptionOptions, Option<u32>)>,
    queue: Queue,
    inflight: VecDeque<Inflight>,
    /// How many QoS 1/2 messages may be in flight to the client (its Receive Maximum).
    send_window: u16,
    last_packet_id: u16,
    /// Inbound QoS 2 packet ids answered with PUBREC and not yet released by PUBREL.
    /// Boxed and made on first use: most sessions never receive QoS 2.
    inbound_qos2: Option<Box<Unreleased>>,
    /// Seconds the session lives after its connection ends (0: ends with it).
    pub expiry_interval: u32,
    /// Set on reattachment: the in-flight messages must be sent again first.
    resend: bool,
    /// Declared slow ([`super::flow`]): messages for it are dropped until its queue has
    /// drained to half (or its connection ends).
    slow: bool,
    /// How its last connection connected, for the admin API. Boxed: 8 bytes in every session
    /// for what only an operator's question reads.
    details: Option<Box<Details>>,
    /// Until then, after being slow, a full queue drops instead of making anyone wait.
    distrusted_until: Option<Instant>,
    /// A persistent session's place in the store, when the node has one ([`super::persist`]).
    /// Boxed: 8 bytes in every session.
    persisted: Option<Box<Persisted>>,
}

impl Session {
    fn new() -> Session {
        Session {
            outbox: None,
            generation: 0,
            connected_at: 0,
            subscriptions: HashMap::new(),
            queue: Queue::default(),
            inflight: VecDeque::new(),
            send_window: 1,
            last_packet_id: 0,
            inbound_qos2: None,
            expiry_interval: 0,
            resend: false,
            slow: false,
            details: None,
            distrusted_until: None,
            persisted: None,
        }
    }

    /// Makes the session persistent in the store: what it holds from now on is written there.
    pub fn persist(&mut self, persisted: Persisted) {
        self.persisted = Some(Box::new(persisted));
    }

    /// The session's place in the store, if it is kept there.
    pub fn persisted(&mut self) -> Option<&mut Persisted> {
        self.persisted.as_deref_mut()
    }

    /// Stops keeping the session in the store, and deletes what it has there (it ended, moved
    /// away, or is no longer persistent). Its deliveries' records go as they are dropped.
    pub fn unpersist(&mut self) {
        if let Some(persisted) = self.persisted.take() {
            persisted.forget();
        }
    }

    /// Writes the session's record, if it is kept in the store.
    pub fn save(&self) {
        if let Some(persisted) = &self.persisted {
            persisted.save(
                self.expiry_interval,
                self.connected_at,
                self.subscriptions
                    .iter()
                    .map(|(filter, (options, id))| (filter.clone(), *options, *id)),
            );
        }
    }

    /// `delivery`, written to the store first if the session is kept there. A local
    /// publisher's ack waits for the copy ([`super::persist::Persisted::keep`]).
    fn kept(&self, mut delivery: Delivery, sender: Sender<'_>) -> Delivery {
        if let Some(persisted) = &self.persisted {
            let publisher = match sender {
                Sender::Publisher(waiter) => Some(waiter),
                Sender::Route(_) | Sender::Broker => None,
            };
            delivery.stored = persisted.keep(&delivery, publisher);
        }
        delivery
    }

    /// Attaches a connection; returns its generation. In-flight messages will be resent
    /// (with DUP) before anything new, as MQTT-4.4.0-1 requires on a resumed session.
    pub fn attach(&mut self, outbox: Arc<Outbox>, send_window: u16, connected_at: u64) -> u64 {
        self.outbox = Some(outbox);
        self.connected_at = connected_at;
        self.send_window = send_window.max(1);
        self.generation += 1;
        self.resend = !self.inflight.is_empty();
        self.slow = false;
        self.distrusted_until = None;
        self.generation
    }

    /// Records how the connection just attached connected.
    pub fn set_details(&mut self, details: Details) {
        self.details = Some(Box::new(details));
    }

    /// How the last connection connected, if one ever attached.
    pub fn details(&self) -> Option<&Details> {
        self.details.as_deref()
    }

    /// Messages in flight to the client, and queued (parked ones included).
    pub fn backlog(&self) -> (usize, usize) {
        (self.inflight.len(), self.queue.len())
    }

    /// Detaches the connection of `generation`, if it is still the attached one. Parked
    /// messages move into the queue while they fit; the rest are dropped and counted.
    pub fn detach(&mut self, generation: u64, bounds: &Bounds, stats: &Stats) -> bool {
        if self.generation != generation {
            return false;
        }
        self.outbox = None;
        stats.dropped_queue_full.add(self.queue.go_offline(bounds));
        true
    }

    /// Declares the session slow, once: its parked messages are dropped (counted) and, by
    /// `bounds.policy`, further ones until it drains, or its client is disconnected.
    fn declare_slow(&mut self, client_id: &str, bounds: &Bounds, stats: &Stats) {
        if self.slow {
            return;
        }
        self.slow = true;
        self.distrusted_until = Some(Instant::now() + bounds.patience * DISTRUST);
        stats.slow_consumers.inc();
        stats.dropped_slow_consumer.add(self.queue.drop_parked());
        let queued = self.queue.len();
        match bounds.policy {
            SlowPolicy::Drop => tracing::info!(
                client_id,
                queued,
                "slow consumer: a message waited limits.queue_full_wait_ms for room in its queue; dropping its messages until the queue has drained to half"
            ),
            SlowPolicy::Disconnect => {
                tracing::info!(
                    client_id,
                    queued,
                    "slow consumer: a message waited limits.queue_full_wait_ms for room in its queue; disconnecting it (limits.slow_consumer_policy)"
                );
                if let Some(outbox) = &self.outbox {
                    outbox.close(
                        reason::QUOTA_EXCEEDED,
                        "slow consumer: the client did not take its messages in time",
                    );
                }
            }
        }
    }

    /// Takes out the consumer-group messages the client has not acknowledged (in flight and
    /// not yet received, queued or parked), so another member can have them.
    pub fn take_group_deliveries(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        let queue = &mut self.queue;
        self.inflight.retain(|flight| {
            let orphan = flight.delivery.group.is_some() && !flight.released;
            if orphan {
                queue.land(flight.delivery.size());
                out.push(flight.delivery.clone());
            }
            !orphan
        });
        self.queue.take_groups(&mut out);
        out
    }

    /// True if the connection of `generation` is still the one attached.
    pub fn is_attached(&self, generation: u64) -> bool {
        self.outbox.is_some() && self.generation == generation
    }

    /// The attached connection's outbox.
    pub fn outbox(&self) -> Option<&Arc<Outbox>> {
        self.outbox.as_ref()
    }

    /// When the attached (or last) connection connected ([`Session::attach`]).
    pub fn connected_at(&self) -> u64 {
        self.connected_at
    }

    /// A session read back from the store: when its client last connected.
    pub fn set_connected_at(&mut self, connected_at: u64) {
        self.connected_at = connected_at;
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn subscriptions(&self) -> &HashMap<String, (SubscriptionOptions, Option<u32>)> {
        &self.subscriptions
    }

    /// Records a subscription; returns true if the filter is new for this session.
    pub fn add_subscription(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        self.subscriptions
            .insert(filter.to_string(), (options, id))
            .is_none()
    }

    pub fn remove_subscription(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    /// Ends the session's life: detaches any connection for good and hands back the
    /// subscription filters, for removing them from the router.
    pub fn retire(&mut self) -> Vec<String> {
        self.unpersist();
        self.outbox = None;
        self.generation += 1;
        self.queue.clear();
        self.inflight.clear();
        self.queue.clear_in_flight();
        self.subscriptions
            .drain()
            .map(|(filter, _)| filter)
            .collect()
    }

    /// Takes everything the session holds for its move to another node
    /// ([`super::handover`]) and retires it: its subscriptions, its messages in flight (with
    /// their packet ids, and whether PUBREL was sent) and then those queued and parked, in
    /// order, and the inbound QoS 2 ids not yet released.
    pub fn export(&mut self) -> Exported {
        let subscriptions = self
            .subscriptions
            .iter()
            .map(|(filter, (options, id))| (filter.clone(), *options, *id))
            .collect();
        let mut messages: Vec<(Delivery, Option<(u16, bool)>)> = self
            .inflight
            .drain(..)
            .map(|flight| (flight.delivery, Some((flight.packet_id, flight.released))))
            .collect();
        messages.extend(self.queue.take_all().into_iter().map(|d| (d, None)));
        let inbound_qos2 = self
            .inbound_qos2
            .take()
            .map(|ids| ids.ids())
            .unwrap_or_default();
        let filters = self.retire();
        Exported {
            subscriptions,
            messages,
            inbound_qos2,
            filters,
        }
    }

    /// Takes in the messages and inbound QoS 2 ids of a session moved here, before a
    /// connection attaches (which sends the in-flight ones again, with DUP). What does not fit
    /// this node's bounds is dropped; returns how many messages were.
    pub fn adopt(
        &mut self,
        messages: Vec<(Delivery, Option<(u16, bool)>)>,
        inbound_qos2: &[u16],
        bounds: &Bounds,
    ) -> usize {
        let mut dropped = 0;
        for (delivery, flight) in messages {
            match flight {
                Some((packet_id, released))
                    if packet_id != 0
                        && !self.inflight.iter().any(|f| f.packet_id == packet_id) =>
                {
                    self.queue.fly(delivery.size());
                    self.last_packet_id = packet_id;
                    let delivery = self.kept(delivery, Sender::Broker);
                    if let Some(stored) = &delivery.stored {
                        stored.flight(packet_id, released);
                    }
                    self.inflight.push_back(Inflight {
                        packet_id,
                        delivery,
                        released,
                    });
                }
                _ if self.queue.has_room(delivery.size(), bounds) => {
                    let delivery = self.kept(delivery, Sender::Broker);
                    self.queue.push(delivery);
                }
                _ => dropped += 1,
            }
        }
        if !inbound_qos2.is_empty() {
            let ids = self.inbound_qos2.get_or_insert_default();
            for &id in inbound_qos2 {
                ids.insert(id);
                if let Some(persisted) = &self.persisted {
                    persisted.inbound_received(id);
                }
            }
        }
        dropped
    }

    /// Messages the queue still takes (by count), for retained messages on subscribe.
    pub fn room(&self, bounds: &Bounds) -> usize {
        self.queue.room(bounds)
    }

    /// Queues a message the broker sends of its own accord (retained messages for a new
    /// subscription) if it fits; false if not (the caller counts it).
    pub fn enqueue(&mut self, delivery: Delivery, bounds: &Bounds) -> bool {
        let fits = self.queue.has_room(delivery.size(), bounds);
        if fits {
            let delivery = self.kept(delivery, Sender::Broker);
            self.queue.push(delivery);
        }
        fits
    }

    /// Inbound QoS 2: remembers `packet_id` until PUBREL, unless `limit` ids are already
    /// waiting (the Receive Maximum we announced).
    pub fn receive_qos2(&mut self, packet_id: u16, limit: usize) -> Qos2Receipt {
        let ids = self.inbound_qos2.get_or_insert_default();
        if ids.contains(packet_id) {
            Qos2Receipt::Duplicate
        } else if ids.len() >= limit {
            Qos2Receipt::OverLimit
        } else {
            ids.insert(packet_id);
            if let Some(persisted) = &self.persisted {
                persisted.inbound_received(packet_id);
            }
            Qos2Receipt::New
        }
    }

    /// Inbound PUBREL: forgets `packet_id`. Returns false if it was unknown.
    pub fn release_qos2(&mut self, packet_id: u16) -> bool {
        let released = self
            .inbound_qos2
            .as_mut()
            .is_some_and(|ids| ids.remove(packet_id));
        if released && let Some(persisted) = &self.persisted {
            persisted.inbound_released(packet_id);
        }
        released
    }

    /// Whether an inbound QoS 2 id, or a message for the client, is written to the store.
    pub fn is_persisted(&self) -> bool {
        self.persisted.is_some()
    }

    /// PUBACK from the client. Returns false for an unknown packet id.
    pub fn acknowledge(&mut self, packet_id: u16) -> bool {
        self.remove_inflight(packet_id, |f| f.delivery.qos == QoS::AtLeastOnce)
    }

    /// PUBREC from the client: the message is now the client's; PUBREL goes out next.
    pub fn received(&mut self, packet_id: u16) -> bool {
        match self
            .inflight
            .iter_mut()
            .find(|f| f.packet_id == packet_id && f.delivery.qos == QoS::ExactlyOnce)
        {
            Some(flight) => {
                flight.released = true;
                if let Some(stored) = &flight.delivery.stored {
                    stored.flight(packet_id, true);
                }
                true
            }
            None => false,
        }
    }

    /// PUBREC with an error reason code (5.0): the client refused the message; forget it.
    pub fn refused(&mut self, packet_id: u16) -> bool {
        self.remove_inflight(packet_id, |f| !f.released)
    }

    /// PUBCOMP from the client: the QoS 2 exchange is complete.
    pub fn completed(&mut self, packet_id: u16) -> bool {
        self.remove_inflight(packet_id, |f| f.released)
    }

    fn remove_inflight(&mut self, packet_id: u16, ok: impl Fn(&Inflight) -> bool) -> bool {
        // Clients acknowledge mostly in order, so the search usually stops at the front.
        match self
            .inflight
            .iter()
            .position(|f| f.packet_id == packet_id && ok(f))
        {
            Some(i) => {
                if let Some(flight) = self.inflight.remove(i) {
                    self.queue.land(flight.delivery.size());
                }
                true
            }
            None => false,
        }
    }

    /// Encodes into `out` what the client should get next: first, after a reattachment, the
    /// unacknowledged in-flight messages again (PUBLISH with DUP, or PUBREL); then queued
    /// messages as long as the in-flight window allows. Messages larger than the client's
    /// Maximum Packet Size, and expired ones, are dropped as MQTT-3.1.2-25 and §3.3.2.3.3 say.
    /// Parked messages move into the room this leaves; a slow session that has drained to
    /// half takes messages again.
    ///
    /// Counts the PUBLISH packets it encodes as sent (once per call), and returns the bytes
    /// of `$SYS` updates among them, which the writer leaves out of the bytes it counts: see
    /// [`Stats::messages_sent`].
    pub fn fill(
        &mut self,
        out: &mut BytesMut,
        wire: &mut Wire<'_>,
        bounds: &Bounds,
        stats: &Stats,
    ) -> usize {
        let now = Instant::now();
        let mut tally = Tally::default();
        if std::mem::take(&mut self.resend) {
            let queue = &mut self.queue;
            self.inflight.retain(|flight| {
                let sent = if flight.released {
                    // A PUBREL is a few bytes: always within the client's maximum.
                    let pubrel = Packet::PubRel(Ack::new(flight.packet_id));
                    protocol::encode(&pubrel, wire.version, out).is_ok()
                } else {
                    let start = out.len();
                    let sent = wire.put(&flight.delivery, flight.packet_id, true, now, out);
                    tally.count(&flight.delivery, out.len() - start);
                    sent
                };
                if !sent {
                    // MQTT-3.1.2-25: too large for the client's (new) Maximum Packet Size:
                    // discarded as if delivered, so it does not hold a window slot for ever.
                    stats.dropped_too_large.inc();
                    queue.land(flight.delivery.size());
                }
                sent
            });
        }
        self.queue.promote(bounds);
        while out.len() < FILL_BYTES {
            let Some(front) = self.queue.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= usize::from(self.send_window)
            {
                break;
            }
            let Some(delivery) = self.queue.pop(bounds) else {
                break;
            };
            if delivery.message.is_expired(now) {
                stats.dropped_expired.inc();
                continue;
            }
            let packet_id = match delivery.qos {
                QoS::AtMostOnce => 0,
                _ => self.next_packet_id(),
            };
            let start = out.len();
            if !wire.put(&delivery, packet_id, false, now, out) {
                stats.dropped_too_large.inc();
                continue;
            }
            tally.count(&delivery, out.len() - start);
            if packet_id != 0 {
                if let Some(stored) = &delivery.stored {
                    stored.flight(packet_id, false);
                }
                self.queue.fly(delivery.size());
                self.inflight.push_back(Inflight {
                    packet_id,
                    delivery,
                    released: false,
                });
            }
        }
        if self.slow && self.queue.is_half_empty(bounds) {
            self.slow = false;
        }
        stats.messages_sent.add(tally.publishes);
        tally.sys_bytes
    }

    /// True if `fill` would produce something now.
    pub fn has_sendable(&self) -> bool {
        self.resend
            || self.queue.front().is_some_and(|front| {
                front.qos == QoS::AtMostOnce || self.inflight.len() < usize::from(self.send_window)
            })
    }

    /// The next packet id not in flight. The window is far below 65535, so one is free.
    fn next_packet_id(&mut self) -> u16 {
        loop {
            self.last_packet_id = self.last_packet_id.checked_add(1).unwrap_or(1);
            let id = self.last_packet_id;
            if !self.inflight.iter().any(|f| f.packet_id == id) {
                return id;
            }
        }
    }
}

/// What the connection's client accepts, for encoding what goes to it.
pub struct Wire<'a> {
    pub version: ProtocolVersion,
    /// The client's Maximum Packet Size.
    pub max_size: usize,
    /// Topic aliases towards the client, when it takes them (5.0).
    pub aliases: Option<&'a mut Aliases>,
}

/// What one [`Session::fill`] encoded, for the counters.
#[derive(Default)]
struct Tally {
    /// PUBLISH packets, but for `$SYS` updates.
    publishes: u64,
    /// Bytes of `$SYS` updates.
    sys_bytes: usize,
}

impl Tally {
    /// Counts `delivery`, just encoded in `len` bytes (0: it was not).
    fn count(&mut self, delivery: &Delivery, len: usize) {
        if len == 0 {
            return;
        }
        if is_sys_topic(&delivery.message.topic) {
            self.sys_bytes += len;
        } else {
            self.publishes += 1;
        }
    }
}

impl Wire<'_> {
    /// Appends `delivery`'s PUBLISH, with a topic alias where the client takes them, if it is
    /// within the client's Maximum Packet Size: a PUBLISH that is too large only with the
    /// alias that would be set goes without it. Returns whether it was appended.
    fn put(
        &mut self,
        delivery: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Instant,
        out: &mut BytesMut,
    ) -> bool {
        let alias = match self.aliases.as_deref_mut() {
            Some(aliases) => aliases.lookup(&delivery.message.topic),
            None => TopicAlias::None,
        };
        let start = out.len();
        let encoded = delivery.encode(packet_id, dup, now, self.version, alias, out);
        match encoded {
            Ok(len) if len <= self.max_size => return true,
            Ok(_) => out.truncate(start),
            Err(error) => {
                out.truncate(start);
                self.forget(alias);
                tracing::warn!(%error, "cannot encode PUBLISH");
                return false;
            }
        }
        if !matches!(alias, TopicAlias::Set(_)) {
            return false;
        }
        // The client never learns an alias set with a PUBLISH it did not get.
        self.forget(alias);
        match delivery.encode(packet_id, dup, now, self.version, TopicAlias::None, out) {
            Ok(len) if len <= self.max_size => true,
            _ => {
                out.truncate(start);
                false
            }
        }
    }

    fn forget(&mut self, alias: TopicAlias) {
        if let (Some(aliases), TopicAlias::Set(alias)) = (self.aliases.as_deref_mut(), alias) {
            aliases.forget(alias);
        }
    }
}
