//! The cluster: a NATS-style full mesh of brokers (docs/ARCHITECTURE.md, The route protocol).
//!
//! Every node keeps one route to every other node ([`route`]), established by a handshake
//! ([`handshake`]) in our own framing ([`frame`]); [`mesh`] dials seeds and discovered peers,
//! accepts routes, keeps exactly one per peer and redials lost ones. Over each route a node
//! declares its local interest (a filter's count going 0 → 1 and 1 → 0, group member counts)
//! and learns the peer's ([`interest`]). A peer that joins gets the retained store streamed
//! to it in chunks, beside live traffic and outside the locks publishes take ([`sync`]).
//! What this node keeps for a peer process across its routes — its interest, the numbers of
//! the messages sent to it and those it has not acknowledged yet — is that peer's [`link`]:
//! a QoS 1/2 publisher's ack waits for the peers' acknowledgements, a route that flaps gets
//! the unacknowledged messages again, and a peer that went away keeps its interest for a
//! grace period (docs/ARCHITECTURE.md, "Acknowledgements and replay").
//!
//! The broker knows none of this: it defines the interface it needs from the other nodes,
//! [`Peers`] (docs/ARCHITECTURE.md, "The broker and the cluster"), and [`Cluster`] implements
//! it — the broker calls in when local interest changes, when a local client publishes (with
//! the group members it chose on peers) and when a client connects; the routes call back into
//! the broker's public entry points with what peers send. A standalone broker has no `Peers`.
//! A message that came over a route is delivered locally only, never forwarded again, so a
//! message crosses at most one route, and delivered without waiting: what a full local queue
//! cannot take waits on the route's backlog budget or is dropped for that session alone. Once
//! the route's reader has handed a batch to the broker, it acknowledges the batch.
//!
//! Who may join: a node must prove `cluster.secret` ([`handshake`]; required, 16 characters
//! or more) and, with route TLS on, present a certificate signed by the cluster's CA
//! ([`tls`]). Without route TLS, route traffic crosses the network in clear, and the node says
//! so once at start-up.
//!
//! Whoever is on the other side of a route, what it sends is held to a client's limits
//! (`validate`): an invalid item is refused ([`Cluster::refused`]) and the route stays up.
//! Before a peer has proved the secret the node holds only a bounded amount for it
//! (`handshake`, `mesh`), and no recursion goes as deep as a peer likes (`interest`).
//!
//! On a graceful shutdown ([`Cluster::shutdown`]) the node stops accepting and dialling, and
//! each route sends what is already queued on it before it closes.
//!
//! Locks: see docs/ARCHITECTURE.md, Lock order. The local interest set and the
//! route table share one lock, so a new route gets the full set and then, in order, every
//! change after it.

mod frame;
mod handover;
mod handshake;
mod inspect;
mod interest;
mod link;
mod mesh;
mod route;
mod sync;
mod tls;
mod validate;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::broker::{
    Assigned, Broker, Fetched, GroupRef, LogLimit, Message, PeerId, Peers, RemoteGroup, Version,
    Waiter,
};
use crate::config::ClusterConfig;
use crate::protocol::{Delivered, Publish, QoS};
use crate::transport::TransportError;

use frame::{Frame, Info, Outgoing};
use handover::{Handovers, SessionBounds};
pub use inspect::{Gathered, Inspector};
use interest::Members;
use link::{Link, LinkLimits, Publisher, Sent};
use route::Route;
use tls::RouteTls;
pub(crate) use validate::{MAX_NAME, check_address, check_node_name};

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.listen: \"{addr}\": {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    /// A route TLS file (`cluster.tls_cert`, `tls_key`, `tls_ca`) is unusable.
    #[error("cluster route TLS: {0}")]
    Tls(TransportError),
}

