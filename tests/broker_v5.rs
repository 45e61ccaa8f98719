//! What MQTT 5.0 adds to publishing (MQTT 5.0 §3.3.2.3, §3.8.3.1, §3.1.2.11, §3.4.2.1):
//! properties passed through unchanged, Message Expiry counted down while queued, topic aliases
//! from the client and to it, Subscription Identifiers, No Local, the client's Maximum Packet Size,
//! Request Problem Information, "no matching subscribers", and PUBREC with an error code.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use supermq::protocol::{
    Ack, Packet, Properties, PropertyValues, ProtocolVersion, QoS, SubscriptionOptions, reason,
};

use ProtocolVersion::V5;
use QoS::{AtLeastOnce, AtMostOnce, ExactlyOnce};

/// A v5 subscriber on `filter` and a v5 publisher.
async fn pair(broker: &TestBroker, filter: &str) -> (TestClient, TestClient) {
    let mut subscriber = TestClient::v5(broker.addr, "sub").await;
    subscriber.subscribe(filter, ExactlyOnce).await;
    let publisher = TestClient::v5(broker.addr, "pub").await;
    (subscriber, publisher)
}

/// MQTT-3.3.2-4, -15, -16, -17, -18 and -20: payload format indicator, response topic,
/// correlation data, user properties (order and repeats kept) and content type reach the
/// subscriber unchanged.
#[tokio::test]
async fn publish_properties_are_passed_through_unchanged() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "props").await;
    let mut publish = publish_packet("props", "héllo".as_bytes(), AtLeastOnce, false, 1);
    let properties = &mut publish.properties;
    properties.payload_format_indicator = Some(1);
    properties.content_type = Some("text/plain; charset=utf-8".to_string());
    properties.response_topic = Some("reply/to/me".to_string());
    properties.correlation_data = Some(Bytes::from_static(&[0, 1, 2, 0xFF]));
    properties.user_properties = vec![
        ("z".to_string(), "last".to_string()),
        ("a".to_string(), "first".to_string()),
        ("z".to_string(), "again".to_string()),
        ("".to_string(), "".to_string()),
    ];
    let sent = publish.properties.clone();
    publisher.publish_qos1(publish).await;
    let got = subscriber.recv_acked().await;
    assert_eq!(got.properties, sent);
    assert_eq!(got.payload, "héllo".as_bytes());
}

/// A 3.1.1 subscriber gets the payload of a 5.0 message with properties (which it cannot
/// receive) left out.
#[tokio::test]
async fn properties_are_left_out_for_a_3_1_1_subscriber() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v311(broker.addr, "old").await;
    subscriber.subscribe("mixed", AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "new").await;
    let mut publish = publish_packet("mixed", b"body", AtLeastOnce, false, 1);
    publish.properties.user_properties = vec![("k".to_string(), "v".to_string())];
    publish.properties.content_type = Some("x".to_string());
    publisher.publish_qos1(publish).await;
    let got = subscriber.recv_acked().await;
    assert_eq!(&got.payload[..], b"body");
    assert_eq!(got.properties, Properties::default());
}

/// Puts a persistent 5.0 session for `id` on `filter` offline.
async fn offline_session(broker: &TestBroker, id: &str, filter: &str) {
    let mut connect = connect_packet(V5, id);
    connect.properties.session_expiry_interval = Some(60);
    let (mut client, _) = TestClient::connect_with(broker.addr, connect).await;
    client.subscribe(filter, AtLeastOnce).await;
    client.disconnect().await;
}

