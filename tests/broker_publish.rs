//! PUBLISH and its acknowledgements (MQTT 3.1.1 §3.3-3.7, §4.3-4.6; MQTT 5.0 §3.3-3.7, §4.3-4.9):
//! QoS 0, 1 and 2 in both directions with their packet identifiers, delivery at the lower of
//! the publication's and the subscription's QoS, one delivery per client for overlapping
//! subscriptions, exactly-once for inbound QoS 2, redelivery with DUP when a session resumes,
//! the in-flight window (Receive Maximum) both ways, ordering, and UNSUBSCRIBE.

mod common;

use common::*;
use supermq::protocol::{
    Ack, Packet, Properties, PropertyValues, ProtocolVersion, Publish, QoS, Unsubscribe, reason,
};

use ProtocolVersion::{V5, V311};
use QoS::{AtLeastOnce, AtMostOnce, ExactlyOnce};

/// A subscriber and a publisher, both 3.1.1, the subscriber on `filter` at `granted`.
async fn pair(broker: &TestBroker, filter: &str, granted: QoS) -> (TestClient, TestClient) {
    let mut subscriber = TestClient::v311(broker.addr, "sub").await;
    let suback = subscriber.subscribe(filter, granted).await;
    assert_eq!(suback.reasons, vec![granted as u8]);
    let publisher = TestClient::v311(broker.addr, "pub").await;
    (subscriber, publisher)
}

#[tokio::test]
async fn qos0_message_is_delivered_at_qos0_without_packet_id() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "q0", AtLeastOnce).await;
    publisher.publish("q0", b"zero", AtMostOnce, false).await;
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.qos, AtMostOnce);
    assert_eq!(publish.packet_id, 0);
    assert!(!publish.dup);
    assert_eq!(&publish.payload[..], b"zero");
}

/// MQTT-4.3.2-4 / MQTT-2.3.1-6: PUBACK carries the PUBLISH's packet id; the delivery to the
/// subscriber is a QoS 1 PUBLISH with a non-zero packet id of the broker's choosing.
#[tokio::test]
async fn qos1_is_acked_with_the_publishers_packet_id_and_delivered_with_one() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "q1", AtLeastOnce).await;
    let ack = publisher
        .publish_qos1(publish_packet("q1", b"one", AtLeastOnce, false, 1234))
        .await;
    assert_eq!(ack.packet_id, 1234);
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.qos, AtLeastOnce);
    assert_ne!(publish.packet_id, 0);
    assert!(!publish.dup, "MQTT-3.3.1-1: DUP is 0 on the first delivery");
    assert_eq!(&publish.payload[..], b"one");
    subscriber
        .send(&Packet::PubAck(Ack::new(publish.packet_id)))
        .await;
    subscriber.expect_nothing().await;
}

/// MQTT-4.3.3-2/3 (the receiver's side): PUBREC and PUBCOMP carry the PUBLISH's packet id.
#[tokio::test]
async fn qos2_publish_completes_publish_pubrec_pubrel_pubcomp() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "q2", ExactlyOnce).await;
    publisher
        .send_publish(publish_packet("q2", b"two", ExactlyOnce, false, 4321))
        .await;
    match publisher.recv().await {
        Packet::PubRec(ack) => assert_eq!(ack.packet_id, 4321),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publisher.send(&Packet::PubRel(Ack::new(4321))).await;
    match publisher.recv().await {
        Packet::PubComp(ack) => assert_eq!(ack.packet_id, 4321),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.qos, ExactlyOnce);
    assert_eq!(&publish.payload[..], b"two");
}

