//! Flow control: what happens to a message that meets a connected subscriber's full queue.
//!
//! A session's queue is bounded in messages and bytes ([`Bounds`]). When a message finds it
//! full, it is *parked* beside the queue, in order, and moves in as the client drains (the
//! connection's writer does that, in `Session::fill`). Who pays for the wait depends on who
//! sent the message:
//! - a local publisher is held back: its reader stops reading until every delivery of its
//!   message has moved in ([`Waiter`]); that is what gives zero loss in a 1000→1 fan-in;
//! - a route is never held back, as every other session on this node would wait with it: its
//!   parked messages are charged to the route's [`Backlog`], a byte budget, and past the budget
//!   a message is dropped for that session alone;
//! - the broker itself (Wills, group hand-overs, retained messages on subscribe) never waits.
//!
//! A session keeps messages waiting from the moment one is parked until its client has taken
//! half a queue's worth of messages (or bytes) out of the queue: taking one message now and
//! then does not end the wait. A session that keeps messages waiting for
//! `limits.queue_full_wait_ms` is declared *slow* ([`SlowPolicy`]): its parked messages are
//! dropped (counted), and so is everything for it until its queue has drained to half — or
//! its client is disconnected. For ten times that wait afterwards it takes what fits in its
//! queue but makes nobody wait: a full queue drops. Put as a rate: a subscriber is slow when,
//! with messages waiting for it, it takes fewer than `max_queued_messages / 2` per
//! `queue_full_wait_ms` (250 a second with the defaults). So a stuck or slow subscriber costs
//! its publishers that wait at most once in every eleven, and nothing at all to the other
//! subscribers; a fast subscriber with more publishers than it can take keeps them paced to
//! its speed, losing nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Notify;

use crate::config::Limits;
use crate::protocol::{Packet, reason};

use super::message::Delivery;
use super::outbox::Outbox;
use super::session::SessionHandle;
use super::stats::Stats;

/// What to do with a slow session (`limits.slow_consumer_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Drop its messages (counted) until its queue has drained to half.
    Drop,
    /// Disconnect its client (5.0: DISCONNECT 0x97); a persistent session keeps its queue.
    Disconnect,
}

/// The bounds of every session's queue, and how long a message may wait for room in it.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub messages: usize,
    pub bytes: usize,
    pub patience: Duration,
    pub policy: SlowPolicy,
}

impl Bounds {
    pub fn from_limits(limits: &Limits) -> Bounds {
        Bounds {
            messages: limits.max_queued_messages,
            bytes: limits.max_queued_bytes,
            patience: Duration::from_millis(limits.queue_full_wait_ms),
            policy: match limits.slow_consumer_policy.as_str() {
                "disconnect" => SlowPolicy::Disconnect,
                _ => SlowPolicy::Drop,
            },
        }
    }
}

/// A message waiting beside a full queue, and whom it holds.
pub struct Parked {
    pub delivery: Delivery,
    /// Released when the message moves into the queue or is dropped.
    pub claim: Claim,
}

/// Who waits for a parked message. Dropping the claim releases it: the publisher's count goes
/// down, or the route's budget is given back.
pub enum Claim {
    Publisher { waiter: Arc<Waiter>, bytes: usize },
    Route { backlog: Arc<Backlog>, bytes: usize },
}

impl Drop for Claim {
    fn drop(&mut self) {
        match self {
            Claim::Publisher { waiter, bytes } => waiter.done(*bytes),
            Claim::Route { backlog, bytes } => backlog.release(*bytes),
        }
    }
}

