//! The single-node broker: sessions, the subscription index, retained messages and wills.
//!
//! [`Broker`] is the state shared by all connections; [`serve`] runs one client connection
//! against it. How the parts fit:
//! - `connection` reads packets, drives the session, and writes packets back;
//! - `session` is what the broker remembers about a client (subscriptions, queue, in-flight);
//! - `registry` is the table of sessions by client id (takeover, resumption, expiry, wills);
//! - `router` is the subscription trie that finds the subscribers of a topic;
//! - `retained` keeps the last retained message per topic;
//! - `message` is a publication shared by all its deliveries; `outbox` hands a connection's
//!   answers to its writer; `stats` counts what happened.
//!
//! Locks are short and always taken in the order registry → session → router → retained,
//! never the other way round: a publish reads the router, lets go, and only then locks each
//! matching session in turn, so a publish never waits on a slow subscriber.

mod connect;
mod connection;
mod inbound;
mod message;
mod outbox;
mod registry;
mod retained;
mod router;
mod session;
mod stats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{
    Arc, Mutex, MutexGuard, OnceLock, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

use tokio::sync::watch;

use crate::cluster::{Cluster, GroupRef};
use crate::config::Limits;
use crate::protocol::{Publish, SubscriptionOptions, reason};

pub use connection::serve;
pub use stats::{Counter, Stats};

pub use message::Message;

use message::Delivery;
use retained::{Retained, Stored};
use router::Router;
use session::{Offer, SessionHandle};

/// Where a published message went.
struct Routed {
    /// Sessions with a matching subscription.
    matched: usize,
    /// Connected sessions whose queue was full, with the delivery still to be made.
    blocked: Vec<(Arc<SessionHandle>, Delivery)>,
    /// The message, for forwarding to other nodes after local delivery.
    message: Option<Arc<Message>>,
}

/// The state shared by every connection of one broker.
pub struct Broker {
    limits: Limits,
    router: RwLock<Router>,
    retained: RwLock<Retained>,
    sessions: Mutex<HashMap<String, Arc<SessionHandle>>>,
    connections: AtomicUsize,
    shutdown: watch::Sender<bool>,
    stats: Stats,
    /// Set once when the node is part of a cluster; a standalone broker pays one atomic load
    /// per publish and subscription change for it.
    cluster: OnceLock<Arc<Cluster>>,
}

impl Broker {
    pub fn new(limits: Limits) -> Arc<Broker> {
        Arc::new(Broker {
            router: RwLock::new(Router::default()),
            retained: RwLock::new(Retained::new(
                limits.max_retained_messages,
                limits.max_retained_bytes,
            )),
            sessions: Mutex::new(HashMap::new()),
            connections: AtomicUsize::new(0),
            shutdown: watch::channel(false).0,
            stats: Stats::default(),
            cluster: OnceLock::new(),
            limits,
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Open client connections (including ones that have not finished CONNECT yet).
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Sessions known, connected or not.
    pub fn session_count(&self) -> usize {
        self.sessions().len()
    }

    /// Subscriptions in the index.
    pub fn subscription_count(&self) -> usize {
        self.router().len()
    }

    /// Retained messages stored.
    pub fn retained_count(&self) -> usize {
        self.retained_store().len()
    }

    /// Tells every connection to close: MQTT 5 clients get DISCONNECT 0x8B first.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Makes this broker a cluster node (once; later calls are ignored).
    pub(crate) fn attach_cluster(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// The cluster this node belongs to, if any.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Routes a message to every matching session and, if it is retained, stores it; a
    /// local message also goes to the nodes with matching interest. Sessions whose queue is
    /// full come back in [`Routed::blocked`], for the publisher to wait on.
    fn publish(&self, message: Message) -> Routed {
        let mut routed = self.publish_locally(message);
        if let Some(cluster) = self.cluster.get()
            && let Some(message) = &routed.message
            && !message.remote
        {
            routed.matched += cluster.forward(message);
        }
        routed
    }

    fn publish_locally(&self, message: Message) -> Routed {
        let message = Arc::new(message);
        if message.retain {
            self.retain(&message);
        }
        let matches = self.router().matches(&message.topic, message.origin);
        let mut blocked = Vec::new();
        for m in &matches {
            let delivery = Delivery {
                message: Arc::clone(&message),
                qos: m.qos.min(message.qos),
                // MQTT-3.3.1-12/13: RETAIN is cleared on normal delivery unless the
                // subscription asked for Retain As Published.
                retain: message.retain && m.retain_as_published,
                subscription_ids: m.subscription_ids.clone(),
            };
            self.stats.messages_routed.inc();
            if let Offer::Full(delivery) = m.session.offer(delivery, &self.stats) {
                blocked.push((Arc::clone(&m.session), delivery));
            }
        }
        Routed {
            matched: matches.len(),
            blocked,
            message: Some(message),
        }
    }

    /// Adds `session`'s subscription to `filter` to the router, telling the cluster when the
    /// filter gets its first local subscriber. Returns true if the subscription is new.
    fn subscribe_filter(
        &self,
        filter: &str,
        session: &Arc<SessionHandle>,
        options: SubscriptionOptions,
        id: Option<u32>,
    ) -> bool {
        let mut router = self.router_mut();
        let new = router.subscribe(filter, session, options, id);
        if new
            && let Some(cluster) = self.cluster.get()
            && router.filter_count(filter) == 1
        {
            cluster.local_interest(filter, true);
        }
        new
    }

    /// Removes `session_id`'s subscriptions to `filters`, telling the cluster about filters
    /// left without local subscribers.
    fn unsubscribe_filters<'f>(&self, filters: impl IntoIterator<Item = &'f str>, session_id: u64) {
        let mut router = self.router_mut();
        for filter in filters {
            if router.unsubscribe(filter, session_id)
                && let Some(cluster) = self.cluster.get()
                && router.filter_count(filter) == 0
            {
                cluster.local_interest(filter, false);
            }
        }
    }

    /// A message another node forwarded: delivered to local subscribers only. There is no
    /// publisher to slow down, so a full queue drops it (counted in `dropped_queue_full`).
    pub(crate) fn deliver_from_route(&self, publish: Publish, plain: bool, _groups: &[GroupRef]) {
        let message = Message::from_route(publish);
        if !plain {
            // Only for the retained store: no local plain subscriber wanted it.
            if message.retain {
                self.retain(&Arc::new(message));
            }
            return;
        }
        let routed = self.publish(message);
        for _ in routed.blocked {
            self.stats.dropped_queue_full.inc();
        }
    }

    /// A retained message a peer holds, sent when the route opened: kept unless this node
    /// already has one for the topic (which is as new or newer).
    pub(crate) fn retained_from_route(&self, publish: Publish) {
        let message = Arc::new(Message::from_route(publish));
        if !self.retained_store().contains(&message.topic) {
            self.retain(&message);
        }
    }

    /// The retained messages, as PUBLISH packets for a peer that just joined.
    pub(crate) fn retained_for_peer(&self) -> Vec<Publish> {
        let now = std::time::Instant::now();
        self.retained_store()
            .all()
            .iter()
            .filter(|m| !m.is_expired(now))
            .map(|m| m.to_publish(now))
            .collect()
    }

    /// A client with this id connected to `peer`: client ids are unique cluster-wide, so a
    /// connection here with the same id is closed ("session taken over"). The session itself
    /// stays here until it expires.
    pub(crate) fn client_connected_elsewhere(&self, client_id: &str, peer: &str) {
        let Some(handle) = self.sessions().get(client_id).cloned() else {
            return;
        };
        let session = handle.lock();
        if let Some(outbox) = session.outbox() {
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
    }

    fn retain(&self, message: &Arc<Message>) {
        let mut retained = self.retained_store_mut();
        if retained.store(Arc::clone(message)) == Stored::Full {
            tracing::warn!(
                topic = %message.topic,
                "retained store full (limits.max_retained_messages / max_retained_bytes); not retained"
            );
        }
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

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Arc<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
