//! Joining never freezes a node (issue 13): while a peer joins and receives this node's
//! retained store, publishes on the node keep flowing, and the peer ends up with every
//! retained message. Two brokers in this process; the store's size comes from
//! `SUPERMQ_JOIN_RETAINED` (default 90,000 messages of 1 KiB). Another client on the node
//! subscribes and unsubscribes all along, as the stall came through interest changes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::cluster::{free_port, in_process_node};
use common::{TestBroker, TestClient};
use supermq::protocol::{Packet, Properties, QoS, Unsubscribe};

/// An in-process node with a heartbeat timeout long enough for a debug build streaming
/// 90,000 messages on two busy cores.
fn node(name: &str, route: u16, seeds: &[u16]) -> supermq::config::Config {
    let mut config = in_process_node(name, route, seeds);
    config.cluster.heartbeat_timeout_ms = 5000;
    config
}

async fn wait_for(what: &str, within: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_keep_flowing_while_a_peer_joins_and_gets_every_retained_message() {
    let count: usize = std::env::var("SUPERMQ_JOIN_RETAINED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(90_000);
    let (ra, rb) = (free_port(), free_port());
    let a = TestBroker::start(node("a", ra, &[])).await;

    // A holds `count` retained messages of 1 KiB.
    let mut filler = TestClient::v5(a.addr, "filler").await;
    let payload = vec![b'r'; 1024];
    for i in 0..count {
        filler
            .send_publish(common::publish_packet(
                &format!("keep/{}/{i}", i % 100),
                &payload,
                QoS::AtMostOnce,
                true,
                0,
            ))
            .await;
    }
    wait_for(
        "a holds every retained message",
        Duration::from_secs(120),
        || a.broker.retained_count() == count,
    )
    .await;

    // A client on A publishes to itself at QoS 1 every 3 ms: publish → PUBACK and delivery.
    let stop = Arc::new(AtomicBool::new(false));
    // The probe and the churn run on a runtime of their own: on the brokers' runtime, a frozen
    // runtime would freeze the probe's clock too, and hide the stall it is there to see.
    let probes = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for the probes");
    let measuring = {
        let stop = Arc::clone(&stop);
        let addr = a.addr;
        probes.spawn(async move {
            let mut probe = TestClient::v5(addr, "probe").await;
            probe.subscribe("lat/#", QoS::AtLeastOnce).await;
            // Sent on a fixed schedule, and each round trip counted from when it was due: a
            // stall delays every round trip due during it, not only the one it caught.
            let mut took = Vec::new();
            let mut due = tokio::time::Instant::now();
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep_until(due).await;
                probe
                    .publish_to_self("lat/x", b"ping", QoS::AtLeastOnce)
                    .await;
                took.push(due.elapsed());
                due += Duration::from_millis(3);
            }
            took
        })
    };
    // Another client on A changes its interest all along, as clients do: an interest change
    // takes the router's write lock and, under it, the cluster state lock, which is what a
    // join used to hold for as long as it copied the retained store.
    let churning = {
        let stop = Arc::clone(&stop);
        let addr = a.addr;
        probes.spawn(async move {
            let mut churn = TestClient::v5(addr, "churn").await;
            let mut k = 0u32;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let filter = format!("churn/{k}");
                churn.subscribe(&filter, QoS::AtMostOnce).await;
                churn
                    .send(&Packet::Unsubscribe(Unsubscribe {
                        packet_id: 9,
                        filters: vec![filter],
                        properties: Properties::default(),
                    }))
                    .await;
                assert!(matches!(churn.recv().await, Packet::UnsubAck(_)));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let joined = Instant::now();
    // B is another node: it runs on a runtime of its own, so its work on the stream it
    // receives does not take A's threads (as it would not across two machines).
    let other = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a runtime for b");
    let b = other
        .spawn(TestBroker::start(node("b", rb, &[ra])))
        .await
        .expect("b starts");
    wait_for(
        "b holds every retained message",
        Duration::from_secs(300),
        || b.broker.retained_count() == count,
    )
    .await;
    let synced = joined.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut took = measuring.await.expect("the probe ran");
    churning.await.expect("the churn ran");
    probes.shutdown_background();
    drop(b);
    other.shutdown_background();

    took.sort();
    let at = |q: f64| took[((took.len() - 1) as f64 * q) as usize];
    let (p50, p99, max) = (at(0.5), at(0.99), took[took.len() - 1]);
    eprintln!(
        "join with {count} retained: synced in {synced:?}; {} round trips on a: p50 {p50:?}, p99 {p99:?}, max {max:?}",
        took.len()
    );
    assert_eq!(a.cluster.as_ref().map(|c| c.dropped()), Some(0));
    assert!(
        p99 < Duration::from_millis(100),
        "p99 publish → delivery on a while b joined: {p99:?} (max {max:?})"
    );
}