/// MQTT-4.3.3-1 (the sender's side): the broker answers PUBREC with a PUBREL of the same
/// packet id and, after PUBCOMP, considers the message delivered.
#[tokio::test]
async fn qos2_delivery_to_a_subscriber_follows_pubrec_pubrel_pubcomp() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "q2", ExactlyOnce).await;
    publisher.publish("q2", b"two", ExactlyOnce, false).await;
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.qos, ExactlyOnce);
    assert_ne!(publish.packet_id, 0);
    subscriber
        .send(&Packet::PubRec(Ack::new(publish.packet_id)))
        .await;
    match subscriber.recv().await {
        Packet::PubRel(rel) => assert_eq!(rel.packet_id, publish.packet_id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    subscriber
        .send(&Packet::PubComp(Ack::new(publish.packet_id)))
        .await;
    subscriber.expect_nothing().await;
}

/// MQTT-3.8.4-5: SUBACK has a return code per filter, here the QoS asked for.
#[tokio::test]
async fn suback_grants_the_requested_qos_per_filter() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v311(broker.addr, "s").await;
    let suback = client
        .subscribe_with(
            42,
            vec![
                ("g/0".to_string(), qos(AtMostOnce)),
                ("g/1".to_string(), qos(AtLeastOnce)),
                ("g/2".to_string(), qos(ExactlyOnce)),
            ],
            Properties::default(),
        )
        .await;
    assert_eq!(suback.packet_id, 42, "MQTT-3.8.4-2");
    assert_eq!(suback.reasons, vec![0, 1, 2]);
}

/// MQTT-3.8.4-6 (3.1.1) / §4.3 (5.0): a message is delivered at the lower of its QoS and the
/// QoS granted to the subscription, for all nine combinations.
#[tokio::test]
async fn delivery_qos_is_the_minimum_of_publish_and_granted_qos() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v311(broker.addr, "sub").await;
    for granted in [AtMostOnce, AtLeastOnce, ExactlyOnce] {
        subscriber
            .subscribe(&format!("min/{}", granted as u8), granted)
            .await;
    }
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    for granted in [AtMostOnce, AtLeastOnce, ExactlyOnce] {
        for sent in [AtMostOnce, AtLeastOnce, ExactlyOnce] {
            let topic = format!("min/{}", granted as u8);
            publisher.publish(&topic, b"m", sent, false).await;
            let publish = subscriber.recv_acked().await;
            assert_eq!(publish.topic, topic);
            assert_eq!(
                publish.qos,
                sent.min(granted),
                "published at {sent:?} to a {granted:?} subscription"
            );
        }
    }
}

/// MQTT-3.3.5-1 (3.1.1) / MQTT 5.0 §3.3.4: overlapping subscriptions of one client get the
/// message once, at the highest granted QoS.
#[tokio::test]
async fn overlapping_subscriptions_deliver_once_at_the_highest_qos() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v311(broker.addr, "sub").await;
    subscriber.subscribe("over/+", AtMostOnce).await;
    subscriber.subscribe("over/#", ExactlyOnce).await;
    subscriber.subscribe("over/x", AtLeastOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    publisher
        .publish("over/x", b"once", ExactlyOnce, false)
        .await;
    let publish = subscriber.recv_acked().await;
    assert_eq!(publish.qos, ExactlyOnce);
    subscriber.expect_nothing().await;
}

/// MQTT-3.3.4-2/3 (5.0): the single delivery for overlapping subscriptions carries the
/// Subscription Identifier of every matching subscription.
#[tokio::test]
async fn overlapping_subscriptions_carry_all_subscription_identifiers() {
    let broker = TestBroker::start_default().await;
    let mut subscriber = TestClient::v5(broker.addr, "sub").await;
    for (id, filter) in [(11, "ids/+"), (22, "ids/#"), (33, "other/#")] {
        let properties = PropertyValues {
            subscription_identifiers: vec![id],
            ..PropertyValues::default()
        }
        .into();
        let suback = subscriber
            .subscribe_with(1, vec![(filter.to_string(), qos(AtLeastOnce))], properties)
            .await;
        assert_eq!(suback.reasons, vec![1]);
    }
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("ids/x", b"m", AtLeastOnce, false).await;
    let publish = subscriber.recv_acked().await;
    let mut ids = publish.properties.subscription_identifiers.clone();
    ids.sort_unstable();
    assert_eq!(ids, vec![11, 22]);
    subscriber.expect_nothing().await;
}

