//! The subscription index: a trie of topic filters, one level per node.
//!
//! Matching a topic walks only the branches that can match it (the literal level, `+` and
//! `#` at each step), so its cost depends on the topic's depth and the matching filters, not on
//! how many unrelated subscriptions exist; subscribing and unsubscribing cost the same however
//! many others share the filter. The router is shared behind a read-write lock: publishes
//! only read it, subscribe and unsubscribe write it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use crate::protocol::{QoS, SubscriptionOptions};

use super::branches::Branches;
use super::groups::{self, Filter};
use super::session::SessionHandle;

/// One session's subscription to one filter.
#[derive(Clone)]
struct Subscriber {
    session: Arc<SessionHandle>,
    options: SubscriptionOptions,
    subscription_id: Option<u32>,
}

/// The subscribers of one filter (or one group's members): a list, for matching to walk, and
/// past [`INDEX_FROM`] entries an index by session, so that subscribing, resubscribing and
/// unsubscribing cost the same with a million subscribers to one filter as with one.
#[derive(Default)]
struct Subscribers {
    list: Vec<Subscriber>,
    /// Session id → position in `list`. Boxed and made only for long lists: a short list is
    /// searched as fast as a map is, and most trie nodes have none or a few.
    #[allow(clippy::box_collection)] // a HashMap is 48 bytes even when empty; the box is 8
    index: Option<Box<HashMap<u64, usize>>>,
}

/// Lists up to this long are searched; longer ones are indexed.
const INDEX_FROM: usize = 16;

impl Subscribers {
    fn position(&self, session_id: u64) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(&session_id).copied(),
            None => self.list.iter().position(|s| s.session.id() == session_id),
        }
    }

    /// Adds or replaces the session's subscription; true if it is new.
    fn upsert(&mut self, subscriber: Subscriber) -> bool {
        let id = subscriber.session.id();
        if let Some(i) = self.position(id) {
            self.list[i] = subscriber;
            return false;
        }
        self.list.push(subscriber);
        let last = self.list.len() - 1;
        match self.index.as_mut() {
            Some(index) => {
                index.insert(id, last);
            }
            None if self.list.len() > INDEX_FROM => {
                let index = self
                    .list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.session.id(), i))
                    .collect();
                self.index = Some(Box::new(index));
            }
            None => {}
        }
        true
    }

    /// Removes the session's subscription (the last one takes its place); true if it had one.
    fn remove(&mut self, session_id: u64) -> bool {
        let Some(i) = self.position(session_id) else {
            return false;
        };
        self.list.swap_remove(i);
        if let Some(index) = self.index.as_mut() {
            index.remove(&session_id);
            if let Some(moved) = self.list.get(i) {
                index.insert(moved.session.id(), i);
            }
        }
        true
    }

    fn len(&self) -> usize {
        self.list.len()
    }

    fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// A consumer group on one filter, and its members on this node.
pub struct Group {
    pub name: Box<str>,
    pub filter: Box<str>,
    members: Subscribers,
    /// Round-robin position.
    pub turn: AtomicUsize,
}

impl Group {
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// The member at `index`, as a match.
    pub fn member(&self, index: usize) -> Option<Match> {
        self.members.list.get(index).map(|s| Match {
            session: Arc::clone(&s.session),
            qos: s.options.qos,
            retain_as_published: s.options.retain_as_published,
            subscription_ids: s.subscription_id.into_iter().collect(),
        })
    }

    /// Members other than the session `except` that are connected (`online`) or not.
    pub fn count(&self, except: u64, online: bool) -> usize {
        self.eligible(except, online).count()
    }

    /// The `k`th of the members [`Group::count`] counts, as a match.
    pub fn pick(&self, except: u64, online: bool, k: usize) -> Option<Match> {
        let index = self.eligible(except, online).nth(k)?;
        self.member(index)
    }

    /// Members connected here and members whose sessions wait offline, for the other nodes.
    pub fn members(&self) -> (usize, usize) {
        let online = self.count(0, true);
        (online, self.len() - online)
    }

    fn eligible(&self, except: u64, online: bool) -> impl Iterator<Item = usize> + '_ {
        self.members
            .list
            .iter()
            .enumerate()
            .filter(move |(_, s)| s.session.id() != except && s.session.is_online() == online)
            .map(|(i, _)| i)
    }
}