async fn resume_session(broker: &TestBroker, id: &str) -> TestClient {
    let mut connect = connect_packet(V5, id);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(60);
    let (client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert!(connack.session_present);
    client
}

async fn publish_with_expiry(
    broker: &TestBroker,
    topic: &str,
    payload: &[u8],
    expiry: Option<u32>,
) {
    let mut publisher = TestClient::v5(broker.addr, "expiring").await;
    let mut publish = publish_packet(topic, payload, AtLeastOnce, false, 1);
    publish.properties.message_expiry_interval = expiry;
    publisher.publish_qos1(publish).await;
    publisher.disconnect().await;
}

/// MQTT-3.3.2-5: a message queued for an offline session longer than its Message Expiry
/// Interval is not delivered; messages without expiry still are.
#[tokio::test]
async fn message_expired_while_queued_is_not_delivered() {
    let broker = TestBroker::start_default().await;
    offline_session(&broker, "late", "exp/#").await;
    publish_with_expiry(&broker, "exp/short", b"expired", Some(1)).await;
    publish_with_expiry(&broker, "exp/none", b"forever", None).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut client = resume_session(&broker, "late").await;
    let got = client.recv_acked().await;
    assert_eq!(got.topic, "exp/none");
    assert_eq!(got.properties.message_expiry_interval, None);
    client.expect_nothing().await;
    assert_eq!(broker.broker.stats().dropped_expired.get(), 1);
}

/// MQTT-3.3.2-6: a message delivered after waiting carries the Message Expiry Interval minus
/// the time it waited.
#[tokio::test]
async fn message_expiry_is_counted_down_while_queued() {
    let broker = TestBroker::start_default().await;
    offline_session(&broker, "waiting", "exp/#").await;
    publish_with_expiry(&broker, "exp/long", b"still good", Some(3)).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut client = resume_session(&broker, "waiting").await;
    let got = client.recv_acked().await;
    assert_eq!(&got.payload[..], b"still good");
    let left = got.properties.message_expiry_interval.expect("expiry");
    assert!(
        (1..=2).contains(&left),
        "Message Expiry Interval {left} after waiting 1.2 s of 3 s"
    );
}

/// A message delivered at once keeps (about) its full Message Expiry Interval.
#[tokio::test]
async fn message_expiry_is_passed_to_an_online_subscriber() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v5(broker.addr, "now").await;
    subscriber.subscribe("exp/now", AtLeastOnce).await;
    publish_with_expiry(&broker, "exp/now", b"m", Some(60)).await;
    let got = subscriber.recv_acked().await;
    let left = got.properties.message_expiry_interval.expect("expiry");
    assert!((59..=60).contains(&left), "expiry {left}");
}

/// MQTT 5.0 §3.3.2.3.4: the broker resolves topic aliases: a PUBLISH that sets an alias and one that
/// uses it (empty topic) both reach the subscriber under the full topic name.
#[tokio::test]
async fn topic_alias_is_set_and_then_used() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "alias/#").await;
    let mut set = publish_packet("alias/long/topic", b"1", AtLeastOnce, false, 1);
    set.properties.topic_alias = Some(1);
    assert_eq!(publisher.publish_qos1(set).await.reason, 0);
    let mut used = publish_packet("", b"2", AtLeastOnce, false, 2);
    used.properties.topic_alias = Some(1);
    assert_eq!(publisher.publish_qos1(used).await.reason, 0);
    for payload in [b"1", b"2"] {
        let got = subscriber.recv_acked().await;
        assert_eq!(got.topic, "alias/long/topic");
        assert_eq!(&got.payload[..], payload);
        assert_eq!(
            got.properties.topic_alias, None,
            "aliases are per connection"
        );
    }
}

/// MQTT 5.0 §3.3.2.3.4: sending a topic name with an alias already in use remaps the alias.
#[tokio::test]
async fn topic_alias_can_be_remapped() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "remap/#").await;
    for (topic, id) in [("remap/a", 1), ("remap/b", 2), ("", 3)] {
        let mut publish = publish_packet(topic, b"x", AtLeastOnce, false, id);
        publish.properties.topic_alias = Some(4);
        publisher.publish_qos1(publish).await;
    }
    let topics = [
        subscriber.recv_acked().await.topic,
        subscriber.recv_acked().await.topic,
        subscriber.recv_acked().await.topic,
    ];
    assert_eq!(topics, ["remap/a", "remap/b", "remap/b"]);
}

/// MQTT 5.0 §3.3.2.3.4: a PUBLISH with an empty topic and an alias the client never set is a
/// protocol error: DISCONNECT 0x82.
#[tokio::test]
async fn unknown_topic_alias_gets_disconnect_0x82() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "#").await;
    let mut publish = publish_packet("", b"x", AtLeastOnce, false, 1);
    publish.properties.topic_alias = Some(3);
    publisher.send_publish(publish).await;
    publisher.expect_disconnect(reason::PROTOCOL_ERROR).await;
    subscriber.expect_nothing().await;
}

