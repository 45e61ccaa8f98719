//! The ACL file, in mosquitto's syntax, and the questions the broker asks of it: may this
//! client publish to a topic, subscribe to a filter, receive a message?
//!
//! ```text
//! # lines before the first `user` are for anonymous clients
//! topic read public/#
//! user alice
//! topic readwrite alice/#
//! topic deny alice/secret
//! pattern write devices/%c/status      # every client, %c its client id, %u its user name
//! ```
//!
//! `topic [read|write|readwrite|deny] FILTER` (no keyword: readwrite) belongs to the section
//! it is in; `pattern ...` lines belong to every client wherever they stand. In a pattern,
//! a level that is exactly `%c` or `%u` stands for the client id or user name; a client with
//! no user name has no `%u` patterns. A line whose first character is `#` is a comment (only
//! there: `#` is also the multi-level wildcard).
//!
//! Anything not granted is denied, and a `deny` rule wins over any grant:
//! - publish to topic T: a write grant matches T and no deny matches T;
//! - receive a message on T: a read grant matches T and no deny matches T (asked for every
//!   delivery, so a changed rule reaches existing subscriptions);
//! - subscribe to filter F: a read grant *covers* F (every topic F can match, the grant
//!   matches too) and no deny covers F. A deny that covers only part of F (deny `a/secret`,
//!   subscribe `a/#`) does not refuse the subscription; the per-delivery check keeps those
//!   messages from the subscriber. This is mosquitto's reading.
//!
//! Matching follows MQTT's rules, `$` topics included: `#` and `+` in a rule's first level do
//! not match `$SYS/...`, so `$SYS` is readable only where a rule names it.
//!
//! A client's rules are compiled once per client and ACL (its section and the patterns, with
//! `%c` and `%u` filled in), so a check walks that client's few rules, not the whole file.
//! A client id or user name that cannot be one topic level (it holds `/`, `+` or `#`) would
//! widen a pattern into other clients' topics: patterns naming it grant nothing, and a `deny`
//! pattern naming it denies everything.

use std::collections::HashMap;
use std::path::Path;

use super::FileError;
use crate::protocol::topic;

/// What a rule allows, or that it denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    Read,
    Write,
    ReadWrite,
    Deny,
}

impl Grant {
    fn reads(self) -> bool {
        matches!(self, Grant::Read | Grant::ReadWrite)
    }

    fn writes(self) -> bool {
        matches!(self, Grant::Write | Grant::ReadWrite)
    }
}

/// One level of a rule's filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Exact(String),
    /// `+`
    One,
    /// `#`, always last.
    Rest,
}

/// One level of a pattern, before a client fills it in.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PatternLevel {
    Level(Level),
    ClientId,
    UserName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    grant: Grant,
    filter: Vec<Level>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Pattern {
    grant: Grant,
    filter: Vec<PatternLevel>,
}

/// A parsed ACL file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Rule>,
    users: HashMap<String, Vec<Rule>>,
    patterns: Vec<Pattern>,
}

impl Acl {
    /// Reads and parses the ACL file at `path`.
    pub fn load(path: &Path) -> Result<Acl, FileError> {
        let text = std::fs::read_to_string(path).map_err(|error| FileError {
            path: path.to_path_buf(),
            line: 0,
            reason: format!("cannot read: {error}"),
        })?;
        Acl::parse(path, &text)
    }

    /// Parses ACL text; `path` is only for the errors.
    pub fn parse(path: &Path, text: &str) -> Result<Acl, FileError> {
        let mut acl = Acl::default();
        // None: the anonymous section, before any `user` line.
        let mut section: Option<String> = None;
        for (index, raw) in text.lines().enumerate() {
            let fail = |reason: String| FileError {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            };
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let rest = rest.trim();
            match keyword {
                "user" => {
                    if rest.is_empty() {
                        return Err(fail("`user` needs a user name".to_string()));
                    }
                    acl.users.entry(rest.to_string()).or_default();
                    section = Some(rest.to_string());
                }
                "topic" | "pattern" => {
                    let (grant, filter) = grant_and_filter(rest);
                    if filter.is_empty() {
                        return Err(fail(format!("`{keyword}` needs a topic filter")));
                    }
                    if !topic::valid_filter(filter) {
                        return Err(fail(format!("{filter:?} is not a valid topic filter")));
                    }
                    if keyword == "pattern" {
                        acl.patterns.push(Pattern {
                            grant,
                            filter: filter.split('/').map(pattern_level).collect(),
                        });
                    } else {
                        let rule = Rule {
                            grant,
                            filter: filter.split('/').map(level).collect(),
                        };
                        match &section {
                            Some(user) => acl.users.entry(user.clone()).or_default().push(rule),
                            None => acl.anonymous.push(rule),
                        }
                    }
                }
                other => {
                    return Err(fail(format!(
                        "unknown keyword {other:?} (expected `user`, `topic` or `pattern`)"
                    )));
                }
            }
        }
        Ok(acl)
    }

