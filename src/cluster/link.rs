//! A link: what this node keeps for one peer node for as long as that node runs, across the
//! connections ([`Route`]s) that come and go between the two.
//!
//! A link is keyed by the peer's name and *epoch*, a random number each node draws at start
//! and sends in its INFO: a peer that comes back with the same epoch is the same process
//! after a route flap, one with another epoch restarted and kept nothing. A link holds:
//! - the peer's interest, which the publish path reads: it is kept through a grace period
//!   after the route drops (`cluster.peer_grace_ms`), so a publish during a short flap is
//!   held for the peer instead of answered "no matching subscribers";
//! - the outgoing message sequence and the replay buffer: every MESSAGE frame sent to the
//!   peer is numbered, and a QoS 1/2 one is kept until the peer acknowledges it (an ACK frame
//!   carries the highest number taken, sent once per batch the peer reads) — on a new route to
//!   the same epoch, everything still unacknowledged is sent again, in order. The buffer is
//!   bounded by `cluster.route_replay_bytes`; a message that finds it full is not sent
//!   (counted, and its publisher gets 0x97), and one not acknowledged within
//!   `cluster.ack_timeout_ms` is given up (counted, and its publisher gets 0x80);
//! - the highest number taken from the peer, so a replayed message this node already took is
//!   acknowledged again but not delivered twice;
//! - the pace: a peer that has more than [`LinkLimits::pace_bytes`] of messages
//!   unacknowledged is behind — it holds its acknowledgements back while its sessions' full
//!   queues keep too many of this node's messages waiting ([`crate::broker::Backlog`]) — and
//!   a local QoS 0 publisher whose message goes to it then is held back as for a full local
//!   queue: its message holds a claim ([`Waiter::parked`]) until the peer acknowledges it, the
//!   route goes, or [`Link::expire`] finds it overdue. (A QoS 1/2 publisher is paced by its
//!   acks, which wait for the peer's, or, with `cluster.acks = "local"`, bounded by the
//!   replay buffer.) So a publisher is paced to a slow subscriber on another node instead of
//!   outrunning it until messages are dropped.
//!
//! Numbers are implicit on the wire, so one encoded frame serves every peer: each MESSAGE
//! frame on a route is the previous one's number plus one, and a SEQ frame sets the number of
//! the next (sent when a route is attached, and before a replayed message that does not
//! follow the one before — QoS 0 messages are not replayed). See docs/ARCHITECTURE.md,
//! "Acknowledgements and replay".
//!
//! Locks: `out` is taken under the cluster's state lock (attach, detach) and alone (the
//! publish path); under it, a publisher's [`Forward`] may be created or failed (the waiter's
//! lock) and the route's queue locked. Acknowledged and expired entries are dropped after
//! `out` is released.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::broker::{Claim, Forward, Waiter};
use crate::protocol::reason;

use super::frame::Frame;
use super::interest::Interest;
use super::route::{self, Route};

/// Bytes sent between two of the points the pace is measured from: the bytes the peer has
/// acknowledged are known to within this.
const PACE_STEP: u64 = 4096;

/// Points kept at most (a peer that reads and never acknowledges stays paced once they are
/// all in use, and they take no more memory).
const PACE_POINTS: usize = 4096;

/// What a link needs from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct LinkLimits {
    /// `cluster.route_replay_bytes`: QoS 1/2 frames kept until acknowledged.
    pub replay_bytes: usize,
    /// `cluster.ack_timeout_ms`: how long a message waits for its acknowledgement.
    pub ack_timeout: Duration,
    /// `cluster.max_peer_interest`.
    pub max_interest: usize,
    /// Bytes of messages the peer may have unacknowledged before the local publishers of
    /// more are held back (from `cluster.route_backlog_bytes`: [`crate::broker::Backlog::window`]).
    pub pace_bytes: usize,
}

