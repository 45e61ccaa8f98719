//! Per-subscriber accounting: which message of which publisher arrived, how late, and whether
//! it was a duplicate or out of order.
//!
//! Each publisher's sequence numbers are tracked in a bitmap (one bit per message: 125 KB for
//! a thousand publishers of a thousand messages), so duplicates are exact, not estimated. A
//! message is out of order when a later one from the same publisher arrived before it. For a
//! consumer group, whose members each see part of one stream, the members' bitmaps are joined
//! with [`union_unique`] to count what the group as a whole received.

use std::time::Instant;

use super::histogram::Histogram;
use super::payload::Stamp;

/// What one received payload was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// A measured message, first time this subscriber sees it.
    Unique,
    Duplicate,
    Warmup,
    /// Not from this run: too short, or an unknown publisher or sequence number.
    Foreign,
}

/// What one subscriber received.
pub struct Tracker {
    publishers: Vec<Seen>,
    messages: u32,
    /// Measured messages, duplicates included.
    pub received: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub foreign: u64,
    pub warmup: u64,
    /// Nanoseconds from send to receipt, per measured message.
    pub latency: Histogram,
    pub last_received: Option<Instant>,
}

/// One publisher's messages, as seen by one subscriber.
#[derive(Default)]
struct Seen {
    /// Bit `n` is set once sequence number `n` arrived; allocated on the first message.
    bits: Vec<u64>,
    highest: Option<u32>,
}

impl Tracker {
    /// A tracker for `publishers` publishers of `messages` measured messages each.
    pub fn new(publishers: usize, messages: u32) -> Tracker {
        Tracker {
            publishers: (0..publishers).map(|_| Seen::default()).collect(),
            messages,
            received: 0,
            unique: 0,
            duplicates: 0,
            out_of_order: 0,
            foreign: 0,
            warmup: 0,
            latency: Histogram::default(),
            last_received: None,
        }
    }

    /// Records one payload received at `now` (`now_ns` on the run's clock).
    pub fn record(&mut self, payload: &[u8], now_ns: u64, now: Instant) -> Recorded {
        let Some(stamp) = Stamp::read(payload) else {
            return self.foreign();
        };
        let Some(seen) = self.publishers.get_mut(stamp.publisher as usize) else {
            return self.foreign();
        };
        if stamp.warmup {
            self.warmup += 1;
            return Recorded::Warmup;
        }
        let sequence = stamp.sequence;
        if sequence >= self.messages {
            return self.foreign();
        }
        self.received += 1;
        self.last_received = Some(now);
        self.latency.record(now_ns.saturating_sub(stamp.sent_at));
        if seen.bits.is_empty() {
            seen.bits = vec![0; self.messages.div_ceil(64) as usize];
        }
        let (word, bit) = ((sequence / 64) as usize, 1u64 << (sequence % 64));
        if seen.bits[word] & bit != 0 {
            self.duplicates += 1;
            return Recorded::Duplicate;
        }
        seen.bits[word] |= bit;
        self.unique += 1;
        match seen.highest {
            Some(highest) if sequence < highest => self.out_of_order += 1,
            _ => seen.highest = Some(sequence),
        }
        Recorded::Unique
    }

    fn foreign(&mut self) -> Recorded {
        self.foreign += 1;
        Recorded::Foreign
    }
}

/// Messages received by at least one of `trackers`: what a consumer group received as a whole.
pub fn union_unique(trackers: &[Tracker]) -> u64 {
    let publishers = trackers.first().map_or(0, |t| t.publishers.len());
    let mut total = 0;
    for index in 0..publishers {
        let mut union: Vec<u64> = Vec::new();
        for tracker in trackers {
            let bits = &tracker.publishers[index].bits;
            if union.len() < bits.len() {
                union.resize(bits.len(), 0);
            }
            for (all, word) in union.iter_mut().zip(bits) {
                *all |= word;
            }
        }
        total += union
            .iter()
            .map(|word| u64::from(word.count_ones()))
            .sum::<u64>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(publisher: u32, sequence: u32, warmup: bool) -> Vec<u8> {
        let template = super::super::payload::Template::new(
            "t",
            supermq::protocol::QoS::AtMostOnce,
            16,
            supermq::protocol::ProtocolVersion::V311,
        )
        .expect("encodes");
        let mut frame = Vec::new();
        let stamp = Stamp {
            publisher,
            sequence,
            sent_at: 1_000,
            warmup,
        };
        template.append(&mut frame, 0, stamp);
        frame[frame.len() - 16..].to_vec()
    }

    #[test]
    fn counts_unique_duplicate_out_of_order_and_foreign() {
        let now = Instant::now();
        let mut tracker = Tracker::new(2, 100);
        let record = |t: &mut Tracker, p, s| t.record(&payload(p, s, false), 5_000, now);
        assert_eq!(record(&mut tracker, 0, 0), Recorded::Unique);
        assert_eq!(record(&mut tracker, 0, 2), Recorded::Unique);
        assert_eq!(record(&mut tracker, 0, 1), Recorded::Unique); // after 2: out of order
        assert_eq!(record(&mut tracker, 0, 2), Recorded::Duplicate);
        assert_eq!(record(&mut tracker, 1, 99), Recorded::Unique);
        assert_eq!(record(&mut tracker, 1, 100), Recorded::Foreign); // past the run
        assert_eq!(record(&mut tracker, 2, 0), Recorded::Foreign); // no such publisher
        assert_eq!(tracker.record(b"short", 0, now), Recorded::Foreign);
        assert_eq!(
            tracker.record(&payload(1, 5, true), 0, now),
            Recorded::Warmup
        );
        assert_eq!(
            (
                tracker.received,
                tracker.unique,
                tracker.duplicates,
                tracker.out_of_order,
                tracker.foreign,
                tracker.warmup
            ),
            (5, 4, 1, 1, 3, 1)
        );
        assert_eq!(tracker.latency.count(), 5);
        assert_eq!(tracker.latency.max(), Some(4_000));
    }

    #[test]
    fn a_group_counts_each_message_once() {
        let now = Instant::now();
        let mut a = Tracker::new(1, 10);
        let mut b = Tracker::new(1, 10);
        for sequence in 0..6 {
            a.record(&payload(0, sequence, false), 0, now);
        }
        for sequence in 4..8 {
            b.record(&payload(0, sequence, false), 0, now);
        }
        // 0..8 arrived, 4 and 5 twice.
        assert_eq!(union_unique(&[a, b]), 8);
    }
}
