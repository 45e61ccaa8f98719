//! The `$SYS` tree (src/broker/sys.rs): mosquitto's `$SYS/broker/...` figures, published
//! every `sys.interval_secs` as retained QoS 0 messages, seen by `$SYS` subscribers and never
//! by `#` ones (MQTT-4.7.2-1), and counted in none of the figures they report. Also the byte
//! counters behind `bytes/received` and `bytes/sent`, exactly. That the tree never crosses a
//! route is in cluster_sys.rs.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use supermq::protocol::{Packet, Publish, QoS};

/// Every topic of the tree.
const TOPICS: [&str; 14] = [
    "$SYS/broker/version",
    "$SYS/broker/uptime",
    "$SYS/broker/clients/connected",
    "$SYS/broker/clients/total",
    "$SYS/broker/messages/received",
    "$SYS/broker/messages/sent",
    "$SYS/broker/publish/messages/dropped",
    "$SYS/broker/load/messages/received/1min",
    "$SYS/broker/load/messages/received/5min",
    "$SYS/broker/load/messages/received/15min",
    "$SYS/broker/subscriptions/count",
    "$SYS/broker/retained messages/count",
    "$SYS/broker/bytes/received",
    "$SYS/broker/bytes/sent",
];

/// How long a test waits for the tree to show something: a few intervals of one second.
const UPDATES: Duration = Duration::from_secs(10);

/// A broker that publishes its tree every `secs` seconds (0: never).
async fn broker_with_tree(secs: u64) -> TestBroker {
    let mut config = config();
    config.sys.interval_secs = secs;
    TestBroker::start(config).await
}

/// The last payload of each `$SYS` topic a client got, and how many updates it got.
#[derive(Default)]
struct Tree {
    last: HashMap<String, String>,
    updates: usize,
}

impl Tree {
    fn get(&self, topic: &str) -> &str {
        self.last
            .get(&format!("$SYS/broker/{topic}"))
            .map_or("", String::as_str)
    }

    fn count(&self, topic: &str) -> Option<u64> {
        self.get(topic).parse().ok()
    }

    fn load(&self, period: &str) -> Option<f64> {
        self.get(&format!("load/messages/received/{period}"))
            .parse()
            .ok()
    }

    /// Reads `client`'s messages into the tree until `done` holds; fails after [`UPDATES`].
    async fn read_until(
        &mut self,
        client: &mut TestClient,
        what: &str,
        done: impl Fn(&Tree) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + UPDATES;
        while !done(self) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match client.recv_within(left).await.open() {
                Some(Packet::Publish(publish)) => self.take(publish),
                Some(other) => panic!("expected PUBLISH, got {other:?}"),
                None => panic!("timed out waiting until {what}; the tree: {:?}", self.last),
            }
        }
    }

    fn take(&mut self, publish: Publish) {
        assert!(
            TOPICS.contains(&publish.topic.as_str()),
            "not a topic of the tree: {}",
            publish.topic
        );
        assert_eq!(publish.qos, QoS::AtMostOnce, "{}", publish.topic);
        let payload = String::from_utf8(publish.payload.to_vec()).expect("UTF-8 payload");
        self.last.insert(publish.topic, payload);
        self.updates += 1;
    }
}

#[tokio::test]
async fn the_tree_arrives_with_plausible_figures() {
    let broker = broker_with_tree(1).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("$SYS/broker/#", QoS::AtLeastOnce).await;
    let mut tree = Tree::default();
    tree.read_until(&mut watcher, "every topic arrived", |tree| {
        tree.last.len() == TOPICS.len()
    })
    .await;
    assert_eq!(
        tree.get("version"),
        format!("supermq version {}", env!("CARGO_PKG_VERSION"))
    );
    let uptime = tree.get("uptime");
    let seconds = uptime.strip_suffix(" seconds").expect("\"N seconds\"");
    assert!(seconds.parse::<u64>().is_ok(), "{uptime}");

    let mut subscriber = TestClient::v311(broker.addr, "subscriber").await;
    subscriber.subscribe("t/#", QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "publisher").await;
    for _ in 0..5 {
        publisher
            .publish("t/x", b"hello", QoS::AtLeastOnce, false)
            .await;
        subscriber.recv_acked().await;
    }
    tree.read_until(
        &mut watcher,
        "the clients and messages are counted",
        |tree| {
            tree.count("clients/connected") == Some(3)
                && tree.count("messages/received") == Some(5)
                && tree.load("15min").is_some_and(|load| load > 0.0)
        },
    )
    .await;
    // An update is published at once, in order, uptime first: with the next uptime in, every
    // figure of the update above is too.
    let uptime = tree.get("uptime").to_string();
    tree.read_until(&mut watcher, "the next update", |tree| {
        tree.get("uptime") != uptime
    })
    .await;
    // Sent: the five deliveries and nothing of the tree's own updates.
    assert_eq!(tree.count("messages/sent"), Some(5));
    assert_eq!(tree.count("clients/total"), Some(3));
    assert_eq!(tree.count("subscriptions/count"), Some(2));
    assert_eq!(tree.count("retained messages/count"), Some(0));
    assert_eq!(tree.count("publish/messages/dropped"), Some(0));
    assert!(
        tree.count("bytes/received") > Some(5 * 5),
        "{:?}",
        tree.last
    );
    assert!(tree.count("bytes/sent") > Some(5 * 5), "{:?}", tree.last);
    for period in ["1min", "5min", "15min"] {
        let load = tree.get(&format!("load/messages/received/{period}"));
        assert!(
            load.split_once('.')
                .is_some_and(|(_, decimals)| decimals.len() == 2),
            "mosquitto's two decimals: {load}"
        );
        assert!(tree.load(period) > Some(0.0), "{period}: {load}");
    }

    // A late subscriber gets the whole tree at once, retained.
    let mut late = TestClient::v5(broker.addr, "late").await;
    late.subscribe("$SYS/#", QoS::AtMostOnce).await;
    let mut topics = Vec::new();
    for _ in TOPICS {
        let publish = late.recv_publish().await;
        assert!(publish.retain, "{} arrives retained", publish.topic);
        topics.push(publish.topic);
    }
    topics.sort();
    let mut expected = TOPICS.map(String::from).to_vec();
    expected.sort();
    assert_eq!(topics, expected);
}