/// One route as the admin API shows it (NATS' `/routez` has the same figures).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct RouteFigures {
    pub peer: String,
    /// The address the peer asks to be dialled at.
    pub address: String,
    pub connected_secs: u64,
    /// The last round trip a heartbeat measured (0: none yet).
    pub rtt_us: u64,
    pub in_msgs: u64,
    pub out_msgs: u64,
    pub in_bytes: u64,
    pub out_bytes: u64,
    /// Bytes of messages queued, not yet written.
    pub pending_bytes: usize,
    /// Messages for the peer dropped (a full queue or replay buffer, no ack in time).
    pub dropped: u64,
    /// Messages whose local publisher was held back because the peer was behind.
    #[serde(default)]
    pub paced: u64,
    /// Times this node held its acknowledgement to the peer back, pacing it, because the
    /// peer's messages waiting beside full local queues were past the mark.
    #[serde(default)]
    pub acks_held: u64,
}

/// Heartbeat and redial timings, from the configuration.
struct Timings {
    heartbeat: Duration,
    heartbeat_timeout: Duration,
    redial_min: Duration,
    redial_max: Duration,
    discovered_attempts: u32,
}

/// What the route table and local interest hold, behind one lock.
#[derive(Default)]
struct State {
    /// One route per peer node name.
    routes: HashMap<String, Arc<Route>>,
    /// One link per peer node name: those with a route, and those in their grace period.
    links: HashMap<String, Arc<Link>>,
    /// Filters with at least one local plain subscriber.
    local: HashSet<String>,
    /// Local member counts of consumer groups, by (group, filter).
    local_groups: HashMap<(String, String), Members>,
    /// Addresses dialled or advertised → the node name found there (pruned past
    /// 4 × `cluster.max_peers` entries).
    names: HashMap<String, String>,
    /// Addresses with a dial loop running.
    dialing: HashSet<String>,
}

/// This node's part of the cluster.
pub struct Cluster {
    node: String,
    /// Our INFO, without a nonce (each handshake draws its own) or peers (added when sent).
    info: Info,
    /// `cluster.secret`, as the key that proves it in handshakes.
    secret: handshake::Secret,
    /// Route TLS, when `cluster.tls_*` are set: every route, dialled or accepted, runs in it.
    tls: Option<RouteTls>,
    timings: Timings,
    max_peers: usize,
    max_pending: usize,
    route_queue_bytes: usize,
    route_backlog_bytes: usize,
    /// What each peer's link keeps, and for how long.
    link_limits: LinkLimits,
    /// `cluster.peer_grace_ms`.
    grace: Duration,
    /// `cluster.acks = "cluster"`: a publisher's ack waits for the peers.
    acks_wait_for_peers: bool,
    /// Largest MQTT packet, which bounds message frames.
    max_packet: usize,
    /// What a peer's filters, topics, names and addresses are held to.
    rules: validate::Rules,
    /// Sessions asked of the peers for clients that connected here ([`handover`]), and the
    /// bounds of one that comes.
    handovers: Arc<Mutex<Handovers>>,
    session_bounds: SessionBounds,
    /// The admin API's questions this node asked its peers, and what answers its own part
    /// ([`inspect`]).
    questions: Mutex<inspect::Questions>,
    /// Items from peers refused by `rules`.
    refused: AtomicU64,
    /// Route connections closed in their handshake to make room for a newer one
    /// (`cluster.max_pending_routes`).
    pending_evicted: AtomicU64,
    /// The lines for what anyone on the route port, or any peer, can repeat at will.
    logs: Logs,
    broker: Weak<Broker>,
    state: Mutex<State>,
    /// The links, for the publish path: read-locked per message, rebuilt when one comes or
    /// goes.
    links: RwLock<Vec<Arc<Link>>>,
    /// Set once on shutdown: no route is accepted, dialled or registered any more.
    closing: watch::Sender<bool>,
}

/// Log lines a flood could otherwise repeat without end, each let through at most once a
/// second ([`LogLimit`]).
#[derive(Default)]
struct Logs {
    /// Handshakes closed to make room for newer ones.
    evicted: LogLimit,
    /// Handshakes that failed.
    refused: LogLimit,
    /// Invalid items from authenticated peers.
    invalid: LogLimit,
}

/// A bound route listener, not yet accepting.
pub struct Bound {
    listener: TcpListener,
    config: ClusterConfig,
    node: String,
    tls: Option<RouteTls>,
}

