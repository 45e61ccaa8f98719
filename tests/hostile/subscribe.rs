//! SUBSCRIBE amplification (issue 10, item 3): one 800 KB SUBSCRIBE of 200,000 `#` filters,
//! with 200 retained messages of 1 KiB stored, raised RSS from 7 MB to 1.9 GB — every copy
//! scanned the whole retained store and collected its deliveries without a bound. Its cost
//! must be bounded by the session's own bounds, whatever the number of filters.

use std::time::Duration;

use crate::MIB;
use crate::attack::raw_subscribe;
use crate::broker::{RealBroker, Spec};
use crate::common::{Received, TestClient};
use crate::watch::{Rss, Watch};
use supermq::protocol::{Packet, QoS};

/// Retained messages stored before the attack, and their size.
const RETAINED: usize = 200;
const RETAINED_SIZE: usize = 1024;

/// `#` filters in the one SUBSCRIBE: 4 bytes each, 800 KB, under the default 1 MiB
/// `max_packet_size`.
const FILTERS: usize = 200_000;

/// The broker must answer within this: decoding 200,000 filters, which are one subscription,
/// is a fraction of a second in a debug build; the rest is a loaded machine.
const SUBACK_WITHIN: Duration = Duration::from_secs(10);

/// Peak memory: the packet (800 KB) and its 200,000 decoded filters (a few MiB), a SUBACK of
/// 200,000 codes, and retained deliveries bounded by the session queue (1,000 messages of
/// 1 KiB). 64 MiB leaves room for allocator slack and nothing like 200,000 × 200 deliveries.
const RSS_BOUND: u64 = 64 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_subscribe_of_200000_filters_costs_bounded_memory() {
    let mut broker = RealBroker::start(Spec::new("subscribe-amplification")).await;
    let mut retainer = TestClient::v5(broker.addr(), "retainer").await;
    let payload = vec![b'r'; RETAINED_SIZE];
    for i in 0..RETAINED {
        retainer
            .publish(&format!("kept/{i}"), &payload, QoS::AtLeastOnce, true)
            .await;
    }
    retainer.disconnect().await;
    let watch = Watch::start(&broker).await;

    let mut attacker = TestClient::v311(broker.addr(), "amplifier").await;
    let subscribe = raw_subscribe(1, "#", FILTERS);
    assert!(subscribe.len() > 800_000, "{} bytes", subscribe.len());
    attacker.send_bytes(&subscribe).await;
    let deadline = tokio::time::Instant::now() + SUBACK_WITHIN;
    let suback = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match attacker.recv_within(left).await {
            Received::Packet(Packet::SubAck(suback)) => break suback,
            // MQTT leaves open whether retained deliveries may come first.
            Received::Packet(Packet::Publish(_)) => {}
            Received::Packet(other) => panic!("expected SUBACK, got {other:?}"),
            Received::Silent => panic!(
                "no SUBACK within {SUBACK_WITHIN:?}; peak memory +{} MiB",
                watch.grown(&broker, Rss::Peak) / MIB
            ),
            Received::Closed => panic!("the broker closed the connection instead of a SUBACK"),
        }
    };
    assert_eq!(suback.packet_id, 1);
    assert_eq!(suback.reasons.len(), FILTERS, "one code per filter");
    assert!(
        suback
            .reasons
            .iter()
            .all(|&code| code == QoS::AtMostOnce as u8),
        "a duplicate filter counts once against max_subscriptions: every copy is granted"
    );
    // The attacker stays connected, its retained deliveries unread.
    watch.verdict(&mut broker, Rss::Peak, RSS_BOUND).await;
    drop(attacker);
}