/// A local publisher's parked and forwarded deliveries, and the acknowledgements that wait
/// for them.
///
/// A publisher's reader goes on reading while fewer than [`PUBLISHER_WINDOW`] of its
/// deliveries, and [`PUBLISHER_WINDOW_BYTES`] of them, are parked, and fewer than
/// [`FORWARD_WINDOW`] of its messages wait for a peer node's acknowledgement; it stops there
/// ([`Waiter::is_full`]), so what a held publisher makes the broker hold is bounded, whatever
/// size its messages are. The PUBACK or PUBREC of a message waits until every parked delivery
/// and every forwarded copy (of it, and of the messages before it) has been taken, and so
/// does every later one, as MQTT wants them in order (MQTT-4.6.0-2/3); when the last one is
/// taken, the one who saw it sends them all at once. So a publisher held back by a busy
/// subscriber, or whose messages cross a route, gets its acks in batches, one write for many,
/// instead of one wake-up and one write per message.
///
/// A forwarded copy that no peer took in time ([`Forward`] dropped without
/// [`Forward::delivered`]) makes its message's ack negative: an MQTT 5 publisher gets the
/// failure's reason code (its QoS 2 packet id is then free again, MQTT-4.3.3); MQTT 3.1.1 has
/// no negative ack, so the ack is withheld — with every later one, to keep them in order —
/// and the connection is closed, which makes the client send the message again.
pub struct Waiter {
    /// Parked deliveries and forwarded copies not yet taken or given up, and the parked
    /// deliveries' bytes. Changed only under `acks`' lock, but read without it: the
    /// publisher's reader looks at them for every packet, and almost always finds nothing.
    outstanding: AtomicUsize,
    forwarded: AtomicUsize,
    bytes: AtomicUsize,
    /// The publication whose deliveries are being made now: set by the publisher's reader
    /// before it routes a PUBLISH ([`Waiter::begin`]), so its acks and copies match up.
    ticket: AtomicU64,
    /// A forwarded copy failed: acks cannot take the fast path.
    failing: AtomicBool,
    /// Acks that wait for the parked deliveries and forwarded copies, in order.
    acks: Mutex<Acks>,
    /// The count fell to zero.
    settled: Notify,
    /// Where the acks go: the publisher's connection.
    outbox: Arc<Outbox>,
    /// The publisher speaks MQTT 5, which has negative acks.
    v5: bool,
    /// The publisher's session, whose QoS 2 packet ids a negative PUBREC frees.
    session: Option<Arc<SessionHandle>>,
}

#[cfg(test)]
impl Waiter {
    /// A waiter whose acks go nowhere, for the tests of what holds a publisher back.
    pub(crate) fn detached() -> Arc<Waiter> {
        Arc::new(Waiter::new(Arc::new(Outbox::default()), true, None))
    }
}

#[derive(Default)]
struct Acks {
    waiting: Vec<Waiting>,
    /// Failures of publications whose ack was not queued yet: (ticket, reason code).
    failed: Vec<(u64, u8)>,
    /// 3.1.1: an ack was withheld and the connection closed; so is every later ack.
    withheld: bool,
}

struct Waiting {
    ticket: u64,
    /// A forwarded copy was not taken: the reason code the ack gets instead of its own.
    failure: Option<u8>,
    ack: Packet,
}

/// Deliveries a publisher may have parked before its socket stops being read, and their
/// bytes ([`Delivery::size`]; a message parked in two sessions counts twice).
pub const PUBLISHER_WINDOW: usize = 64;
pub const PUBLISHER_WINDOW_BYTES: usize = 256 * 1024;

/// Forwarded copies of a publisher's messages that may wait for their peers'
/// acknowledgements before its socket stops being read: enough for a route's round trip at
/// full speed. The copies' bytes are bounded by the route's replay buffer
/// (`cluster.route_replay_bytes`).
pub const FORWARD_WINDOW: usize = 1024;

impl Waiter {
    /// A waiter for a publisher whose acks go to `outbox`; `v5` and `session` decide how a
    /// failed forward is answered.
    pub fn new(outbox: Arc<Outbox>, v5: bool, session: Option<Arc<SessionHandle>>) -> Waiter {
        Waiter {
            outstanding: AtomicUsize::new(0),
            forwarded: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            ticket: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            acks: Mutex::new(Acks::default()),
            settled: Notify::new(),
            outbox,
            v5,
            session,
        }
    }

    /// The publisher's next PUBLISH is about to be routed: what is parked or forwarded from
    /// now on, and the next ack, belong to it.
    pub fn begin(&self) {
        self.ticket.fetch_add(1, Ordering::Release);
    }

