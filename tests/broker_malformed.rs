//! Malformed packets and protocol errors, sent as raw bytes (MQTT 3.1.1 §4.8, MQTT 5.0 §4.13):
//! each bad input closes the offending connection — a 5.0 client first gets DISCONNECT with
//! 0x81 (malformed packet), 0x82 (protocol error) or the more precise code the specification
//! gives — counts one protocol error, and leaves every other client untouched: two bystanders
//! keep publishing and receiving the whole time.

mod common;

use std::time::Duration;

use common::*;
use supermq::protocol::{ProtocolVersion, QoS, reason};

use ProtocolVersion::{V5, V311};

const MALFORMED: u8 = reason::MALFORMED_PACKET;
const PROTOCOL: u8 = reason::PROTOCOL_ERROR;

/// Two clients exchanging QoS 1 messages while a third misbehaves.
struct Bystanders {
    subscriber: TestClient,
    publishing: tokio::task::JoinHandle<TestClient>,
}

const BYSTANDER_MESSAGES: u8 = 10;

impl Bystanders {
    async fn start(broker: &TestBroker) -> Bystanders {
        let mut subscriber = TestClient::v5(broker.addr, "bystander-sub").await;
        subscriber.subscribe("bystander", QoS::AtLeastOnce).await;
        let mut publisher = TestClient::v311(broker.addr, "bystander-pub").await;
        let publishing = tokio::spawn(async move {
            for i in 0..BYSTANDER_MESSAGES {
                let ack = publisher
                    .publish("bystander", &[i], QoS::AtLeastOnce, false)
                    .await;
                assert_eq!(ack, 0);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            publisher
        });
        Bystanders {
            subscriber,
            publishing,
        }
    }

    /// Every message published during the test arrived, in order, and both bystanders still
    /// work afterwards.
    async fn check(mut self) {
        let mut publisher = self.publishing.await.expect("bystander publisher");
        for i in 0..BYSTANDER_MESSAGES {
            let publish = self.subscriber.recv_acked().await;
            assert_eq!(&publish.payload[..], &[i], "bystander message {i}");
        }
        publisher
            .publish("bystander", b"after", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(&self.subscriber.recv_acked().await.payload[..], b"after");
    }
}

/// Connects a `version` client, sends `bytes`, and checks the close (after DISCONNECT `code`
/// for 5.0), the protocol error count, and the bystanders.
async fn assert_rejected(version: ProtocolVersion, bytes: &[u8], code: u8) {
    let broker = TestBroker::start_default().await;
    let bystanders = Bystanders::start(&broker).await;
    let (mut bad, _) = TestClient::connect(broker.addr, version, "bad", true).await;
    bad.send_bytes(bytes).await;
    let before = bad.expect_disconnect(code).await;
    assert_eq!(before, vec![], "nothing but the DISCONNECT was expected");
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
    bystanders.check().await;
}

/// Sends `bytes` as the first packet of a connection and checks it is closed without any
/// answer, counted, and that the bystanders are unaffected.
async fn assert_connect_rejected(bytes: &[u8]) {
    let broker = TestBroker::start_default().await;
    let bystanders = Bystanders::start(&broker).await;
    let mut bad = TestClient::open(broker.addr, V311).await;
    bad.send_bytes(bytes).await;
    assert_eq!(bad.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
    assert_eq!(broker.broker.stats().connections_accepted.get(), 2);
    bystanders.check().await;
}

/// A v5 PUBLISH body: topic, packet id (QoS > 0), properties, payload.
fn publish_body(
    topic: &[u8],
    packet_id: Option<u16>,
    properties: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut body = raw_string(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.push(u8::try_from(properties.len()).unwrap());
    body.extend_from_slice(properties);
    body.extend_from_slice(payload);
    body
}

/// A v3.1.1 PUBLISH body: topic, packet id (QoS > 0), payload.
fn publish_body_v3(topic: &[u8], packet_id: Option<u16>, payload: &[u8]) -> Vec<u8> {
    let mut body = raw_string(topic);
    if let Some(id) = packet_id {
        body.extend_from_slice(&id.to_be_bytes());
    }
    body.extend_from_slice(payload);
    body
}

/// A v5 SUBSCRIBE body: packet id, properties, then (filter, options) pairs.
fn subscribe_body(packet_id: u16, properties: &[u8], filters: &[(&[u8], u8)]) -> Vec<u8> {
    let mut body = packet_id.to_be_bytes().to_vec();
    body.push(u8::try_from(properties.len()).unwrap());
    body.extend_from_slice(properties);
    for (filter, options) in filters {
        body.extend_from_slice(&raw_string(filter));
        body.push(*options);
    }
    body
}

// --- Fixed header ---------------------------------------------------------------------------

/// MQTT-2.2.2-1/2 (5.0 §2.1.3): SUBSCRIBE must have flags 0010; 0000 is malformed.
#[tokio::test]
async fn subscribe_with_wrong_fixed_header_flags_is_malformed() {
    let body = subscribe_body(1, &[], &[(b"t", 0)]);
    assert_rejected(V5, &raw_packet(0x80, &body), MALFORMED).await;
}

/// MQTT-2.2.2-2: PUBREL must have flags 0010.
#[tokio::test]
async fn pubrel_with_wrong_fixed_header_flags_is_malformed() {
    assert_rejected(V5, &raw_packet(0x60, &[0, 1]), MALFORMED).await;
}

/// MQTT-2.2.2-2: PINGREQ must have flags 0000.
#[tokio::test]
async fn pingreq_with_a_flag_set_is_malformed() {
    assert_rejected(V5, &[0xC1, 0x00], MALFORMED).await;
}

/// The same in 3.1.1: the connection is closed (MQTT-2.2.2-2).
#[tokio::test]
async fn wrong_fixed_header_flags_close_a_3_1_1_connection() {
    let mut subscribe = 1u16.to_be_bytes().to_vec();
    subscribe.extend_from_slice(&raw_string(b"t"));
    subscribe.push(0);
    assert_rejected(V311, &raw_packet(0x80, &subscribe), MALFORMED).await;
}

/// Packet type 0 is reserved (MQTT 5.0 §2.1.2).
#[tokio::test]
async fn reserved_packet_type_0_is_malformed() {
    assert_rejected(V5, &[0x00, 0x00], MALFORMED).await;
}

/// AUTH does not exist before 5.0: packet type 15 on a 3.1.1 connection closes it.
#[tokio::test]
async fn auth_packet_closes_a_3_1_1_connection() {
    assert_rejected(V311, &[0xF0, 0x00], MALFORMED).await;
}

/// MQTT 5.0 §1.5.5 / 3.1.1 §2.2.3: the remaining length has at most four bytes; a fifth
/// continuation byte is malformed.
#[tokio::test]
async fn remaining_length_of_five_bytes_is_malformed() {
    assert_rejected(V5, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], MALFORMED).await;
}

/// The same in 3.1.1.
#[tokio::test]
async fn remaining_length_of_five_bytes_closes_a_3_1_1_connection() {
    assert_rejected(V311, &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01], MALFORMED).await;
}

/// MQTT-1.5.5-1: a variable byte integer must use the fewest bytes (0x80 0x00 encodes 0).
#[tokio::test]
async fn non_minimal_remaining_length_is_malformed() {
    assert_rejected(V5, &[0xC0, 0x80, 0x00], MALFORMED).await;
}

/// A packet whose fields end before its remaining length does is malformed.
#[tokio::test]
async fn trailing_bytes_after_a_packet_are_malformed() {
    assert_rejected(V5, &[0xC0, 0x01, 0x00], MALFORMED).await;
}

/// A field that runs past the end of the packet is malformed.
#[tokio::test]
async fn field_longer_than_its_packet_is_malformed() {
    // PUBLISH of 3 bytes whose topic claims 50.
    assert_rejected(V5, &[0x30, 0x03, 0x00, 0x32, b'a'], MALFORMED).await;
}

// --- PUBLISH --------------------------------------------------------------------------------

/// MQTT-3.3.1-4: a PUBLISH with both QoS bits set is malformed.
#[tokio::test]
async fn publish_with_qos_3_is_malformed() {
    let body = publish_body(b"t", Some(1), &[], b"x");
    assert_rejected(V5, &raw_packet(0x36, &body), MALFORMED).await;
}

/// The same in 3.1.1.
#[tokio::test]
async fn publish_with_qos_3_closes_a_3_1_1_connection() {
    let body = publish_body_v3(b"t", Some(1), b"x");
    assert_rejected(V311, &raw_packet(0x36, &body), MALFORMED).await;
}

/// MQTT-3.3.1-2: DUP must be 0 at QoS 0.
#[tokio::test]
async fn publish_with_dup_at_qos_0_is_malformed() {
    let body = publish_body(b"t", None, &[], b"x");
    assert_rejected(V5, &raw_packet(0x38, &body), MALFORMED).await;
}

/// MQTT-1.5.4-1: a topic that is not valid UTF-8 is malformed.
#[tokio::test]
async fn publish_topic_with_invalid_utf8_is_malformed() {
    let body = publish_body(&[b'a', 0xC3, 0x28], None, &[], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), MALFORMED).await;
}

/// The same in 3.1.1 (MQTT-1.5.3-1).
#[tokio::test]
async fn publish_topic_with_invalid_utf8_closes_a_3_1_1_connection() {
    let body = publish_body_v3(&[0xFF, 0xFE], None, b"x");
    assert_rejected(V311, &raw_packet(0x30, &body), MALFORMED).await;
}

/// MQTT-1.5.4-2: U+0000 in a string is malformed.
#[tokio::test]
async fn publish_topic_with_a_null_character_is_malformed() {
    let body = publish_body(b"a\0b", None, &[], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), MALFORMED).await;
}