/// This node's side of its relation with one running peer process.
pub struct Link {
    id: u64,
    pub peer: String,
    /// The peer's epoch: a new one means the peer restarted.
    pub epoch: u64,
    limits: LinkLimits,
    interest: RwLock<Interest>,
    /// The peer declared a consumer group: kept beside the lock, so that a publish on a
    /// cluster without groups (most) need not lock every link's interest to find none.
    grouped: AtomicBool,
    out: Mutex<Out>,
    /// The highest message number taken from the peer.
    received: AtomicU64,
    /// Messages for the peer dropped: QoS 0 while no route was up, a full replay buffer, or
    /// no acknowledgement in time.
    dropped: AtomicU64,
    /// The peer said it is shutting down (GOODBYE): no grace period when its route ends.
    leaving: AtomicBool,
    /// Messages whose publisher was held back because the peer was behind.
    paced: AtomicU64,
}

/// The outgoing side, behind one lock so numbers, buffer and route stay in step.
struct Out {
    /// The number of the next MESSAGE frame.
    next: u64,
    /// Bytes of MESSAGE frames sent, and of those the peer acknowledged (to within
    /// [`PACE_STEP`]), and points to tell the second from the first: (number, bytes sent up
    /// to and with it), one every [`PACE_STEP`] bytes.
    sent_bytes: u64,
    acked_bytes: u64,
    points: VecDeque<(u64, u64)>,
    /// Claims of local publishers held back while the peer is behind, oldest first.
    paced: VecDeque<Paced>,
    unacked: VecDeque<Unacked>,
    unacked_bytes: usize,
    /// The route up now, if any.
    route: Option<Arc<Route>>,
    /// When the last route went, while none is up.
    down_since: Option<Instant>,
}

/// A QoS 1/2 message sent (or to be sent) and not yet acknowledged.
struct Unacked {
    seq: u64,
    frame: Bytes,
    /// The local publisher waiting for it, unless the cluster acks locally or the message
    /// came from elsewhere (a redirect).
    forward: Option<Forward>,
    deadline: Instant,
}

/// A local publisher held back until the peer acknowledges message `seq`, or `deadline`.
struct Paced {
    seq: u64,
    /// Held for its drop, which lets the publisher go on.
    #[expect(dead_code, reason = "held only to be dropped")]
    claim: Claim,
    deadline: Instant,
}

/// The local publisher of a message sent to the peer, if any, and what it waits for.
#[derive(Clone, Copy)]
pub enum Publisher<'a> {
    /// A peer's message, a Will, a group hand-over, or a publisher whose acks do not wait
    /// for the peers (`cluster.acks = "local"`): nobody to pace.
    None,
    /// The publisher of a QoS 0 message: held back while the peer is behind.
    Paced(&'a Arc<Waiter>),
    /// The publisher of a kept (QoS 1/2) message, whose ack waits until the peer has taken it
    /// (`cluster.acks = "cluster"`): paced by that.
    Acked(&'a Arc<Waiter>),
}

/// Whether a message was sent to the peer (or is kept for it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Yes,
    Dropped,
}

