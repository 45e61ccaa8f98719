//! What a peer sends is held to the rules a client's input is held to, before the node acts
//! on it.
//!
//! A route is authenticated, but the node behind it may run another version or another
//! configuration, or be broken: nothing a peer sends may reach deeper or cost more than what a
//! client can send. So every filter and topic from a peer is checked against
//! `limits.max_topic_length`, `limits.max_topic_levels` and the MQTT topic rules, a group name
//! as the broker parses one in `$share/{group}/{filter}` (and no longer than a topic), a client
//! id against `limits.max_client_id_length`, an address as `HOST:PORT` of at most
//! [`MAX_ADDRESS`] bytes, and a peer list against `cluster.max_peers`. A group's member count
//! is any `u32`: it only weighs the peer's share, and the sum over at most `cluster.max_peers`
//! peers cannot overflow. A retained version's node is held to the rules of a node name, and
//! its clock to at most [`MAX_CLOCK_AHEAD`] ahead of this node's wall clock, so a peer with a
//! wild clock cannot push this node's versions out of reach of real time.
//!
//! What fails, per frame kind:
//!
//! | frame | invalid | outcome |
//! |---|---|---|
//! | INTEREST, NO_INTEREST | filter | frame skipped, route kept |
//! | GROUP_WEIGHT | group name or filter | frame skipped, route kept |
//! | MESSAGE | topic | message skipped (neither delivered nor retained), route kept |
//! | MESSAGE | version: missing with RETAIN, present without, or invalid (below) | message skipped, route kept |
//! | MESSAGE | one group reference | that reference skipped; plain subscribers and the valid groups still get the message |
//! | RETAINED | topic, or invalid version | not stored, route kept |
//! | PEERS, and the peer list in INFO | address, or entries past `cluster.max_peers` | not dialled, route kept |
//! | CLIENT_CONNECTED | client id | frame skipped, route kept |
//! | INFO (handshake) | node or cluster name, advertise address | handshake refused |
//! | any | framing: a length over the limit, a truncated field, bad UTF-8, an unknown kind, a PUBLISH that does not decode | route closed |
//!
//! An invalid item is skipped rather than the route closed because the route carries every
//! other message between the two nodes, and a closed route comes back with the peer's full
//! set, the same item included. Broken framing leaves nothing to read the next frame from, so
//! it closes the route. Every skipped item is counted ([`Cluster::refused`]) and logged with
//! the peer and the reason, at most once a second (saying how many lines were held back), so
//! a peer that keeps sending them cannot flood the log.

use std::fmt;
use std::sync::atomic::Ordering;

use crate::broker::{Version, is_sys_topic, within_limits};
use crate::config::Limits;
use crate::protocol::topic;

use super::Cluster;
use super::frame::Info;

/// Longest node or cluster name, in bytes. The configuration holds this node's own names to
/// it too, so a node always sends names its peers accept.
pub const MAX_NAME: usize = 255;

/// Longest `HOST:PORT` address, in bytes: a DNS name of at most 253 bytes, a colon, a port.
pub const MAX_ADDRESS: usize = 253 + 1 + 5;

/// How far ahead of this node's wall clock a retained version's clock may be: further, and the
/// item is refused (a peer's clock that far off needs fixing; its versions would otherwise win
/// over every set made here until real time caught up).
pub const MAX_CLOCK_AHEAD: std::time::Duration = std::time::Duration::from_secs(3600);

/// An item from a peer that was refused, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what} {shown} {why}")]
pub struct Invalid {
    what: &'static str,
    shown: Shown,
    why: &'static str,
}

impl Invalid {
    fn new(what: &'static str, item: &str, why: &'static str) -> Invalid {
        Invalid {
            what,
            shown: Shown::of(item),
            why,
        }
    }
}

/// An item as a log line shows it: whole when short, otherwise its start and its length, so
/// a 64 KiB filter makes a short line.
#[derive(Debug)]
struct Shown(String);