/// MQTT-1.5.4-1: UTF-16 surrogate code points (U+D800, encoded ED A0 80) are not valid UTF-8.
#[tokio::test]
async fn publish_topic_with_a_surrogate_is_malformed() {
    let body = publish_body(&[b'a', 0xED, 0xA0, 0x80], None, &[], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), MALFORMED).await;
}

/// MQTT-3.3.2-2: a topic name must not hold wildcards. The codec answers 0x90 (topic name
/// invalid), a DISCONNECT code that names the fault exactly; 0x81/0x82 would be the generic
/// alternatives (the specification gives no code for this rule).
#[tokio::test]
async fn publish_topic_with_plus_wildcard_is_refused() {
    let body = publish_body(b"a/+", None, &[], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), reason::TOPIC_NAME_INVALID).await;
}

/// MQTT-3.3.2-2, with `#`.
#[tokio::test]
async fn publish_topic_with_hash_wildcard_is_refused() {
    let body = publish_body(b"a/#", Some(1), &[], b"x");
    assert_rejected(V5, &raw_packet(0x32, &body), reason::TOPIC_NAME_INVALID).await;
}

/// MQTT-3.3.2-2 in 3.1.1: the connection is closed.
#[tokio::test]
async fn publish_topic_with_wildcard_closes_a_3_1_1_connection() {
    let body = publish_body_v3(b"#", None, b"x");
    assert_rejected(V311, &raw_packet(0x30, &body), MALFORMED).await;
}

