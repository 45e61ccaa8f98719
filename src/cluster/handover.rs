//! The cluster's part in moving a session to the node its client connected to
//! (`broker::handover` is the broker's; docs/ARCHITECTURE.md, "Sessions that move").
//!
//! The asking node sends SESSION_WANTED on every route up and waits for every peer's answer:
//! SESSION_NONE, or the session as SESSION, one SESSION_SUBSCRIPTION per subscription, one
//! SESSION_MESSAGE per message (in the order the client is to get them) and SESSION_END. The
//! first session that ends is the answer; a peer whose route ends meanwhile counts as
//! answered (and a session it was sending is taken as far as it came). Whatever has not
//! answered after [`HANDOVER_TIMEOUT`] is named in the answer, which is then "not found".
//!
//! What a peer sends is held to bounds: the requests this node has open, a session's
//! subscriptions (`limits.max_subscriptions`), messages and their bytes (the queue bounds
//! plus the in-flight window), each item checked as a client's would be (`validate`). An
//! item past a bound, or for a request that is not open, is dropped and counted.
//!
//! The answering side hands the session over from the route's reader (it takes the session
//! table's lock for a moment, as a CONNECT does) and queues the frames on the route like the
//! retained stream: counted with the messages, never dropped.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::broker::{Fetched, MovedMessage, MovedSubscription, SessionImage};

use super::Cluster;
use super::frame::Frame;
use super::route::{self, Route};

/// How long a connecting client waits for the other nodes to hand its session over.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// Session requests open at once; past it a resuming client gets a new session at once.
const MAX_OPEN: usize = 10_000;

/// The requests this node has open.
#[derive(Default)]
pub(super) struct Handovers {
    next: u64,
    open: HashMap<u64, Request>,
}

struct Request {
    client_id: String,
    /// Peers that have not answered, and those whose route ended before they did.
    waiting: HashSet<String>,
    lost: Vec<String>,
    /// The peer sending the session, and what came so far.
    from: Option<String>,
    image: SessionImage,
    bytes: usize,
    started: Instant,
    answer: Option<oneshot::Sender<Fetched>>,
}

impl Request {
    /// Every peer answered and none has the session: "not found", or "unreachable" if some
    /// could not answer.
    fn nobody_has_it(&mut self) {
        let fetched = if self.lost.is_empty() {
            Fetched::NotFound
        } else {
            Fetched::Unreachable(std::mem::take(&mut self.lost))
        };
        self.answer(fetched);
    }

    fn answer(&mut self, fetched: Fetched) {
        if let Some(answer) = self.answer.take() {
            // The connection may have gone meanwhile: then nobody wants it.
            let _ = answer.send(fetched);
        }
    }
}

/// The bounds of one incoming session.
pub(super) struct SessionBounds {
    pub subscriptions: usize,
    pub messages: usize,
    pub bytes: usize,
}