impl Link {
    pub fn new(peer: String, epoch: u64, limits: LinkLimits) -> Arc<Link> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Link {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            epoch,
            limits,
            interest: RwLock::new(Interest::new(limits.max_interest)),
            grouped: AtomicBool::new(false),
            out: Mutex::new(Out {
                next: 1,
                sent_bytes: 0,
                acked_bytes: 0,
                points: VecDeque::new(),
                paced: VecDeque::new(),
                unacked: VecDeque::new(),
                unacked_bytes: 0,
                route: None,
                down_since: Some(Instant::now()),
            }),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            leaving: AtomicBool::new(false),
            paced: AtomicU64::new(0),
        })
    }

    /// Unique per link, so the broker's choice of a peer (a `PeerId`) names this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Sends a MESSAGE frame for a message of QoS > 0 if `keep`; a kept one waits in the
    /// replay buffer until acknowledged, with the publisher's ack held on it if it is
    /// [`Publisher::Acked`]. Never waits; a publisher is held back if the peer is behind.
    pub fn send(&self, frame: Bytes, keep: bool, publisher: Publisher<'_>) -> Sent {
        let mut out = self.out();
        let seq = out.next;
        if keep {
            let acked = match publisher {
                Publisher::Acked(waiter) => Some(waiter),
                Publisher::None | Publisher::Paced(_) => None,
            };
            if out.unacked_bytes + frame.len() > self.limits.replay_bytes {
                drop(out);
                if let Some(waiter) = acked {
                    waiter.forwarded().fail(reason::QUOTA_EXCEEDED);
                }
                self.count_drop("replay buffer full (cluster.route_replay_bytes)");
                return Sent::Dropped;
            }
            out.unacked_bytes += frame.len();
            let size = frame.len();
            out.unacked.push_back(Unacked {
                seq,
                frame: frame.clone(),
                forward: acked.map(|waiter| waiter.forwarded()),
                deadline: Instant::now() + self.limits.ack_timeout,
            });
            out.next += 1;
            if let Some(route) = &out.route {
                route.send_kept(frame);
                self.pace(&mut out, seq, size, publisher);
            }
            return Sent::Yes;
        }
        match &out.route {
            Some(route) => {
                let size = frame.len();
                if !route.send_message(frame) {
                    return Sent::Dropped;
                }
                out.next += 1;
                self.pace(&mut out, seq, size, publisher);
                Sent::Yes
            }
            None => {
                drop(out);
                self.count_drop("no route up");
                Sent::Dropped
            }
        }
    }

    /// Counts message `seq` (of `size` bytes, just sent), and holds its publisher back until
    /// the peer acknowledges it if the peer is behind.
    fn pace(&self, out: &mut Out, seq: u64, size: usize, publisher: Publisher<'_>) {
        out.sent_bytes += size as u64;
        let last = out
            .points
            .back()
            .map_or(out.acked_bytes, |&(_, bytes)| bytes);
        if out.sent_bytes - last >= PACE_STEP && out.points.len() < PACE_POINTS {
            let point = (seq, out.sent_bytes);
            out.points.push_back(point);
        }
        let Publisher::Paced(waiter) = publisher else {
            return;
        };
        if out.sent_bytes - out.acked_bytes > self.limits.pace_bytes as u64 {
            self.paced.fetch_add(1, Ordering::Relaxed);
            out.paced.push_back(Paced {
                seq,
                claim: waiter.parked(size),
                deadline: Instant::now() + self.limits.ack_timeout / 2,
            });
        }
    }

    /// The longest this node holds an acknowledgement to the peer back while its backlog
    /// paces the peer: a quarter of the ack timeout, so that a paced message is never given
    /// up for it (the nodes of a cluster share their configuration).
    pub fn max_ack_hold(&self) -> Duration {
        self.limits.ack_timeout / 4
    }

    /// The peer took every message up to `up_to`: their publishers' acks may go, and the
    /// publishers held back on them go on.
    pub fn acked(&self, up_to: u64) {
        let mut taken = Vec::new();
        let mut released = Vec::new();
        let mut out = self.out();
        if up_to.saturating_add(1) >= out.next {
            // Everything sent is acknowledged (the common case: one ACK per batch read).
            out.acked_bytes = out.sent_bytes;
            out.points.clear();
        }
        while out.points.front().is_some_and(|&(seq, _)| seq <= up_to) {
            if let Some((_, bytes)) = out.points.pop_front() {
                out.acked_bytes = bytes;
            }
        }
        while out.unacked.front().is_some_and(|u| u.seq <= up_to) {
            if let Some(u) = out.unacked.pop_front() {
                out.unacked_bytes -= u.frame.len();
                taken.extend(u.forward);
            }
        }
        while out.paced.front().is_some_and(|p| p.seq <= up_to) {
            released.extend(out.paced.pop_front());
        }
        drop(out);
        for forward in taken {
            forward.delivered();
        }
        drop(released);
    }

    /// A new route to the peer: everything unacknowledged goes on it first, in order, then
    /// the messages sent from now on.
    pub fn attach(&self, route: &Arc<Route>) {
        let mut out = self.out();
        let mut expected = None;
        let mut frames = Vec::with_capacity(out.unacked.len() + 1);
        for u in &out.unacked {
            if expected != Some(u.seq) {
                frames.extend(route::encode(&Frame::Seq(u.seq)));
            }
            frames.push(u.frame.clone());
            expected = Some(u.seq + 1);
        }
        if expected != Some(out.next) {
            frames.extend(route::encode(&Frame::Seq(out.next)));
        }
        if !out.unacked.is_empty() {
            tracing::info!(peer = %self.peer, messages = out.unacked.len(), "replaying unacknowledged messages on the new route");
        }
        route.send_stream(frames);
        out.route = Some(Arc::clone(route));
        out.down_since = None;
    }

    /// `route` ended: the link keeps its buffer and interest for the grace period.
    pub fn detach(&self, route: &Route) {
        let mut out = self.out();
        let mut released = VecDeque::new();
        if out.route.as_ref().is_some_and(|r| r.id() == route.id()) {
            out.route = None;
            out.down_since = Some(Instant::now());
            // Nothing more goes to the peer until a route is back: nobody waits for it.
            released = std::mem::take(&mut out.paced);
        }
        drop(out);
        drop(released);
    }

    /// Gives up the messages whose acknowledgement is overdue; true when the link has had no
    /// route for `grace`, and should go.
    pub fn expire(&self, now: Instant, grace: Duration) -> bool {
        let mut late = Vec::new();
        let mut out = self.out();
        while out.unacked.front().is_some_and(|u| u.deadline <= now) {
            if let Some(u) = out.unacked.pop_front() {
                out.unacked_bytes -= u.frame.len();
                late.push(u);
            }
        }
        // A peer that holds its acknowledgements back does so for at most a quarter of the
        // ack timeout at a time: one that takes twice that is not pacing, and nobody waits
        // for it longer.
        let mut released = Vec::new();
        while out.paced.front().is_some_and(|p| p.deadline <= now) {
            released.extend(out.paced.pop_front());
        }
        let gone = out.down_since.is_some_and(|since| now >= since + grace);
        drop(out);
        drop(released);
        if !late.is_empty() {
            self.dropped.fetch_add(late.len() as u64, Ordering::Relaxed);
            tracing::warn!(peer = %self.peer, messages = late.len(), "messages not acknowledged by the peer in time (cluster.ack_timeout_ms); their publishers get a negative ack");
        }
        gone
    }

    /// The link goes (its grace period is over, or the peer restarted): whatever it still
    /// holds is given up, and its publishers get a negative ack.
    pub fn fail_all(&self) {
        let mut out = self.out();
        let lost: Vec<Unacked> = out.unacked.drain(..).collect();
        out.unacked_bytes = 0;
        let released = std::mem::take(&mut out.paced);
        drop(out);
        drop(released);
        if !lost.is_empty() {
            self.dropped.fetch_add(lost.len() as u64, Ordering::Relaxed);
            tracing::warn!(peer = %self.peer, messages = lost.len(), "peer gone or restarted: unacknowledged messages given up");
        }
    }

    /// A MESSAGE numbered `seq` arrived: true if it is new and must be delivered (it is then
    /// counted as taken), false for a replayed one this node already took.
    pub fn take(&self, seq: u64) -> bool {
        // Two routes to the peer may be read at once for a moment (a duplicate route being
        // replaced): each reads its own in order, and whichever takes a number first delivers.
        self.received.fetch_max(seq, Ordering::AcqRel) < seq
    }

    /// The peer is shutting down.
    pub fn leave(&self) {
        self.leaving.store(true, Ordering::Release);
    }

    /// Whether the peer said it is shutting down.
    pub fn is_leaving(&self) -> bool {
        self.leaving.load(Ordering::Acquire)
    }

    /// The highest message number taken from the peer.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Acquire)
    }

    /// Messages whose publisher was held back because the peer was behind.
    pub fn paced(&self) -> u64 {
        self.paced.load(Ordering::Relaxed)
    }

    /// Messages for the peer dropped (see [`Link`]).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The peer's interest, as the publish path reads it.
    pub fn interest(&self) -> RwLockReadGuard<'_, Interest> {
        self.interest.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the peer's interest (or replaces it, with `*interest = ...`).
    pub fn change_interest<R>(&self, change: impl FnOnce(&mut Interest) -> R) -> R {
        let mut interest = self
            .interest
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let result = change(&mut interest);
        self.grouped.store(interest.has_groups(), Ordering::Relaxed);
        result
    }

    /// True if the peer declared any consumer group.
    pub fn has_groups(&self) -> bool {
        self.grouped.load(Ordering::Relaxed)
    }

    fn count_drop(&self, why: &'static str) {
        let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(peer = %self.peer, dropped, why, "messages for a peer dropped");
        }
    }

    fn out(&self) -> MutexGuard<'_, Out> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(replay_bytes: usize, ack_timeout: Duration) -> Arc<Link> {
        let limits = LinkLimits {
            replay_bytes,
            ack_timeout,
            max_interest: 10,
            pace_bytes: 1024,
        };
        Link::new("peer".into(), 1, limits)
    }

    fn route(link: &Arc<Link>) -> Arc<Route> {
        Route::new(Arc::clone(link), "a:1".into(), true, 1 << 20, 10, 1024)
    }

    fn message(n: u8) -> Bytes {
        Bytes::from(vec![n; 10])
    }

    /// A link with a route up, a pace window of 1024 bytes, and a local publisher.
    fn attached_with_publisher(ack_timeout: Duration) -> (Arc<Link>, Arc<Route>, Arc<Waiter>) {
        let link = link(1 << 20, ack_timeout);
        let route = route(&link);
        link.attach(&route);
        (link, route, Waiter::detached())
    }

    #[test]
    fn a_qos0_publisher_is_held_back_while_the_peer_is_behind_until_it_acknowledges() {
        let (link, route, waiter) = attached_with_publisher(Duration::from_secs(1));
        let frame = Bytes::from(vec![0; 100]);
        // A window of 1024 bytes: the first ten 100-byte frames are within it.
        for _ in 0..10 {
            assert_eq!(
                link.send(frame.clone(), false, Publisher::Paced(&waiter)),
                Sent::Yes
            );
        }
        assert_eq!(waiter.outstanding(), 0, "within the window");
        for _ in 0..5 {
            assert_eq!(
                link.send(frame.clone(), false, Publisher::Paced(&waiter)),
                Sent::Yes
            );
        }
        assert_eq!(
            waiter.outstanding(),
            5,
            "the 11th to 15th are past it, 1100 bytes on"
        );
        assert_eq!(link.paced(), 5);
        // An ack of messages 1 to 12 lets their claims go; the others stay held until an ack
        // covers each.
        link.acked(12);
        assert_eq!(waiter.outstanding(), 3, "the 13th to 15th still held");
        link.acked(15);
        assert_eq!(waiter.outstanding(), 0);
        // A peer's message (nobody to pace) and a QoS 1/2 one (paced by its ack) hold nobody.
        for _ in 0..20 {
            link.send(frame.clone(), false, Publisher::None);
            link.send(frame.clone(), true, Publisher::None);
        }
        assert_eq!(waiter.outstanding(), 0);
        // Behind again: the route going lets the publisher go.
        link.send(frame.clone(), false, Publisher::Paced(&waiter));
        assert_eq!(waiter.outstanding(), 1);
        link.detach(&route);
        assert_eq!(
            waiter.outstanding(),
            0,
            "nobody waits for a peer without a route"
        );
    }

    #[test]
    fn the_pace_keeps_a_bounded_number_of_points_and_an_ack_of_everything_ends_it() {
        let link = link(1 << 20, Duration::from_secs(1));
        let route = Route::new(Arc::clone(&link), "a:1".into(), true, 1 << 30, 10, 1024);
        link.attach(&route);
        let waiter = Waiter::detached();
        // One frame per step: a point each, past the cap.
        let frame = Bytes::from(vec![0; PACE_STEP as usize]);
        let count = PACE_POINTS as u64 + 100;
        for _ in 0..count {
            link.send(frame.clone(), false, Publisher::None);
        }
        assert_eq!(
            link.out().points.len(),
            PACE_POINTS,
            "no more points past the cap"
        );
        link.send(frame.clone(), false, Publisher::Paced(&waiter));
        assert_eq!(waiter.outstanding(), 1, "behind");
        // The peer took everything sent: it is not behind, whatever points were kept.
        link.acked(count + 1);
        assert_eq!(waiter.outstanding(), 0);
        let small = Bytes::from(vec![0; 100]);
        link.send(small, false, Publisher::Paced(&waiter));
        assert_eq!(waiter.outstanding(), 0, "within the window again");
    }

    #[test]
    fn a_publisher_held_back_goes_on_when_the_peer_never_acknowledges() {
        let (link, _route, waiter) = attached_with_publisher(Duration::from_millis(200));
        for _ in 0..12 {
            link.send(Bytes::from(vec![0; 100]), false, Publisher::Paced(&waiter));
        }
        assert_eq!(waiter.outstanding(), 2);
        link.expire(Instant::now(), Duration::from_secs(60));
        assert_eq!(waiter.outstanding(), 2, "not overdue yet");
        link.expire(
            Instant::now() + Duration::from_millis(100),
            Duration::from_secs(60),
        );
        assert_eq!(
            waiter.outstanding(),
            0,
            "half the ack timeout is the most a claim waits"
        );
    }

    /// What the route's writer would send: SEQ numbers and message bytes, in order.
    fn sent(route: &Route) -> Vec<String> {
        route
            .take()
            .into_iter()
            .map(|frame| match frame.get(4) {
                Some(&14) => format!(
                    "seq {}",
                    u64::from_be_bytes(frame[5..13].try_into().unwrap())
                ),
                _ => format!("msg {}", frame[0]),
            })
            .collect()
    }

    #[test]
    fn a_new_route_gets_what_was_not_acknowledged_in_order_with_numbers_where_they_skip() {
        let link = link(1 << 20, Duration::from_secs(10));
        let first = route(&link);
        link.attach(&first);
        assert_eq!(sent(&first), ["seq 1"]);
        assert_eq!(link.send(message(1), true, Publisher::None), Sent::Yes); // 1
        assert_eq!(link.send(message(2), false, Publisher::None), Sent::Yes); // 2, QoS 0: not kept
        assert_eq!(link.send(message(3), true, Publisher::None), Sent::Yes); // 3
        assert_eq!(sent(&first), ["msg 1", "msg 2", "msg 3"]);
        link.acked(1);
        link.detach(&first);
        // While no route is up a QoS 1/2 message is kept and numbered; QoS 0 is dropped.
        assert_eq!(link.send(message(4), true, Publisher::None), Sent::Yes); // 4
        assert_eq!(link.send(message(5), false, Publisher::None), Sent::Dropped);
        assert_eq!(link.dropped(), 1);
        let second = route(&link);
        link.attach(&second);
        assert_eq!(
            sent(&second),
            ["seq 3", "msg 3", "msg 4"],
            "5 was never sent"
        );
        link.acked(4);
        let third = route(&link);
        link.attach(&third);
        assert_eq!(sent(&third), ["seq 5"], "nothing left to replay");
    }

    #[test]
    fn the_replay_buffer_is_bounded_and_overdue_messages_are_given_up() {
        let link = link(25, Duration::from_millis(50));
        assert_eq!(link.send(message(1), true, Publisher::None), Sent::Yes);
        assert_eq!(link.send(message(2), true, Publisher::None), Sent::Yes);
        assert_eq!(
            link.send(message(3), true, Publisher::None),
            Sent::Dropped,
            "25 bytes hold two"
        );
        let later = Instant::now() + Duration::from_millis(60);
        assert!(!link.expire(Instant::now(), Duration::from_secs(60)));
        assert!(
            link.expire(later, Duration::from_millis(10)),
            "no route for the grace"
        );
        assert_eq!(link.dropped(), 3, "one refused, two overdue");
        assert_eq!(
            link.send(message(4), true, Publisher::None),
            Sent::Yes,
            "room again"
        );
    }

    #[test]
    fn a_replayed_message_already_taken_is_not_taken_twice() {
        let link = link(1024, Duration::from_secs(1));
        assert!(link.take(1));
        assert!(link.take(2));
        assert!(!link.take(2));
        assert!(!link.take(1));
        assert!(link.take(5), "numbers may skip (QoS 0 is not replayed)");
        assert_eq!(link.received(), 5);
    }
}
