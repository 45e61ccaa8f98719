//! Connections at rest (docs/ARCHITECTURE.md, "Connections at rest"): a plain TCP connection
//! with nothing to do gives up its task until its socket is readable or something is queued
//! for it. These tests check that it does rest, and that a resting connection misses nothing:
//! packets, half-sent packets, messages for it, closes by the client, keep alive, takeover,
//! shutdown. (Every other test exercises it too: each TCP connection rests once right after
//! its CONNACK.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use supermq::protocol::{Packet, ProtocolVersion, QoS, reason};
use supermq::transport::Kind;

use ProtocolVersion::{V5, V311};

/// Waits until `n` connections rest.
async fn until_resting(broker: &TestBroker, n: usize) {
    let what = format!("{n} connections rest");
    wait_until(&what, || broker.broker.resting_count() == n).await;
}

#[tokio::test]
async fn quiet_connections_rest_and_answer_as_before() {
    let broker = TestBroker::start_default().await;
    let mut clients = Vec::new();
    for i in 0..40 {
        let version = if i % 2 == 0 { V5 } else { V311 };
        clients.push(
            TestClient::connect(broker.addr, version, &format!("rest-{i}"), true)
                .await
                .0,
        );
    }
    until_resting(&broker, 40).await;
    for client in &mut clients {
        client.ping().await;
    }
    // Woken by their PINGREQ, they rest again once quiet for a second.
    until_resting(&broker, 40).await;
    for client in &mut clients {
        client.ping().await;
    }
    assert_eq!(broker.broker.connection_count(), 40);
}

#[tokio::test]
async fn a_resting_subscriber_gets_what_is_published_for_it_at_every_qos() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v5(broker.addr, "resting-sub").await;
    subscriber.subscribe("idle/#", QoS::ExactlyOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "publisher").await;
    for (round, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        until_resting(&broker, 2).await;
        let payload = format!("m{round}");
        publisher
            .publish("idle/t", payload.as_bytes(), qos, false)
            .await;
        let publish = subscriber.recv_acked().await;
        assert_eq!(publish.payload.as_ref(), payload.as_bytes());
        assert_eq!(publish.qos, qos);
    }
    subscriber.ping().await;
}

/// A packet that arrives in two parts, a rest apart, is read whole: the connection does not
/// rest with half a packet read, and one that starts to arrive while it rests wakes it.
#[tokio::test]
async fn a_packet_sent_in_parts_around_a_rest_is_not_lost() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v311(broker.addr, "parts").await;
    let mut publisher = TestClient::v311(broker.addr, "parts-pub").await;
    client.subscribe("parts", QoS::AtMostOnce).await;
    until_resting(&broker, 2).await;
    let publish = raw_packet(0x30, &[&raw_string(b"parts")[..], b"payload"].concat());
    let (first, rest) = publish.split_at(4);
    client.send_bytes(first).await;
    // Longer than the sweep takes to ask a quiet connection to rest.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    client.send_bytes(rest).await;
    assert_eq!(client.recv_publish().await.payload.as_ref(), b"payload");
    publisher.ping().await;
}

#[tokio::test]
async fn a_resting_connection_closed_by_its_client_ends_and_its_will_is_published() {
    let broker = TestBroker::start_default().await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let connect = connect_with_will(V5, "leaver", "wills/leaver", b"gone");
    let (leaver, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, 0);
    until_resting(&broker, 2).await;
    drop(leaver);
    assert_eq!(watcher.recv_publish().await.payload.as_ref(), b"gone");
    wait_until("the leaver's connection ends", || {
        broker.broker.connection_count() == 1
    })
    .await;
}

#[tokio::test]
async fn a_resting_connection_is_closed_on_keep_alive_timeout() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "sleepy");
    connect.keep_alive = 1;
    let (mut client, _) = TestClient::connect_with(broker.addr, connect).await;
    let started = Instant::now();
    until_resting(&broker, 1).await;
    client.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(3000),
        "closed {waited:?} after connecting, for a keep alive of 1 s"
    );
}

#[tokio::test]
async fn a_resting_connection_is_taken_over_and_told_so() {
    let broker = TestBroker::start_default().await;
    let mut first = TestClient::v5(broker.addr, "same-id").await;
    until_resting(&broker, 1).await;
    let mut second = TestClient::v5(broker.addr, "same-id").await;
    first.expect_disconnect(reason::SESSION_TAKEN_OVER).await;
    second.ping().await;
}

#[tokio::test]
async fn resting_connections_are_told_of_a_shutdown() {
    let mut broker = TestBroker::start_default().await;
    let mut v5 = TestClient::v5(broker.addr, "down-5").await;
    let mut v311 = TestClient::v311(broker.addr, "down-311").await;
    until_resting(&broker, 2).await;
    broker.shutdown().await;
    v5.expect_disconnect(reason::SERVER_SHUTTING_DOWN).await;
    assert_eq!(v311.expect_closed().await, Vec::<Packet>::new());
}

/// TLS and WebSocket streams keep state above the socket: those connections keep their task.
#[tokio::test]
async fn tls_and_websocket_connections_do_not_rest() {
    let mut config = config();
    config.mqtt.tls = "127.0.0.1:0".to_string();
    config.mqtt.ws = "127.0.0.1:0".to_string();
    config.tls.cert = cert("server.pem").display().to_string();
    config.tls.key = cert("server.key").display().to_string();
    let broker = TestBroker::start(config).await;
    let tls = broker.listener(Kind::Tls).expect("tls listener");
    let ws = broker.listener(Kind::Ws).expect("ws listener");
    let mut clients = [
        TestClient::open_tls(tls, V5).await,
        TestClient::open_ws(ws, V311).await,
    ];
    for (i, client) in clients.iter_mut().enumerate() {
        let connack = client
            .handshake(connect_packet(client.version, &format!("kept-{i}")))
            .await;
        assert_eq!(connack.code, 0);
    }
    let _tcp = TestClient::v5(broker.addr, "rests").await;
    until_resting(&broker, 1).await;
    // Past the second after which the sweep asks quiet connections.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(broker.broker.resting_count(), 1);
    for client in &mut clients {
        client.ping().await;
    }
}
