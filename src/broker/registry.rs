//! The session table: which client id has which session, and what happens to a session when
//! connections come and go.
//!
//! - CONNECT with an id that has a session: a persistent session is resumed (session present),
//!   a clean start discards it; a connection still attached to it is told to close with
//!   "session taken over" (MQTT-3.1.4-3).
//! - Connection closed: the Will is published now, later (Will Delay Interval) or not at all
//!   (normal DISCONNECT, or the session resumed before the delay ran out); the session ends
//!   now (expiry 0) or after its expiry interval unless a connection resumes it first. The
//!   later ones wait in the broker's one [`super::expiry`] table, not in a task each.
//! - Sessions are bounded (`limits.max_sessions`): a CONNECT that needs a new one past it is
//!   refused.

use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use crate::protocol::{Will, reason};

use super::Broker;
use super::connect::{Refusal, Terms};
use super::groups::{self, Filter};
use super::handover::SessionImage;
use super::message::Message;
use super::outbox::Outbox;
use super::persist::Persisted;
use super::session::{Details, Sender, Session, SessionHandle};

/// The session a new connection got.
pub struct Opened {
    pub session: Arc<SessionHandle>,
    pub present: bool,
    pub generation: u64,
}

impl Broker {
    /// Finds or creates the session for `client_id` and attaches the connection to it.
    /// A new session past `limits.max_sessions` is refused (resuming or replacing one is not).
    /// `moved` is the client's session, handed over by another node ([`super::handover`]).
    pub(super) fn open_session(
        &self,
        terms: &Terms,
        outbox: Arc<Outbox>,
        moved: Option<SessionImage>,
    ) -> Result<Opened, Refusal> {
        let client_id = terms.client_id.as_str();
        let username = terms.username.as_deref();
        let (clean_start, expiry_interval) = (terms.clean_start, terms.session_expiry);
        let send_window = terms.send_window;
        let mut sessions = self.sessions();
        if !sessions.contains_key(client_id) && sessions.len() >= self.limits.max_sessions {
            return Err(Refusal {
                code: reason::QUOTA_EXCEEDED,
                why: "too many sessions (limits.max_sessions)",
            });
        }
        // The connection's stamp: two connections of one client id on two nodes at once are
        // told apart by it, the same way on both.
        let connected_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
            });
        if let Some(peers) = self.peers.get() {
            peers.client_connected(client_id, connected_at, clean_start);
        }
        if *self.shutdown.borrow() {
            // Under the session table's lock, so either this sees the flag or
            // `Broker::shutdown` sees the attached connection.
            outbox.close(reason::SERVER_SHUTTING_DOWN, "server shutting down");
        }
        if let Some(existing) = sessions.get(client_id).cloned() {
            // Resumed: a delayed Will is cancelled (MQTT-3.1.3-9). Replaced by a clean start:
            // the session ends, and a Will still waiting goes out now (MQTT-3.1.2-8).
            let waiting_will = self.expiry.cancel(existing.id());
            let mut session = existing.lock();
            if let Some(old) = session.outbox() {
                old.close(
                    reason::SESSION_TAKEN_OVER,
                    "another connection took over the session",
                );
            }
            // A session belongs to the user that made it: resumed by another user name, it
            // would hand over messages its ACL let through to someone else (mosquitto, too,
            // starts afresh then).
            let same_user = existing.access().username() == username;
            if !same_user && !clean_start {
                tracing::info!(
                    client_id,
                    "session not resumed: it belongs to another user name; starting a new one"
                );
            }
            if !clean_start && same_user {
                if moved.is_some() {
                    tracing::warn!(
                        client_id,
                        "a connection here resumed the session while another node handed it over: the handed-over copy is dropped"
                    );
                }
                session.expiry_interval = expiry_interval;
                session.set_details(details(terms));
                let generation = session.attach(outbox, send_window, connected_at);
                existing.set_online(true);
                self.keep_session(&existing, &mut session, terms);
                let groups = self.group_filters(&session);
                drop(session);
                self.report_groups(&groups);
                return Ok(Opened {
                    session: existing,
                    present: true,
                    generation,
                });
            }
            self.discard(&existing, session, waiting_will);
        }
        let handle = SessionHandle::for_user(client_id.into(), username.map(Arc::from));
        // A session moved from another node, unless a connection here made one meanwhile
        // (then the resumed one above was taken, and what moved is dropped with a line).
        let present = moved.is_some();
        let generation = {
            let mut session = handle.lock();
            session.expiry_interval = expiry_interval;
            // Kept in the store before what moved is taken in, so that it is written too.
            self.keep_session(&handle, &mut session, terms);
            if let Some(image) = moved {
                self.adopt(&handle, &mut session, image);
            }
            session.set_details(details(terms));
            let generation = session.attach(outbox, send_window, connected_at);
            handle.set_online(true);
            session.save();
            generation
        };
        sessions.insert(handle.client_id_shared(), Arc::clone(&handle));
        Ok(Opened {
            session: handle,
            present,
            generation,
        })
    }

    /// Keeps a connecting client's session in the store if it is persistent (expiry interval
    /// above 0) and the node has a store, with the connection's Will; writes its record. A
    /// session resumed with expiry 0 ends with its connection: it leaves the store now.
    fn keep_session(&self, handle: &Arc<SessionHandle>, session: &mut Session, terms: &Terms) {
        let Some(persist) = self.persist.get() else {
            return;
        };
        if session.expiry_interval == 0 {
            session.unpersist();
            return;
        }
        if session.persisted().is_none() {
            let username = handle.access().username().map(Arc::from);
            session.persist(Persisted::new(persist, handle.client_id_shared(), username));
        }
        if let Some(persisted) = session.persisted() {
            persisted.will.clone_from(&terms.will);
            persisted.away_since = 0;
        }
        session.save();
    }

    /// Ends a session a clean start replaced, here or on another node (MQTT-3.1.2-4), once it
    /// is out of the session table: its group messages go to other members, its filters out
    /// of the router, and a Will still waiting goes out now (MQTT-3.1.2-8).
    pub(super) fn discard(
        &self,
        handle: &Arc<SessionHandle>,
        mut session: MutexGuard<'_, Session>,
        waiting_will: Option<Box<Will>>,
    ) {
        let orphans = session.take_group_deliveries();
        let filters = session.retire();
        drop(session);
        self.unsubscribe_filters(filters.iter().map(String::as_str), handle.id());
        self.redispatch(orphans, handle.id());
        if let Some(will) = waiting_will {
            self.publish_will(*will, handle);
        }
    }

    /// The connection of `generation` has ended. `will` is the Will to publish, if the way
    /// the connection ended calls for it.
    pub(super) fn close_session(
        self: &Arc<Self>,
        handle: &Arc<SessionHandle>,
        generation: u64,
        will: Option<Will>,
    ) {
        let mut session = handle.lock();
        if !session.detach(generation, &self.bounds, &self.stats) {
            // Taken over by a newer connection. Its Will goes out unless the session was
            // resumed and the Will has a delay, which a resumption cancels (MQTT-3.1.3-9).
            drop(session);
            let resumed = self.is_current(handle);
            if let Some(will) = will
                && !(resumed && will_delay(&will) > 0)
            {
                self.publish_will(will, handle);
            }
            return;
        }
        handle.set_online(false);
        let expiry = session.expiry_interval;
        let orphans = session.take_group_deliveries();
        let groups = self.group_filters(&session);
        if let Some(persisted) = session.persisted() {
            // What a restart needs to know: since when it is away, and the Will still to go
            // (one with no delay goes now, below).
            persisted.away_since = super::persist::wall_ms();
            persisted.will = will.clone().filter(|will| will_delay(will).min(expiry) > 0);
            session.save();
        }
        drop(session);
        // Its groups now have one member fewer connected here (and one more offline, unless
        // the session ends now, which removes it).
        self.report_groups(&groups);

        // The Will goes now, or when its delay or the session ends, whichever comes first.
        let delayed_will = will.and_then(|will| match will_delay(&will).min(expiry) {
            0 => {
                self.publish_will(will, handle);
                None
            }
            delay => Some((secs(delay), will)),
        });
        match expiry {
            0 => self.end_session(handle, generation),
            // 0xFFFFFFFF: the session does not expire (MQTT 5 §3.1.2.11.2).
            u32::MAX => self.expiry.schedule(handle, generation, delayed_will, None),
            expiry => {
                self.expiry
                    .schedule(handle, generation, delayed_will, Some(secs(expiry)));
            }
        }
        // A group member that left hands its unacknowledged group messages on.
        self.redispatch(orphans, handle.id());
    }

    /// The consumer group filters `session` is a member of, when the other nodes need to hear
    /// about its coming and going (a cluster); none on a standalone broker.
    fn group_filters(&self, session: &Session) -> Vec<String> {
        if self.peers.get().is_none() {
            return Vec::new();
        }
        session
            .subscriptions()
            .keys()
            .filter(|filter| matches!(groups::parse(filter), Ok(Filter::Group { .. })))
            .cloned()
            .collect()
    }

    /// Tells the other nodes how many members of each of these groups are connected here.
    fn report_groups(&self, filters: &[String]) {
        let Some(peers) = self.peers.get() else {
            return;
        };
        if filters.is_empty() {
            return;
        }
        let router = self.router_mut();
        for filter in filters {
            super::report_interest(peers.as_ref(), &router, filter);
        }
    }

    /// True if `handle` is still the session registered for its client id.
    fn is_current(&self, handle: &Arc<SessionHandle>) -> bool {
        self.sessions()
            .get(handle.client_id())
            .is_some_and(|current| Arc::ptr_eq(current, handle))
    }

    /// Removes the session and its subscriptions, if the connection of `generation` was the
    /// last one and no other has attached since (a client that resumes the session just as it
    /// expires keeps it); checked under the session table's lock, which resuming takes too.
    pub(super) fn end_session(&self, handle: &Arc<SessionHandle>, generation: u64) {
        let mut sessions = self.sessions();
        if !sessions
            .get(handle.client_id())
            .is_some_and(|current| Arc::ptr_eq(current, handle))
        {
            return;
        }
        {
            let session = handle.lock();
            if session.generation() != generation || session.outbox().is_some() {
                return;
            }
        }
        sessions.remove(handle.client_id());
        drop(sessions);
        let waiting_will = self.expiry.cancel(handle.id());
        let (orphans, filters) = {
            let mut session = handle.lock();
            (session.take_group_deliveries(), session.retire())
        };
        self.unsubscribe_filters(filters.iter().map(String::as_str), handle.id());
        // An expired member's group messages, queued while it was away, go to another member.
        self.redispatch(orphans, handle.id());
        // A Will still waiting goes when the session ends (MQTT-3.1.2-8).
        if let Some(will) = waiting_will {
            self.publish_will(*will, handle);
        }
    }

    /// Publishes `session`'s Will, if the ACL in force now lets its client publish there.
    pub(super) fn publish_will(&self, will: Will, session: &SessionHandle) {
        if !self.auth.may_publish(session.access(), &will.topic) {
            self.stats.publishes_denied.inc();
            tracing::debug!(client_id = session.client_id(), topic = %will.topic, "will not published: not authorized (auth.acl_file)");
            return;
        }
        {
            // Published: a restart must not publish it again. (A session taken over by a
            // newer connection has that connection's Will in its record.)
            let mut state = session.lock();
            if state.outbox().is_none()
                && let Some(persisted) = state.persisted()
                && persisted.will.take().is_some()
            {
                state.save();
            }
        }
        tracing::debug!(topic = %will.topic, "publishing will");
        self.stats.wills_published.inc();
        // Nobody is left to slow down: a Will that meets a full queue is dropped and counted.
        self.publish(Message::from_will(will, session.id()), Sender::Broker);
    }
}

/// How a connection connected, for the admin API.
fn details(terms: &Terms) -> Details {
    Details {
        version: terms.version,
        peer: terms.peer,
        keep_alive: terms.keep_alive,
        clean_start: terms.clean_start,
    }
}

fn secs(secs: u32) -> Duration {
    Duration::from_secs(u64::from(secs))
}

fn will_delay(will: &Will) -> u32 {
    will.properties.will_delay_interval.unwrap_or(0)
}
