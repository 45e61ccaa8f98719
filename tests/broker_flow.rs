//! Flow control when a subscriber's queue is full (`limits.max_queued_messages`,
//! `max_queued_bytes`): a publisher (QoS 0 too) is held back until there is room instead of
//! losing messages; a subscriber that keeps messages waiting for `limits.queue_full_wait_ms`
//! (even one that drains a message now and then) is declared slow: its messages are dropped
//! (counted) or it is disconnected, and it stops holding publishers and other subscribers up;
//! an offline session's full queue drops and counts.

mod common;

use std::time::{Duration, Instant};

use common::{TestBroker, TestClient, config};
use supermq::protocol::{Ack, Packet, PropertyValues, ProtocolVersion, QoS};

fn small_queue(wait_ms: u64) -> supermq::config::Config {
    let mut config = config();
    config.limits.max_queued_messages = 4;
    config.limits.queue_full_wait_ms = wait_ms;
    config
}

/// A v5 subscriber that lets only one QoS 1 message be in flight at a time.
async fn slow_subscriber(broker: &TestBroker, id: &str) -> TestClient {
    let mut connect = common::connect_packet(ProtocolVersion::V5, id);
    connect.properties = PropertyValues {
        receive_maximum: Some(1),
        ..PropertyValues::default()
    }
    .into();
    let (mut client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert_eq!(connack.code, 0);
    client.subscribe("flow/#", QoS::AtLeastOnce).await;
    client
}

#[tokio::test]
async fn publisher_outpacing_a_slow_subscriber_loses_nothing() {
    let broker = TestBroker::start(small_queue(5_000)).await;
    let mut subscriber = slow_subscriber(&broker, "slow").await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "fast", true).await;

    // 40 messages through a queue of 4 and a window of 1: without flow control most would
    // be dropped. Send them all at once; the broker must hold the publisher back.
    const COUNT: u16 = 40;
    for id in 1..=COUNT {
        let publish =
            common::publish_packet("flow/t", &id.to_be_bytes(), QoS::AtLeastOnce, false, id);
        publisher.send(&Packet::Publish(publish)).await;
    }
    let mut received = Vec::new();
    while received.len() < usize::from(COUNT) {
        let publish = subscriber.recv_publish().await;
        received.push(u16::from_be_bytes([publish.payload[0], publish.payload[1]]));
        subscriber
            .send(&Packet::PubAck(Ack::new(publish.packet_id)))
            .await;
    }
    assert_eq!(
        received,
        (1..=COUNT).collect::<Vec<_>>(),
        "all delivered, in order"
    );
    let mut acked = 0;
    while acked < COUNT {
        match publisher.recv().await {
            Packet::PubAck(_) => acked += 1,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }
    assert_eq!(broker.broker.stats().dropped_queue_full.get(), 0);
}

#[tokio::test]
async fn publisher_ack_waits_for_room_in_the_full_queue() {
    let broker = TestBroker::start(small_queue(5_000)).await;
    let mut subscriber = slow_subscriber(&broker, "holder").await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "pusher", true).await;
    // 1 in flight + 4 queued fill the subscriber; the 6th publish must not be acked yet.
    for _ in 0..5 {
        assert_eq!(
            publisher
                .publish("flow/t", b"x", QoS::AtLeastOnce, false)
                .await,
            0
        );
    }
    let first = subscriber.recv_publish().await;
    publisher
        .send(&Packet::Publish(common::publish_packet(
            "flow/t",
            b"sixth",
            QoS::AtLeastOnce,
            false,
            9,
        )))
        .await;
    publisher.expect_nothing().await;
    // Acking one message lets the queue move, so the held-back publish is taken and acked.
    subscriber
        .send(&Packet::PubAck(Ack::new(first.packet_id)))
        .await;
    match publisher.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.packet_id, 9),
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

#[tokio::test]
async fn stalled_subscriber_drops_after_the_wait_and_stops_holding_publishers_up() {
    let broker = TestBroker::start(small_queue(300)).await;
    let _stuck = slow_subscriber(&broker, "stuck").await; // never acks
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;
    for _ in 0..5 {
        publisher
            .publish("flow/t", b"x", QoS::AtLeastOnce, false)
            .await;
    }
    let started = Instant::now();
    publisher
        .publish("flow/t", b"waits", QoS::AtLeastOnce, false)
        .await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "held back for the wait, got {waited:?}"
    );
    assert_eq!(broker.broker.stats().dropped_slow_consumer.get(), 1);
    assert_eq!(broker.broker.stats().slow_consumers.get(), 1);

    // Declared slow: the next ones are dropped without waiting.
    let started = Instant::now();
    for _ in 0..3 {
        publisher
            .publish("flow/t", b"x", QoS::AtLeastOnce, false)
            .await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "no more waiting"
    );
    assert_eq!(broker.broker.stats().dropped_slow_consumer.get(), 4);
    assert_eq!(broker.broker.stats().dropped_queue_full.get(), 0);
}