/// MQTT-4.3.3-10 (5.0) / §4.3.3 (3.1.1): a QoS 2 PUBLISH sent again (DUP=1) before PUBREL is
/// acknowledged with PUBREC again but not delivered a second time.
#[tokio::test]
async fn qos2_resend_before_pubrel_is_not_delivered_twice() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "once", ExactlyOnce).await;
    let mut publish = publish_packet("once", b"only once", ExactlyOnce, false, 9);
    publisher.send_publish(publish.clone()).await;
    match publisher.recv().await {
        Packet::PubRec(ack) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    publish.dup = true;
    publisher.send_publish(publish).await;
    match publisher.recv().await {
        Packet::PubRec(ack) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected a second PUBREC, got {other:?}"),
    }
    publisher.send(&Packet::PubRel(Ack::new(9))).await;
    match publisher.recv().await {
        Packet::PubComp(ack) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    let first = subscriber.recv_acked().await;
    assert_eq!(&first.payload[..], b"only once");
    subscriber.expect_nothing().await;
}

/// After PUBREL the packet id is free again (§2.3.1, §4.3.3): a new PUBLISH with the same id
/// is a new message and is delivered.
#[tokio::test]
async fn qos2_packet_id_is_reusable_after_pubrel() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "reuse", ExactlyOnce).await;
    for payload in [&b"first"[..], b"second"] {
        publisher
            .send_publish(publish_packet("reuse", payload, ExactlyOnce, false, 5))
            .await;
        assert!(matches!(publisher.recv().await, Packet::PubRec(_)));
        publisher.send(&Packet::PubRel(Ack::new(5))).await;
        assert!(matches!(publisher.recv().await, Packet::PubComp(_)));
        let publish = subscriber.recv_acked().await;
        assert_eq!(&publish.payload[..], payload);
    }
}

/// PUBREL for a packet id the broker does not know still gets PUBCOMP, so the client can finish;
/// a 5.0 client is told 0x92 (packet identifier not found).
#[tokio::test]
async fn pubrel_for_unknown_packet_id_gets_pubcomp_0x92() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "c").await;
    client.send(&Packet::PubRel(Ack::new(77))).await;
    match client.recv().await {
        Packet::PubComp(ack) => {
            assert_eq!(ack.packet_id, 77);
            assert_eq!(ack.reason, reason::PACKET_IDENTIFIER_NOT_FOUND);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
}

/// MQTT-4.6.0-5/6: messages from one publisher on one topic, at one QoS, arrive in the order
/// they were sent.
#[tokio::test]
async fn messages_arrive_in_the_order_published() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "order", AtLeastOnce).await;
    for i in 0..50u32 {
        publisher
            .publish("order", i.to_string().as_bytes(), AtLeastOnce, false)
            .await;
    }
    for i in 0..50u32 {
        let publish = subscriber.recv_acked().await;
        assert_eq!(publish.payload, i.to_string().as_bytes());
    }
}

/// The packet ids of QoS 1 messages in flight to one client are all different and non-zero
/// (MQTT-2.3.1-2 / MQTT-2.2.1-3).
#[tokio::test]
async fn packet_ids_in_flight_are_unique_and_non_zero() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "ids", AtLeastOnce).await;
    for _ in 0..20 {
        publisher.publish("ids", b"m", AtLeastOnce, false).await;
    }
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(subscriber.recv_publish().await.packet_id);
    }
    assert!(!ids.contains(&0));
    let mut unique = ids.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "duplicate packet ids in flight: {ids:?}"
    );
}

