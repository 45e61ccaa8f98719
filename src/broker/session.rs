//! Session state (MQTT §4.1): what the broker remembers about a client between packets and,
//! for a persistent session, between connections.
//!
//! A session outlives its connections. It holds the client's subscriptions, the messages
//! waiting for it (bounded), the QoS 1/2 messages sent but not yet acknowledged (the in-flight
//! window), and the QoS 2 packet ids received but not yet released. Publishers put messages in
//! through [`SessionHandle::deliver`]; the connection's writer takes them out with
//! [`Session::fill`], which also assigns packet ids and encodes, under the same short lock.
//! All state is plain data so that a later issue can persist it.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::sync::Notify;

use crate::protocol::{self, Ack, EncodeError, Packet, ProtocolVersion, QoS, SubscriptionOptions};

use super::message::Delivery;
use super::outbox::Outbox;
use super::stats::Stats;

/// Stop filling the write buffer past this many bytes, so one busy session cannot make its
/// writer's buffer grow without bound; the rest goes out on the next round.
const FILL_BYTES: usize = 64 * 1024;

/// The shared handle to a session: subscriptions in the router point here.
pub struct SessionHandle {
    id: u64,
    /// Shared with the broker's session table, which is keyed by it.
    client_id: Arc<str>,
    state: Mutex<Session>,
    /// Signalled when a full queue gets room again, for publishers waiting on it.
    room: Notify,
}

/// What became of a message offered to a session.
pub enum Offer {
    Queued,
    /// Not queued: QoS 0 for an offline session (by design), or over the queue limit with
    /// nobody to slow down (counted in `dropped_queue_full`).
    Dropped,
    /// The queue of a connected session is full: the publisher may wait for room
    /// ([`SessionHandle::wait_for_room`]) and offer it again.
    Full(Delivery),
}

impl SessionHandle {
    pub fn new(client_id: impl Into<Arc<str>>, max_queued: usize) -> Arc<SessionHandle> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(SessionHandle {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            client_id: client_id.into(),
            state: Mutex::new(Session::new(max_queued)),
            room: Notify::new(),
        })
    }

    /// A number unique to this session for the broker's lifetime (0 is never used).
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The client id, shared.
    pub fn client_id_shared(&self) -> Arc<str> {
        Arc::clone(&self.client_id)
    }

    pub fn lock(&self) -> MutexGuard<'_, Session> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers a message to the session: queues it and wakes the connection, if there is room.
    pub fn offer(&self, delivery: Delivery, stats: &Stats) -> Offer {
        let mut session = self.lock();
        let online = session.outbox.is_some();
        if delivery.qos == QoS::AtMostOnce && !online {
            // QoS 0 messages are not kept for offline sessions (MQTT-3.1.2-5 makes it optional).
            return Offer::Dropped;
        }
        if session.pending.len() >= session.max_queued {
            // The publisher is slowed down rather than the message lost, unless the session is
            // offline (nothing will drain it) or stalled (it already failed to drain in time,
            // and must not hold every publisher up again).
            if online && !session.stalled {
                session.room_wanted = true;
                return Offer::Full(delivery);
            }
            stats.dropped_queue_full.inc();
            tracing::debug!(client_id = %self.client_id, "session queue full, message dropped");
            return Offer::Dropped;
        }
        session.pending.push_back(delivery);
        if let Some(outbox) = &session.outbox {
            outbox.wake();
        }
        Offer::Queued
    }

    /// Waits until the queue has room (or the session lost its connection). Gives up only
    /// when the session has not drained a single message for `patience`: then it is marked
    /// stalled, and further messages for it are dropped at once until its queue has drained to
    /// half, so one stuck subscriber cannot hold every publisher up again and again. A
    /// subscriber that drains, however slowly, is waited for: that is the flow control.
    pub async fn wait_for_room(&self, patience: Duration) -> bool {
        let mut drained = self.lock().drained;
        let mut deadline = tokio::time::Instant::now() + patience;
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let session = self.lock();
                if session.pending.len() < session.max_queued || session.outbox.is_none() {
                    return true;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let mut session = self.lock();
                if session.drained != drained {
                    drained = session.drained;
                    deadline = tokio::time::Instant::now() + patience;
                    continue;
                }
                session.stalled = true;
                tracing::info!(client_id = %self.client_id, "slow consumer: nothing drained; dropping its messages until it drains");
                return false;
            }
        }
    }

    /// Wakes publishers waiting for room: all of them (the queue drained to half, or the
    /// connection left), or one (a few places freed).
    pub fn notify_room(&self, room: Room) {
        match room {
            Room::None => {}
            Room::Some => self.room.notify_one(),
            Room::Plenty => self.room.notify_waiters(),
        }
    }
}

