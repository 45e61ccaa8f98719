//! End-to-end acknowledgements across routes, against real `supermq` processes: a QoS 1/2
//! publisher's PUBACK or PUBREC means every node with matching interest took the message; a
//! route that flaps replays what its peer had not acknowledged; a peer that does not come back
//! turns the ack negative within 10 s, and never into "no matching subscribers" while the peer
//! is in its grace period (docs/ARCHITECTURE.md, "Acknowledgements and replay").

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use supermq::protocol::{self, Packet, ProtocolVersion, QoS, reason};

/// A node with `extra` in its `[cluster]` section. The test nodes' route timings are short:
/// a frozen peer is noticed within a second, and a thawed one dialled again within 0.4 s.
fn spec(name: &str, seeds: &[u16], extra: &str) -> NodeSpec {
    NodeSpec {
        extra: extra.to_string(),
        ..NodeSpec::new(name, seeds)
    }
}

/// Two nodes with `extra` in both `[cluster]` sections, meshed.
async fn pair(extra: &str) -> (Node, Node) {
    let node1 = Node::start(spec("node1", &[], extra)).await;
    let node2 = Node::start(spec("node2", &[node1.spec.route], extra)).await;
    let nodes = [node1, node2];
    wait_for_mesh(&nodes).await;
    let [node1, node2] = nodes;
    (node1, node2)
}

/// A persistent MQTT 5 subscriber to `filter` at QoS 1 on `node`, and a path to it from
/// `from` proven by a message.
async fn subscriber(node: &Node, from: &Node, filter: &str) -> TestClient {
    let mut connect = connect_packet(ProtocolVersion::V5, "far-sub");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    let (mut sub, connack) = TestClient::connect_with(node.mqtt(), connect).await;
    assert_eq!(connack.code, 0);
    sub.subscribe(filter, QoS::AtLeastOnce).await;
    wait_for_path(from, node, Duration::from_secs(10)).await;
    sub
}

/// Node 1 of a pair with `extra`, whose peer node 2 held a persistent subscriber to `gone/#`
/// (known to node 1) and was then killed.
async fn peer_killed(extra: &str) -> Node {
    let (node1, mut node2) = pair(extra).await;
    let _sub = subscriber(&node2, &node1, "gone/#").await;
    node2.kill();
    node1
}

/// The PUBACKs for `count` QoS 1 publishes with ids `first..`, by packet id, each with the
/// time it came.
async fn collect_acks(
    publisher: &mut TestClient,
    count: usize,
    within: Duration,
) -> BTreeMap<u16, (u8, Instant)> {
    let mut acks = BTreeMap::new();
    let deadline = Instant::now() + within;
    while acks.len() < count {
        let left = deadline.saturating_duration_since(Instant::now());
        match publisher.recv_within(left).await {
            Received::Packet(Packet::PubAck(ack)) => {
                acks.insert(ack.packet_id, (ack.reason, Instant::now()));
            }
            Received::Packet(other) => panic!("expected PUBACK, got {other:?}"),
            Received::Silent | Received::Closed => break,
        }
    }
    acks
}

fn qos1(topic: &str, payload: &[u8], packet_id: u16) -> Packet {
    Packet::Publish(publish_packet(
        topic,
        payload,
        QoS::AtLeastOnce,
        false,
        packet_id,
    ))
}

/// The first fault test: the subscriber's node is frozen past the heartbeat timeout
/// while a publisher on another node keeps publishing, then thawed. Every message the
/// publisher's node acknowledged is delivered — and as the node came back within its grace
/// period and the ack timeout, every message is acknowledged.
#[tokio::test]
async fn a_frozen_subscriber_node_loses_no_acknowledged_message() {
    const PER_PHASE: u16 = 200;
    let (node1, node2) = pair("ack_timeout_ms = 8000\npeer_grace_ms = 10000\n").await;
    let mut sub = subscriber(&node2, &node1, "frozen/#").await;
    let mut publisher = node1.client("pub").await;
    let mut id = 0u16;
    let mut publish_phase = async |publisher: &mut TestClient, pause: Duration| {
        for _ in 0..PER_PHASE {
            id += 1;
            publisher
                .send(&qos1("frozen/t", id.to_string().as_bytes(), id))
                .await;
            tokio::time::sleep(pause).await;
        }
    };
    publish_phase(&mut publisher, Duration::ZERO).await;
    node2.freeze();
    // 200 messages over about 2 s, the route declared dead after 1 s of it.
    publish_phase(&mut publisher, Duration::from_millis(10)).await;
    node1.wait_for_log("route down").await;
    node2.thaw();
    publish_phase(&mut publisher, Duration::ZERO).await;
    let acks = collect_acks(
        &mut publisher,
        3 * usize::from(PER_PHASE),
        Duration::from_secs(15),
    )
    .await;
    let acknowledged: BTreeSet<u16> = acks
        .iter()
        .filter(|(_, (code, _))| *code == reason::SUCCESS)
        .map(|(id, _)| *id)
        .collect();
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !acknowledged.is_subset(&delivered) && Instant::now() < deadline {
        match sub.recv_within(Duration::from_secs(2)).await {
            Received::Packet(Packet::Publish(publish)) => {
                sub.ack(&publish).await;
                let n: u16 = std::str::from_utf8(&publish.payload)
                    .expect("utf-8")
                    .parse()
                    .expect("a number");
                delivered.insert(n);
            }
            Received::Packet(_) | Received::Silent => {}
            Received::Closed => panic!("the subscriber's connection ended"),
        }
    }
    let lost: Vec<u16> = acknowledged.difference(&delivered).copied().collect();
    assert!(lost.is_empty(), "acknowledged but not delivered: {lost:?}");
    assert_eq!(
        acknowledged.len(),
        3 * usize::from(PER_PHASE),
        "every message acknowledged, none negatively (acks: {:?})",
        acks.values().filter(|(c, _)| *c != 0).count()
    );
    assert!(node1.log().contains("replaying unacknowledged messages"));
}

