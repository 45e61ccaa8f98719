//! The cluster as the library shows it: two brokers in this process, joined by a route,
//! report their peers and route drops through `Broker::cluster`, and a slow subscriber holds
//! up neither the route nor anyone else; and a broker with a fake route peer, for what only a
//! peer that reads slowly can show.

mod common;

use common::cluster::{RoutePeer, SECRET, free_port, in_process_node, kind as route_kind};
use common::{TestBroker, wait_until};
use supermq::protocol::{QoS, reason};

#[tokio::test]
async fn brokers_in_one_process_form_a_cluster_and_report_their_peers() {
    let (ra, rb) = (free_port(), free_port());
    let a = TestBroker::start(in_process_node("a", ra, &[])).await;
    let b = TestBroker::start(in_process_node("b", rb, &[ra])).await;
    let standalone = TestBroker::start_default().await;
    assert!(standalone.cluster.is_none() && !standalone.broker.is_clustered());
    let peers = |broker: &TestBroker| {
        broker
            .cluster
            .as_ref()
            .map(|c| c.peers())
            .unwrap_or_default()
    };
    wait_until("a and b see each other", || {
        peers(&a) == ["b"] && peers(&b) == ["a"]
    })
    .await;
    let mut sub = common::TestClient::v5(b.addr, "sub").await;
    sub.subscribe("in/#", QoS::AtLeastOnce).await;
    let mut publisher = common::TestClient::v5(a.addr, "pub").await;
    wait_until_delivered(&mut publisher, &mut sub).await;
    assert_eq!(a.cluster.as_ref().map(|c| c.dropped()), Some(0));
}

async fn wait_until_delivered(publisher: &mut common::TestClient, sub: &mut common::TestClient) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        publisher
            .publish("in/x", b"x", QoS::AtMostOnce, false)
            .await;
        if sub
            .recv_within(std::time::Duration::from_millis(50))
            .await
            .open()
            .is_some()
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
    }
}

/// A graceful shutdown (SIGTERM) sends what is already queued on a route before closing it:
/// messages the node acknowledged to their publisher are not thrown away with the queue, and
/// the peer sees the route end instead of waiting for the heartbeat timeout.
#[tokio::test]
async fn shutdown_flushes_what_is_queued_on_routes_then_closes_them() {
    const COUNT: usize = 160;
    const SIZE: usize = 64 * 1024;
    let route = free_port();
    let mut config = in_process_node("a", route, &[]);
    // The peer reads nothing for a while: the heartbeat must not end the route meanwhile.
    config.cluster.heartbeat_timeout_ms = 20_000;
    // This fake peer never acknowledges: acks must not wait for it (the looser mode, whose
    // promise is exactly what this test shows — queued on the route means sent).
    config.cluster.acks = "local".to_string();
    let mut a = TestBroker::start(config).await;
    // A peer with a tiny receive window that does not read yet, so most of the messages wait
    // in the node's own route queue (the kernel's buffers hold only a few of them).
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], route));
    let mut peer = RoutePeer::connect(addr, "slow", "supermq", SECRET, Some(4096)).await;
    peer.interest("flush/#").await;
    let mut publisher = common::TestClient::v5(a.addr, "pub").await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while publisher
        .publish("flush/probe", b"", QoS::AtLeastOnce, false)
        .await
        == reason::NO_MATCHING_SUBSCRIBERS
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "interest never arrived"
        );
    }
    let payload = vec![7u8; SIZE];
    for _ in 0..COUNT {
        let code = publisher
            .publish("flush/big", &payload, QoS::AtLeastOnce, false)
            .await;
        assert_eq!(code, reason::SUCCESS, "handed to the route");
    }
    let stopping = tokio::spawn(async move {
        a.shutdown().await;
        a
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Well within the heartbeat timeout: the node itself ends the route once it is flushed.
    // The peer closes its side when it reads the end of the node's, as a real node does.
    let drained = tokio::time::timeout(std::time::Duration::from_secs(10), async move {
        let mut received = 0;
        while let Some((kind, body)) = peer.frame().await {
            if kind == route_kind::MESSAGE && body.len() > SIZE {
                received += 1;
            }
        }
        received
    });
    let received = drained
        .await
        .expect("the node closed the route after shutdown");
    assert_eq!(
        received, COUNT,
        "every queued message before the route closed"
    );
    let started = tokio::time::Instant::now();
    let a = stopping.await.expect("shutdown");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "shutdown ends once the peer closed its side"
    );
    assert_eq!(a.cluster.as_ref().map(|c| c.dropped()), Some(0));
}