/// MQTT 5.0 §3.3.2.1: an empty topic without a Topic Alias is a protocol error.
#[tokio::test]
async fn publish_with_empty_topic_and_no_alias_is_a_protocol_error() {
    let body = publish_body(b"", None, &[], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), PROTOCOL).await;
}

/// MQTT-2.2.1-3 (2.3.1-1 in 3.1.1): a QoS 1 PUBLISH needs a non-zero packet id.
#[tokio::test]
async fn publish_with_packet_id_0_is_a_protocol_error() {
    let body = publish_body(b"t", Some(0), &[], b"x");
    assert_rejected(V5, &raw_packet(0x32, &body), PROTOCOL).await;
}

/// MQTT 5.0 §2.2.2.2: a property given twice where only one is allowed is a protocol error
/// (here Payload Format Indicator).
#[tokio::test]
async fn duplicate_property_is_a_protocol_error() {
    let body = publish_body(b"t", None, &[0x01, 0x00, 0x01, 0x01], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), PROTOCOL).await;
}

/// MQTT 5.0 §2.2.2.2: an identifier that is not a property is malformed.
#[tokio::test]
async fn unknown_property_is_malformed() {
    let body = publish_body(b"t", None, &[0x7F, 0x00], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), MALFORMED).await;
}

/// MQTT 5.0 §2.2.2.2: a property not valid for the packet type (Session Expiry Interval in
/// PUBLISH) is malformed.
#[tokio::test]
async fn property_not_allowed_in_the_packet_is_malformed() {
    let body = publish_body(b"t", None, &[0x11, 0, 0, 0, 10], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), MALFORMED).await;
}

