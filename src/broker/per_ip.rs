//! Limits per client IP address: sockets open at once (`limits.max_connections_per_ip`) and
//! new connections per second (`limits.max_connect_rate_per_ip`). Both are off by default.
//!
//! The rate is a token bucket holding as many tokens as the rate allows per second, refilled
//! continuously; each connection takes one. It is kept as one instant per address, the time
//! at which its bucket is full again (the "generic cell rate algorithm"): a connection is let
//! in if, after adding one interval (a second divided by the rate) to that instant, it is no
//! more than a second ahead of now.
//!
//! An address is looked up as the socket is accepted, before any TLS or WebSocket work, and a
//! refused socket takes nothing here (no token, no count, no entry). IPv4 addresses mapped into
//! IPv6 count as the IPv4 address; other IPv6 addresses count one by one (a client with a
//! whole prefix has many).
//!
//! The table is bounded: an address's entry goes once it has no socket open and its bucket
//! is full again, which is at most a second after its last connection. Stale entries are
//! swept whenever the table has doubled since the last sweep; if a sweep finds the table at
//! `max_connections + max_pending_connections` or more (the most sockets that can be open at
//! once, give or take those closing), it also forgets the buckets of addresses with no socket
//! open, which lets those addresses in a little early rather than grow. So the table holds at
//! most about twice that many entries (each under 100 bytes), whatever the number of
//! addresses that connect.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Limits;

/// The fewest entries at which the table is swept.
const MIN_SWEEP: usize = 1024;

/// Which per-address limit refused a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Exceeded {
    /// `limits.max_connections_per_ip`.
    Count,
    /// `limits.max_connect_rate_per_ip`.
    Rate,
}

/// The per-address limits and the table that enforces them.
pub(super) struct PerIp {
    /// Sockets open per address; `usize::MAX` when off.
    max_open: usize,
    /// A second divided by the rate; `None` when the rate is off.
    interval: Option<Duration>,
    /// How far ahead of now a bucket may run: the burst (as many connections as the rate
    /// allows per second) times the interval, about a second.
    burst: Duration,
    /// Entries at which a sweep forgets the buckets of addresses with no socket open.
    crowded: usize,
    table: Mutex<Table>,
}

struct Table {
    entries: HashMap<IpAddr, Entry>,
    /// The table is swept when it reaches this many entries.
    sweep_at: usize,
}

struct Entry {
    /// Sockets open from the address.
    open: usize,
    /// When the address's bucket is full again.
    full_at: Instant,
}

impl PerIp {
    /// The limits in `limits`, or `None` when both are off.
    pub fn new(limits: &Limits) -> Option<PerIp> {
        let rate = limits.max_connect_rate_per_ip;
        if limits.max_connections_per_ip == 0 && rate == 0 {
            return None;
        }
        let interval = (rate > 0).then(|| Duration::from_secs(1) / rate);
        Some(PerIp {
            max_open: match limits.max_connections_per_ip {
                0 => usize::MAX,
                max => max,
            },
            interval,
            burst: interval.map_or(Duration::ZERO, |interval| interval * rate),
            crowded: limits
                .max_connections
                .saturating_add(limits.max_pending_connections),
            table: Mutex::new(Table {
                entries: HashMap::new(),
                sweep_at: MIN_SWEEP,
            }),
        })
    }