/// Room in a session's queue, for publishers waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    None,
    /// A few places are free.
    Some,
    /// Half the queue or more is free, or the connection left.
    Plenty,
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

/// The session's state, behind the handle's lock.
pub struct Session {
    /// The connection attached now, if any.
    outbox: Option<Arc<Outbox>>,
    /// Counts attachments, so a connection that lost the session to a newer one can tell.
    generation: u64,
    /// filter → options and subscription identifier.
    subscriptions: HashMap<String, (SubscriptionOptions, Option<u32>)>,
    pending: VecDeque<Delivery>,
    max_queued: usize,
    inflight: VecDeque<Inflight>,
    /// How many QoS 1/2 messages may be in flight to the client (its Receive Maximum).
    send_window: u16,
    last_packet_id: u16,
    /// Inbound QoS 2 packet ids answered with PUBREC and not yet released by PUBREL.
    /// Boxed and made on first use: most sessions never receive QoS 2.
    #[allow(clippy::box_collection)] // a HashSet is 48 bytes even when empty; the box is 8
    inbound_qos2: Option<Box<HashSet<u16>>>,
    /// Seconds the session lives after its connection ends (0: ends with it).
    pub expiry_interval: u32,
    /// Set on reattachment: the in-flight messages must be sent again first.
    resend: bool,
    /// A publisher is waiting for room in the queue.
    room_wanted: bool,
    /// The queue stayed full past the wait: drop instead of waiting, until half drained.
    stalled: bool,
    /// Messages taken out of the queue so far: tells a waiting publisher the session moves.
    drained: u64,
}

impl Session {
    fn new(max_queued: usize) -> Session {
        Session {
            outbox: None,
            generation: 0,
            subscriptions: HashMap::new(),
            pending: VecDeque::new(),
            max_queued,
            inflight: VecDeque::new(),
            send_window: 1,
            last_packet_id: 0,
            inbound_qos2: None,
            expiry_interval: 0,
            resend: false,
            room_wanted: false,
            stalled: false,
            drained: 0,
        }
    }

    /// Attaches a connection; returns its generation. In-flight messages will be resent
    /// (with DUP) before anything new, as MQTT-4.4.0-1 requires on a resumed session.
    pub fn attach(&mut self, outbox: Arc<Outbox>, send_window: u16) -> u64 {
        self.outbox = Some(outbox);
        self.send_window = send_window.max(1);
        self.generation += 1;
        self.resend = !self.inflight.is_empty();
        self.generation
    }

    /// Detaches the connection of `generation`, if it is still the attached one.
    pub fn detach(&mut self, generation: u64) -> bool {
        if self.generation != generation {
            return false;
        }
        self.outbox = None;
        // QoS 0 messages are not kept for a session without a connection.
        self.pending.retain(|d| d.qos != QoS::AtMostOnce);
        true
    }

    /// Takes out the consumer-group messages the client has not acknowledged (in flight and
    /// not yet received, or still queued), so another member can have them.
    pub fn take_group_deliveries(&mut self) -> Vec<Delivery> {
        let mut out = Vec::new();
        self.inflight.retain(|flight| {
            let orphan = flight.delivery.group.is_some() && !flight.released;
            if orphan {
                out.push(flight.delivery.clone());
            }
            !orphan
        });
        self.pending.retain(|delivery| {
            let orphan = delivery.group.is_some();
            if orphan {
                out.push(delivery.clone());
            }
            !orphan
        });
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
        self.outbox = None;
        self.generation += 1;
        self.pending.clear();
        self.subscriptions
            .drain()
            .map(|(filter, _)| filter)
            .collect()
    }

    /// Queues retained messages for a new subscription; same limit as any other message.
    pub fn queue(&mut self, delivery: Delivery, stats: &Stats) {
        if self.pending.len() >= self.max_queued {
            stats.dropped_queue_full.inc();
            return;
        }
        self.pending.push_back(delivery);
    }

