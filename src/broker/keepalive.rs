//! Keep alive (MQTT-3.1.2-24, 5.0 §3.1.2.10), watched for every connection by one task.
//!
//! A timer per connection would cost each connection a tokio `Sleep` (112 bytes) in its task
//! for its whole life — most connections are idle, so that is a good part of what one costs —
//! and a timer-wheel update per packet. Instead each connection's [`Outbox`] carries a
//! [`Watch`]: the reader notes the time (in ticks of [`TICK`]) of each packet, and [`sweep`]
//! runs once per tick over the connected clients ([`Online`]) and closes, with reason 0x8D,
//! the connections that have been silent for longer than 1.5 × their keep alive.
//!
//! A connection is never closed early: its limit is rounded up to whole ticks and one more
//! tick is allowed for the rounding of the time it was last heard, so it is closed up to two
//! ticks (plus the sweep's own delay) after its 1.5 × keep alive. While the broker itself
//! holds a reader up (flow control, [`Watch::pause`]), the time does not count.
//!
//! The same watch counts how long a connection has been quiet (neither read nor written), in
//! sweeps: past a second the sweep asks it to rest without a task ([`super::idle`]), waking its
//! writer to see it.
//!
//! The sweep's work is proportional to the connected clients, not to every session the
//! broker keeps: it walks a table of connected outboxes, one shard lock at a time, and takes
//! no session lock. About 5 ns per connection, 0.05 ms per tick at 10,000 connections.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::protocol::reason;

use super::Broker;
use super::outbox::Outbox;
use super::stats::DropReport;

/// The sweep's period, and the unit the watches count in.
const TICK: Duration = Duration::from_millis(250);

/// Ticks between two reports of dropped messages: 10 s.
const REPORT_EVERY: u64 = 40;

/// `heard` while the broker holds the reader up: never expires.
const PAUSED: u64 = u64::MAX;

/// Whole ticks without a read or a write after which the sweep asks a connection to rest
/// ([`super::idle`]): 1 s. A connection busier than that never rests, so a message stream
/// pays nothing for it; one quieter pays a wake-up per message, a few microseconds.
const QUIET_TICKS: u8 = 4;
/// `quiet` of a new connection: asked to rest as soon as it has nothing to do after its
/// CONNACK, until it first does. Clients tend to connect in crowds and then go quiet, and a
/// crowd of tasks waiting for the sweep would be a crowd of task cells: freed later, but kept
/// by the allocator, so the process would stay as large as if they had never rested.
const FRESH: u8 = u8::MAX - 2;
/// `quiet` once the sweep has asked the connection to rest (and while it rests).
const ASKED: u8 = u8::MAX - 1;
/// `quiet` for a connection that cannot rest: it is never asked.
const NEVER: u8 = u8::MAX;

/// The broker's clock for keep alive: whole ticks since it started.
pub struct Clock {
    start: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Whole ticks since the clock started, rounded down.
    pub fn now(&self) -> u64 {
        let ticks = self.start.elapsed().as_millis() / TICK.as_millis();
        u64::try_from(ticks).unwrap_or(u64::MAX - 1)
    }
}

/// One connection's keep alive: when it was last heard from, and how long it may be silent;
/// and how long it has been quiet (nothing read or written), to ask it to rest.
pub struct Watch {
    heard: AtomicU64,
    /// Ticks of silence allowed; 0 for a client without keep alive. (A u32 is 34 years of
    /// ticks, and keeps the watch, in every connection's outbox, at 16 bytes.)
    limit: u32,
    /// Sweeps since the connection last read or wrote, up to [`QUIET_TICKS`]; or [`FRESH`],
    /// [`ASKED`] or [`NEVER`].
    quiet: AtomicU8,
}

impl Watch {
    /// A watch for a connection that may be silent for `idle` (none: forever), heard now;
    /// one that `rests` is asked to rest when quiet.
    pub fn new(idle: Option<Duration>, now: u64, rests: bool) -> Watch {
        let limit = idle.map_or(0, |idle| idle.as_millis().div_ceil(TICK.as_millis()));
        Watch {
            heard: AtomicU64::new(now),
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            quiet: AtomicU8::new(if rests { FRESH } else { NEVER }),
        }
    }

    /// The client was heard from at tick `now` (also ends a pause).
    pub fn heard(&self, now: u64) {
        self.heard.store(now, Ordering::Relaxed);
        self.stir();
    }

    /// The connection read or wrote: its quiet starts again (a fresh one stays asked). A load,
    /// and a store only after a sweep counted it quiet, so a busy connection's traffic does
    /// not write here.
    pub fn stir(&self) {
        let quiet = self.quiet.load(Ordering::Relaxed);
        if quiet != 0 && quiet != NEVER && quiet != FRESH {
            self.quiet.store(0, Ordering::Relaxed);
        }
    }

    /// The connection got up from a rest: its quiet is counted from now.
    pub fn woke(&self) {
        if self.quiet.load(Ordering::Relaxed) != NEVER {
            self.quiet.store(0, Ordering::Relaxed);
        }
    }

    /// Whether the connection is asked to rest: by the sweep, or as a fresh one.
    pub fn asked_to_rest(&self) -> bool {
        matches!(self.quiet.load(Ordering::Relaxed), ASKED | FRESH)
    }

    /// One more sweep without traffic; true when that makes the connection quiet enough to be
    /// asked to rest (once: until it is [`Watch::stir`]red).
    fn drowse(&self) -> bool {
        let quiet = self.quiet.load(Ordering::Relaxed);
        let next = match quiet {
            ASKED | FRESH | NEVER => return false,
            quiet if quiet < QUIET_TICKS => quiet + 1,
            _ => ASKED,
        };
        // Lost to a concurrent stir: counted again from 0, as it should be.
        let swapped =
            self.quiet
                .compare_exchange(quiet, next, Ordering::Relaxed, Ordering::Relaxed);
        swapped.is_ok() && next == ASKED
    }

