//! The inbound QoS 2 packet ids a session has answered with PUBREC and not yet seen released
//! by PUBREL (MQTT §4.3.3): a resend of one of them must not be delivered twice.
//!
//! A 5.0 client is held to our Receive Maximum, but a 3.1.1 client cannot be told one and may
//! use every packet id at once. A set of 65,535 ids costs some 400 KB; so while they are few
//! they are kept in a set, and past [`AS_SET`] in a bitmap of all 65,536 ids, 8 KiB, which is
//! the most one session ever pays.

use std::collections::HashSet;

/// Ids kept in a set up to this many; more go into the bitmap.
const AS_SET: usize = 1024;

/// Words of the bitmap: one bit per packet id.
const WORDS: usize = 65_536 / 64;

pub enum Unreleased {
    Set(HashSet<u16>),
    Bits {
        words: Box<[u64; WORDS]>,
        len: usize,
    },
}

impl Default for Unreleased {
    fn default() -> Unreleased {
        Unreleased::Set(HashSet::new())
    }
}

impl Unreleased {
    pub fn contains(&self, id: u16) -> bool {
        match self {
            Unreleased::Set(set) => set.contains(&id),
            Unreleased::Bits { words, .. } => words[word(id)] & bit(id) != 0,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Unreleased::Set(set) => set.len(),
            Unreleased::Bits { len, .. } => *len,
        }
    }

    /// Adds `id`; true if it was not there.
    pub fn insert(&mut self, id: u16) -> bool {
        if let Unreleased::Set(set) = self
            && set.len() >= AS_SET
            && !set.contains(&id)
        {
            let mut words = Box::new([0u64; WORDS]);
            for &old in set.iter() {
                words[word(old)] |= bit(old);
            }
            *self = Unreleased::Bits {
                words,
                len: set.len(),
            };
        }
        match self {
            Unreleased::Set(set) => set.insert(id),
            Unreleased::Bits { words, len } => {
                let new = words[word(id)] & bit(id) == 0;
                words[word(id)] |= bit(id);
                *len += usize::from(new);
                new
            }
        }
    }

    /// Every id held, for a session that moves to another node.
    pub fn ids(&self) -> Vec<u16> {
        match self {
            Unreleased::Set(set) => set.iter().copied().collect(),
            Unreleased::Bits { words, .. } => (0..=u16::MAX)
                .filter(|&id| words[word(id)] & bit(id) != 0)
                .collect(),
        }
    }

    /// Removes `id`; true if it was there.
    pub fn remove(&mut self, id: u16) -> bool {
        match self {
            Unreleased::Set(set) => set.remove(&id),
            Unreleased::Bits { words, len } => {
                let was = words[word(id)] & bit(id) != 0;
                words[word(id)] &= !bit(id);
                *len -= usize::from(was);
                was
            }
        }
    }
}

fn word(id: u16) -> usize {
    usize::from(id) / 64
}

fn bit(id: u16) -> u64 {
    1 << (id % 64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_fits_and_the_bitmap_behaves_as_the_set_did() {
        let mut ids = Unreleased::default();
        for id in 0..=u16::MAX {
            assert!(ids.insert(id));
        }
        assert!(matches!(ids, Unreleased::Bits { .. }));
        assert_eq!(ids.len(), 65_536);
        assert!(!ids.insert(7), "already there");
        assert!(ids.remove(7));
        assert!(!ids.remove(7));
        assert!(!ids.contains(7));
        assert!(ids.contains(8));
        assert_eq!(ids.len(), 65_535);
    }
}
