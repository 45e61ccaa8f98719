//! One route: an established, authenticated connection to one peer node.
//!
//! A [`Route`] owns what belongs to that connection: the outbound queue, bounded in bytes,
//! and the budget ([`Backlog`]) for the peer's messages that wait beside full local queues —
//! the reader hands every message to the broker and never waits for a subscriber, so one slow
//! session cannot hold up the rest of the route's traffic. What must outlive the connection —
//! the peer's interest, message numbers, the replay buffer — is the route's [`Link`]'s.
//! Past the queue's bound a QoS 0 message is dropped (a QoS 1/2 one is bounded by the link's
//! replay buffer instead), but a control frame (interest, discovery, client ids) never is, as
//! the peer's picture would go wrong: a peer that lets that many pile up is disconnected
//! instead, and gets the full picture again when the route comes back.
//! [`run`] drives the connection with two halves: the writer drains the queue (many frames per
//! system call), acknowledges what the reader took (holding the acknowledgement back, for a
//! bounded while, when the backlog paces the peer: docs/ARCHITECTURE.md, "Pace across a
//! route"), and sends a heartbeat when the route has
//! been idle for `heartbeat_ms`; the reader applies the peer's frames and closes the route
//! when nothing arrives within `heartbeat_timeout_ms`. A route is ended either at once
//! ([`Route::close`]) or, on a graceful shutdown, after the writer has sent everything already
//! queued ([`Route::drain`]).
//!
//! The peer's interest on a new route is built apart and takes the place of what the link
//! kept only once the peer's full set is in (its SYNCED frame), so the publish path never
//! sees a half-built picture after a flap.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Notify, watch};

use crate::broker::Backlog;

use super::Cluster;
use super::frame::{Frame, FrameError, FrameReader};
use super::interest::{Interest, InterestFull, Members};
use super::link::Link;

