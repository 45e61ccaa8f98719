//! The `[limits]` of the configuration, each at its edge: max_connections (which silent
//! sockets never use up), max_sessions, max_pending_connections (the oldest silent socket makes
//! room), max_connections_per_ip and max_connect_rate_per_ip, max_packet_size (checked from the
//! fixed header, before the body arrives), max_queued_messages, max_topic_length,
//! max_topic_levels and max_subscriptions. Each limit is shown to let the last allowed thing
//! through and to refuse the first one past it, the way MQTT says.
//! (connect_timeout_secs and max_client_id_length: broker_connect.rs; max_keep_alive:
//! broker_keepalive.rs; max_inflight: broker_publish.rs; max_retained_*: broker_retained.rs;
//! max_topic_aliases: broker_v5.rs; max_session_expiry_secs: broker_session.rs.)

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use supermq::protocol::{
    self, Connect, Packet, Properties, ProtocolVersion, QoS, Unsubscribe, reason,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use ProtocolVersion::{V5, V311};
use QoS::{AtLeastOnce, AtMostOnce};

fn one_connection() -> supermq::config::Config {
    config_with(|limits| limits.max_connections = 1)
}

/// limits.max_connections: past it a 3.1.1 CONNECT gets 0x03 (server unavailable).
#[tokio::test]
async fn connection_past_max_connections_is_refused_with_0x03() {
    let broker = TestBroker::start(one_connection()).await;
    let mut first = TestClient::v311(broker.addr, "first").await;
    let (mut second, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V311, "second")).await;
    assert_eq!(connack.code, 0x03);
    assert_eq!(second.expect_closed().await, vec![]);
    first.ping().await;
}

/// limits.max_connections: past it a 5.0 CONNECT gets 0x97 (quota exceeded).
#[tokio::test]
async fn connection_past_max_connections_is_refused_with_0x97() {
    let broker = TestBroker::start(one_connection()).await;
    let _first = TestClient::v5(broker.addr, "first").await;
    let (mut second, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V5, "second")).await;
    assert_eq!(connack.code, reason::QUOTA_EXCEEDED);
    assert_eq!(second.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().connections_refused.get(), 1);
}

/// A connection that closes frees its place.
#[tokio::test]
async fn closed_connection_frees_its_place() {
    let broker = TestBroker::start(one_connection()).await;
    let first = TestClient::v5(broker.addr, "first").await;
    first.disconnect().await;
    wait_until("the first connection is gone", || {
        broker.broker.connection_count() == 0
    })
    .await;
    let mut second = TestClient::v5(broker.addr, "second").await;
    second.ping().await;
}

/// limits.max_sessions counts sessions, connected or not: past it a CONNECT that needs a new
/// session is refused (3.1.1 0x03, 5.0 0x97), while resuming or replacing one still works.
#[tokio::test]
async fn a_new_session_past_max_sessions_is_refused_but_resuming_one_works() {
    let broker = TestBroker::start(config_with(|limits| limits.max_sessions = 2)).await;
    for id in ["kept-a", "kept-b"] {
        let (client, _) = TestClient::connect(broker.addr, V311, id, false).await;
        client.disconnect().await;
    }
    wait_until("both connections closed", || {
        broker.broker.connection_count() == 0
    })
    .await;
    assert_eq!(broker.broker.session_count(), 2);
    let (mut refused, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V311, "new")).await;
    assert_eq!(connack.code, 0x03);
    assert_eq!(refused.expect_closed().await, vec![]);
    let (mut refused, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V5, "new5")).await;
    assert_eq!(connack.code, reason::QUOTA_EXCEEDED);
    assert_eq!(refused.expect_closed().await, vec![]);
    let (mut resumed, connack) = TestClient::connect(broker.addr, V311, "kept-a", false).await;
    assert!(connack.session_present);
    resumed.ping().await;
    // A clean start replaces the session: still two.
    let mut replaced = TestClient::v311(broker.addr, "kept-b").await;
    replaced.ping().await;
    assert_eq!(broker.broker.stats().connections_refused.get(), 2);
}

