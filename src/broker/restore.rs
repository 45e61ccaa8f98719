//! Start-up with a store: everything the store holds is read back into the broker before the
//! first client is served.
//!
//! Sessions come back offline, as their clients left them: subscriptions in the router (and so
//! announced to the other nodes), messages in flight first — sent again with DUP and their
//! packet ids when the client resumes — then the queued ones in order, and the inbound QoS 2
//! ids. They are taken in through the same door as a session moved from another node
//! ([`Broker::take_in`]), so they are checked the same way (filters against this node's limits and
//! ACL, messages against its queue bounds). Their clocks run on from when the client left: a
//! session whose expiry passed while the node was down ends now and a Will whose delay passed
//! goes out now (the expiry task does both as soon as the node serves); a session whose client
//! was still connected when the node stopped counts as left at start-up.
//!
//! Each restored message is written again under a new key and its old record deleted, so that
//! keys stay unique without carrying a counter in the file; the store's writer starts only
//! after the restore, so all of that is one transaction (a crash in the middle of it leaves
//! the store as it was). Records that cannot be read are logged, counted and deleted; they
//! never stop the start.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::store::{Contents, Entry, Mode, Store, Table};

use super::Broker;
use super::handover::{MovedMessage, SessionImage};
use super::message::Message;
use super::persist::{self, LoadedSession, Persist, Persisted};
use super::session::SessionHandle;
use super::version::LOGICAL_BITS;

/// What a start-up read back, for its log line.
#[derive(Debug, Default)]
pub struct Restored {
    pub sessions: usize,
    pub messages: usize,
    pub retained: usize,
    /// Records that could not be read (or no longer belonged to anything), deleted.
    pub damaged: usize,
    /// Sessions that expired while the node was down.
    pub expired: usize,
}

impl Broker {
    /// The sessions read back from the store whose clients have not connected since, with
    /// when each last connected: a peer that joins is told, so that a newer copy it holds wins
    /// (docs/ARCHITECTURE.md, "Persistence").
    pub(crate) fn restored_sessions(&self) -> Vec<(Arc<str>, u64)> {
        let handles: Vec<Arc<SessionHandle>> = self.sessions().values().cloned().collect();
        handles
            .into_iter()
            .filter_map(|handle| {
                let mut session = handle.lock();
                let restored = session.generation() == 0 && session.persisted().is_some();
                restored.then(|| (handle.client_id_shared(), session.connected_at()))
            })
            .collect()
    }

    /// When the client of `client_id`'s session here last connected, if there is one.
    pub(crate) fn session_connected_at(&self, client_id: &str) -> Option<u64> {
        let handle = self.sessions().get(client_id).cloned()?;
        let connected_at = handle.lock().connected_at();
        Some(connected_at)
    }