#[tokio::test]
async fn qos0_publisher_is_held_back_too_instead_of_losing_messages() {
    let broker = TestBroker::start(small_queue(5_000)).await;
    let mut connect = common::connect_packet(ProtocolVersion::V5, "q0sub");
    connect.properties = PropertyValues {
        receive_maximum: Some(1),
        ..PropertyValues::default()
    }
    .into();
    let (mut subscriber, _) = TestClient::connect_with(broker.addr, connect).await;
    subscriber.subscribe("flow/#", QoS::AtMostOnce).await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "q0pub", true).await;
    // Far more than the queue holds, as fast as the socket takes them; the subscriber reads
    // slowly. Every message must arrive: the broker stops reading the publisher meanwhile.
    const COUNT: u16 = 200;
    for id in 1..=COUNT {
        let publish =
            common::publish_packet("flow/t", &id.to_be_bytes(), QoS::AtMostOnce, false, 0);
        publisher.send(&Packet::Publish(publish)).await;
    }
    for id in 1..=COUNT {
        let publish = subscriber.recv_publish().await;
        assert_eq!(publish.payload.as_ref(), id.to_be_bytes());
        if id % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(broker.broker.stats().dropped_queue_full.get(), 0);
}

#[tokio::test]
async fn messages_for_an_offline_session_beyond_the_queue_are_dropped_and_counted() {
    let broker = TestBroker::start(small_queue(5_000)).await;
    let (subscriber, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "away", false).await;
    let mut subscriber = subscriber;
    subscriber.subscribe("flow/#", QoS::AtLeastOnce).await;
    subscriber.disconnect().await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "offpub", true).await;
    let started = Instant::now();
    for _ in 0..6 {
        publisher
            .publish("flow/t", b"x", QoS::AtLeastOnce, false)
            .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "an offline session holds nobody up"
    );
    assert_eq!(broker.broker.stats().dropped_queue_full.get(), 2);
}

/// A subscriber that acks one message every `every`, in the background, until dropped.
fn ack_slowly(mut client: TestClient, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let common::Received::Packet(packet) =
            client.recv_within(Duration::from_secs(30)).await
        {
            if let Packet::Publish(publish) = packet {
                tokio::time::sleep(every).await;
                client.ack(&publish).await;
            }
        }
    })
}

/// The first scenario, scaled down: a subscriber on `#` that takes one message now and
/// then (Receive Maximum 1, an ack every 100 ms) must not pace everyone else to its speed. Its
/// partial drains do not end the wait; after `queue_full_wait_ms` it is declared slow and its
/// messages are dropped, and a fast subscriber on the publisher's topic gets every message.
#[tokio::test]
async fn a_subscriber_that_drains_now_and_then_is_declared_slow_and_holds_nobody_up() {
    let mut config = config();
    config.limits.max_queued_messages = 10;
    config.limits.queue_full_wait_ms = 500;
    let broker = TestBroker::start(config).await;
    let mut connect = common::connect_packet(ProtocolVersion::V5, "dawdler");
    connect.properties.receive_maximum = Some(1);
    let (mut slow, _) = TestClient::connect_with(broker.addr, connect).await;
    slow.subscribe("#", QoS::AtLeastOnce).await;
    let slow = ack_slowly(slow, Duration::from_millis(100));
    let mut fast = TestClient::v5(broker.addr, "fast").await;
    fast.subscribe("x/#", QoS::AtLeastOnce).await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;

    const COUNT: u16 = 300;
    let started = Instant::now();
    for id in 1..=COUNT {
        let publish = common::publish_packet("x/1", &id.to_be_bytes(), QoS::AtLeastOnce, false, id);
        publisher.send(&Packet::Publish(publish)).await;
    }
    for id in 1..=COUNT {
        let publish = fast.recv_acked().await;
        assert_eq!(publish.payload.as_ref(), id.to_be_bytes(), "in order");
    }
    let took = started.elapsed();
    // Without the slow declaration this takes COUNT × 100 ms = 30 s; with it, the wait of
    // 500 ms once plus the transfer.
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let stats = broker.broker.stats();
    assert_eq!(stats.slow_consumers.get(), 1);
    assert!(stats.dropped_slow_consumer.get() > 0);
    assert_eq!(stats.dropped_queue_full.get(), 0);
    slow.abort();
}