    /// A delivery of the publisher's, of `bytes`, was parked.
    pub fn parked(self: &Arc<Self>, bytes: usize) -> Claim {
        let _acks = self.acks();
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        Claim::Publisher {
            waiter: Arc::clone(self),
            bytes,
        }
    }

    /// A copy of the publication being routed was forwarded to a peer node: its ack waits
    /// until the peer took it ([`Forward::delivered`]).
    pub fn forwarded(self: &Arc<Self>) -> Forward {
        let _acks = self.acks();
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        self.forwarded.fetch_add(1, Ordering::AcqRel);
        Forward {
            waiter: Arc::clone(self),
            ticket: self.ticket.load(Ordering::Acquire),
            failure: reason::UNSPECIFIED_ERROR,
            delivered: false,
        }
    }

    fn done(&self, bytes: usize) {
        let acks = self.acks();
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.release(acks);
    }

    fn forward_done(&self, ticket: u64, failure: Option<u8>) {
        let mut acks = self.acks();
        if let Some(code) = failure {
            match acks.waiting.iter_mut().find(|w| w.ticket == ticket) {
                Some(waiting) => waiting.failure = Some(code),
                None => acks.failed.push((ticket, code)),
            }
            self.failing.store(true, Ordering::Release);
        }
        self.forwarded.fetch_sub(1, Ordering::AcqRel);
        self.release(acks);
    }

    /// One parked delivery or forwarded copy is settled: the last one sends the acks.
    fn release(&self, mut acks: MutexGuard<'_, Acks>) {
        if self.outstanding.load(Ordering::Acquire) == 1 {
            // Sent before the count shows zero (and under the lock), so an ack that comes
            // after cannot overtake them.
            let waiting = std::mem::take(&mut acks.waiting);
            self.send(&mut acks, waiting);
            self.outstanding.store(0, Ordering::Release);
            drop(acks);
            self.settled.notify_one();
        } else {
            self.outstanding.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Sends acks in order, a failed publication's as a negative ack (or, for 3.1.1, not at
    /// all, closing the connection).
    fn send(&self, acks: &mut Acks, waiting: Vec<Waiting>) {
        if !self.failing.load(Ordering::Acquire) {
            self.outbox.send_all(waiting.into_iter().map(|w| w.ack));
            return;
        }
        let mut out = Vec::with_capacity(waiting.len());
        for mut w in waiting {
            if let Some(i) = acks.failed.iter().position(|(t, _)| *t == w.ticket) {
                w.failure = Some(acks.failed.swap_remove(i).1);
            }
            if let Some(code) = w.failure {
                self.refuse(&mut w.ack, code, &mut acks.withheld);
            }
            if !acks.withheld {
                out.push(w.ack);
            }
        }
        self.outbox.send_all(out);
        if acks.failed.is_empty() {
            self.failing.store(false, Ordering::Release);
        }
    }

    /// Turns `ack` negative; for 3.1.1 marks every ack from here on as withheld and closes.
    fn refuse(&self, ack: &mut Packet, code: u8, withheld: &mut bool) {
        let qos2 = matches!(ack, Packet::PubRec(_));
        let (Packet::PubAck(a) | Packet::PubRec(a)) = ack else {
            return;
        };
        if qos2 && let Some(session) = &self.session {
            session.retract_qos2(a.packet_id);
        }
        if self.v5 {
            a.reason = code;
        } else if !*withheld {
            *withheld = true;
            self.outbox.close(
                code,
                "a message was not taken by every node with matching subscribers in time",
            );
        }
    }

    /// Sends the ack of the publication just routed now, or after the parked deliveries and
    /// forwarded copies it must follow.
    pub fn ack(&self, ack: Packet) {
        // Only the publisher's own reader parks and forwards, and it is here: a count of zero
        // cannot rise meanwhile, and shows that the acks before were already sent.
        if self.outstanding() == 0 && !self.failing.load(Ordering::Acquire) {
            self.outbox.send(ack);
            return;
        }
        let mut acks = self.acks();
        let waiting = Waiting {
            ticket: self.ticket.load(Ordering::Acquire),
            failure: None,
            ack,
        };
        if self.outstanding() > 0 {
            acks.waiting.push(waiting);
        } else {
            self.send(&mut acks, vec![waiting]);
        }
    }

    /// Parked deliveries and forwarded copies not yet taken or given up.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Whether the publisher has as many deliveries (or bytes) parked, or copies forwarded,
    /// as it may: its reader waits.
    pub fn is_full(&self) -> bool {
        let forwarded = self.forwarded.load(Ordering::Acquire);
        self.outstanding().saturating_sub(forwarded) >= PUBLISHER_WINDOW
            || self.bytes.load(Ordering::Acquire) >= PUBLISHER_WINDOW_BYTES
            || forwarded >= FORWARD_WINDOW
    }

    /// Waits until every parked delivery and forwarded copy is settled, or until `deadline`;
    /// true if they all settled.
    pub async fn settled(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Registered before the check, so a settlement in between is not missed.
            let mut settled = std::pin::pin!(self.settled.notified());
            settled.as_mut().enable();
            if self.outstanding() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.outstanding() == 0;
            }
        }
    }