impl Shown {
    const KEPT: usize = 64;

    fn of(item: &str) -> Shown {
        if item.len() <= Self::KEPT {
            return Shown(format!("{item:?}"));
        }
        let start = &item[..item.floor_char_boundary(Self::KEPT)];
        Shown(format!("{start:?}… ({} bytes)", item.len()))
    }
}

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The limits a peer's items are held to: the broker's client limits and `cluster.max_peers`.
pub struct Rules {
    limits: Limits,
    max_peers: usize,
}

impl Rules {
    pub fn new(limits: &Limits, max_peers: usize) -> Rules {
        Rules {
            limits: limits.clone(),
            max_peers,
        }
    }

    /// A topic filter, as in a client's SUBSCRIBE.
    pub fn filter(&self, filter: &str) -> Result<(), Invalid> {
        let invalid = |why| Err(Invalid::new("filter", filter, why));
        // The cheap bounded checks first: the filter may be 64 KiB of '/'.
        if !within_limits(filter, &self.limits) {
            return invalid("exceeds limits.max_topic_length or limits.max_topic_levels");
        }
        if !topic::valid_filter(filter) {
            return invalid("is not a valid topic filter");
        }
        Ok(())
    }

    /// A topic name, as in a client's PUBLISH.
    pub fn topic(&self, name: &str) -> Result<(), Invalid> {
        let invalid = |why| Err(Invalid::new("topic", name, why));
        if !within_limits(name, &self.limits) {
            return invalid("exceeds limits.max_topic_length or limits.max_topic_levels");
        }
        if !topic::valid_name(name) {
            return invalid("is not a valid topic name (empty, a wildcard or U+0000)");
        }
        if is_sys_topic(name) {
            return invalid("is a $SYS topic, which no client may publish to");
        }
        Ok(())
    }

    /// A consumer group: its name as `$share/{group}/{filter}` has it, and its filter.
    pub fn group(&self, group: &str, filter: &str) -> Result<(), Invalid> {
        if group.is_empty() || group.contains(['/', '+', '#']) {
            return Err(Invalid::new(
                "group name",
                group,
                "is empty or contains '/', '+' or '#'",
            ));
        }
        if group.len() > self.limits.max_topic_length {
            return Err(Invalid::new(
                "group name",
                group,
                "is longer than limits.max_topic_length",
            ));
        }
        self.filter(filter)
    }

    /// A client id, as a client may connect with (or the broker assigns).
    pub fn client_id(&self, id: &str) -> Result<(), Invalid> {
        if id.is_empty() {
            return Err(Invalid::new("client id", id, "is empty"));
        }
        if id.len() > self.limits.max_client_id_length {
            return Err(Invalid::new(
                "client id",
                id,
                "is longer than limits.max_client_id_length",
            ));
        }
        Ok(())
    }

    /// The version of a MESSAGE (`retain`: its RETAIN flag) or a RETAINED (`retain` true): a
    /// retained item must have one and another must not; its node is a valid node name and its
    /// clock at most [`MAX_CLOCK_AHEAD`] ahead of ours.
    pub fn version(&self, retain: bool, version: Option<&Version>) -> Result<(), Invalid> {
        let Some(version) = version else {
            if retain {
                return Err(Invalid::new("retained message", "", "has no version"));
            }
            return Ok(());
        };
        let node = &*version.node;
        if !retain {
            return Err(Invalid::new(
                "version of",
                node,
                "on a message that is not retained",
            ));
        }
        check_node_name(node).map_err(|why| Invalid::new("version node", node, why))?;
        let ahead = u64::try_from(MAX_CLOCK_AHEAD.as_millis()).unwrap_or(u64::MAX)
            << crate::broker::LOGICAL_BITS;
        if version.hlc > crate::broker::wall_clock().saturating_add(ahead) {
            return Err(Invalid::new(
                "version of",
                node,
                "has a clock more than an hour ahead of this node's",
            ));
        }
        Ok(())
    }

