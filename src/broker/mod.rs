//! The single-node broker: sessions, the subscription index, retained messages and wills.
//!
//! [`Broker`] is the state shared by all connections; [`serve`] runs one client connection
//! against it. How the parts fit:
//! - `admission` takes sockets on and counts them (`pending`: those without CONNECT yet, a
//!   bounded set the cluster uses for its route handshakes too; `per_ip`: limits per client
//!   address; `log_limit`: log lines a flood cannot flood, the cluster's too);
//! - `connection` reads packets, drives the session, and writes packets back; `inbound` is
//!   what each packet from a client does;
//! - `session` is what the broker remembers about a client (subscriptions, queue, in-flight);
//!   `queue` is its bounded queue, and `flow` what a full one does to the messages that meet
//!   it (a local publisher waits, a route never does, a slow session is cut off);
//!   `unreleased` the inbound QoS 2 ids it must remember;
//! - `registry` is the table of sessions by client id (takeover, resumption, wills), and
//!   `expiry` the one table of disconnected sessions waiting to end or to send their Will;
//!   `handover` moves a session between nodes when its client connects to another;
//! - `router` is the subscription trie that finds the subscribers of a topic (`branches`: the
//!   branches below one of its nodes, shared with the cluster's trie of a peer's interest);
//!   `groups` parses consumer group filters and chooses the member that gets each message, here
//!   or on a peer;
//! - `peers` is the interface to the other nodes of a cluster ([`Peers`]), which the broker
//!   defines and the cluster implements: the broker never names the cluster
//!   (docs/ARCHITECTURE.md, "The broker and the cluster");
//! - `retained` keeps the last retained message per topic, in a trie of its own, with the
//!   tombstones of recent clears; `version` is the hybrid logical clock that versions every
//!   retained set and clear so the nodes of a cluster converge on the newest;
//! - `admin` is what the admin API reads from the broker and does to it;
//! - `message` is a publication shared by all its deliveries; `outbox` hands a connection's
//!   answers to its writer; `taps` show passing messages to the admin API's viewer;
//!   `aliases` are the topic aliases towards one client; `keepalive`
//!   closes silent connections, all from one task; `stats` counts what happened, and `sys`
//!   publishes the main figures as the `$SYS/broker/` tree, for this node only.
//!
//! Locks: see docs/ARCHITECTURE.md, Lock order.

mod admin;
mod admission;
mod aliases;
mod branches;
mod connect;
mod connection;
mod expiry;
mod flow;
mod groups;
mod handover;
mod idle;
mod inbound;
mod keepalive;
mod log_limit;
mod message;
mod outbox;
mod peers;
mod pending;
mod per_ip;
mod persist;
mod queue;
mod registry;
mod restore;
mod retained;
mod router;
mod session;
mod stats;
mod sys;
mod taps;
mod unreleased;
mod version;

use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use tokio::sync::watch;

use crate::auth::Auth;
use crate::config::Limits;
use crate::protocol::{Publish, SubscriptionOptions, reason};

pub use admin::{ClientInfo, RetainedInfo, SubscriptionInfo};
pub use admission::{Arrival, Counted};
pub(crate) use branches::Branches;
pub(crate) use connect::{is_sys_topic, within_limits};
pub use connection::serve;
pub use expiry::run as expire_sessions;
pub(crate) use flow::Backlog;
pub use flow::{Claim, Forward, Waiter};
pub use groups::GroupRef;
pub use handover::{Fetched, MovedMessage, MovedSubscription, SessionImage};
pub use idle::watch as watch_idle_connections;
pub use keepalive::sweep as keep_alive_sweep;
pub(crate) use log_limit::LogLimit;
pub use peers::{Assigned, PeerId, Peers, RemoteGroup};
pub(crate) use pending::{PendingSet, Place};
pub use restore::Restored;
pub use stats::{Counter, Stats};
pub use sys::run as publish_sys_tree;
pub use taps::{MAX_TAPS, TAP_CAPACITY, TapReader, Tapped};

pub use message::Message;
pub use version::{LOGICAL_BITS, Version, wall as wall_clock};

use flow::Bounds;
use groups::{Filter, Pick, Strategy, pick_among, pick_member, take_remote};
use message::Delivery;
use persist::Persist;
use retained::{Retained, Stored};
use router::{Group, Match, Router};
use session::{Offer, Sender, SessionHandle};
use taps::Taps;

