//! The Will Message (MQTT 3.1.1 §3.1.2.5-3.1.2.7, MQTT 5.0 §3.1.2.5 and §3.1.3.2): published
//! when the connection ends without a normal DISCONNECT (dropped, keep alive timeout, closed
//! by the broker for a protocol error, taken over), not after a normal DISCONNECT, on 5.0
//! DISCONNECT 0x04, after the Will Delay Interval unless the session is resumed in time, with
//! its properties, QoS and RETAIN flag. (No Will on broker shutdown: broker_shutdown.rs.)

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use supermq::protocol::{Connect, Disconnect, Packet, ProtocolVersion, QoS, reason};

use ProtocolVersion::{V5, V311};
use QoS::{AtLeastOnce, AtMostOnce, ExactlyOnce};

/// A subscriber to `filter` that will see the Will.
async fn watcher(broker: &TestBroker, filter: &str) -> TestClient {
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe(filter, ExactlyOnce).await;
    watcher
}

/// Connects `connect` and expects it accepted.
async fn connect(broker: &TestBroker, connect: Connect) -> TestClient {
    let (client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, 0, "{connack:?}");
    client
}

fn with_delay(mut connect: Connect, will_delay: u32, session_expiry: u32) -> Connect {
    connect.properties.session_expiry_interval = Some(session_expiry);
    let will = connect.will.as_mut().unwrap();
    will.properties.will_delay_interval = Some(will_delay);
    connect
}

/// MQTT-3.1.2-8: the Will is published when the network connection closes without
/// DISCONNECT.
#[tokio::test]
async fn will_is_published_when_the_connection_drops() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let client = connect(&broker, connect_with_will(V311, "w", "will/w", b"gone")).await;
    drop(client);
    let will = watcher.recv_acked().await;
    assert_eq!(will.topic, "will/w");
    assert_eq!(&will.payload[..], b"gone");
    assert_eq!(broker.broker.stats().wills_published.get(), 1);
}

/// MQTT 5.0 §3.1.2.5: the Will is published when the client misses its keep alive.
#[tokio::test]
async fn will_is_published_on_keep_alive_timeout() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let mut request = connect_with_will(V5, "silent", "will/silent", b"timed out");
    request.keep_alive = 1;
    let mut client = connect(&broker, request).await;
    client.expect_disconnect(reason::KEEP_ALIVE_TIMEOUT).await;
    let will = watcher.recv_acked().await;
    assert_eq!(&will.payload[..], b"timed out");
}

/// MQTT-3.1.2-10 (3.1.1) / MQTT-3.1.2-8 (5.0): a normal DISCONNECT deletes the Will.
#[tokio::test]
async fn will_is_not_published_after_a_normal_disconnect() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let client = connect(&broker, connect_with_will(V311, "polite", "will/p", b"no")).await;
    client.disconnect().await;
    watcher.expect_nothing().await;
    assert_eq!(broker.broker.stats().wills_published.get(), 0);
}

/// The same for a 5.0 client: DISCONNECT 0x00 deletes the Will.
#[tokio::test]
async fn will_is_not_published_after_a_normal_v5_disconnect() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let client = connect(&broker, connect_with_will(V5, "polite5", "will/p", b"no")).await;
    client.disconnect().await;
    watcher.expect_nothing().await;
}

/// MQTT 5.0 §3.14.2.1: DISCONNECT with 0x04 (disconnect with Will Message) publishes it.
#[tokio::test]
async fn v5_disconnect_with_0x04_publishes_the_will() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let mut client = connect(
        &broker,
        connect_with_will(V5, "leaver", "will/l", b"on purpose"),
    )
    .await;
    client
        .send(&Packet::Disconnect(Disconnect::new(
            reason::DISCONNECT_WITH_WILL,
        )))
        .await;
    assert_eq!(client.expect_closed().await, vec![]);
    let will = watcher.recv_acked().await;
    assert_eq!(&will.payload[..], b"on purpose");
}

/// MQTT 5.0 §3.1.2.5: the Will is published when the broker closes the connection for a
/// protocol error.
#[tokio::test]
async fn will_is_published_when_the_broker_closes_for_a_protocol_error() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let mut client = connect(&broker, connect_with_will(V5, "bad", "will/bad", b"err")).await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V5, "bad"))))
        .await;
    client.expect_disconnect(reason::PROTOCOL_ERROR).await;
    assert_eq!(&watcher.recv_acked().await.payload[..], b"err");
}