    /// Counts a new socket from `ip`, or says which limit refuses it.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Exceeded> {
        let mut table = self.table();
        if table.entries.len() >= table.sweep_at {
            table.sweep(now, self.crowded);
        }
        let entry = table.entries.entry(ip).or_insert(Entry {
            open: 0,
            full_at: now,
        });
        if entry.open >= self.max_open {
            return Err(Exceeded::Count);
        }
        if let Some(interval) = self.interval {
            let next = entry.full_at.max(now) + interval;
            if next > now + self.burst {
                // Only an address with a socket open or a bucket not yet full is refused, so
                // the entry was there before: a refusal adds none.
                return Err(Exceeded::Rate);
            }
            entry.full_at = next;
        }
        entry.open += 1;
        Ok(())
    }

    /// A socket [`PerIp::admit`] counted has closed.
    pub fn release(&self, ip: IpAddr, now: Instant) {
        let mut table = self.table();
        if let Some(entry) = table.entries.get_mut(&ip) {
            entry.open = entry.open.saturating_sub(1);
            if entry.open == 0 && entry.full_at <= now {
                table.entries.remove(&ip);
            }
        }
    }

    /// Addresses in the table.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().entries.len()
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table {
    fn sweep(&mut self, now: Instant, crowded: usize) {
        self.entries
            .retain(|_, entry| entry.open > 0 || entry.full_at > now);
        if self.entries.len() >= crowded {
            self.entries.retain(|_, entry| entry.open > 0);
        }
        self.sweep_at = (self.entries.len() * 2).max(MIN_SWEEP);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn per_ip(max_open: usize, rate: u32) -> PerIp {
        let limits = Limits {
            max_connections_per_ip: max_open,
            max_connect_rate_per_ip: rate,
            max_connections: 10,
            max_pending_connections: 10,
            ..Limits::default()
        };
        PerIp::new(&limits).expect("a limit is on")
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn off_when_both_limits_are_zero() {
        assert!(PerIp::new(&Limits::default()).is_none());
    }

    #[test]
    fn count_refuses_past_the_limit_and_frees_on_release() {
        let limits = per_ip(2, 0);
        let now = Instant::now();
        assert_eq!(limits.admit(ip(1), now), Ok(()));
        assert_eq!(limits.admit(ip(1), now), Ok(()));
        assert_eq!(limits.admit(ip(1), now), Err(Exceeded::Count));
        assert_eq!(
            limits.admit(ip(2), now),
            Ok(()),
            "another address has its own"
        );
        limits.release(ip(1), now);
        assert_eq!(limits.admit(ip(1), now), Ok(()));
    }

    #[test]
    fn rate_allows_a_burst_of_the_rate_then_one_per_interval() {
        let limits = per_ip(0, 4);
        let now = Instant::now();
        for _ in 0..4 {
            assert_eq!(limits.admit(ip(1), now), Ok(()));
        }
        assert_eq!(limits.admit(ip(1), now), Err(Exceeded::Rate));
        let later = now + Duration::from_millis(249);
        assert_eq!(limits.admit(ip(1), later), Err(Exceeded::Rate));
        let later = now + Duration::from_millis(250);
        assert_eq!(limits.admit(ip(1), later), Ok(()));
        assert_eq!(limits.admit(ip(1), later), Err(Exceeded::Rate));
    }

    #[test]
    fn a_count_refusal_takes_no_token() {
        let limits = per_ip(1, 2);
        let now = Instant::now();
        assert_eq!(limits.admit(ip(1), now), Ok(()));
        for _ in 0..5 {
            assert_eq!(limits.admit(ip(1), now), Err(Exceeded::Count));
        }
        limits.release(ip(1), now);
        assert_eq!(
            limits.admit(ip(1), now),
            Ok(()),
            "the second token is still there"
        );
    }

    #[test]
    fn an_entry_goes_when_its_last_socket_closes_with_a_full_bucket() {
        let limits = per_ip(5, 10);
        let now = Instant::now();
        limits.admit(ip(1), now).unwrap();
        limits.release(ip(1), now);
        assert_eq!(limits.len(), 1, "the bucket is not full yet");
        limits.admit(ip(1), now).unwrap();
        limits.release(ip(1), now + Duration::from_secs(1));
        assert_eq!(limits.len(), 0);
    }

    #[test]
    fn sweeps_keep_the_table_bounded_whatever_the_number_of_addresses() {
        // crowded = max_connections + max_pending_connections = 20; the sweep starts at 1024.
        let limits = per_ip(0, 1);
        let now = Instant::now();
        for i in 0..10_000u32 {
            let address = IpAddr::from(i.to_be_bytes());
            limits.admit(address, now).unwrap();
            limits.release(address, now);
        }
        assert!(limits.len() <= MIN_SWEEP, "{} entries", limits.len());
        // An address with a socket open is never forgotten.
        limits.admit(ip(1), now).unwrap();
        for i in 0..10_000u32 {
            let address = IpAddr::from((i + 1_000_000).to_be_bytes());
            limits.admit(address, now).unwrap();
            limits.release(address, now);
        }
        let refused = limits.admit(ip(1), now);
        assert_eq!(refused, Err(Exceeded::Rate), "its bucket was kept");
    }
}
