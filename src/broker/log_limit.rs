//! Log lines for events that an attacker can repeat at will (sockets refused or evicted by
//! the admission limits, CONNECTs refused, failed handshakes; on the route port, connections
//! evicted and refused, invalid items from peers): at most one line a second per kind of
//! event, each saying how many were held back since the last, so a flood cannot flood the log
//! too. The counters ([`super::Stats`], the cluster's) still count every one.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The least time between two lines of one kind.
const INTERVAL: Duration = Duration::from_secs(1);

/// Lets one kind of log line through at most once per [`INTERVAL`].
#[derive(Default)]
pub(crate) struct LogLimit {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    last: Option<Instant>,
    held_back: u64,
}

impl LogLimit {
    /// Whether a line may be written now: `Some` with the number of lines held back since the
    /// last one written, or `None` (and one more held back).
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state
            .last
            .is_some_and(|last| now.duration_since(last) < INTERVAL)
        {
            state.held_back += 1;
            return None;
        }
        state.last = Some(now);
        Some(std::mem::take(&mut state.held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_second_says_how_many_were_held_back() {
        let limit = LogLimit::default();
        let start = Instant::now();
        assert_eq!(limit.allow_at(start), Some(0));
        for millis in [1, 500, 999] {
            assert_eq!(limit.allow_at(start + Duration::from_millis(millis)), None);
        }
        assert_eq!(limit.allow_at(start + INTERVAL), Some(3));
        assert_eq!(limit.allow_at(start + INTERVAL), None);
        assert_eq!(limit.allow_at(start + 5 * INTERVAL), Some(1));
    }
}