    /// Lines that grant or deny something (`topic` and `pattern` rules), for the log.
    pub fn rule_count(&self) -> usize {
        self.anonymous.len()
            + self.patterns.len()
            + self.users.values().map(Vec::len).sum::<usize>()
    }

    /// The rules that apply to one client: its section (the anonymous one without a user
    /// name) and every pattern, filled in.
    pub fn rules_for(&self, client_id: &str, user: Option<&str>) -> ClientRules {
        let own = match user {
            Some(user) => self.users.get(user),
            None => Some(&self.anonymous),
        };
        let mut rules: Vec<Rule> = own.cloned().unwrap_or_default();
        for pattern in &self.patterns {
            if let Some(rule) = fill(pattern, client_id, user) {
                rules.push(rule);
            }
        }
        ClientRules { rules }
    }
}

/// Splits `[read|write|readwrite|deny] FILTER`; no keyword means readwrite.
fn grant_and_filter(rest: &str) -> (Grant, &str) {
    let (first, after) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let grant = match first {
        "read" => Grant::Read,
        "write" => Grant::Write,
        "readwrite" => Grant::ReadWrite,
        "deny" => Grant::Deny,
        _ => return (Grant::ReadWrite, rest),
    };
    (grant, after.trim())
}

fn level(text: &str) -> Level {
    match text {
        "+" => Level::One,
        "#" => Level::Rest,
        exact => Level::Exact(exact.to_string()),
    }
}

fn pattern_level(text: &str) -> PatternLevel {
    match text {
        "%c" => PatternLevel::ClientId,
        "%u" => PatternLevel::UserName,
        other => PatternLevel::Level(level(other)),
    }
}

/// A pattern with the client's id and user name in place; `None` if it does not apply.
fn fill(pattern: &Pattern, client_id: &str, user: Option<&str>) -> Option<Rule> {
    let mut filter = Vec::with_capacity(pattern.filter.len());
    for part in &pattern.filter {
        let value = match part {
            PatternLevel::Level(level) => {
                filter.push(level.clone());
                continue;
            }
            PatternLevel::ClientId => client_id,
            // No user name: the pattern is not about this client.
            PatternLevel::UserName => user?,
        };
        if value.is_empty() || value.contains(['/', '+', '#']) {
            // The value would be a wildcard or several levels: grant nothing, deny all.
            return (pattern.grant == Grant::Deny).then(|| Rule {
                grant: Grant::Deny,
                filter: vec![Level::Rest],
            });
        }
        filter.push(Level::Exact(value.to_string()));
    }
    Some(Rule {
        grant: pattern.grant,
        filter,
    })
}

/// One client's rules, compiled by [`Acl::rules_for`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRules {
    rules: Vec<Rule>,
}

impl ClientRules {
    /// May the client publish to topic name `topic`?
    pub fn may_publish(&self, topic: &str) -> bool {
        self.decide(|rule| matches(&rule.filter, topic), Grant::writes)
    }

    /// May the client receive a message published to `topic`?
    pub fn may_read(&self, topic: &str) -> bool {
        self.decide(|rule| matches(&rule.filter, topic), Grant::reads)
    }

    /// May the client subscribe to topic filter `filter` (a group's filter without its
    /// `$share/{group}/` or `$g/{group}/` prefix)?
    pub fn may_subscribe(&self, filter: &str) -> bool {
        self.decide(|rule| covers(&rule.filter, filter), Grant::reads)
    }

    /// Granted when a rule that `applies` has a grant that `allows` and no deny applies.
    fn decide(&self, applies: impl Fn(&Rule) -> bool, allows: fn(Grant) -> bool) -> bool {
        let mut granted = false;
        for rule in &self.rules {
            if rule.grant == Grant::Deny {
                if applies(rule) {
                    return false;
                }
            } else if !granted && allows(rule.grant) && applies(rule) {
                granted = true;
            }
        }
        granted
    }
}