/// Publishes QoS 1 to `topic` until the publishing node says someone matched: the other
/// node's interest has arrived.
async fn wait_for_interest(publisher: &mut common::TestClient, topic: &str) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while publisher.publish(topic, b"", QoS::AtLeastOnce, false).await
        == reason::NO_MATCHING_SUBSCRIBERS
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no interest in {topic}"
        );
    }
}

/// The second scenario: a slow subscriber and a fast one on node b, the publisher on
/// node a. The route never waits for the slow one: its messages park beside its full queue on
/// the route's budget, the fast subscriber gets every message at once, and once the slow one
/// has kept messages waiting for `queue_full_wait_ms` it is declared slow and they are dropped.
#[tokio::test]
async fn a_slow_subscriber_holds_up_neither_the_route_nor_the_other_subscribers() {
    let (ra, rb) = (free_port(), free_port());
    let a = TestBroker::start(in_process_node("a", ra, &[])).await;
    let mut config_b = in_process_node("b", rb, &[ra]);
    config_b.limits.max_queued_messages = 10;
    config_b.limits.queue_full_wait_ms = 500;
    let b = TestBroker::start(config_b).await;
    let mut connect = common::connect_packet(supermq::protocol::ProtocolVersion::V5, "slow");
    connect.properties.receive_maximum = Some(1);
    let (mut slow, _) = common::TestClient::connect_with(b.addr, connect).await;
    slow.subscribe("slow/#", QoS::AtLeastOnce).await;
    let mut fast = common::TestClient::v5(b.addr, "fast").await;
    fast.subscribe("y/#", QoS::AtLeastOnce).await;
    let mut publisher = common::TestClient::v5(a.addr, "pub").await;
    wait_for_interest(&mut publisher, "slow/probe").await;
    wait_for_interest(&mut publisher, "y/probe").await;

    const COUNT: u16 = 500;
    let started = tokio::time::Instant::now();
    for id in 1..=COUNT {
        for topic in ["slow/1", "y/1"] {
            let publish =
                common::publish_packet(topic, &id.to_be_bytes(), QoS::AtLeastOnce, false, id);
            publisher.send_publish(publish).await;
        }
    }
    let mut got = 0;
    while got < COUNT {
        let publish = fast.recv_acked().await;
        if publish.topic == "y/1" {
            got += 1;
            assert_eq!(publish.payload.as_ref(), got.to_be_bytes(), "in order");
        }
    }
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");

    // The slow one still has parked messages; more traffic for it finds them stale.
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    publisher
        .publish("slow/1", b"late", QoS::AtLeastOnce, false)
        .await;
    let stats = b.broker.stats();
    wait_until("the slow subscriber is declared slow", || {
        stats.slow_consumers.get() == 1
    })
    .await;
    assert!(stats.dropped_slow_consumer.get() > 0);
    assert_eq!(stats.dropped_route_backlog.get(), 0);
    // Still connected, and still served what its window allows.
    assert_eq!(slow.recv_publish().await.topic, "slow/probe");
}