/// MQTT-3.3.2-7: aliases belong to one connection; a new connection of the same client starts
/// with none.
#[tokio::test]
async fn topic_aliases_do_not_survive_the_connection() {
    let broker = TestBroker::start_default().await;
    let mut first = TestClient::v5(broker.addr, "forgetful").await;
    let mut set = publish_packet("fa/t", b"1", AtLeastOnce, false, 1);
    set.properties.topic_alias = Some(1);
    first.publish_qos1(set).await;
    first.disconnect().await;
    let mut second = TestClient::v5(broker.addr, "forgetful").await;
    let mut used = publish_packet("", b"2", AtLeastOnce, false, 2);
    used.properties.topic_alias = Some(1);
    second.send_publish(used).await;
    second.expect_disconnect(reason::PROTOCOL_ERROR).await;
}

/// MQTT-3.3.2-9 / §3.3.2.3.4: an alias above our Topic Alias Maximum
/// (limits.max_topic_aliases) gets DISCONNECT 0x94.
#[tokio::test]
async fn topic_alias_above_the_maximum_gets_disconnect_0x94() {
    let broker = TestBroker::start(config_with(|limits| limits.max_topic_aliases = 5)).await;
    let (mut client, connack) = TestClient::connect(broker.addr, V5, "over", true).await;
    assert_eq!(connack.properties.topic_alias_maximum, Some(5));
    let mut publish = publish_packet("t", b"x", AtLeastOnce, false, 1);
    publish.properties.topic_alias = Some(6);
    client.send_publish(publish).await;
    client.expect_disconnect(reason::TOPIC_ALIAS_INVALID).await;
}

/// The maximum itself is a valid alias.
#[tokio::test]
async fn topic_alias_equal_to_the_maximum_is_accepted() {
    let broker = TestBroker::start(config_with(|limits| limits.max_topic_aliases = 5)).await;
    let mut client = TestClient::v5(broker.addr, "edge").await;
    let mut publish = publish_packet("t", b"x", AtLeastOnce, false, 1);
    publish.properties.topic_alias = Some(5);
    assert_eq!(client.publish_qos1(publish).await.packet_id, 1);
}

/// MQTT-3.3.2-8: a Topic Alias of 0 is not permitted: DISCONNECT 0x94.
#[tokio::test]
async fn topic_alias_zero_gets_disconnect_0x94() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "zero").await;
    let mut publish = publish_packet("t", b"x", AtLeastOnce, false, 1);
    publish.properties.topic_alias = Some(0);
    client.send_publish(publish).await;
    client.expect_disconnect(reason::TOPIC_ALIAS_INVALID).await;
}

/// With limits.max_topic_aliases = 0 the CONNACK announces no Topic Alias Maximum (0: none
/// allowed), and any alias gets DISCONNECT 0x94.
#[tokio::test]
async fn topic_aliases_disabled_refuses_every_alias() {
    let broker = TestBroker::start(config_with(|limits| limits.max_topic_aliases = 0)).await;
    let (mut client, connack) = TestClient::connect(broker.addr, V5, "none", true).await;
    assert_eq!(connack.properties.topic_alias_maximum, None);
    let mut publish = publish_packet("t", b"x", AtLeastOnce, false, 1);
    publish.properties.topic_alias = Some(1);
    client.send_publish(publish).await;
    client.expect_disconnect(reason::TOPIC_ALIAS_INVALID).await;
}

/// A v5 subscriber on `ta/#` that accepts `max` topic aliases from the broker.
async fn alias_subscriber(broker: &TestBroker, id: &str, max: Option<u16>) -> TestClient {
    let mut connect = connect_packet(V5, id);
    connect.properties.topic_alias_maximum = max;
    let (mut client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, 0);
    client.subscribe("ta/#", AtMostOnce).await;
    client
}

/// (topic as sent, alias) of the next PUBLISH.
async fn aliased(client: &mut TestClient) -> (String, Option<u16>) {
    let publish = client.recv_publish().await;
    (publish.topic, publish.properties.topic_alias)
}

/// MQTT 5.0 §3.3.2.3.4: towards a client that announced a Topic Alias Maximum, the broker
/// sends a topic once with a new alias and then the alias alone; when every alias is taken,
/// the least recently used one is given to the new topic, which is sent with it again.
#[tokio::test]
async fn the_broker_uses_topic_aliases_towards_a_client_that_accepts_them() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = alias_subscriber(&broker, "aliased", Some(2)).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for topic in ["ta/a", "ta/b", "ta/a", "ta/c", "ta/b", "ta/c"] {
        publisher.publish(topic, b"x", AtMostOnce, false).await;
    }
    let expected = [
        ("ta/a", 1),
        ("ta/b", 2),
        ("", 1),
        // ta/b was used least recently: its alias goes to ta/c.
        ("ta/c", 2),
        ("ta/b", 1),
        ("", 2),
    ];
    for (topic, alias) in expected {
        assert_eq!(
            aliased(&mut subscriber).await,
            (topic.to_string(), Some(alias))
        );
    }
}