/// Opens `n` sockets that send nothing, each counted as pending before the next is opened (so
/// the first is the oldest).
async fn silent_sockets(broker: &TestBroker, n: usize) -> Vec<TestClient> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        let before = broker.broker.pending_count();
        sockets.push(TestClient::open(broker.addr, V311).await);
        wait_until("the socket is pending", || {
            broker.broker.pending_count() == before + 1
        })
        .await;
    }
    sockets
}

/// limits.max_connections counts connected clients only: sockets that never send CONNECT do
/// not take their places.
#[tokio::test]
async fn silent_sockets_do_not_use_up_max_connections() {
    let broker = TestBroker::start(one_connection()).await;
    let _silent = silent_sockets(&broker, 5).await;
    let mut client = TestClient::v5(broker.addr, "client").await;
    client.ping().await;
    assert_eq!(broker.broker.connected_count(), 1);
    assert_eq!(broker.broker.pending_count(), 5);
    assert_eq!(broker.broker.connection_count(), 6, "every open socket");
    // The one place is taken now, by the client.
    let (mut second, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V5, "second")).await;
    assert_eq!(connack.code, reason::QUOTA_EXCEEDED);
    assert_eq!(second.expect_closed().await, vec![]);
}

/// limits.max_pending_connections: with every pending place taken by silent sockets, a new
/// socket closes the oldest of them instead of being locked out, and a client that sends
/// CONNECT on it connects. The other silent sockets are untouched.
#[tokio::test]
async fn a_full_pending_set_closes_the_oldest_silent_socket_for_a_new_one() {
    let broker = TestBroker::start(config_with(|limits| limits.max_pending_connections = 3)).await;
    let mut silent = silent_sockets(&broker, 3).await;
    let mut client = TestClient::v5(broker.addr, "prompt").await;
    client.ping().await;
    assert_eq!(
        silent[0].expect_closed().await,
        vec![],
        "the oldest is closed"
    );
    assert_eq!(broker.broker.stats().pending_evicted.get(), 1);
    assert_eq!(broker.broker.pending_count(), 2);
    // The next oldest is still open, and can still connect.
    let connack = silent[1].handshake(connect_packet(V311, "late")).await;
    assert_eq!(connack.code, 0);
    silent[1].ping().await;
}

/// The pending sockets include those still in a WebSocket (or TLS) handshake: a silent socket
/// on the ws listener has a pending place, and is the one closed to make room.
#[tokio::test]
async fn a_socket_in_its_websocket_handshake_is_pending_too() {
    let mut config = config_with(|limits| limits.max_pending_connections = 1);
    config.mqtt.ws = "127.0.0.1:0".to_string();
    let broker = TestBroker::start(config).await;
    let ws = broker
        .listener(supermq::transport::Kind::Ws)
        .expect("ws listener");
    let mut handshaking = TestClient::open(ws, V311).await;
    wait_until("the socket is pending", || {
        broker.broker.pending_count() == 1
    })
    .await;
    let mut client = TestClient::v5(broker.addr, "prompt").await;
    client.ping().await;
    assert_eq!(handshaking.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().pending_evicted.get(), 1);
}

fn two_per_ip() -> supermq::config::Config {
    config_with(|limits| limits.max_connections_per_ip = 2)
}

/// limits.max_connections_per_ip: the socket past it still has its CONNECT read, and is
/// refused with 0x97 (quota exceeded) in 5.0, 0x03 (server unavailable) in 3.1.1. A closed
/// connection frees its place.
#[tokio::test]
async fn connection_past_max_connections_per_ip_is_refused() {
    let broker = TestBroker::start(two_per_ip()).await;
    let mut first = TestClient::v5(broker.addr, "first").await;
    let _second = TestClient::v311(broker.addr, "second").await;
    let (mut v5, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V5, "third5")).await;
    assert_eq!(connack.code, reason::QUOTA_EXCEEDED);
    let why = connack.properties.reason_string.as_deref().unwrap_or("");
    assert!(why.contains("limits.max_connections_per_ip"), "{why}");
    assert_eq!(v5.expect_closed().await, vec![]);
    let (mut v3, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V311, "third3")).await;
    assert_eq!(connack.code, 0x03);
    assert_eq!(v3.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().refused_per_ip_count.get(), 2);
    first.ping().await;

    first.disconnect().await;
    wait_until("the first connection is gone", || {
        broker.broker.connection_count() == 1
    })
    .await;
    TestClient::v5(broker.addr, "again").await.ping().await;
}

