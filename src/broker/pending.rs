//! A bounded set of connections that have not proved anything yet, oldest first: the MQTT
//! sockets that have not completed CONNECT (`limits.max_pending_connections`, and the few
//! refused by a per-address limit that wait to be told why: see [`super::admission`]), and
//! the route connections still in their handshake (`cluster.max_pending_routes`).
//!
//! A socket is pending from accept until its CONNECT is answered: through its TLS and/or
//! WebSocket handshake and the wait for CONNECT, all within `limits.connect_timeout_secs`.
//! When every place is taken, a new socket does not wait and is not refused: the oldest pending
//! socket is dismissed (its connection closes) to make room. A client that means to connect
//! sends CONNECT within a round trip or two of its TCP handshake (a peer its INFO); the socket
//! that has waited longest is the one most likely silent for good. So a flood of silent sockets
//! costs at most this many sockets and their descriptors, and a client that connects promptly
//! still gets in unless as many newer sockets arrive before its CONNECT does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// The pending connections' places.
pub(crate) struct PendingSet {
    max: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The id of the next place; ids grow, so the smallest is the oldest.
    next: u64,
    /// Each place's dismissal: dropping the sender dismisses it.
    waiting: BTreeMap<u64, oneshot::Sender<()>>,
}

/// One pending connection's place, given back when dropped (the connection proved itself, or
/// closed). A place already dismissed is gone, and giving it back does nothing.
pub(crate) struct Place {
    set: Arc<PendingSet>,
    id: u64,
    /// `None` once the dismissal has been seen.
    dismissed: Option<oneshot::Receiver<()>>,
}

impl Place {
    /// Completes when the connection is dismissed to make room for a newer one (at once if it
    /// already was). Cancel safe.
    pub async fn dismissed(&mut self) {
        if let Some(dismissed) = &mut self.dismissed {
            // The sender is only ever dropped, never used: an error is the dismissal.
            let _ = dismissed.await;
            self.dismissed = None;
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.set.state().waiting.remove(&self.id);
    }
}

impl PendingSet {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(PendingSet {
            max,
            state: Mutex::new(State::default()),
        })
    }

    /// Takes a place for a new connection. When all places are taken the oldest connection is
    /// dismissed first; the second value says whether one was.
    pub fn enter(self: &Arc<Self>) -> (Place, bool) {
        let (dismiss, dismissed) = oneshot::channel();
        let mut state = self.state();
        let evicted = state.waiting.len() >= self.max && state.waiting.pop_first().is_some();
        let id = Self::insert(&mut state, dismiss);
        drop(state);
        (self.place(id, dismissed), evicted)
    }

    /// Takes a place for a new connection if one is free; dismisses no one.
    pub fn try_enter(self: &Arc<Self>) -> Option<Place> {
        let (dismiss, dismissed) = oneshot::channel();
        let mut state = self.state();
        if state.waiting.len() >= self.max {
            return None;
        }
        let id = Self::insert(&mut state, dismiss);
        drop(state);
        Some(self.place(id, dismissed))
    }

    /// Connections pending now.
    pub fn len(&self) -> usize {
        self.state().waiting.len()
    }

    fn insert(state: &mut State, dismiss: oneshot::Sender<()>) -> u64 {
        let id = state.next;
        state.next += 1;
        state.waiting.insert(id, dismiss);
        id
    }

    fn place(self: &Arc<Self>, id: u64, dismissed: oneshot::Receiver<()>) -> Place {
        Place {
            set: Arc::clone(self),
            id,
            dismissed: Some(dismissed),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_set_dismisses_the_oldest_to_make_room() {
        let set = PendingSet::new(2);
        let (mut first, evicted) = set.enter();
        assert!(!evicted);
        let (mut second, evicted) = set.enter();
        assert!(!evicted);
        let (third, evicted) = set.enter();
        assert!(evicted);
        assert_eq!(set.len(), 2);
        first.dismissed().await;
        // Seen once, it stays seen.
        first.dismissed().await;
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(50), second.dismissed());
        assert!(waiting.await.is_err(), "the second is not dismissed");
        drop(first);
        drop(third);
        assert_eq!(set.len(), 1);
    }

    #[tokio::test]
    async fn a_full_set_lets_no_one_else_try_in() {
        let set = PendingSet::new(1);
        let mut first = set.try_enter().expect("a free place");
        assert!(set.try_enter().is_none(), "full");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), first.dismissed());
        assert!(waiting.await.is_err(), "the first is not dismissed");
        drop(first);
        assert!(set.try_enter().is_some(), "its place is free again");
    }
}
