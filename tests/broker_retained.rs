//! Retained messages (MQTT 3.1.1 §3.3.1.3, MQTT 5.0 §3.3.1.3 and §3.8.3.1): stored per topic,
//! replaced and cleared (empty payload), sent with RETAIN=1 to new subscriptions (wildcards
//! included), sent with RETAIN=0 on normal delivery unless Retain As Published, the 5.0 Retain
//! Handling options, expiry, and limits.max_retained_messages.

mod common;

use std::time::Duration;

use common::*;
use supermq::protocol::{Packet, Properties, Publish, QoS, SubscriptionOptions};

use QoS::{AtLeastOnce, AtMostOnce, ExactlyOnce};

/// Publishes a retained message from a short-lived 3.1.1 client.
async fn retain(broker: &TestBroker, topic: &str, payload: &[u8], qos: QoS) {
    let mut publisher = TestClient::v311(broker.addr, "retainer").await;
    publisher.publish(topic, payload, qos, true).await;
    publisher.disconnect().await;
}

/// Subscribes a new 3.1.1 client and collects the retained messages it gets.
async fn retained_for(broker: &TestBroker, filter: &str) -> Vec<Publish> {
    let mut client = TestClient::v311(broker.addr, "late").await;
    client.subscribe(filter, ExactlyOnce).await;
    let mut got = Vec::new();
    while let Some(packet) = client.recv_within(QUIET).await.open() {
        match packet {
            Packet::Publish(publish) => {
                client.ack(&publish).await;
                got.push(publish);
            }
            other => panic!("expected retained PUBLISH, got {other:?}"),
        }
    }
    got.sort_by(|a, b| a.topic.cmp(&b.topic));
    got
}

/// MQTT-3.3.1-5/6/8: a retained message is stored and sent to a later subscription with
/// RETAIN=1.
#[tokio::test]
async fn retained_message_is_sent_to_a_new_subscription_with_retain_1() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "ret/a", b"kept", AtLeastOnce).await;
    let got = retained_for(&broker, "ret/a").await;
    assert_eq!(got.len(), 1);
    assert!(got[0].retain, "MQTT-3.3.1-8");
    assert_eq!(got[0].topic, "ret/a");
    assert_eq!(&got[0].payload[..], b"kept");
    assert_eq!(got[0].qos, AtLeastOnce);
    assert_eq!(broker.broker.retained_count(), 1);
}

/// MQTT-3.3.1-5: a new retained message replaces the one stored for its topic.
#[tokio::test]
async fn retained_message_is_replaced() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "ret/r", b"old", AtMostOnce).await;
    retain(&broker, "ret/r", b"new", AtMostOnce).await;
    let got = retained_for(&broker, "ret/r").await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"new");
}

/// MQTT-3.3.1-10/11: a retained PUBLISH with an empty payload clears the topic's retained
/// message, and is not itself stored.
#[tokio::test]
async fn empty_retained_message_clears_the_topic() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "ret/c", b"soon gone", AtLeastOnce).await;
    retain(&broker, "ret/c", b"", AtLeastOnce).await;
    assert_eq!(retained_for(&broker, "ret/c").await, vec![]);
    assert_eq!(broker.broker.retained_count(), 0);
}

/// MQTT-3.3.1-10 (3.1.1): the empty retained message that clears a topic is still delivered to
/// current subscribers, as a normal message.
#[tokio::test]
async fn clearing_message_is_delivered_to_current_subscribers() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v311(broker.addr, "now").await;
    subscriber.subscribe("ret/e", AtMostOnce).await;
    retain(&broker, "ret/e", b"", AtMostOnce).await;
    let publish = subscriber.recv_publish().await;
    assert!(publish.payload.is_empty());
}

