//! CONNECT and the life of a connection (MQTT 3.1.1 §3.1-3.2, MQTT 5.0 §3.1-3.2, §4.12-4.13):
//! which protocol levels are accepted and how the others are refused, client identifiers
//! (empty, assigned, too long), what must come first and only once, session takeover, and
//! extended authentication, which the broker does not support.

mod common;

use std::time::{Duration, Instant};

use common::*;
use supermq::config::Config;
use supermq::protocol::{Auth, Packet, ProtocolVersion, QoS, reason};

use ProtocolVersion::{V5, V31, V311};

/// Proves a connection works: it subscribes, publishes to itself and gets the message back.
async fn round_trip(client: &mut TestClient, topic: &str) {
    let suback = client.subscribe(topic, QoS::AtLeastOnce).await;
    assert_eq!(suback.reasons, vec![1]);
    let publish = client
        .publish_to_self(topic, b"ping", QoS::AtLeastOnce)
        .await;
    assert_eq!(publish.topic, topic);
    assert_eq!(&publish.payload[..], b"ping");
}

#[tokio::test]
async fn mqtt_3_1_level_3_is_accepted() {
    let broker = TestBroker::start_default().await;
    let (mut client, connack) = TestClient::connect(broker.addr, V31, "v31", true).await;
    assert_eq!(connack.code, 0);
    assert!(!connack.session_present);
    round_trip(&mut client, "v31/t").await;
}

#[tokio::test]
async fn mqtt_3_1_1_level_4_is_accepted() {
    let broker = TestBroker::start_default().await;
    let (mut client, connack) = TestClient::connect(broker.addr, V311, "v311", true).await;
    assert_eq!(connack.code, 0);
    assert!(!connack.session_present);
    round_trip(&mut client, "v311/t").await;
}

#[tokio::test]
async fn mqtt_5_level_5_is_accepted() {
    let broker = TestBroker::start_default().await;
    let (mut client, connack) = TestClient::connect(broker.addr, V5, "v5", true).await;
    assert_eq!(connack.code, 0);
    assert!(!connack.session_present);
    round_trip(&mut client, "v5/t").await;
}

/// Sends a raw CONNECT and expects a refusing CONNACK with `code`, then the close.
async fn expect_level_refused(connect: Vec<u8>, read_as: ProtocolVersion, code: u8) {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::open(broker.addr, read_as).await;
    client.send_bytes(&connect).await;
    let packets = client.expect_closed().await;
    match packets.as_slice() {
        [Packet::ConnAck(connack)] => {
            assert_eq!(connack.code, code, "{connack:?}");
            assert!(!connack.session_present, "MQTT-3.2.2-4 / MQTT-3.2.2-6");
        }
        other => panic!("expected exactly one CONNACK then the close, got {other:?}"),
    }
    assert_eq!(broker.broker.stats().connections_refused.get(), 1);
    assert_eq!(broker.broker.stats().connections_accepted.get(), 0);
}

/// MQTT-3.1.2-2: an unsupported level gets CONNACK 0x01 (unacceptable protocol version).
#[tokio::test]
async fn level_2_is_refused_with_v3_connack_0x01() {
    expect_level_refused(raw_connect(b"MQTT", 2, false, "l2"), V311, 0x01).await;
}

/// The 3.1 level with the 3.1.1 protocol name is no protocol we speak either.
#[tokio::test]
async fn mqtt_name_with_level_3_is_refused_with_0x01() {
    expect_level_refused(raw_connect(b"MQTT", 3, false, "l3"), V311, 0x01).await;
}

/// A level above 5 is answered in the 5.0 format, with 0x84 (unsupported protocol version).
#[tokio::test]
async fn level_6_is_refused_with_v5_connack_0x84() {
    expect_level_refused(raw_connect(b"MQTT", 6, true, "l6"), V5, 0x84).await;
}

/// MQTT-3.1.2-1: a protocol name other than `MQTT` (or `MQIsdp`) closes the connection
/// without a CONNACK.
#[tokio::test]
async fn unknown_protocol_name_is_closed_without_connack() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::open(broker.addr, V311).await;
    client
        .send_bytes(&raw_connect(b"MQTX", 4, false, "name"))
        .await;
    assert_eq!(client.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
}

/// MQTT-3.1.3-7 (3.1.1): an empty client id with a clean session is accepted.
#[tokio::test]
async fn empty_client_id_with_clean_session_is_accepted_in_3_1_1() {
    let broker = TestBroker::start_default().await;
    let (mut client, connack) = TestClient::connect(broker.addr, V311, "", true).await;
    assert_eq!(connack.code, 0);
    round_trip(&mut client, "anon/t").await;
}

/// MQTT-3.1.3-8 (3.1.1): an empty client id with a persistent session gets CONNACK 0x02.
#[tokio::test]
async fn empty_client_id_with_persistent_session_is_refused_with_0x02_in_3_1_1() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V311, "");
    connect.clean_start = false;
    let (mut client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, 0x02);
    assert!(!connack.session_present);
    assert_eq!(client.expect_closed().await, vec![]);
}

