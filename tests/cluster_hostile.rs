//! The route port against a hostile peer: real `supermq` processes on loopback ports, attacked
//! over raw TCP. Whatever arrives, the node stays up, an MQTT publisher and subscriber on it
//! keep working, and real peers can still join.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{Node, NodeSpec, RoutePeer, SECRET, kind, put_str, wait_for_mesh};
use common::publish_packet;
use supermq::protocol::{Packet, ProtocolVersion, QoS, reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A publisher and a subscriber on `node` exchange a QoS 1 message.
async fn pub_sub_works(node: &Node, tag: &str) {
    let topic = format!("pair/{tag}");
    let mut sub = node.client(&format!("sub-{tag}")).await;
    sub.subscribe(&topic, QoS::AtLeastOnce).await;
    let mut publisher = node.client(&format!("pub-{tag}")).await;
    let code = publisher
        .publish(&topic, b"still here", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(code, reason::SUCCESS);
    let got = sub.recv_acked().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        (topic.as_str(), &b"still here"[..])
    );
}

/// Waits until the node closes `stream`; returns how long that took from `since`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    let mut buf = [0u8; 256];
    loop {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("closed within 10 s");
        if !matches!(read, Ok(n) if n > 0) {
            return since.elapsed();
        }
    }
}

/// The interest frame that aborted the node (65,535 '/'), and its kin, from a peer that passed
/// the handshake: each invalid item is refused and logged, the route stays up and keeps
/// working, and so does the node.
#[tokio::test]
async fn invalid_filters_and_topics_from_an_authenticated_peer_are_refused_and_the_route_stays() {
    let mut node = Node::start(NodeSpec::new("node1", &[])).await;
    let mut sub = node.client("local-sub").await;
    sub.subscribe("in/#", QoS::AtMostOnce).await;
    let mut peer = RoutePeer::connect(node.route_addr(), "hostile", "test", SECRET, None).await;

    peer.interest(&"/".repeat(65_535)).await;
    peer.interest(&("a/".repeat(32_767) + "a")).await;
    peer.interest("a/#/b").await;
    let mut group = vec![kind::GROUP_WEIGHT];
    put_str(&mut group, "bad/group");
    put_str(&mut group, "t/#");
    group.extend_from_slice(&1u32.to_be_bytes()); // online
    group.extend_from_slice(&0u32.to_be_bytes()); // offline
    peer.send(&group).await;
    let mut client_id = vec![kind::CLIENT_CONNECTED];
    put_str(&mut client_id, &"c".repeat(300));
    client_id.extend_from_slice(&0u64.to_be_bytes()); // connected at
    client_id.push(0); // clean start
    peer.send(&client_id).await;
    let mut peers = vec![kind::PEERS, 0, 1];
    put_str(&mut peers, "no port here");
    peer.send(&peers).await;
    // A topic deeper than limits.max_topic_levels (32) is not delivered...
    peer.message(&format!("in{}", "/x".repeat(40)), b"too deep")
        .await;
    // ...and the valid message after it is: frames are applied in order, so everything above
    // was handled by the time it arrives.
    peer.message("in/ok", b"fine").await;
    let got = sub.recv_publish().await;
    assert_eq!(
        (got.topic.as_str(), &got.payload[..]),
        ("in/ok", &b"fine"[..])
    );

    assert!(node.running(), "the node is up; log:\n{}", node.log());
    node.wait_for_log("invalid item from a peer refused").await;
    node.wait_for_log("(65535 bytes) exceeds limits.max_topic_length")
        .await;
    assert!(
        !node.log().contains("route down"),
        "the route stayed up:\n{}",
        node.log()
    );

    // The route still works both ways: the node forwards to the peer's valid interest.
    peer.interest("ok/#").await;
    peer.message("in/sync", b"interest applied").await;
    assert_eq!(sub.recv_publish().await.topic, "in/sync");
    let mut publisher = node.client("local-pub").await;
    publisher
        .publish("ok/1", b"to the peer", QoS::AtMostOnce, false)
        .await;
    loop {
        let (kind, body) = peer.frame().await.expect("the route is open");
        if kind == kind::MESSAGE {
            assert!(body.ends_with(b"to the peer"));
            break;
        }
    }
    pub_sub_works(&node, "after-filters").await;
}