/// With `slow_consumer_policy = "disconnect"` a slow subscriber's client is disconnected
/// (5.0: DISCONNECT 0x97 Quota exceeded) and the publisher goes on.
#[tokio::test]
async fn the_disconnect_policy_disconnects_a_slow_subscriber() {
    let mut config = small_queue(300);
    config.limits.slow_consumer_policy = "disconnect".to_string();
    let broker = TestBroker::start(config).await;
    let mut stuck = slow_subscriber(&broker, "stuck").await; // never acks
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;
    for _ in 0..8 {
        publisher
            .publish("flow/t", b"x", QoS::AtLeastOnce, false)
            .await;
    }
    let got = stuck
        .expect_disconnect(supermq::protocol::reason::QUOTA_EXCEEDED)
        .await;
    assert!(!got.is_empty(), "it got what its window allowed first");
    assert_eq!(broker.broker.stats().slow_consumers.get(), 1);
}

/// A subscriber (Receive Maximum 1, acking nothing) declared slow by a publisher that met its
/// full queue (one in flight and four queued), which has then taken what it had, in order:
/// the subscriber and the publisher.
async fn slowed_and_drained(broker: &TestBroker, id: &str) -> (TestClient, TestClient) {
    let mut subscriber = slow_subscriber(broker, id).await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;
    for i in 0..6u8 {
        publisher
            .publish("flow/t", &[i], QoS::AtLeastOnce, false)
            .await;
    }
    assert_eq!(broker.broker.stats().slow_consumers.get(), 1);
    for i in 0..5u8 {
        assert_eq!(subscriber.recv_acked().await.payload.as_ref(), [i]);
    }
    (subscriber, publisher)
}