/// MQTT 3.1 requires a client identifier of at least one character: 0x02.
#[tokio::test]
async fn empty_client_id_is_refused_with_0x02_in_3_1() {
    let broker = TestBroker::start_default().await;
    let (mut client, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V31, "")).await;
    assert_eq!(connack.code, 0x02);
    assert_eq!(client.expect_closed().await, vec![]);
}

/// MQTT-3.2.2-16 (5.0): an empty client id is given an Assigned Client Identifier, unique
/// per connection, which then works like any other id.
#[tokio::test]
async fn empty_client_id_gets_assigned_client_identifier_in_5_0() {
    let broker = TestBroker::start_default().await;
    let (mut first, connack) = TestClient::connect(broker.addr, V5, "", true).await;
    let assigned = connack
        .properties
        .into_values()
        .assigned_client_identifier
        .expect("Assigned Client Identifier in CONNACK");
    assert!(!assigned.is_empty());
    let (_second, connack) = TestClient::connect(broker.addr, V5, "", true).await;
    let other = connack
        .properties
        .into_values()
        .assigned_client_identifier
        .unwrap();
    assert_ne!(assigned, other, "two clients got the same identifier");
    round_trip(&mut first, "assigned/t").await;
}

/// A client that chose its id gets no Assigned Client Identifier.
#[tokio::test]
async fn chosen_client_id_gets_no_assigned_client_identifier() {
    let broker = TestBroker::start_default().await;
    let (_client, connack) = TestClient::connect(broker.addr, V5, "mine", true).await;
    assert_eq!(connack.properties.assigned_client_identifier, None);
}

fn short_client_ids() -> Config {
    config_with(|limits| limits.max_client_id_length = 8)
}

/// limits.max_client_id_length: one byte more → 3.1.1 CONNACK 0x02 (identifier rejected).
#[tokio::test]
async fn client_id_longer_than_limit_is_refused_with_0x02_in_3_1_1() {
    let broker = TestBroker::start(short_client_ids()).await;
    let (mut client, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V311, "123456789")).await;
    assert_eq!(connack.code, 0x02);
    assert_eq!(client.expect_closed().await, vec![]);
}

/// limits.max_client_id_length: one byte more → 5.0 CONNACK 0x85 (client id not valid).
#[tokio::test]
async fn client_id_longer_than_limit_is_refused_with_0x85_in_5_0() {
    let broker = TestBroker::start(short_client_ids()).await;
    let (mut client, connack) =
        TestClient::connect_with(broker.addr, connect_packet(V5, "123456789")).await;
    assert_eq!(connack.code, reason::CLIENT_IDENTIFIER_NOT_VALID);
    assert_eq!(client.expect_closed().await, vec![]);
}

/// The limit itself is allowed.
#[tokio::test]
async fn client_id_of_exactly_the_limit_is_accepted() {
    let broker = TestBroker::start(short_client_ids()).await;
    let (mut client, _) = TestClient::connect(broker.addr, V5, "12345678", true).await;
    round_trip(&mut client, "limit/t").await;
}

/// MQTT-3.1.0-1: the first packet must be CONNECT; anything else closes the connection.
#[tokio::test]
async fn first_packet_not_connect_closes_the_connection() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::open(broker.addr, V311).await;
    client.send_bytes(&[0xC0, 0x00]).await; // PINGREQ
    assert_eq!(client.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
}

/// A PUBLISH before CONNECT is not routed, not even to an existing subscriber.
#[tokio::test]
async fn publish_before_connect_is_not_routed() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v311(broker.addr, "sub").await;
    subscriber.subscribe("early", QoS::AtMostOnce).await;
    let mut client = TestClient::open(broker.addr, V311).await;
    let mut body = raw_string(b"early");
    body.extend_from_slice(b"payload");
    client.send_bytes(&raw_packet(0x30, &body)).await;
    assert_eq!(client.expect_closed().await, vec![]);
    subscriber.expect_nothing().await;
}

/// MQTT-3.1.0-2: a second CONNECT is a protocol error; 5.0 gets DISCONNECT 0x82.
#[tokio::test]
async fn second_connect_gets_disconnect_0x82_in_5_0() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "twice").await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V5, "twice"))))
        .await;
    client.expect_disconnect(reason::PROTOCOL_ERROR).await;
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
}

/// MQTT-3.1.0-2 (3.1.1): a second CONNECT closes the connection.
#[tokio::test]
async fn second_connect_closes_the_connection_in_3_1_1() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v311(broker.addr, "twice").await;
    client
        .send(&Packet::Connect(Box::new(connect_packet(V311, "twice"))))
        .await;
    assert_eq!(client.expect_closed().await, vec![]);
}