/// Retained messages are sent for wildcard subscriptions, every matching topic once.
#[tokio::test]
async fn retained_messages_match_wildcard_subscriptions() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "w/a", b"1", AtMostOnce).await;
    retain(&broker, "w/b", b"2", AtMostOnce).await;
    retain(&broker, "w/b/c", b"3", AtMostOnce).await;
    retain(&broker, "x/a", b"4", AtMostOnce).await;

    let plus: Vec<_> = retained_for(&broker, "w/+").await;
    let topics: Vec<_> = plus.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["w/a", "w/b"]);
    assert!(plus.iter().all(|p| p.retain));

    let hash: Vec<_> = retained_for(&broker, "w/#").await;
    let topics: Vec<_> = hash.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["w/a", "w/b", "w/b/c"]);

    let plus_a: Vec<_> = retained_for(&broker, "+/a").await;
    let topics: Vec<_> = plus_a.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["w/a", "x/a"]);
}

/// MQTT-4.7.2-1: a `$` topic's retained message is not sent for `#`, but is for `$x/#`.
#[tokio::test]
async fn retained_dollar_topics_are_not_matched_by_a_leading_wildcard() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "$app/status", b"up", AtMostOnce).await;
    retain(&broker, "plain", b"p", AtMostOnce).await;
    let all: Vec<_> = retained_for(&broker, "#").await;
    let topics: Vec<_> = all.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["plain"]);
    let dollar = retained_for(&broker, "$app/#").await;
    assert_eq!(dollar.len(), 1);
    assert_eq!(dollar[0].topic, "$app/status");
}

/// Retained messages are sent at the lower of their QoS and the subscription's.
#[tokio::test]
async fn retained_message_is_sent_at_the_lower_qos() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "rq", b"m", ExactlyOnce).await;
    let mut client = TestClient::v311(broker.addr, "c").await;
    client.subscribe("rq", AtLeastOnce).await;
    let publish = client.recv_acked().await;
    assert_eq!(publish.qos, AtLeastOnce);
    assert!(publish.retain);
}

/// MQTT-3.3.1-9 (3.1.1) / MQTT-3.3.1-12 (5.0): a message delivered to an established
/// subscription has RETAIN=0, however the publisher set it.
#[tokio::test]
async fn normal_delivery_of_a_retained_message_has_retain_0() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v311(broker.addr, "sub").await;
    subscriber.subscribe("live", AtLeastOnce).await;
    retain(&broker, "live", b"m", AtLeastOnce).await;
    let publish = subscriber.recv_acked().await;
    assert!(!publish.retain);
}

/// MQTT-3.3.1-13 (5.0): with Retain As Published the RETAIN flag is passed through as set.
#[tokio::test]
async fn retain_as_published_keeps_the_retain_flag() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v5(broker.addr, "rap").await;
    let options = SubscriptionOptions {
        qos: AtLeastOnce,
        retain_as_published: true,
        ..SubscriptionOptions::default()
    };
    subscriber
        .subscribe_with(
            1,
            vec![("rap/#".to_string(), options)],
            Properties::default(),
        )
        .await;
    retain(&broker, "rap/r", b"retained", AtLeastOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "p").await;
    publisher
        .publish("rap/n", b"normal", AtLeastOnce, false)
        .await;
    let retained = subscriber.recv_acked().await;
    assert_eq!((retained.topic.as_str(), retained.retain), ("rap/r", true));
    let normal = subscriber.recv_acked().await;
    assert_eq!((normal.topic.as_str(), normal.retain), ("rap/n", false));
}

