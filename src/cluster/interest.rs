//! What one peer is interested in: its plain filters and its consumer groups with their
//! member counts, in a trie like the local router's.
//!
//! Each route owns one [`Interest`]; it is filled from the peer's interest frames and dropped
//! with the route, so nothing learned from a peer outlives its route. Matching walks only the
//! branches that can match a topic, as in the router. The number of filters is bounded by
//! `cluster.max_peer_interest`.

use std::collections::HashMap;

/// The peer declared more filters than `cluster.max_peer_interest` allows.
#[derive(Debug, thiserror::Error)]
#[error("peer declared more than {0} filters (cluster.max_peer_interest)")]
pub struct InterestFull(pub usize);

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    /// The filter ending here, once something was declared on it.
    filter: Option<Box<str>>,
    plain: bool,
    /// Group name → members on the peer.
    groups: HashMap<Box<str>, u32>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && !self.plain && self.groups.is_empty()
    }

    fn entries(&self) -> usize {
        usize::from(self.plain) + self.groups.len()
    }
}

/// One peer's interest.
pub struct Interest {
    root: Node,
    entries: usize,
    max: usize,
}

impl Interest {
    pub fn new(max: usize) -> Interest {
        Interest {
            root: Node::default(),
            entries: 0,
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

    /// The peer has `members` members of group (`group`, `filter`); 0 removes the group.
    pub fn set_group(
        &mut self,
        group: &str,
        filter: &str,
        members: u32,
    ) -> Result<(), InterestFull> {
        let exists = self
            .find(filter)
            .is_some_and(|node| node.groups.contains_key(group));
        if members == 0 {
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
        if self.entries >= self.max {
            return Err(InterestFull(self.max));
        }
        Ok(())
    }

    fn find(&self, filter: &str) -> Option<&Node> {
        filter
            .split('/')
            .try_fold(&self.root, |node, level| node.children.get(level))
    }

    /// Applies `f` to the node of `filter` (created if missing), keeps the entry count, and
    /// prunes branches left empty.
    fn apply(&mut self, filter: &str, f: impl FnOnce(&mut Node)) {
        let levels: Vec<&str> = filter.split('/').collect();
        let (before, after) = apply(&mut self.root, &levels, filter, f);
        self.entries = self.entries + after - before;
    }

    /// The members the peer has in each of its groups whose filter matches `topic`.
    pub fn groups(&self, topic: &str, mut found: impl FnMut(&str, &str, u32)) {
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
        let mut found = false;
        walk(&self.root, topic, &mut |node| {
            found |= node.plain;
        });
        found
    }
}

fn apply(
    node: &mut Node,
    levels: &[&str],
    filter: &str,
    f: impl FnOnce(&mut Node),
) -> (usize, usize) {
    let Some((first, rest)) = levels.split_first() else {
        let before = node.entries();
        f(node);
        node.filter.get_or_insert_with(|| filter.into());
        return (before, node.entries());
    };
    let child = node.children.entry((*first).into()).or_default();
    let counts = apply(child, rest, filter, f);
    if child.is_empty() {
        node.children.remove(*first);
    }
    counts
}

fn walk<'a>(node: &'a Node, topic: &str, visit: &mut impl FnMut(&'a Node)) {
    let levels: Vec<&str> = topic.split('/').collect();
    // MQTT-4.7.2-1: a topic starting with '$' is not matched by a leading wildcard.
    collect(node, &levels, !topic.starts_with('$'), visit);
}

fn collect<'a>(node: &'a Node, levels: &[&str], wildcards: bool, visit: &mut impl FnMut(&'a Node)) {
    if wildcards && let Some(hash) = node.children.get("#") {
        visit(hash);
    }
    let Some((first, rest)) = levels.split_first() else {
        visit(node);
        return;
    };
    if let Some(child) = node.children.get(*first) {
        collect(child, rest, true, visit);
    }
    if wildcards && let Some(plus) = node.children.get("+") {
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
        assert_eq!(interest.entries, 0);
        assert!(interest.root.is_empty());
    }

    #[test]
    fn groups_are_not_plain_interest() {
        let mut interest = Interest::new(10);
        interest.set_group("g", "t/#", 3).unwrap();
        interest.set_group("h", "t/+", 1).unwrap();
        let mut found = Vec::new();
        interest.groups("t/1", |g, f, n| {
            found.push((g.to_string(), f.to_string(), n))
        });
        found.sort();
        assert_eq!(
            found,
            [("g".into(), "t/#".into(), 3), ("h".into(), "t/+".into(), 1)]
        );
        interest.set_group("h", "t/+", 0).unwrap();
        assert!(!interest.matches("t/1"));
        assert_eq!(interest.entries, 1);
        interest.set_group("g", "t/#", 0).unwrap();
        assert_eq!(interest.entries, 0);
        assert!(interest.root.is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let mut interest = Interest::new(2);
        interest.add("a").unwrap();
        interest.add("b").unwrap();
        interest.add("a").unwrap();
        assert!(interest.add("c").is_err());
        assert!(interest.set_group("g", "a", 1).is_err());
        assert!(!interest.matches("c"));
        interest.remove("a");
        interest.add("c").unwrap();
        assert_eq!(interest.entries, 2);
    }
}
