//! Sessions follow their clients, against real `supermq` processes: a client that reconnects
//! to another node with clean start = 0 gets its session there — subscriptions, queued and
//! in-flight messages in order (in-flight ones again with DUP), session present — and the old
//! node keeps nothing; a node that cannot be asked leaves the client with a new session,
//! within 10 s (docs/ARCHITECTURE.md, "Sessions that move").

mod common;

use std::time::{Duration, Instant};

use common::cluster::*;
use common::*;
use supermq::protocol::{ConnAck, Packet, ProtocolVersion, QoS};

async fn pair() -> (Node, Node) {
    let node1 = Node::start(NodeSpec::new("node1", &[])).await;
    let node2 = Node::start(NodeSpec::new("node2", &[node1.spec.route])).await;
    let nodes = [node1, node2];
    wait_for_mesh(&nodes).await;
    let [node1, node2] = nodes;
    (node1, node2)
}

/// Connects `client_id` to `node` with clean start = 0 and a session that outlives the
/// connection.
async fn resume(node: &Node, client_id: &str) -> (TestClient, ConnAck) {
    resume_with(node, client_id, None).await
}

/// The same, taking at most `window` QoS 1/2 messages in flight (Receive Maximum).
async fn resume_with(node: &Node, client_id: &str, window: Option<u16>) -> (TestClient, ConnAck) {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(3600);
    connect.properties.receive_maximum = window;
    TestClient::connect_with(node.mqtt(), connect).await
}

fn number(payload: &[u8]) -> u32 {
    std::str::from_utf8(payload)
        .expect("utf-8")
        .parse()
        .expect("a number")
}

