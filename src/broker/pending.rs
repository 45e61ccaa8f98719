//! The sockets that have not completed CONNECT yet, oldest first, bounded by
//! `limits.max_pending_connections`.
//!
//! A socket is pending from accept until its CONNECT is answered: through its TLS and/or
//! WebSocket handshake and the wait for CONNECT, all within `limits.connect_timeout_secs`.
//! When every place is taken, a new socket does not wait and is not refused: the oldest pending
//! socket is dismissed (its connection closes) to make room. A client that means to connect
//! sends CONNECT within a round trip or two of its TCP handshake; the socket that has waited
//! longest is the one most likely silent for good. So a flood of silent sockets costs at most
//! this many sockets and their descriptors, and a client that connects promptly still gets in
//! unless as many newer sockets arrive before its CONNECT does.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// The pending sockets' places.
pub(super) struct PendingSet {
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

/// One pending socket's place. Give it back with [`PendingSet::leave`].
pub(super) struct Place {
    id: u64,
    /// `None` once the dismissal has been seen.
    dismissed: Option<oneshot::Receiver<()>>,
}

impl Place {
    /// Completes when the socket is dismissed to make room for a newer one (at once if it
    /// already was). Cancel safe.
    pub async fn dismissed(&mut self) {
        if let Some(dismissed) = &mut self.dismissed {
            // The sender is only ever dropped, never used: an error is the dismissal.
            let _ = dismissed.await;
            self.dismissed = None;
        }
    }
}

impl PendingSet {
    pub fn new(max: usize) -> Self {
        PendingSet {
            max,
            state: Mutex::new(State::default()),
        }
    }

    /// Takes a place for a new socket. When all places are taken the oldest socket is
    /// dismissed first; the second value says whether one was.
    pub fn enter(&self) -> (Place, bool) {
        let (dismiss, dismissed) = oneshot::channel();
        let mut state = self.state();
        let evicted = state.waiting.len() >= self.max && state.waiting.pop_first().is_some();
        let id = state.next;
        state.next += 1;
        state.waiting.insert(id, dismiss);
        (
            Place {
                id,
                dismissed: Some(dismissed),
            },
            evicted,
        )
    }

    /// Gives a place back: the socket completed CONNECT or closed. A place already dismissed
    /// is gone, and giving it back does nothing.
    pub fn leave(&self, place: &Place) {
        self.state().waiting.remove(&place.id);
    }

    /// Sockets pending now.
    pub fn len(&self) -> usize {
        self.state().waiting.len()
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
        set.leave(&first);
        set.leave(&third);
        assert_eq!(set.len(), 1);
    }
}