/// Aliases are per connection (MQTT-3.3.2-7), bounded by our limit as well as the client's,
/// and never sent to a client that announced none or with limits.max_topic_aliases_out = 0.
#[tokio::test]
async fn topic_aliases_towards_clients_are_per_connection_and_bounded() {
    let broker = TestBroker::start(config_with(|limits| limits.max_topic_aliases_out = 1)).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    let mut none = alias_subscriber(&broker, "none", None).await;
    let subscriber = alias_subscriber(&broker, "one", Some(100)).await;
    drop(subscriber);
    let mut subscriber = alias_subscriber(&broker, "one", Some(100)).await;
    for topic in ["ta/a", "ta/a", "ta/b"] {
        publisher.publish(topic, b"x", AtMostOnce, false).await;
    }
    for (topic, alias) in [("ta/a", 1), ("", 1), ("ta/b", 1)] {
        assert_eq!(
            aliased(&mut subscriber).await,
            (topic.to_string(), Some(alias))
        );
    }
    for topic in ["ta/a", "ta/a", "ta/b"] {
        assert_eq!(aliased(&mut none).await, (topic.to_string(), None));
    }
    let off = TestBroker::start(config_with(|limits| limits.max_topic_aliases_out = 0)).await;
    let mut subscriber = alias_subscriber(&off, "off", Some(10)).await;
    let mut publisher = TestClient::v5(off.addr, "pub").await;
    publisher.publish("ta/a", b"x", AtMostOnce, false).await;
    publisher.publish("ta/a", b"x", AtMostOnce, false).await;
    assert_eq!(aliased(&mut subscriber).await, ("ta/a".to_string(), None));
    assert_eq!(aliased(&mut subscriber).await, ("ta/a".to_string(), None));
}

/// A PUBLISH that fits the client's Maximum Packet Size only without the alias it would set
/// goes without it, rather than being dropped as too large.
#[tokio::test]
async fn a_publish_that_fits_only_without_its_alias_goes_without_it() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "tight");
    connect.properties.topic_alias_maximum = Some(10);
    // "ta/a" with a 20-byte payload at QoS 0 is 29 bytes; with a Topic Alias, 32.
    connect.properties.maximum_packet_size = Some(29);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("ta/#", AtMostOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for _ in 0..2 {
        publisher.publish("ta/a", &[7; 20], AtMostOnce, false).await;
        assert_eq!(aliased(&mut subscriber).await, ("ta/a".to_string(), None));
    }
    assert_eq!(broker.broker.stats().dropped_too_large.get(), 0);
}

async fn subscribe_with_id(client: &mut TestClient, filter: &str, id: Option<u32>) {
    let properties = PropertyValues {
        subscription_identifiers: id.into_iter().collect(),
        ..PropertyValues::default()
    }
    .into();
    let suback = client
        .subscribe_with(1, vec![(filter.to_string(), qos(AtLeastOnce))], properties)
        .await;
    assert_eq!(suback.reasons, vec![1]);
}

/// MQTT 5.0 §3.8.2.1.2 and MQTT-3.3.4-3: messages matching a subscription made with a
/// Subscription Identifier carry it; others carry none.
#[tokio::test]
async fn subscription_identifier_is_sent_with_matching_messages() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v5(broker.addr, "ids").await;
    subscribe_with_id(&mut subscriber, "sid/a", Some(268_435_455)).await;
    subscribe_with_id(&mut subscriber, "sid/b", None).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("sid/a", b"a", AtLeastOnce, false).await;
    publisher.publish("sid/b", b"b", AtLeastOnce, false).await;
    let a = subscriber.recv_acked().await;
    assert_eq!(a.properties.subscription_identifiers, vec![268_435_455]);
    let b = subscriber.recv_acked().await;
    assert_eq!(b.properties.subscription_identifiers, Vec::<u32>::new());
}

/// A SUBSCRIBE that replaces a subscription replaces its identifier too (MQTT-3.8.4-3).
#[tokio::test]
async fn resubscribing_replaces_the_subscription_identifier() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v5(broker.addr, "ids").await;
    subscribe_with_id(&mut subscriber, "sid/r", Some(1)).await;
    subscribe_with_id(&mut subscriber, "sid/r", Some(2)).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("sid/r", b"r", AtLeastOnce, false).await;
    let got = subscriber.recv_acked().await;
    assert_eq!(got.properties.subscription_identifiers, vec![2]);
}

