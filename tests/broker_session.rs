//! Sessions (MQTT 3.1.1 §3.1.2.4 and §4.1, MQTT 5.0 §3.1.2.4, §3.1.2.11.2 and §4.1): a clean
//! session starts empty and ends with its connection, a persistent one keeps its subscriptions
//! and queues QoS 1/2 messages (not QoS 0) while offline, the Session Present flag says which
//! happened, and a 5.0 session lives for its Session Expiry Interval, which DISCONNECT may
//! change but not from 0.

mod common;

use std::time::Duration;

use common::*;
use supermq::protocol::{ConnAck, Disconnect, Packet, ProtocolVersion, QoS, reason};

use ProtocolVersion::{V5, V311};
use QoS::{AtLeastOnce, AtMostOnce, ExactlyOnce};

async fn v311_session(broker: &TestBroker, id: &str, clean: bool) -> (TestClient, ConnAck) {
    TestClient::connect(broker.addr, V311, id, clean).await
}

/// A 5.0 connection with the given Clean Start and Session Expiry Interval.
async fn v5_session(
    broker: &TestBroker,
    id: &str,
    clean_start: bool,
    expiry: Option<u32>,
) -> (TestClient, ConnAck) {
    let mut connect = connect_packet(V5, id);
    connect.clean_start = clean_start;
    connect.properties.session_expiry_interval = expiry;
    let (client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, 0, "{connack:?}");
    (client, connack)
}

async fn publish(broker: &TestBroker, topic: &str, payload: &[u8], qos: QoS) {
    let mut publisher = TestClient::v311(broker.addr, "publisher").await;
    publisher.publish(topic, payload, qos, false).await;
    publisher.disconnect().await;
}

/// MQTT-3.2.2-1: a clean session always gets Session Present 0.
#[tokio::test]
async fn clean_session_gets_session_present_0() {
    let broker = TestBroker::start_default().await;
    let (first, connack) = v311_session(&broker, "c", false).await;
    first.disconnect().await;
    assert!(!connack.session_present);
    let (_again, connack) = v311_session(&broker, "c", true).await;
    assert!(
        !connack.session_present,
        "a clean session discards the stored one"
    );
}

/// MQTT-3.2.2-3: a persistent session with no stored session gets Session Present 0.
#[tokio::test]
async fn new_persistent_session_gets_session_present_0() {
    let broker = TestBroker::start_default().await;
    let (_client, connack) = v311_session(&broker, "fresh", false).await;
    assert!(!connack.session_present);
}

/// MQTT-3.2.2-2: resuming a stored session gets Session Present 1.
#[tokio::test]
async fn resumed_persistent_session_gets_session_present_1() {
    let broker = TestBroker::start_default().await;
    let (client, _) = v311_session(&broker, "p", false).await;
    client.disconnect().await;
    let (_client, connack) = v311_session(&broker, "p", false).await;
    assert!(connack.session_present);
}

/// MQTT-3.1.2-4: a persistent session keeps its subscriptions; the client gets messages
/// after reconnecting without subscribing again.
#[tokio::test]
async fn persistent_session_keeps_subscriptions() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v311_session(&broker, "keep", false).await;
    client.subscribe("keep/#", AtLeastOnce).await;
    client.disconnect().await;
    let (mut client, connack) = v311_session(&broker, "keep", false).await;
    assert!(connack.session_present);
    publish(&broker, "keep/x", b"still subscribed", AtLeastOnce).await;
    let publish = client.recv_acked().await;
    assert_eq!(&publish.payload[..], b"still subscribed");
}

/// MQTT-3.1.2-5: QoS 1 and QoS 2 messages that arrive while the client is offline are kept
/// and delivered, in order, when the session resumes.
#[tokio::test]
async fn persistent_session_queues_qos1_and_qos2_while_offline() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v311_session(&broker, "offline", false).await;
    client.subscribe("off/#", ExactlyOnce).await;
    client.disconnect().await;
    publish(&broker, "off/1", b"one", AtLeastOnce).await;
    publish(&broker, "off/2", b"two", ExactlyOnce).await;

    let (mut client, connack) = v311_session(&broker, "offline", false).await;
    assert!(connack.session_present);
    let first = client.recv_acked().await;
    assert_eq!((first.topic.as_str(), first.qos), ("off/1", AtLeastOnce));
    let second = client.recv_acked().await;
    assert_eq!((second.topic.as_str(), second.qos), ("off/2", ExactlyOnce));
    client.expect_nothing().await;
}

/// QoS 0 messages are not kept for an offline session (MQTT-3.1.2-5 leaves it optional; the
/// broker does not).
#[tokio::test]
async fn qos0_messages_are_not_queued_while_offline() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v311_session(&broker, "zero", false).await;
    client.subscribe("zero", ExactlyOnce).await;
    client.disconnect().await;
    publish(&broker, "zero", b"lost", AtMostOnce).await;
    publish(&broker, "zero", b"kept", AtLeastOnce).await;

    let (mut client, _) = v311_session(&broker, "zero", false).await;
    let publish = client.recv_acked().await;
    assert_eq!(&publish.payload[..], b"kept");
    client.expect_nothing().await;
}