/// A peer that dies and does not come back: a QoS 1 publish for its subscriber is answered
/// negatively within 10 s (not "no matching subscribers", as the peer is in its grace
/// period, and never a false success); once the grace period is over, nobody anywhere
/// matches and the answer is 0x10.
#[tokio::test]
async fn a_dead_peer_turns_the_ack_negative_within_ten_seconds() {
    let node1 = peer_killed("ack_timeout_ms = 1500\npeer_grace_ms = 4000\n").await;
    let mut publisher = node1.client("pub").await;
    let sent = Instant::now();
    publisher.send(&qos1("gone/1", b"x", 1)).await;
    let acks = collect_acks(&mut publisher, 1, Duration::from_secs(10)).await;
    let (code, at) = acks.get(&1).copied().expect("an answer within 10 s");
    assert_eq!(code, reason::UNSPECIFIED_ERROR, "a negative ack");
    assert!(at - sent < Duration::from_secs(10));
    node1
        .wait_for_log("did not come back within cluster.peer_grace_ms")
        .await;
    assert_eq!(
        publisher
            .publish("gone/2", b"y", QoS::AtLeastOnce, false)
            .await,
        reason::NO_MATCHING_SUBSCRIBERS
    );
}

/// MQTT 3.1.1 has no negative ack: a publisher whose message a dead peer did not take gets
/// no PUBACK, and its connection is closed, so it sends the message again on reconnecting.
#[tokio::test]
async fn a_v311_publisher_is_disconnected_instead_of_acknowledged_falsely() {
    let node1 = peer_killed("ack_timeout_ms = 1000\npeer_grace_ms = 4000\n").await;
    let mut publisher = TestClient::v311(node1.mqtt(), "old-pub").await;
    publisher.send(&qos1("gone/1", b"x", 1)).await;
    let before_close = publisher.expect_closed().await;
    assert!(
        !before_close.iter().any(|p| matches!(p, Packet::PubAck(_))),
        "no PUBACK: {before_close:?}"
    );
}

/// A negative PUBREC ends a QoS 2 exchange (MQTT-4.3.3): the packet id is free again, and a
/// new message with it is routed rather than taken for a resend of the old one.
#[tokio::test]
async fn a_negative_pubrec_frees_the_packet_id() {
    let node1 = peer_killed("ack_timeout_ms = 1000\npeer_grace_ms = 2500\n").await;
    let mut publisher = node1.client("pub2").await;
    let publish = |payload: &[u8]| {
        Packet::Publish(publish_packet(
            "gone/1",
            payload,
            QoS::ExactlyOnce,
            false,
            9,
        ))
    };
    publisher.send(&publish(b"first")).await;
    match publisher.recv().await {
        Packet::PubRec(ack) => assert_eq!(ack.reason, reason::UNSPECIFIED_ERROR),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    node1
        .wait_for_log("did not come back within cluster.peer_grace_ms")
        .await;
    publisher.send(&publish(b"second")).await;
    match publisher.recv().await {
        // Routed, and nobody is left: a resend of the first would have been 0x00.
        Packet::PubRec(ack) => assert_eq!(ack.reason, reason::NO_MATCHING_SUBSCRIBERS),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publisher.send(&Packet::PubRel(protocol::Ack::new(9))).await;
    assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
}

/// `acks = "local"` is the looser mode: the ack comes once the message is queued here, even
/// for a peer that is gone.
#[tokio::test]
async fn local_acks_do_not_wait_for_the_peers() {
    let node1 = peer_killed("acks = \"local\"\nack_timeout_ms = 5000\n").await;
    let mut publisher = node1.client("pub").await;
    let sent = Instant::now();
    assert_eq!(
        publisher
            .publish("gone/1", b"x", QoS::AtLeastOnce, false)
            .await,
        reason::SUCCESS
    );
    assert!(sent.elapsed() < Duration::from_secs(1));
}

/// A peer that shuts down gracefully says so (GOODBYE): nothing is kept for it, so a publish
/// for its subscriber is answered at once — 0x10, as nobody else matches — rather than held
/// for the ack timeout.
#[tokio::test]
async fn a_peer_that_shuts_down_is_not_waited_for() {
    let (node1, mut node2) = pair("ack_timeout_ms = 8000\npeer_grace_ms = 10000\n").await;
    let _sub = subscriber(&node2, &node1, "gone/#").await;
    node2.stop();
    node1
        .wait_for_log("peer shut down; nothing is kept for it")
        .await;
    let mut publisher = node1.client("pub").await;
    let sent = Instant::now();
    assert_eq!(
        publisher
            .publish("gone/1", b"x", QoS::AtLeastOnce, false)
            .await,
        reason::NO_MATCHING_SUBSCRIBERS
    );
    assert!(sent.elapsed() < Duration::from_secs(2));
}