/// MQTT-4.7.2-1: a leading wildcard does not match a `$` topic, so `#` and `+/...`
/// subscribers get none of the tree while a `$SYS` subscriber gets its updates.
#[tokio::test]
async fn wildcard_subscribers_get_none_of_it() {
    let broker = broker_with_tree(1).await;
    let mut all = TestClient::v5(broker.addr, "all").await;
    all.subscribe("#", QoS::AtMostOnce).await;
    let mut plus = TestClient::v311(broker.addr, "plus").await;
    plus.subscribe("+/broker/uptime", QoS::AtMostOnce).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher
        .subscribe("$SYS/broker/uptime", QoS::AtMostOnce)
        .await;
    // The retained value, then at least one update published after `all` and `plus`
    // subscribed (and so offered to them at the same moment, had they matched).
    let mut tree = Tree::default();
    tree.read_until(&mut watcher, "two uptimes", |tree| tree.updates >= 2)
        .await;
    all.expect_nothing().await;
    plus.expect_nothing().await;
}

#[tokio::test]
async fn interval_zero_publishes_nothing() {
    let broker = broker_with_tree(0).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("$SYS/#", QoS::AtMostOnce).await;
    // Nothing retained at subscribe, nothing published for more than a second.
    match watcher.recv_within(Duration::from_millis(1500)).await {
        Received::Silent => {}
        other => panic!("expected nothing, got {other:?}"),
    }
}

/// A broker with only a `$SYS` subscriber is idle: the updates it gets move none of the
/// figures (else `messages/sent` and `bytes/sent` would count up by themselves).
#[tokio::test]
async fn updates_move_no_figure() {
    let broker = broker_with_tree(1).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("$SYS/broker/#", QoS::AtMostOnce).await;
    let mut tree = Tree::default();
    tree.read_until(&mut watcher, "the tree and an update", |tree| {
        tree.last.len() == TOPICS.len() && tree.updates > TOPICS.len()
    })
    .await;
    let stats = broker.broker.stats();
    let figures = || {
        [
            stats.messages_received.get(),
            stats.messages_sent.get(),
            stats.messages_routed.get(),
            stats.bytes_received.get(),
            stats.bytes_sent.get(),
            stats.drops().iter().map(|(_, count)| count).sum(),
            stats.deliveries_denied.get(),
            broker.broker.retained_count() as u64,
        ]
    };
    let before = figures();
    let seen = tree.updates;
    tree.read_until(&mut watcher, "two more updates", |tree| {
        tree.updates >= seen + 2
    })
    .await;
    assert_eq!(figures(), before);
}

/// A consumer group on a `$SYS` filter has its member served, as any subscriber.
#[tokio::test]
async fn a_group_member_gets_updates() {
    let broker = broker_with_tree(1).await;
    let mut member = TestClient::v5(broker.addr, "member").await;
    member
        .subscribe("$share/g/$SYS/broker/uptime", QoS::AtMostOnce)
        .await;
    let publish = member.recv_publish().await;
    assert_eq!(publish.topic, "$SYS/broker/uptime");
}

/// `bytes/received` and `bytes/sent` count what crosses the socket, exactly: a CONNECT and
/// a PINGREQ in, a CONNACK and a PINGRESP out.
#[tokio::test]
async fn bytes_are_counted_exactly() {
    let broker = broker_with_tree(0).await;
    let connect = raw_connect(b"MQTT", 4, false, "raw");
    let pingreq = [0xC0, 0x00];
    let mut client = TestClient::open(broker.addr, supermq::protocol::ProtocolVersion::V311).await;
    client.send_bytes(&connect).await;
    assert!(matches!(client.recv().await, Packet::ConnAck(_)));
    client.send_bytes(&pingreq).await;
    assert!(matches!(client.recv().await, Packet::PingResp));
    let stats = broker.broker.stats();
    let received = (connect.len() + pingreq.len()) as u64;
    wait_until("the bytes are counted", || {
        stats.bytes_received.get() == received
    })
    .await;
    // CONNACK (3.1.1): 4 bytes; PINGRESP: 2.
    assert_eq!(stats.bytes_sent.get(), 4 + 2);
}