/// MQTT-3.1.4-3 (5.0): a second connection with the same client id takes the session over;
/// the first gets DISCONNECT 0x8E and is closed, the second works.
#[tokio::test]
async fn takeover_sends_disconnect_0x8e_to_the_old_connection_in_5_0() {
    let broker = TestBroker::start_default().await;
    let mut old = TestClient::v5(broker.addr, "same").await;
    let mut new = TestClient::v5(broker.addr, "same").await;
    old.expect_disconnect(reason::SESSION_TAKEN_OVER).await;
    round_trip(&mut new, "takeover/t").await;
    assert_eq!(broker.broker.session_count(), 1);
}

/// MQTT-3.1.4-2 (3.1.1): the existing client is disconnected, the new one works.
#[tokio::test]
async fn takeover_closes_the_old_connection_in_3_1_1() {
    let broker = TestBroker::start_default().await;
    let mut old = TestClient::v311(broker.addr, "same").await;
    let mut new = TestClient::v311(broker.addr, "same").await;
    assert_eq!(old.expect_closed().await, vec![]);
    round_trip(&mut new, "takeover/t").await;
}

/// Takeover across versions: a 3.1.1 connection takes over a 5.0 client's id.
#[tokio::test]
async fn takeover_works_across_protocol_versions() {
    let broker = TestBroker::start_default().await;
    let mut old = TestClient::v5(broker.addr, "mixed").await;
    let mut new = TestClient::v311(broker.addr, "mixed").await;
    old.expect_disconnect(reason::SESSION_TAKEN_OVER).await;
    round_trip(&mut new, "mixed/t").await;
}

/// After a takeover, messages go to the new connection only.
#[tokio::test]
async fn after_takeover_messages_go_to_the_new_connection() {
    let broker = TestBroker::start_default().await;
    let (mut old, _) = TestClient::connect(broker.addr, V311, "moving", false).await;
    old.subscribe("moving/t", QoS::AtLeastOnce).await;
    let (mut new, connack) = TestClient::connect(broker.addr, V311, "moving", false).await;
    assert!(connack.session_present);
    old.expect_closed().await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    publisher
        .publish("moving/t", b"m", QoS::AtLeastOnce, false)
        .await;
    let publish = new.recv_acked().await;
    assert_eq!(&publish.payload[..], b"m");
}

/// MQTT-4.12.0-1: the broker supports no extended authentication, so a CONNECT with an
/// Authentication Method gets CONNACK 0x8C (bad authentication method) and the close.
#[tokio::test]
async fn connect_with_authentication_method_is_refused_with_0x8c() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "auth");
    connect.properties.authentication_method = Some("SCRAM-SHA-1".to_string());
    let (mut client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, reason::BAD_AUTHENTICATION_METHOD);
    assert!(!connack.session_present);
    assert_eq!(client.expect_closed().await, vec![]);
}

/// An AUTH packet after CONNECT (re-authentication) gets DISCONNECT 0x8C.
#[tokio::test]
async fn auth_packet_after_connect_gets_disconnect_0x8c() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "reauth").await;
    let mut auth = Auth {
        reason: reason::REAUTHENTICATE,
        ..Auth::default()
    };
    auth.properties.authentication_method = Some("SCRAM-SHA-1".to_string());
    client.send(&Packet::Auth(auth)).await;
    client
        .expect_disconnect(reason::BAD_AUTHENTICATION_METHOD)
        .await;
}

/// A 5.0 CONNACK tells the client the broker's limits up front.
#[tokio::test]
async fn v5_connack_announces_the_broker_limits() {
    let broker = TestBroker::start(config_with(|limits| {
        limits.max_inflight = 7;
        limits.max_packet_size = 4096;
        limits.max_topic_aliases = 5;
    }))
    .await;
    let (_client, connack) = TestClient::connect(broker.addr, V5, "limits", true).await;
    let p = &connack.properties;
    assert_eq!(p.receive_maximum, Some(7));
    assert_eq!(p.maximum_packet_size, Some(4096));
    assert_eq!(p.topic_alias_maximum, Some(5));
    // Absent means available: consumer groups ($share/) are supported.
    assert_eq!(p.shared_subscription_available, None);
}

/// limits.connect_timeout_secs: a connection that sends nothing is closed after the timeout,
/// not before.
#[tokio::test]
async fn no_connect_within_connect_timeout_closes_the_connection() {
    let broker = TestBroker::start(config_with(|limits| limits.connect_timeout_secs = 1)).await;
    let started = Instant::now();
    let mut client = TestClient::open(broker.addr, V311).await;
    assert_eq!(client.expect_closed().await, vec![]);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "closed after {waited:?}, before the 1 s connect timeout"
    );
}

/// A CONNECT sent in part, and then no more, is no way around the connect timeout.
#[tokio::test]
async fn partial_connect_is_closed_at_the_connect_timeout() {
    let broker = TestBroker::start(config_with(|limits| limits.connect_timeout_secs = 1)).await;
    let mut client = TestClient::open(broker.addr, V311).await;
    let connect = raw_connect(b"MQTT", 4, false, "slow");
    client.send_bytes(&connect[..5]).await;
    assert_eq!(client.expect_closed().await, vec![]);
    wait_until("the connection is no longer counted", || {
        broker.broker.connection_count() == 0
    })
    .await;
}