/// Subscribes `client` to `filter` with Retain Handling `handling`; returns how many
/// retained messages came.
async fn subscribe_counting_retained(client: &mut TestClient, filter: &str, handling: u8) -> usize {
    let options = SubscriptionOptions {
        qos: AtMostOnce,
        retain_handling: handling,
        ..SubscriptionOptions::default()
    };
    let suback = client
        .subscribe_with(
            1,
            vec![(filter.to_string(), options)],
            Properties::default(),
        )
        .await;
    assert_eq!(suback.reasons, vec![0]);
    let mut count = 0;
    while let Some(packet) = client.recv_within(QUIET).await.open() {
        match packet {
            Packet::Publish(publish) => {
                assert!(publish.retain);
                count += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    count
}

/// MQTT-3.3.1-9 (5.0): Retain Handling 0 sends the retained messages on every SUBSCRIBE,
/// including one that repeats an existing subscription.
#[tokio::test]
async fn retain_handling_0_sends_retained_on_every_subscribe() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "rh0", b"m", AtMostOnce).await;
    let mut client = TestClient::v5(broker.addr, "rh0").await;
    assert_eq!(subscribe_counting_retained(&mut client, "rh0", 0).await, 1);
    assert_eq!(subscribe_counting_retained(&mut client, "rh0", 0).await, 1);
}

/// MQTT-3.3.1-10 (5.0): Retain Handling 1 sends them only if the subscription is new.
#[tokio::test]
async fn retain_handling_1_sends_retained_only_for_a_new_subscription() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "rh1", b"m", AtMostOnce).await;
    let mut client = TestClient::v5(broker.addr, "rh1").await;
    assert_eq!(subscribe_counting_retained(&mut client, "rh1", 1).await, 1);
    assert_eq!(subscribe_counting_retained(&mut client, "rh1", 1).await, 0);
}

/// MQTT-3.3.1-11 (5.0): Retain Handling 2 never sends retained messages.
#[tokio::test]
async fn retain_handling_2_never_sends_retained() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "rh2", b"m", AtMostOnce).await;
    let mut client = TestClient::v5(broker.addr, "rh2").await;
    assert_eq!(subscribe_counting_retained(&mut client, "rh2", 2).await, 0);
}

/// A retained message whose Message Expiry Interval has passed is not sent to new
/// subscriptions (MQTT 5.0 §3.3.2.3.3).
#[tokio::test]
async fn expired_retained_message_is_not_sent() {
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::v5(broker.addr, "p").await;
    let mut publish = publish_packet("ret/exp", b"short-lived", AtLeastOnce, true, 1);
    publish.properties.message_expiry_interval = Some(1);
    publisher.publish_qos1(publish).await;
    let mut forever = publish_packet("ret/keep", b"long-lived", AtLeastOnce, true, 2);
    forever.properties.message_expiry_interval = Some(60);
    publisher.publish_qos1(forever).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = retained_for(&broker, "ret/#").await;
    let topics: Vec<_> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["ret/keep"]);
}

/// MQTT-3.1.2-7: the retained message is no part of the publisher's session and outlives it.
#[tokio::test]
async fn retained_message_outlives_its_publisher() {
    let broker = TestBroker::start_default().await;
    retain(&broker, "ret/o", b"m", AtMostOnce).await;
    wait_until("the publisher's session is gone", || {
        broker.broker.session_count() == 0
    })
    .await;
    assert_eq!(retained_for(&broker, "ret/o").await.len(), 1);
}

/// limits.max_retained_messages: once full, a message for a new topic is not retained but
/// is still delivered to current subscribers.
#[tokio::test]
async fn new_topic_is_not_retained_when_the_store_is_full_but_still_delivered() {
    let broker = TestBroker::start(config_with(|limits| limits.max_retained_messages = 2)).await;
    let mut subscriber = TestClient::v311(broker.addr, "sub").await;
    subscriber.subscribe("full/#", AtMostOnce).await;
    retain(&broker, "full/1", b"1", AtMostOnce).await;
    retain(&broker, "full/2", b"2", AtMostOnce).await;
    retain(&broker, "full/3", b"3", AtMostOnce).await;
    for expected in ["full/1", "full/2", "full/3"] {
        assert_eq!(subscriber.recv_publish().await.topic, expected);
    }
    assert_eq!(broker.broker.retained_count(), 2);
    let got = retained_for(&broker, "full/#").await;
    let topics: Vec<_> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["full/1", "full/2"]);
}