/// The cluster counts what it refuses from peers: invalid items from an authenticated one
/// (`refused`) and handshakes closed to make room past `cluster.max_pending_routes`
/// (`pending_evicted`); valid items are not counted.
#[tokio::test]
async fn refused_items_and_evicted_handshakes_are_counted() {
    use tokio::io::AsyncReadExt;
    let route = free_port();
    let mut config = in_process_node("a", route, &[]);
    config.cluster.max_pending_routes = 1;
    let a = TestBroker::start(config).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], route));
    let mut peer = RoutePeer::connect(addr, "peer", "supermq", SECRET, None).await;
    let cluster = a.cluster.clone().expect("the cluster runs");
    peer.interest("ok/#").await;
    peer.interest(&"/".repeat(65_535)).await;
    peer.interest("a/#/b").await;
    peer.message("$SYS/forged", b"").await;
    wait_until("three refusals", || cluster.refused() == 3).await;

    // The peer's handshake is over, so its place is free again: the first silent connection
    // takes it, and each one after closes the one before (connections are accepted in order).
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    wait_until("three evicted", || cluster.pending_evicted() == 3).await;
    let newest = silent.pop().expect("four");
    for mut oldest in silent {
        let mut buf = [0u8; 16];
        let read = tokio::time::timeout(common::WAIT, oldest.read(&mut buf)).await;
        assert!(
            matches!(read, Ok(Ok(0) | Err(_))),
            "an evicted one is closed: {read:?}"
        );
    }
    tokio::time::sleep(common::QUIET).await;
    assert_eq!(cluster.pending_evicted(), 3, "and no more");
    let mut buf = [0u8; 16];
    assert!(
        newest.try_read(&mut buf).is_err(),
        "the newest is still waiting in its handshake"
    );
    assert_eq!(cluster.peers(), ["peer"], "the route stayed up");
}

