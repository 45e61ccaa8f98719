//! Running totals shared by the publishers, the subscribers and the run's progress line.
//!
//! Each task adds once per batch (not per message), so the atomics cost nothing measurable;
//! the exact per-message accounting lives in each subscriber's own tracker.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct Counters {
    /// Measured messages written by publishers.
    pub sent: AtomicU64,
    /// Measured messages received, duplicates included.
    pub received: AtomicU64,
    /// Measured messages each subscriber saw for the first time, summed over subscribers.
    pub unique: AtomicU64,
    /// Warm-up messages received.
    pub warmup: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