/// Connects `id` with a persistent session (3.1.1 clean session 0).
async fn persistent(broker: &TestBroker, id: &str) -> (TestClient, bool) {
    let (client, connack) = TestClient::connect(broker.addr, V311, id, false).await;
    (client, connack.session_present)
}

/// MQTT-4.4.0-1 / MQTT-3.3.1-1: a QoS 1 message not acknowledged when the connection dropped
/// is sent again, with DUP=1 and the same packet id, when the session resumes.
#[tokio::test]
async fn unacknowledged_qos1_is_resent_with_dup_on_session_resume() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, _) = persistent(&broker, "resume").await;
    subscriber.subscribe("r/1", AtLeastOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    publisher
        .publish("r/1", b"unacked", AtLeastOnce, false)
        .await;
    let first = subscriber.recv_publish().await;
    assert!(!first.dup);
    drop(subscriber);

    let (mut subscriber, present) = persistent(&broker, "resume").await;
    assert!(present);
    let again = subscriber.recv_publish().await;
    assert!(again.dup, "MQTT-3.3.1-1: DUP must be 1 on redelivery");
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.qos, AtLeastOnce);
    assert_eq!(&again.payload[..], b"unacked");
    subscriber.ack(&again).await;
    subscriber.expect_nothing().await;
}

/// The same for a QoS 2 message whose PUBLISH was not acknowledged by PUBREC.
#[tokio::test]
async fn unacknowledged_qos2_is_resent_with_dup_on_session_resume() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, _) = persistent(&broker, "resume2").await;
    subscriber.subscribe("r/2", ExactlyOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    publisher
        .publish("r/2", b"unreceived", ExactlyOnce, false)
        .await;
    let first = subscriber.recv_publish().await;
    drop(subscriber);

    let (mut subscriber, present) = persistent(&broker, "resume2").await;
    assert!(present);
    let again = subscriber.recv_publish().await;
    assert!(again.dup);
    assert_eq!(again.packet_id, first.packet_id);
    assert_eq!(again.qos, ExactlyOnce);
    subscriber.ack(&again).await;
    subscriber.expect_nothing().await;
}

/// MQTT-4.4.0-1: a QoS 2 message the client acknowledged with PUBREC (and whose PUBREL it got
/// but did not complete) is not sent again; the PUBREL is, with the same packet id.
#[tokio::test]
async fn pubrel_is_resent_on_session_resume_after_pubrec() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, _) = persistent(&broker, "rel").await;
    subscriber.subscribe("r/rel", ExactlyOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    publisher.publish("r/rel", b"m", ExactlyOnce, false).await;
    let publish = subscriber.recv_publish().await;
    subscriber
        .send(&Packet::PubRec(Ack::new(publish.packet_id)))
        .await;
    assert!(matches!(subscriber.recv().await, Packet::PubRel(_)));
    drop(subscriber);

    let (mut subscriber, present) = persistent(&broker, "rel").await;
    assert!(present);
    match subscriber.recv().await {
        Packet::PubRel(rel) => assert_eq!(rel.packet_id, publish.packet_id),
        other => panic!("expected the PUBREL again, got {other:?}"),
    }
    subscriber
        .send(&Packet::PubComp(Ack::new(publish.packet_id)))
        .await;
    subscriber.expect_nothing().await;
}

/// A message acknowledged before the connection dropped is not sent again.
#[tokio::test]
async fn acknowledged_qos1_is_not_resent_on_session_resume() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, _) = persistent(&broker, "acked").await;
    subscriber.subscribe("r/a", AtLeastOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    publisher.publish("r/a", b"m", AtLeastOnce, false).await;
    subscriber.recv_acked().await;
    subscriber.ping().await; // the PUBACK has been read by the broker
    drop(subscriber);

    let (mut subscriber, present) = persistent(&broker, "acked").await;
    assert!(present);
    subscriber.expect_nothing().await;
}

