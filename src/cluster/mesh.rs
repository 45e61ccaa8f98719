//! The mesh: accepting and dialling routes, keeping exactly one per peer, discovery, redial.
//!
//! - Seeds (`cluster.routes`) are dialled forever; peers learned by discovery (the peer list
//!   in a peer's INFO, and PEERS frames sent when a route registers) at most
//!   `cluster.discovered_redial_attempts` failed times in a row. Pauses double from
//!   `redial_min_ms` to `redial_max_ms`, with up to 50% jitter so restarted nodes do not
//!   dial in lockstep. While a route to the node at an address is up, its dial loop idles.
//! - Two nodes may dial each other at once. Both then hold two connections and keep the one
//!   dialled by the node with the smaller name (two connections dialled by the same node: the
//!   newer one, as the older is likely dead). Both sides compute the same answer.
//! - On registration a route gets our other peers' addresses and the full local interest, and
//!   the other peers are told its address; then the retained messages are streamed to it in
//!   chunks ([`super::sync`]), outside the locks publishes take. On its end, everything
//!   learned from it goes with it, and the stream stops. Nothing of that is sent before the
//!   peer proved the secret.
//! - With route TLS on ([`super::tls`]), a connection runs its TLS handshake before the route
//!   handshake, in the same pending place and within the same `heartbeat_timeout_ms` each; a
//!   TLS failure is logged with the peer's address like any refused handshake.
//! - Before a peer has proved the secret it costs a bounded amount: at most
//!   `cluster.max_pending_routes` handshakes run at once, each within
//!   `cluster.heartbeat_timeout_ms` and with frames of at most 64 KiB. When all places are
//!   taken, the oldest handshake is closed to make room for the new connection (counted in
//!   [`Cluster::pending_evicted`]), as for MQTT sockets without CONNECT: a peer's handshake
//!   takes a round trip or two, so the oldest is the one most likely never to finish, and a
//!   peer gets in unless that many newer connections arrive before its handshake is done.
//!   (Closing the newest instead let whoever held every place, retaking each as it timed out,
//!   keep every peer out.)

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::AsyncRead;
use tokio::io::AsyncWrite;
use tokio::net::{TcpListener, TcpStream};

use crate::broker::{PendingSet, Place};

use super::frame::{Frame, Info, MAGIC, MAX_INFO_PEERS_BYTES};
use super::handshake::{self, HandshakeError};
use super::link::Link;
use super::route::{self, Route, RouteEnd};
use super::{Cluster, State, validate};