/// MQTT-3.1.4-3 (5.0): when a session is taken over, the old connection's Will (without a
/// delay) is published.
#[tokio::test]
async fn will_is_published_when_the_connection_is_taken_over() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let mut old = connect(&broker, connect_with_will(V5, "twin", "will/twin", b"old")).await;
    let _new = TestClient::v5(broker.addr, "twin").await;
    old.expect_disconnect(reason::SESSION_TAKEN_OVER).await;
    assert_eq!(&watcher.recv_acked().await.payload[..], b"old");
}

/// MQTT 5.0 §3.1.3.2.2: with a Will Delay Interval the Will is published once the delay has
/// passed, not before.
#[tokio::test]
async fn will_with_delay_is_published_after_the_delay() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let request = with_delay(connect_with_will(V5, "later", "will/d", b"late"), 1, 60);
    let client = connect(&broker, request).await;
    let dropped = Instant::now();
    drop(client);
    assert!(
        matches!(
            watcher.recv_within(Duration::from_millis(700)).await,
            Received::Silent
        ),
        "the Will came before its delay (or the watcher was disconnected)"
    );
    let will = watcher.recv_acked().await;
    assert_eq!(&will.payload[..], b"late");
    assert!(dropped.elapsed() >= Duration::from_millis(950));
}

/// MQTT-3.1.3-9 (5.0): a client that resumes its session within the Will Delay Interval
/// cancels the Will.
#[tokio::test]
async fn will_with_delay_is_not_published_if_the_session_resumes_in_time() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let request = with_delay(connect_with_will(V5, "back", "will/b", b"never"), 1, 60);
    let client = connect(&broker, request.clone()).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut resumed = request;
    resumed.clean_start = false;
    resumed.will = None;
    let _back = connect(&broker, resumed).await;
    assert!(
        matches!(
            watcher.recv_within(Duration::from_millis(1500)).await,
            Received::Silent
        ),
        "the Will was published although the session resumed in time (or the watcher was \
         disconnected)"
    );
    assert_eq!(broker.broker.stats().wills_published.get(), 0);
}

/// MQTT-3.1.2-8 (5.0): the Will is published when the delay passes or the session ends,
/// whichever comes first: here the session (expiry 1 s) ends before the 60 s delay.
#[tokio::test]
async fn will_delay_longer_than_the_session_is_cut_short_by_session_end() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let request = with_delay(
        connect_with_will(V5, "ending", "will/e", b"session over"),
        60,
        1,
    );
    let client = connect(&broker, request).await;
    drop(client);
    let will = watcher.recv_acked().await;
    assert_eq!(&will.payload[..], b"session over");
}

/// MQTT-3.1.2-8 (5.0): a clean start on the same client id ends the waiting session, so its
/// delayed Will goes out then, not after the delay.
#[tokio::test]
async fn a_clean_start_ends_the_session_and_publishes_its_waiting_will() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let request = with_delay(connect_with_will(V5, "again", "will/c", b"ended"), 60, 600);
    let client = connect(&broker, request).await;
    drop(client);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(broker.broker.stats().wills_published.get(), 0);
    let _fresh = connect(&broker, connect_packet(V5, "again")).await;
    let will = watcher.recv_acked().await;
    assert_eq!(&will.payload[..], b"ended");
    assert_eq!(broker.broker.expiring_count(), 0);
}