/// A QoS 0 publisher on one node that outruns a subscriber on another is paced to it, as a
/// QoS 1 one is by its acks, instead of filling the route's backlog until messages are
/// dropped: node b holds its route acknowledgements back while its backlog is past the pace
/// mark, and node a holds back the publishers of messages to a peer that is behind
/// (`cluster::link`). With a backlog of 512 KiB and 20 MB published (more than the sockets
/// between can buffer), nothing is dropped anywhere and everything arrives in order.
#[tokio::test]
async fn a_publisher_on_another_node_is_paced_to_a_slow_subscriber_and_loses_nothing() {
    const COUNT: u32 = 20_000;
    let (a, b) = two_nodes(|config| {
        config.cluster.route_backlog_bytes = 512 * 1024;
        config.limits.max_queued_messages = 100;
    })
    .await;
    let mut sub = common::TestClient::v5(b.addr, "sub").await;
    sub.subscribe("paced/#", QoS::AtMostOnce).await;
    let mut publisher = common::TestClient::v5(a.addr, "pub").await;
    wait_for_interest(&mut publisher, "paced/probe").await;
    assert_eq!(sub.recv_publish().await.topic, "paced/probe");

    // As fast as the socket takes them, from a task of its own: the publisher is held back by
    // its node not reading it.
    let sending = tokio::spawn(async move {
        for n in 0..COUNT {
            let mut payload = n.to_be_bytes().to_vec();
            payload.resize(1000, b'.');
            let publish = common::publish_packet("paced/1", &payload, QoS::AtMostOnce, false, 0);
            publisher.send_publish(publish).await;
        }
        publisher
    });
    // A subscriber slower than the route: a pause every 50 messages. (With one every 100,
    // node a's pace alone sometimes kept b's backlog under its mark.)
    for n in 0..COUNT {
        let publish = sub.recv_publish().await;
        assert_eq!(
            publish.payload[..4],
            n.to_be_bytes(),
            "message {n} in order"
        );
        if n % 50 == 49 {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    let mut publisher = sending.await.expect("the publisher task");
    publisher.ping().await;
    let stats = b.broker.stats();
    assert_eq!(stats.dropped_route_backlog.get(), 0);
    assert_eq!(stats.dropped_slow_consumer.get(), 0);
    assert_eq!(stats.dropped_queue_full.get(), 0);
    assert_eq!(a.cluster.as_ref().map(|c| c.dropped()), Some(0));
    // And it was the pace that did it.
    let (held, paced) = (route_to(&b, "a").acks_held, route_to(&a, "b").paced);
    assert!(
        held > 0,
        "b held acknowledgements back ({held}; a paced {paced})"
    );
    assert!(
        paced > 0,
        "a held its publisher back ({paced}; b held {held})"
    );
}

/// Nodes a and b, b dialling a, both changed by `change`: the nodes of a cluster share their
/// configuration (a's pace follows the backlog's size too).
async fn two_nodes(change: impl Fn(&mut supermq::config::Config)) -> (TestBroker, TestBroker) {
    let (ra, rb) = (free_port(), free_port());
    let mut config_a = in_process_node("a", ra, &[]);
    change(&mut config_a);
    let a = TestBroker::start(config_a).await;
    let mut config_b = in_process_node("b", rb, &[ra]);
    change(&mut config_b);
    (a, TestBroker::start(config_b).await)
}

/// The figures of `broker`'s route to `peer`.
fn route_to(broker: &TestBroker, peer: &str) -> supermq::cluster::RouteFigures {
    let cluster = broker.cluster.as_ref().expect("the cluster runs");
    let routes = cluster.route_figures();
    routes
        .into_iter()
        .find(|r| r.peer == peer)
        .expect("a route to the peer")
}

/// The pace has a bound: a subscriber on node b that reads nothing fills its queue and the
/// route's backlog, and b holds its acknowledgements back — for at most a quarter of
/// `ack_timeout_ms` at a time, and only until the stuck one is declared slow and what it kept
/// waiting is dropped. So the publisher on node a is slowed, never stopped, and a subscriber
/// beside the stuck one gets every message.
#[tokio::test]
async fn a_stuck_subscriber_slows_a_publisher_on_another_node_for_a_bounded_while_only() {
    const COUNT: u32 = 3_000;
    let (a, b) = two_nodes(|config| {
        config.cluster.route_backlog_bytes = 64 * 1024;
        config.cluster.ack_timeout_ms = 1000;
        config.limits.max_queued_messages = 10;
        config.limits.queue_full_wait_ms = 500;
    })
    .await;
    let mut stuck = common::TestClient::v5(b.addr, "stuck").await;
    stuck.subscribe("stuck/#", QoS::AtMostOnce).await;
    let mut fast = common::TestClient::v5(b.addr, "fast").await;
    fast.subscribe("y/#", QoS::AtMostOnce).await;
    let mut publisher = common::TestClient::v5(a.addr, "pub").await;
    wait_for_interest(&mut publisher, "stuck/probe").await;
    wait_for_interest(&mut publisher, "y/probe").await;
    assert_eq!(fast.recv_publish().await.topic, "y/probe");

    // 12 MB for the stuck subscriber: more than its socket can buffer.
    let started = tokio::time::Instant::now();
    let sending = tokio::spawn(async move {
        for n in 0..COUNT {
            let big = common::publish_packet("stuck/1", &[0; 4096], QoS::AtMostOnce, false, 0);
            publisher.send_publish(big).await;
            let small = common::publish_packet("y/1", &n.to_be_bytes(), QoS::AtMostOnce, false, 0);
            publisher.send_publish(small).await;
        }
        publisher
    });
    for n in 0..COUNT {
        let publish = fast.recv_publish().await;
        assert_eq!(
            publish.payload.as_ref(),
            n.to_be_bytes(),
            "message {n} in order"
        );
    }
    let mut publisher = sending.await.expect("the publisher task");
    publisher.ping().await;
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(10), "took {took:?}");
    let stats = b.broker.stats();
    assert!(
        stats.slow_consumers.get() >= 1,
        "the stuck one is declared slow"
    );
    assert!(stats.dropped_slow_consumer.get() > 0);
    assert_eq!(a.cluster.as_ref().map(|c| c.dropped()), Some(0));
    assert!(
        route_to(&b, "a").acks_held > 0,
        "b held acknowledgements back"
    );
}
