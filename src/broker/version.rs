//! Versions of retained messages, so every node's retained store converges on the newest set
//! or clear of each topic whatever order (and however late) they arrive in.
//!
//! A version is a hybrid logical clock reading ([`Hlc`]) and the name of the node that made
//! it. The clock reading packs the wall clock in milliseconds (upper 48 bits) and a logical
//! counter (lower 16 bits) into one `u64`: it advances on every local retained set or clear
//! and jumps past every version received from a peer, so a node's new version is newer than
//! every version it has seen, and it stays close to real time while clocks agree. The node
//! name breaks ties between equal readings, so versions are totally ordered cluster-wide
//! (derived `Ord`: the reading first, then the name, byte-wise).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Bits of a clock reading that hold the logical counter.
pub const LOGICAL_BITS: u32 = 16;

/// The version of one retained set or clear: newer wins everywhere.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Hybrid logical clock: milliseconds since the Unix epoch << 16 | counter.
    pub hlc: u64,
    /// The node that made it (empty on a standalone broker).
    pub node: Arc<str>,
}

/// The current wall clock as a clock reading with counter 0.
pub fn wall() -> u64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    ms.saturating_mul(1 << LOGICAL_BITS)
}

/// A hybrid logical clock: one atomic, no lock.
#[derive(Debug, Default)]
pub struct Hlc {
    last: AtomicU64,
}

impl Hlc {
    /// A reading for a local event: later than every reading this clock gave or merged.
    pub fn now(&self) -> u64 {
        self.step(wall(), 0)
    }

    /// Takes in a reading received from a peer, so the next local reading is later than it.
    pub fn merge(&self, seen: u64) {
        self.step(wall(), seen);
    }

    /// The step of the clock at wall clock `physical` after seeing `seen`: the largest of the
    /// last reading + 1, `seen` + 1 and `physical`. When the counter overflows it carries into
    /// the milliseconds, running ahead of the wall clock until it catches up.
    pub fn step(&self, physical: u64, seen: u64) -> u64 {
        let mut next = 0;
        let _ = self
            .last
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
                next = last.max(seen).saturating_add(1).max(physical);
                Some(next)
            });
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1 << LOGICAL_BITS;

    #[test]
    fn readings_are_monotonic_and_follow_the_wall_clock() {
        let clock = Hlc::default();
        assert_eq!(clock.step(1000 * MS, 0), 1000 * MS);
        assert_eq!(
            clock.step(1000 * MS, 0),
            1000 * MS + 1,
            "same ms: the counter"
        );
        assert_eq!(
            clock.step(999 * MS, 0),
            1000 * MS + 2,
            "wall clock went back"
        );
        assert_eq!(
            clock.step(1001 * MS, 0),
            1001 * MS,
            "counter reset on a new ms"
        );
        let mut last = 0;
        for _ in 0..100_000 {
            let now = clock.now();
            assert!(now > last);
            last = now;
        }
        assert!(last >= wall() - 10 * MS, "close to real time");
    }

    #[test]
    fn a_merged_reading_is_passed() {
        let clock = Hlc::default();
        clock.step(1000 * MS, 0);
        let remote = 5000 * MS + 7;
        assert_eq!(clock.step(1000 * MS, remote), remote + 1);
        assert_eq!(clock.step(1000 * MS, 0), remote + 2, "and stays ahead");
        assert_eq!(
            clock.step(1000 * MS, 10),
            remote + 3,
            "an older one changes nothing"
        );
        // A reading from a peer far ahead still leaves room for later ones.
        let ahead = wall() + 1000 * MS;
        clock.merge(ahead);
        assert!(clock.now() > ahead);
    }

    #[test]
    fn the_node_name_breaks_ties() {
        let v = |hlc, node: &str| Version {
            hlc,
            node: node.into(),
        };
        assert!(v(2, "a") > v(1, "z"), "the clock first");
        assert!(v(1, "b") > v(1, "a"), "then the name");
        assert_eq!(v(1, "a"), v(1, "a"));
        let mut all = vec![v(1, "b"), v(2, "a"), v(1, "a"), v(1, "")];
        all.sort();
        assert_eq!(all, vec![v(1, ""), v(1, "a"), v(1, "b"), v(2, "a")]);
    }
}
