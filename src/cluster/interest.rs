//! What one peer is interested in: its plain filters and its consumer groups with their
//! member counts, in a trie like the local router's (with its branches, [`Branches`]).
//!
//! Each route owns one [`Interest`]; it is filled from the peer's interest frames and dropped
//! with the route, so nothing learned from a peer outlives its route. Matching walks only the
//! branches that can match a topic, as in the router. The number of filters is bounded by
//! `cluster.max_peer_interest`.
//!
//! Inserting, pruning and dropping loop over a filter's levels instead of recursing, so no
//! filter, however deep, can overflow the stack; filters are also validated before they get
//! here ([`super::validate`]), which is what bounds the matching walk's recursion.

use std::collections::HashMap;

use crate::broker::Branches;

/// A group's members on one node: connected, and waiting offline in persistent sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Members {
    pub online: u32,
    pub offline: u32,
}

/// The peer declared more filters than `cluster.max_peer_interest` allows.
#[derive(Debug, thiserror::Error)]
#[error("peer declared more than {0} filters (cluster.max_peer_interest)")]
pub struct InterestFull(pub usize);

#[derive(Default)]
struct Node {
    children: Branches<Node>,
    /// The filter ending here, once something was declared on it.
    filter: Option<Box<str>>,
    plain: bool,
    /// Group name → members on the peer.
    groups: HashMap<Box<str>, Members>,
}

/// Frees a subtree with a loop: the maps' own drop would recurse once per level.
impl Drop for Node {
    fn drop(&mut self) {
        let mut below: Vec<Node> = self.children.take_all();
        while let Some(mut node) = below.pop() {
            below.extend(node.children.take_all());
        }
    }
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && !self.plain && self.groups.is_empty()
    }

    /// (plain filters, groups) declared on this node: 0 or 1, and any number.
    fn entries(&self) -> (usize, usize) {
        (usize::from(self.plain), self.groups.len())
    }
}

/// One peer's interest.
pub struct Interest {
    root: Node,
    /// Plain filters and (group, filter) pairs declared: most peers have no groups, or no
    /// plain filters, and then matching for them need not walk the trie at all.
    plain: usize,
    grouped: usize,
    max: usize,
}

impl Interest {
    pub fn new(max: usize) -> Interest {
        Interest {
            root: Node::default(),
            plain: 0,
            grouped: 0,
            max,
        }
    }

    /// The peer has a plain subscriber to `filter`.
    pub fn add(&mut self, filter: &str) -> Result<(), InterestFull> {
        let exists = self.find(filter).is_some_and(|node| node.plain);
        if !exists {
            self.room()?;
            self.apply(filter, |node| node.plain = true);
        }
        Ok(())
    }

    /// The peer has no plain subscriber to `filter` any more.
    pub fn remove(&mut self, filter: &str) {
        if self.find(filter).is_some_and(|node| node.plain) {
            self.apply(filter, |node| node.plain = false);
        }
    }

    /// The peer has `members` of group (`group`, `filter`); none at all removes the group.
    pub fn set_group(
        &mut self,
        group: &str,
        filter: &str,
        members: Members,
    ) -> Result<(), InterestFull> {
        let exists = self
            .find(filter)
            .is_some_and(|node| node.groups.contains_key(group));
        if members.online == 0 && members.offline == 0 {
            if exists {
                self.apply(filter, |node| {
                    node.groups.remove(group);
                });
            }
            return Ok(());
        }
        if !exists {
            self.room()?;
        }
        self.apply(filter, |node| {
            node.groups.insert(group.into(), members);
        });
        Ok(())
    }

    fn room(&self) -> Result<(), InterestFull> {
        if self.plain + self.grouped >= self.max {
            return Err(InterestFull(self.max));
        }
        Ok(())
    }

    fn find(&self, filter: &str) -> Option<&Node> {
        filter
            .split('/')
            .try_fold(&self.root, |node, level| node.children.get(level))
    }