/// A 5.0 client with Receive Maximum 2 (MQTT-3.3.4-9) gets only 2 unacknowledged QoS 1
/// messages at a time; each PUBACK lets one more through.
#[tokio::test]
async fn receive_maximum_limits_unacknowledged_qos1_messages() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "slow");
    connect.properties.receive_maximum = Some(2);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("window", AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..4u8 {
        publisher.publish("window", &[i], AtLeastOnce, false).await;
    }
    let m0 = subscriber.recv_publish().await;
    let m1 = subscriber.recv_publish().await;
    assert_eq!((&m0.payload[..], &m1.payload[..]), (&[0][..], &[1][..]));
    subscriber.expect_nothing().await;

    subscriber.ack(&m0).await;
    let m2 = subscriber.recv_publish().await;
    assert_eq!(&m2.payload[..], &[2]);
    subscriber.expect_nothing().await;

    subscriber.ack(&m1).await;
    subscriber.ack(&m2).await;
    let m3 = subscriber.recv_acked().await;
    assert_eq!(&m3.payload[..], &[3]);
}

/// The window counts QoS 2 messages until PUBCOMP, not until PUBREC (MQTT-3.3.4-9 counts a
/// QoS 2 PUBLISH as unacknowledged until PUBCOMP).
#[tokio::test]
async fn receive_maximum_counts_qos2_until_pubcomp() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "slow2");
    connect.properties.receive_maximum = Some(1);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("window2", ExactlyOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("window2", b"a", ExactlyOnce, false).await;
    publisher.publish("window2", b"b", ExactlyOnce, false).await;
    let a = subscriber.recv_publish().await;
    subscriber
        .send(&Packet::PubRec(Ack::new(a.packet_id)))
        .await;
    assert!(matches!(subscriber.recv().await, Packet::PubRel(_)));
    subscriber.expect_nothing().await;
    subscriber
        .send(&Packet::PubComp(Ack::new(a.packet_id)))
        .await;
    let b = subscriber.recv_acked().await;
    assert_eq!(&b.payload[..], b"b");
}

/// Receive Maximum limits QoS 1 and 2 only: QoS 0 messages still flow while the window is full.
#[tokio::test]
async fn qos0_is_not_held_back_by_a_full_window() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(V5, "full");
    connect.properties.receive_maximum = Some(1);
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("mixed/+", AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher
        .publish("mixed/1", b"held", AtLeastOnce, false)
        .await;
    let first = subscriber.recv_publish().await;
    assert_eq!(first.qos, AtLeastOnce);
    publisher
        .publish("mixed/0", b"free", AtMostOnce, false)
        .await;
    let zero = subscriber.recv_publish().await;
    assert_eq!(zero.qos, AtMostOnce);
    assert_eq!(&zero.payload[..], b"free");
}

/// limits.max_inflight is also the window towards a client that sets no Receive Maximum
/// (every 3.1.1 client).
#[tokio::test]
async fn max_inflight_limits_unacknowledged_messages_to_a_3_1_1_client() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 3)).await;
    let (mut subscriber, mut publisher) = pair(&broker, "win", AtLeastOnce).await;
    for i in 0..5u8 {
        publisher.publish("win", &[i], AtLeastOnce, false).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(subscriber.recv_publish().await);
    }
    subscriber.expect_nothing().await;
    subscriber.ack(&got[0]).await;
    assert_eq!(&subscriber.recv_publish().await.payload[..], &[3]);
}

/// MQTT 5.0 §3.3.4 and §4.9: more unreleased QoS 2 PUBLISHes than our Receive Maximum
/// (limits.max_inflight) → DISCONNECT 0x93.
#[tokio::test]
async fn exceeding_our_receive_maximum_with_qos2_gets_disconnect_0x93() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 2)).await;
    let (mut client, connack) = TestClient::connect(broker.addr, V5, "flood", true).await;
    assert_eq!(connack.properties.receive_maximum, Some(2));
    for id in 1..=3 {
        client
            .send_publish(publish_packet("flood", b"x", ExactlyOnce, false, id))
            .await;
    }
    let before = client
        .expect_disconnect(reason::RECEIVE_MAXIMUM_EXCEEDED)
        .await;
    assert_eq!(
        before.len(),
        2,
        "two PUBRECs before the DISCONNECT: {before:?}"
    );
    assert!(before.iter().all(|p| matches!(p, Packet::PubRec(_))));
}