/// A slow session takes messages again once its queue has drained to half.
#[tokio::test]
async fn a_slow_subscriber_takes_messages_again_once_it_has_drained_to_half() {
    let broker = TestBroker::start(small_queue(300)).await;
    let (mut subscriber, mut publisher) = slowed_and_drained(&broker, "late").await;
    publisher
        .publish("flow/t", b"again", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(subscriber.recv_acked().await.payload.as_ref(), b"again");
}

/// A session is full at `max_queued_bytes` too, whatever its message count, counting what is
/// in flight as well as what is queued; an empty queue still takes one message larger than
/// that.
#[tokio::test]
async fn queues_are_bounded_in_bytes_as_well_as_messages() {
    let mut config = config();
    config.limits.max_queued_messages = 1000;
    config.limits.max_queued_bytes = 1024;
    config.limits.queue_full_wait_ms = 300;
    let broker = TestBroker::start(config).await;
    let mut subscriber = slow_subscriber(&broker, "bytes").await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;
    // One goes in flight and one is queued: 2 × 406 bytes; a third would pass 1024.
    for i in 0..6u8 {
        publisher
            .publish("flow/t", &[i; 400], QoS::AtLeastOnce, false)
            .await;
    }
    let stats = broker.broker.stats();
    assert_eq!(stats.dropped_slow_consumer.get(), 4);
    for i in 0..2u8 {
        assert_eq!(subscriber.recv_acked().await.payload[0], i);
    }
    subscriber.expect_nothing().await;
    // Offline, the same bound drops (counted) instead.
    drop(subscriber);
    let (offline, _) = TestClient::connect(broker.addr, ProtocolVersion::V311, "away", false).await;
    let mut offline = offline;
    offline.subscribe("big/#", QoS::AtLeastOnce).await;
    offline.disconnect().await;
    for _ in 0..3 {
        publisher
            .publish("big/t", &[0; 2000], QoS::AtLeastOnce, false)
            .await;
    }
    assert_eq!(
        stats.dropped_queue_full.get(),
        2,
        "one 2000-byte message fits"
    );
}

/// A client that publishes to its own subscription, faster than its queue drains, and acks
/// what it is sent as it goes: it is held back like any publisher, but while it is held it can
/// still acknowledge, so it drains its own queue. Nothing is lost and nobody is declared slow
/// (a reader that stopped reading altogether would wait `queue_full_wait_ms` and then drop).
#[tokio::test]
async fn a_client_publishing_to_its_own_subscription_loses_nothing() {
    let mut config = small_queue(10_000);
    config.limits.max_inflight = 2;
    let broker = TestBroker::start(config).await;
    let mut client = TestClient::v5(broker.addr, "echo").await;
    client.subscribe("self/#", QoS::AtLeastOnce).await;
    const COUNT: u16 = 300;
    let started = Instant::now();
    let (mut acked, mut received) = (0, Vec::new());
    // First a burst that fills everything the broker takes before it holds the client back:
    // 2 in flight, 4 queued, 64 parked. Its next packets are the acks it must read.
    const BURST: u16 = 2 + 4 + 64;
    for id in 1..=BURST {
        let publish =
            common::publish_packet("self/t", &id.to_be_bytes(), QoS::AtLeastOnce, false, id);
        client.send(&Packet::Publish(publish)).await;
    }
    let mut id = BURST;
    while acked < COUNT || received.len() < usize::from(COUNT) {
        if id < COUNT {
            id += 1;
            let publish =
                common::publish_packet("self/t", &id.to_be_bytes(), QoS::AtLeastOnce, false, id);
            client.send(&Packet::Publish(publish)).await;
        }
        // Whatever has arrived, acknowledged at once, as a client library does.
        let wait = if id < COUNT { 1 } else { 200 };
        let mut acks = Vec::new();
        while let Some(packet) = client.recv_within(Duration::from_millis(wait)).await.open() {
            match packet {
                Packet::PubAck(_) => acked += 1,
                Packet::Publish(publish) => {
                    acks.push(publish.packet_id);
                    received.push(u16::from_be_bytes([publish.payload[0], publish.payload[1]]));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        for packet_id in acks {
            client.send(&Packet::PubAck(Ack::new(packet_id))).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "stuck: {acked} acked"
        );
    }
    assert_eq!(received, (1..=COUNT).collect::<Vec<_>>(), "all, in order");
    let stats = broker.broker.stats();
    assert_eq!(stats.slow_consumers.get(), 0);
    assert_eq!(stats.dropped_slow_consumer.get(), 0);
}

/// A broker whose sessions hold 1024 bytes, and a subscriber on `flow/#` that acknowledges
/// nothing.
async fn hoarder_of_1024_bytes() -> (TestBroker, TestClient) {
    let mut config = config();
    config.limits.max_queued_bytes = 1024;
    config.limits.queue_full_wait_ms = 300;
    let broker = TestBroker::start(config).await;
    let mut hoarder = TestClient::v5(broker.addr, "hoarder").await;
    hoarder.subscribe("flow/#", QoS::AtLeastOnce).await;
    (broker, hoarder)
}

/// A client that reads every message but never acknowledges one: what it has in flight counts
/// against `max_queued_bytes`, so it cannot make the broker hold a whole Receive Maximum of
/// large messages; once its window holds the bound, it keeps messages waiting and is slow.
#[tokio::test]
async fn a_client_that_reads_but_never_acknowledges_holds_no_more_than_the_byte_bound() {
    let (broker, mut hoarder) = hoarder_of_1024_bytes().await;
    let (mut publisher, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "pub", true).await;
    for i in 0..10u8 {
        publisher
            .publish("flow/t", &[i; 400], QoS::AtLeastOnce, false)
            .await;
    }
    // Two 406-byte messages fit in 1024 bytes; it reads them and acknowledges neither.
    for i in 0..2u8 {
        assert_eq!(hoarder.recv_publish().await.payload[0], i);
    }
    hoarder.expect_nothing().await;
    let stats = broker.broker.stats();
    assert_eq!(stats.dropped_slow_consumer.get(), 8);
}

/// The byte bound counts a message's properties too: user properties (or correlation data)
/// can carry as much as a payload.
#[tokio::test]
async fn properties_count_against_the_byte_bound() {
    let (broker, mut hoarder) = hoarder_of_1024_bytes().await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..5u16 {
        let mut publish = common::publish_packet("flow/t", b"x", QoS::AtLeastOnce, false, i + 1);
        publish.properties.user_properties = vec![("k".to_string(), "v".repeat(600))];
        publisher.publish_qos1(publish).await;
    }
    assert_eq!(
        hoarder
            .recv_publish()
            .await
            .properties
            .user_properties
            .len(),
        1
    );
    hoarder.expect_nothing().await;
    assert_eq!(broker.broker.stats().dropped_slow_consumer.get(), 4);
}

/// A session that was slow takes messages again once it has drained, but for a while it makes
/// nobody wait: a subscriber just under the speed that makes it slow does not pace its
/// publishers again each time it catches up.
#[tokio::test]
async fn a_subscriber_that_was_slow_makes_nobody_wait_again_for_a_while() {
    let broker = TestBroker::start(small_queue(300)).await;
    let (mut subscriber, mut publisher) = slowed_and_drained(&broker, "recovering").await;
    let started = Instant::now();
    for i in 10..20u8 {
        publisher
            .publish("flow/t", &[i], QoS::AtLeastOnce, false)
            .await;
    }
    assert!(
        started.elapsed() < Duration::from_millis(250),
        "the publisher waited {:?}",
        started.elapsed()
    );
    // What fitted came through, in order: one in flight and four queued.
    for i in 10..15u8 {
        assert_eq!(subscriber.recv_acked().await.payload.as_ref(), [i]);
    }
    assert_eq!(broker.broker.stats().slow_consumers.get(), 1);
}