/// MQTT-3.3.4-6: a PUBLISH from a client must not carry a Subscription Identifier.
#[tokio::test]
async fn publish_with_a_subscription_identifier_is_a_protocol_error() {
    let body = publish_body(b"t", None, &[0x0B, 0x05], b"x");
    assert_rejected(V5, &raw_packet(0x30, &body), PROTOCOL).await;
}

// --- SUBSCRIBE and UNSUBSCRIBE ----------------------------------------------------------------

/// MQTT-3.8.3-2 (5.0) / MQTT-3.8.3-3 (3.1.1): SUBSCRIBE must hold at least one filter.
#[tokio::test]
async fn subscribe_without_filters_is_a_protocol_error() {
    assert_rejected(
        V5,
        &raw_packet(0x82, &subscribe_body(1, &[], &[])),
        PROTOCOL,
    )
    .await;
}

/// The same in 3.1.1: the connection is closed.
#[tokio::test]
async fn subscribe_without_filters_closes_a_3_1_1_connection() {
    assert_rejected(V311, &raw_packet(0x82, &[0, 1]), PROTOCOL).await;
}

/// MQTT-3.10.3-2: UNSUBSCRIBE must hold at least one filter.
#[tokio::test]
async fn unsubscribe_without_filters_is_a_protocol_error() {
    assert_rejected(V5, &raw_packet(0xA2, &[0, 1, 0]), PROTOCOL).await;
}

/// MQTT-3.8.3-5 (5.0): reserved bits 6-7 of the subscription options must be 0.
#[tokio::test]
async fn subscription_options_with_reserved_bits_are_malformed() {
    let body = subscribe_body(1, &[], &[(b"t", 0xC0)]);
    assert_rejected(V5, &raw_packet(0x82, &body), MALFORMED).await;
}

/// MQTT-3.8.3-4 (3.1.1): the upper six bits of the requested QoS byte must be 0.
#[tokio::test]
async fn subscription_options_with_reserved_bits_close_a_3_1_1_connection() {
    let mut body = 1u16.to_be_bytes().to_vec();
    body.extend_from_slice(&raw_string(b"t"));
    body.push(0x04); // No Local does not exist in 3.1.1
    assert_rejected(V311, &raw_packet(0x82, &body), MALFORMED).await;
}

/// MQTT 5.0 §3.8.3.1: a Maximum QoS of 3 is a protocol error.
#[tokio::test]
async fn subscription_with_qos_3_is_a_protocol_error() {
    let body = subscribe_body(1, &[], &[(b"t", 0x03)]);
    assert_rejected(V5, &raw_packet(0x82, &body), PROTOCOL).await;
}

/// MQTT 5.0 §3.8.3.1: Retain Handling 3 is a protocol error.
#[tokio::test]
async fn subscription_with_retain_handling_3_is_a_protocol_error() {
    let body = subscribe_body(1, &[], &[(b"t", 0x30)]);
    assert_rejected(V5, &raw_packet(0x82, &body), PROTOCOL).await;
}

/// MQTT 5.0 §3.8.2.1.2: a Subscription Identifier of 0 is a protocol error.
#[tokio::test]
async fn subscription_identifier_0_is_a_protocol_error() {
    let body = subscribe_body(1, &[0x0B, 0x00], &[(b"t", 0)]);
    assert_rejected(V5, &raw_packet(0x82, &body), PROTOCOL).await;
}

/// MQTT-1.5.4-1 applies to filters too.
#[tokio::test]
async fn subscribe_filter_with_invalid_utf8_is_malformed() {
    let body = subscribe_body(1, &[], &[(&[0xC0, 0xAF], 0)]);
    assert_rejected(V5, &raw_packet(0x82, &body), MALFORMED).await;
}

// --- Packets a client may not send ----------------------------------------------------------

/// CONNACK is sent by servers only: from a client it is a protocol error.
#[tokio::test]
async fn connack_from_a_client_is_a_protocol_error() {
    assert_rejected(V5, &[0x20, 0x03, 0x00, 0x00, 0x00], PROTOCOL).await;
}

/// SUBACK is sent by servers only.
#[tokio::test]
async fn suback_from_a_client_is_a_protocol_error() {
    assert_rejected(V5, &[0x90, 0x04, 0x00, 0x01, 0x00, 0x00], PROTOCOL).await;
}

