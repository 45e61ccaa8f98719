//! Slows password guessing: failed authentications per source address are held to
//! `auth.failed_auth_per_ip_per_sec`, in bursts of as many.
//!
//! Each address has a token bucket kept as one instant (the "generic cell rate algorithm", as
//! in the broker's per-address connection limits): the time at which its bucket is full
//! again. Only a failure takes a token, so a client that gets its password right pays
//! nothing, and many devices behind one NAT address reconnecting at once are not held up by
//! each other. An attempt from an address whose bucket is empty waits until it has a token
//! again ([`Throttle::wait`]); one that would wait longer than [`MAX_WAIT`] is refused at
//! once, unchecked. (The caller asks again once it holds one of the few places to check a
//! password, so attempts running at once cannot all slip past an empty bucket.)
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

    /// Whether an attempt from `ip` at `now` may be checked, or must wait (or give up).
    pub fn wait(&self, ip: IpAddr, now: Instant) -> Turn {
        let table = self.table();
        let Some(&full_at) = table.full_at.get(&ip) else {
            return Turn::After(Duration::ZERO);
        };
        let wait = (full_at.max(now) + self.interval).saturating_duration_since(now + self.burst);
        if wait > MAX_WAIT {
            Turn::Refuse
        } else {
            Turn::After(wait)
        }
    }

    /// Records a failed attempt from `ip` at `now`: it takes a token.
    pub fn failed(&self, ip: IpAddr, now: Instant) {
        let mut table = self.table();
        if table.full_at.len() >= table.sweep_at {
            table.full_at.retain(|_, full_at| *full_at > now);
            table.sweep_at = (table.full_at.len() * 2).max(MIN_SWEEP);
        }
        let full_at = table.full_at.get(&ip).copied().unwrap_or(now).max(now) + self.interval;
        table.full_at.insert(ip, full_at);
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
    fn a_burst_of_failures_goes_at_once_then_attempts_wait_their_turn() {
        let throttle = Throttle::new(2).expect("on");
        let now = Instant::now();
        for _ in 0..2 {
            assert_eq!(throttle.wait(IP, now), Turn::After(Duration::ZERO));
            throttle.failed(IP, now);
        }
        assert_eq!(
            throttle.wait(IP, now),
            Turn::After(Duration::from_millis(500))
        );
        throttle.failed(IP, now);
        assert_eq!(
            throttle.wait(IP, now),
            Turn::After(Duration::from_millis(1000))
        );
        // Another address is not held up.
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(throttle.wait(other, now), Turn::After(Duration::ZERO));
        // Waits are bounded: past MAX_WAIT the attempt is refused.
        for _ in 0..20 {
            throttle.failed(IP, now);
        }
        assert_eq!(throttle.wait(IP, now), Turn::Refuse);
        // Time refills the bucket.
        let later = now + Duration::from_secs(60);
        assert_eq!(throttle.wait(IP, later), Turn::After(Duration::ZERO));
    }

    #[test]
    fn attempts_that_succeed_take_nothing() {
        let throttle = Throttle::new(1).expect("on");
        let now = Instant::now();
        for _ in 0..10 {
            assert_eq!(throttle.wait(IP, now), Turn::After(Duration::ZERO));
        }
    }

    #[test]
    fn zero_is_off() {
        assert!(Throttle::new(0).is_none());
    }
}