/// A handshake frame that claims 1 GiB is refused as soon as its length is read (no wait for
/// the handshake timeout, nothing allocated for it), and a real peer joins afterwards.
#[tokio::test]
async fn a_handshake_frame_of_1_gib_is_refused_at_once() {
    let mut node = Node::start(NodeSpec::new("node1", &[])).await;
    let mut stream = TcpStream::connect(node.route_addr())
        .await
        .expect("connect");
    let started = Instant::now();
    let mut hello = b"SMQR".to_vec();
    hello.extend_from_slice(&(1u32 << 30).to_be_bytes());
    hello.extend_from_slice(&[kind::INFO; 1000]);
    stream.write_all(&hello).await.expect("written");
    let closed = closed_after(&mut stream, started).await;
    // The handshake timeout in these tests is 1 s (heartbeat_timeout_ms).
    assert!(
        closed < Duration::from_millis(800),
        "closed after {closed:?}"
    );
    node.wait_for_log("frame of 1073741824 bytes is larger than the limit of 65536")
        .await;
    assert!(node.running(), "the node is up; log:\n{}", node.log());
    pub_sub_works(&node, "after-1gib").await;

    let seed = node.spec.route;
    let nodes = [node, Node::start(NodeSpec::new("node2", &[seed])).await];
    wait_for_mesh(&nodes).await;
}

/// Past cluster.max_pending_routes silent connections, each new route connection closes the
/// oldest one still in its handshake; the newest ones are closed at the handshake timeout, and
/// a real peer that dials afterwards joins.
#[tokio::test]
async fn silent_route_connections_past_max_pending_routes_close_the_oldest() {
    const PENDING: usize = 4;
    const SILENT: usize = 12;
    let mut spec = NodeSpec::new("node1", &[]);
    spec.extra = format!("max_pending_routes = {PENDING}\n");
    let mut node = Node::start(spec).await;
    let started = Instant::now();
    let mut silent = Vec::new();
    // Connected one after the other, so the node accepts them in this order.
    for _ in 0..SILENT {
        let mut stream = TcpStream::connect(node.route_addr())
            .await
            .expect("connect");
        silent.push(tokio::spawn(async move {
            closed_after(&mut stream, started).await
        }));
    }
    pub_sub_works(&node, "during-flood").await;

    let mut closed = Vec::new();
    for watch in silent {
        closed.push(watch.await.expect("watched"));
    }
    let (oldest, newest) = closed.split_at(SILENT - PENDING);
    assert!(
        oldest.iter().all(|d| *d < Duration::from_millis(800)),
        "{SILENT} silent connections, {PENDING} places: the oldest closed at once: {closed:?}"
    );
    assert!(
        newest.iter().all(|d| *d >= Duration::from_millis(900)),
        "the {PENDING} newest wait for the 1 s handshake timeout: {closed:?}"
    );
    node.wait_for_log("cluster.max_pending_routes handshakes under way: closed the oldest")
        .await;
    assert!(node.running(), "the node is up; log:\n{}", node.log());

    let seed = node.spec.route;
    let nodes = [node, Node::start(NodeSpec::new("node2", &[seed])).await];
    wait_for_mesh(&nodes).await;
    pub_sub_works(&nodes[0], "after-flood").await;
}

/// Holds a silent connection to `addr` open and, whenever the node closes it, opens another
/// at once, until dropped.
struct SilentLoop(tokio::task::JoinHandle<()>);

impl SilentLoop {
    fn start(addr: std::net::SocketAddr) -> SilentLoop {
        SilentLoop(tokio::spawn(async move {
            loop {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let mut buf = [0u8; 256];
                while matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {}
            }
        }))
    }
}

impl Drop for SilentLoop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// cluster.max_pending_routes (64) silent connections and more, each opened again as soon as
/// the node closes it, do not keep a real peer out: its handshake takes the place of the
/// oldest silent one, and the cluster forms. (Before, a connection past the cap was closed at
/// once, so whoever held the 64 places and retook them as they freed kept every peer out.)
#[tokio::test]
async fn a_peer_joins_while_more_than_max_pending_routes_silent_connections_are_held() {
    const SILENT: usize = 72;
    let node = Node::start(NodeSpec::new("node1", &[])).await;
    let silent: Vec<SilentLoop> = (0..SILENT)
        .map(|_| SilentLoop::start(node.route_addr()))
        .collect();
    // Let them take every place.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seed = node.spec.route;
    let nodes = [node, Node::start(NodeSpec::new("node2", &[seed])).await];
    wait_for_mesh(&nodes).await;
    nodes[0]
        .wait_for_log("cluster.max_pending_routes handshakes under way: closed the oldest")
        .await;
    drop(silent);
    pub_sub_works(&nodes[0], "after-silent-loops").await;
}

/// Lines a log limited to one a second may hold for a run of `elapsed`, with one for the
/// second it started in and one for where the count of seconds rounds down.
fn lines_within(elapsed: Duration) -> usize {
    elapsed.as_secs() as usize + 2
}