#[derive(Default)]
struct Node {
    children: Branches<Node>,
    subscribers: Subscribers,
    /// Consumer groups on this node's filter, by name.
    groups: HashMap<Box<str>, Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// What one session gets for one message: its subscriptions that match, merged.
pub struct Match {
    pub session: Arc<SessionHandle>,
    /// The highest granted QoS of the matching subscriptions (MQTT-3.3.4-2 / 3.3.4-3).
    pub qos: QoS,
    /// Any matching subscription has Retain As Published.
    pub retain_as_published: bool,
    /// The identifiers of all matching subscriptions that have one.
    pub subscription_ids: Vec<u32>,
}

/// The subscription trie.
#[derive(Default)]
pub struct Router {
    root: Node,
    count: usize,
    /// Groups with members here, so publishing skips the group walk when there are none.
    groups: usize,
}

impl Router {
    /// Adds or replaces `session`'s subscription to `filter` (plain, or a group's
    /// `$share/{group}/{filter}` / `$g/...`). Returns true if it is new.
    pub fn subscribe(
        &mut self,
        filter: &str,
        session: &Arc<SessionHandle>,
        options: SubscriptionOptions,
        subscription_id: Option<u32>,
    ) -> bool {
        let parsed = groups::parse(filter).unwrap_or(Filter::Plain(filter));
        let levels = match parsed {
            Filter::Plain(f) | Filter::Group { filter: f, .. } => f,
        };
        let mut node = &mut self.root;
        for level in levels.split('/') {
            node = node.children.get_or_default(level);
        }
        let subscriber = Subscriber {
            session: Arc::clone(session),
            options,
            subscription_id,
        };
        let list = match parsed {
            Filter::Plain(_) => &mut node.subscribers,
            Filter::Group { group, filter } => {
                let groups = &mut self.groups;
                &mut node
                    .groups
                    .entry(group.into())
                    .or_insert_with(|| {
                        *groups += 1;
                        Group {
                            name: group.into(),
                            filter: filter.into(),
                            members: Subscribers::default(),
                            turn: AtomicUsize::new(0),
                        }
                    })
                    .members
            }
        };
        let new = list.upsert(subscriber);
        self.count += usize::from(new);
        new
    }

    /// Removes `session`'s subscription to `filter`. Returns true if there was one.
    pub fn unsubscribe(&mut self, filter: &str, session_id: u64) -> bool {
        let parsed = groups::parse(filter).unwrap_or(Filter::Plain(filter));
        let (levels, group) = match parsed {
            Filter::Plain(f) => (f, None),
            Filter::Group { group, filter } => (filter, Some(group)),
        };
        let levels: Vec<&str> = levels.split('/').collect();
        let removed = remove(&mut self.root, &levels, group, session_id, &mut self.groups);
        if removed {
            self.count -= 1;
        }
        removed
    }

    /// Subscriptions to exactly `filter` (for the cluster's 0 → 1 / 1 → 0 interest changes);
    /// for a group filter, the group's members here.
    /// A group's members here, connected and offline ([`Group::members`]); (0, 0) if none.
    pub fn group_members(&self, name: &str, filter: &str) -> (usize, usize) {
        self.group(name, filter).map_or((0, 0), Group::members)
    }

    pub fn filter_count(&self, filter: &str) -> usize {
        match groups::parse(filter).unwrap_or(Filter::Plain(filter)) {
            Filter::Plain(f) => self.node(f).map_or(0, |node| node.subscribers.len()),
            Filter::Group { group, filter } => self.group(group, filter).map_or(0, Group::len),
        }
    }

    /// The group (`name`, `filter`), if it has members here.
    pub fn group(&self, name: &str, filter: &str) -> Option<&Group> {
        self.node(filter).and_then(|node| node.groups.get(name))
    }

    fn node(&self, filter: &str) -> Option<&Node> {
        filter
            .split('/')
            .try_fold(&self.root, |node, level| node.children.get(level))
    }

    /// True if any consumer group has members here.
    pub fn has_groups(&self) -> bool {
        self.groups > 0
    }

    /// The groups whose filter matches `topic`.
    pub fn group_matches(&self, topic: &str) -> Vec<&Group> {
        let mut found = Vec::new();
        visit(&self.root, topic, &mut |node| {
            found.extend(node.groups.values())
        });
        found
    }