/// Retained messages sent on subscribe carry the new subscription's identifier.
#[tokio::test]
async fn retained_message_carries_the_subscription_identifier() {
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("sid/ret", b"r", AtLeastOnce, true).await;
    let mut subscriber = TestClient::v5(broker.addr, "ids").await;
    subscribe_with_id(&mut subscriber, "sid/+", Some(77)).await;
    let got = subscriber.recv_acked().await;
    assert!(got.retain);
    assert_eq!(got.properties.subscription_identifiers, vec![77]);
}

/// MQTT-3.8.3-3: with No Local the client does not get its own messages; other clients'
/// messages still arrive.
#[tokio::test]
async fn no_local_skips_the_subscribers_own_messages() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "self").await;
    let options = SubscriptionOptions {
        qos: AtLeastOnce,
        no_local: true,
        ..SubscriptionOptions::default()
    };
    client
        .subscribe_with(1, vec![("nl".to_string(), options)], Properties::default())
        .await;
    let ack = client.publish("nl", b"mine", AtLeastOnce, false).await;
    assert_eq!(ack, reason::NO_MATCHING_SUBSCRIBERS);
    client.expect_nothing().await;
    let mut other = TestClient::v5(broker.addr, "other").await;
    other.publish("nl", b"theirs", AtLeastOnce, false).await;
    assert_eq!(&client.recv_acked().await.payload[..], b"theirs");
}

/// Without No Local a client does get its own messages.
#[tokio::test]
async fn without_no_local_the_subscriber_gets_its_own_messages() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "self").await;
    client.subscribe("own", AtLeastOnce).await;
    let own = client.publish_to_self("own", b"mine", AtLeastOnce).await;
    assert_eq!(&own.payload[..], b"mine");
}

/// MQTT-3.1.2-24/25: a message larger than the client's Maximum Packet Size is not sent to it
/// (and counted as dropped); smaller ones before and after still are.
#[tokio::test]
async fn message_larger_than_the_clients_maximum_packet_size_is_not_sent() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "small");
    connect.properties.maximum_packet_size = Some(100);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("size", AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher
        .publish("size", b"before", AtLeastOnce, false)
        .await;
    publisher
        .publish("size", &[b'x'; 200], AtLeastOnce, false)
        .await;
    publisher
        .publish("size", b"after", AtLeastOnce, false)
        .await;
    assert_eq!(&subscriber.recv_acked().await.payload[..], b"before");
    assert_eq!(&subscriber.recv_acked().await.payload[..], b"after");
    subscriber.expect_nothing().await;
    assert_eq!(broker.broker.stats().dropped_too_large.get(), 1);
}

/// The Maximum Packet Size counts the whole packet: a message that fits exactly is sent.
#[tokio::test]
async fn message_of_exactly_the_clients_maximum_packet_size_is_sent() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "exact");
    connect.properties.maximum_packet_size = Some(50);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("e", AtMostOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    // QoS 0: 1 (type) + 1 (length) + 3 (topic "e") + 1 (no properties) + payload = 50.
    publisher.publish("e", &[b'x'; 44], AtMostOnce, false).await;
    publisher.publish("e", &[b'y'; 45], AtMostOnce, false).await;
    publisher.publish("e", b"end", AtMostOnce, false).await;
    assert_eq!(subscriber.recv_publish().await.payload.len(), 44);
    assert_eq!(&subscriber.recv_publish().await.payload[..], b"end");
}

/// A refused PUBLISH (to `$SYS`) gets its reason code and a reason string...
#[tokio::test]
async fn negative_ack_carries_a_reason_string_by_default() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "talkative").await;
    let ack = client
        .publish_qos1(publish_packet("$SYS/x", b"x", AtLeastOnce, false, 1))
        .await;
    assert_eq!(ack.reason, reason::NOT_AUTHORIZED);
    assert!(ack.properties.reason_string.is_some());
}

