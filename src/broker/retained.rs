//! Retained messages (MQTT §3.3.1.3): the last retained message of each topic, handed to new
//! subscribers.
//!
//! Bounded by count and by payload bytes. When a new topic would pass either bound it is not
//! retained (the message is still delivered to current subscribers) and the store says so;
//! replacing or clearing an existing topic always works, so a full store never blocks a
//! topic's owner from updating it.
//!
//! The messages live in a trie of topic levels, like the router's, so a subscription finds its
//! retained messages by walking the branches its filter can match rather than by scanning the
//! store: `a/b/+` costs the children of `a/b`, not every retained topic. Walks are iterative,
//! and a filter's matches are taken only up to what the subscriber's queue can hold, so one
//! SUBSCRIBE costs at most that much, however large the store.
//!
//! On a cluster every set and clear carries a [`Version`] and the newest wins: a message or
//! clear older than (or as old as) what the store has for its topic is refused
//! ([`Stored::Stale`]). A clear leaves a **tombstone** (the topic's version, no payload) for
//! the tombstone period (`cluster.retained_tombstone_secs`), so an older message a peer still
//! holds cannot come back when a route heals. Tombstones are bounded apart from the messages
//! but by the same limits (`limits.max_retained_messages` tombstones, their topics at most
//! `limits.max_retained_bytes`); past either, the oldest goes first. A standalone broker keeps
//! none (its period is zero).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::message::Message;
use super::version::Version;

/// Outcome of [`Retained::store`].
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Kept,
    Cleared,
    /// Not kept: the store is at its count or byte limit.
    Full,
    /// Not applied: the store has a version of the topic as new or newer.
    Stale,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
    /// The topic's last clear, while remembered (never with a message).
    tombstone: Option<Tombstone>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.message.is_none() && self.tombstone.is_none() && self.children.is_empty()
    }

    /// The version of what the node holds, message or tombstone.
    fn version(&self) -> Option<&Version> {
        match (&self.message, &self.tombstone) {
            (Some(message), _) => message.version.as_ref(),
            (None, Some(tombstone)) => Some(&tombstone.version),
            (None, None) => None,
        }
    }
}

struct Tombstone {
    version: Version,
    /// Its key in [`Retained::buried`].
    seq: u64,
}

/// The retained messages, by topic.
pub struct Retained {
    root: Node,
    count: usize,
    /// Nodes in the trie, root excluded: what a walk of the whole store visits.
    nodes: usize,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
    /// The tombstones, oldest first: when each was laid, and its topic.
    buried: BTreeMap<u64, (Instant, Box<str>)>,
    next_seq: u64,
    /// Bytes of the tombstones' topics.
    buried_bytes: usize,
    /// How long a tombstone is kept; zero keeps none.
    tombstone_period: Duration,
}

impl Retained {
    pub fn new(max_messages: usize, max_bytes: usize) -> Retained {
        Retained {
            root: Node::default(),
            count: 0,
            nodes: 0,
            bytes: 0,
            max_messages,
            max_bytes,
            buried: BTreeMap::new(),
            next_seq: 0,
            buried_bytes: 0,
            tombstone_period: Duration::ZERO,
        }
    }

    /// Keeps a clear's tombstone for `period` (zero: none, as a standalone broker).
    pub fn set_tombstone_period(&mut self, period: Duration) {
        self.tombstone_period = period;
        self.expire_tombstones(Instant::now());
    }

    /// How long a clear's tombstone is kept.
    pub fn tombstone_period(&self) -> Duration {
        self.tombstone_period
    }

    /// Stores `message` as its topic's retained message; an empty payload clears it
    /// (MQTT-3.3.1-10, 3.3.1-11), leaving a tombstone if it has a version. A message with a
    /// version is applied only if it is newer than the topic's message or tombstone. When
    /// full, expired messages are purged before giving up.
    pub fn store(&mut self, message: Arc<Message>) -> Stored {
        let now = Instant::now();
        self.expire_tombstones(now);
        if let Some(version) = &message.version
            && self
                .version_of(&message.topic)
                .is_some_and(|have| have >= version)
        {
            return Stored::Stale;
        }
        if message.payload.is_empty() {
            self.remove(&message.topic);
            if let Some(version) = &message.version {
                self.bury(&message.topic, version.clone(), now);
            }
            return Stored::Cleared;
        }
        match self.try_store(Arc::clone(&message)) {
            Stored::Full => {
                self.purge_expired();
                self.try_store(message)
            }
            stored => stored,
        }
    }

