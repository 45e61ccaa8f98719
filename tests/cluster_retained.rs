//! Retained messages converge across a partition (issue 13): every set and clear carries a
//! version, a clear leaves a tombstone, and the newest wins on every node once the route
//! heals. Nodes are cut apart by freezing them (SIGSTOP) past the heartbeat timeout.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::{Node, free_port, start_cluster, wait_for_mesh};
use supermq::protocol::{Packet, QoS};

/// The retained message a new subscriber to `door/#` on `node` gets, if any.
async fn retained_on(node: &Node) -> Option<Bytes> {
    let mut sub = node.client(&format!("door-sub-{}", free_port())).await;
    sub.subscribe("door/#", QoS::AtMostOnce).await;
    match sub.recv_within(Duration::from_millis(500)).await.open() {
        Some(Packet::Publish(p)) => {
            assert!(p.retain, "only retained messages are published here");
            Some(p.payload)
        }
        Some(other) => panic!("unexpected {other:?}"),
        None => None,
    }
}

/// Waits until `node` has `want` as `door/state`'s retained message (None: no message).
async fn wait_for_retained(node: &Node, want: Option<&[u8]>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = retained_on(node).await;
        if got.as_deref() == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} has {got:?}, not {want:?}",
            node.spec.name
        );
    }
}

async fn set(node: &Node, payload: &[u8]) {
    let mut publisher = node.client(&format!("door-pub-{}", free_port())).await;
    publisher
        .publish("door/state", payload, QoS::AtLeastOnce, true)
        .await;
}

/// Two meshed nodes that both held "open" on `door/state`, until node1 cleared it while node2
/// was frozen (past the heartbeat timeout, so node1 dropped the route first).
async fn cleared_while_node2_frozen() -> Vec<Node> {
    let nodes = start_cluster(2).await;
    wait_for_mesh(&nodes).await;
    set(&nodes[0], b"open").await;
    wait_for_retained(&nodes[1], Some(b"open")).await;
    nodes[1].freeze();
    nodes[0].wait_for_log_count("route down", 1).await;
    set(&nodes[0], b"").await;
    nodes
}

#[tokio::test]
async fn a_clear_made_while_a_node_was_frozen_holds_after_it_resumes() {
    // node2 freezes holding "open"; node1 drops the route, then clears the topic.
    let nodes = cleared_while_node2_frozen().await;
    assert_eq!(retained_on(&nodes[0]).await, None);

    // node2 resumes; on the new route it sends its (older) "open", node1 its tombstone.
    nodes[1].thaw();
    wait_for_mesh(&nodes).await;
    for node in &nodes {
        assert_eq!(retained_on(node).await, None, "{}", node.spec.name);
    }

    // A set after that propagates as ever.
    set(&nodes[1], b"closed").await;
    wait_for_retained(&nodes[0], Some(b"closed")).await;
    assert_eq!(
        retained_on(&nodes[1]).await.as_deref(),
        Some(&b"closed"[..])
    );
}

#[tokio::test]
async fn a_newer_set_made_while_cut_off_wins_over_an_older_clear() {
    // node1 clears while node2 is frozen...
    let nodes = cleared_while_node2_frozen().await;
    // ...then node1 freezes and node2, on its own, sets the topic again, later.
    nodes[0].freeze();
    nodes[1].thaw();
    nodes[1].wait_for_log_count("route down", 1).await;
    set(&nodes[1], b"ajar").await;
    assert_eq!(retained_on(&nodes[1]).await.as_deref(), Some(&b"ajar"[..]));

    // Healed: node2's newer set beats node1's tombstone, on both nodes.
    nodes[0].thaw();
    wait_for_mesh(&nodes).await;
    for node in &nodes {
        assert_eq!(
            retained_on(node).await.as_deref(),
            Some(&b"ajar"[..]),
            "{}",
            node.spec.name
        );
    }
}