impl Bound {
    /// Loads the route TLS files, if set, and binds `cluster.listen`, so a bad certificate or
    /// an address in use stops start-up like any other listener's.
    pub async fn bind(config: &ClusterConfig, node: &str) -> Result<Bound, ClusterError> {
        let tls = if config.tls_cert.is_empty() {
            None
        } else {
            let tls = RouteTls::load(
                Path::new(&config.tls_cert),
                Path::new(&config.tls_key),
                Path::new(&config.tls_ca),
            )
            .map_err(ClusterError::Tls)?;
            Some(tls)
        };
        let listener =
            TcpListener::bind(&config.listen)
                .await
                .map_err(|source| ClusterError::Bind {
                    addr: config.listen.clone(),
                    source,
                })?;
        Ok(Bound {
            listener,
            config: config.clone(),
            node: node.to_string(),
            tls,
        })
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Makes this node's part of the cluster and attaches it to `broker` as its
    /// [`Peers`]; routes are accepted and dialled once [`Attached::start`] is called.
    pub fn attach(self, broker: &Arc<Broker>) -> Attached {
        let c = &self.config;
        let advertise = if c.advertise.is_empty() {
            let bound = self.local_addr();
            if bound.is_some_and(|a| a.ip().is_unspecified()) {
                tracing::warn!(listen = %c.listen, "cluster.advertise is not set and cluster.listen is a wildcard address: peers cannot dial this node back; set cluster.advertise");
            }
            bound.map_or_else(|| c.listen.clone(), |a| a.to_string())
        } else {
            c.advertise.clone()
        };
        let cluster = Arc::new(Cluster {
            info: Info {
                version: frame::PROTOCOL_VERSION,
                node: self.node.clone(),
                cluster: c.name.clone(),
                advertise,
                nonce: String::new(),
                peers: Vec::new(),
                epoch: rand::random(),
            },
            secret: handshake::Secret::new(&c.secret),
            tls: self.tls,
            node: self.node,
            timings: Timings {
                heartbeat: Duration::from_millis(c.heartbeat_ms),
                heartbeat_timeout: Duration::from_millis(c.heartbeat_timeout_ms),
                redial_min: Duration::from_millis(c.redial_min_ms),
                redial_max: Duration::from_millis(c.redial_max_ms),
                discovered_attempts: c.discovered_redial_attempts,
            },
            max_peers: c.max_peers,
            max_pending: c.max_pending_routes,
            route_queue_bytes: c.route_queue_bytes,
            route_backlog_bytes: c.route_backlog_bytes,
            link_limits: LinkLimits {
                replay_bytes: c.route_replay_bytes,
                ack_timeout: Duration::from_millis(c.ack_timeout_ms),
                max_interest: c.max_peer_interest,
                pace_bytes: crate::broker::Backlog::window(c.route_backlog_bytes),
            },
            grace: Duration::from_millis(c.peer_grace_ms),
            acks_wait_for_peers: c.acks == "cluster",
            max_packet: broker.limits().max_packet_size as usize,
            rules: validate::Rules::new(broker.limits(), c.max_peers),
            handovers: Arc::default(),
            questions: Mutex::default(),
            session_bounds: SessionBounds {
                subscriptions: broker.limits().max_subscriptions,
                messages: broker.limits().max_queued_messages
                    + usize::from(broker.limits().max_inflight),
                bytes: broker.limits().max_queued_bytes.saturating_mul(2),
            },
            refused: AtomicU64::new(0),
            pending_evicted: AtomicU64::new(0),
            logs: Logs::default(),
            broker: Arc::downgrade(broker),
            state: Mutex::new(State::default()),
            links: RwLock::new(Vec::new()),
            closing: watch::channel(false).0,
        });
        broker.version_retained(
            &cluster.node,
            Duration::from_secs(c.retained_tombstone_secs),
        );
        broker.attach_peers(Arc::clone(&cluster) as Arc<dyn Peers>);
        tracing::info!(node = %cluster.node, advertise = %cluster.info.advertise, cluster = %cluster.info.cluster, tls = cluster.tls.is_some(), "cluster on");
        if cluster.tls.is_none() {
            tracing::warn!(
                "route traffic is not encrypted (cluster.tls_cert, tls_key and tls_ca are not set): \
                 anyone on the network between nodes can read every message; keep routes on a \
                 private network or turn route TLS on"
            );
        }
        Attached {
            cluster,
            listener: self.listener,
            seeds: self.config.routes,
        }
    }
}

/// A cluster attached to its broker, not yet accepting or dialling routes.
pub struct Attached {
    cluster: Arc<Cluster>,
    listener: TcpListener,
    seeds: Vec<String>,
}

impl Attached {
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Starts accepting routes and dials the seeds (`cluster.routes`).
    pub fn start(self) -> Arc<Cluster> {
        let cluster = self.cluster;
        tokio::spawn(mesh::accept_loop(Arc::clone(&cluster), self.listener));
        tokio::spawn(tick(Arc::downgrade(&cluster)));
        for seed in self.seeds {
            cluster.start_dialing(seed, true);
        }
        cluster
    }
}

impl Cluster {
    /// Names of the peers with an established route.
    pub fn peers(&self) -> Vec<String> {
        let mut peers: Vec<String> = self.state().routes.keys().cloned().collect();
        peers.sort();
        peers
    }

