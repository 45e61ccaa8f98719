//! Topic names and filters (MQTT 4.7): what is valid, and which filter matches which topic.
//!
//! The decoder already guarantees every topic is valid UTF-8 without U+0000 and that PUBLISH
//! topics hold no wildcard. Filter syntax is checked here rather than in the decoder because a
//! bad filter is answered per filter, in SUBACK, not by closing the connection.

/// True if `filter` matches the topic name `topic` (MQTT 4.7.1-2).
///
/// `+` matches exactly one level (possibly empty), `#` the rest of the levels including none
/// (so `a/#` matches `a`), and a topic starting with `$` is not matched by a filter starting
/// with a wildcard (MQTT-4.7.2-1). `filter` is assumed valid (see [`valid_filter`]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True if `filter` is a valid topic filter: non-empty (MQTT-4.7.3-1), no U+0000, `#` only as
/// the whole last level (MQTT-4.7.1-2) and `+` only as a whole level (MQTT-4.7.1-3).
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() || filter.contains('\0') {
        return false;
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let is_last = levels.peek().is_none();
        let bad_hash = level.contains('#') && (level != "#" || !is_last);
        let bad_plus = level.contains('+') && level != "+";
        if bad_hash || bad_plus {
            return false;
        }
    }
    true
}

/// True if `topic` is a valid topic name for PUBLISH: non-empty, no wildcards, no U+0000.
pub fn valid_name(topic: &str) -> bool {
    !topic.is_empty() && !topic.contains(['+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        let cases = [
            // (filter, topic, matches)
            ("a/b", "a/b", true),
            ("a/b", "a/c", false),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("#", "a", true),
            ("#", "a/b/c", true),
            ("#", "/", true),
            ("a/#", "a", true),
            ("a/#", "a/b", true),
            ("a/#", "a/b/c", true),
            ("a/#", "ab", false),
            ("a/#", "b/a", false),
            ("a/b/#", "a", false),
            ("+", "a", true),
            ("+", "a/b", false),
            ("+", "", true),
            ("+", "/", false),
            ("+/+", "/", true),
            ("/+", "/a", true),
            ("+/b", "a/b", true),
            ("+/b", "/b", true),
            ("a/+", "a", false),
            ("a/+", "a/", true),
            ("a/+/c", "a/b/c", true),
            ("a/+/c", "a//c", true),
            ("a/+/c", "a/b/d", false),
            ("a/+/#", "a/b", true),
            ("a/+/#", "a", false),
            ("+/+/#", "a/b/c/d", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("a//b", "a//b", true),
            ("a//b", "a/b", false),
            ("A", "a", false),
            ("$SYS/#", "$SYS/broker/load", true),
            ("$SYS/+", "$SYS/uptime", true),
            ("#", "$SYS/uptime", false),
            ("+/uptime", "$SYS/uptime", false),
            ("+", "$SYS", false),
            ("#", "$", false),
            ("a/$b", "a/$b", true),
            ("a/+", "a/$b", true),
            ("a/#", "a/$b", true),
            ("ü/+", "ü/ß", true),
        ];
        for (filter, topic, expected) in cases {
            assert_eq!(
                matches(filter, topic),
                expected,
                "filter {filter:?}, topic {topic:?}"
            );
        }
    }

    #[test]
    fn filter_validity() {
        let cases = [
            ("a", true),
            ("a/b/c", true),
            ("/", true),
            ("//", true),
            ("/a", true),
            ("#", true),
            ("+", true),
            ("a/#", true),
            ("+/#", true),
            ("a/+/b", true),
            ("+/+", true),
            ("$SYS/#", true),
            ("$share/g/a/+", true),
            (" ", true),
            ("", false),
            ("a#", false),
            ("#a", false),
            ("a/b#", false),
            ("#/a", false),
            ("a/#/b", false),
            ("##", false),
            ("a+", false),
            ("+a", false),
            ("a/+b/c", false),
            ("++", false),
            ("+#", false),
            ("a\0b", false),
        ];
        for (filter, expected) in cases {
            assert_eq!(valid_filter(filter), expected, "filter {filter:?}");
        }
    }

    #[test]
    fn name_validity() {
        let cases = [
            ("a", true),
            ("a/b", true),
            ("/", true),
            ("$SYS/x", true),
            (" ", true),
            ("", false),
            ("a/+", false),
            ("a/#", false),
            ("+", false),
            ("a#b", false),
            ("a\0", false),
        ];
        for (topic, expected) in cases {
            assert_eq!(valid_name(topic), expected, "topic {topic:?}");
        }
    }
}