/// ...but MQTT-3.1.2-29: with Request Problem Information 0 no Reason String (nor User
/// Property) is sent on anything but PUBLISH, CONNACK and DISCONNECT.
#[tokio::test]
async fn request_problem_information_0_suppresses_reason_strings() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "quiet");
    connect.properties.request_problem_information = Some(0);
    let (mut client, _) = TestClient::connect_with(broker.addr, connect).await;
    let ack = client
        .publish_qos1(publish_packet("$SYS/x", b"x", AtLeastOnce, false, 1))
        .await;
    assert_eq!(ack.reason, reason::NOT_AUTHORIZED);
    assert_eq!(ack.properties.reason_string, None);
    assert!(ack.properties.user_properties.is_empty());
}

/// MQTT 5.0 §3.4.2.1: PUBACK 0x10 (no matching subscribers) when nobody is subscribed, 0x00
/// when somebody is.
#[tokio::test]
async fn puback_says_when_there_are_no_matching_subscribers() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "lonely").await;
    let ack = client
        .publish("nobody/here", b"x", AtLeastOnce, false)
        .await;
    assert_eq!(ack, reason::NO_MATCHING_SUBSCRIBERS);
    let mut listener = TestClient::v5(broker.addr, "listener").await;
    listener.subscribe("nobody/+", AtMostOnce).await;
    let ack = client
        .publish("nobody/here", b"x", AtLeastOnce, false)
        .await;
    assert_eq!(ack, reason::SUCCESS);
}

/// MQTT 5.0 §3.5.2.1: the same on PUBREC for QoS 2.
#[tokio::test]
async fn pubrec_says_when_there_are_no_matching_subscribers() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "lonely2").await;
    let code = client.publish("nobody/two", b"x", ExactlyOnce, false).await;
    assert_eq!(code, reason::NO_MATCHING_SUBSCRIBERS);
}

/// MQTT 5.0 §4.3.3: a PUBREC with an error code (≥ 0x80) ends the QoS 2 exchange: no PUBREL,
/// and the in-flight slot is free for the next message.
#[tokio::test]
async fn pubrec_with_an_error_code_ends_the_exchange() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "refuser");
    connect.properties.receive_maximum = Some(1);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("refuse", ExactlyOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("refuse", b"no", ExactlyOnce, false).await;
    publisher
        .publish("refuse", b"yes", ExactlyOnce, false)
        .await;
    let refused = subscriber.recv_publish().await;
    assert_eq!(&refused.payload[..], b"no");
    let mut pubrec = Ack::new(refused.packet_id);
    pubrec.reason = reason::UNSPECIFIED_ERROR;
    subscriber.send(&Packet::PubRec(pubrec)).await;
    let next = subscriber.recv_publish().await;
    assert_eq!(
        &next.payload[..],
        b"yes",
        "expected the next message, not a PUBREL"
    );
    subscriber.ack(&next).await;
    subscriber.expect_nothing().await;
}

/// A DISCONNECT with a reason string and user properties is accepted like a plain one.
#[tokio::test]
async fn disconnect_with_properties_is_a_normal_disconnect() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "bye").await;
    let mut disconnect = supermq::protocol::Disconnect::new(0);
    disconnect.properties.reason_string = Some("going home".to_string());
    disconnect.properties.user_properties = vec![("k".to_string(), "v".to_string())];
    client.send(&Packet::Disconnect(disconnect)).await;
    assert_eq!(client.expect_closed().await, vec![]);
    assert_eq!(broker.broker.stats().protocol_errors.get(), 0);
}

/// MQTT-3.1.2-24/25 on resumption: an unacknowledged message that no longer fits the
/// Maximum Packet Size the client gives on reconnecting is discarded as if it had been
/// delivered, so it does not hold an in-flight slot for ever; the next message gets through.
#[tokio::test]
async fn unacknowledged_message_too_large_for_the_new_connection_is_discarded() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "shrinking");
    connect.properties.session_expiry_interval = Some(60);
    connect.properties.receive_maximum = Some(1);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect.clone()).await;
    subscriber.subscribe("shrink", AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher
        .publish("shrink", &[b'x'; 200], AtLeastOnce, false)
        .await;
    let big = subscriber.recv_publish().await;
    assert_eq!(big.payload.len(), 200);
    drop(subscriber); // without acknowledging it

    connect.clean_start = false;
    connect.properties.maximum_packet_size = Some(100);
    let (mut subscriber, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert!(connack.session_present);
    publisher
        .publish("shrink", b"small", AtLeastOnce, false)
        .await;
    let next = subscriber.recv_acked().await;
    assert_eq!(&next.payload[..], b"small");
    assert_eq!(broker.broker.stats().dropped_too_large.get(), 1);
}
