//! Consumer groups (docs/ARCHITECTURE.md, Group member choice): `$g/{group}/{filter}`, `$share/…`.
//!
//! A group is (name, filter); each message matching the filter goes to exactly one member of
//! the group. The router keeps the members next to the filter's plain subscribers; this file
//! parses group filters and chooses who gets a message — every choice the broker makes, here
//! or on behalf of the other nodes, is [`pick_member`] (or [`pick_among`]) over [`choose`],
//! with `cluster.group_strategy`. Connected members anywhere come first; offline ones (their
//! persistent sessions queue the message) only when none is connected. On a cluster the choice
//! spans nodes: every eligible member has the same weight, so a node with three gets three
//! times the share of a node with one.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::protocol::topic;

use super::peers::{PeerId, RemoteGroup};
use super::router::{Group, Match};

/// How a group picks the member that gets a message (`cluster.group_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Every member in the cluster equally likely.
    #[default]
    Random,
    /// Members in turn (per publishing node).
    RoundRobin,
    /// A member on this node when there is one; otherwise random among the other nodes.
    PreferLocal,
}

impl Strategy {
    /// The strategy named in the configuration (validated there; unknown names are random).
    pub fn from_name(name: &str) -> Strategy {
        match name {
            "round_robin" => Strategy::RoundRobin,
            "prefer_local" => Strategy::PreferLocal,
            _ => Strategy::Random,
        }
    }
}

/// A consumer group, by name and filter: a group's message is meant for one of its members.
/// Messages forwarded to another node name the groups the receiving node is to serve.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct GroupRef {
    pub group: String,
    pub filter: String,
}

/// A subscription filter: plain, or a group member's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter<'a> {
    Plain(&'a str),
    Group { group: &'a str, filter: &'a str },
}

/// Why a group filter is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupFilterError {
    #[error("the group name must be at least one character without '/', '+' or '#'")]
    BadName,
    #[error("a group needs a topic filter after its name")]
    NoFilter,
}

/// Splits `$share/{group}/{filter}` or `$g/{group}/{filter}`; anything else is plain.
pub fn parse(filter: &str) -> Result<Filter<'_>, GroupFilterError> {
    let Some(rest) = filter
        .strip_prefix("$share/")
        .or_else(|| filter.strip_prefix("$g/"))
    else {
        return Ok(Filter::Plain(filter));
    };
    let Some((group, inner)) = rest.split_once('/') else {
        return Err(if rest.is_empty() || rest.contains(['+', '#']) {
            GroupFilterError::BadName
        } else {
            GroupFilterError::NoFilter
        });
    };
    if group.is_empty() || group.contains(['+', '#']) {
        return Err(GroupFilterError::BadName);
    }
    if inner.is_empty() || !topic::valid_filter(inner) {
        return Err(GroupFilterError::NoFilter);
    }
    Ok(Filter::Group {
        group,
        filter: inner,
    })
}

/// Who gets a group's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The local member at this index.
    Local(usize),
    /// The peer at this index of the weights given.
    Peer(usize),
    Nobody,
}

/// Chooses among `local` members here and `peers` (members per peer node), by `strategy`;
/// `turn` is the group's round-robin counter.
pub fn choose(strategy: Strategy, local: usize, peers: &[u32], turn: &AtomicUsize) -> Choice {
    let remote: usize = peers.iter().map(|&w| w as usize).sum();
    let total = local + remote;
    if total == 0 {
        return Choice::Nobody;
    }
    let mut pick = match strategy {
        Strategy::Random => rand::random_range(0..total),
        Strategy::RoundRobin => turn.fetch_add(1, Ordering::Relaxed) % total,
        Strategy::PreferLocal if local > 0 => rand::random_range(0..local),
        Strategy::PreferLocal => local + rand::random_range(0..remote),
    };
    if pick < local {
        return Choice::Local(pick);
    }
    pick -= local;
    for (i, &weight) in peers.iter().enumerate() {
        let weight = weight as usize;
        if pick < weight {
            return Choice::Peer(i);
        }
        pick -= weight;
    }
    Choice::Nobody
}

