//! Session expiry (MQTT 5 §3.1.2.11.2) and delayed Wills (§3.1.3.2.2), kept by one task for
//! the whole broker.
//!
//! When a connection ends, its session may have to end later (its expiry interval) and its
//! Will may have to be published later (its Will Delay Interval). A task per disconnected
//! session would cost each one a task for as long as it waits, and stay behind when the client
//! comes back; instead [`Expiry`] keeps one entry per waiting session in a table ordered by
//! deadline, [`run`] sleeps until the first one, and a session that is resumed, replaced or
//! ended is taken out of the table at once ([`Expiry::cancel`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::protocol::Will;

use super::Broker;
use super::session::SessionHandle;

/// What falls due for a session; a Will before the end of its session at the same instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Will,
    End,
}

/// One disconnected session's deadlines.
struct Waiting {
    session: Arc<SessionHandle>,
    /// The connection that left; a later one makes the entry stale.
    generation: u64,
    will: Option<(Instant, Box<Will>)>,
    end: Option<Instant>,
}

#[derive(Default)]
struct Table {
    /// (deadline, session id, what): the order the task works in.
    order: BTreeSet<(Instant, u64, Due)>,
    waiting: HashMap<u64, Waiting>,
}

impl Table {
    fn remove(&mut self, id: u64) -> Option<Waiting> {
        let waiting = self.waiting.remove(&id)?;
        if let Some((at, _)) = &waiting.will {
            self.order.remove(&(*at, id, Due::Will));
        }
        if let Some(at) = waiting.end {
            self.order.remove(&(at, id, Due::End));
        }
        Some(waiting)
    }
}

/// The broker's table of sessions waiting to expire or to publish their Will.
#[derive(Default)]
pub struct Expiry {
    table: Mutex<Table>,
    /// A deadline earlier than the one the task sleeps for was added.
    sooner: Notify,
}

impl Expiry {
    /// Schedules, for the connection of `generation` that just left `session`, its Will after
    /// `will`'s delay and the end of the session after `end` (`None`: never).
    pub fn schedule(
        &self,
        session: &Arc<SessionHandle>,
        generation: u64,
        will: Option<(Duration, Will)>,
        end: Option<Duration>,
    ) {
        if will.is_none() && end.is_none() {
            return;
        }
        let now = Instant::now();
        let id = session.id();
        let will = will.map(|(delay, will)| (now + delay, Box::new(will)));
        let end = end.map(|after| now + after);
        let mut table = self.table();
        table.remove(id);
        let first = table.order.first().map(|(at, ..)| *at);
        if let Some((at, _)) = &will {
            table.order.insert((*at, id, Due::Will));
        }
        if let Some(at) = end {
            table.order.insert((at, id, Due::End));
        }
        table.waiting.insert(
            id,
            Waiting {
                session: Arc::clone(session),
                generation,
                will,
                end,
            },
        );
        let sooner = table.order.first().map(|(at, ..)| *at) != first;
        drop(table);
        if sooner {
            self.sooner.notify_one();
        }
    }

    /// Takes `session_id` out of the table (the session was resumed, replaced or ended);
    /// returns its Will if one was still waiting.
    pub fn cancel(&self, session_id: u64) -> Option<Box<Will>> {
        self.table()
            .remove(session_id)
            .and_then(|waiting| waiting.will.map(|(_, will)| will))
    }

    /// Sessions waiting.
    pub fn len(&self) -> usize {
        self.table().waiting.len()
    }

    /// Takes what is due at `now` out of the table: Wills go to `publish` at once, under the
    /// table's lock, so that a session resumed or replaced meanwhile ([`Expiry::cancel`]) either
    /// finds the Will still here or already sent, never lost in between; the sessions to end
    /// are returned with the generation that left them, and the next deadline with them.
    fn due(
        &self,
        now: Instant,
        mut publish: impl FnMut(Will, &Arc<SessionHandle>),
    ) -> (Vec<(Arc<SessionHandle>, u64)>, Option<Instant>) {
        let mut table = self.table();
        let mut ends = Vec::new();
        while let Some(&(at, id, what)) = table.order.first() {
            if at > now {
                break;
            }
            table.order.remove(&(at, id, what));
            let Some(waiting) = table.waiting.get_mut(&id) else {
                continue;
            };
            let away = {
                let session = waiting.session.lock();
                session.generation() == waiting.generation && session.outbox().is_none()
            };
            match what {
                Due::Will => {
                    if let Some((_, will)) = waiting.will.take()
                        && away
                    {
                        publish(*will, &waiting.session);
                    }
                    if waiting.end.is_none() {
                        table.waiting.remove(&id);
                    }
                }
                Due::End => {
                    if let Some(waiting) = table.remove(id)
                        && away
                    {
                        ends.push((waiting.session, waiting.generation));
                    }
                }
            }
        }
        (ends, table.order.first().map(|(at, ..)| *at))
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Publishes delayed Wills and ends expired sessions, for as long as the broker runs.
pub async fn run(broker: Arc<Broker>) {
    loop {
        // Registered before the table is read, so a sooner deadline added meanwhile wakes us.
        let mut sooner = std::pin::pin!(broker.expiry.sooner.notified());
        sooner.as_mut().enable();
        let (ends, next) = broker.expiry.due(Instant::now(), |will, session| {
            broker.publish_will(will, session)
        });
        for (session, generation) in ends {
            broker.end_session(&session, generation);
        }
        match next {
            Some(at) => {
                let at = tokio::time::Instant::from_std(at);
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = &mut sooner => {}
                }
            }
            None => sooner.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn will() -> Will {
        Will {
            topic: "w".into(),
            payload: bytes::Bytes::new(),
            qos: crate::protocol::QoS::AtMostOnce,
            retain: false,
            properties: Default::default(),
        }
    }

    #[test]
    fn deadlines_fall_due_in_order_and_a_cancelled_session_leaves_nothing_behind() {
        let expiry = Expiry::default();
        let a = SessionHandle::new("a");
        let b = SessionHandle::new("b");
        let ga = a.lock().generation();
        let gb = b.lock().generation();
        expiry.schedule(
            &a,
            ga,
            Some((Duration::ZERO, will())),
            Some(Duration::from_secs(60)),
        );
        expiry.schedule(&b, gb, None, Some(Duration::ZERO));
        assert_eq!(expiry.len(), 2);
        let mut wills = Vec::new();
        let (ends, next) = expiry.due(Instant::now(), |will, session| {
            wills.push((will, session.id()));
        });
        assert_eq!(wills.len(), 1);
        assert_eq!(wills[0].1, a.id());
        assert_eq!(ends.len(), 1);
        assert_eq!(ends[0].0.client_id(), "b");
        assert!(next.is_some(), "a's end is still to come");
        assert!(expiry.cancel(a.id()).is_none(), "its Will went already");
        assert_eq!(expiry.len(), 0);
        assert!(expiry.table().order.is_empty());
    }

    #[test]
    fn rescheduling_a_session_replaces_its_entry() {
        let expiry = Expiry::default();
        let a = SessionHandle::new("a");
        for _ in 0..1000 {
            expiry.schedule(&a, 0, None, Some(Duration::from_secs(3600)));
        }
        assert_eq!(expiry.len(), 1);
        assert_eq!(expiry.table().order.len(), 1);
    }
}