/// The fourth test: a session with 50 queued QoS 1 messages, 5 of them sent and not
/// acknowledged, moves from node 1 to node 2 when its client connects there.
#[tokio::test]
async fn a_session_moves_with_its_queue_in_order_to_the_node_its_client_connects_to() {
    let (node1, node2) = pair().await;
    let (mut sub, _) = resume(&node1, "mover").await;
    sub.subscribe("move/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    let mut publisher = node1.client("pub").await;
    for i in 0..50u32 {
        publisher
            .publish("move/t", i.to_string().as_bytes(), QoS::AtLeastOnce, false)
            .await;
    }
    // Five sent to the client on node 1 (its window) and not acknowledged: in flight when it
    // leaves.
    let (mut sub, connack) = resume_with(&node1, "mover", Some(5)).await;
    assert!(connack.session_present);
    for i in 0..5 {
        let publish = sub.recv_publish().await;
        assert_eq!(number(&publish.payload), i);
    }
    drop(sub);

    let (mut sub, connack) = resume(&node2, "mover").await;
    assert!(connack.session_present, "the session moved to node 2");
    let mut got = Vec::new();
    for _ in 0..50 {
        let publish = sub.recv_acked().await;
        got.push((number(&publish.payload), publish.dup));
    }
    let expected: Vec<(u32, bool)> = (0..50).map(|i| (i, i < 5)).collect();
    assert_eq!(got, expected, "in order, the five in flight again with DUP");
    node1
        .wait_for_log("session handed over to the node the client connected to")
        .await;

    // The subscription moved too: node 1's publishes reach the client on node 2 (its
    // interest arrives over the route), and exactly once.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut n = 1000u32;
    loop {
        publisher
            .publish("move/t", n.to_string().as_bytes(), QoS::AtLeastOnce, false)
            .await;
        if let Received::Packet(Packet::Publish(publish)) =
            sub.recv_within(Duration::from_millis(200)).await
        {
            sub.ack(&publish).await;
            assert!(number(&publish.payload) >= 1000);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the moved subscription never took messages"
        );
        n += 1;
    }
    sub.expect_nothing().await;
    // Node 1 kept nothing: back there, the session moves back whole, not a stale copy.
    drop(sub);
    let (mut back, connack) = resume(&node1, "mover").await;
    assert!(connack.session_present);
    back.expect_nothing().await;
}

/// A resuming client whose only peer node is frozen gets a new session, with session present
/// = 0, once that node's route is declared dead — never later than 10 s — and the log says why.
#[tokio::test]
async fn a_frozen_node_leaves_the_client_a_new_session_within_ten_seconds() {
    let (node1, node2) = pair().await;
    let (mut sub, _) = resume(&node1, "stuck").await;
    sub.subscribe("stuck/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    node1.freeze();
    let asked = Instant::now();
    let (_client, connack) = resume(&node2, "stuck").await;
    let waited = asked.elapsed();
    node1.thaw();
    assert!(!connack.session_present, "a new session");
    assert!(
        waited < Duration::from_secs(11),
        "answered after {waited:?}"
    );
    node2.wait_for_log("could not be asked").await;
}

/// A clean start on one node discards the client's session on every node (MQTT-3.1.2-4): the
/// session it left on node 1 does not come back when it resumes later.
#[tokio::test]
async fn a_clean_start_elsewhere_discards_the_session() {
    let (node1, node2) = pair().await;
    let (mut sub, _) = resume(&node1, "restarter").await;
    sub.subscribe("clean/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    // Clean start on node 2, with a session that ends with the connection.
    let fresh = TestClient::v5(node2.mqtt(), "restarter").await;
    node1
        .wait_for_log("client started a clean session on another node")
        .await;
    fresh.disconnect().await;
    let (_back, connack) = resume(&node1, "restarter").await;
    assert!(!connack.session_present, "no session anywhere");
}

/// Persistence in a cluster: a node killed while it held a client's session, whose client then
/// got a new session on another node, does not bring its stale copy back when it restarts from
/// its store. It names the sessions it read back (SESSION_HELD); the node with the newer copy
/// tells it to discard its own; and the client, back on the restarted node, gets the newer
/// session moved to it, not the stale one (docs/ARCHITECTURE.md, "Persistence").
#[tokio::test]
async fn a_session_that_moved_while_its_node_was_down_is_not_resurrected_there() {
    let dir = std::env::temp_dir().join(format!("supermq-held-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spec1 = NodeSpec::new("node1", &[]);
    spec1.extra = format!("\n[storage]\ndir = \"{}\"\n", dir.display());
    let node1 = Node::start(spec1.clone()).await;
    let node2 = Node::start(NodeSpec::new("node2", &[node1.spec.route])).await;
    let nodes = [node1, node2];
    wait_for_mesh(&nodes).await;
    let [mut node1, node2] = nodes;

    let (mut sub, _) = resume(&node1, "sleeper").await;
    sub.subscribe("old/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;
    node1.kill();

    // Node 1 is gone: the client gets a new session on node 2.
    let (mut sub, connack) = resume(&node2, "sleeper").await;
    assert!(!connack.session_present, "node 1 could not hand it over");
    sub.subscribe("new/#", QoS::AtLeastOnce).await;
    sub.disconnect().await;

    let node1 = Node::start(spec1).await;
    // Node 1 read the stale session back (its log holds both starts' lines).
    node1.wait_for_log("store loaded").await;
    node1.wait_for_log("sessions=1 ").await;
    let nodes = [node1, node2];
    wait_for_mesh(&nodes).await;
    let [node1, node2] = nodes;
    node2
        .wait_for_log("a restarted node still held a session that moved here meanwhile")
        .await;
    node1
        .wait_for_log(
            "client started a clean session on another node; its session here is discarded",
        )
        .await;

    // Back on node 1, the client gets node 2's session (moved), with its subscription only.
    let (mut sub, connack) = resume(&node1, "sleeper").await;
    assert!(connack.session_present, "node 2's session moved to node 1");
    let mut publisher = node2.client("pub").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        publisher
            .publish("new/t", b"fresh", QoS::AtLeastOnce, false)
            .await;
        if let Received::Packet(Packet::Publish(publish)) =
            sub.recv_within(Duration::from_millis(200)).await
        {
            sub.ack(&publish).await;
            assert_eq!(&publish.payload[..], b"fresh");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the newer subscription never took messages"
        );
    }
    publisher
        .publish("old/t", b"stale", QoS::AtLeastOnce, false)
        .await;
    let mut rest = Vec::new();
    while let Received::Packet(Packet::Publish(publish)) =
        sub.recv_within(Duration::from_millis(500)).await
    {
        sub.ack(&publish).await;
        rest.push(publish.payload);
    }
    assert!(
        rest.iter().all(|payload| &payload[..] == b"fresh"),
        "the stale session's subscription came back: {rest:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