/// Where a published message went.
#[derive(Default)]
struct Routed {
    /// Sessions with a matching subscription.
    matched: usize,
    /// Sessions whose queue was full, where a delivery is parked for the publisher to wait on.
    parked: Vec<Arc<SessionHandle>>,
    /// The retained message was written to the store: in `immediate` mode the publisher's
    /// ack waits for the disk. (A persistent session's copy holds the ack itself.)
    stored: bool,
}

/// Tells the other nodes how local interest in `filter` stands after a change: a plain
/// filter's first or last subscriber, or a group's member count.
fn report_interest(peers: &dyn Peers, router: &Router, filter: &str) {
    match groups::parse(filter) {
        Ok(Filter::Group { group, filter }) => {
            let (online, offline) = router.group_members(group, filter);
            let group = GroupRef {
                group: group.to_string(),
                filter: filter.to_string(),
            };
            peers.local_group(&group, online, offline);
        }
        _ => {
            let count = router.filter_count(filter);
            if count <= 1 {
                peers.local_interest(filter, count == 1);
            }
        }
    }
}

/// The name of a group, as a delivery (and a forwarded message) carries it.
fn group_ref(group: &Group) -> Arc<GroupRef> {
    Arc::new(GroupRef {
        group: group.name.to_string(),
        filter: group.filter.to_string(),
    })
}

/// The state shared by every connection of one broker.
pub struct Broker {
    limits: Limits,
    /// Every session queue's bounds, from `limits`.
    bounds: Bounds,
    router: RwLock<Router>,
    retained: RwLock<Retained>,
    sessions: Mutex<HashMap<Arc<str>, Arc<SessionHandle>>>,
    /// Sockets open, pending and connected, and the limits on them.
    admission: admission::Admission,
    shutdown: watch::Sender<bool>,
    /// The ticks that keep alive is counted in.
    clock: keepalive::Clock,
    /// Disconnected sessions waiting to expire or to publish their Will.
    expiry: expiry::Expiry,
    /// The connected clients, for keep alive.
    online: keepalive::Online,
    /// The connections at rest, without a task ([`idle`]).
    idle: idle::Idle,
    /// Sessions keeping messages waiting for room, for the same sweep to time out.
    waits: flow::Waits,
    stats: Stats,
    /// The admin API's live message viewers ([`taps`]).
    taps: Taps,
    /// The other nodes, set once when the node is part of a cluster ([`Peers`]); a
    /// standalone broker pays one atomic load per publish and subscription change for it.
    peers: OnceLock<Arc<dyn Peers>>,
    /// How consumer groups pick a member (`cluster.group_strategy`).
    strategy: Strategy,
    /// Round-robin position for groups with members on other nodes only.
    remote_turn: AtomicUsize,
    /// Who may connect, publish, subscribe and receive (`[auth]`).
    auth: Auth,
    /// Versions retained sets and clears; stepped only for retained messages.
    hlc: version::Hlc,
    /// This node's name in the versions it makes (set once when it joins a cluster).
    node: OnceLock<Arc<str>>,
    /// The `$SYS` tree as last published, apart from the clients' retained messages.
    sys: sys::Sys,
    /// The store, when `storage.dir` is set ([`persist`]); set once, at start-up.
    persist: OnceLock<Arc<Persist>>,
}

impl Broker {
    pub fn new(limits: Limits) -> Arc<Broker> {
        Broker::with_group_strategy(limits, "random")
    }

    /// A broker whose consumer groups use the named strategy (`cluster.group_strategy`).
    pub fn with_group_strategy(limits: Limits, strategy: &str) -> Arc<Broker> {
        Broker::with_auth(limits, strategy, Auth::default())
    }