    fn try_store(&mut self, message: Arc<Message>) -> Stored {
        let old_bytes = self.get(&message.topic).map(|old| old.payload.len());
        let bytes = self.bytes - old_bytes.unwrap_or(0) + message.payload.len();
        let is_new = old_bytes.is_none();
        if (is_new && self.count >= self.max_messages) || bytes > self.max_bytes {
            return Stored::Full;
        }
        let mut node = &mut self.root;
        for level in message.topic.split('/') {
            node = node.children.entry(level.into()).or_insert_with(|| {
                self.nodes += 1;
                Node::default()
            });
        }
        node.message = Some(message);
        if let Some(tombstone) = node.tombstone.take()
            && let Some((_, topic)) = self.buried.remove(&tombstone.seq)
        {
            self.buried_bytes -= topic.len();
        }
        self.bytes = bytes;
        self.count += usize::from(is_new);
        Stored::Kept
    }

    fn node(&self, topic: &str) -> Option<&Node> {
        topic
            .split('/')
            .try_fold(&self.root, |node, level| node.children.get(level))
    }

    /// `topic`'s retained message, expired or not.
    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        self.node(topic)?.message.as_ref()
    }

    /// The version of `topic`'s last clear, while its tombstone is within the period.
    pub fn tombstone(&self, topic: &str) -> Option<Version> {
        let tombstone = self.node(topic)?.tombstone.as_ref()?;
        let (laid, _) = self.buried.get(&tombstone.seq)?;
        (Instant::now().saturating_duration_since(*laid) < self.tombstone_period)
            .then(|| tombstone.version.clone())
    }

    /// The version of `topic`'s message or tombstone, if it has one.
    pub fn version_of(&self, topic: &str) -> Option<&Version> {
        self.node(topic)?.version()
    }

    /// Removes `topic`'s message and prunes the branch it leaves empty.
    fn remove(&mut self, topic: &str) {
        let levels: Vec<&str> = topic.split('/').collect();
        if let Some(old) = edit(&mut self.root, &levels, &mut self.nodes, &mut |node| {
            node.message.take()
        })
        .flatten()
        {
            self.bytes -= old.payload.len();
            self.count -= 1;
        }
    }

    /// Lays a tombstone for `topic` (which has no message now), unless tombstones are off;
    /// past the bounds the oldest tombstones go.
    fn bury(&mut self, topic: &str, version: Version, now: Instant) {
        if self.tombstone_period.is_zero() {
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut node = &mut self.root;
        for level in topic.split('/') {
            node = node.children.entry(level.into()).or_insert_with(|| {
                self.nodes += 1;
                Node::default()
            });
        }
        if let Some(old) = node.tombstone.replace(Tombstone { version, seq })
            && let Some((_, topic)) = self.buried.remove(&old.seq)
        {
            self.buried_bytes -= topic.len();
        }
        self.buried.insert(seq, (now, topic.into()));
        self.buried_bytes += topic.len();
        while self.buried.len() > self.max_messages || self.buried_bytes > self.max_bytes {
            self.unbury_oldest();
        }
    }

    /// Drops the tombstones older than the tombstone period.
    fn expire_tombstones(&mut self, now: Instant) {
        while let Some((_, (laid, _))) = self.buried.first_key_value()
            && now.saturating_duration_since(*laid) >= self.tombstone_period
        {
            self.unbury_oldest();
        }
    }

    fn unbury_oldest(&mut self) {
        let Some((seq, (_, topic))) = self.buried.pop_first() else {
            return;
        };
        self.buried_bytes -= topic.len();
        let levels: Vec<&str> = topic.split('/').collect();
        edit(&mut self.root, &levels, &mut self.nodes, &mut |node| {
            if node.tombstone.as_ref().is_some_and(|t| t.seq == seq) {
                node.tombstone = None;
            }
        });
    }

    /// Tombstones kept.
    pub fn tombstone_count(&self) -> usize {
        self.buried.len()
    }

    /// Every tombstone still within the tombstone period, as (topic, version).
    #[cfg(test)]
    pub fn tombstones(&self) -> Vec<(String, Version)> {
        let now = Instant::now();
        self.buried
            .values()
            .filter(|(laid, _)| now.saturating_duration_since(*laid) < self.tombstone_period)
            .filter_map(|(_, topic)| {
                let tombstone = self.node(topic)?.tombstone.as_ref()?;
                Some((topic.to_string(), tombstone.version.clone()))
            })
            .collect()
    }

    /// The live retained messages matching `filter` (a valid topic filter), at most `limit`
    /// of them, visiting at most `budget` nodes (taken off it); the flag says whether more
    /// matched, or the budget ran out first. Expired ones are skipped here and removed by
    /// [`Retained::purge_expired`].
    pub fn matching(
        &self,
        filter: &str,
        limit: usize,
        budget: &mut usize,
    ) -> (Vec<Arc<Message>>, bool) {
        let now = Instant::now();
        let levels: Vec<&str> = filter.split('/').collect();
        let mut found = Vec::new();
        let mut more = false;
        let mut keep = |message: &Arc<Message>| {
            if message.is_expired(now) {
                return true;
            }
            if found.len() == limit {
                more = true;
                return false;
            }
            found.push(Arc::clone(message));
            true
        };
        // (node, index of the filter level to match against its children)
        let mut stack = vec![(&self.root, 0usize)];
        'walk: while let Some((node, i)) = stack.pop() {
            if !spend(budget) {
                more = true;
                break;
            }
            let Some(level) = levels.get(i) else {
                if let Some(message) = &node.message
                    && !keep(message)
                {
                    break;
                }
                continue;
            };
            // MQTT-4.7.2-1: a topic starting with '$' is not matched by a leading wildcard.
            let visible = |name: &str| i > 0 || !name.starts_with('$');
            match *level {
                "#" => {
                    // '#' matches the parent level too: "a/#" matches "a" (MQTT-4.7.1-2).
                    if let Some(message) = &node.message
                        && !keep(message)
                    {
                        break;
                    }
                    let mut below: Vec<&Node> = node
                        .children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, child)| child)
                        .collect();
                    while let Some(next) = below.pop() {
                        if !spend(budget) {
                            more = true;
                            break 'walk;
                        }
                        if let Some(message) = &next.message
                            && !keep(message)
                        {
                            break 'walk;
                        }
                        below.extend(next.children.values());
                    }
                }
                "+" => stack.extend(
                    node.children
                        .iter()
                        .filter(|(name, _)| visible(name))
                        .map(|(_, child)| (child, i + 1)),
                ),
                literal => stack.extend(node.children.get(literal).map(|child| (child, i + 1))),
            }
        }
        (found, more)
    }

    /// Drops expired messages so they stop counting against the limits.
    fn purge_expired(&mut self) {
        let now = Instant::now();
        let expired: Vec<String> = self
            .all()
            .into_iter()
            .filter(|m| m.is_expired(now))
            .map(|m| m.topic.clone())
            .collect();
        for topic in expired {
            self.remove(&topic);
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    /// Nodes in the trie: the work of one walk over the whole store.
    pub fn nodes(&self) -> usize {
        self.nodes
    }

    /// Every retained message, expired or not.
    fn all(&self) -> Vec<Arc<Message>> {
        let mut out = Vec::with_capacity(self.count);
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            out.extend(node.message.iter().cloned());
            stack.extend(node.children.values());
        }
        out
    }

    /// The topics with a retained message or a tombstone, in no particular order: the cursor
    /// of a stream that fetches the messages and clears themselves a chunk at a time (a node
    /// joining the cluster).
    pub fn topics(&self) -> Vec<Box<str>> {
        let mut out = Vec::with_capacity(self.count + self.buried.len());
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            out.extend(node.message.iter().map(|m| Box::from(m.topic.as_str())));
            stack.extend(node.children.values());
        }
        out.extend(self.buried.values().map(|(_, topic)| Box::from(&**topic)));
        out
    }

    /// True if `topic` has a retained message.
    #[cfg(test)]
    pub fn contains(&self, topic: &str) -> bool {
        self.get(topic).is_some()
    }
}