    /// Number of subscriptions in the index.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Every session with a subscription matching `topic`, one entry per session.
    /// Subscriptions with No Local are skipped for the publishing session `origin`.
    pub fn matches(&self, topic: &str, origin: u64) -> Vec<Match> {
        let mut found: Vec<Match> = Vec::new();
        visit(&self.root, topic, &mut |node| {
            found.extend(
                node.subscribers
                    .list
                    .iter()
                    .filter(|s| !(s.options.no_local && s.session.id() == origin))
                    .map(|s| Match {
                        session: Arc::clone(&s.session),
                        qos: s.options.qos,
                        retain_as_published: s.options.retain_as_published,
                        subscription_ids: s.subscription_id.into_iter().collect(),
                    }),
            )
        });
        merge(found)
    }
}

/// Removes a subscription; `groups` counts the groups left in the router.
fn remove(
    node: &mut Node,
    levels: &[&str],
    group: Option<&str>,
    session_id: u64,
    groups: &mut usize,
) -> bool {
    let Some((first, rest)) = levels.split_first() else {
        let Some(name) = group else {
            return node.subscribers.remove(session_id);
        };
        let Some(group) = node.groups.get_mut(name) else {
            return false;
        };
        let removed = group.members.remove(session_id);
        if group.members.is_empty() {
            node.groups.remove(name);
            *groups -= 1;
        }
        return removed;
    };
    let Some(child) = node.children.get_mut(first) else {
        return false;
    };
    let removed = remove(child, rest, group, session_id, groups);
    // Prune empty branches so the trie does not keep the shape of every filter ever used.
    if child.is_empty() {
        node.children.remove(first);
    }
    removed
}

/// Calls `f` on every node whose filter matches `topic`.
fn visit<'a>(root: &'a Node, topic: &str, f: &mut impl FnMut(&'a Node)) {
    // MQTT-4.7.2-1: a topic starting with '$' is not matched by a leading wildcard.
    collect(root, topic.split('/'), !topic.starts_with('$'), f);
}

/// `levels` is the rest of the topic, as an iterator (cloned where the walk branches) rather
/// than a list: a publish need not allocate one.
fn collect<'a>(
    node: &'a Node,
    mut levels: std::str::Split<'_, char>,
    wildcards: bool,
    f: &mut impl FnMut(&'a Node),
) {
    if wildcards && let Some(hash) = node.children.hash() {
        // '#' matches the parent level too: "a/#" matches "a" (MQTT-4.7.1-2).
        f(hash);
    }
    let Some(first) = levels.next() else {
        f(node);
        return;
    };
    if let Some(child) = node.children.literal(first) {
        collect(child, levels.clone(), true, f);
    }
    if wildcards && let Some(plus) = node.children.plus() {
        collect(plus, levels, true, f);
    }
}

/// Merges the subscriptions of each session into one [`Match`], so a client with overlapping
/// subscriptions gets a message once, at the highest QoS, with all subscription identifiers.
/// In place: a publish allocates one list of matches, however many it has.
fn merge(mut found: Vec<Match>) -> Vec<Match> {
    if found.len() > 1 {
        found.sort_unstable_by_key(|m| m.session.id());
        found.dedup_by(|later, kept| {
            if later.session.id() != kept.session.id() {
                return false;
            }
            kept.qos = kept.qos.max(later.qos);
            kept.retain_as_published |= later.retain_as_published;
            kept.subscription_ids.append(&mut later.subscription_ids);
            true
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        }
    }

    fn ids(router: &Router, topic: &str) -> Vec<u64> {
        router
            .matches(topic, 0)
            .iter()
            .map(|m| m.session.id())
            .collect()
    }

    #[test]
    fn wildcards_match_as_the_specification_says() {
        let mut router = Router::default();
        let cases = [
            ("a/b", vec!["a/b"], vec!["a", "a/b/c", "a/c"]),
            ("a/+", vec!["a/b", "a/"], vec!["a", "a/b/c"]),
            ("a/#", vec!["a", "a/b", "a/b/c"], vec!["b", "ab"]),
            ("#", vec!["a", "a/b", "/"], vec!["$SYS/x", "$share"]),
            ("+/b", vec!["a/b", "/b"], vec!["$SYS/b", "a/b/c"]),
            ("$SYS/#", vec!["$SYS", "$SYS/x"], vec!["SYS/x"]),
        ];
        for (filter, yes, no) in cases {
            let session = SessionHandle::new(filter.to_string());
            router.subscribe(filter, &session, options(QoS::AtMostOnce), None);
            for topic in yes {
                assert!(
                    ids(&router, topic).contains(&session.id()),
                    "{filter} should match {topic}"
                );
            }
            for topic in no {
                assert!(
                    !ids(&router, topic).contains(&session.id()),
                    "{filter} must not match {topic}"
                );
            }
        }
    }

    #[test]
    fn overlapping_subscriptions_merge_into_one_match_at_the_highest_qos() {
        let mut router = Router::default();
        let session = SessionHandle::new("c".to_string());
        router.subscribe("a/+", &session, options(QoS::AtMostOnce), Some(1));
        router.subscribe("a/#", &session, options(QoS::ExactlyOnce), Some(2));
        router.subscribe("a/b", &session, options(QoS::AtLeastOnce), None);
        let matches = router.matches("a/b", 0);
        assert_eq!(matches.len(), 1);
        assert_eq!(matches[0].qos, QoS::ExactlyOnce);
        let mut sub_ids = matches[0].subscription_ids.clone();
        sub_ids.sort_unstable();
        assert_eq!(sub_ids, vec![1, 2]);
    }

    #[test]
    fn no_local_skips_only_the_publishing_session() {
        let mut router = Router::default();
        let me = SessionHandle::new("me".to_string());
        let other = SessionHandle::new("other".to_string());
        let no_local = SubscriptionOptions {
            no_local: true,
            ..SubscriptionOptions::default()
        };
        router.subscribe("t", &me, no_local, None);
        router.subscribe("t", &other, no_local, None);
        let got: Vec<u64> = router
            .matches("t", me.id())
            .iter()
            .map(|m| m.session.id())
            .collect();
        assert_eq!(got, vec![other.id()]);
    }

    /// Past the indexed length, replacing and removing keep the index right whatever the
    /// order (removal moves the last subscriber into the freed place).
    #[test]
    fn many_subscribers_to_one_filter_come_and_go_in_any_order() {
        let mut router = Router::default();
        let sessions: Vec<_> = (0..200)
            .map(|i| SessionHandle::new(format!("s{i}")))
            .collect();
        for session in &sessions {
            assert!(router.subscribe("t", session, options(QoS::AtMostOnce), None));
        }
        for session in &sessions {
            assert!(!router.subscribe("t", session, options(QoS::AtLeastOnce), None));
        }
        let mut left: Vec<u64> = sessions.iter().map(|s| s.id()).collect();
        for step in 0..150 {
            let victim = left.remove((step * 7919) % left.len());
            assert!(router.unsubscribe("t", victim));
            assert!(!router.unsubscribe("t", victim));
        }
        let mut matched = ids(&router, "t");
        matched.sort_unstable();
        left.sort_unstable();
        assert_eq!(matched, left);
        assert!(
            router
                .matches("t", 0)
                .iter()
                .all(|m| m.qos == QoS::AtLeastOnce)
        );
        assert_eq!(router.len(), 50);
    }

    #[test]
    fn unsubscribe_removes_and_prunes() {
        let mut router = Router::default();
        let session = SessionHandle::new("c".to_string());
        assert!(router.subscribe("a/b/c", &session, options(QoS::AtMostOnce), None));
        assert!(!router.subscribe("a/b/c", &session, options(QoS::AtLeastOnce), None));
        assert_eq!(router.len(), 1);
        assert!(router.unsubscribe("a/b/c", session.id()));
        assert!(!router.unsubscribe("a/b/c", session.id()));
        assert_eq!(router.len(), 0);
        assert!(router.root.is_empty(), "empty branches are pruned");
        assert!(ids(&router, "a/b/c").is_empty());
    }

    #[test]
    fn group_members_live_beside_plain_subscribers_and_are_pruned() {
        let mut router = Router::default();
        let a = SessionHandle::new("a".to_string());
        let b = SessionHandle::new("b".to_string());
        router.subscribe("$share/g/t/+", &a, options(QoS::AtLeastOnce), None);
        router.subscribe("$g/g/t/+", &b, options(QoS::AtMostOnce), None);
        router.subscribe("t/+", &a, options(QoS::AtMostOnce), None);
        assert!(router.has_groups());
        assert_eq!(router.filter_count("$g/g/t/+"), 2);
        assert_eq!(router.filter_count("t/+"), 1);
        assert_eq!(
            ids(&router, "t/1"),
            vec![a.id()],
            "members are not plain matches"
        );
        let groups = router.group_matches("t/1");
        assert_eq!(groups.len(), 1);
        assert_eq!((&*groups[0].name, &*groups[0].filter), ("g", "t/+"));
        // Neither is connected: both count as offline members; `except` leaves one out.
        assert_eq!(groups[0].members(), (0, 2));
        assert_eq!(groups[0].count(a.id(), false), 1);
        b.set_online(true);
        assert_eq!(groups[0].members(), (1, 1));
        let picked = groups[0].pick(0, true, 0).expect("the connected member");
        assert_eq!(picked.session.id(), b.id());
        assert!(router.unsubscribe("$share/g/t/+", a.id()));
        assert!(router.unsubscribe("$share/g/t/+", b.id()));
        assert!(!router.has_groups());
        assert!(router.unsubscribe("t/+", a.id()));
        assert!(router.root.is_empty());
    }
}