    /// The broker holds the reader up (a full queue): silence does not count until the next
    /// [`Watch::heard`].
    pub fn pause(&self) {
        self.heard.store(PAUSED, Ordering::Relaxed);
    }

    /// Whether the client has been silent for longer than allowed, at tick `now`. The extra
    /// tick covers `heard` having been rounded down.
    fn expired(&self, now: u64) -> bool {
        let heard = self.heard.load(Ordering::Relaxed);
        self.limit > 0 && heard != PAUSED && now.saturating_sub(heard) > u64::from(self.limit)
    }
}

impl Default for Watch {
    /// No keep alive, and never asked to rest.
    fn default() -> Watch {
        Watch {
            heard: AtomicU64::new(0),
            limit: 0,
            quiet: AtomicU8::new(NEVER),
        }
    }
}

/// The connected clients' outboxes, keyed by the outbox's address (unique while it lives).
#[derive(Default)]
pub struct Online(DashMap<usize, Arc<Outbox>>);

impl Online {
    /// Watches `outbox` until [`Online::remove`].
    pub fn insert(&self, outbox: &Arc<Outbox>) {
        self.0.insert(key(outbox), Arc::clone(outbox));
    }

    pub fn remove(&self, outbox: &Arc<Outbox>) {
        self.0.remove(&key(outbox));
    }

    /// The connections silent for longer than their keep alive allows, at tick `now`. When
    /// `rest` is on, the others that have been quiet long enough are asked to rest
    /// ([`super::idle`]): their writer is woken to see it.
    fn sweep(&self, now: u64, rest: bool) -> Vec<Arc<Outbox>> {
        let mut silent = Vec::new();
        for entry in self.0.iter() {
            let outbox = entry.value();
            if outbox.keep_alive().expired(now) {
                silent.push(Arc::clone(outbox));
            } else if rest && outbox.keep_alive().drowse() {
                outbox.wake();
            }
        }
        silent
    }
}

fn key(outbox: &Arc<Outbox>) -> usize {
    Arc::as_ptr(outbox) as usize
}

/// Closes silent connections, once per tick (250 ms), for as long as the broker runs (each
/// connection logs its own close, with its client id), asks quiet ones to rest, declares
/// slow the sessions that have kept messages waiting for too long (see `flow`), and every
/// 10 s logs the messages dropped meanwhile.
pub async fn sweep(broker: Arc<Broker>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drops = DropReport::default();
    for tick in 1u64.. {
        ticks.tick().await;
        if tick % REPORT_EVERY == 0 {
            drops.report(&broker.stats);
        }
        let rest = broker.idle.is_on();
        for outbox in broker.online.sweep(broker.clock.now(), rest) {
            outbox.close(reason::KEEP_ALIVE_TIMEOUT, "keep alive timeout");
        }
        // The same tick times out subscribers that keep messages waiting too long.
        broker.waits.expire(&broker.bounds, &broker.stats);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_watch_expires_only_after_its_limit_and_one_tick_more() {
        // 1.5 s is 6 ticks; heard at tick 10.
        let watch = Watch::new(Some(Duration::from_millis(1500)), 10, true);
        assert!(!watch.expired(10));
        assert!(!watch.expired(16));
        assert!(watch.expired(17));
    }

    #[test]
    fn a_limit_is_rounded_up_to_whole_ticks() {
        let watch = Watch::new(Some(Duration::from_millis(1100)), 0, true);
        assert!(!watch.expired(5));
        assert!(watch.expired(6));
    }

    #[test]
    fn hearing_from_the_client_restarts_the_count() {
        let watch = Watch::new(Some(Duration::from_millis(1000)), 0, true);
        watch.heard(4);
        assert!(!watch.expired(8));
        assert!(watch.expired(9));
    }

    #[test]
    fn a_fresh_connection_is_asked_to_rest_until_it_first_wakes() {
        let watch = Watch::new(None, 0, true);
        assert!(watch.asked_to_rest());
        watch.stir();
        assert!(
            watch.asked_to_rest(),
            "its CONNACK and first packets do not count"
        );
        assert!(!watch.drowse(), "the sweep does not ask it again");
        watch.woke();
        assert!(!watch.asked_to_rest());
    }

    #[test]
    fn a_quiet_connection_is_asked_to_rest_once_until_it_stirs() {
        let watch = Watch::new(None, 0, true);
        watch.woke();
        let sweeps = |n| (0..n).filter(|_| watch.drowse()).count();
        assert_eq!(sweeps(usize::from(QUIET_TICKS)), 0);
        assert_eq!(
            sweeps(10),
            1,
            "asked once, on the sweep after the quiet ticks"
        );
        assert!(watch.asked_to_rest());
        watch.stir();
        assert!(!watch.asked_to_rest());
        assert_eq!(
            sweeps(usize::from(QUIET_TICKS)),
            0,
            "a stir starts the count again"
        );
        assert_eq!(sweeps(1), 1);
    }

    #[test]
    fn a_connection_that_cannot_rest_is_never_asked() {
        let watch = Watch::new(None, 0, false);
        assert!((0..100).all(|_| !watch.drowse()));
        watch.stir();
        assert!(!watch.asked_to_rest());
    }

    #[test]
    fn a_paused_watch_or_one_without_keep_alive_never_expires() {
        let watch = Watch::new(Some(Duration::from_millis(1000)), 0, true);
        watch.pause();
        assert!(!watch.expired(1_000_000));
        assert!(!Watch::new(None, 0, true).expired(1_000_000));
    }
}