/// Whoever floods the route port with connections that fail their handshake, or a peer with
/// invalid items, cannot flood the log: each kind of line is written at most once a second,
/// with the number held back. (Before: a line per failed handshake, and a line per power of
/// two of invalid items.)
#[tokio::test]
async fn failed_handshakes_and_invalid_items_do_not_flood_the_log() {
    const FLOOD: usize = 300;
    // The probe's PUBACK must not wait for this fake peer, which never acknowledges.
    let spec = NodeSpec {
        extra: "acks = \"local\"\n".to_string(),
        ..NodeSpec::new("node1", &[])
    };
    let node = Node::start(spec).await;
    let started = Instant::now();
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(node.route_addr())
            .await
            .expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("written");
        closed_after(&mut stream, started).await;
    }
    let mut peer = RoutePeer::connect(node.route_addr(), "peer", "test", SECRET, None).await;
    for _ in 0..FLOOD {
        peer.interest("a/#/b").await;
    }
    // Applied in order: once this valid one is, every invalid one before it was refused.
    peer.interest("ok/#").await;
    let mut publisher = node.client("probe").await;
    while publisher
        .publish("ok/1", b"", QoS::AtLeastOnce, false)
        .await
        == reason::NO_MATCHING_SUBSCRIBERS
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "interest never applied"
        );
    }
    let allowed = lines_within(started.elapsed());
    let log = node.log();
    for line in ["route refused", "invalid item from a peer refused"] {
        let written = log.matches(line).count();
        assert!(
            (1..=allowed).contains(&written),
            "{written} lines of {line:?} for {FLOOD} events (at most {allowed}):\n{log}"
        );
    }
    assert!(
        log.contains("held_back="),
        "the lines say how many were held back"
    );
}

/// A retained MESSAGE or RETAINED frame by hand: `version` is the clock reading and node, if
/// the frame carries one.
fn retained_frame(kind: u8, topic: &str, payload: &[u8], version: Option<(u64, &str)>) -> Vec<u8> {
    let mut body = vec![kind];
    if kind == kind::MESSAGE {
        body.push(if version.is_some() { 0x05 } else { 0x01 });
        body.extend_from_slice(&0u16.to_be_bytes());
    }
    if let Some((hlc, node)) = version {
        body.extend_from_slice(&hlc.to_be_bytes());
        put_str(&mut body, node);
    }
    let publish = publish_packet(topic, payload, QoS::AtMostOnce, true, 0);
    let mut packet = bytes::BytesMut::new();
    supermq::protocol::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut packet)
        .expect("encodes");
    body.extend_from_slice(&packet);
    body
}

/// A retained set whose version is missing or invalid (a node name no node may have, a clock
/// far ahead of real time) is refused, logged, and the route stays up; a valid one is kept.
#[tokio::test]
async fn invalid_retained_versions_from_a_peer_are_refused_and_the_route_stays() {
    const PING: u8 = 3;
    const RETAINED: u8 = 8;
    let node = Node::start(NodeSpec::new("node1", &[])).await;
    let mut sub = node.client("local-sub").await;
    sub.subscribe("in/#", QoS::AtMostOnce).await;
    let mut peer = RoutePeer::connect(node.route_addr(), "hostile", "test", SECRET, None).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64;
    let far_ahead = (now + 2 * 3600 * 1000) << 16;
    // One at a time: refusals are logged at most once a second (the fake peer sends PINGs
    // meanwhile, as the heartbeat timeout is 1 s).
    for (frame, why) in [
        (
            retained_frame(kind::MESSAGE, "in/none", b"no version", None),
            "has no version",
        ),
        (
            retained_frame(kind::MESSAGE, "in/bad", b"bad", Some((now << 16, "a b"))),
            "contains whitespace",
        ),
        (
            retained_frame(RETAINED, "in/ahead", b"ahead", Some((far_ahead, "hostile"))),
            "has a clock more than an hour ahead",
        ),
    ] {
        peer.send(&frame).await;
        node.wait_for_log(why).await;
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            peer.send(&[PING]).await;
        }
    }
    let kept = retained_frame(RETAINED, "in/kept", b"kept", Some((now << 16, "hostile")));
    peer.send(&kept).await;
    peer.message("in/ok", b"fine").await;
    let got = sub.recv_publish().await;
    assert_eq!(
        got.topic, "in/ok",
        "the refused messages were not delivered"
    );
    assert!(!node.log().contains("route down"), "{}", node.log());
    let mut late = node.client("late-sub").await;
    late.subscribe("in/#", QoS::AtMostOnce).await;
    let kept = late.recv_publish().await;
    assert_eq!(
        (kept.topic.as_str(), &kept.payload[..]),
        ("in/kept", &b"kept"[..])
    );
    late.expect_nothing().await;
}
