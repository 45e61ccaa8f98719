//! What every hostile test checks after its attack: the broker is alive, a well-behaved pair
//! of clients still works about as fast as before, and the broker's memory grew by less than
//! a stated bound. [`Watch::start`] measures the "before"; [`Watch::verdict`] asserts all three.

use std::time::{Duration, Instant};

use crate::MIB;
use crate::broker::RealBroker;
use crate::common::{TestClient, publish_packet};
use supermq::protocol::{Packet, QoS};

/// QoS 1 messages the pair sends per measurement.
pub const PAIR_MESSAGES: u32 = 100;

/// How much slower the pair may be after the attack than before it. An attack that holds the
/// pair back at all does so for a flow-control wait (`limits.queue_full_wait_ms`, 2 s) or a
/// queue's worth of messages, far beyond this.
pub const PAIR_SLOWDOWN: u32 = 5;

/// The pair always passes within this: 10 ms a message, where a difference is the scheduling
/// noise of a debug build on a 2-core machine running other tests, not the attack.
pub const PAIR_FLOOR: Duration = Duration::from_secs(1);

/// Longest a pair measurement may take before it counts as stuck (and the test fails at once
/// instead of waiting on a broker that holds the pair back message by message).
const PAIR_STUCK: Duration = Duration::from_secs(15);

/// A subscriber and a publisher (both MQTT 5.0) on a topic of their own.
pub struct Pair {
    subscriber: TestClient,
    publisher: TestClient,
    topic: String,
    sent: u32,
}

impl Pair {
    pub async fn connect(broker: &RealBroker, name: &str) -> Pair {
        let topic = format!("pair/{name}");
        let mut subscriber = TestClient::v5(broker.addr(), &format!("{name}-pair-sub")).await;
        let suback = subscriber.subscribe(&topic, QoS::AtLeastOnce).await;
        assert_eq!(suback.reasons, vec![1], "the pair's subscription");
        let publisher = TestClient::v5(broker.addr(), &format!("{name}-pair-pub")).await;
        Pair {
            subscriber,
            publisher,
            topic,
            sent: 0,
        }
    }

    /// How long [`PAIR_MESSAGES`] QoS 1 messages take end to end, one after the other: each
    /// published (PUBACK), received in order and acknowledged before the next.
    pub async fn time(&mut self) -> Duration {
        let start = Instant::now();
        let mut done = 0;
        let run = async {
            for _ in 0..PAIR_MESSAGES {
                self.sent += 1;
                let payload = self.sent.to_be_bytes();
                let packet_id = (self.sent % u32::from(u16::MAX)) as u16 + 1;
                let publish =
                    publish_packet(&self.topic, &payload, QoS::AtLeastOnce, false, packet_id);
                let ack = self.publisher.publish_qos1(publish).await;
                assert_eq!(ack.packet_id, packet_id);
                assert!(ack.reason < 0x80, "the pair's PUBACK refused: {ack:?}");
                let delivered = match self.subscriber.recv().await {
                    Packet::Publish(publish) => publish,
                    other => panic!("the pair's subscriber expected PUBLISH, got {other:?}"),
                };
                assert_eq!(
                    &delivered.payload[..],
                    &payload,
                    "the pair's messages in order"
                );
                self.subscriber.ack(&delivered).await;
                done += 1;
            }
        };
        if tokio::time::timeout(PAIR_STUCK, run).await.is_err() {
            panic!("the pair moved only {done} of {PAIR_MESSAGES} messages in {PAIR_STUCK:?}");
        }
        start.elapsed()
    }
}

/// Which memory figure bounds a test: what the broker holds once the attack is over, or the
/// most it ever held (for attacks whose danger is a spike).
#[derive(Debug, Clone, Copy)]
pub enum Rss {
    Now,
    Peak,
}

/// The state before the attack.
pub struct Watch {
    pair: Pair,
    pair_before: Duration,
    rss_before: u64,
}

impl Watch {
    /// Connects the pair, warms it up, times it and reads the broker's memory.
    pub async fn start(broker: &RealBroker) -> Watch {
        let mut pair = Pair::connect(broker, broker.name()).await;
        pair.time().await;
        let pair_before = pair.time().await;
        Watch {
            pair,
            pair_before,
            rss_before: broker.rss(),
        }
    }

    /// How much the memory figure `rss` grew since [`Watch::start`], in bytes.
    pub fn grown(&self, broker: &RealBroker, rss: Rss) -> u64 {
        let now = match rss {
            Rss::Now => broker.rss(),
            Rss::Peak => broker.peak_rss(),
        };
        now.saturating_sub(self.rss_before)
    }

    /// Asserts (a) the broker is alive, (b) the pair works at most [`PAIR_SLOWDOWN`] times
    /// slower than before (or within [`PAIR_FLOOR`]) and (c) `rss` grew by less than `bound`.
    pub async fn verdict(mut self, broker: &mut RealBroker, rss: Rss, bound: u64) {
        assert!(broker.is_alive().await, "(a) the broker is not alive");
        let after = self.pair.time().await;
        let allowed = (self.pair_before * PAIR_SLOWDOWN).max(PAIR_FLOOR);
        assert!(
            after <= allowed,
            "(b) the pair took {after:?} after the attack, {:?} before (at most {allowed:?})",
            self.pair_before
        );
        let grown = self.grown(broker, rss);
        assert!(
            grown < bound,
            "(c) {rss:?} memory grew by {:.1} MiB (from {:.1} MiB), bound {:.1} MiB",
            grown as f64 / MIB as f64,
            self.rss_before as f64 / MIB as f64,
            bound as f64 / MIB as f64
        );
        eprintln!(
            "{}: alive; pair {:?} before, {after:?} after; {rss:?} memory +{:.1} MiB (bound {:.0} MiB)",
            broker.name(),
            self.pair_before,
            grown as f64 / MIB as f64,
            bound as f64 / MIB as f64
        );
    }
}