/// Does `filter` match topic name `topic`, by MQTT's rules (§4.7)?
fn matches(filter: &[Level], topic: &str) -> bool {
    let mut levels = topic.split('/');
    for (i, want) in filter.iter().enumerate() {
        // MQTT-4.7.2-1: wildcards in the first level do not match `$` topics.
        let dollar = i == 0 && topic.starts_with('$');
        match want {
            Level::Rest => return !dollar,
            Level::One => {
                if dollar || levels.next().is_none() {
                    return false;
                }
            }
            Level::Exact(exact) => {
                if levels.next() != Some(exact.as_str()) {
                    return false;
                }
            }
        }
    }
    levels.next().is_none()
}

/// Does `grant` match every topic that filter `wanted` can match?
fn covers(grant: &[Level], wanted: &str) -> bool {
    let wanted: Vec<&str> = wanted.split('/').collect();
    for (i, want) in wanted.iter().enumerate() {
        // The topics `wanted` matches at this level: `$` topics only if this level is a
        // literal `$...` in the first place, which only a literal grant level or (past the
        // first level) a wildcard covers.
        let dollar_first = i == 0 && want.starts_with('$');
        match grant.get(i) {
            None => return false,
            Some(Level::Rest) => return !dollar_first,
            Some(Level::One) => {
                if dollar_first || *want == "#" {
                    return false;
                }
            }
            Some(Level::Exact(exact)) => {
                if want != exact {
                    return false;
                }
            }
        }
    }
    // `wanted` ends here; a longer grant covers it only with a last `#` (which matches the
    // parent level too), as in `a` under `a/#`.
    matches!(&grant[wanted.len().min(grant.len())..], [] | [Level::Rest])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(Path::new("acl"), text).expect("valid ACL")
    }

    fn filter(text: &str) -> Vec<Level> {
        text.split('/').map(level).collect()
    }

    #[test]
    fn topic_matching_follows_mqtt() {
        assert!(matches(&filter("a/+/c"), "a/b/c"));
        assert!(!matches(&filter("a/+/c"), "a/b/d"));
        assert!(matches(&filter("a/#"), "a"));
        assert!(matches(&filter("a/#"), "a/b/c"));
        assert!(!matches(&filter("a/b"), "a/b/c"));
        assert!(matches(&filter("+"), ""));
        assert!(!matches(&filter("#"), "$SYS/uptime"));
        assert!(!matches(&filter("+/uptime"), "$SYS/uptime"));
        assert!(matches(&filter("$SYS/#"), "$SYS/uptime"));
    }

    #[test]
    fn covering_is_matching_every_topic_of_the_filter() {
        assert!(covers(&filter("#"), "a/b"));
        assert!(covers(&filter("#"), "#"));
        assert!(covers(&filter("a/#"), "a"));
        assert!(covers(&filter("a/#"), "a/+/c"));
        assert!(covers(&filter("a/+"), "a/+"));
        assert!(covers(&filter("a/+"), "a/b"));
        assert!(!covers(&filter("a/+"), "a/#"));
        assert!(!covers(&filter("a/b"), "a/+"));
        assert!(!covers(&filter("a/b"), "a/b/c"));
        assert!(!covers(&filter("a/b/c"), "a/b"));
        assert!(!covers(&filter("a/+/c"), "a/+"));
        assert!(!covers(&filter("#"), "$SYS/#"));
        assert!(!covers(&filter("+/#"), "$SYS/a"));
        assert!(covers(&filter("$SYS/#"), "$SYS/#"));
        // `+/#` matches `$SYS/...` only past the first level.
        assert!(covers(&filter("a/#"), "a/$b"));
    }

    /// The example of mosquitto's documentation (mosquitto.conf(5), "acl_file").
    #[test]
    fn mosquitto_example() {
        let acl = acl(
            "# This affects access control for clients with no username.\n\
             topic read $SYS/#\n\
             \n\
             # This only affects clients with username \"roger\".\n\
             user roger\n\
             topic foo/bar\n\
             \n\
             # This affects all clients.\n\
             pattern write $SYS/broker/connection/%c/state\n",
        );
        let anonymous = acl.rules_for("c1", None);
        assert!(anonymous.may_subscribe("$SYS/#"));
        assert!(anonymous.may_read("$SYS/broker/uptime"));
        assert!(!anonymous.may_publish("$SYS/broker/uptime"));
        assert!(!anonymous.may_read("foo/bar"));
        assert!(anonymous.may_publish("$SYS/broker/connection/c1/state"));
        assert!(!anonymous.may_publish("$SYS/broker/connection/c2/state"));

        let roger = acl.rules_for("c2", Some("roger"));
        assert!(roger.may_publish("foo/bar"));
        assert!(roger.may_read("foo/bar"));
        assert!(roger.may_subscribe("foo/bar"));
        assert!(!roger.may_subscribe("foo/#"));
        assert!(!roger.may_read("$SYS/broker/uptime"));
        assert!(roger.may_publish("$SYS/broker/connection/c2/state"));

        // A user with no section gets the patterns only.
        let other = acl.rules_for("c3", Some("other"));
        assert!(!other.may_read("foo/bar"));
        assert!(other.may_publish("$SYS/broker/connection/c3/state"));
    }

    #[test]
    fn deny_wins_over_any_grant() {
        let acl = acl("user alice\ntopic readwrite a/#\ntopic deny a/secret/#\n");
        let alice = acl.rules_for("c", Some("alice"));
        assert!(alice.may_publish("a/open"));
        assert!(!alice.may_publish("a/secret/x"));
        assert!(!alice.may_read("a/secret"));
        assert!(
            alice.may_subscribe("a/#"),
            "the deny covers only part of a/#"
        );
        assert!(!alice.may_subscribe("a/secret/#"));
        assert!(!alice.may_subscribe("a/secret/+"));
    }

    #[test]
    fn read_and_write_are_separate() {
        let acl = acl("user u\ntopic read r/#\ntopic write w/#\n");
        let u = acl.rules_for("c", Some("u"));
        assert!(u.may_read("r/1") && !u.may_publish("r/1"));
        assert!(u.may_publish("w/1") && !u.may_read("w/1"));
        assert!(!u.may_subscribe("w/#"));
    }

    #[test]
    fn patterns_fill_in_client_id_and_user_name() {
        let acl = acl("pattern readwrite users/%u/#\npattern read devices/%c/+\n");
        let bob = acl.rules_for("dev7", Some("bob"));
        assert!(bob.may_publish("users/bob/x"));
        assert!(!bob.may_publish("users/eve/x"));
        assert!(bob.may_subscribe("devices/dev7/+"));
        assert!(!bob.may_subscribe("devices/+/+"));
        // No user name: the %u pattern does not apply.
        let anonymous = acl.rules_for("dev7", None);
        assert!(!anonymous.may_publish("users//x"));
        assert!(anonymous.may_read("devices/dev7/temp"));
        // Only a whole level is replaced.
        let acl = self::acl("pattern write a/x%c\n");
        assert!(acl.rules_for("c", None).may_publish("a/x%c"));
    }

    #[test]
    fn names_that_are_not_one_level_never_widen_a_pattern() {
        let acl = acl("pattern readwrite users/%u/#\n");
        assert!(!acl.rules_for("c", Some("+")).may_read("users/eve/x"));
        assert!(!acl.rules_for("c", Some("a/b")).may_read("users/a/b/x"));
        let acl = self::acl("topic read #\npattern deny private/%c/#\n");
        let weird = acl.rules_for("x/y", None);
        assert!(
            !weird.may_read("public"),
            "a deny that cannot be filled in denies all"
        );
        assert!(acl.rules_for("fine", None).may_read("public"));
    }

    #[test]
    fn nothing_granted_is_denied() {
        let acl = acl("user alice\ntopic a\n");
        assert!(!acl.rules_for("c", None).may_read("a"));
        assert!(!acl.rules_for("c", Some("bob")).may_read("a"));
        assert!(acl.rules_for("c", Some("alice")).may_read("a"));
    }

    #[test]
    fn malformed_lines_name_their_line() {
        let error = Acl::parse(Path::new("f.acl"), "topic read a\n\nbogus x\n").unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.reason.contains("bogus"), "{error}");
        let error = Acl::parse(Path::new("f.acl"), "topic read a/#/b\n").unwrap_err();
        assert_eq!(error.line, 1);
        assert!(error.to_string().starts_with("f.acl:1: "), "{error}");
        assert!(Acl::parse(Path::new("f"), "user\n").is_err());
        assert!(Acl::parse(Path::new("f"), "topic read\n").is_err());
    }

    #[test]
    fn topics_may_hold_spaces_and_keywords_are_optional() {
        let acl = acl("topic a b/c\ntopic read\tx y\n");
        let anonymous = acl.rules_for("c", None);
        assert!(anonymous.may_publish("a b/c"));
        assert!(anonymous.may_read("x y"));
        assert!(!anonymous.may_publish("x y"));
    }
}