    /// Applies `f` to the node of `filter` (created if missing), keeps the entry counts, and
    /// prunes the branch if it is left empty.
    fn apply(&mut self, filter: &str, f: impl FnOnce(&mut Node)) {
        let mut node = &mut self.root;
        for level in filter.split('/') {
            node = node.children.get_or_default(level);
        }
        let before = node.entries();
        f(node);
        node.filter.get_or_insert_with(|| filter.into());
        let after = node.entries();
        let emptied = node.is_empty();
        self.plain = self.plain + after.0 - before.0;
        self.grouped = self.grouped + after.1 - before.1;
        if emptied {
            self.prune(filter);
        }
    }

    /// Removes the branch of `filter`, whose node is empty, up to the deepest node on its path
    /// that holds something else (the root stays).
    fn prune(&mut self, filter: &str) {
        let mut cut = 0;
        let mut node = &self.root;
        for (depth, level) in filter.split('/').enumerate() {
            if node.children.len() > 1 || node.plain || !node.groups.is_empty() {
                cut = depth;
            }
            let Some(child) = node.children.get(level) else {
                return;
            };
            node = child;
        }
        let mut levels = filter.split('/');
        let mut node = &mut self.root;
        for level in levels.by_ref().take(cut) {
            let Some(child) = node.children.get_mut(level) else {
                return;
            };
            node = child;
        }
        if let Some(level) = levels.next() {
            node.children.remove(level);
        }
    }

    /// True if the peer declared any consumer group.
    pub fn has_groups(&self) -> bool {
        self.grouped > 0
    }

    /// The members the peer has in each of its groups whose filter matches `topic`.
    pub fn groups(&self, topic: &str, mut found: impl FnMut(&str, &str, Members)) {
        if self.grouped == 0 {
            return;
        }
        walk(&self.root, topic, &mut |node| {
            if let Some(filter) = &node.filter {
                for (group, members) in &node.groups {
                    found(group, filter, *members);
                }
            }
        });
    }

    /// True if a plain filter of the peer matches `topic`.
    pub fn matches(&self, topic: &str) -> bool {
        if self.plain == 0 {
            return false;
        }
        let mut found = false;
        walk(&self.root, topic, &mut |node| {
            found |= node.plain;
        });
        found
    }
}

/// The walk recurses once per level it descends, so its depth is at most the trie's, which is
/// at most `limits.max_topic_levels`: every filter in the trie was validated first
/// (`super::validate`), and so was every topic matched against it (a peer's there, a local
/// client's in the broker).
fn walk<'a>(node: &'a Node, topic: &str, visit: &mut impl FnMut(&'a Node)) {
    // MQTT-4.7.2-1: a topic starting with '$' is not matched by a leading wildcard.
    collect(node, Some(topic), !topic.starts_with('$'), visit);
}