    /// The cluster's part of a graceful shutdown, once local clients are gone: stops accepting
    /// and dialling routes, lets every route send what is already queued on it (messages its
    /// publishers were acknowledged for, the interest changes of the clients that just left)
    /// and close, and closes at once the routes still busy after `grace`.
    pub async fn shutdown(&self, grace: Duration) {
        self.closing.send_replace(true);
        // `register` checks `closing` under the state lock: no route registers after this.
        let routes: Vec<Arc<Route>> = self.state().routes.values().cloned().collect();
        for route in &routes {
            route.drain();
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.state().routes.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for route in self.state().routes.values() {
            tracing::warn!(peer = %route.peer, "route not flushed in time; closing it");
            route.close();
        }
    }

    /// Messages for peers dropped: a route's queue was full, a link's replay buffer was full,
    /// a peer did not acknowledge in time or had no route (QoS 0), over the live links.
    pub fn dropped(&self) -> u64 {
        let state = self.state();
        let routes: u64 = state.routes.values().map(|r| r.dropped()).sum();
        routes + state.links.values().map(|l| l.dropped()).sum::<u64>()
    }

    /// Each route's figures, for the admin API and metrics, by peer name.
    pub fn route_figures(&self) -> Vec<RouteFigures> {
        let state = self.state();
        let mut routes: Vec<RouteFigures> = state
            .routes
            .values()
            .map(|route| {
                let f = &route.figures;
                RouteFigures {
                    peer: route.peer.clone(),
                    address: route.advertise.clone(),
                    connected_secs: f.since.elapsed().as_secs(),
                    rtt_us: f.rtt_us.load(Ordering::Relaxed),
                    in_msgs: f.in_msgs.load(Ordering::Relaxed),
                    out_msgs: f.out_msgs.load(Ordering::Relaxed),
                    in_bytes: f.in_bytes.load(Ordering::Relaxed),
                    out_bytes: f.out_bytes.load(Ordering::Relaxed),
                    pending_bytes: route.pending_bytes(),
                    dropped: route.dropped() + route.link.dropped(),
                    paced: route.link.paced(),
                    acks_held: f.acks_held.load(Ordering::Relaxed),
                }
            })
            .collect();
        routes.sort_by(|a, b| a.peer.cmp(&b.peer));
        routes
    }

    /// Items peers sent that were refused as invalid (filters, topics, group names, client
    /// ids, addresses; see the `validate` module), since start.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Route connections closed in their handshake to make room for a newer one, because
    /// `cluster.max_pending_routes` handshakes were under way, since start.
    pub fn pending_evicted(&self) -> u64 {
        self.pending_evicted.load(Ordering::Relaxed)
    }

    /// A message from `route`'s peer: delivered to local subscribers only, never waiting
    /// (what full queues cannot take waits on the route's backlog, or is dropped).
    fn deliver(
        &self,
        publish: Publish,
        version: Option<Version>,
        plain: bool,
        groups: &[GroupRef],
        redirected: bool,
        route: &Route,
    ) {
        if let Some(broker) = self.broker.upgrade() {
            tracing::trace!(peer = %route.peer, topic = %publish.topic, "message from peer");
            broker.deliver_from_route(publish, version, plain, groups, redirected, route.backlog());
        }
    }

    fn store_retained(&self, publish: Publish, version: Version) {
        if let Some(broker) = self.broker.upgrade() {
            broker.retained_from_route(publish, version);
        }
    }

    /// `client_id` connected to `peer` at `connected_at`: the connection here, if any, goes if
    /// it is the older of the two. Both nodes compare the same (time, node name) pairs, so
    /// exactly one of two simultaneous connections stays (docs/ARCHITECTURE.md, "Messages").
    /// With `clean_start`, the session here goes too.
    fn client_elsewhere(&self, client_id: &str, peer: &str, connected_at: u64, clean_start: bool) {
        if let Some(broker) = self.broker.upgrade() {
            let ours = self.node.as_str();
            broker.client_connected_elsewhere(client_id, peer, clean_start, |here| {
                (connected_at, peer) > (here, ours)
            });
        }
    }

    /// `route`'s node holds a session for `client_id` read back from its store, whose client
    /// last connected at `connected_at`: if the session here is newer (the client came here
    /// while that node was down), that node is told to discard its copy, with the
    /// CLIENT_CONNECTED a clean start sends (docs/ARCHITECTURE.md, "Persistence").
    fn session_held(&self, route: &Route, client_id: &str, connected_at: u64) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        let Some(ours) = broker.session_connected_at(client_id) else {
            return;
        };
        if (ours, self.node.as_str()) > (connected_at, route.peer.as_str()) {
            tracing::info!(
                client_id,
                peer = %route.peer,
                "a restarted node still held a session that moved here meanwhile; telling it to discard it"
            );
            route.send_control(&Frame::ClientConnected {
                client_id: client_id.to_string(),
                connected_at: ours,
                clean_start: true,
            });
        }
    }