    /// A peer list's length: at most `cluster.max_peers`, as this node dials no more.
    pub fn peer_count(&self, count: usize) -> Result<(), Invalid> {
        if count > self.max_peers {
            return Err(Invalid {
                what: "peer list",
                shown: Shown(format!("of {count} addresses")),
                why: "is longer than cluster.max_peers; the rest are not dialled",
            });
        }
        Ok(())
    }
}

/// An address a peer asks to be dialled at.
pub fn peer_address(addr: &str) -> Result<(), Invalid> {
    check_address(addr).map_err(|why| Invalid::new("address", addr, why))
}

/// The identity a peer gives in its INFO; the handshake refuses a peer whose INFO fails.
pub fn info(info: &Info) -> Result<(), Invalid> {
    check_node_name(&info.node).map_err(|why| Invalid::new("node name", &info.node, why))?;
    if info.cluster.is_empty() || info.cluster.len() > MAX_NAME {
        return Err(Invalid::new(
            "cluster name",
            &info.cluster,
            "is empty or longer than 255 bytes",
        ));
    }
    check_address(&info.advertise)
        .map_err(|why| Invalid::new("advertise address", &info.advertise, why))
}

/// Checks a `HOST:PORT` address, configured or from a peer; `Err` says what is wrong with it,
/// to follow the address in a message.
pub fn check_address(addr: &str) -> Result<(), &'static str> {
    if addr.len() > MAX_ADDRESS {
        return Err("is longer than 259 bytes");
    }
    let well_formed = addr.rsplit_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && !host.contains(|c: char| c.is_whitespace() || c.is_control())
            && port.parse::<u16>().is_ok()
    });
    if !well_formed {
        return Err("is not a HOST:PORT address");
    }
    Ok(())
}

/// Checks a node name, configured or from a peer; `Err` says what is wrong with it, to follow
/// the name in a message.
pub fn check_node_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("is empty");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("contains whitespace");
    }
    if name.chars().any(char::is_control) {
        return Err("contains a control character");
    }
    if name.len() > MAX_NAME {
        return Err("is longer than 255 bytes");
    }
    Ok(())
}

