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
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;

use crate::config::Limits;

pub use connection::serve;
pub use stats::{Counter, Stats};

use message::{Delivery, Message};
use retained::{Retained, Stored};
use router::Router;
use session::{Offer, SessionHandle};

/// Where a published message went.
struct Routed {
    /// Sessions with a matching subscription.
    matched: usize,
    /// Connected sessions whose queue was full, with the delivery still to be made.
    blocked: Vec<(Arc<SessionHandle>, Delivery)>,
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

    /// Routes a message to every matching session and, if it is retained, stores it.
    /// Sessions whose queue is full come back in [`Routed::blocked`], for the publisher to
    /// wait on.
    fn publish(&self, message: Message) -> Routed {
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
