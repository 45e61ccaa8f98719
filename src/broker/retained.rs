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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use super::message::Message;

/// Outcome of [`Retained::store`].
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Kept,
    Cleared,
    /// Not kept: the store is at its count or byte limit.
    Full,
}

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
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
        if message.payload.is_empty() {
            self.remove(&message.topic);
            return Stored::Cleared;
        }
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
        self.bytes = bytes;
        self.count += usize::from(is_new);
        Stored::Kept
    }

    /// `topic`'s retained message, expired or not.
    pub fn get(&self, topic: &str) -> Option<&Arc<Message>> {
        topic
            .split('/')
            .try_fold(&self.root, |node, level| node.children.get(level))?
            .message
            .as_ref()
    }

    /// Removes `topic`'s message and prunes the branch it leaves empty.
    fn remove(&mut self, topic: &str) {
        let levels: Vec<&str> = topic.split('/').collect();
        if let Some(old) = take(&mut self.root, &levels, &mut self.nodes) {
            self.bytes -= old.payload.len();
            self.count -= 1;
        }
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

    /// The topics with a retained message, in no particular order: the cursor of a stream
    /// that fetches the messages themselves a chunk at a time (a node joining the cluster).
    pub fn topics(&self) -> Vec<Box<str>> {
        let mut out = Vec::with_capacity(self.count);
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            out.extend(node.message.iter().map(|m| Box::from(m.topic.as_str())));
            stack.extend(node.children.values());
        }
        out
    }

    /// True if `topic` has a retained message.
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

/// Takes the message at `levels` below `node`, pruning the nodes left empty (counted off
/// `nodes`). Recursive, one frame per level: topics are bounded by `limits.max_topic_levels`
/// (at most 1024) before they get here, from clients and peers alike.
fn take(node: &mut Node, levels: &[&str], nodes: &mut usize) -> Option<Arc<Message>> {
    let Some((first, rest)) = levels.split_first() else {
        return node.message.take();
    };
    let child = node.children.get_mut(*first)?;
    let taken = take(child, rest, nodes);
    if child.message.is_none() && child.children.is_empty() {
        node.children.remove(*first);
        *nodes -= 1;
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Publish, topic};
    use bytes::Bytes;

    fn message(topic: &str, payload: &str) -> Arc<Message> {
        Arc::new(Message::from_publish(
            Publish {
                topic: topic.into(),
                payload: Bytes::copy_from_slice(payload.as_bytes()),
                retain: true,
                ..Publish::default()
            },
            0,
        ))
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
}