// --- Malformed CONNECT ------------------------------------------------------------------------

/// MQTT-3.1.2-3: the reserved CONNECT flag must be 0.
#[tokio::test]
async fn connect_with_the_reserved_flag_is_closed_without_connack() {
    let mut connect = raw_connect(b"MQTT", 4, false, "r");
    connect[9] |= 0x01; // flags byte: 2 (header) + 6 (name) + 1 (level)
    assert_connect_rejected(&connect).await;
}

/// MQTT-3.1.2-11/13: Will QoS and Will Retain must be 0 without the Will Flag.
#[tokio::test]
async fn connect_with_will_qos_but_no_will_is_closed_without_connack() {
    let mut connect = raw_connect(b"MQTT", 4, false, "w");
    connect[9] |= 0x08; // Will QoS 1
    assert_connect_rejected(&connect).await;
}

/// MQTT-3.1.2-22 (3.1.1): a password without a user name is not allowed.
#[tokio::test]
async fn connect_with_password_but_no_user_name_is_closed_in_3_1_1() {
    let mut body = raw_string(b"MQTT");
    body.extend_from_slice(&[4, 0x42, 0, 60]); // clean session + password flag
    body.extend_from_slice(&raw_string(b"pw"));
    body.extend_from_slice(&raw_string(b"secret"));
    assert_connect_rejected(&raw_packet(0x10, &body)).await;
}

/// MQTT-3.1.2-14 (3.1.1): Will QoS 3 is malformed.
#[tokio::test]
async fn connect_with_will_qos_3_is_closed_without_connack() {
    let mut body = raw_string(b"MQTT");
    body.extend_from_slice(&[4, 0x1E, 0, 60]); // clean, will flag, will QoS 3
    body.extend_from_slice(&raw_string(b"wq"));
    body.extend_from_slice(&raw_string(b"will/t"));
    body.extend_from_slice(&raw_string(b"x"));
    assert_connect_rejected(&raw_packet(0x10, &body)).await;
}

/// MQTT 5.0 §3.1.2.11.3: a Receive Maximum of 0 is a protocol error.
#[tokio::test]
async fn connect_with_receive_maximum_0_is_closed_without_connack() {
    let mut body = raw_string(b"MQTT");
    body.extend_from_slice(&[5, 0x02, 0, 60, 3, 0x21, 0, 0]);
    body.extend_from_slice(&raw_string(b"rm"));
    assert_connect_rejected(&raw_packet(0x10, &body)).await;
}

/// A client id that is not valid UTF-8 is malformed.
#[tokio::test]
async fn connect_with_invalid_utf8_client_id_is_closed_without_connack() {
    let mut body = raw_string(b"MQTT");
    body.extend_from_slice(&[4, 0x02, 0, 60]);
    body.extend_from_slice(&raw_string(&[0xFF]));
    assert_connect_rejected(&raw_packet(0x10, &body)).await;
}

/// A Will topic with a wildcard is refused before anything else happens.
#[tokio::test]
async fn connect_with_wildcard_will_topic_is_closed_without_connack() {
    let mut body = raw_string(b"MQTT");
    body.extend_from_slice(&[4, 0x06, 0, 60]); // clean, will flag, will QoS 0
    body.extend_from_slice(&raw_string(b"ww"));
    body.extend_from_slice(&raw_string(b"will/#"));
    body.extend_from_slice(&raw_string(b"x"));
    assert_connect_rejected(&raw_packet(0x10, &body)).await;
}

/// Several malformed clients at once, each closed, none disturbing the bystanders or each
/// other's count.
#[tokio::test]
async fn many_malformed_clients_at_once_leave_the_broker_working() {
    let broker = TestBroker::start_default().await;
    let bystanders = Bystanders::start(&broker).await;
    let mut bad = Vec::new();
    for i in 0..10 {
        let (mut client, _) = TestClient::connect(broker.addr, V5, &format!("bad{i}"), true).await;
        client.send_bytes(&[0x36, 0x00]).await;
        bad.push(client);
    }
    for client in &mut bad {
        client.expect_disconnect(MALFORMED).await;
    }
    assert_eq!(broker.broker.stats().protocol_errors.get(), 10);
    bystanders.check().await;
}
