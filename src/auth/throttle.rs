//! Slows password guessing: failed authentications per source address are held to
//! `auth.failed_auth_per_ip_per_sec`, in bursts of as many.
//!
//! Each address has a token bucket kept as one instant (the "generic cell rate algorithm", as
//! in the broker's per-address connection limits): the time at which its bucket is full
//! again. An attempt takes a token *before* its password is checked and gives it back if the
//! password was right, so attempts running at once from one address queue up behind each
//! other instead of all being checked at once, and a client that gets its password right
//! pays nothing. An attempt that would have to wait longer than [`MAX_WAIT`] is refused at
//! once, unchecked.
//!
//! An entry lasts until its bucket is full again (at most a second after its last failure
//! at the default rate); stale ones are swept whenever the table has doubled, so it holds
//! about as many addresses as failed in the last second or so.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The longest an attempt waits for its turn; past it the attempt is refused unchecked.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

/// The fewest entries at which the table is swept.
const MIN_SWEEP: usize = 1024;

pub struct Throttle {
    /// A second divided by the rate.
    interval: Duration,
    /// How far ahead of now a bucket may run before attempts wait: about a second.
    burst: Duration,
    table: Mutex<Table>,
}

struct Table {
    full_at: HashMap<IpAddr, Instant>,
    sweep_at: usize,
}

/// What an attempt may do.
#[derive(Debug, PartialEq, Eq)]
pub enum Turn {
    /// Check the password after waiting this long (often zero).
    After(Duration),
    /// Too many failures from the address: refuse without checking.
    Refuse,
}

impl Throttle {
    /// A throttle of `per_sec` failures per second per address; `None` for 0 (off).
    pub fn new(per_sec: u32) -> Option<Throttle> {
        (per_sec > 0).then(|| {
            let interval = Duration::from_secs(1) / per_sec;
            Throttle {
                interval,
                burst: interval * per_sec,
                table: Mutex::new(Table {
                    full_at: HashMap::new(),
                    sweep_at: MIN_SWEEP,
                }),
            }
        })
    }

    /// Takes a token for an attempt from `ip` at `now`.
    pub fn take(&self, ip: IpAddr, now: Instant) -> Turn {
        let mut table = self.table();
        if table.full_at.len() >= table.sweep_at {
            table.full_at.retain(|_, full_at| *full_at > now);
            table.sweep_at = (table.full_at.len() * 2).max(MIN_SWEEP);
        }
        let full_at = table.full_at.get(&ip).copied().unwrap_or(now).max(now) + self.interval;
        let wait = full_at.saturating_duration_since(now + self.burst);
        if wait > MAX_WAIT {
            return Turn::Refuse;
        }
        table.full_at.insert(ip, full_at);
        Turn::After(wait)
    }

    /// Gives back the token of an attempt from `ip` that succeeded.
    pub fn give_back(&self, ip: IpAddr) {
        let mut table = self.table();
        if let Some(full_at) = table.full_at.get_mut(&ip) {
            *full_at -= self.interval;
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_burst_goes_at_once_then_attempts_wait_their_turn() {
        let throttle = Throttle::new(2).expect("on");
        let now = Instant::now();
        assert_eq!(throttle.take(IP, now), Turn::After(Duration::ZERO));
        assert_eq!(throttle.take(IP, now), Turn::After(Duration::ZERO));
        assert_eq!(
            throttle.take(IP, now),
            Turn::After(Duration::from_millis(500))
        );
        assert_eq!(
            throttle.take(IP, now),
            Turn::After(Duration::from_millis(1000))
        );
        // Another address is not held up.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(throttle.take(other, now), Turn::After(Duration::ZERO));
        // Waits are bounded: past MAX_WAIT the attempt is refused and takes nothing.
        for _ in 0..20 {
            throttle.take(IP, now);
        }
        assert_eq!(throttle.take(IP, now), Turn::Refuse);
        // Time refills the bucket.
        let later = now + Duration::from_secs(60);
        assert_eq!(throttle.take(IP, later), Turn::After(Duration::ZERO));
    }

    #[test]
    fn a_right_password_gives_its_token_back() {
        let throttle = Throttle::new(1).expect("on");
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(throttle.take(IP, now), Turn::After(Duration::ZERO));
            throttle.give_back(IP);
        }
    }

    #[test]
    fn zero_is_off() {
        assert!(Throttle::new(0).is_none());
    }
}