impl Cluster {
    /// Asks every peer with a route up for `client_id`'s session
    /// ([`crate::broker::Peers::fetch_session`]).
    pub(super) fn request_session(
        &self,
        client_id: &str,
        username: Option<&str>,
    ) -> Option<Pin<Box<dyn Future<Output = Fetched> + Send>>> {
        let state = self.state();
        if state.routes.is_empty() {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        let mut handovers = self.handovers();
        if handovers.open.len() >= MAX_OPEN {
            tracing::warn!(
                client_id,
                "too many session hand-overs under way; the client gets a new session"
            );
            return None;
        }
        handovers.next += 1;
        let request = handovers.next;
        handovers.open.insert(
            request,
            Request {
                client_id: client_id.to_string(),
                waiting: state.routes.keys().cloned().collect(),
                lost: Vec::new(),
                from: None,
                image: SessionImage::default(),
                bytes: 0,
                started: Instant::now(),
                answer: Some(tx),
            },
        );
        drop(handovers);
        let frame = Frame::SessionWanted {
            request,
            client_id: client_id.to_string(),
            username: username.map(str::to_string),
        };
        for route in state.routes.values() {
            route.send_control(&frame);
        }
        drop(state);
        let handovers = Arc::clone(&self.handovers);
        Some(Box::pin(async move {
            match tokio::time::timeout(HANDOVER_TIMEOUT, rx).await {
                Ok(Ok(fetched)) => fetched,
                _ => {
                    let silent = lock(&handovers)
                        .open
                        .remove(&request)
                        .map(|r| r.waiting.into_iter().chain(r.lost).collect())
                        .unwrap_or_default();
                    Fetched::Unreachable(silent)
                }
            }
        }))
    }

    /// `route`'s peer asks for `client_id`'s session: hands it over if it is here.
    pub(super) fn hand_over(
        &self,
        route: &Route,
        request: u64,
        client_id: &str,
        username: Option<&str>,
    ) {
        let image = self
            .broker
            .upgrade()
            .and_then(|broker| broker.export_session(client_id, username));
        let Some(image) = image else {
            route.send_control(&Frame::SessionNone(request));
            return;
        };
        let mut frames = Vec::with_capacity(image.subscriptions.len() + image.messages.len() + 2);
        frames.extend(route::encode(&Frame::Session {
            request,
            inbound_qos2: image.inbound_qos2,
        }));
        for subscription in image.subscriptions {
            frames.extend(route::encode(&Frame::SessionSubscription {
                request,
                subscription,
            }));
        }
        for message in image.messages {
            frames.extend(route::encode(&Frame::SessionMessage {
                request,
                message: Box::new(message),
            }));
        }
        frames.extend(route::encode(&Frame::SessionEnd(request)));
        route.send_stream(frames);
    }

    /// `peer` does not have the session.
    pub(super) fn session_none(&self, peer: &str, request: u64) {
        let mut handovers = self.handovers();
        if let Some(open) = handovers.open.get_mut(&request) {
            open.waiting.remove(peer);
            if open.waiting.is_empty() && open.from.is_none() {
                open.nobody_has_it();
                handovers.open.remove(&request);
            }
        }
    }

    /// `peer` begins sending the session; false (the caller counts it) if the request is not
    /// open, or another peer already sends one.
    pub(super) fn session_begins(&self, peer: &str, request: u64, inbound_qos2: Vec<u16>) -> bool {
        let mut handovers = self.handovers();
        let Some(open) = handovers.open.get_mut(&request) else {
            return false;
        };
        if open.from.is_some() || !open.waiting.remove(peer) {
            return false;
        }
        open.from = Some(peer.to_string());
        open.image.inbound_qos2 = inbound_qos2;
        true
    }

    /// A subscription of the session `peer` sends; false if it is not wanted (see
    /// [`Cluster::session_begins`]) or past the bound.
    pub(super) fn session_subscription(
        &self,
        peer: &str,
        request: u64,
        subscription: MovedSubscription,
        bounds: &SessionBounds,
    ) -> bool {
        self.with_incoming(peer, request, |open| {
            let fits = open.image.subscriptions.len() < bounds.subscriptions;
            if fits {
                open.image.subscriptions.push(subscription);
            }
            fits
        })
    }

    /// A message of the session `peer` sends; false if it is not wanted or past the bounds.
    pub(super) fn session_message(
        &self,
        peer: &str,
        request: u64,
        message: MovedMessage,
        bounds: &SessionBounds,
    ) -> bool {
        self.with_incoming(peer, request, |open| {
            let size = message.publish.topic.len() + message.publish.payload.len();
            let fits =
                open.image.messages.len() < bounds.messages && open.bytes + size <= bounds.bytes;
            if fits {
                open.bytes += size;
                open.image.messages.push(message);
            }
            fits
        })
    }

    /// `peer` sent the whole session: it is the answer.
    pub(super) fn session_ends(&self, peer: &str, request: u64) {
        let mut handovers = self.handovers();
        if handovers
            .open
            .get(&request)
            .is_some_and(|open| open.from.as_deref() == Some(peer))
            && let Some(mut open) = handovers.open.remove(&request)
        {
            let image = std::mem::take(&mut open.image);
            open.answer(Fetched::Found(Box::new(image)));
        }
    }

    /// `peer`'s route ended with no other up: it answers nothing more. A session it was
    /// sending is taken as far as it came (it keeps nothing of it).
    pub(super) fn handovers_lost(&self, peer: &str) {
        let mut handovers = self.handovers();
        handovers.open.retain(|_, open| {
            if open.waiting.remove(peer) {
                open.lost.push(peer.to_string());
            }
            if open.from.as_deref() == Some(peer) {
                tracing::warn!(peer, client_id = %open.client_id, "route ended while a session was handed over: taking what came");
                let image = std::mem::take(&mut open.image);
                open.answer(Fetched::Found(Box::new(image)));
                return false;
            }
            if open.waiting.is_empty() && open.from.is_none() {
                open.nobody_has_it();
                return false;
            }
            true
        });
    }

    /// Forgets requests whose client stopped waiting ([`HANDOVER_TIMEOUT`]).
    pub(super) fn expire_handovers(&self, now: Instant) {
        self.handovers()
            .open
            .retain(|_, open| now.duration_since(open.started) < HANDOVER_TIMEOUT * 2);
    }

    fn with_incoming(
        &self,
        peer: &str,
        request: u64,
        f: impl FnOnce(&mut Request) -> bool,
    ) -> bool {
        let mut handovers = self.handovers();
        match handovers.open.get_mut(&request) {
            Some(open) if open.from.as_deref() == Some(peer) => f(open),
            _ => false,
        }
    }

    fn handovers(&self) -> MutexGuard<'_, Handovers> {
        lock(&self.handovers)
    }
}

fn lock(handovers: &Mutex<Handovers>) -> MutexGuard<'_, Handovers> {
    handovers.lock().unwrap_or_else(PoisonError::into_inner)
}