    /// Takes in what the store holds and keeps everything from now on in it. Called once, at
    /// start-up, before the node serves (and after it joined its cluster, so retained
    /// tombstones are kept for the cluster's period).
    pub fn restore(&self, store: Store, mode: Mode, mut contents: Contents) -> Restored {
        let mut restored = Restored::default();
        let sessions = contents.take(Table::Sessions);
        let messages = contents.take(Table::Messages);
        let flights = contents.take(Table::Flights);
        let inbound = contents.take(Table::Inbound);
        let retained = contents.take(Table::Retained);

        let mut loaded_sessions = Vec::with_capacity(sessions.len());
        for (client_id, value) in sessions {
            match persist::read_session(&client_id, &value) {
                Ok(loaded) => loaded_sessions.push(loaded),
                Err(error) => {
                    tracing::warn!(%error, "session in the store cannot be read; deleted");
                    restored.damaged += 1;
                    store.delete(Table::Sessions, client_id);
                }
            }
        }
        // Every number in the file, so new ones are above them all.
        let first = messages
            .iter()
            .chain(&flights)
            .chain(&inbound)
            .filter_map(|(key, _)| persist::split_key(key))
            .flat_map(|(session, seq)| [session, seq])
            .chain(loaded_sessions.iter().map(|loaded| loaded.id))
            .max()
            .unwrap_or(0)
            + 1;
        // Retained messages first, read straight into the store's memory (they are on disk).
        let period = self.retained_store().tombstone_period();
        for (topic, value) in retained {
            match persist::read_retained(&value) {
                // A clear's tombstone past its period (counted from the clear's clock
                // reading) is not needed any more.
                Ok(Some((publish, version)))
                    if publish.payload.is_empty()
                        && persist::since(version.hlc >> LOGICAL_BITS) >= period =>
                {
                    store.delete(Table::Retained, topic);
                }
                Ok(Some((publish, version))) => {
                    let mut message = Message::from_route(publish);
                    message.retain = true;
                    self.hlc.merge(version.hlc);
                    message.version = Some(version);
                    self.retained_store_mut().store(Arc::new(message));
                    restored.retained += 1;
                }
                Ok(None) => store.delete(Table::Retained, topic),
                Err(error) => {
                    tracing::warn!(%error, "retained message in the store cannot be read; deleted");
                    restored.damaged += 1;
                    store.delete(Table::Retained, topic);
                }
            }
        }

        let persist = Persist::new(store.clone(), mode, first);
        let mut by_session: HashMap<u64, Vec<Entry>> = HashMap::new();
        for (key, value) in messages {
            if let Some((session, _)) = persist::split_key(&key) {
                by_session.entry(session).or_default().push((key, value));
            }
        }
        let mut flights: HashMap<Vec<u8>, Vec<u8>> = flights.into_iter().collect();
        let mut inbound_ids: HashMap<u64, Vec<u16>> = HashMap::new();
        for (key, _) in &inbound {
            if let Some((session, id)) = persist::split_key(key) {
                inbound_ids
                    .entry(session)
                    .or_default()
                    .push(u16::try_from(id).unwrap_or(0));
            }
        }
        for loaded in loaded_sessions {
            let records = by_session.remove(&loaded.id).unwrap_or_default();
            let mut in_flight = Vec::new();
            let mut queued = Vec::new();
            for (key, value) in records {
                let flight = flights.remove(&key);
                let read = persist::read_message(&value).and_then(|mut moved| {
                    if let Some(flight) = flight {
                        moved.in_flight = Some(persist::read_flight(&flight)?);
                    }
                    Ok(moved)
                });
                // The record (and its flight state) goes either way: a readable one is written
                // again below.
                store.delete(Table::Messages, key);
                match read {
                    Ok(moved) if moved.in_flight.is_some() => in_flight.push(moved),
                    Ok(moved) => queued.push(moved),
                    Err(error) => {
                        tracing::warn!(%error, client_id = loaded.client_id, "message in the store cannot be read; deleted");
                        restored.damaged += 1;
                    }
                }
            }
            in_flight.extend(queued);
            restored.messages += in_flight.len();
            let ids = inbound_ids.remove(&loaded.id).unwrap_or_default();
            if self.restore_session(&persist, loaded, in_flight, ids) {
                restored.expired += 1;
            }
            restored.sessions += 1;
        }
        // Records of no session (it ended between their write and its record's delete) or
        // of no message.
        for (key, _) in by_session.into_values().flatten() {
            restored.damaged += 1;
            store.delete(Table::Messages, key);
        }
        for key in flights.into_keys() {
            store.delete(Table::Flights, key);
        }
        for session in inbound_ids.into_keys() {
            store.delete_prefix(Table::Inbound, session.to_be_bytes().to_vec());
        }
        if self.persist.set(persist).is_err() {
            tracing::error!("the store was restored twice; the second is ignored");
        }
        restored
    }

    /// Makes one stored session live again, offline; returns true if it expired while the
    /// node was down (it ends as soon as the node serves, after its Will).
    fn restore_session(
        &self,
        persist: &Arc<Persist>,
        loaded: LoadedSession,
        messages: Vec<MovedMessage>,
        inbound_qos2: Vec<u16>,
    ) -> bool {
        let client_id: Arc<str> = loaded.client_id.as_str().into();
        let username: Option<Arc<str>> = loaded.username.as_deref().map(Arc::from);
        let handle = SessionHandle::for_user(Arc::clone(&client_id), username.clone());
        let away = if loaded.away_since == 0 {
            Duration::ZERO
        } else {
            persist::since(loaded.away_since)
        };
        let expiry = loaded.expiry_interval;
        let left = |secs: u32| Duration::from_secs(u64::from(secs)).saturating_sub(away);
        let generation = {
            let mut session = handle.lock();
            session.expiry_interval = expiry;
            session.set_connected_at(loaded.connected_at);
            let mut persisted = Persisted::with_id(persist, loaded.id, client_id, username);
            persisted.will.clone_from(&loaded.will);
            persisted.away_since = if loaded.away_since == 0 {
                persist::wall_ms()
            } else {
                loaded.away_since
            };
            session.persist(persisted);
            let image = SessionImage {
                subscriptions: loaded.subscriptions,
                messages,
                inbound_qos2,
            };
            let (refused, dropped) = self.take_in(&handle, &mut session, image);
            if refused > 0 || dropped > 0 {
                tracing::warn!(
                    client_id = %handle.client_id(),
                    refused_subscriptions = refused,
                    dropped_messages = dropped,
                    "part of a stored session was not taken back (this node's limits, ACL or queue bounds now)"
                );
            }
            session.save();
            session.generation()
        };
        self.sessions()
            .insert(handle.client_id_shared(), Arc::clone(&handle));
        let will = loaded.will.map(|will| {
            let delay = will.properties.will_delay_interval.unwrap_or(0).min(expiry);
            (left(delay), will)
        });
        let end = (expiry != u32::MAX).then(|| left(expiry));
        let expired = end.is_some_and(|end| end.is_zero());
        self.expiry.schedule(&handle, generation, will, end);
        expired
    }
}