/// A 3.1.1 client cannot be told a Receive Maximum, so it is never held to one: all its
/// unreleased QoS 2 messages are tracked (its packet ids bound them to 65,535), even when
/// its PUBRELs come only after many more PUBLISHes.
#[tokio::test]
async fn a_3_1_1_client_is_never_held_to_a_receive_maximum_it_was_not_told() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 2)).await;
    let mut client = TestClient::v311(broker.addr, "burst").await;
    const COUNT: u16 = 300;
    for id in 1..=COUNT {
        client
            .send_publish(publish_packet("burst", b"x", ExactlyOnce, false, id))
            .await;
    }
    for id in 1..=COUNT {
        match client.recv().await {
            Packet::PubRec(ack) => assert_eq!(ack.packet_id, id),
            other => panic!("expected PUBREC {id}, got {other:?}"),
        }
    }
    for id in 1..=COUNT {
        client.send(&Packet::PubRel(Ack::new(id))).await;
    }
    for id in 1..=COUNT {
        match client.recv().await {
            Packet::PubComp(ack) => assert_eq!(ack.packet_id, id),
            other => panic!("expected PUBCOMP {id}, got {other:?}"),
        }
    }
    assert_eq!(broker.broker.stats().protocol_errors.get(), 0);
}

/// The inbound window frees up on PUBREL (MQTT 5.0 §4.9): with our Receive Maximum filled by
/// distinct unreleased QoS 2 packet ids, releasing one makes room for exactly one more, and the
/// next one after that is over the window again (DISCONNECT 0x93). MQTT 5.0 only: a 3.1.1
/// client is never told a Receive Maximum, so it is never held to one.
#[tokio::test]
async fn releasing_qos2_frees_our_receive_maximum() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 2)).await;
    let (mut client, connack) = TestClient::connect(broker.addr, V5, "steady", true).await;
    assert_eq!(connack.properties.receive_maximum, Some(2));
    // Accepted, for nobody: no client subscribes to "steady".
    const NOBODY: u8 = reason::NO_MATCHING_SUBSCRIBERS;
    for id in [1, 2] {
        client
            .send_publish(publish_packet("steady", b"x", ExactlyOnce, false, id))
            .await;
        match client.recv().await {
            Packet::PubRec(ack) => assert_eq!((ack.packet_id, ack.reason), (id, NOBODY)),
            other => panic!("expected PUBREC {id}, got {other:?}"),
        }
    }
    // Both slots are taken by 1 and 2. Releasing 1 frees one of them...
    client.send(&Packet::PubRel(Ack::new(1))).await;
    match client.recv().await {
        Packet::PubComp(ack) => assert_eq!(ack.packet_id, 1),
        other => panic!("expected PUBCOMP 1, got {other:?}"),
    }
    // ...which 3 takes, so 2 and 3 fill the window again...
    client
        .send_publish(publish_packet("steady", b"x", ExactlyOnce, false, 3))
        .await;
    match client.recv().await {
        Packet::PubRec(ack) => assert_eq!((ack.packet_id, ack.reason), (3, NOBODY)),
        other => panic!("expected PUBREC 3, got {other:?}"),
    }
    // ...and 4 is one too many.
    client
        .send_publish(publish_packet("steady", b"x", ExactlyOnce, false, 4))
        .await;
    let before = client
        .expect_disconnect(reason::RECEIVE_MAXIMUM_EXCEEDED)
        .await;
    assert!(
        before.is_empty(),
        "nothing before the DISCONNECT: {before:?}"
    );
}