/// MQTT-3.1.2-6: the state of a clean session ends with its connection: subscriptions made in
/// it are gone, and a later persistent connection finds no session.
#[tokio::test]
async fn clean_session_state_ends_with_the_connection() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v311_session(&broker, "brief", true).await;
    client.subscribe("brief", AtLeastOnce).await;
    client.disconnect().await;
    wait_until("the session is gone", || broker.broker.session_count() == 0).await;
    assert_eq!(broker.broker.subscription_count(), 0);

    let (mut client, connack) = v311_session(&broker, "brief", false).await;
    assert!(!connack.session_present);
    publish(&broker, "brief", b"m", AtLeastOnce).await;
    client.expect_nothing().await;
}

/// MQTT-3.1.2-6: a clean session discards the stored persistent session, its
/// subscriptions and its queued messages.
#[tokio::test]
async fn clean_session_discards_the_stored_session() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v311_session(&broker, "discard", false).await;
    client.subscribe("discard", AtLeastOnce).await;
    client.disconnect().await;
    publish(&broker, "discard", b"queued", AtLeastOnce).await;

    let (mut client, connack) = v311_session(&broker, "discard", true).await;
    assert!(!connack.session_present);
    client.expect_nothing().await; // the queued message went with the session
    publish(&broker, "discard", b"after", AtLeastOnce).await;
    client.expect_nothing().await; // and so did the subscription
    assert_eq!(broker.broker.subscription_count(), 0);
}

/// 5.0 Clean Start 1 discards an existing session too (MQTT-3.1.2-4).
#[tokio::test]
async fn v5_clean_start_discards_the_stored_session() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v5_session(&broker, "cs", false, Some(60)).await;
    client.subscribe("cs", AtLeastOnce).await;
    client.disconnect().await;
    let (mut client, connack) = v5_session(&broker, "cs", true, Some(60)).await;
    assert!(!connack.session_present);
    publish(&broker, "cs", b"m", AtLeastOnce).await;
    client.expect_nothing().await;
}

/// MQTT 5.0 §3.1.2.11.2: within its Session Expiry Interval a session survives the
/// connection: it is resumed with its subscriptions and queued messages.
#[tokio::test]
async fn v5_session_survives_within_its_expiry_interval() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v5_session(&broker, "lives", true, Some(2)).await;
    client.subscribe("lives", AtLeastOnce).await;
    client.disconnect().await;
    publish(&broker, "lives", b"waiting", AtLeastOnce).await;
    let (mut client, connack) = v5_session(&broker, "lives", false, Some(2)).await;
    assert!(connack.session_present);
    assert_eq!(&client.recv_acked().await.payload[..], b"waiting");
}

/// MQTT 5.0 §3.1.2.11.2: once the Session Expiry Interval has passed, the session is
/// gone: a resuming connection gets Session Present 0 and nothing that was queued.
#[tokio::test]
async fn v5_session_expires_after_its_interval() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v5_session(&broker, "expires", true, Some(1)).await;
    client.subscribe("expires", AtLeastOnce).await;
    client.disconnect().await;
    publish(&broker, "expires", b"queued", AtLeastOnce).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(broker.broker.session_count(), 0);
    assert_eq!(broker.broker.subscription_count(), 0);

    let (mut client, connack) = v5_session(&broker, "expires", false, Some(1)).await;
    assert!(!connack.session_present);
    client.expect_nothing().await;
}

/// A 5.0 session with no Session Expiry Interval (0) ends with the connection, even when the
/// client asked not to start clean.
#[tokio::test]
async fn v5_session_without_expiry_ends_with_the_connection() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v5_session(&broker, "zero", false, None).await;
    client.subscribe("zero", AtLeastOnce).await;
    client.disconnect().await;
    let (_client, connack) = v5_session(&broker, "zero", false, None).await;
    assert!(!connack.session_present);
}

/// MQTT-3.14.2-2: a DISCONNECT that sets a Session Expiry Interval when CONNECT had 0 is a
/// protocol error: the broker answers DISCONNECT 0x82.
#[tokio::test]
async fn disconnect_setting_session_expiry_after_zero_is_a_protocol_error() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v5_session(&broker, "sneaky", true, None).await;
    let mut disconnect = Disconnect::new(reason::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(60);
    client.send(&Packet::Disconnect(disconnect)).await;
    client.expect_disconnect(reason::PROTOCOL_ERROR).await;
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
    wait_until("the session is gone", || broker.broker.session_count() == 0).await;
}

