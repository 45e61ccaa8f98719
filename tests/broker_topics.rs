//! Topic names and filters (MQTT 3.1.1 §4.7, MQTT 5.0 §4.7 and §4.8): `+` and `#` matching,
//! `$` topics kept away from leading wildcards, `$SYS` closed to client publishes, invalid
//! filters refused per filter in SUBACK. Consumer groups are in broker_groups.rs.
//! Topic length, depth and subscription count limits are in broker_limits.rs.

mod common;

use common::*;
use supermq::protocol::{Properties, ProtocolVersion, QoS, reason};

use ProtocolVersion::{V5, V311};
use QoS::{AtLeastOnce, AtMostOnce, ExactlyOnce};

/// Subscribes one client to `filter`, publishes each topic from another, and returns the
/// topics the subscriber got.
async fn delivered(filter: &str, topics: &[&str]) -> Vec<String> {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v311(broker.addr, "sub").await;
    let suback = subscriber.subscribe(filter, AtMostOnce).await;
    assert_eq!(suback.reasons, vec![0], "filter {filter:?} refused");
    // A last message on a topic of its own tells the subscriber that all the others are in.
    subscriber.subscribe("end/marker", AtMostOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    for topic in topics {
        publisher.publish(topic, b"m", AtLeastOnce, false).await;
    }
    publisher
        .publish("end/marker", b"", AtLeastOnce, false)
        .await;
    let mut got = Vec::new();
    loop {
        let publish = subscriber.recv_publish().await;
        if publish.topic == "end/marker" && publish.payload.is_empty() {
            break;
        }
        got.push(publish.topic);
    }
    got
}

/// MQTT 4.7.1.3: `+` matches exactly one level, an empty one included.
#[tokio::test]
async fn plus_matches_exactly_one_level() {
    let got = delivered("t/+/x", &["t/a/x", "t/x", "t/a/b/x", "t//x", "t/a/x/y"]).await;
    assert_eq!(got, ["t/a/x", "t//x"]);
}

/// MQTT 4.7.1.2: `#` matches any number of levels below its parent.
#[tokio::test]
async fn hash_matches_any_number_of_levels() {
    let got = delivered("h/#", &["h/a", "h/a/b/c", "hx", "x/h/a", "h/"]).await;
    assert_eq!(got, ["h/a", "h/a/b/c", "h/"]);
}

/// MQTT 4.7.1.2: `a/#` matches `a` itself (the parent level).
#[tokio::test]
async fn hash_matches_the_parent_level() {
    let got = delivered("a/#", &["a", "ab", "b"]).await;
    assert_eq!(got, ["a"]);
}

/// `#` alone matches every topic that does not start with `$`.
#[tokio::test]
async fn hash_alone_matches_every_topic() {
    let got = delivered("#", &["a", "a/b", "/", "/leading"]).await;
    assert_eq!(got, ["a", "a/b", "/", "/leading"]);
}

/// MQTT-4.7.2-1: `#` does not match topics starting with `$`.
#[tokio::test]
async fn hash_does_not_match_dollar_topics() {
    let got = delivered("#", &["$app/x", "$", "app/x"]).await;
    assert_eq!(got, ["app/x"]);
}

/// MQTT-4.7.2-1: `+/...` does not match topics starting with `$` either.
#[tokio::test]
async fn leading_plus_does_not_match_dollar_topics() {
    let got = delivered("+/x", &["$app/x", "app/x"]).await;
    assert_eq!(got, ["app/x"]);
}

/// A filter that names the `$` level matches `$` topics, with wildcards below it.
#[tokio::test]
async fn explicit_dollar_filter_matches_dollar_topics() {
    let got = delivered("$app/+", &["$app/x", "$app/x/y", "app/x"]).await;
    assert_eq!(got, ["$app/x"]);
}

/// MQTT 4.7.3: topics are case sensitive.
#[tokio::test]
async fn topics_are_case_sensitive() {
    let got = delivered("Case/t", &["case/t", "Case/T", "Case/t"]).await;
    assert_eq!(got, ["Case/t"]);
}

/// MQTT 4.7.3: a leading `/` makes a distinct, empty first level.
#[tokio::test]
async fn leading_slash_is_an_empty_first_level() {
    let got = delivered("+/a", &["/a", "a", "x/a"]).await;
    assert_eq!(got, ["/a", "x/a"]);
}

/// A broker that does not publish its own `$SYS` tree (broker_sys.rs tests that), so that a
/// `$SYS/#` subscriber would get nothing but what a client managed to publish there.
async fn broker_without_tree() -> TestBroker {
    let mut config = config();
    config.sys.interval_secs = 0;
    TestBroker::start(config).await
}

/// A subscriber to `$SYS/#` and a 5.0 publisher.
async fn sys_setup(broker: &TestBroker, version: ProtocolVersion) -> (TestClient, TestClient) {
    let mut subscriber = TestClient::v5(broker.addr, "sys-sub").await;
    subscriber.subscribe("$SYS/#", AtMostOnce).await;
    let (publisher, _) = TestClient::connect(broker.addr, version, "sys-pub", true).await;
    (subscriber, publisher)
}

/// Clients may not publish to `$SYS`: a 5.0 QoS 1 PUBLISH gets PUBACK 0x87 (not authorized)
/// and is delivered to nobody.
#[tokio::test]
async fn publish_to_sys_is_refused_with_puback_0x87() {
    let broker = broker_without_tree().await;
    let (mut subscriber, mut publisher) = sys_setup(&broker, V5).await;
    let ack = publisher
        .publish("$SYS/broker/fake", b"x", AtLeastOnce, false)
        .await;
    assert_eq!(ack, reason::NOT_AUTHORIZED);
    subscriber.expect_nothing().await;
    assert_eq!(broker.broker.stats().publishes_refused.get(), 1);
    publisher.ping().await; // the connection stays open
}

/// The same at QoS 2: PUBREC 0x87, and nothing delivered.
#[tokio::test]
async fn qos2_publish_to_sys_is_refused_with_pubrec_0x87() {
    let broker = broker_without_tree().await;
    let (mut subscriber, mut publisher) = sys_setup(&broker, V5).await;
    publisher
        .send_publish(publish_packet("$SYS/x", b"x", ExactlyOnce, false, 4))
        .await;
    match publisher.recv().await {
        supermq::protocol::Packet::PubRec(ack) => {
            assert_eq!(ack.packet_id, 4);
            assert_eq!(ack.reason, reason::NOT_AUTHORIZED);
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }
    subscriber.expect_nothing().await;
}

/// At QoS 0 there is no ack: the message is simply not delivered.
#[tokio::test]
async fn qos0_publish_to_sys_is_not_delivered() {
    let broker = broker_without_tree().await;
    let (mut subscriber, mut publisher) = sys_setup(&broker, V5).await;
    publisher.publish("$SYS/x", b"x", AtMostOnce, false).await;
    subscriber.expect_nothing().await;
    publisher.ping().await;
}

/// 3.1.1 has no negative PUBACK: the publish is acknowledged and dropped, and the
/// connection stays open.
#[tokio::test]
async fn publish_to_sys_is_acked_and_dropped_in_3_1_1() {
    let broker = broker_without_tree().await;
    let (mut subscriber, mut publisher) = sys_setup(&broker, V311).await;
    let ack = publisher.publish("$SYS/x", b"x", AtLeastOnce, false).await;
    assert_eq!(ack, 0);
    subscriber.expect_nothing().await;
    publisher.ping().await;
}

/// Subscribes to one invalid filter with both versions and checks the SUBACK failure codes:
/// 0x80 in 3.1.1 (MQTT-3.8.4-5, §3.9.3), 0x8F (topic filter invalid) in 5.0.
async fn assert_filter_refused(filter: &str) {
    let broker = TestBroker::start_default().await;
    let mut v3 = TestClient::v311(broker.addr, "v3").await;
    let suback = v3.subscribe(filter, AtLeastOnce).await;
    assert_eq!(suback.reasons, vec![0x80], "3.1.1, filter {filter:?}");
    let mut v5 = TestClient::v5(broker.addr, "v5").await;
    let suback = v5.subscribe(filter, AtLeastOnce).await;
    assert_eq!(
        suback.reasons,
        vec![reason::TOPIC_FILTER_INVALID],
        "5.0, filter {filter:?}"
    );
    assert_eq!(broker.broker.subscription_count(), 0);
    v3.ping().await;
    v5.ping().await;
}

/// MQTT-4.7.1-2: `#` must be the last level.
#[tokio::test]
async fn filter_with_hash_before_the_last_level_is_refused() {
    assert_filter_refused("a/#/b").await;
}

/// MQTT-4.7.1-2: `#` must be a whole level.
#[tokio::test]
async fn filter_with_hash_inside_a_level_is_refused() {
    assert_filter_refused("a/b#").await;
}

/// MQTT-4.7.1-3: `+` must be a whole level.
#[tokio::test]
async fn filter_with_plus_inside_a_level_is_refused() {
    assert_filter_refused("a+").await;
}

/// MQTT-4.7.1-3: `+` must be a whole level, in any position.
#[tokio::test]
async fn filter_with_plus_after_text_in_a_level_is_refused() {
    assert_filter_refused("a/b+/c").await;
}

/// MQTT-4.7.3-1: a filter is at least one character long.
#[tokio::test]
async fn empty_filter_is_refused() {
    assert_filter_refused("").await;
}

/// MQTT-3.8.4-5 and MQTT-3.9.3-1: one SUBACK code per filter, in order; the valid filters of
/// a SUBSCRIBE that also holds invalid ones still work.
#[tokio::test]
async fn invalid_filter_does_not_affect_the_others_in_the_same_subscribe() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "mixed").await;
    let suback = client
        .subscribe_with(
            8,
            vec![
                ("ok/1".to_string(), qos(AtLeastOnce)),
                ("bad/#/x".to_string(), qos(AtLeastOnce)),
                ("ok/2".to_string(), qos(ExactlyOnce)),
            ],
            Properties::default(),
        )
        .await;
    assert_eq!(suback.reasons, vec![1, reason::TOPIC_FILTER_INVALID, 2]);
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("ok/2", b"m", ExactlyOnce, false).await;
    assert_eq!(client.recv_acked().await.topic, "ok/2");
}
