//! The `$SYS` tree: this node's figures under `$SYS/broker/`, with mosquitto's topic names and
//! payload formats, so that what reads mosquitto's tree reads ours.
//!
//! How it fits:
//! - [`run`] is one task for the whole broker, which `Server::run` starts when
//!   `sys.interval_secs` is not 0. Every interval it reads the figures (counters from
//!   [`Stats`], the sizes of the session table, the router and the retained store) and
//!   publishes each one that changed, as a retained QoS 0 message from the broker itself.
//! - The messages are kept in a store of their own ([`Sys`]), not in the retained store: that
//!   one's limits, count and stream to a joining peer are the clients'. A SUBSCRIBE to a
//!   `$SYS` filter takes its retained messages from here (`inbound`), as no other message can
//!   have a `$SYS` topic: clients, Wills and peers are all refused one.
//! - The tree is about this node alone, so it never reaches a peer: updates go to the local
//!   subscribers only, and `Broker::publish`, the one path to `Peers::forward`, never sees a
//!   `$SYS` message (asserted there in debug builds). A group member gets its update without
//!   its group, so an update it leaves behind is never handed to another member, here or on a
//!   peer; and a session that moves to another node goes without its unsent updates
//!   (`handover`).
//! - Leading wildcards do not match `$` topics (MQTT-4.7.2-1): a `#` subscriber gets none of
//!   this, a `$SYS/#` subscriber all of it. The ACL applies as to any delivery.
//! - Updates count nowhere a client could watch them grow by themselves: not as messages
//!   routed or sent, bytes sent, drops or denials (a subscriber whose queue is full simply
//!   misses an update, which the next one replaces), so an idle broker's figures stay idle.

use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::time::MissedTickBehavior;

use crate::protocol::{Publish, QoS};

use super::Broker;
use super::groups::{Pick, pick_member};
use super::message::{Delivery, Message};
use super::retained::{Retained, Stored};
use super::router::Match;
use super::stats::Stats;

/// The prefix of every topic of the tree.
const PREFIX: &str = "$SYS/broker/";

/// The `$SYS` messages as last published, for new subscribers, and when the broker started.
pub struct Sys {
    started: Instant,
    /// Unbounded, as the tree is a fixed set of topics.
    store: RwLock<Retained>,
}

impl Default for Sys {
    fn default() -> Self {
        Sys {
            started: Instant::now(),
            store: RwLock::new(Retained::new(usize::MAX, usize::MAX)),
        }
    }
}

impl Sys {
    pub fn store(&self) -> RwLockReadGuard<'_, Retained> {
        self.store.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn store_mut(&self) -> RwLockWriteGuard<'_, Retained> {
        self.store.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Publishes the tree every `every`, for as long as the broker runs; the first time at once.
pub async fn run(broker: Arc<Broker>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    // A late tick (a stalled runtime) is not made up for with a burst: the loads take the
    // time that really passed.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut load = Load::default();
    broker.publish_sys(
        "version",
        format!("supermq version {}", env!("CARGO_PKG_VERSION")),
    );
    loop {
        ticks.tick().await;
        load.update(broker.stats.messages_received.get(), Instant::now());
        broker.publish_figures(&load);
    }
}

/// The periods of the load averages, in seconds, and their topics below `load/`.
const LOADS: [(f64, &str); 3] = [
    (60.0, "messages/received/1min"),
    (300.0, "messages/received/5min"),
    (900.0, "messages/received/15min"),
];

/// Messages received per minute, averaged over 1, 5 and 15 minutes as mosquitto does
/// (sys_tree.c), the way Unix load averages are: each update takes the rate of the time
/// since the last one, `r = Δreceived × 60 / Δt` (Δt in seconds), and moves each average
/// towards it, `load ← r + e^(−Δt/T) × (load − r)` for its period `T` (60, 300, 900 s). A
/// steady rate `r` brings the average to `r`, 63% of the way in `T`; it starts at 0.
#[derive(Default)]
struct Load {
    /// The count and the time of the last update; `None` before the first.
    last: Option<(u64, Instant)>,
    averages: [f64; 3],
}

impl Load {
    fn update(&mut self, received: u64, now: Instant) {
        let Some((before, then)) = self.last else {
            self.last = Some((received, now));
            return;
        };
        let elapsed = now.saturating_duration_since(then).as_secs_f64();
        if elapsed <= 0.0 {
            // No rate without time; what arrived counts at the next update.
            return;
        }
        // As f64: the counts of a broker's lifetime are far within its 53 bits.
        let rate = received.saturating_sub(before) as f64 * 60.0 / elapsed;
        for (average, (period, _)) in self.averages.iter_mut().zip(LOADS) {
            *average = rate + (-elapsed / period).exp() * (*average - rate);
        }
        self.last = Some((received, now));
    }
}

impl Broker {
    /// Publishes every figure of the tree that changed since it was last published.
    fn publish_figures(&self, load: &Load) {
        let stats: &Stats = &self.stats;
        let uptime = self.sys.started.elapsed().as_secs();
        self.publish_sys("uptime", format!("{uptime} seconds"));
        let counts = [
            ("clients/connected", self.connected_count() as u64),
            ("clients/total", self.session_count() as u64),
            ("messages/received", stats.messages_received.get()),
            ("messages/sent", stats.messages_sent.get()),
            (
                "publish/messages/dropped",
                stats.drops().iter().map(|(_, count)| count).sum(),
            ),
            ("subscriptions/count", self.subscription_count() as u64),
            ("retained messages/count", self.retained_count() as u64),
            ("bytes/received", stats.bytes_received.get()),
            ("bytes/sent", stats.bytes_sent.get()),
        ];
        for (name, count) in counts {
            self.publish_sys(name, count.to_string());
        }
        for (average, (_, name)) in load.averages.iter().zip(LOADS) {
            self.publish_sys(&format!("load/{name}"), format!("{average:.2}"));
        }
    }

