//! Asking every node a question for the admin API: how the HTTP API shows the whole cluster
//! from any node (docs/ARCHITECTURE.md, "Observability").
//!
//! The cluster does not know the questions: whoever serves the API gives it an [`Inspector`]
//! that answers them for this node, as JSON. [`Cluster::ask_all`] sends ASK on every route up
//! and waits, at most the given time, for each peer's ANSWER; the peers that did not answer
//! are named in the result, so the API can say which nodes are missing from it.
//!
//! Bounds: at most [`MAX_OPEN`] questions open at once (past it the question is answered from
//! this node alone, every peer missing), answers of at most [`MAX_ANSWER`] bytes (a peer's
//! larger answer is refused and counted, and the peer is missing), and a question a peer asks
//! is answered on its route's reader, by the inspector, which must be quick.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::Cluster;
use super::frame::Frame;
use super::route::Route;

/// Questions open at once.
const MAX_OPEN: usize = 1024;

/// The largest answer a node sends or takes, in bytes.
pub const MAX_ANSWER: usize = 512 * 1024;

/// Answers this node's part of the admin API's questions.
pub trait Inspector: Send + Sync {
    /// The answer to `question` for this node, as JSON; `None` for a question it does not
    /// know (the asking node counts this node as missing).
    fn answer(&self, question: &str) -> Option<Vec<u8>>;
}

/// What the nodes answered.
#[derive(Debug, Default)]
pub struct Gathered {
    /// (node, answer), this node's own first.
    pub answers: Vec<(String, Vec<u8>)>,
    /// Peers with a route up that did not answer in time.
    pub missing: Vec<String>,
}

#[derive(Default)]
pub(super) struct Questions {
    next: u64,
    open: HashMap<u64, Open>,
    inspector: OnceLock<Arc<dyn Inspector>>,
}

struct Open {
    waiting: HashSet<String>,
    answers: Vec<(String, Vec<u8>)>,
    /// Peers that answered they could not.
    unable: Vec<String>,
    done: Option<oneshot::Sender<()>>,
}

impl Cluster {
    /// Sets what answers this node's part (once; later calls are ignored).
    pub fn set_inspector(&self, inspector: Arc<dyn Inspector>) {
        let _ = self.questions().inspector.set(inspector);
    }

    /// Asks every node `question` and waits at most `wait` for the peers' answers.
    pub async fn ask_all(&self, question: &str, wait: Duration) -> Gathered {
        let mine = self
            .questions()
            .inspector
            .get()
            .cloned()
            .and_then(|inspector| inspector.answer(question));
        let mut gathered = Gathered::default();
        gathered
            .answers
            .extend(mine.map(|answer| (self.node.clone(), answer)));
        let (tx, rx) = oneshot::channel();
        let (id, peers) = {
            let state = self.state();
            let peers: HashSet<String> = state.routes.keys().cloned().collect();
            let mut questions = self.questions();
            if peers.is_empty() || questions.open.len() >= MAX_OPEN {
                gathered.missing = peers.into_iter().collect();
                return gathered;
            }
            questions.next += 1;
            let id = questions.next;
            questions.open.insert(
                id,
                Open {
                    waiting: peers.clone(),
                    answers: Vec::new(),
                    unable: Vec::new(),
                    done: Some(tx),
                },
            );
            let frame = Frame::Ask {
                id,
                question: question.to_string(),
            };
            for route in state.routes.values() {
                route.send_control(&frame);
            }
            (id, peers)
        };
        let _ = tokio::time::timeout(wait, rx).await;
        let open = self.questions().open.remove(&id);
        match open {
            Some(open) => {
                gathered.answers.extend(open.answers);
                gathered.missing = open.waiting.into_iter().chain(open.unable).collect();
            }
            None => gathered.missing = peers.into_iter().collect(),
        }
        gathered.missing.sort();
        gathered
    }

    /// `route`'s peer asks `question`: answered on the same route.
    pub(super) fn answer(&self, route: &Route, id: u64, question: &str) {
        let inspector = self.questions().inspector.get().cloned();
        let body = inspector
            .and_then(|inspector| inspector.answer(question))
            .filter(|body| body.len() <= MAX_ANSWER);
        route.send_control(&Frame::Answer {
            id,
            body: body.unwrap_or_default(),
        });
    }

    /// `peer` answered question `id` (an empty body: it could not); false if no such
    /// question is open for it.
    pub(super) fn answered(&self, peer: &str, id: u64, body: Vec<u8>) -> bool {
        let mut questions = self.questions();
        let Some(open) = questions.open.get_mut(&id) else {
            return false;
        };
        if !open.waiting.remove(peer) {
            return false;
        }
        if body.is_empty() {
            open.unable.push(peer.to_string());
        } else {
            open.answers.push((peer.to_string(), body));
        }
        if open.waiting.is_empty()
            && let Some(done) = open.done.take()
        {
            let _ = done.send(());
        }
        true
    }

    fn questions(&self) -> MutexGuard<'_, Questions> {
        self.questions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