/// Visits the nodes under `node` whose filters match `rest`, the topic's levels still to
/// match (`None` once all are). Levels are cut off the front as the walk descends, so
/// matching allocates nothing: it runs for every message and every peer.
fn collect<'a>(
    node: &'a Node,
    rest: Option<&str>,
    wildcards: bool,
    visit: &mut impl FnMut(&'a Node),
) {
    if wildcards && let Some(hash) = node.children.hash() {
        visit(hash);
    }
    let Some(levels) = rest else {
        visit(node);
        return;
    };
    let (first, rest) = match levels.split_once('/') {
        Some((first, rest)) => (first, Some(rest)),
        None => (levels, None),
    };
    if let Some(child) = node.children.literal(first) {
        collect(child, rest, true, visit);
    }
    if wildcards && let Some(plus) = node.children.plus() {
        collect(plus, rest, true, visit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_interest_matches_with_wildcards_and_goes_away() {
        let mut interest = Interest::new(10);
        interest.add("a/+/c").unwrap();
        interest.add("x/#").unwrap();
        assert!(interest.matches("a/b/c"));
        assert!(interest.matches("x"));
        assert!(!interest.matches("a/b"));
        assert!(!interest.matches("$x/y"));
        interest.remove("a/+/c");
        interest.remove("x/#");
        assert!(!interest.matches("a/b/c"));
        assert_eq!(interest.plain + interest.grouped, 0);
        assert!(interest.root.is_empty());
    }

    fn online(online: u32) -> Members {
        Members { online, offline: 0 }
    }

    #[test]
    fn groups_are_not_plain_interest() {
        let mut interest = Interest::new(10);
        interest.set_group("g", "t/#", online(3)).unwrap();
        interest.set_group("h", "t/+", online(1)).unwrap();
        let mut found = Vec::new();
        interest.groups("t/1", |g, f, n| {
            found.push((g.to_string(), f.to_string(), n))
        });
        found.sort();
        assert_eq!(
            found,
            [
                ("g".into(), "t/#".into(), online(3)),
                ("h".into(), "t/+".into(), online(1))
            ]
        );
        interest.set_group("h", "t/+", online(0)).unwrap();
        assert!(!interest.matches("t/1"));
        assert_eq!((interest.plain, interest.grouped), (0, 1));
        interest.set_group("g", "t/#", online(0)).unwrap();
        assert_eq!(interest.plain + interest.grouped, 0);
        assert!(interest.root.is_empty());
    }

    /// The trie walk agrees with the MQTT matching rules on every filter/topic pair of a
    /// table that covers empty levels, wildcards at each position and `$` topics.
    #[test]
    fn matching_agrees_with_the_topic_rules() {
        let filters = [
            "#", "+", "a", "a/#", "a/+", "+/b", "a/+/c", "a//b", "/+", "+/+", "$SYS/#", "a/b/", "",
            "+/#",
        ];
        let topics = [
            "a", "a/b", "a/b/c", "a//b", "/", "/a", "a/", "", "$SYS/x", "$SYS", "b/b", "a/b/",
        ];
        for filter in filters {
            let mut interest = Interest::new(100);
            interest.add(filter).unwrap();
            for topic in topics {
                assert_eq!(
                    interest.matches(topic),
                    crate::protocol::topic::matches(filter, topic),
                    "filter {filter:?}, topic {topic:?}"
                );
            }
        }
    }

    /// Removing a filter prunes its branch up to the nodes that still hold something.
    #[test]
    fn pruning_keeps_what_other_filters_share() {
        let mut interest = Interest::new(10);
        interest.add("a/b/c/d").unwrap();
        interest.add("a/b").unwrap();
        interest.set_group("g", "a/x", online(1)).unwrap();
        interest.remove("a/b/c/d");
        let a = &interest.root.children["a"];
        assert_eq!(a.children.len(), 2);
        assert!(a.children["b"].children.is_empty(), "c and d are gone");
        assert!(interest.matches("a/b"));
        interest.remove("a/b");
        assert_eq!(interest.root.children["a"].children.len(), 1, "b is gone");
        interest.set_group("g", "a/x", online(0)).unwrap();
        assert!(interest.root.is_empty());
    }

    /// Insert, prune and drop loop instead of recursing: filters 65,535 levels deep (which
    /// validation refuses before they get here) cost no stack.
    #[test]
    fn filters_of_65535_levels_are_inserted_pruned_and_dropped_without_recursion() {
        for filter in ["/".repeat(65_535), "a/".repeat(32_767) + "a"] {
            let mut interest = Interest::new(10);
            interest.add(&filter).unwrap();
            interest.set_group("g", &filter, online(2)).unwrap();
            interest.add("x").unwrap();
            assert!(interest.matches("x"));
            interest.remove(&filter);
            interest.set_group("g", &filter, online(0)).unwrap();
            assert_eq!((interest.plain, interest.grouped), (1, 0));
            assert_eq!(interest.root.children.len(), 1, "only x is left");
            interest.add(&filter).unwrap();
            drop(interest);
        }
    }

    #[test]
    fn the_table_is_bounded() {
        let mut interest = Interest::new(2);
        interest.add("a").unwrap();
        interest.add("b").unwrap();
        interest.add("a").unwrap();
        assert!(interest.add("c").is_err());
        assert!(interest.set_group("g", "a", online(1)).is_err());
        assert!(!interest.matches("c"));
        interest.remove("a");
        interest.add("c").unwrap();
        assert_eq!(interest.plain + interest.grouped, 2);
    }
}
