//! Keep alive (MQTT 3.1.1 §3.1.2.10, MQTT 5.0 §3.1.2.10 and §3.2.2.3.14): a client that sends
//! nothing for one and a half keep alive periods is disconnected, any packet (PINGREQ
//! included) counts as a sign of life, and limits.max_keep_alive caps what a 5.0 client gets,
//! told through Server Keep Alive. (The Will on a keep alive timeout is in broker_will.rs.)

mod common;

use std::time::{Duration, Instant};

use common::*;
use supermq::protocol::{Packet, ProtocolVersion, QoS, reason};

use ProtocolVersion::{V5, V311};

async fn connect_with_keep_alive(
    broker: &TestBroker,
    version: ProtocolVersion,
    keep_alive: u16,
) -> (TestClient, supermq::protocol::ConnAck) {
    let mut connect = connect_packet(version, "ka");
    connect.keep_alive = keep_alive;
    let (client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, 0);
    (client, connack)
}

/// Asserts the close came after about 1.5 × keep alive: not before, and not much later.
fn assert_closed_after(started: Instant, keep_alive_secs: u64) {
    let waited = started.elapsed();
    let due = Duration::from_millis(keep_alive_secs * 1500);
    assert!(
        waited >= due - Duration::from_millis(100),
        "closed after {waited:?}, before 1.5 × keep alive ({due:?})"
    );
    assert!(
        waited < due + Duration::from_millis(1500),
        "closed after {waited:?}, long after 1.5 × keep alive ({due:?})"
    );
}

/// MQTT-3.1.2-22 / MQTT 5.0 §3.1.2.10: silent for 1.5 × keep alive → DISCONNECT 0x8D and close.
#[tokio::test]
async fn silent_client_is_disconnected_with_0x8d_after_one_and_a_half_keep_alives() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = connect_with_keep_alive(&broker, V5, 1).await;
    let started = Instant::now();
    client.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
    assert_closed_after(started, 1);
}

/// MQTT-3.1.2-24 (3.1.1): the same, without a DISCONNECT.
#[tokio::test]
async fn silent_client_is_closed_after_one_and_a_half_keep_alives_in_3_1_1() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = connect_with_keep_alive(&broker, V311, 1).await;
    let started = Instant::now();
    assert_eq!(client.expect_closed().await, vec![]);
    assert_closed_after(started, 1);
}

/// MQTT-3.12.4-1: PINGREQ is answered with PINGRESP and keeps the connection alive well past
/// 1.5 × keep alive.
#[tokio::test]
async fn pingreq_keeps_the_connection_alive() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = connect_with_keep_alive(&broker, V5, 1).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client.ping().await;
    }
    // 2 s have passed, more than the 1.5 s the broker would wait for a silent client.
    client.ping().await;
}

/// Any control packet, not only PINGREQ, resets the keep alive timer.
#[tokio::test]
async fn publishing_keeps_the_connection_alive() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = connect_with_keep_alive(&broker, V311, 1).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        client
            .publish("ka/t", b"alive", QoS::AtMostOnce, false)
            .await;
    }
    client.ping().await;
}

/// Receiving messages is no sign of life from the client: a subscriber that gets messages
/// but sends nothing is still disconnected.
#[tokio::test]
async fn receiving_messages_does_not_keep_a_silent_client_alive() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = connect_with_keep_alive(&broker, V5, 1).await;
    client.subscribe("ka/feed", QoS::AtMostOnce).await;
    let started = Instant::now();
    let mut publisher = TestClient::v5(broker.addr, "feeder").await;
    let feeding = tokio::spawn(async move {
        for _ in 0..8 {
            publisher
                .publish("ka/feed", b"x", QoS::AtMostOnce, false)
                .await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    client.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
    assert_closed_after(started, 1);
    feeding.await.unwrap();
}

/// MQTT 5.0 §3.2.2.3.14: a keep alive above limits.max_keep_alive is lowered, and the client is
/// told the value in Server Keep Alive.
#[tokio::test]
async fn keep_alive_above_max_gets_server_keep_alive() {
    let broker = TestBroker::start(config_with(|limits| limits.max_keep_alive = 30)).await;
    let (_client, connack) = connect_with_keep_alive(&broker, V5, 60).await;
    assert_eq!(connack.properties.server_keep_alive, Some(30));
}

/// Keep alive 0 (no keep alive) is above any cap too.
#[tokio::test]
async fn keep_alive_zero_gets_server_keep_alive_when_capped() {
    let broker = TestBroker::start(config_with(|limits| limits.max_keep_alive = 30)).await;
    let (_client, connack) = connect_with_keep_alive(&broker, V5, 0).await;
    assert_eq!(connack.properties.server_keep_alive, Some(30));
}

/// A keep alive within the cap is kept, and no Server Keep Alive is sent.
#[tokio::test]
async fn keep_alive_within_max_gets_no_server_keep_alive() {
    let broker = TestBroker::start(config_with(|limits| limits.max_keep_alive = 30)).await;
    let (_client, connack) = connect_with_keep_alive(&broker, V5, 20).await;
    assert_eq!(connack.properties.server_keep_alive, None);
}

/// MQTT-3.2.2-21: the client must use the Server Keep Alive, and the broker enforces it.
#[tokio::test]
async fn server_keep_alive_is_enforced() {
    let broker = TestBroker::start(config_with(|limits| limits.max_keep_alive = 1)).await;
    let (mut client, connack) = connect_with_keep_alive(&broker, V5, 60).await;
    assert_eq!(connack.properties.server_keep_alive, Some(1));
    let started = Instant::now();
    client.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
    assert_closed_after(started, 1);
}

/// The keep alive timer starts again with every packet, so a client that goes silent after
/// being active is still disconnected.
#[tokio::test]
async fn client_silent_after_activity_is_disconnected() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = connect_with_keep_alive(&broker, V5, 1).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    client.send(&Packet::PingReq).await;
    let started = Instant::now();
    let packets = client.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
    assert_eq!(packets, vec![Packet::PingResp]);
    assert_closed_after(started, 1);
}

/// Time the broker itself holds a publisher's socket unread (a subscriber's queue is full,
/// flow control) is no silence of the publisher's: it is not closed for keep alive while held.
#[tokio::test]
async fn a_publisher_held_up_by_flow_control_is_not_closed_for_keep_alive() {
    let broker = TestBroker::start(config_with(|limits| {
        limits.max_queued_messages = 4;
        limits.queue_full_wait_ms = 4000;
    }))
    .await;
    // A subscriber that never reads: its socket fills, then its queue.
    let mut sleeper = TestClient::v5(broker.addr, "sleeper").await;
    sleeper.subscribe("ka/flow", QoS::AtMostOnce).await;
    let (mut publisher, _) = connect_with_keep_alive(&broker, V5, 1).await;
    // 32 MiB: far more than the sockets' buffers and the queue hold.
    let sending = tokio::spawn(async move {
        let payload = vec![0u8; 256 * 1024];
        for _ in 0..128 {
            publisher
                .send_publish(publish_packet(
                    "ka/flow",
                    &payload,
                    QoS::AtMostOnce,
                    false,
                    0,
                ))
                .await;
        }
        publisher
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !sending.is_finished(),
        "the publisher was not held up: the test proves nothing"
    );
    assert_eq!(
        broker.broker.stats().dropped_queue_full.get(),
        0,
        "still held, not dropping"
    );
    assert_eq!(
        broker.broker.connection_count(),
        2,
        "the held publisher (keep alive 1 s) was closed"
    );
    drop(sleeper);
}