    fn acks(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A copy of a publisher's message on its way to a peer node, which holds the message's ack
/// until the peer has taken it. Dropped without [`Forward::delivered`] — the peer did not
/// take it in time, it restarted, or the route's replay buffer had no room — it makes the
/// ack negative ([`Waiter`]).
pub struct Forward {
    waiter: Arc<Waiter>,
    ticket: u64,
    failure: u8,
    delivered: bool,
}

impl Forward {
    /// The peer took the message into its sessions' queues.
    pub fn delivered(mut self) {
        self.delivered = true;
    }

    /// Gives the copy up with this MQTT 5 reason code instead of 0x80 (unspecified error).
    pub fn fail(mut self, code: u8) {
        self.failure = code;
    }
}

impl Drop for Forward {
    fn drop(&mut self) {
        let failure = (!self.delivered).then_some(self.failure);
        self.waiter.forward_done(self.ticket, failure);
    }
}

/// Waits until `waiter`'s parked deliveries have all moved in or been dropped. The wait ends
/// when the first of `sessions` (where they are parked) has kept messages waiting for its
/// patience: those sessions are declared slow, which drops what waits for them.
pub async fn settle(
    waiter: &Waiter,
    sessions: &[Arc<SessionHandle>],
    bounds: &Bounds,
    stats: &Stats,
) {
    loop {
        // A session's wait may have begun before this publisher's message came.
        let began = sessions
            .iter()
            .filter_map(|session| session.waiting_since(bounds))
            .min()
            .unwrap_or_else(Instant::now);
        let deadline = tokio::time::Instant::from_std(began + bounds.patience);
        if waiter.settled(deadline).await {
            return;
        }
        for session in sessions {
            session.expire_stale(bounds, stats);
        }
    }
}

/// The bytes one route's messages hold parked in full sessions (`cluster.route_backlog_bytes`).
///
/// The budget also paces the peer: past [`Backlog::PACE_BYTES`] (or half the budget, if
/// that is less) the route's acknowledgements wait until the backlog has drained to half of
/// that, for at most a bound the route sets, and the peer holds back its QoS 0 publishers once
/// it has too many bytes unacknowledged (see `cluster::link`; QoS 1/2 ones wait for their
/// acks). So a publisher on another node is paced to a slow subscriber here as a local one is,
/// instead of running ahead until the budget is spent and its messages are dropped.
pub struct Backlog {
    bytes: AtomicUsize,
    max: usize,
    /// Above this, the route is paced ([`Backlog::is_paced`]).
    mark: usize,
    paced: AtomicBool,
    /// The backlog drained to half the mark while paced.
    eased: Notify,
}

impl Backlog {
    /// Parked bytes of one route's messages past which its acknowledgements wait.
    pub const PACE_BYTES: usize = 256 * 1024;

    /// What a peer may send beyond what this node acknowledged, for a backlog of `max` bytes:
    /// with the mark, within the budget (a held-back publisher adds at most its own window,
    /// `PUBLISHER_WINDOW_BYTES`).
    pub fn window(max: usize) -> usize {
        Backlog::PACE_BYTES.min(max / 4)
    }

    pub fn new(max: usize) -> Arc<Backlog> {
        Arc::new(Backlog {
            bytes: AtomicUsize::new(0),
            max,
            mark: Backlog::PACE_BYTES.min(max / 2),
            paced: AtomicBool::new(false),
            eased: Notify::new(),
        })
    }

    /// Takes `bytes` of the budget for a parked message; `None` when it has no room for it.
    pub fn claim(self: &Arc<Self>, bytes: usize) -> Option<Claim> {
        let mut used = self.bytes.load(Ordering::Relaxed);
        loop {
            if used + bytes > self.max {
                return None;
            }
            match self.bytes.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        if used + bytes > self.mark && !self.paced.load(Ordering::Relaxed) {
            self.paced.store(true, Ordering::Release);
        }
        Some(Claim::Route {
            backlog: Arc::clone(self),
            bytes,
        })
    }

    fn release(&self, bytes: usize) {
        let left = self.bytes.fetch_sub(bytes, Ordering::AcqRel) - bytes;
        if left <= self.mark / 2 && self.paced.swap(false, Ordering::AcqRel) {
            self.eased.notify_one();
        }
    }

    /// Whether the route's acknowledgements wait: more than the mark is parked, and it has
    /// not drained to half of it since.
    pub fn is_paced(&self) -> bool {
        self.paced.load(Ordering::Acquire)
    }

    /// Waits until the backlog stops being paced (or was not): a permit is kept if it eased
    /// while nobody waited.
    pub async fn eased(&self) {
        self.eased.notified().await;
    }
}

/// The sessions that keep messages waiting, so that one that keeps them too long is declared
/// slow on time even when nothing else comes for it (the keep-alive sweep looks at them four
/// times a second).
#[derive(Default)]
pub struct Waits(DashMap<u64, Weak<SessionHandle>>);

impl Waits {
    /// `session` began keeping messages waiting.
    pub fn began(&self, session: &Arc<SessionHandle>) {
        self.0.insert(session.id(), Arc::downgrade(session));
    }

    /// Declares slow the sessions that have kept messages waiting for their patience, and
    /// forgets those that no longer keep any.
    pub fn expire(&self, bounds: &Bounds, stats: &Stats) {
        let sessions: Vec<(u64, Option<Arc<SessionHandle>>)> = self
            .0
            .iter()
            .map(|entry| (*entry.key(), entry.value().upgrade()))
            .collect();
        for (id, session) in sessions {
            let waiting = session.is_some_and(|session| {
                session.expire_stale(bounds, stats);
                session.waiting_since(bounds).is_some()
            });
            if !waiting {
                self.0.remove(&id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Ack;

    #[test]
    fn a_backlog_claims_within_its_budget_and_gets_it_back_when_claims_drop() {
        let backlog = Backlog::new(100);
        let first = backlog.claim(60).expect("room");
        assert!(backlog.claim(60).is_none(), "over the budget");
        let second = backlog.claim(40).expect("room");
        assert_eq!(backlog.bytes.load(Ordering::Acquire), 100);
        drop(first);
        drop(second);
        assert_eq!(backlog.bytes.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_backlog_paces_past_its_mark_until_it_drains_to_half_of_it() {
        // A budget of 1000: the mark is half of it, 500.
        let backlog = Backlog::new(1000);
        let first = backlog.claim(300).expect("room");
        assert!(!backlog.is_paced(), "within the mark");
        let second = backlog.claim(300).expect("room");
        assert!(backlog.is_paced(), "past the mark");
        drop(second);
        assert!(backlog.is_paced(), "300 left: not yet half the mark");
        let eased = backlog.eased();
        drop(first);
        assert!(!backlog.is_paced(), "drained");
        tokio::time::timeout(Duration::from_secs(5), eased)
            .await
            .expect("eased is told");
        assert_eq!(Backlog::window(1000), 250);
        assert_eq!(Backlog::window(1 << 30), Backlog::PACE_BYTES);
    }

    #[tokio::test]
    async fn a_waiter_settles_when_its_last_claim_goes_and_then_sends_the_acks_in_order() {
        let outbox = Arc::new(Outbox::default());
        let waiter = Arc::new(Waiter::new(Arc::clone(&outbox), true, None));
        waiter.ack(Packet::PingResp);
        assert_eq!(outbox.take().0.len(), 1, "nothing parked: sent at once");
        let a = waiter.parked(10);
        let b = waiter.parked(10);
        waiter.ack(Packet::PubAck(Ack::new(1)));
        waiter.ack(Packet::PubAck(Ack::new(2)));
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        drop(a);
        assert!(!waiter.settled(soon).await, "one still parked");
        assert!(outbox.take().0.is_empty(), "the acks wait");
        drop(b);
        let later = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(waiter.settled(later).await);
        let ids: Vec<u16> = outbox
            .take()
            .0
            .iter()
            .map(|p| match p {
                Packet::PubAck(ack) => ack.packet_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, [1, 2]);
    }

    fn sent(outbox: &Outbox) -> Vec<(u16, u8)> {
        outbox
            .take()
            .0
            .iter()
            .map(|p| match p {
                Packet::PubAck(ack) | Packet::PubRec(ack) => (ack.packet_id, ack.reason),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_forward_not_taken_turns_its_ack_negative_and_the_acks_keep_their_order() {
        let outbox = Arc::new(Outbox::default());
        let waiter = Arc::new(Waiter::new(Arc::clone(&outbox), true, None));
        waiter.begin();
        let first = waiter.forwarded();
        waiter.ack(Packet::PubAck(Ack::new(1)));
        waiter.begin();
        let second = waiter.forwarded();
        waiter.ack(Packet::PubAck(Ack::new(2)));
        waiter.begin();
        waiter.ack(Packet::PubAck(Ack::new(3)));
        assert!(!waiter.is_full() && waiter.outstanding() == 2);
        second.fail(reason::QUOTA_EXCEEDED);
        assert!(sent(&outbox).is_empty(), "the first still holds every ack");
        first.delivered();
        assert_eq!(sent(&outbox), [(1, 0), (2, reason::QUOTA_EXCEEDED), (3, 0)]);
        // A copy that fails before its publication's ack is even queued still turns it.
        waiter.begin();
        drop(waiter.forwarded());
        waiter.ack(Packet::PubAck(Ack::new(4)));
        waiter.begin();
        waiter.ack(Packet::PubAck(Ack::new(5)));
        assert_eq!(
            sent(&outbox),
            [(4, reason::UNSPECIFIED_ERROR), (5, 0)],
            "and only it"
        );
    }

    #[test]
    fn a_v311_publisher_gets_no_ack_for_a_message_not_taken_and_is_disconnected() {
        let outbox = Arc::new(Outbox::default());
        let session = SessionHandle::new("pub");
        let waiter = Arc::new(Waiter::new(
            Arc::clone(&outbox),
            false,
            Some(Arc::clone(&session)),
        ));
        waiter.begin();
        let first = waiter.forwarded();
        waiter.ack(Packet::PubAck(Ack::new(1)));
        waiter.begin();
        let second = waiter.forwarded();
        waiter.ack(Packet::PubRec(Ack::new(2)));
        waiter.begin();
        waiter.ack(Packet::PubAck(Ack::new(3)));
        first.delivered();
        drop(second);
        let (packets, close) = outbox.take();
        let ids: Vec<u16> = packets
            .iter()
            .map(|p| match p {
                Packet::PubAck(ack) | Packet::PubRec(ack) => ack.packet_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            ids,
            [1],
            "the acks from the failed one on are withheld, in order"
        );
        assert!(matches!(
            close,
            Some(super::super::outbox::Close::Disconnect(..))
        ));
        assert_eq!(
            session.take_retracted(),
            [2],
            "its QoS 2 id is free for the resend"
        );
    }
}