    /// A broker with its group strategy and the authentication and ACL rules of `[auth]`.
    pub fn with_auth(limits: Limits, strategy: &str, auth: Auth) -> Arc<Broker> {
        Arc::new(Broker {
            auth,
            strategy: Strategy::from_name(strategy),
            router: RwLock::new(Router::default()),
            retained: RwLock::new(Retained::new(
                limits.max_retained_messages,
                limits.max_retained_bytes,
            )),
            sessions: Mutex::new(HashMap::new()),
            admission: admission::Admission::new(&limits),
            shutdown: watch::channel(false).0,
            clock: keepalive::Clock::new(),
            expiry: expiry::Expiry::default(),
            online: keepalive::Online::default(),
            idle: idle::Idle::default(),
            waits: flow::Waits::default(),
            stats: Stats::default(),
            taps: Taps::default(),
            peers: OnceLock::new(),
            remote_turn: AtomicUsize::new(0),
            hlc: version::Hlc::default(),
            node: OnceLock::new(),
            sys: sys::Sys::default(),
            persist: OnceLock::new(),
            bounds: Bounds::from_limits(&limits),
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The authentication and ACL rules in force, to reload on SIGHUP.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Connections resting without a task ([`idle`]): connected, and quiet for a while.
    pub fn resting_count(&self) -> usize {
        self.idle.resting()
    }

    /// Sessions known, connected or not.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Disconnected sessions waiting to expire or to publish a delayed Will.
    pub fn expiring_count(&self) -> usize {
        self.expiry.len()
    }

    /// Subscriptions in the index.
    pub fn subscription_count(&self) -> usize {
        self.router().len()
    }

    /// Retained messages stored (the `$SYS` tree, kept apart, is not counted).
    pub fn retained_count(&self) -> usize {
        self.retained_store().len()
    }

    /// Tells every connection to close: MQTT 5 clients get DISCONNECT 0x8B first. Connections
    /// still waiting for CONNECT watch the flag; connected ones are told through their outbox
    /// (and `open_session` tells the ones that connect after this).
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
        for handle in self.sessions().values() {
            if let Some(outbox) = handle.lock().outbox() {
                outbox.close(reason::SERVER_SHUTTING_DOWN, "server shutting down");
            }
        }
    }

    /// Makes this broker a cluster node (once; later calls are ignored).
    pub fn attach_peers(&self, peers: Arc<dyn Peers>) {
        let _ = self.peers.set(peers);
    }

    /// Versions this node's retained sets and clears with its node name, and keeps the
    /// tombstone of a clear for `tombstone_period` (`cluster.retained_tombstone_secs`), so a
    /// peer's older message cannot come back. Called once, when the node joins a cluster,
    /// before anything is published.
    pub fn version_retained(&self, node: &str, tombstone_period: std::time::Duration) {
        if self.node.set(node.into()).is_err() {
            tracing::warn!(node, "retained versions already carry a node name");
        }
        self.retained_store_mut()
            .set_tombstone_period(tombstone_period);
    }

    /// A fresh version for a local retained set or clear: one step of the clock.
    fn next_version(&self) -> Version {
        Version {
            hlc: self.hlc.now(),
            node: Arc::clone(self.node.get_or_init(|| Arc::from(""))),
        }
    }

    /// The store's counters, when the node has one (`storage.dir`).
    pub fn store_figures(&self) -> Option<&crate::store::Figures> {
        self.persist.get().map(|persist| persist.store().figures())
    }

    /// Tells `waiter` once everything written so far is on disk: through the store's next
    /// commit with `storage.durability = "immediate"`, at once otherwise (no store, or
    /// `batched`, where nobody waits for the disk).
    pub fn when_stored(&self, waiter: Box<dyn crate::store::Durable>) {
        match self.persist.get().filter(|persist| persist.immediate()) {
            Some(persist) => persist.store().sync(waiter),
            None => waiter.done(true),
        }
    }

    /// True while the store cannot be written to.
    pub fn store_failing(&self) -> bool {
        self.persist
            .get()
            .is_some_and(|persist| persist.store().is_failing())
    }

    /// Tombstones of retained clears kept (cluster only).
    pub fn retained_tombstone_count(&self) -> usize {
        self.retained_store().tombstone_count()
    }

    /// True once the broker is part of a cluster.
    pub fn is_clustered(&self) -> bool {
        self.peers.get().is_some()
    }

    /// Routes a message to every matching session and to one member of each matching
    /// consumer group and, if it is retained, stores it. A message from a local client also
    /// goes to the nodes with matching interest, and group members may be chosen there.
    /// Sessions where a delivery was parked come back in [`Routed::parked`].
    fn publish(&self, mut message: Message, sender: Sender<'_>) -> Routed {
        if message.retain {
            message.version = Some(self.next_version());
        }
        let message = Arc::new(message);
        let mut routed = Routed::default();
        if message.retain {
            routed.stored = self.retain(&message);
        }
        self.tapped(&message);
        let peers = self.peers.get();
        let mut remote = peers.map_or_else(Vec::new, |p| p.remote_groups(&message.topic));
        let mut assigned = Vec::new();
        // One read of the router for plain subscribers and group members; a node without
        // groups does not even walk the trie for them.
        let (matches, chosen) = {
            let router = self.router();
            let matches = router.matches(&message.topic, message.origin);
            let mut chosen = Vec::new();
            if router.has_groups() {
                for group in router.group_matches(&message.topic) {
                    let elsewhere = take_remote(&mut remote, &group.name, &group.filter);
                    let pick = pick_member(
                        self.strategy,
                        Some(group),
                        0,
                        elsewhere.as_ref(),
                        &group.turn,
                    );
                    match (pick, elsewhere) {
                        (Pick::Local(m), _) => chosen.push((m, group_ref(group))),
                        (Pick::Peer(peer), Some(remote)) => assigned.push(Assigned {
                            peer,
                            group: remote.group,
                        }),
                        _ => {}
                    }
                }
            }
            (matches, chosen)
        };
        for m in matches {
            self.offer(&message, m, None, sender, &mut routed);
        }
        for (m, key) in chosen {
            self.offer(&message, m, Some(key), sender, &mut routed);
        }
        if let Some(peers) = peers {
            // Groups with members only on other nodes.
            assigned.extend(remote.iter().filter_map(|r| self.choose_peer(r)));
            let publisher = match sender {
                Sender::Publisher(waiter) => Some(waiter),
                _ => None,
            };
            // A node's `$SYS` tree is its own, published apart (`sys`); and no client, Will
            // or peer may publish to `$SYS`.
            debug_assert!(
                !is_sys_topic(&message.topic),
                "$SYS never goes to the peers"
            );
            routed.matched += peers.forward(&message, &assigned, publisher);
        }
        routed
    }

    /// The peer that gets a message of `remote`, a group with no member on this node.
    fn choose_peer(&self, remote: &RemoteGroup) -> Option<Assigned> {
        match pick_member(self.strategy, None, 0, Some(remote), &self.remote_turn) {
            Pick::Peer(peer) => Some(Assigned {
                peer,
                group: remote.group.clone(),
            }),
            Pick::Local(_) | Pick::Nobody => None,
        }
    }

    /// Offers `message` to the matched session; a parked delivery goes into `routed.parked`.
    fn offer(
        &self,
        message: &Arc<Message>,
        m: Match,
        group: Option<Arc<GroupRef>>,
        sender: Sender<'_>,
        routed: &mut Routed,
    ) {
        if !self.auth.may_read(m.session.access(), &message.topic) {
            // Granted when it subscribed, but the ACL has changed since (or the filter
            // covers topics a deny rule keeps from it).
            self.stats.deliveries_denied.inc();
            return;
        }
        let delivery = Delivery {
            message: Arc::clone(message),
            qos: m.qos.min(message.qos),
            // MQTT-3.3.1-12/13: RETAIN is cleared on normal delivery unless the
            // subscription asked for Retain As Published.
            retain: message.retain && m.retain_as_published,
            subscription_ids: m.subscription_ids,
            group,
            stored: None,
        };
        routed.matched += 1;
        self.stats.messages_routed.inc();
        if let Offer::Parked { began } =
            m.session.offer(delivery, sender, &self.bounds, &self.stats)
        {
            if began {
                self.waits.began(&m.session);
            }
            routed.parked.push(m.session);
        }
    }

    /// Gives a group's message to a local member other than the session `except`; when
    /// there is none and `may_redirect`, to a member on another node (the one exception to
    /// the one-hop rule, so a QoS 1/2 message is not lost because its chosen node's members
    /// left). Returns false if nobody could take it.
    fn serve_group(
        &self,
        message: &Arc<Message>,
        key: &GroupRef,
        except: u64,
        may_redirect: bool,
        sender: Sender<'_>,
        routed: &mut Routed,
    ) -> bool {
        // The node chosen for the message serves it itself when it can: a connected member
        // here; else (if it may go on) a connected one elsewhere; else an offline member here;
        // else an offline one elsewhere.
        let remote = match self.peers.get() {
            Some(peers) if may_redirect => peers
                .remote_groups(&message.topic)
                .into_iter()
                .find(|remote| remote.group == *key),
            _ => None,
        };
        let mut pick = Pick::Nobody;
        for online in [true, false] {
            pick = {
                let router = self.router();
                let group = router.group(&key.group, &key.filter);
                let turn = group.map_or(&self.remote_turn, |g| &g.turn);
                match pick_among(self.strategy, group, except, None, turn, online) {
                    Pick::Nobody => {
                        pick_among(self.strategy, None, 0, remote.as_ref(), turn, online)
                    }
                    local => local,
                }
            };
            if !matches!(pick, Pick::Nobody) {
                break;
            }
        }
        match pick {
            Pick::Local(m) => {
                self.offer(message, m, Some(Arc::new(key.clone())), sender, routed);
                true
            }
            Pick::Peer(peer) => {
                // `$SYS` updates go to group members without their group (`sys`).
                debug_assert!(
                    !is_sys_topic(&message.topic),
                    "$SYS never goes to the peers"
                );
                self.peers
                    .get()
                    .is_some_and(|peers| peers.redirect(message, key, peer))
            }
            Pick::Nobody => false,
        }
    }

    /// Adds `session`'s subscription to `filter` to the router, telling the cluster when the
    /// filter gets its first local subscriber (or a group's member count changes). Returns
    /// true if the subscription is new.
    fn subscribe_filter(
        &self,
        filter: &str,
        session: &Arc<SessionHandle>,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        let mut router = self.router_mut();
        let new = router.subscribe(filter, session, options, id);
        if new && let Some(peers) = self.peers.get() {
            report_interest(peers.as_ref(), &router, filter);
        }
        new
    }

    /// Removes `session_id`'s subscriptions to `filters`, telling the cluster about filters
    /// left without local subscribers and group member counts.
    fn unsubscribe_filters<'f>(&self, filters: impl IntoIterator<Item = &'f str>, session_id: u64) {
        let mut router = self.router_mut();
        for filter in filters {
            if router.unsubscribe(filter, session_id)
                && let Some(peers) = self.peers.get()
            {
                report_interest(peers.as_ref(), &router, filter);
            }
        }
    }

    /// A message another node forwarded: delivered to local plain subscribers if `plain`,
    /// and to a local member of each group in `groups`; never forwarded again, except a
    /// group message whose members here are gone (`redirected` says it already was).
    /// Never waits: a full queue parks the message on the route's `backlog` ([`flow`]). A
    /// retained one (with its `version`) is stored only if newer than what the store has for
    /// its topic; it is delivered either way.
    pub(crate) fn deliver_from_route(
        &self,
        publish: Publish,
        version: Option<Version>,
        plain: bool,
        groups: &[GroupRef],
        redirected: bool,
        backlog: &Arc<Backlog>,
    ) {
        let message = Arc::new(self.versioned(Message::from_route(publish), version));
        if message.retain {
            // Nobody waits for a route's message to be on disk: it is the publisher's node
            // that answers the publisher.
            self.retain(&message);
        }
        self.tapped(&message);
        let sender = Sender::Route(backlog);
        let mut routed = Routed::default();
        if plain {
            let matches = self.router().matches(&message.topic, message.origin);
            for m in matches {
                self.offer(&message, m, None, sender, &mut routed);
            }
        }
        for key in groups {
            if !self.serve_group(&message, key, 0, !redirected, sender, &mut routed) {
                self.stats.dropped_no_group_member.inc();
                tracing::debug!(group = %key.group, filter = %key.filter, "group message with no member left; dropped");
            }
        }
    }

    /// A member left with group messages it had not acknowledged (or not yet received): they
    /// go to another member, here or on another node. Nobody waits for them, so a full queue
    /// drops them (counted).
    pub(super) fn redispatch(&self, deliveries: Vec<Delivery>, except: u64) {
        let mut routed = Routed::default();
        for delivery in deliveries {
            if let Some(key) = &delivery.group
                && !self.serve_group(
                    &delivery.message,
                    key,
                    except,
                    true,
                    Sender::Broker,
                    &mut routed,
                )
            {
                self.stats.dropped_no_group_member.inc();
            }
        }
    }

    /// A retained message or clear (empty payload) a peer holds, sent when the route opened:
    /// applied only if its version is newer than this node's message or tombstone for the
    /// topic. Never delivered.
    pub(crate) fn retained_from_route(&self, publish: Publish, version: Version) {
        let mut message = self.versioned(Message::from_route(publish), Some(version));
        message.retain = true;
        self.retain(&Arc::new(message));
    }

    /// A message from a peer with its version, which the clock takes in.
    fn versioned(&self, mut message: Message, version: Option<Version>) -> Message {
        if let Some(version) = version {
            self.hlc.merge(version.hlc);
            message.version = Some(version);
        }
        message
    }

    /// The topics with a retained message now: the cursor of the retained stream to a peer
    /// that just joined ([`Broker::retained_for_peer`] fetches their messages).
    pub(crate) fn retained_topics(&self) -> Vec<Box<str>> {
        self.retained_store().topics()
    }

    /// The current retained messages and clears of the first of `topics` (messages still
    /// retained and not expired, tombstones within their period; as many topics as fit in
    /// `max_bytes` of topic and payload, at least one), as PUBLISH packets with their versions
    /// for a peer that just joined (a clear as an empty retained PUBLISH), handed to `send`
    /// **under the store's read lock**: a retained publish or clearing stores before it is forwarded, so whatever
    /// `send` queues is on the route ahead of any later change to these topics, and a peer
    /// never gets an older copy after a newer one. Returns how many topics were read.
    pub(crate) fn retained_for_peer(
        &self,
        topics: &[Box<str>],
        max_bytes: usize,
        send: impl FnOnce(Vec<(Publish, Version)>),
    ) -> usize {
        let now = std::time::Instant::now();
        let unversioned = || Version {
            hlc: 0,
            node: Arc::clone(self.node.get_or_init(|| Arc::from(""))),
        };
        let store = self.retained_store();
        let mut found = Vec::new();
        let mut bytes = 0;
        let mut read = 0;
        for topic in topics {
            if bytes >= max_bytes {
                break;
            }
            read += 1;
            if let Some(m) = store.get(topic).filter(|m| !m.is_expired(now)) {
                bytes += m.topic.len() + m.payload.len();
                let version = m.version.clone().unwrap_or_else(unversioned);
                found.push((m.to_publish(now), version));
            } else if let Some(version) = store.tombstone(topic) {
                bytes += topic.len();
                let clear = Publish {
                    retain: true,
                    topic: topic.to_string(),
                    ..Publish::default()
                };
                found.push((clear, version));
            }
        }
        send(found);
        read
    }

    /// A client with this id connected to `peer`: client ids are unique cluster-wide, so a
    /// connection here with the same id is closed ("session taken over"). The session itself
    /// stays here until it expires.
    ///
    /// Client ids are unique cluster-wide even when one client id connects to two nodes at
    /// once: each node tells the other, and each keeps the newer of the two connections by
    /// the same rule — `newer(stamp of ours)`, which the cluster computes on (connect time,
    /// node name) pairs, the same on both nodes — so exactly one survives.
    pub(crate) fn client_connected_elsewhere(
        &self,
        client_id: &str,
        peer: &str,
        clean_start: bool,
        newer: impl FnOnce(u64) -> bool,
    ) {
        let mut sessions = self.sessions();
        let Some(handle) = sessions.get(client_id).cloned() else {
            return;
        };
        let session = handle.lock();
        if let Some(outbox) = session.outbox() {
            if !newer(session.connected_at()) {
                tracing::info!(
                    client_id,
                    peer,
                    "the same client id connected to another node earlier; keeping this connection"
                );
                return;
            }
            tracing::info!(
                client_id,
                peer,
                "client connected to another node; closing it here"
            );
            outbox.close(
                reason::SESSION_TAKEN_OVER,
                "the client connected to another node",
            );
        }
        if !clean_start {
            // A resuming client took its session with it (`handover`); none is left here
            // unless that node could not ask this one, and then this one is kept.
            return;
        }
        // MQTT-3.1.2-4: a clean start discards the client's session, wherever it was.
        drop(session);
        sessions.remove(client_id);
        let waiting_will = self.expiry.cancel(handle.id());
        self.discard(&handle, handle.lock(), waiting_will);
        tracing::info!(
            client_id,
            peer,
            "client started a clean session on another node; its session here is discarded"
        );
    }

    /// Stores a retained message or clear; returns whether it was written to disk too.
    fn retain(&self, message: &Arc<Message>) -> bool {
        let mut retained = self.retained_store_mut();
        let outcome = retained.store(Arc::clone(message));
        let written = matches!(outcome, Stored::Kept | Stored::Cleared)
            && self.persist.get().is_some_and(|persist| {
                persist.keep_retained(message, retained.tombstone(&message.topic).is_some());
                true
            });
        match outcome {
            Stored::Full => tracing::warn!(
                topic = %message.topic,
                "retained store full (limits.max_retained_messages / max_retained_bytes); not retained"
            ),
            Stored::Stale => tracing::debug!(
                topic = %message.topic,
                version = ?message.version,
                "retained set or clear older than the store's; not applied"
            ),
            Stored::Kept | Stored::Cleared => {}
        }
        written
    }

    fn router(&self) -> RwLockReadGuard<'_, Router> {
        self.router.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn router_mut(&self) -> RwLockWriteGuard<'_, Router> {
        self.router.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn retained_store(&self) -> RwLockReadGuard<'_, Retained> {
        self.retained.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn retained_store_mut(&self) -> RwLockWriteGuard<'_, Retained> {
        self.retained
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