    /// Acknowledges the peer's messages up to `seq` on `route`: at once, or, with a store in
    /// `immediate` mode, after the commit holding what they wrote (acks stay in order: commits
    /// finish in order, and an ack is the highest number so far).
    fn acknowledge_when_stored(&self, route: &Arc<Route>, seq: u64) {
        let ack = Box::new(RouteAck {
            route: Arc::clone(route),
            seq,
        });
        match self.broker.upgrade() {
            Some(broker) => broker.when_stored(ack),
            None => route.acknowledge(seq),
        }
    }

    /// Tells a peer that just connected which sessions this node read back from its store and
    /// has not seen their clients since, so that a newer copy wins ([`Frame::SessionHeld`]).
    fn announce_restored(&self, route: &Route) {
        let Some(broker) = self.broker.upgrade() else {
            return;
        };
        for (client_id, connected_at) in broker.restored_sessions() {
            route.send_initial(&Frame::SessionHeld {
                client_id: client_id.to_string(),
                connected_at,
            });
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn links(&self) -> RwLockReadGuard<'_, Vec<Arc<Link>>> {
        self.links.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives up overdue messages on every link, and removes the links whose peer has been
    /// away for its grace period (docs/ARCHITECTURE.md, "Acknowledgements and replay").
    fn expire_links(&self) {
        let now = Instant::now();
        self.expire_handovers(now);
        let gone: Vec<Arc<Link>> = self
            .links()
            .iter()
            .filter(|link| link.expire(now, self.grace))
            .cloned()
            .collect();
        if gone.is_empty() {
            return;
        }
        let mut state = self.state();
        for link in gone {
            // Still without a route (one may have come back meanwhile) and still the link.
            if state.routes.contains_key(&link.peer)
                || state
                    .links
                    .get(&link.peer)
                    .is_none_or(|l| l.id() != link.id())
            {
                continue;
            }
            state.links.remove(&link.peer);
            tracing::info!(peer = %link.peer, grace = ?self.grace, "peer did not come back within cluster.peer_grace_ms; its interest is dropped");
            link.fail_all();
        }
        self.publish_links(&state);
    }
}

/// How often links give up overdue messages and peers past their grace period.
const TICK: Duration = Duration::from_millis(100);

/// Runs [`Cluster::expire_links`] every [`TICK`] while the cluster exists.
async fn tick(cluster: Weak<Cluster>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        match cluster.upgrade() {
            Some(cluster) => cluster.expire_links(),
            None => return,
        }
    }
}

/// A MESSAGE frame for `message`, at its own QoS (the receiver delivers at each subscriber's)
/// with what is left of its lifetime; `None` (logged) if it cannot be encoded.
fn encode_message(
    message: &Message,
    plain: bool,
    redirected: bool,
    groups: &[GroupRef],
) -> Option<Bytes> {
    // The clock only for a message that expires: this runs for every forwarded message.
    let expiry = message
        .expires_at
        .and_then(|_| message.remaining_expiry(Instant::now()));
    let outgoing = Outgoing {
        plain,
        redirected,
        groups,
        // Only a retained message has one: the fast path of the others never touches it.
        version: message.version.as_ref().filter(|_| message.retain),
        topic: &message.topic,
        properties: &message.properties,
        payload: &message.payload,
        delivered: Delivered {
            qos: message.qos,
            retain: message.retain,
            // Any non-zero id: the codec wants one for QoS 1/2; routes have no acks.
            packet_id: u16::from(message.qos != QoS::AtMostOnce),
            message_expiry_interval: expiry,
            ..Delivered::default()
        },
    };
    match outgoing.encode() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, topic = %message.topic, "cannot forward message");
            None
        }
    }
}