/// Accepts routes until the node shuts down. At most `cluster.max_pending_routes` handshakes
/// run at once; a new connection closes the oldest of them when all places are taken, so
/// strangers on the route port hold a bounded number of tasks, sockets and handshake buffers.
pub async fn accept_loop(cluster: Arc<Cluster>, listener: TcpListener) {
    let mut closing = cluster.closing.subscribe();
    let pending = PendingSet::new(cluster.max_pending);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = closing.wait_for(|c| *c) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                let (place, evicted) = pending.enter();
                if evicted {
                    cluster.evicted();
                }
                tokio::spawn(Arc::clone(&cluster).accepted(stream, peer, place));
            }
            Err(error) => {
                tracing::warn!(%error, "route accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

impl Cluster {
    /// One accepted route connection: TLS (when on) and the route handshake while it holds a
    /// pending place, then the route. The two arms differ only in the stream's type: plain
    /// TCP keeps its lock-free halves, TLS shares one stream between two halves.
    async fn accepted(self: Arc<Self>, stream: TcpStream, peer: SocketAddr, mut place: Place) {
        let _ = stream.set_nodelay(true);
        match &self.tls {
            None => {
                let (reader, writer) = stream.into_split();
                self.handshake_and_run(peer, reader, writer, place).await;
            }
            Some(tls) => {
                let handshake = async {
                    // A node without route TLS starts with the magic where a ClientHello
                    // belongs: tell the operator that, rather than what rustls makes of it.
                    let mut first = [0u8; 1];
                    stream.peek(&mut first).await.map_err(HandshakeError::Tls)?;
                    if first[0] == MAGIC[0] {
                        return Err(HandshakeError::TlsMismatch(
                            "dialled without route TLS, which this node requires",
                        ));
                    }
                    tls.accept(stream).await.map_err(HandshakeError::Tls)
                };
                let timeout = self.timings.heartbeat_timeout;
                let stream = tokio::select! {
                    stream = tokio::time::timeout(timeout, handshake) => stream,
                    () = place.dismissed() => return,
                };
                let stream = match stream {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => return self.refused_handshake(peer, &error),
                    Err(_) => return self.refused_handshake(peer, &HandshakeError::Timeout),
                };
                let (reader, writer) = tokio::io::split(stream);
                self.handshake_and_run(peer, reader, writer, place).await;
            }
        }
    }

    /// The route handshake on an accepted connection, holding its pending place until done,
    /// then the route.
    async fn handshake_and_run<R, W>(
        self: Arc<Self>,
        peer: SocketAddr,
        mut reader: R,
        mut writer: W,
        mut place: Place,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let theirs = self
            .accept_handshake(peer, &mut reader, &mut writer, place.dismissed())
            .await;
        drop(place);
        if let Some(theirs) = theirs {
            self.run_route(theirs, false, reader, writer).await;
        }
    }

    /// The accepting side's route handshake, unless `dismissed` (to make room for a newer
    /// connection) first; the peer's INFO if it passed, `None` (logged) if not.
    async fn accept_handshake<R, W>(
        &self,
        peer: SocketAddr,
        reader: &mut R,
        writer: &mut W,
        dismissed: impl Future<Output = ()>,
    ) -> Option<Info>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mine = self.info_now();
        let timeout = self.timings.heartbeat_timeout;
        let handshake = tokio::select! {
            handshake = handshake::accept(reader, writer, &mine, &self.secret, timeout) => handshake,
            () = dismissed => return None,
        };
        match handshake {
            Ok(theirs) => Some(theirs),
            Err(HandshakeError::Myself) => {
                tracing::debug!(%peer, "route to this node itself closed");
                None
            }
            Err(error) => {
                self.refused_handshake(peer, &error);
                None
            }
        }
    }
}

/// What came of one dial.
enum Dialed {
    /// A route was up, and has now ended.
    Ran,
    /// The address is this node.
    Myself,
    Failed(HandshakeError),
}

impl Cluster {
    /// Our INFO with the current peer list, cut to fit a handshake frame. A peer that misses
    /// an address there still meets that node: it is told of the new peer and dials it.
    fn info_now(&self) -> Info {
        let mut info = self.info.clone();
        let mut budget = MAX_INFO_PEERS_BYTES;
        info.peers = self
            .state()
            .routes
            .values()
            .map(|r| r.advertise.clone())
            .take_while(|addr| match budget.checked_sub(2 + addr.len()) {
                Some(left) => {
                    budget = left;
                    true
                }
                None => false,
            })
            .collect();
        info
    }

    /// A route connection still in its handshake was closed to make room for a newer one
    /// (`cluster.max_pending_routes`): counted, and logged at most once a second.
    fn evicted(&self) {
        self.pending_evicted.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.logs.evicted.allow() {
            tracing::warn!(
                held_back,
                max = self.max_pending,
                "cluster.max_pending_routes handshakes under way: closed the oldest to make room"
            );
        }
    }

    /// A connection to the route port failed its handshake: logged at most once a second, as
    /// anyone who can reach the port can fail as many as they like.
    fn refused_handshake(&self, peer: SocketAddr, error: &HandshakeError) {
        if let Some(held_back) = self.logs.refused.allow() {
            tracing::warn!(%peer, %error, held_back, "route refused");
        }
    }

    /// Starts a dial loop for `addr` unless one runs already or it is this node.
    pub(super) fn start_dialing(self: &Arc<Self>, addr: String, seed: bool) {
        {
            let mut state = self.state();
            let myself = addr == self.info.advertise
                || state
                    .names
                    .get(&addr)
                    .is_some_and(|name| *name == self.node);
            if myself || state.dialing.contains(&addr) {
                return;
            }
            if state.dialing.len() >= self.max_peers {
                tracing::warn!(%addr, "not dialling: cluster.max_peers addresses already dialled");
                return;
            }
            state.dialing.insert(addr.clone());
        }
        tokio::spawn(Arc::clone(self).dial_loop(addr, seed));
    }

    /// Peer addresses learned from the peer `from`: dial the valid ones we have no route to,
    /// up to `cluster.max_peers` of them (`frame` names where they came from, for the log).
    pub(super) fn discover(self: &Arc<Self>, from: &str, frame: &'static str, peers: Vec<String>) {
        self.admit(from, frame, self.rules.peer_count(peers.len()));
        for addr in peers.into_iter().take(self.max_peers) {
            if self.admit(from, frame, validate::peer_address(&addr)) && !self.connected_to(&addr) {
                self.start_dialing(addr, false);
            }
        }
    }

    /// True if the node last seen at `addr` has a route.
    fn connected_to(&self, addr: &str) -> bool {
        let state = self.state();
        state
            .names
            .get(addr)
            .is_some_and(|name| state.routes.contains_key(name))
    }

    async fn dial_loop(self: Arc<Self>, addr: String, seed: bool) {
        let t = &self.timings;
        let mut pause = t.redial_min;
        let mut failures = 0u32;
        loop {
            while self.connected_to(&addr) {
                if !self.sleep(t.heartbeat).await {
                    break;
                }
            }
            if *self.closing.borrow() {
                break;
            }
            match self.dial(&addr).await {
                Dialed::Ran => {
                    failures = 0;
                    pause = t.redial_min;
                }
                Dialed::Myself => {
                    tracing::info!(%addr, "route address is this node; not dialling it");
                    self.state().names.insert(addr.clone(), self.node.clone());
                    break;
                }
                Dialed::Failed(error) => {
                    failures = failures.saturating_add(1);
                    if failures == 1 || failures.is_power_of_two() {
                        tracing::warn!(%addr, %error, failures, "cannot establish route");
                    }
                    if !seed && failures >= t.discovered_attempts {
                        tracing::info!(%addr, failures, "giving up on discovered peer (cluster.discovered_redial_attempts)");
                        break;
                    }
                }
            }
            let jitter = rand::random_range(0.0..0.5);
            if !self.sleep(pause.mul_f64(1.0 + jitter)).await {
                break;
            }
            pause = (pause * 2).min(t.redial_max);
        }
        self.state().dialing.remove(&addr);
    }

    /// Sleeps for `pause`; false if the node began shutting down meanwhile.
    async fn sleep(&self, pause: Duration) -> bool {
        let mut closing = self.closing.subscribe();
        tokio::select! {
            () = tokio::time::sleep(pause) => !*self.closing.borrow(),
            _ = closing.wait_for(|c| *c) => false,
        }
    }

    async fn dial(self: &Arc<Self>, addr: &str) -> Dialed {
        let connect =
            tokio::time::timeout(self.timings.heartbeat_timeout, TcpStream::connect(addr));
        let stream = match connect.await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => return Dialed::Failed(HandshakeError::Frame(error.into())),
            Err(_) => return Dialed::Failed(HandshakeError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            let (reader, writer) = stream.into_split();
            return self.dial_handshake(addr, reader, writer).await;
        };
        match tokio::time::timeout(self.timings.heartbeat_timeout, tls.connect(addr, stream)).await
        {
            Ok(Ok(stream)) => {
                let (reader, writer) = tokio::io::split(stream);
                self.dial_handshake(addr, reader, writer).await
            }
            Ok(Err(error)) => Dialed::Failed(HandshakeError::Tls(error)),
            Err(_) => Dialed::Failed(HandshakeError::Timeout),
        }
    }

    /// The dialling side's route handshake on a connected stream, and the route if it passed.
    async fn dial_handshake<R, W>(
        self: &Arc<Self>,
        addr: &str,
        mut reader: R,
        mut writer: W,
    ) -> Dialed
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        // Our INFO goes out before the peer has proved the secret: it carries our name, the
        // cluster's and our route address, but not our peer list, which the peer gets in a
        // PEERS frame once the route is registered.
        let mine = Info {
            peers: Vec::new(),
            ..self.info.clone()
        };
        match handshake::dial(
            &mut reader,
            &mut writer,
            &mine,
            &self.secret,
            self.timings.heartbeat_timeout,
        )
        .await
        {
            Ok(theirs) => {
                self.state()
                    .names
                    .insert(addr.to_string(), theirs.node.clone());
                self.run_route(theirs, true, reader, writer).await;
                Dialed::Ran
            }
            Err(HandshakeError::Myself) => Dialed::Myself,
            Err(error) => Dialed::Failed(error),
        }
    }

    /// Registers a route whose handshake succeeded, runs it to its end, and unregisters it.
    pub(super) async fn run_route<R, W>(
        self: &Arc<Self>,
        theirs: Info,
        outbound: bool,
        reader: R,
        writer: W,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let route = match self.register(&theirs, outbound) {
            Ok(route) => route,
            Err(why) => {
                tracing::info!(peer = %theirs.node, why, "route not kept");
                return;
            }
        };
        tracing::info!(peer = %route.peer, advertise = %route.advertise, outbound, "route up");
        self.discover(&theirs.node, "INFO", theirs.peers);
        self.announce_restored(&route);
        // The retained messages follow the initial set, streamed beside live traffic.
        let sync = tokio::spawn(Arc::clone(self).stream_retained(Arc::clone(&route)));
        let end = route::run(self, &route, reader, writer).await;
        sync.abort();
        self.unregister(&route);
        match end {
            // Ended on purpose by this node: nothing for an operator to look into.
            RouteEnd::Closed | RouteEnd::Drained => {
                tracing::info!(peer = %route.peer, reason = %end, "route down");
            }
            _ => tracing::warn!(peer = %route.peer, reason = %end, "route down"),
        }
    }

    /// Registers the route of a peer whose handshake succeeded: on the peer's link (a new
    /// one if the peer is new or restarted), with the initial set queued and then whatever
    /// the link kept for the peer.
    fn register(&self, theirs: &Info, outbound: bool) -> Result<Arc<Route>, String> {
        if self.broker.strong_count() == 0 {
            return Err("broker gone".into());
        }
        let mut state = self.state();
        if *self.closing.borrow() {
            return Err("this node is shutting down".into());
        }
        let peer = theirs.node.as_str();
        let existing = state.routes.get(peer).cloned();
        if let Some(existing) = &existing
            && !self.keep_new(existing, peer, outbound)
        {
            return Err(
                "duplicate route; keeping the one dialled by the node with the smaller name".into(),
            );
        }
        let link = match state.links.get(peer) {
            Some(link) if link.epoch == theirs.epoch => Arc::clone(link),
            known => {
                if known.is_none() && state.links.len() >= self.max_peers {
                    return Err(format!("cluster.max_peers ({}) reached", self.max_peers));
                }
                if let Some(old) = state.links.remove(peer) {
                    tracing::info!(
                        peer,
                        "peer restarted (new epoch): what was kept for it is given up"
                    );
                    old.fail_all();
                }
                let link = Link::new(peer.to_string(), theirs.epoch, self.link_limits);
                state.links.insert(peer.to_string(), Arc::clone(&link));
                link
            }
        };
        if let Some(existing) = existing {
            existing.close();
        }
        let route = Route::new(
            link,
            theirs.advertise.clone(),
            outbound,
            self.route_queue_bytes,
            self.link_limits.max_interest,
            self.route_backlog_bytes,
        );
        let announce = Frame::Peers(vec![route.advertise.clone()]);
        let mut others = Vec::new();
        for other in state.routes.values().filter(|r| r.peer != route.peer) {
            other.send_control(&announce);
            others.push(other.advertise.clone());
        }
        // The new peer learns ours here rather than from a dialler's INFO, which goes out
        // before the peer proved anything; a few per frame keeps each frame small.
        for chunk in others.chunks(16) {
            route.send_initial(&Frame::Peers(chunk.to_vec()));
        }
        for filter in &state.local {
            route.send_initial(&Frame::Interest(filter.clone()));
        }
        for ((group, filter), members) in &state.local_groups {
            route.send_initial(&Frame::GroupWeight {
                group: group.clone(),
                filter: filter.clone(),
                online: members.online,
                offline: members.offline,
            });
        }
        route.send_initial(&Frame::Synced);
        // Under the state lock: no interest change, and under the link's lock no message,
        // can come between the initial set, the replay and what follows.
        route.link.attach(&route);
        state
            .names
            .insert(route.advertise.clone(), route.peer.clone());
        state.routes.insert(route.peer.clone(), Arc::clone(&route));
        if state.names.len() > 4 * self.max_peers {
            // Addresses of nodes long gone: keep only those of live routes and dial loops.
            let State {
                names,
                routes,
                dialing,
                ..
            } = &mut *state;
            names.retain(|addr, name| routes.contains_key(name) || dialing.contains(addr));
        }
        self.publish_links(&state);
        Ok(route)
    }

    /// The route ended: its link keeps the peer's interest and messages for the grace period
    /// ([`Cluster::expire_links`] ends it).
    fn unregister(&self, route: &Route) {
        let mut state = self.state();
        route.link.detach(route);
        if state
            .routes
            .get(&route.peer)
            .is_some_and(|r| r.id() == route.id())
        {
            state.routes.remove(&route.peer);
            if route.link.is_leaving()
                && state
                    .links
                    .get(&route.peer)
                    .is_some_and(|l| l.id() == route.link.id())
            {
                state.links.remove(&route.peer);
                self.publish_links(&state);
                tracing::info!(peer = %route.peer, "peer shut down; nothing is kept for it");
                route.link.fail_all();
            }
            drop(state);
            self.handovers_lost(&route.peer);
        }
    }

    /// Rebuilds the publish path's link list (under the state lock, so it never goes back).
    pub(super) fn publish_links(&self, state: &State) {
        let list = state.links.values().cloned().collect();
        *self
            .links
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = list;
    }

    /// The duplicate rule: keep the connection dialled by the node with the smaller name;
    /// between two dialled by the same node, the newer.
    fn keep_new(&self, existing: &Route, peer: &str, outbound: bool) -> bool {
        let winner = self.node.as_str().min(peer);
        let dialed_by_winner = |outbound: bool| {
            let dialer = if outbound { self.node.as_str() } else { peer };
            dialer == winner
        };
        !dialed_by_winner(existing.outbound) || dialed_by_winner(outbound)
    }
}
