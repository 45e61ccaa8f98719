//! Topic names and filters.

/// True if `filter` matches the topic name `topic` (MQTT 4.7).
pub fn matches(filter: &str, topic: &str) -> bool {
    let _ = (filter, topic);
    unimplemented!("codec helper")
}

/// True if `filter` is a valid topic filter: non-empty, `#` only last and alone in its level,
/// `+` alone in its level.
pub fn valid_filter(filter: &str) -> bool {
    let _ = filter;
    unimplemented!("codec helper")
}

/// True if `topic` is a valid topic name for PUBLISH: non-empty, no wildcards.
pub fn valid_name(topic: &str) -> bool {
    let _ = topic;
    unimplemented!("codec helper")
}