    /// Inbound QoS 2: remembers `packet_id` until PUBREL, unless `limit` ids are already
    /// waiting (the Receive Maximum we announced).
    pub fn receive_qos2(&mut self, packet_id: u16, limit: usize) -> Qos2Receipt {
        let ids = self.inbound_qos2.get_or_insert_default();
        if ids.contains(&packet_id) {
            Qos2Receipt::Duplicate
        } else if ids.len() >= limit {
            Qos2Receipt::OverLimit
        } else {
            ids.insert(packet_id);
            Qos2Receipt::New
        }
    }

    /// Inbound PUBREL: forgets `packet_id`. Returns false if it was unknown.
    pub fn release_qos2(&mut self, packet_id: u16) -> bool {
        self.inbound_qos2
            .as_mut()
            .is_some_and(|ids| ids.remove(&packet_id))
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
                self.inflight.remove(i);
                true
            }
            None => false,
        }
    }

    /// Encodes into `out` what the client should get next: first, after a reattachment, the
    /// unacknowledged in-flight messages again (PUBLISH with DUP, or PUBREL); then queued
    /// messages as long as the in-flight window allows. Messages larger than the client's
    /// Maximum Packet Size, and expired ones, are dropped as MQTT-3.1.2-25 and §3.3.2.3.3 say.
    /// Says whether publishers waiting for room should be woken.
    pub fn fill(
        &mut self,
        out: &mut BytesMut,
        version: ProtocolVersion,
        max_size: usize,
        stats: &Stats,
    ) -> Room {
        let now = Instant::now();
        if std::mem::take(&mut self.resend) {
            self.inflight.retain(|flight| {
                let start = out.len();
                let encoded = if flight.released {
                    protocol::encode(&Packet::PubRel(Ack::new(flight.packet_id)), version, out)
                } else {
                    flight
                        .delivery
                        .encode(flight.packet_id, true, now, version, out)
                };
                let sent = fits(encoded, max_size, out, start);
                if !sent {
                    // MQTT-3.1.2-25: too large for the client's (new) Maximum Packet Size:
                    // discarded as if delivered, so it does not hold a window slot for ever.
                    stats.dropped_too_large.inc();
                }
                sent
            });
        }
        while out.len() < FILL_BYTES {
            let Some(front) = self.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce && self.inflight.len() >= usize::from(self.send_window)
            {
                break;
            }
            let Some(delivery) = self.pending.pop_front() else {
                break;
            };
            self.drained += 1;
            if delivery.message.is_expired(now) {
                stats.dropped_expired.inc();
                continue;
            }
            let packet_id = match delivery.qos {
                QoS::AtMostOnce => 0,
                _ => self.next_packet_id(),
            };
            let start = out.len();
            let encoded = delivery.encode(packet_id, false, now, version, out);
            if !fits(encoded, max_size, out, start) {
                stats.dropped_too_large.inc();
                continue;
            }
            if packet_id != 0 {
                self.inflight.push_back(Inflight {
                    packet_id,
                    delivery,
                    released: false,
                });
            }
        }
        let half_empty = self.pending.len() <= self.max_queued / 2;
        if self.stalled && half_empty {
            self.stalled = false;
        }
        if !self.room_wanted || self.pending.len() >= self.max_queued {
            return Room::None;
        }
        // Waking every waiting publisher for each freed place would have them all race for
        // it, again and again: one is woken per round until half the queue is free.
        if half_empty {
            self.room_wanted = false;
            Room::Plenty
        } else {
            Room::Some
        }
    }

    /// True if `fill` would produce something now.
    pub fn has_sendable(&self) -> bool {
        self.resend
            || self.pending.front().is_some_and(|front| {
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

/// Keeps a packet just encoded at `start` if it is within `max_size`; otherwise (or if it
/// could not be encoded) takes it back out. Returns whether it stays.
fn fits(
    encoded: Result<usize, EncodeError>,
    max_size: usize,
    out: &mut BytesMut,
    start: usize,
) -> bool {
    match encoded {
        Ok(len) if len <= max_size => true,
        Ok(_) => {
            out.truncate(start);
            false
        }
        Err(error) => {
            out.truncate(start);
            tracing::warn!(%error, "cannot encode PUBLISH");
            false
        }
    }
}