/// MQTT-3.10.4-2/4: after UNSUBSCRIBE (acknowledged with its packet id) the client gets no
/// more messages for the filter; 3.1.1 UNSUBACK has no payload.
#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "un/#", AtMostOnce).await;
    subscriber
        .send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 31,
            filters: vec!["un/#".to_string()],
            properties: Properties::default(),
        }))
        .await;
    match subscriber.recv().await {
        Packet::UnsubAck(ack) => {
            assert_eq!(ack.packet_id, 31);
            assert!(ack.reasons.is_empty());
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
    publisher.publish("un/x", b"m", AtLeastOnce, false).await;
    subscriber.expect_nothing().await;
}

/// 5.0 UNSUBACK has a reason code per filter: 0x00 for a removed subscription, 0x11 for a
/// filter the client was not subscribed to.
#[tokio::test]
async fn v5_unsuback_says_which_subscriptions_existed() {
    let broker = TestBroker::start_default().await;
    let mut client = TestClient::v5(broker.addr, "un5").await;
    client.subscribe("un5/a", AtMostOnce).await;
    client
        .send(&Packet::Unsubscribe(Unsubscribe {
            packet_id: 32,
            filters: vec!["un5/a".to_string(), "un5/b".to_string()],
            properties: Properties::default(),
        }))
        .await;
    match client.recv().await {
        Packet::UnsubAck(ack) => {
            assert_eq!(ack.packet_id, 32);
            assert_eq!(
                ack.reasons,
                vec![reason::SUCCESS, reason::NO_SUBSCRIPTION_EXISTED]
            );
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }
}

/// MQTT-3.8.4-3: a SUBSCRIBE for a filter the client already has replaces the subscription
/// (here: its QoS) instead of adding a second one.
#[tokio::test]
async fn resubscribing_replaces_the_subscription() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "re", ExactlyOnce).await;
    subscriber.subscribe("re", AtMostOnce).await;
    publisher.publish("re", b"m", ExactlyOnce, false).await;
    let publish = subscriber.recv_publish().await;
    assert_eq!(publish.qos, AtMostOnce);
    subscriber.expect_nothing().await;
    assert_eq!(broker.broker.subscription_count(), 1);
}

/// A QoS 1 PUBLISH with DUP=1 is accepted and acknowledged like any other.
#[tokio::test]
async fn qos1_publish_with_dup_is_accepted() {
    let broker = TestBroker::start_default().await;
    let (mut subscriber, mut publisher) = pair(&broker, "dup1", AtLeastOnce).await;
    let publish = Publish {
        dup: true,
        ..publish_packet("dup1", b"again", AtLeastOnce, false, 3)
    };
    let ack = publisher.publish_qos1(publish).await;
    assert_eq!(ack.packet_id, 3);
    let delivered = subscriber.recv_acked().await;
    assert!(
        !delivered.dup,
        "MQTT-3.3.1-3: the DUP flag of an incoming PUBLISH is not propagated"
    );
}

/// The window also holds when messages were queued before the client attached: a resumed
/// session with many queued messages sends only the window's worth at first.
#[tokio::test]
async fn queued_messages_respect_the_window_on_resume() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 2)).await;
    let (mut subscriber, _) = persistent(&broker, "queued").await;
    subscriber.subscribe("q/#", AtLeastOnce).await;
    subscriber.disconnect().await;
    let mut publisher = TestClient::v311(broker.addr, "pub").await;
    for i in 0..4u8 {
        publisher.publish("q/x", &[i], AtLeastOnce, false).await;
    }
    let (mut subscriber, present) = persistent(&broker, "queued").await;
    assert!(present);
    let a = subscriber.recv_publish().await;
    let _b = subscriber.recv_publish().await;
    subscriber.expect_nothing().await;
    subscriber.ack(&a).await;
    assert_eq!(&subscriber.recv_publish().await.payload[..], &[2]);
}
