//! The branches below one node of a topic-filter trie: the router's ([`super::router`]) and
//! each peer's interest (`cluster::interest`).
//!
//! Literal levels are kept in a map; the `+` and `#` branches apart, as fields. Matching a
//! topic looks for both wildcards at every level of every message, and a field is read where
//! a map lookup would hash the level: kept apart, a topic costs one hash per level instead of
//! three (docs/BENCHMARKS.md, issue 16).

use std::collections::HashMap;
use std::ops::Index;

pub struct Branches<N> {
    literal: HashMap<Box<str>, N>,
    plus: Option<Box<N>>,
    hash: Option<Box<N>>,
}

impl<N> Default for Branches<N> {
    fn default() -> Self {
        Branches {
            literal: HashMap::new(),
            plus: None,
            hash: None,
        }
    }
}

impl<N: Default> Branches<N> {
    /// The branch for a filter level (`+` and `#` included), made if missing.
    pub fn get_or_default(&mut self, level: &str) -> &mut N {
        match level {
            "+" => self.plus.get_or_insert_default(),
            "#" => self.hash.get_or_insert_default(),
            _ => self.literal.entry(level.into()).or_default(),
        }
    }
}

impl<N> Branches<N> {
    /// The branch for a filter level, `+` and `#` included.
    pub fn get(&self, level: &str) -> Option<&N> {
        match level {
            "+" => self.plus.as_deref(),
            "#" => self.hash.as_deref(),
            _ => self.literal.get(level),
        }
    }

    pub fn get_mut(&mut self, level: &str) -> Option<&mut N> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.literal.get_mut(level),
        }
    }

    /// The branch for a level of a topic name, which is never a wildcard.
    pub fn literal(&self, level: &str) -> Option<&N> {
        self.literal.get(level)
    }

    pub fn plus(&self) -> Option<&N> {
        self.plus.as_deref()
    }

    pub fn hash(&self) -> Option<&N> {
        self.hash.as_deref()
    }

    pub fn remove(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.literal.remove(level);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.literal.len() + usize::from(self.plus.is_some()) + usize::from(self.hash.is_some())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every branch, taken out: for a loop that frees a deep subtree without recursing.
    pub fn take_all(&mut self) -> Vec<N> {
        let mut taken: Vec<N> = self.literal.drain().map(|(_, node)| node).collect();
        taken.extend(self.plus.take().map(|node| *node));
        taken.extend(self.hash.take().map(|node| *node));
        taken
    }
}

/// The branch for `level`; panics if there is none, as a map's indexing does.
impl<N> Index<&str> for Branches<N> {
    type Output = N;

    fn index(&self, level: &str) -> &N {
        self.get(level).expect("no branch for this level")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_literal_levels_are_separate_branches() {
        let mut branches: Branches<u32> = Branches::default();
        *branches.get_or_default("a") = 1;
        *branches.get_or_default("+") = 2;
        *branches.get_or_default("#") = 3;
        assert_eq!(branches.len(), 3);
        assert_eq!((branches["a"], branches["+"], branches["#"]), (1, 2, 3));
        assert_eq!(
            branches.literal("+"),
            None,
            "a topic level never finds a wildcard"
        );
        assert_eq!((branches.plus(), branches.hash()), (Some(&2), Some(&3)));
        branches.remove("+");
        assert_eq!(branches.get("+"), None);
        let mut rest = branches.take_all();
        rest.sort_unstable();
        assert_eq!(rest, [1, 3]);
        assert!(branches.is_empty());
    }
}