/// What the broker tells the other nodes, and asks of them ([`crate::broker::Peers`]).
impl Peers for Cluster {
    fn local_interest(&self, filter: &str, present: bool) {
        let mut state = self.state();
        let changed = if present {
            state.local.insert(filter.to_string())
        } else {
            state.local.remove(filter)
        };
        if !changed {
            return;
        }
        let frame = if present {
            Frame::Interest(filter.to_string())
        } else {
            Frame::NoInterest(filter.to_string())
        };
        for route in state.routes.values() {
            route.send_control(&frame);
        }
    }

    fn local_group(&self, group: &GroupRef, online: usize, offline: usize) {
        let members = Members {
            online: u32::try_from(online).unwrap_or(u32::MAX),
            offline: u32::try_from(offline).unwrap_or(u32::MAX),
        };
        let mut state = self.state();
        let key = (group.group.clone(), group.filter.clone());
        if online == 0 && offline == 0 {
            state.local_groups.remove(&key);
        } else if state.local_groups.insert(key, members) == Some(members) {
            return;
        }
        let frame = Frame::GroupWeight {
            group: group.group.clone(),
            filter: group.filter.clone(),
            online: members.online,
            offline: members.offline,
        };
        for route in state.routes.values() {
            route.send_control(&frame);
        }
    }

    fn remote_groups(&self, topic: &str) -> Vec<RemoteGroup> {
        let mut found: Vec<RemoteGroup> = Vec::new();
        for link in self.links().iter().filter(|link| link.has_groups()) {
            link.interest().groups(topic, |group, filter, members| {
                let i = match found
                    .iter()
                    .position(|g| g.group.group == group && g.group.filter == filter)
                {
                    Some(i) => i,
                    None => {
                        found.push(RemoteGroup {
                            group: GroupRef {
                                group: group.to_string(),
                                filter: filter.to_string(),
                            },
                            peers: Vec::new(),
                            online: Vec::new(),
                            offline: Vec::new(),
                        });
                        found.len() - 1
                    }
                };
                found[i].peers.push(PeerId(link.id()));
                found[i].online.push(members.online);
                found[i].offline.push(members.offline);
            });
        }
        found
    }