/// Takes one node's visit off `budget`; false when it is spent.
fn spend(budget: &mut usize) -> bool {
    let left = budget.checked_sub(1);
    *budget = left.unwrap_or(0);
    left.is_some()
}

/// Applies `f` to the node at `levels` below `node`, if there is one, then prunes the nodes
/// left empty (counted off `nodes`). Recursive, one frame per level: topics are bounded by
/// `limits.max_topic_levels` (at most 1024) before they get here, from clients and peers alike.
fn edit<R>(
    node: &mut Node,
    levels: &[&str],
    nodes: &mut usize,
    f: &mut dyn FnMut(&mut Node) -> R,
) -> Option<R> {
    let Some((first, rest)) = levels.split_first() else {
        return Some(f(node));
    };
    let child = node.children.get_mut(*first)?;
    let done = edit(child, rest, nodes, f);
    if child.is_empty() {
        node.children.remove(*first);
        *nodes -= 1;
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Publish, topic};
    use bytes::Bytes;

    fn message(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(build(topic, payload))
    }

    fn build(topic: &str, payload: &str) -> Message {
        Message::from_publish(
            Publish {
                topic: topic.into(),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
                retain: true,
                ..Publish::default()
            },
            0,
        )
    }

    fn versioned(topic: &str, payload: &str, hlc: u64, node: &str) -> Arc<Message> {
        let mut message = build(topic, payload);
        message.version = Some(Version {
            hlc,
            node: node.into(),
        });
        Arc::new(message)
    }

    fn payload_of(store: &Retained, topic: &str) -> Option<String> {
        let message = store.get(topic)?;
        Some(String::from_utf8_lossy(&message.payload).into_owned())
    }

    fn topics(store: &Retained, filter: &str) -> Vec<String> {
        let mut budget = usize::MAX;
        let mut found: Vec<String> = store
            .matching(filter, usize::MAX, &mut budget)
            .0
            .iter()
            .map(|m| m.topic.clone())
            .collect();
        found.sort();
        found
    }

    /// The trie agrees with the topic matching rules on a table of filters and topics that
    /// covers empty levels, wildcards at each position and `$` topics.
    #[test]
    fn matching_agrees_with_the_topic_rules() {
        let all = [
            "a", "a/b", "a/b/c", "a//b", "/", "/a", "a/", "$SYS/x", "$SYS", "b/b", "a/b/",
        ];
        let mut store = Retained::new(100, 1 << 20);
        for t in all {
            assert_eq!(store.store(message(t, "x")), Stored::Kept);
        }
        for filter in [
            "#", "+", "a", "a/#", "a/+", "+/b", "a/+/c", "a//b", "/+", "+/+", "$SYS/#", "a/b/",
            "+/#", "$SYS", "+/+/+",
        ] {
            let mut expected: Vec<String> = all
                .iter()
                .filter(|t| topic::matches(filter, t))
                .map(|t| t.to_string())
                .collect();
            expected.sort();
            assert_eq!(topics(&store, filter), expected, "filter {filter:?}");
        }
    }

    #[test]
    fn a_match_is_cut_at_the_limit_and_says_so() {
        let mut store = Retained::new(100, 1 << 20);
        for i in 0..10 {
            store.store(message(&format!("t/{i}"), "x"));
        }
        let (found, more) = store.matching("t/#", 4, &mut 1000);
        assert_eq!((found.len(), more), (4, true));
        let (found, more) = store.matching("t/#", 10, &mut 1000);
        assert_eq!((found.len(), more), (10, false));
        assert_eq!(store.nodes(), 11, "t and its ten children");
        let mut budget = 5;
        let (found, more) = store.matching("t/#", 10, &mut budget);
        assert!(found.len() < 10 && more, "the budget ran out first");
        assert_eq!(budget, 0);
    }

    #[test]
    fn replacing_clearing_and_the_bounds() {
        let mut store = Retained::new(2, 10);
        assert_eq!(store.store(message("a/b", "1234")), Stored::Kept);
        assert_eq!(store.store(message("a/c", "1234")), Stored::Kept);
        assert_eq!(store.store(message("a/d", "1")), Stored::Full, "count");
        assert_eq!(
            store.store(message("a/b", "1234567")),
            Stored::Full,
            "bytes"
        );
        assert_eq!(store.store(message("a/b", "12")), Stored::Kept, "replaced");
        assert_eq!((store.len(), store.bytes), (2, 6));
        assert_eq!(store.store(message("a/b", "")), Stored::Cleared);
        assert_eq!(store.store(message("a/c", "")), Stored::Cleared);
        assert_eq!((store.len(), store.bytes), (0, 0));
        assert!(store.root.children.is_empty(), "empty branches are pruned");
        assert_eq!(store.nodes(), 0);
        assert!(!store.contains("a/b"));
    }

    #[test]
    fn the_newest_version_wins_whatever_the_order() {
        let mut store = Retained::new(100, 1 << 20);
        store.set_tombstone_period(Duration::from_secs(60));
        assert_eq!(
            store.store(versioned("door", "open", 10, "a")),
            Stored::Kept
        );
        assert_eq!(store.store(versioned("door", "old", 9, "z")), Stored::Stale);
        assert_eq!(
            store.store(versioned("door", "same", 10, "a")),
            Stored::Stale
        );
        assert_eq!(store.store(versioned("door", "tie", 10, "b")), Stored::Kept);
        assert_eq!(payload_of(&store, "door").as_deref(), Some("tie"));
        // A clear leaves a tombstone that an older set cannot get past...
        assert_eq!(store.store(versioned("door", "", 20, "a")), Stored::Cleared);
        assert!(!store.contains("door"));
        assert_eq!(store.tombstone_count(), 1);
        assert_eq!(
            store.store(versioned("door", "stale", 15, "c")),
            Stored::Stale
        );
        assert!(!store.contains("door"));
        assert_eq!(store.store(versioned("door", "", 19, "c")), Stored::Stale);
        assert_eq!(store.tombstones()[0].1.hlc, 20);
        // ...and a newer one can; the tombstone goes with it.
        assert_eq!(store.store(versioned("door", "new", 21, "a")), Stored::Kept);
        assert_eq!(payload_of(&store, "door").as_deref(), Some("new"));
        assert_eq!(store.tombstone_count(), 0);
        assert!(store.tombstones().is_empty());
        // A clear of a topic never seen is remembered too.
        assert_eq!(store.store(versioned("gate", "", 5, "a")), Stored::Cleared);
        assert_eq!(store.store(versioned("gate", "x", 4, "a")), Stored::Stale);
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn tombstones_expire_and_are_bounded_oldest_first() {
        let mut store = Retained::new(3, 1 << 20);
        store.set_tombstone_period(Duration::from_millis(200));
        for (i, topic) in ["t/0", "t/1", "t/2", "t/3"].iter().enumerate() {
            store.store(versioned(topic, "", 10 + i as u64, "a"));
        }
        assert_eq!(store.tombstone_count(), 3, "at most max_retained_messages");
        assert_eq!(store.version_of("t/0"), None, "the oldest went first");
        assert_eq!(store.store(versioned("t/0", "back", 1, "a")), Stored::Kept);
        assert_eq!(store.store(versioned("t/1", "back", 1, "a")), Stored::Stale);
        std::thread::sleep(Duration::from_millis(250));
        assert!(store.tombstones().is_empty(), "past the period");
        assert_eq!(store.store(versioned("t/1", "back", 1, "a")), Stored::Kept);
        assert_eq!(store.tombstone_count(), 0);
        assert_eq!(
            store.nodes(),
            3,
            "t, t/0 and t/1: expired branches are pruned"
        );
        // The topic bytes are bounded too.
        let mut store = Retained::new(100, 10);
        store.set_tombstone_period(Duration::from_secs(60));
        store.store(versioned("aaaa", "", 1, "a"));
        store.store(versioned("bbbb", "", 2, "a"));
        store.store(versioned("cccc", "", 3, "a"));
        assert_eq!(store.tombstone_count(), 2);
        assert_eq!(store.version_of("aaaa"), None);
        // A standalone store keeps none.
        let mut store = Retained::new(100, 1 << 20);
        store.store(versioned("a", "", 1, "a"));
        assert_eq!((store.tombstone_count(), store.nodes()), (0, 0));
    }
}