/// Takes the group (`group`, `filter`) out of those with members on other nodes, if there.
pub fn take_remote(
    remote: &mut Vec<RemoteGroup>,
    group: &str,
    filter: &str,
) -> Option<RemoteGroup> {
    let i = remote
        .iter()
        .position(|r| r.group.group == group && r.group.filter == filter)?;
    Some(remote.swap_remove(i))
}

/// Who gets a message of a consumer group: members connected anywhere first — `local` here
/// (other than the session `except`) and `remote` on peers — and offline members (whose
/// persistent sessions queue it) only when no member is connected anywhere.
pub fn pick_member(
    strategy: Strategy,
    local: Option<&Group>,
    except: u64,
    remote: Option<&RemoteGroup>,
    turn: &AtomicUsize,
) -> Pick {
    match pick_among(strategy, local, except, remote, turn, true) {
        Pick::Nobody => pick_among(strategy, local, except, remote, turn, false),
        pick => pick,
    }
}

/// [`pick_member`] among the connected members only (`online`), or the offline ones only.
pub fn pick_among(
    strategy: Strategy,
    local: Option<&Group>,
    except: u64,
    remote: Option<&RemoteGroup>,
    turn: &AtomicUsize,
    online: bool,
) -> Pick {
    let here = local.map_or(0, |g| g.count(except, online));
    let elsewhere = remote.map_or(&[][..], |r| if online { &r.online } else { &r.offline });
    match choose(strategy, here, elsewhere, turn) {
        Choice::Local(k) => local
            .and_then(|g| g.pick(except, online, k))
            .map_or(Pick::Nobody, Pick::Local),
        Choice::Peer(i) => remote
            .and_then(|r| r.peers.get(i))
            .map_or(Pick::Nobody, |&peer| Pick::Peer(peer)),
        Choice::Nobody => Pick::Nobody,
    }
}

/// A group member chosen by [`pick_member`].
pub enum Pick {
    Local(Match),
    Peer(PeerId),
    Nobody,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_filters_parse_and_malformed_ones_are_refused() {
        assert_eq!(parse("a/b"), Ok(Filter::Plain("a/b")));
        for text in ["$share/g/a/+", "$g/g/a/+"] {
            assert_eq!(
                parse(text),
                Ok(Filter::Group {
                    group: "g",
                    filter: "a/+"
                })
            );
        }
        assert_eq!(parse("$share//a"), Err(GroupFilterError::BadName));
        assert_eq!(parse("$share/g+/a"), Err(GroupFilterError::BadName));
        assert_eq!(parse("$share/#"), Err(GroupFilterError::BadName));
        assert_eq!(parse("$share/g"), Err(GroupFilterError::NoFilter));
        assert_eq!(parse("$share/g/"), Err(GroupFilterError::NoFilter));
        assert_eq!(parse("$g/g/a/#/b"), Err(GroupFilterError::NoFilter));
    }

    #[test]
    fn weights_decide_the_share_of_each_node() {
        let turn = AtomicUsize::new(0);
        let mut counts = [0usize; 3];
        for _ in 0..6000 {
            match choose(Strategy::Random, 1, &[3, 2], &turn) {
                Choice::Local(_) => counts[0] += 1,
                Choice::Peer(i) => counts[i + 1] += 1,
                Choice::Nobody => panic!("members exist"),
            }
        }
        // Expected 1000 / 3000 / 2000.
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert!((2700..3300).contains(&counts[1]), "{counts:?}");
        assert!((1750..2250).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn round_robin_and_prefer_local() {
        let turn = AtomicUsize::new(0);
        let picks: Vec<Choice> = (0..4)
            .map(|_| choose(Strategy::RoundRobin, 2, &[1], &turn))
            .collect();
        assert_eq!(
            picks,
            [
                Choice::Local(0),
                Choice::Local(1),
                Choice::Peer(0),
                Choice::Local(0)
            ]
        );
        for _ in 0..100 {
            assert!(matches!(
                choose(Strategy::PreferLocal, 1, &[5], &turn),
                Choice::Local(0)
            ));
            assert_eq!(
                choose(Strategy::PreferLocal, 0, &[0, 5], &turn),
                Choice::Peer(1)
            );
        }
        assert_eq!(choose(Strategy::Random, 0, &[], &turn), Choice::Nobody);
    }
}