/// MQTT 5.0 §3.1.3.2 and MQTT-3.1.3-10: the Will's properties travel with it: payload format,
/// content type, response topic, correlation data, user properties in order, message expiry.
#[tokio::test]
async fn will_properties_are_passed_through() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let mut request = connect_with_will(V5, "props", "will/props", b"{\"state\":\"lost\"}");
    let properties = &mut request.will.as_mut().unwrap().properties;
    properties.payload_format_indicator = Some(1);
    properties.content_type = Some("application/json".to_string());
    properties.response_topic = Some("reply/here".to_string());
    properties.correlation_data = Some(Bytes::from_static(b"\x00\x01corr"));
    properties.message_expiry_interval = Some(300);
    properties.user_properties = vec![
        ("b".to_string(), "2".to_string()),
        ("a".to_string(), "1".to_string()),
        ("b".to_string(), "3".to_string()),
    ];
    let expected = properties.clone();
    let client = connect(&broker, request).await;
    drop(client);
    let will = watcher.recv_acked().await;
    let got = &will.properties;
    assert_eq!(got.payload_format_indicator, Some(1));
    assert_eq!(got.content_type, expected.content_type);
    assert_eq!(got.response_topic, expected.response_topic);
    assert_eq!(got.correlation_data, expected.correlation_data);
    assert_eq!(got.user_properties, expected.user_properties);
    let expiry = got
        .message_expiry_interval
        .expect("Message Expiry Interval");
    assert!((299..=300).contains(&expiry), "expiry {expiry}");
    assert_eq!(
        got.will_delay_interval, None,
        "the Will Delay is not a PUBLISH property"
    );
}

/// The Will is delivered at the lower of its QoS and the subscription's.
#[tokio::test]
async fn will_qos_is_honoured() {
    let broker = TestBroker::start_default().await;
    let mut qos2 = TestClient::v311(broker.addr, "q2").await;
    qos2.subscribe("will/q", ExactlyOnce).await;
    let mut qos1 = TestClient::v311(broker.addr, "q1").await;
    qos1.subscribe("will/q", AtLeastOnce).await;
    let mut request = connect_with_will(V311, "qos", "will/q", b"q");
    request.will.as_mut().unwrap().qos = ExactlyOnce;
    let client = connect(&broker, request).await;
    drop(client);
    assert_eq!(qos2.recv_acked().await.qos, ExactlyOnce);
    assert_eq!(qos1.recv_acked().await.qos, AtLeastOnce);
}

/// MQTT-3.1.2-17 (3.1.1): a Will with Will Retain is published as a retained message; a later
/// subscriber gets it with RETAIN=1, a current one with RETAIN=0.
#[tokio::test]
async fn will_retain_makes_the_will_a_retained_message() {
    let broker = TestBroker::start_default().await;
    let mut current = TestClient::v311(broker.addr, "current").await;
    current.subscribe("will/r", AtMostOnce).await;
    let mut request = connect_with_will(V311, "ret", "will/r", b"last words");
    request.will.as_mut().unwrap().retain = true;
    let client = connect(&broker, request).await;
    drop(client);
    let live = current.recv_publish().await;
    assert!(!live.retain);

    let mut later = TestClient::v311(broker.addr, "later").await;
    later.subscribe("will/r", AtMostOnce).await;
    let retained = later.recv_publish().await;
    assert!(retained.retain);
    assert_eq!(&retained.payload[..], b"last words");
}

/// MQTT-3.1.2-16 (3.1.1): a Will without Will Retain is not retained.
#[tokio::test]
async fn will_without_retain_is_not_retained() {
    let broker = TestBroker::start_default().await;
    let mut watcher = watcher(&broker, "will/#").await;
    let client = connect(&broker, connect_with_will(V311, "nr", "will/nr", b"x")).await;
    drop(client);
    watcher.recv_acked().await;
    assert_eq!(broker.broker.retained_count(), 0);
}

/// A Will on a `$SYS` topic is refused at CONNECT (clients may not publish there): 5.0
/// CONNACK 0x87 (not authorized).
#[tokio::test]
async fn will_on_a_sys_topic_is_refused_with_0x87() {
    let broker = TestBroker::start_default().await;
    let request = connect_with_will(V5, "sys", "$SYS/fake", b"x");
    let (mut client, connack) = TestClient::connect_with(broker.addr, request).await;
    assert_eq!(connack.code, reason::NOT_AUTHORIZED);
    assert_eq!(client.expect_closed().await, vec![]);
}

/// A Will topic over limits.max_topic_length is refused at CONNECT: 5.0 CONNACK 0x90.
#[tokio::test]
async fn will_topic_over_the_length_limit_is_refused_with_0x90() {
    let broker = TestBroker::start(config_with(|limits| limits.max_topic_length = 8)).await;
    let request = connect_with_will(V5, "long", "will/too/long", b"x");
    let (mut client, connack) = TestClient::connect_with(broker.addr, request).await;
    assert_eq!(connack.code, reason::TOPIC_NAME_INVALID);
    assert_eq!(client.expect_closed().await, vec![]);
}
