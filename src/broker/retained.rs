//! Retained messages (MQTT §3.3.1.3): the last retained message of each topic, handed to new
//! subscribers.
//!
//! Bounded by count and by payload bytes. When a new topic would pass either bound it is not
//! retained (the message is still delivered to current subscribers) and the store says so;
//! replacing or clearing an existing topic always works, so a full store never blocks a
//! topic's owner from updating it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use crate::protocol::topic;

use super::message::Message;

/// Outcome of [`Retained::store`].
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Kept,
    Cleared,
    /// Not kept: the store is at its count or byte limit.
    Full,
}

/// The retained messages, by topic.
pub struct Retained {
    messages: HashMap<String, Arc<Message>>,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Retained {
    pub fn new(max_messages: usize, max_bytes: usize) -> Retained {
        Retained {
            messages: HashMap::new(),
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Stores `message` as its topic's retained message; an empty payload clears it
    /// (MQTT-3.3.1-10, 3.3.1-11). When full, expired messages are purged before giving up.
    pub fn store(&mut self, message: Arc<Message>) -> Stored {
        match self.try_store(Arc::clone(&message)) {
            Stored::Full => {
                self.purge_expired();
                self.try_store(message)
            }
            stored => stored,
        }
    }

    fn try_store(&mut self, message: Arc<Message>) -> Stored {
        let old_bytes = self
            .messages
            .get(&message.topic)
            .map_or(0, |old| old.payload.len());
        if message.payload.is_empty() {
            self.messages.remove(&message.topic);
            self.bytes -= old_bytes;
            return Stored::Cleared;
        }
        let is_new = !self.messages.contains_key(&message.topic);
        let bytes = self.bytes - old_bytes + message.payload.len();
        if (is_new && self.messages.len() >= self.max_messages) || bytes > self.max_bytes {
            return Stored::Full;
        }
        self.bytes = bytes;
        self.messages.insert(message.topic.clone(), message);
        Stored::Kept
    }

    /// The live retained messages matching `filter`. Expired ones are skipped here and
    /// removed by [`Retained::purge_expired`].
    pub fn matching(&self, filter: &str) -> Vec<Arc<Message>> {
        let now = Instant::now();
        let live = |m: &&Arc<Message>| !m.is_expired(now);
        if !filter.contains(['+', '#']) {
            return self
                .messages
                .get(filter)
                .filter(live)
                .cloned()
                .into_iter()
                .collect();
        }
        self.messages
            .values()
            .filter(|m| topic::matches(filter, &m.topic))
            .filter(live)
            .cloned()
            .collect()
    }

    /// Drops expired messages so they stop counting against the limits.
    fn purge_expired(&mut self) {
        let now = Instant::now();
        let mut freed = 0;
        self.messages.retain(|_, m| {
            let keep = !m.is_expired(now);
            if !keep {
                freed += m.payload.len();
            }
            keep
        });
        self.bytes -= freed;
    }

    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Every retained message, expired or not (for a node joining the cluster).
    pub fn all(&self) -> Vec<Arc<Message>> {
        self.messages.values().cloned().collect()
    }

    /// True if `topic` has a retained message.
    pub fn contains(&self, topic: &str) -> bool {
        self.messages.contains_key(topic)
    }
}
