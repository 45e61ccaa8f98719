//! Flow control: what happens to a message that meets a connected subscriber's full queue.
//!
//! A session's queue is bounded in messages and bytes ([`Bounds`]). When a message finds it
//! full, it is *parked* beside the queue, in order, and moves in as the client drains (the
//! connection's writer does that, in `Session::fill`). Who pays for the wait depends on who
//! sent the message:
//! - a local publisher is held back: its reader stops reading until every delivery of its
//!   message has moved in ([`Waiter`]); that is what gives zero loss in a 1000→1 fan-in;
//! - a route is never held back, as every other session on this node would wait with it: its
//!   parked messages are charged to the route's [`Backlog`], a byte budget, and past the budget
//!   a message is dropped for that session alone;
//! - the broker itself (Wills, group hand-overs, retained messages on subscribe) never waits.
//!
//! A session keeps messages waiting from the moment one is parked until its client has taken
//! half a queue's worth of messages (or bytes) out of the queue: taking one message now and
//! then does not end the wait. A session that keeps messages waiting for
//! `limits.queue_full_wait_ms` is declared *slow* ([`SlowPolicy`]): its parked messages are
//! dropped (counted), and so is everything for it until its queue has drained to half — or
//! its client is disconnected. Put as a rate: a subscriber is slow when, with messages waiting
//! for it, it takes fewer than `max_queued_messages / 2` per `queue_full_wait_ms` (250 a second
//! with the defaults). So one stuck or slow subscriber costs its publishers that wait once,
//! and nothing at all to the other subscribers; a fast subscriber with more publishers than it
//! can take keeps them paced to its speed, losing nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::Limits;

use super::message::Delivery;
use super::session::SessionHandle;

/// What to do with a slow session (`limits.slow_consumer_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Drop its messages (counted) until its queue has drained to half.
    Drop,
    /// Disconnect its client (5.0: DISCONNECT 0x97); a persistent session keeps its queue.
    Disconnect,
}

/// The bounds of every session's queue, and how long a message may wait for room in it.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub messages: usize,
    pub bytes: usize,
    pub patience: Duration,
    pub policy: SlowPolicy,
}

impl Bounds {
    pub fn from_limits(limits: &Limits) -> Bounds {
        Bounds {
            messages: limits.max_queued_messages,
            bytes: limits.max_queued_bytes,
            patience: Duration::from_millis(limits.queue_full_wait_ms),
            policy: match limits.slow_consumer_policy.as_str() {
                "disconnect" => SlowPolicy::Disconnect,
                _ => SlowPolicy::Drop,
            },
        }
    }
}

/// A message waiting beside a full queue, and whom it holds.
pub struct Parked {
    pub delivery: Delivery,
    /// Released when the message moves into the queue or is dropped.
    pub claim: Claim,
}

/// Who waits for a parked message. Dropping the claim releases it: the publisher's count goes
/// down, or the route's budget is given back.
pub enum Claim {
    Publisher(Arc<Waiter>),
    Route { backlog: Arc<Backlog>, bytes: usize },
}

impl Drop for Claim {
    fn drop(&mut self) {
        match self {
            Claim::Publisher(waiter) => waiter.done(),
            Claim::Route { backlog, bytes } => backlog.release(*bytes),
        }
    }
}

/// A local publisher's wait for its message's parked deliveries. One per connection, reused
/// for each message: the reader handles one message at a time.
#[derive(Default)]
pub struct Waiter {
    outstanding: AtomicUsize,
    settled: Notify,
}

impl Waiter {
    /// A delivery of the current message was parked.
    pub fn parked(self: &Arc<Self>) -> Claim {
        self.outstanding.fetch_add(1, Ordering::AcqRel);
        Claim::Publisher(Arc::clone(self))
    }

    fn done(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.settled.notify_one();
        }
    }

    /// Parked deliveries of the current message still waiting.
    pub fn outstanding(&self) -> usize {
        self.outstanding.load(Ordering::Acquire)
    }

    /// Waits until every parked delivery has moved in or been dropped, or until `deadline`;
    /// true if they all settled.
    pub async fn settled(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Registered before the check, so a settlement in between is not missed.
            let mut settled = std::pin::pin!(self.settled.notified());
            settled.as_mut().enable();
            if self.outstanding() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return self.outstanding() == 0;
            }
        }
    }
}

/// The bytes one route's messages hold parked in full sessions (`cluster.route_backlog_bytes`),
/// and the sessions that hold them, so the route can expire the stale ones.
pub struct Backlog {
    bytes: AtomicUsize,
    max: usize,
    sessions: Mutex<HashMap<u64, Weak<SessionHandle>>>,
    swept: Mutex<Instant>,
}

/// How often a route looks for stale parked messages while it has any.
const SWEEP_EVERY: Duration = Duration::from_millis(100);

impl Backlog {
    pub fn new(max: usize) -> Arc<Backlog> {
        Arc::new(Backlog {
            bytes: AtomicUsize::new(0),
            max,
            sessions: Mutex::new(HashMap::new()),
            swept: Mutex::new(Instant::now()),
        })
    }

    /// Takes `bytes` of the budget for a message parked in `session`; `None` when the budget
    /// has no room for it.
    pub fn claim(self: &Arc<Self>, bytes: usize, session: &Arc<SessionHandle>) -> Option<Claim> {
        let mut used = self.bytes.load(Ordering::Relaxed);
        loop {
            if used + bytes > self.max {
                return None;
            }
            match self.bytes.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        self.sessions()
            .entry(session.id())
            .or_insert_with(|| Arc::downgrade(session));
        Some(Claim::Route {
            backlog: Arc::clone(self),
            bytes,
        })
    }

    fn release(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Bytes parked now.
    pub fn used(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// The sessions to look at for stale parked messages, at most every `SWEEP_EVERY` and
    /// only while something is parked; the list forgets them as it hands them out (a session
    /// that parks again is registered again).
    pub fn due(&self) -> Vec<Arc<SessionHandle>> {
        if self.used() == 0 {
            return Vec::new();
        }
        {
            let mut swept = self.swept.lock().unwrap_or_else(PoisonError::into_inner);
            if swept.elapsed() < SWEEP_EVERY {
                return Vec::new();
            }
            *swept = Instant::now();
        }
        self.sessions()
            .drain()
            .filter_map(|(_, session)| session.upgrade())
            .collect()
    }

    /// Registers `session` again after a sweep left parked messages of this route in it.
    pub fn keep(&self, session: &Arc<SessionHandle>) {
        self.sessions()
            .entry(session.id())
            .or_insert_with(|| Arc::downgrade(session));
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<u64, Weak<SessionHandle>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backlog_claims_within_its_budget_and_gets_it_back_when_claims_drop() {
        let backlog = Backlog::new(100);
        let session = SessionHandle::new("c");
        let first = backlog.claim(60, &session).expect("room");
        assert!(backlog.claim(60, &session).is_none(), "over the budget");
        let second = backlog.claim(40, &session).expect("room");
        assert_eq!(backlog.used(), 100);
        drop(first);
        drop(second);
        assert_eq!(backlog.used(), 0);
    }

    #[tokio::test]
    async fn a_waiter_settles_when_its_last_claim_goes_and_not_before() {
        let waiter = Arc::new(Waiter::default());
        let a = waiter.parked();
        let b = waiter.parked();
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        drop(a);
        assert!(!waiter.settled(soon).await, "one still parked");
        drop(b);
        let later = tokio::time::Instant::now() + Duration::from_secs(5);
        assert!(waiter.settled(later).await);
    }
}