/// Why a route ended.
#[derive(Debug, thiserror::Error)]
pub enum RouteEnd {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("write failed: {0}")]
    Write(#[from] std::io::Error),
    #[error("no frame for {0:?} (cluster.heartbeat_timeout_ms): peer dead or frozen")]
    Silent(Duration),
    #[error("{0}")]
    InterestFull(#[from] InterestFull),
    #[error("unexpected {0} frame on an established route")]
    Unexpected(&'static str),
    #[error("refused by the peer: {0}")]
    Refused(String),
    #[error("closed by this node: a newer route to the peer replaced it, or shutdown")]
    Closed,
    #[error("this node is shutting down; everything queued was sent")]
    Drained,
}

struct Queue {
    frames: VecDeque<Bytes>,
    /// Bytes of message frames queued.
    message_bytes: usize,
    /// Bytes of control frames queued since the route registered (the initial full set,
    /// bounded by this node's own tables, is not counted).
    control_bytes: usize,
}

/// What one route carried since it was established. Counted by the route's own reader and
/// writer (bytes per system call, messages as they are queued or read), so it costs a few
/// relaxed atomic adds per batch.
#[derive(Debug)]
pub struct Figures {
    pub since: Instant,
    pub in_msgs: AtomicU64,
    pub out_msgs: AtomicU64,
    pub in_bytes: AtomicU64,
    pub out_bytes: AtomicU64,
    /// The last round trip a PING measured, in microseconds (0: none yet).
    pub rtt_us: AtomicU64,
    /// Times an acknowledgement to the peer was held back (the backlog paced it).
    pub acks_held: AtomicU64,
    /// When the last PING went, in microseconds after `since`.
    ping_sent: AtomicU64,
}

impl Default for Figures {
    fn default() -> Figures {
        Figures {
            since: Instant::now(),
            in_msgs: AtomicU64::new(0),
            out_msgs: AtomicU64::new(0),
            in_bytes: AtomicU64::new(0),
            out_bytes: AtomicU64::new(0),
            rtt_us: AtomicU64::new(0),
            acks_held: AtomicU64::new(0),
            ping_sent: AtomicU64::new(0),
        }
    }
}

impl Figures {
    fn micros(&self) -> u64 {
        u64::try_from(self.since.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A route to one peer.
pub struct Route {
    id: u64,
    /// The peer's node name.
    pub peer: String,
    /// The address the peer asks to be dialled at.
    pub advertise: String,
    /// This node dialled the connection (as opposed to accepting it).
    pub outbound: bool,
    queue: Mutex<Queue>,
    max_bytes: usize,
    wake: Notify,
    /// Notified when the writer takes the queue: room for the retained stream.
    room: Notify,
    closed: watch::Sender<bool>,
    /// Set on shutdown: the writer ends the route once the queue is empty.
    draining: AtomicBool,
    /// What outlives this connection.
    pub link: Arc<Link>,
    /// The peer's interest while its full set is coming in; `None` once it is (SYNCED), and
    /// changes then go to the link's.
    fresh: Mutex<Option<Interest>>,
    /// The highest message number taken from the peer that the writer should acknowledge.
    ack_due: AtomicU64,
    /// The peer sent a PING: the writer answers PONG.
    pong_due: AtomicBool,
    dropped: AtomicU64,
    /// What the route carried, for the admin API and metrics.
    pub figures: Figures,
    /// The peer's messages waiting beside full local queues (`cluster.route_backlog_bytes`).
    backlog: Arc<Backlog>,
}

impl Route {
    pub fn new(
        link: Arc<Link>,
        advertise: String,
        outbound: bool,
        max_bytes: usize,
        max_interest: usize,
        backlog_bytes: usize,
    ) -> Arc<Route> {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Arc::new(Route {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            peer: link.peer.clone(),
            advertise,
            outbound,
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                message_bytes: 0,
                control_bytes: 0,
            }),
            max_bytes,
            wake: Notify::new(),
            room: Notify::new(),
            closed: watch::channel(false).0,
            draining: AtomicBool::new(false),
            link,
            fresh: Mutex::new(Some(Interest::new(max_interest))),
            ack_due: AtomicU64::new(0),
            pong_due: AtomicBool::new(false),
            dropped: AtomicU64::new(0),
            figures: Figures::default(),
            backlog: Backlog::new(backlog_bytes),
        })
    }

    /// Unique per connection, so a replaced route can tell it is no longer the registered one.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues a message frame unless the queue already holds `cluster.route_queue_bytes` of
    /// messages; returns false (and counts it) when it was dropped. Never waits.
    pub fn send_message(&self, frame: Bytes) -> bool {
        let mut queue = self.queue();
        if queue.message_bytes + frame.len() > self.max_bytes {
            drop(queue);
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(peer = %self.peer, dropped, "route queue full (cluster.route_queue_bytes): messages dropped");
            }
            return false;
        }
        queue.message_bytes += frame.len();
        queue.frames.push_back(frame);
        drop(queue);
        self.figures.out_msgs.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
        true
    }

    /// Queues a QoS 1/2 message frame, which the link's replay buffer already bounds and
    /// keeps: never dropped here. Counted with the messages, so the retained stream and QoS 0
    /// messages see it.
    pub fn send_kept(&self, frame: Bytes) {
        let mut queue = self.queue();
        queue.message_bytes += frame.len();
        queue.frames.push_back(frame);
        drop(queue);
        self.figures.out_msgs.fetch_add(1, Ordering::Relaxed);
        self.wake.notify_one();
    }

    /// Bytes of messages queued and not yet written.
    pub fn pending_bytes(&self) -> usize {
        self.queue().message_bytes
    }

    /// Queues a control frame (interest, discovery, client ids). These are never dropped, as
    /// losing one would leave the peer with a wrong picture; when `cluster.route_queue_bytes`
    /// of them are waiting, the peer is not reading and the route is closed instead.
    pub fn send_control(&self, frame: &Frame) {
        let Some(bytes) = encode(frame) else {
            return;
        };
        let mut queue = self.queue();
        if queue.control_bytes + bytes.len() > self.max_bytes {
            drop(queue);
            if !self.closed.send_replace(true) {
                tracing::warn!(peer = %self.peer, "peer is not reading its route: cluster.route_queue_bytes of interest and control frames waiting; closing the route (the full picture is sent again when it is back)");
            }
            return;
        }
        queue.control_bytes += bytes.len();
        queue.frames.push_back(bytes);
        drop(queue);
        self.wake.notify_one();
    }

    /// Queues a frame of the full set sent when the route registers (peers, local interest and
    /// groups): bounded by this node's own tables, so not counted against the
    /// control limit, which is for the changes that follow.
    pub fn send_initial(&self, frame: &Frame) {
        if let Some(bytes) = encode(frame) {
            self.queue().frames.push_back(bytes);
            self.wake.notify_one();
        }
    }

    /// Queues a chunk of the retained stream ([`super::sync`]), or the link's replay when the
    /// route is attached: counted with the messages, so live messages see it against
    /// `cluster.route_queue_bytes`, but never dropped, as the stream waits for room
    /// ([`Route::room_for_stream`]) before it reads a chunk, and the replay is bounded by the
    /// link's buffer.
    pub fn send_stream(&self, frames: Vec<Bytes>) {
        if frames.is_empty() {
            return;
        }
        let mut queue = self.queue();
        queue.message_bytes += frames.iter().map(Bytes::len).sum::<usize>();
        queue.frames.extend(frames);
        drop(queue);
        self.wake.notify_one();
    }

    /// Waits until the queue holds no more than half of `cluster.route_queue_bytes` of
    /// messages less `chunk` (or none at all, for a bound smaller than a chunk), so the
    /// retained stream leaves at least half the bound to live messages; false when the route
    /// was closed meanwhile.
    pub async fn room_for_stream(&self, chunk: usize) -> bool {
        let mut closed = self.closed.subscribe();
        loop {
            let taken = self.room.notified();
            tokio::pin!(taken);
            taken.as_mut().enable();
            if *closed.borrow_and_update() {
                return false;
            }
            let queued = self.queue().message_bytes;
            if queued == 0 || queued + chunk <= self.max_bytes / 2 {
                return true;
            }
            tokio::select! {
                () = taken => {}
                _ = closed.changed() => {}
            }
        }
    }

    /// The budget for the peer's messages parked in full local queues.
    pub fn backlog(&self) -> &Arc<Backlog> {
        &self.backlog
    }

    /// Messages dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Ends the route (its tasks stop, its interest goes with it).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Ends the route once everything queued so far has been written: the writer half-closes
    /// the connection and the route ends when the peer closes its side in turn.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
        self.wake.notify_one();
    }

    /// Applies a change to the peer's interest: to the set being built until the peer's full
    /// set is in, to the link's afterwards.
    fn change_interest(
        &self,
        change: impl FnOnce(&mut Interest) -> Result<(), InterestFull>,
    ) -> Result<(), InterestFull> {
        let mut fresh = self.fresh.lock().unwrap_or_else(PoisonError::into_inner);
        match fresh.as_mut() {
            Some(interest) => change(interest),
            None => {
                drop(fresh);
                self.link.change_interest(change)
            }
        }
    }

    /// The peer's full set is in: it replaces what the link kept.
    fn synced(&self) {
        let fresh = self
            .fresh
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(interest) = fresh {
            self.link.change_interest(|kept| *kept = interest);
        }
    }

    /// The reader took messages up to `seq`: the writer acknowledges them.
    pub(super) fn acknowledge(&self, seq: u64) {
        if self.ack_due.fetch_max(seq, Ordering::AcqRel) < seq {
            self.wake.notify_one();
        }
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes everything queued, for the writer.
    pub(super) fn take(&self) -> VecDeque<Bytes> {
        let mut queue = self.queue();
        queue.message_bytes = 0;
        queue.control_bytes = 0;
        let frames = std::mem::take(&mut queue.frames);
        drop(queue);
        self.room.notify_waiters();
        frames
    }
}

pub(super) fn encode(frame: &Frame) -> Option<Bytes> {
    frame
        .encode()
        .inspect_err(|error| tracing::warn!(%error, "cannot encode a route frame"))
        .ok()
}

/// Runs an established, registered route until it ends, and says why.
pub async fn run<R, W>(cluster: &Arc<Cluster>, route: &Arc<Route>, reader: R, writer: W) -> RouteEnd
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut closed = route.closed.subscribe();
    let read = read_loop(cluster, route, reader);
    tokio::pin!(read);
    let ended = tokio::select! {
        end = &mut read => end,
        end = write_loop(cluster, route, writer) => end,
        _ = closed.wait_for(|c| *c) => RouteEnd::Closed,
    };
    if !matches!(ended, RouteEnd::Drained) {
        return ended;
    }
    // Our side is half-closed. Dropping the socket now, with the peer's heartbeats still
    // arriving unread, would reset the connection and could discard what the peer has not
    // read yet; the peer closes its side when it reads the end of ours.
    let linger = cluster.timings.heartbeat_timeout;
    tokio::select! {
        _ = tokio::time::timeout(linger, &mut read) => {}
        _ = closed.wait_for(|c| *c) => {}
    }
    RouteEnd::Drained
}

async fn read_loop<R: AsyncRead + Unpin>(
    cluster: &Arc<Cluster>,
    route: &Arc<Route>,
    reader: R,
) -> RouteEnd {
    let mut reader = FrameReader::new(reader, cluster.max_packet);
    let timeout = cluster.timings.heartbeat_timeout;
    // The number of the next MESSAGE frame; the peer sends SEQ before its first.
    let mut next_seq = route.link.received() + 1;
    loop {
        // A frame already buffered needs no read, and so no timer: arming one for every
        // frame cost a clock read and a timer entry per message (issue 16).
        let next = if reader.has_frame() {
            reader.next().await
        } else {
            match tokio::time::timeout(timeout, reader.next()).await {
                Err(_) => return RouteEnd::Silent(timeout),
                Ok(next) => next,
            }
        };
        let frame = match next {
            Err(error) => return error.into(),
            Ok(frame) => frame,
        };
        if matches!(frame, Frame::Message { .. }) {
            route.figures.in_msgs.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(end) = apply(cluster, route, frame, &mut next_seq) {
            return end;
        }
        route
            .figures
            .in_bytes
            .store(reader.bytes_read(), Ordering::Relaxed);
        if !reader.has_frame() {
            // The end of what the socket gave at once: one acknowledgement for the batch —
            // once what it wrote to this node's store is on disk, when there is one
            // (`storage.durability = "immediate"`), so an ack means stored here too.
            cluster.acknowledge_when_stored(route, route.link.received());
            // One batch per turn: on a node with one worker, a reader that went straight on
            // to the next read kept the acknowledgement and the subscribers' writers waiting
            // behind it, and the peer idle (cross-node QoS 0 +15%: docs/BENCHMARKS.md).
            tokio::task::yield_now().await;
        }
    }
}

/// Applies one frame from the peer. Every item in it is checked first, and an invalid one is
/// skipped, counted and logged (see [`super::validate`] for what is checked, and why an
/// invalid item does not close the route).
fn apply(
    cluster: &Arc<Cluster>,
    route: &Route,
    frame: Frame,
    next_seq: &mut u64,
) -> Result<(), RouteEnd> {
    let rules = &cluster.rules;
    let peer = route.peer.as_str();
    match frame {
        Frame::Ping => {
            route.pong_due.store(true, Ordering::Release);
            route.wake.notify_one();
        }
        Frame::Pong => {
            let figures = &route.figures;
            let sent = figures.ping_sent.load(Ordering::Acquire);
            if sent > 0 {
                let rtt = figures.micros().saturating_sub(sent);
                figures.rtt_us.store(rtt.max(1), Ordering::Relaxed);
            }
        }
        Frame::Interest(filter) => {
            if cluster.admit(peer, "INTEREST", rules.filter(&filter)) {
                route.change_interest(|interest| interest.add(&filter))?;
            }
        }
        Frame::NoInterest(filter) => {
            if cluster.admit(peer, "NO_INTEREST", rules.filter(&filter)) {
                route.change_interest(|interest| {
                    interest.remove(&filter);
                    Ok(())
                })?;
            }
        }
        Frame::Synced => route.synced(),
        Frame::Goodbye => route.link.leave(),
        Frame::SessionHeld {
            client_id,
            connected_at,
        } => {
            if cluster.admit(peer, "SESSION_HELD", rules.client_id(&client_id)) {
                cluster.session_held(route, &client_id, connected_at);
            }
        }
        Frame::Ask { id, question } => cluster.answer(route, id, &question),
        Frame::Answer { id, body } => {
            if body.len() > super::inspect::MAX_ANSWER || !cluster.answered(peer, id, body) {
                cluster.unwanted(peer, "ANSWER");
            }
        }
        Frame::SessionWanted {
            request,
            client_id,
            username,
        } => {
            if cluster.admit(peer, "SESSION_WANTED", rules.client_id(&client_id)) {
                cluster.hand_over(route, request, &client_id, username.as_deref());
            }
        }
        Frame::SessionNone(request) => cluster.session_none(peer, request),
        Frame::Session {
            request,
            inbound_qos2,
        } => {
            if !cluster.session_begins(peer, request, inbound_qos2) {
                cluster.unwanted(peer, "SESSION");
            }
        }
        Frame::SessionSubscription {
            request,
            subscription,
        } => {
            if cluster.admit(
                peer,
                "SESSION_SUBSCRIPTION",
                rules.filter(&subscription.filter),
            ) && !cluster.session_subscription(
                peer,
                request,
                subscription,
                &cluster.session_bounds,
            ) {
                cluster.unwanted(peer, "SESSION_SUBSCRIPTION");
            }
        }
        Frame::SessionMessage { request, message } => {
            if cluster.admit(peer, "SESSION_MESSAGE", rules.topic(&message.publish.topic))
                && !cluster.session_message(peer, request, *message, &cluster.session_bounds)
            {
                cluster.unwanted(peer, "SESSION_MESSAGE");
            }
        }
        Frame::SessionEnd(request) => cluster.session_ends(peer, request),
        Frame::Seq(seq) => *next_seq = seq,
        Frame::Ack(up_to) => route.link.acked(up_to),
        Frame::GroupWeight {
            group,
            filter,
            online,
            offline,
        } => {
            if cluster.admit(peer, "GROUP_WEIGHT", rules.group(&group, &filter)) {
                route.change_interest(|interest| {
                    interest.set_group(&group, &filter, Members { online, offline })
                })?;
            }
        }
        Frame::Message {
            plain,
            redirected,
            mut groups,
            version,
            publish,
        } => {
            let seq = *next_seq;
            // Saturating: a peer's SEQ may say anything, and wrapping would make what
            // follows look new again.
            *next_seq = seq.saturating_add(1);
            // A replayed message this node already took: acknowledged again, not delivered.
            if !route.link.take(seq) {
                return Ok(());
            }
            if cluster.admit(peer, "MESSAGE", rules.topic(&publish.topic))
                && cluster.admit(
                    peer,
                    "MESSAGE",
                    rules.version(publish.retain, version.as_ref()),
                )
            {
                groups.retain(|g| cluster.admit(peer, "MESSAGE", rules.group(&g.group, &g.filter)));
                cluster.deliver(publish, version, plain, &groups, redirected, route);
            }
        }
        Frame::Retained { version, publish } => {
            if cluster.admit(peer, "RETAINED", rules.topic(&publish.topic))
                && cluster.admit(peer, "RETAINED", rules.version(true, Some(&version)))
            {
                cluster.store_retained(publish, version);
            }
        }
        Frame::Peers(peers) => cluster.discover(peer, "PEERS", peers),
        Frame::ClientConnected {
            client_id,
            connected_at,
            clean_start,
        } => {
            if cluster.admit(peer, "CLIENT_CONNECTED", rules.client_id(&client_id)) {
                cluster.client_elsewhere(&client_id, peer, connected_at, clean_start);
            }
        }
        // The dialler refuses after the acceptor's last handshake frame, when the acceptor
        // already runs the route.
        Frame::Refused(why) => return Err(RouteEnd::Refused(super::validate::loggable(&why))),
        Frame::Info(_) => return Err(RouteEnd::Unexpected("INFO")),
        Frame::Challenge(_) => return Err(RouteEnd::Unexpected("CHALLENGE")),
        Frame::Proof(_) => return Err(RouteEnd::Unexpected("PROOF")),
    }
    Ok(())
}

async fn write_loop<W: AsyncWrite + Unpin>(
    cluster: &Cluster,
    route: &Route,
    writer: W,
) -> RouteEnd {
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    let heartbeat = cluster.timings.heartbeat;
    let ping = match Frame::Ping.encode() {
        Ok(ping) => ping,
        Err(error) => return RouteEnd::Write(std::io::Error::other(error)),
    };
    let pong = match Frame::Pong.encode() {
        Ok(pong) => pong,
        Err(error) => return RouteEnd::Write(std::io::Error::other(error)),
    };
    let figures = &route.figures;
    let max_hold = route.link.max_ack_hold();
    let mut acked = 0;
    // Since when an acknowledgement is held back, while the backlog paces the peer.
    let mut holding: Option<Instant> = None;
    loop {
        if route.pong_due.swap(false, Ordering::AcqRel) {
            if let Err(error) = writer.write_all(&pong).await {
                return error.into();
            }
            figures
                .out_bytes
                .fetch_add(pong.len() as u64, Ordering::Relaxed);
        }
        let due = route.ack_due.load(Ordering::Acquire);
        if due > acked && route.backlog.is_paced() {
            let since = *holding.get_or_insert_with(|| {
                figures.acks_held.fetch_add(1, Ordering::Relaxed);
                Instant::now()
            });
            if since.elapsed() >= max_hold {
                holding = None;
            }
        } else {
            holding = None;
        }
        if due > acked && holding.is_none() {
            match Frame::Ack(due).encode() {
                Ok(ack) => {
                    if let Err(error) = writer.write_all(&ack).await {
                        return error.into();
                    }
                    figures
                        .out_bytes
                        .fetch_add(ack.len() as u64, Ordering::Relaxed);
                }
                Err(error) => return RouteEnd::Write(std::io::Error::other(error)),
            }
            acked = due;
        }
        let frames = route.take();
        if frames.is_empty() {
            if !writer.buffer().is_empty() {
                if let Err(error) = writer.flush().await {
                    return error.into();
                }
                continue;
            }
            if route.draining.load(Ordering::Acquire) {
                // The peer keeps nothing for a node that shuts down: it is not coming back
                // as the same process.
                let bye = match Frame::Goodbye.encode() {
                    Ok(bye) => bye,
                    Err(error) => return RouteEnd::Write(std::io::Error::other(error)),
                };
                return match writer.write_all(&bye).await {
                    Ok(()) => match writer.shutdown().await {
                        Ok(()) => RouteEnd::Drained,
                        Err(error) => error.into(),
                    },
                    Err(error) => error.into(),
                };
            }
            // An acknowledgement held back goes once the backlog eases, or at the hold's end.
            let wait = holding.map_or(heartbeat, |since| {
                heartbeat.min(max_hold.saturating_sub(since.elapsed()))
            });
            let woken = async {
                tokio::select! {
                    () = route.wake.notified() => {}
                    () = route.backlog.eased(), if holding.is_some() => {}
                }
            };
            if tokio::time::timeout(wait, woken).await.is_err() && holding.is_none() {
                figures
                    .ping_sent
                    .store(figures.micros().max(1), Ordering::Release);
                if let Err(error) = writer.write_all(&ping).await.and(writer.flush().await) {
                    return error.into();
                }
                figures
                    .out_bytes
                    .fetch_add(ping.len() as u64, Ordering::Relaxed);
            }
            continue;
        }
        let mut written = 0;
        for frame in frames {
            if let Err(error) = writer.write_all(&frame).await {
                return error.into();
            }
            written += frame.len() as u64;
        }
        figures.out_bytes.fetch_add(written, Ordering::Relaxed);
        if let Err(error) = writer.flush().await {
            return error.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::link::LinkLimits;

    fn link() -> Arc<Link> {
        let limits = LinkLimits {
            replay_bytes: 1024,
            ack_timeout: Duration::from_secs(1),
            max_interest: 10,
            pace_bytes: 1024,
        };
        Link::new("peer".into(), 1, limits)
    }

    #[test]
    fn a_full_queue_drops_and_counts_messages_but_never_control_frames() {
        let route = Route::new(link(), "a:1".into(), true, 100, 10, 1024);
        assert!(route.send_message(Bytes::from(vec![0u8; 60])));
        assert!(!route.send_message(Bytes::from(vec![0u8; 60])));
        assert_eq!(route.dropped(), 1);
        route.send_control(&Frame::Interest("t".into()));
        assert_eq!(route.take().len(), 2, "the message and the control frame");
        assert!(
            route.send_message(Bytes::from(vec![0u8; 60])),
            "room after the writer took it"
        );
    }

    #[test]
    fn a_peer_that_lets_control_frames_pile_up_is_disconnected_not_queued_for_forever() {
        let route = Route::new(link(), "a:1".into(), true, 1024, 10, 1024);
        // The initial full set is bounded by this node's tables, not by the queue limit.
        route.send_initial(&Frame::Interest("x".repeat(2000)));
        assert!(!*route.closed.borrow());
        // Interest churn and client ids after it: bounded.
        let filter = "f".repeat(100);
        for i in 0..1000 {
            let frame = if i % 2 == 0 {
                Frame::Interest(filter.clone())
            } else {
                Frame::NoInterest(filter.clone())
            };
            route.send_control(&frame);
        }
        assert!(*route.closed.borrow(), "the route is closed");
        let queued: usize = route.take().iter().map(Bytes::len).sum();
        assert!(queued <= 2100 + 1024, "{queued} bytes queued");
    }
}
