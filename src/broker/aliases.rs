//! Topic aliases from the broker to an MQTT 5 client (§3.3.2.3.4).
//!
//! A client that announces a Topic Alias Maximum in its CONNECT lets the broker replace a
//! topic it has sent before by a two-byte number. [`Aliases`] is one connection's table,
//! bounded by the smaller of the client's maximum and `limits.max_topic_aliases_out`: the
//! first PUBLISH on a topic carries the topic and a new alias, later ones only the alias;
//! when every alias is taken, the least recently used one is given to the new topic (sent
//! with its topic again, which MQTT allows). The table belongs to the connection, not the
//! session: a new connection starts with none (MQTT-3.3.2-7).

use std::collections::HashMap;

use crate::protocol::TopicAlias;

/// One connection's aliases, least recently used first in a list threaded through `slots`.
pub struct Aliases {
    by_topic: HashMap<Box<str>, u16>,
    /// Indexed by alias; slot 0 is the list's head (aliases start at 1).
    slots: Vec<Slot>,
    max: u16,
}

#[derive(Default, Clone)]
struct Slot {
    topic: Option<Box<str>>,
    prev: u16,
    next: u16,
}

impl Aliases {
    /// A table of at most `max` aliases (at least 1).
    pub fn new(max: u16) -> Aliases {
        Aliases {
            by_topic: HashMap::new(),
            slots: vec![Slot::default()],
            max: max.max(1),
        }
    }

    /// The alias to send `topic` with: known (topic left out), or newly set (topic sent).
    pub fn lookup(&mut self, topic: &str) -> TopicAlias {
        if let Some(&alias) = self.by_topic.get(topic) {
            self.unlink(alias);
            self.push_back(alias);
            return TopicAlias::Use(alias);
        }
        let alias = if self.slots.len() <= usize::from(self.max) {
            self.slots.push(Slot::default());
            (self.slots.len() - 1) as u16
        } else {
            // Every alias is taken: the least recently used one goes to this topic.
            let oldest = self.slots[0].next;
            self.unlink(oldest);
            if let Some(old) = self.slots[usize::from(oldest)].topic.take() {
                self.by_topic.remove(&old);
            }
            oldest
        };
        self.slots[usize::from(alias)].topic = Some(topic.into());
        self.by_topic.insert(topic.into(), alias);
        self.push_back(alias);
        TopicAlias::Set(alias)
    }

    /// Forgets an alias just set whose PUBLISH was not sent after all (too large for the
    /// client): the client never learned it.
    pub fn forget(&mut self, alias: u16) {
        if let Some(topic) = self.slots[usize::from(alias)].topic.take() {
            self.by_topic.remove(&topic);
            self.unlink(alias);
            // Back at the front, so it is the next one taken.
            let first = self.slots[0].next;
            self.link(alias, 0, first);
        }
    }

    fn unlink(&mut self, alias: u16) {
        let Slot { prev, next, .. } = self.slots[usize::from(alias)].clone();
        self.slots[usize::from(prev)].next = next;
        self.slots[usize::from(next)].prev = prev;
    }

    fn push_back(&mut self, alias: u16) {
        let last = self.slots[0].prev;
        self.link(alias, last, 0);
    }

    fn link(&mut self, alias: u16, prev: u16, next: u16) {
        let slot = &mut self.slots[usize::from(alias)];
        slot.prev = prev;
        slot.next = next;
        self.slots[usize::from(prev)].next = alias;
        self.slots[usize::from(next)].prev = alias;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_get_aliases_and_reuse_them() {
        let mut aliases = Aliases::new(2);
        assert_eq!(aliases.lookup("a"), TopicAlias::Set(1));
        assert_eq!(aliases.lookup("b"), TopicAlias::Set(2));
        assert_eq!(aliases.lookup("a"), TopicAlias::Use(1));
        assert_eq!(aliases.lookup("b"), TopicAlias::Use(2));
    }

    #[test]
    fn the_least_recently_used_alias_is_replaced_when_all_are_taken() {
        let mut aliases = Aliases::new(3);
        for topic in ["a", "b", "c"] {
            aliases.lookup(topic);
        }
        aliases.lookup("a");
        // b is the least recently used now.
        assert_eq!(aliases.lookup("d"), TopicAlias::Set(2));
        assert_eq!(aliases.lookup("b"), TopicAlias::Set(3), "c was next");
        assert_eq!(aliases.lookup("a"), TopicAlias::Use(1));
        assert_eq!(aliases.lookup("d"), TopicAlias::Use(2));
        assert_eq!(aliases.by_topic.len(), 3);
    }

    #[test]
    fn a_forgotten_alias_is_the_next_one_given() {
        let mut aliases = Aliases::new(2);
        aliases.lookup("a");
        assert_eq!(aliases.lookup("b"), TopicAlias::Set(2));
        aliases.forget(2);
        assert_eq!(aliases.lookup("c"), TopicAlias::Set(2));
        assert_eq!(
            aliases.lookup("b"),
            TopicAlias::Set(1),
            "a went, being oldest"
        );
    }

    #[test]
    fn churn_over_many_topics_stays_bounded_and_consistent() {
        let mut aliases = Aliases::new(16);
        for i in 0..10_000u32 {
            let topic = format!("t/{}", (i * 7) % 40);
            match aliases.lookup(&topic) {
                TopicAlias::Set(a) | TopicAlias::Use(a) => assert!((1..=16).contains(&a)),
                TopicAlias::None => panic!("always an alias"),
            }
        }
        assert_eq!(aliases.by_topic.len(), 16);
        for (topic, &alias) in &aliases.by_topic {
            assert_eq!(
                aliases.slots[usize::from(alias)].topic.as_deref(),
                Some(&**topic)
            );
        }
    }
}