/// A full store still lets an existing topic's retained message be replaced or cleared.
#[tokio::test]
async fn full_store_still_replaces_and_clears_existing_topics() {
    let broker = TestBroker::start(config_with(|limits| limits.max_retained_messages = 1)).await;
    retain(&broker, "one", b"v1", AtMostOnce).await;
    retain(&broker, "one", b"v2", AtMostOnce).await;
    assert_eq!(&retained_for(&broker, "one").await[0].payload[..], b"v2");
    retain(&broker, "one", b"", AtMostOnce).await;
    assert_eq!(broker.broker.retained_count(), 0);
    retain(&broker, "two", b"t", AtMostOnce).await;
    assert_eq!(retained_for(&broker, "two").await.len(), 1);
}

/// limits.max_retained_bytes: a message whose payload would pass the byte budget is not
/// retained.
#[tokio::test]
async fn retained_payload_over_the_byte_limit_is_not_retained() {
    let broker = TestBroker::start(config_with(|limits| limits.max_retained_bytes = 10)).await;
    retain(&broker, "b/small", b"12345", AtMostOnce).await;
    retain(&broker, "b/big", b"1234567890", AtMostOnce).await;
    let got = retained_for(&broker, "b/#").await;
    let topics: Vec<_> = got.iter().map(|p| p.topic.as_str()).collect();
    assert_eq!(topics, ["b/small"]);
}

/// A 5.0 retained message keeps its properties when sent to a new subscription.
#[tokio::test]
async fn retained_message_keeps_its_properties() {
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::v5(broker.addr, "p").await;
    let mut publish = publish_packet("ret/props", b"{}", AtLeastOnce, true, 1);
    publish.properties.content_type = Some("application/json".to_string());
    publish.properties.user_properties = vec![("k".to_string(), "v".to_string())];
    publisher.publish_qos1(publish).await;
    let mut client = TestClient::v5(broker.addr, "c").await;
    client.subscribe("ret/props", AtLeastOnce).await;
    let got = client.recv_acked().await;
    assert_eq!(
        got.properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(
        got.properties.user_properties,
        vec![("k".to_string(), "v".to_string())]
    );
}

/// 3.1.1 and 5.0 clients share the retained store.
#[tokio::test]
async fn retained_message_crosses_protocol_versions() {
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::v5(broker.addr, "p5").await;
    publisher.publish("cross", b"m", AtLeastOnce, true).await;
    let mut client = TestClient::v311(broker.addr, "c3").await;
    client.subscribe("cross", AtLeastOnce).await;
    assert!(client.recv_acked().await.retain);
}

/// One SUBSCRIBE costs at most what the subscriber's queue holds: a packet that repeats `#`
/// thousands of times gets one SUBACK code per filter but each retained message once, and no
/// more retained messages than `max_queued_messages`, the rest counted as not sent.
#[tokio::test]
async fn a_subscribe_takes_no_more_retained_messages_than_its_queue_holds() {
    let broker = TestBroker::start(config_with(|limits| limits.max_queued_messages = 5)).await;
    for i in 0..10u8 {
        retain(&broker, &format!("r/{i}"), &[i], AtMostOnce).await;
    }
    let mut client = TestClient::v5(broker.addr, "greedy").await;
    let filters = vec![("#".to_string(), qos(AtMostOnce)); 5000];
    let suback = client
        .subscribe_with(9, filters, Properties::default())
        .await;
    assert_eq!(suback.reasons.len(), 5000);
    let mut got = 0;
    while let Some(packet) = client.recv_within(QUIET).await.open() {
        match packet {
            Packet::Publish(publish) => {
                assert!(publish.retain);
                got += 1;
            }
            other => panic!("expected retained PUBLISH, got {other:?}"),
        }
    }
    assert_eq!(got, 5, "the queue's worth, once");
    assert_eq!(broker.broker.stats().retained_not_sent.get(), 1);
    client.ping().await;
}