/// Pending sockets count towards limits.max_connections_per_ip too.
#[tokio::test]
async fn silent_sockets_count_towards_max_connections_per_ip() {
    let broker = TestBroker::start(two_per_ip()).await;
    let _silent = silent_sockets(&broker, 2).await;
    let (_, connack) = TestClient::connect_with(broker.addr, connect_packet(V5, "third")).await;
    assert_eq!(connack.code, reason::QUOTA_EXCEEDED);
}

/// A socket a per-address limit refuses takes no pending place: however many of them one
/// address opens, they never close another address's pending socket to make room. (Before,
/// each one took a pending place for `connect_timeout_secs` and evicted the oldest.) One that
/// sends CONNECT still gets its refusal.
#[tokio::test]
async fn sockets_refused_per_ip_never_evict_another_address_pending_socket() {
    let broker = TestBroker::start(config_with(|limits| {
        limits.max_connections_per_ip = 2;
        limits.max_pending_connections = 3;
    }))
    .await;
    let stats = broker.broker.stats();
    let mut other = TestClient::open_from(broker.addr, Ipv4Addr::new(127, 0, 0, 2), V5).await;
    wait_until("the other address's socket is pending", || {
        broker.broker.pending_count() == 1
    })
    .await;
    // Every pending place is taken now.
    let _silent = silent_sockets(&broker, 2).await;
    let mut refused = Vec::new();
    for _ in 0..20 {
        refused.push(TestClient::open(broker.addr, V5).await);
    }
    // Each of them was either refused or (had it taken a pending place) evicted another.
    wait_until("twenty sockets taken in", || {
        stats.refused_per_ip_count.get() + stats.pending_evicted.get() >= 20
    })
    .await;
    assert_eq!(stats.pending_evicted.get(), 0, "no pending socket evicted");
    assert_eq!(stats.refused_per_ip_count.get(), 20);
    assert_eq!(broker.broker.pending_count(), 3);
    other.handshake(connect_packet(V5, "other")).await;
    other.ping().await;
    let last = refused.last_mut().expect("twenty");
    last.send(&Packet::Connect(Box::new(connect_packet(V5, "refused"))))
        .await;
    match last.recv().await {
        Packet::ConnAck(connack) => assert_eq!(connack.code, reason::QUOTA_EXCEEDED),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A socket a per-address limit refused has about a second to send its CONNECT (enough to be
/// told why), not `connect_timeout_secs`.
#[tokio::test]
async fn a_silent_socket_refused_per_ip_is_closed_after_about_a_second() {
    let broker = TestBroker::start(config_with(|limits| {
        limits.max_connections_per_ip = 1;
        limits.connect_timeout_secs = 30;
    }))
    .await;
    let _silent = silent_sockets(&broker, 1).await;
    let opened = tokio::time::Instant::now();
    let mut refused = TestClient::open(broker.addr, V5).await;
    assert_eq!(refused.expect_closed().await, vec![]);
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
    assert_eq!(broker.broker.stats().refused_per_ip_count.get(), 1);
}

/// The sockets refused per address that wait for their CONNECT are few (256 at once, as the
/// README says); past that a refused socket is closed at once, unanswered.
#[tokio::test]
async fn past_256_waiting_refused_sockets_another_refused_one_is_closed_at_once() {
    const WAITING: usize = 256;
    const MORE: usize = 10;
    let broker = TestBroker::start(config_with(|limits| limits.max_connections_per_ip = 1)).await;
    let _silent = silent_sockets(&broker, 1).await;
    let opened = tokio::time::Instant::now();
    let mut refused = Vec::new();
    for _ in 0..WAITING + MORE {
        refused.push(TestClient::open(broker.addr, V5).await);
    }
    let stats = broker.broker.stats();
    wait_until("all refused", || {
        stats.refused_per_ip_count.get() == (WAITING + MORE) as u64
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut closed = 0;
    for socket in &mut refused {
        // A closed socket reads its end at once; an open one is silent.
        if let Received::Closed = socket.recv_within(Duration::ZERO).await {
            closed += 1;
        }
    }
    // Counted well within the second the waiting ones have, or they could have timed out.
    let counted = opened.elapsed();
    assert!(
        counted < Duration::from_millis(900),
        "counting took until {counted:?}; too slow a machine for this test"
    );
    assert_eq!(
        closed,
        MORE,
        "of {} refused sockets, all but {WAITING} are closed at once",
        WAITING + MORE
    );
}

/// Opens `n` sockets at once (well within one bucket interval), then sends CONNECT on each.
async fn connect_at_once(broker: &TestBroker, version: ProtocolVersion, n: usize) -> Vec<u8> {
    let mut sockets = Vec::new();
    for _ in 0..n {
        sockets.push(TestClient::open(broker.addr, version).await);
    }
    let mut codes = Vec::new();
    for (i, socket) in sockets.iter_mut().enumerate() {
        socket
            .send(&Packet::Connect(Box::new(connect_packet(
                version,
                &format!("c{i}"),
            ))))
            .await;
        match socket.recv().await {
            Packet::ConnAck(connack) => codes.push(connack.code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }
    codes
}

fn two_a_second() -> supermq::config::Config {
    config_with(|limits| limits.max_connect_rate_per_ip = 2)
}

/// limits.max_connect_rate_per_ip: a burst of that many connections gets in; the next one
/// has its CONNECT refused with 0x9F (connection rate exceeded) in 5.0. Half a second later
/// (2 a second) there is room for one more.
#[tokio::test]
async fn connection_past_max_connect_rate_per_ip_is_refused_with_0x9f() {
    let broker = TestBroker::start(two_a_second()).await;
    let codes = connect_at_once(&broker, V5, 3).await;
    assert_eq!(codes, vec![0, 0, reason::CONNECTION_RATE_EXCEEDED]);
    assert_eq!(broker.broker.stats().refused_per_ip_rate.get(), 1);
    tokio::time::sleep(Duration::from_millis(600)).await;
    TestClient::v5(broker.addr, "later").await.ping().await;
}

/// ... and with 0x03 (server unavailable) in 3.1.1.
#[tokio::test]
async fn connection_past_max_connect_rate_per_ip_is_refused_with_0x03_in_3_1_1() {
    let broker = TestBroker::start(two_a_second()).await;
    let codes = connect_at_once(&broker, V311, 3).await;
    assert_eq!(codes, vec![0, 0, 0x03]);
}

/// On a WebSocket (or TLS) listener a refused socket is closed at once: the handshake is the
/// work the limit is there to spare.
#[tokio::test]
async fn a_websocket_past_max_connect_rate_per_ip_is_closed_before_its_handshake() {
    let mut config = config_with(|limits| limits.max_connect_rate_per_ip = 1);
    config.mqtt.ws = "127.0.0.1:0".to_string();
    let broker = TestBroker::start(config).await;
    let ws = broker
        .listener(supermq::transport::Kind::Ws)
        .expect("ws listener");
    let mut first = TestClient::open_ws(ws, V5).await;
    first.handshake(connect_packet(V5, "first")).await;
    let mut second = tokio::net::TcpStream::connect(ws)
        .await
        .expect("tcp connect");
    // Closed without a word: the upgrade request may not even be read, let alone answered.
    let _ = second
        .write_all(b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(WAIT, second.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "still open after {WAIT:?}");
    assert_eq!(String::from_utf8_lossy(&answer), "", "an HTTP answer");
    assert_eq!(broker.broker.stats().refused_per_ip_rate.get(), 1);
    assert_eq!(broker.broker.pending_count(), 0, "it took no pending place");
    first.ping().await;
}

fn small_packets() -> supermq::config::Config {
    config_with(|limits| limits.max_packet_size = 100)
}

/// MQTT-3.2.2-15 and §4.13: a PUBLISH larger than the Maximum Packet Size we announced
/// (limits.max_packet_size) gets DISCONNECT 0x95 (packet too large).
#[tokio::test]
async fn publish_larger_than_max_packet_size_gets_disconnect_0x95() {
    let broker = TestBroker::start(small_packets()).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("big", AtMostOnce).await;
    let mut client = TestClient::v5(broker.addr, "big").await;
    client.publish("big", &[0; 101], AtMostOnce, false).await;
    client.expect_disconnect(reason::PACKET_TOO_LARGE).await;
    watcher.expect_nothing().await;
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
}

/// 3.1.1 has no DISCONNECT from the server: the connection is closed.
#[tokio::test]
async fn publish_larger_than_max_packet_size_closes_a_3_1_1_connection() {
    let broker = TestBroker::start(small_packets()).await;
    let mut client = TestClient::v311(broker.addr, "big3").await;
    client.publish("big", &[0; 101], AtMostOnce, false).await;
    assert_eq!(client.expect_closed().await, vec![]);
}

/// A packet of exactly max_packet_size bytes (fixed header included) is accepted.
#[tokio::test]
async fn packet_of_exactly_max_packet_size_is_accepted() {
    let broker = TestBroker::start(small_packets()).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("b", AtMostOnce).await;
    let mut client = TestClient::v5(broker.addr, "edge").await;
    // 1 (type) + 1 (length) + 3 (topic "b") + 1 (no properties) + 94 = 100 bytes.
    client.publish("b", &[0; 94], AtMostOnce, false).await;
    assert_eq!(watcher.recv_publish().await.payload.len(), 94);
    client.ping().await;
}

/// The size is checked from the fixed header: a header announcing a huge packet is refused
/// at once, without the broker waiting for (or buffering) the body.
#[tokio::test]
async fn oversized_packet_is_refused_from_its_fixed_header_alone() {
    let broker = TestBroker::start(small_packets()).await;
    let mut client = TestClient::v5(broker.addr, "header").await;
    // PUBLISH announcing 268,435,455 bytes; none of them follow.
    client.send_bytes(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]).await;
    client.expect_disconnect(reason::PACKET_TOO_LARGE).await;
}

/// The same check applies to CONNECT: an oversized one whose version is not known yet (only
/// its fixed header came) is closed without a CONNACK.
#[tokio::test]
async fn oversized_connect_is_closed_without_connack() {
    let broker = TestBroker::start(small_packets()).await;
    let mut client = TestClient::open(broker.addr, V311).await;
    client.send_bytes(&[0x10, 0xFF, 0xFF, 0x03]).await;
    assert_eq!(client.expect_closed().await, vec![]);
}

/// `limits.max_connect_size` in the CONNECT tests below.
const MAX_CONNECT: u32 = 1024;

fn small_connects() -> supermq::config::Config {
    config_with(|limits| limits.max_connect_size = MAX_CONNECT)
}

/// A CONNECT whose password makes it exactly `size` bytes long (with a user name, which
/// 3.1.1 requires with a password).
fn connect_of_size(version: ProtocolVersion, client_id: &str, size: usize) -> Connect {
    let mut connect = connect_packet(version, client_id);
    connect.username = Some("user".to_string());
    connect.password = Some(Bytes::new());
    let encoded = |connect: &Connect| {
        let mut out = bytes::BytesMut::new();
        protocol::encode(
            &Packet::Connect(Box::new(connect.clone())),
            version,
            &mut out,
        )
        .expect("encode")
    };
    let bare = encoded(&connect);
    // Past 127 bytes the remaining length takes a second byte.
    let header = if size > 129 { 1 } else { 0 };
    connect.password = Some(Bytes::from(vec![b'p'; size - bare - header]));
    assert_eq!(encoded(&connect), size);
    connect
}

/// limits.max_connect_size: a CONNECT larger than it is refused from its fixed header, with
/// CONNACK 0x95 (packet too large) for a 5.0 client, however much larger `max_packet_size`
/// is; one of exactly that size connects, and from then on packets up to `max_packet_size`
/// are taken.
#[tokio::test]
async fn a_connect_larger_than_max_connect_size_is_refused_with_0x95() {
    let broker = TestBroker::start(small_connects()).await;
    let size = MAX_CONNECT as usize;
    let (mut refused, connack) =
        TestClient::connect_with(broker.addr, connect_of_size(V5, "big", size + 1)).await;
    assert_eq!(connack.code, reason::PACKET_TOO_LARGE);
    let why = connack.properties.reason_string.as_deref().unwrap_or("");
    assert!(why.contains("limits.max_connect_size"), "{why}");
    assert_eq!(refused.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().connections_refused.get(), 1);

    let (mut client, connack) =
        TestClient::connect_with(broker.addr, connect_of_size(V5, "edge", size)).await;
    assert_eq!(connack.code, 0, "{connack:?}");
    client.subscribe("big", AtMostOnce).await;
    let payload = vec![1u8; 4 * size];
    client.publish("big", &payload, AtMostOnce, false).await;
    assert_eq!(client.recv_publish().await.payload.len(), payload.len());
}

/// A 3.1.1 client has no code for it: its CONNECT is refused by closing the connection.
#[tokio::test]
async fn a_3_1_1_connect_larger_than_max_connect_size_is_closed() {
    let broker = TestBroker::start(small_connects()).await;
    let size = MAX_CONNECT as usize;
    let connect = connect_of_size(V311, "big", size + 1);
    let mut client = TestClient::open(broker.addr, V311).await;
    client.send(&Packet::Connect(Box::new(connect))).await;
    assert_eq!(client.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().connections_refused.get(), 1);
    TestClient::connect_with(broker.addr, connect_of_size(V311, "edge", size)).await;
}

/// The default (64 KiB) refuses the CONNECT that could hold a pending socket's 1 MiB: the
/// broker answers its fixed header at once instead of waiting for (and keeping) the rest.
#[tokio::test]
async fn by_default_a_connect_of_max_packet_size_is_refused_from_its_header() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::open(broker.addr, V5).await;
    // A 5.0 CONNECT announcing 1 MiB - 1: its fixed header, name and level, and no more.
    let mut start = vec![0x10, 0xFB, 0xFF, 0x3F];
    start.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 5]);
    client.send_bytes(&start).await;
    match client.recv().await {
        Packet::ConnAck(connack) => assert_eq!(connack.code, reason::PACKET_TOO_LARGE),
        other => panic!("expected CONNACK, got {other:?}"),
    }
    assert_eq!(client.expect_closed().await, vec![]);
}

/// limits.max_queued_messages: an offline session keeps that many messages; the rest are
/// dropped and counted in dropped_queue_full (the publisher still gets its PUBACKs).
#[tokio::test]
async fn offline_queue_drops_and_counts_messages_past_max_queued_messages() {
    let broker = TestBroker::start(config_with(|limits| limits.max_queued_messages = 3)).await;
    let (mut client, _) = TestClient::connect(broker.addr, V311, "away", false).await;
    client.subscribe("queue", AtLeastOnce).await;
    client.disconnect().await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    for i in 0..5u8 {
        publisher.publish("queue", &[i], AtLeastOnce, false).await;
    }
    assert_eq!(broker.broker.stats().dropped_queue_full.get(), 2);

    let (mut client, _) = TestClient::connect(broker.addr, V311, "away", false).await;
    for i in 0..3u8 {
        assert_eq!(&client.recv_acked().await.payload[..], &[i]);
    }
    client.expect_nothing().await;
}

/// The queue limit applies to a connected client too, once its in-flight window is full:
/// after holding the publisher back for limits.queue_full_wait_ms (flow control, see
/// broker_flow.rs) the subscriber is declared slow and the extra messages are dropped for it
/// and counted.
#[tokio::test]
async fn online_queue_behind_a_full_window_is_bounded_too() {
    let broker = TestBroker::start(config_with(|limits| {
        limits.max_queued_messages = 2;
        limits.queue_full_wait_ms = 100;
    }))
    .await;
    let mut connect = connect_packet(V5, "slow");
    connect.properties.receive_maximum = Some(1);
    let (mut slow, _) = TestClient::connect_with(broker.addr, connect).await;
    slow.subscribe("slow", AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    let first = {
        publisher.publish("slow", &[0], AtLeastOnce, false).await;
        slow.recv_publish().await
    };
    for i in 1..6u8 {
        publisher.publish("slow", &[i], AtLeastOnce, false).await;
    }
    assert_eq!(broker.broker.stats().dropped_slow_consumer.get(), 3);
    slow.ack(&first).await;
    for i in 1..3u8 {
        assert_eq!(&slow.recv_acked().await.payload[..], &[i]);
    }
    slow.expect_nothing().await;
}

fn short_topics() -> supermq::config::Config {
    config_with(|limits| limits.max_topic_length = 10)
}

/// limits.max_topic_length: a 5.0 PUBLISH to a longer topic gets PUBACK 0x90 (topic name
/// invalid), is delivered to nobody, and the connection stays open.
#[tokio::test]
async fn publish_to_a_topic_over_max_topic_length_gets_puback_0x90() {
    let broker = TestBroker::start(short_topics()).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("#", AtMostOnce).await;
    let mut client = TestClient::v5(broker.addr, "long").await;
    let ack = client
        .publish("0123456789a", b"x", AtLeastOnce, false)
        .await;
    assert_eq!(ack, reason::TOPIC_NAME_INVALID);
    watcher.expect_nothing().await;
    assert_eq!(broker.broker.stats().publishes_refused.get(), 1);
    // A topic of exactly the limit goes through.
    let ack = client.publish("0123456789", b"x", AtLeastOnce, false).await;
    assert_eq!(ack, reason::SUCCESS);
    assert_eq!(watcher.recv_publish().await.topic, "0123456789");
}

/// 3.1.1 has no negative PUBACK: a topic over the limit closes the connection.
#[tokio::test]
async fn publish_to_a_topic_over_max_topic_length_closes_a_3_1_1_connection() {
    let broker = TestBroker::start(short_topics()).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("#", AtMostOnce).await;
    let mut client = TestClient::v311(broker.addr, "long3").await;
    client
        .send_publish(publish_packet("0123456789a", b"x", AtLeastOnce, false, 1))
        .await;
    assert_eq!(client.expect_closed().await, vec![]);
    watcher.expect_nothing().await;
}

/// limits.max_topic_length applies to filters: SUBACK 0x8F (5.0) / 0x80 (3.1.1).
#[tokio::test]
async fn filter_over_max_topic_length_is_refused() {
    let broker = TestBroker::start(short_topics()).await;
    let mut v5 = TestClient::v5(broker.addr, "v5").await;
    assert_eq!(
        v5.subscribe("0123456789/", AtMostOnce).await.reasons,
        vec![reason::TOPIC_FILTER_INVALID]
    );
    assert_eq!(
        v5.subscribe("012345678/", AtMostOnce).await.reasons,
        vec![0]
    );
    let mut v3 = TestClient::v311(broker.addr, "v3").await;
    assert_eq!(
        v3.subscribe("0123456789/", AtMostOnce).await.reasons,
        vec![0x80]
    );
}

fn shallow_topics() -> supermq::config::Config {
    config_with(|limits| limits.max_topic_levels = 3)
}

/// limits.max_topic_levels: a 5.0 PUBLISH to a deeper topic gets PUBACK 0x90; one of exactly
/// the limit goes through.
#[tokio::test]
async fn publish_to_a_topic_over_max_topic_levels_gets_puback_0x90() {
    let broker = TestBroker::start(shallow_topics()).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("#", AtMostOnce).await;
    let mut client = TestClient::v5(broker.addr, "deep").await;
    let ack = client.publish("a/b/c/d", b"x", AtLeastOnce, false).await;
    assert_eq!(ack, reason::TOPIC_NAME_INVALID);
    watcher.expect_nothing().await;
    let ack = client.publish("a/b/c", b"x", AtLeastOnce, false).await;
    assert_eq!(ack, reason::SUCCESS);
    assert_eq!(watcher.recv_publish().await.topic, "a/b/c");
}

/// Empty levels count as levels: `a//` has three.
#[tokio::test]
async fn empty_levels_count_towards_max_topic_levels() {
    let broker = TestBroker::start(shallow_topics()).await;
    let mut client = TestClient::v5(broker.addr, "empty").await;
    let ack = client.publish("a///", b"x", AtLeastOnce, false).await;
    assert_eq!(ack, reason::TOPIC_NAME_INVALID);
}

/// 3.1.1: a topic over the level limit closes the connection.
#[tokio::test]
async fn publish_to_a_topic_over_max_topic_levels_closes_a_3_1_1_connection() {
    let broker = TestBroker::start(shallow_topics()).await;
    let mut client = TestClient::v311(broker.addr, "deep3").await;
    client.publish("a/b/c/d", b"x", AtMostOnce, false).await;
    assert_eq!(client.expect_closed().await, vec![]);
}

/// limits.max_topic_levels applies to filters: SUBACK 0x8F (5.0) / 0x80 (3.1.1).
#[tokio::test]
async fn filter_over_max_topic_levels_is_refused() {
    let broker = TestBroker::start(shallow_topics()).await;
    let mut v5 = TestClient::v5(broker.addr, "v5").await;
    assert_eq!(
        v5.subscribe("a/+/c/#", AtMostOnce).await.reasons,
        vec![reason::TOPIC_FILTER_INVALID]
    );
    assert_eq!(v5.subscribe("a/+/#", AtMostOnce).await.reasons, vec![0]);
    let mut v3 = TestClient::v311(broker.addr, "v3").await;
    assert_eq!(
        v3.subscribe("a/+/c/#", AtMostOnce).await.reasons,
        vec![0x80]
    );
}

fn two_subscriptions() -> supermq::config::Config {
    config_with(|limits| limits.max_subscriptions = 2)
}

/// limits.max_subscriptions: the next subscription gets SUBACK 0x97 (quota exceeded) in 5.0.
#[tokio::test]
async fn subscription_past_max_subscriptions_is_refused_with_0x97() {
    let broker = TestBroker::start(two_subscriptions()).await;
    let mut client = TestClient::v5(broker.addr, "many").await;
    client.subscribe("s/1", AtMostOnce).await;
    client.subscribe("s/2", AtMostOnce).await;
    let suback = client.subscribe("s/3", AtMostOnce).await;
    assert_eq!(suback.reasons, vec![reason::QUOTA_EXCEEDED]);
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    let ack = publisher.publish("s/3", b"x", AtLeastOnce, false).await;
    assert_eq!(ack, reason::NO_MATCHING_SUBSCRIBERS);
}

/// ... and 0x80 in 3.1.1.
#[tokio::test]
async fn subscription_past_max_subscriptions_is_refused_with_0x80_in_3_1_1() {
    let broker = TestBroker::start(two_subscriptions()).await;
    let mut client = TestClient::v311(broker.addr, "many3").await;
    let suback = client
        .subscribe_with(
            1,
            vec![
                ("s/1".to_string(), qos(AtMostOnce)),
                ("s/2".to_string(), qos(AtMostOnce)),
                ("s/3".to_string(), qos(AtMostOnce)),
            ],
            Properties::default(),
        )
        .await;
    assert_eq!(suback.reasons, vec![0, 0, 0x80]);
}

/// At the limit, subscribing again to a filter the client has is a replacement, not a new
/// subscription, and is granted.
#[tokio::test]
async fn resubscribing_at_max_subscriptions_is_granted() {
    let broker = TestBroker::start(two_subscriptions()).await;
    let mut client = TestClient::v5(broker.addr, "again").await;
    client.subscribe("s/1", AtMostOnce).await;
    client.subscribe("s/2", AtMostOnce).await;
    let suback = client.subscribe("s/2", AtLeastOnce).await;
    assert_eq!(suback.reasons, vec![1]);
}

/// UNSUBSCRIBE frees a place under max_subscriptions.
#[tokio::test]
async fn unsubscribing_frees_a_place_under_max_subscriptions() {
    let broker = TestBroker::start(two_subscriptions()).await;
    let mut client = TestClient::v5(broker.addr, "churn").await;
    client.subscribe("s/1", AtMostOnce).await;
    client.subscribe("s/2", AtMostOnce).await;
    client
        .send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 9,
            filters: vec!["s/1".to_string()],
            properties: Properties::default(),
        }))
        .await;
    assert!(matches!(client.recv().await, Packet::UnsubAck(_)));
    assert_eq!(client.subscribe("s/3", AtMostOnce).await.reasons, vec![0]);
}

/// The limit is per session: another client has its own allowance.
#[tokio::test]
async fn max_subscriptions_is_per_session() {
    let broker = TestBroker::start(two_subscriptions()).await;
    let mut a = TestClient::v5(broker.addr, "a").await;
    a.subscribe("s/1", AtMostOnce).await;
    a.subscribe("s/2", AtMostOnce).await;
    let mut b = TestClient::v5(broker.addr, "b").await;
    assert_eq!(b.subscribe("s/1", AtMostOnce).await.reasons, vec![0]);
    assert_eq!(b.subscribe("s/2", AtMostOnce).await.reasons, vec![0]);
}