    fn forward(
        &self,
        message: &Message,
        assigned: &[Assigned],
        publisher: Option<&Arc<Waiter>>,
    ) -> usize {
        let links = self.links();
        let keep = message.qos != QoS::AtMostOnce;
        // A QoS 1/2 publisher is paced by its acks when they wait for the peers, and bounded
        // by the replay buffer when they do not (`cluster.acks = "local"` promises the ack
        // once the message is queued here); a QoS 0 one is held back while a peer is behind.
        let publisher = match publisher {
            Some(waiter) if keep && self.acks_wait_for_peers => Publisher::Acked(waiter),
            Some(waiter) if !keep => Publisher::Paced(waiter),
            _ => Publisher::None,
        };
        // Most peers get the same frame: encode once per flavour (with or without delivery);
        // a peer assigned a group gets its own.
        let mut encoded: [Option<Bytes>; 2] = [None, None];
        let mut sent = 0;
        for link in links.iter() {
            let plain = link.interest().matches(&message.topic);
            let chosen: Vec<GroupRef> = assigned
                .iter()
                .filter(|a| a.peer == PeerId(link.id()))
                .map(|a| a.group.clone())
                .collect();
            let deliver = plain || !chosen.is_empty();
            if !deliver && !message.retain {
                continue;
            }
            let bytes = if chosen.is_empty() {
                let slot = &mut encoded[usize::from(plain)];
                if slot.is_none() {
                    *slot = encode_message(message, plain, false, &[]);
                }
                slot.clone()
            } else {
                encode_message(message, plain, false, &chosen)
            };
            if let Some(bytes) = bytes {
                // Only a copy for delivery holds the publisher's ack or paces it; a retained
                // message for a peer's store alone does not.
                let publisher = if deliver { publisher } else { Publisher::None };
                if link.send(bytes, keep, publisher) == Sent::Yes && deliver {
                    sent += 1;
                }
            }
        }
        sent
    }

    fn redirect(&self, message: &Message, group: &GroupRef, peer: PeerId) -> bool {
        let link = self
            .links()
            .iter()
            .find(|link| PeerId(link.id()) == peer)
            .cloned();
        match (
            link,
            encode_message(message, false, true, std::slice::from_ref(group)),
        ) {
            (Some(link), Some(bytes)) => {
                link.send(bytes, message.qos != QoS::AtMostOnce, Publisher::None) == Sent::Yes
            }
            _ => false,
        }
    }

    fn fetch_session(
        &self,
        client_id: &str,
        username: Option<&str>,
    ) -> Option<Pin<Box<dyn Future<Output = Fetched> + Send>>> {
        self.request_session(client_id, username)
    }

    fn client_connected(&self, client_id: &str, connected_at: u64, clean_start: bool) {
        let frame = Frame::ClientConnected {
            client_id: client_id.to_string(),
            connected_at,
            clean_start,
        };
        for route in self.state().routes.values() {
            route.send_control(&frame);
        }
    }
}

/// A route's acknowledgement waiting for the store ([`Cluster::acknowledge_when_stored`]).
struct RouteAck {
    route: Arc<Route>,
    seq: u64,
}

impl crate::store::Durable for RouteAck {
    fn done(self: Box<Self>, stored: bool) {
        // Not stored: no ack; the peer gives the messages up after `ack_timeout_ms` and its
        // publishers get a negative ack, as for a peer that did not take them.
        if stored {
            self.route.acknowledge(self.seq);
        }
    }
}

/// A decoded route frame, for the route frame fuzz target (fuzz/fuzz_targets/route_frame.rs)
/// and nothing else: the one way in to the private decoder and encoder.
#[doc(hidden)]
#[derive(Debug, PartialEq)]
pub struct FuzzFrame(Frame);

#[doc(hidden)]
impl FuzzFrame {
    /// Decodes a frame body (kind byte first, length prefix removed) as a route's reader does;
    /// `max_packet` bounds the PUBLISH in a message frame.
    pub fn decode(body: &[u8], max_packet: usize) -> Option<FuzzFrame> {
        Frame::decode(bytes::BytesMut::from(body), max_packet)
            .ok()
            .map(FuzzFrame)
    }

    /// The frame encoded again, length prefix included; `None` if it cannot be encoded.
    pub fn encode(&self) -> Option<Bytes> {
        self.0.encode().ok()
    }
}