/// Text a peer sent for this node's log (a refusal's reason): at most 512 bytes, control
/// characters replaced, so that a stranger can neither flood a log line nor forge one.
pub fn loggable(text: &str) -> String {
    let start = &text[..text.floor_char_boundary(512)];
    start
        .chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

impl Cluster {
    /// An item not wanted: an answer to no open question or session request of this peer's,
    /// or past that request's bounds. Dropped, counted with the refused items, logged at most
    /// once a second.
    pub(super) fn unwanted(&self, peer: &str, frame: &'static str) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.logs.invalid.allow() {
            tracing::warn!(
                peer,
                frame,
                held_back,
                "item not wanted (no such request or question open for this peer, or past its bounds): dropped"
            );
        }
    }

    /// True if `checked` passed. Otherwise the item is refused: counted, and logged with the
    /// peer and the frame it came in, at most once a second.
    pub(super) fn admit(
        &self,
        peer: &str,
        frame: &'static str,
        checked: Result<(), Invalid>,
    ) -> bool {
        let Err(invalid) = checked else {
            return true;
        };
        self.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.logs.invalid.allow() {
            tracing::warn!(peer, frame, %invalid, held_back, "invalid item from a peer refused; the route stays up");
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules::new(&Limits::default(), 4)
    }

    #[test]
    fn filters_are_held_to_the_client_limits() {
        let rules = rules();
        for good in ["a/b", "a/+/c", "#", "+", "a//b", "$SYS/#"] {
            assert!(rules.filter(good).is_ok(), "{good:?}");
        }
        let long = "a".repeat(1025);
        let deep = "a/".repeat(32) + "a";
        for bad in ["", "a/#/b", "a+", "a\0", &long, &deep] {
            assert!(rules.filter(bad).is_err(), "{bad:?}");
        }
        assert!(rules.filter(&"a/".repeat(31)).is_ok(), "32 levels");
    }

    /// The filters that crashed the node (65,535 '/', 65,535 levels) are refused at once,
    /// whatever the limits, and the refusal's text stays short.
    #[test]
    fn a_filter_of_65535_slashes_or_levels_is_refused() {
        let wide = Limits {
            max_topic_length: 65_535,
            ..Limits::default()
        };
        let slashes = "/".repeat(65_535);
        let levels = "a/".repeat(32_767) + "a";
        for rules in [rules(), Rules::new(&wide, 4)] {
            for filter in [&slashes, &levels] {
                let refused = rules.filter(filter).expect_err("refused");
                let text = refused.to_string();
                assert!(text.len() < 200, "{text}");
                assert!(text.contains("(65535 bytes)"), "{text}");
                assert!(rules.topic(filter).is_err());
            }
        }
    }

    #[test]
    fn topics_are_held_to_the_publish_rules() {
        let rules = rules();
        assert!(rules.topic("a/b").is_ok());
        for bad in ["", "a/+", "a/#", "a\0", "$SYS/x", "$SYS"] {
            assert!(rules.topic(bad).is_err(), "{bad:?}");
        }
        assert!(rules.topic(&"t".repeat(1025)).is_err());
    }

    #[test]
    fn group_names_as_the_broker_parses_them() {
        let rules = rules();
        assert!(rules.group("g", "a/#").is_ok());
        for bad in ["", "g/h", "g+", "#"] {
            assert!(rules.group(bad, "a").is_err(), "{bad:?}");
        }
        assert!(rules.group(&"g".repeat(1025), "a").is_err());
        assert!(rules.group("g", "a/#/b").is_err(), "and their filter");
    }

    #[test]
    fn client_ids_and_peer_lists_within_their_limits() {
        let rules = rules();
        assert!(rules.client_id("c1").is_ok());
        assert!(rules.client_id("").is_err());
        assert!(rules.client_id(&"c".repeat(257)).is_err());
        assert!(rules.peer_count(4).is_ok());
        assert!(rules.peer_count(5).is_err());
    }

    #[test]
    fn long_items_are_cut_on_a_character_boundary_for_the_log() {
        let item = "ü".repeat(100);
        let refused = Rules::new(&Limits::default(), 4)
            .client_id(&item.repeat(2))
            .expect_err("too long");
        assert!(refused.to_string().contains("… (400 bytes)"), "{refused}");
        assert_eq!(loggable(&item), item);
        assert_eq!(loggable(&"ü".repeat(300)).len(), 512);
        assert_eq!(loggable("a\nb\u{1b}"), "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn addresses_are_bounded_host_and_port() {
        for good in ["node1:9999", "127.0.0.1:1", "[::1]:1883"] {
            assert_eq!(check_address(good), Ok(()), "{good:?}");
        }
        let long = format!("{}:1", "h".repeat(MAX_ADDRESS));
        for bad in ["", "node1", ":1", "a:", "a:99999", "a b:1", "a\n:1", &long] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn an_info_must_name_its_node_and_cluster_and_give_an_address() {
        let good = Info {
            version: 2,
            node: "n1".into(),
            cluster: "c".into(),
            advertise: "n1:9999".into(),
            nonce: String::new(),
            peers: Vec::new(),
            epoch: 1,
        };
        assert!(info(&good).is_ok());
        for bad in [
            Info {
                node: "n\n1".into(),
                ..good.clone()
            },
            Info {
                node: "\u{1b}[2J".into(),
                ..good.clone()
            },
            Info {
                node: "n".repeat(256),
                ..good.clone()
            },
            Info {
                cluster: "c".repeat(256),
                ..good.clone()
            },
            Info {
                advertise: "n1".into(),
                ..good.clone()
            },
        ] {
            assert!(info(&bad).is_err(), "{bad:?}");
        }
    }
}