/// MQTT 5.0 §3.14.2.2.2: DISCONNECT may lower the Session Expiry Interval to 0, ending the
/// session with the connection.
#[tokio::test]
async fn disconnect_can_end_the_session_by_setting_expiry_0() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v5_session(&broker, "ending", true, Some(60)).await;
    client.subscribe("ending", AtLeastOnce).await;
    let mut disconnect = Disconnect::new(reason::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(0);
    client.send(&Packet::Disconnect(disconnect)).await;
    assert_eq!(client.expect_closed().await, vec![]);
    let (_client, connack) = v5_session(&broker, "ending", false, Some(60)).await;
    assert!(!connack.session_present);
}

/// DISCONNECT may also raise a non-zero Session Expiry Interval: the session then outlives
/// the interval given in CONNECT.
#[tokio::test]
async fn disconnect_can_extend_the_session_expiry() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v5_session(&broker, "longer", true, Some(1)).await;
    let mut disconnect = Disconnect::new(reason::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(60);
    client.send(&Packet::Disconnect(disconnect)).await;
    client.expect_closed().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_client, connack) = v5_session(&broker, "longer", false, Some(1)).await;
    assert!(
        connack.session_present,
        "the session expired after the CONNECT interval"
    );
}

/// limits.max_session_expiry_secs caps the Session Expiry Interval, and the 5.0 CONNACK says
/// what was granted (MQTT 5.0 §3.2.2.3.2).
#[tokio::test]
async fn session_expiry_above_the_limit_is_capped_and_announced() {
    let broker = TestBroker::start(config_with(|limits| limits.max_session_expiry_secs = 1)).await;
    let (mut client, connack) = v5_session(&broker, "capped", true, Some(3600)).await;
    assert_eq!(connack.properties.session_expiry_interval, Some(1));
    client.subscribe("capped", AtLeastOnce).await;
    client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_client, connack) = v5_session(&broker, "capped", false, Some(3600)).await;
    assert!(!connack.session_present, "the session outlived the 1 s cap");
}

/// An expiry within the limit is granted as asked, and not repeated in CONNACK.
#[tokio::test]
async fn session_expiry_within_the_limit_is_not_announced() {
    let broker = TestBroker::start(config_with(|limits| limits.max_session_expiry_secs = 60)).await;
    let (_client, connack) = v5_session(&broker, "fine", true, Some(30)).await;
    assert_eq!(connack.properties.session_expiry_interval, None);
}

/// An abrupt close (no DISCONNECT) keeps a persistent session just like a normal one.
#[tokio::test]
async fn persistent_session_survives_an_abrupt_close() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v311_session(&broker, "abrupt", false).await;
    client.subscribe("abrupt", AtLeastOnce).await;
    drop(client);
    publish(&broker, "abrupt", b"m", AtLeastOnce).await;
    let (mut client, connack) = v311_session(&broker, "abrupt", false).await;
    assert!(connack.session_present);
    assert_eq!(&client.recv_acked().await.payload[..], b"m");
}

/// UNSUBSCRIBE in a persistent session is remembered too.
#[tokio::test]
async fn unsubscribe_in_a_persistent_session_is_remembered() {
    let broker = TestBroker::start_default().await;
    let (mut client, _) = v311_session(&broker, "unsub", false).await;
    client.subscribe("unsub/a", AtLeastOnce).await;
    client.subscribe("unsub/b", AtLeastOnce).await;
    client
        .send(&Packet::Unsubscribe(supermq::protocol::Unsubscribe {
            packet_id: 2,
            filters: vec!["unsub/a".to_string()],
            properties: Default::default(),
        }))
        .await;
    assert!(matches!(client.recv().await, Packet::UnsubAck(_)));
    client.disconnect().await;
    publish(&broker, "unsub/a", b"a", AtLeastOnce).await;
    publish(&broker, "unsub/b", b"b", AtLeastOnce).await;
    let (mut client, _) = v311_session(&broker, "unsub", false).await;
    assert_eq!(&client.recv_acked().await.payload[..], b"b");
    client.expect_nothing().await;
}

/// Expiry costs a disconnected session one entry in the broker's table, not a task, and a
/// resumed session's entry goes at once: reconnecting again and again leaves nothing behind.
#[tokio::test]
async fn reconnecting_again_and_again_leaves_no_expiry_behind() {
    let broker = TestBroker::start_default().await;
    for _ in 0..200 {
        let (client, _) = v5_session(&broker, "churn", false, Some(3600)).await;
        client.disconnect().await;
    }
    wait_until("the last connection is gone", || {
        broker.broker.connection_count() == 0
    })
    .await;
    assert_eq!(broker.broker.expiring_count(), 1);
    let (_back, connack) = v5_session(&broker, "churn", false, Some(3600)).await;
    assert!(connack.session_present);
    assert_eq!(broker.broker.expiring_count(), 0, "resumed: nothing waits");
    assert_eq!(broker.broker.session_count(), 1);
}