    /// Publishes `$SYS/broker/{name}`, retained, unless it holds `payload` already.
    fn publish_sys(&self, name: &str, payload: String) {
        let topic = format!("{PREFIX}{name}");
        let unchanged = self
            .sys
            .store()
            .get(&topic)
            .is_some_and(|old| old.payload == payload.as_bytes());
        if unchanged {
            return;
        }
        let publish = Publish {
            qos: QoS::AtMostOnce,
            retain: true,
            topic,
            payload: Bytes::from(payload),
            ..Publish::default()
        };
        // Origin 0: the broker itself, which no session's No Local excludes.
        let message = Arc::new(Message::from_publish(publish, 0));
        let stored = self.sys.store_mut().store(Arc::clone(&message));
        debug_assert_eq!(stored, Stored::Kept, "the $SYS store has no bounds");
        let matches = {
            let router = self.router();
            let mut matches = router.matches(&message.topic, message.origin);
            if router.has_groups() {
                for group in router.group_matches(&message.topic) {
                    // Among this node's members only: the tree is this node's.
                    if let Pick::Local(m) =
                        pick_member(self.strategy, Some(group), 0, None, &group.turn)
                    {
                        matches.push(m);
                    }
                }
            }
            matches
        };
        for m in matches {
            self.offer_sys(&message, m);
        }
    }

    /// Queues an update for a connected subscriber that may read it, if its queue has room.
    /// Counted nowhere (see the module's notes).
    fn offer_sys(&self, message: &Arc<Message>, m: Match) {
        if !self.auth.may_read(m.session.access(), &message.topic) {
            return;
        }
        let delivery = Delivery {
            message: Arc::clone(message),
            qos: QoS::AtMostOnce,
            // MQTT-3.3.1-12/13, as for any delivery.
            retain: m.retain_as_published,
            subscription_ids: m.subscription_ids,
            group: None,
            stored: None,
        };
        let mut session = m.session.lock();
        // QoS 0 is not kept for an offline session (MQTT-3.1.2-5 makes it optional).
        let Some(outbox) = session.outbox().cloned() else {
            return;
        };
        if session.enqueue(delivery, &self.bounds) {
            outbox.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_follow_mosquitto_formula() {
        let start = Instant::now();
        let mut load = Load::default();
        load.update(0, start);
        assert_eq!(
            load.averages, [0.0; 3],
            "the first update only starts the clock"
        );
        // 600 messages in 60 s: 600 a minute, for one minute.
        load.update(600, start + Duration::from_secs(60));
        let expected = |period: f64| 600.0 * (1.0 - (-60.0 / period).exp());
        for (average, (period, _)) in load.averages.iter().zip(LOADS) {
            assert!((average - expected(period)).abs() < 1e-9, "{average}");
        }
        // A steady rate brings every average to it.
        for minute in 2..=120 {
            load.update(600 * minute, start + Duration::from_secs(60 * minute));
        }
        for average in load.averages {
            assert!((average - 600.0).abs() < 1.0, "{average}");
        }
        // No time passed: nothing moves (and nothing divides by zero); what arrived meanwhile
        // counts at the next update.
        let before = load.averages;
        load.update(600 * 121, start + Duration::from_secs(60 * 120));
        assert_eq!(load.averages, before);
        load.update(600 * 122, start + Duration::from_secs(60 * 121));
        let expected = 1200.0 + (-1.0f64).exp() * (before[0] - 1200.0);
        assert!(
            (load.averages[0] - expected).abs() < 1e-9,
            "{:?}",
            load.averages
        );
    }
}
