//! Graceful shutdown (MQTT 5.0 §3.14, reason 0x8B): TestBroker::shutdown() tells every 5.0
//! client with DISCONNECT 0x8B (server shutting down) and closes every connection, does not
//! publish Wills (the clients did nothing wrong), finishes promptly and stops accepting.

mod common;

use std::time::{Duration, Instant};

use common::*;
use supermq::protocol::{Packet, ProtocolVersion, QoS, reason};

use ProtocolVersion::{V5, V31, V311};

#[tokio::test]
async fn shutdown_sends_disconnect_0x8b_to_v5_clients() {
    let mut broker = TestBroker::start_default().await;
    let mut a = TestClient::v5(broker.addr, "a").await;
    let mut b = TestClient::v5(broker.addr, "b").await;
    broker.shutdown().await;
    a.expect_disconnect(reason::SERVER_SHUTTING_DOWN).await;
    b.expect_disconnect(reason::SERVER_SHUTTING_DOWN).await;
}

/// 3.1.1 and 3.1 have no server DISCONNECT: their connections are just closed.
#[tokio::test]
async fn shutdown_closes_v3_clients_without_disconnect() {
    let mut broker = TestBroker::start_default().await;
    let mut v311 = TestClient::v311(broker.addr, "v311").await;
    let (mut v31, _) = TestClient::connect(broker.addr, V31, "v31", true).await;
    broker.shutdown().await;
    assert_eq!(v311.expect_closed().await, vec![]);
    assert_eq!(v31.expect_closed().await, vec![]);
}

/// A shutdown is no abnormal disconnection of the clients: no Will is published.
#[tokio::test]
async fn shutdown_does_not_publish_wills() {
    let mut broker = TestBroker::start_default().await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("will/#", QoS::AtMostOnce).await;
    let (_v5, _) = TestClient::connect_with(
        broker.addr,
        connect_with_will(V5, "w5", "will/v5", b"not on shutdown"),
    )
    .await;
    let (_v3, _) = TestClient::connect_with(
        broker.addr,
        connect_with_will(V311, "w3", "will/v3", b"not on shutdown"),
    )
    .await;
    broker.shutdown().await;
    let packets = watcher
        .expect_disconnect(reason::SERVER_SHUTTING_DOWN)
        .await;
    assert!(
        !packets.iter().any(|p| matches!(p, Packet::Publish(_))),
        "a Will was delivered on shutdown: {packets:?}"
    );
    assert_eq!(broker.broker.stats().wills_published.get(), 0);
}

/// Shutdown does not wait for clients to leave on their own: with idle clients connected it
/// finishes well within its 5 s grace period, and every connection is gone.
#[tokio::test]
async fn shutdown_finishes_promptly_with_clients_connected() {
    let mut broker = TestBroker::start_default().await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let version = if i % 2 == 0 { V5 } else { V311 };
        let (client, _) = TestClient::connect(broker.addr, version, &format!("c{i}"), true).await;
        clients.push(client);
    }
    let started = Instant::now();
    broker.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(broker.broker.connection_count(), 0);
    for client in &mut clients {
        client.expect_closed().await;
    }
}

/// After shutdown the listener is gone: new connections are refused.
#[tokio::test]
async fn shutdown_stops_accepting_connections() {
    let mut broker = TestBroker::start_default().await;
    broker.shutdown().await;
    let refused = tokio::net::TcpStream::connect(broker.addr).await;
    assert!(refused.is_err(), "a connection was accepted after shutdown");
}

/// A connection that has not sent CONNECT yet is closed by shutdown too.
#[tokio::test]
async fn shutdown_closes_connections_that_have_not_connected_yet() {
    let mut broker = TestBroker::start_default().await;
    let mut pending = TestClient::open(broker.addr, V311).await;
    wait_until("the connection is counted", || {
        broker.broker.connection_count() == 1
    })
    .await;
    let started = Instant::now();
    broker.shutdown().await;
    assert_eq!(pending.expect_closed().await, vec![]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed only after {:?}",
        started.elapsed()
    );
}
