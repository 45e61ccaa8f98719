//! Consumer groups on one node: `$g/{group}/{filter}` and `$share/{group}/{filter}` for MQTT
//! 3.1.1 and 5.0 clients, each message to exactly one member, several groups and plain
//! subscribers side by side, no retained messages to members, and hand-over of unacknowledged
//! messages when a member leaves. The cluster-wide behaviour is in cluster_groups.rs.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use supermq::protocol::{ProtocolVersion, QoS, reason};

const QUIET: Duration = Duration::from_millis(500);

#[tokio::test]
async fn each_message_goes_to_exactly_one_member_for_both_syntaxes_and_versions() {
    let broker = TestBroker::start_default().await;
    for prefix in ["$g", "$share"] {
        let filter = format!("{prefix}/workers/jobs/+");
        let mut members = Vec::new();
        for (i, version) in [
            ProtocolVersion::V5,
            ProtocolVersion::V311,
            ProtocolVersion::V5,
        ]
        .into_iter()
        .enumerate()
        {
            let (mut client, _) =
                TestClient::connect(broker.addr, version, &format!("{prefix}-m{i}"), true).await;
            let suback = client.subscribe(&filter, QoS::AtLeastOnce).await;
            assert_eq!(suback.reasons, vec![1], "{filter}");
            members.push(client);
        }
        let tasks: Vec<_> = members
            .into_iter()
            .map(|m| tokio::spawn(collect(m, QUIET)))
            .collect();
        let mut publisher = TestClient::v5(broker.addr, &format!("{prefix}-pub")).await;
        for i in 0..300 {
            let code = publisher
                .publish(&format!("jobs/{i}"), b"job", QoS::AtLeastOnce, false)
                .await;
            assert_eq!(code, reason::SUCCESS);
        }
        let mut seen = HashSet::new();
        for task in tasks {
            let (_, got) = task.await.expect("collector");
            assert!(got.len() > 50, "{prefix}: a member got only {}", got.len());
            for publish in got {
                assert!(
                    seen.insert(publish.topic.clone()),
                    "{} twice",
                    publish.topic
                );
            }
        }
        assert_eq!(seen.len(), 300, "{prefix}: every message exactly once");
    }
}

#[tokio::test]
async fn malformed_group_filters_are_refused_in_the_suback() {
    let broker = TestBroker::start_default().await;
    let bad = [
        "$share//t",
        "$share/g+/t",
        "$g/#",
        "$share/g",
        "$share/g/",
        "$g/g/a/#/b",
    ];
    let mut v5 = TestClient::v5(broker.addr, "v5").await;
    let mut v3 = TestClient::v311(broker.addr, "v3").await;
    for filter in bad {
        let suback = v5.subscribe(filter, QoS::AtLeastOnce).await;
        assert_eq!(
            suback.reasons,
            vec![reason::TOPIC_FILTER_INVALID],
            "{filter}"
        );
        let suback = v3.subscribe(filter, QoS::AtLeastOnce).await;
        assert_eq!(suback.reasons, vec![0x80], "{filter}");
    }
    assert_eq!(broker.broker.subscription_count(), 0);
}

#[tokio::test]
async fn two_groups_and_a_plain_subscriber_each_get_every_message() {
    let broker = TestBroker::start_default().await;
    let mut clients = Vec::new();
    for (id, filter) in [
        ("a1", "$g/a/t/#"),
        ("a2", "$g/a/t/#"),
        ("b1", "$share/b/t/#"),
        ("plain", "t/#"),
    ] {
        let mut client = TestClient::v5(broker.addr, id).await;
        client.subscribe(filter, QoS::AtLeastOnce).await;
        clients.push(client);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(collect(c, QUIET)))
        .collect();
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..100 {
        publisher
            .publish(&format!("t/{i}"), b"x", QoS::AtLeastOnce, false)
            .await;
    }
    let mut counts = Vec::new();
    for task in tasks {
        counts.push(task.await.expect("collector").1.len());
    }
    assert_eq!(counts[0] + counts[1], 100, "group a: {counts:?}");
    assert_eq!(counts[2], 100, "group b: {counts:?}");
    assert_eq!(counts[3], 100, "plain: {counts:?}");
}

#[tokio::test]
async fn group_members_get_no_retained_messages_on_subscribe() {
    let broker = TestBroker::start_default().await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher
        .publish("r/1", b"kept", QoS::AtLeastOnce, true)
        .await;
    let mut member = TestClient::v5(broker.addr, "member").await;
    member.subscribe("$share/g/r/#", QoS::AtLeastOnce).await;
    member.expect_nothing().await;
    let mut plain = TestClient::v5(broker.addr, "plain").await;
    plain.subscribe("r/#", QoS::AtLeastOnce).await;
    assert_eq!(plain.recv_acked().await.topic, "r/1");
}

#[tokio::test]
async fn unacknowledged_messages_of_a_member_that_leaves_go_to_another() {
    let broker = TestBroker::start_default().await;
    let mut leaving = TestClient::v5(broker.addr, "leaving").await;
    leaving.subscribe("$g/g/h/#", QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..10 {
        publisher
            .publish(&format!("h/{i}"), b"x", QoS::AtLeastOnce, false)
            .await;
    }
    // Received, never acknowledged.
    for _ in 0..10 {
        leaving.recv_publish().await;
    }
    let mut staying = TestClient::v5(broker.addr, "staying").await;
    staying.subscribe("$g/g/h/#", QoS::AtLeastOnce).await;
    drop(leaving);
    let mut topics = HashSet::new();
    for _ in 0..10 {
        topics.insert(staying.recv_acked().await.topic);
    }
    assert_eq!(topics.len(), 10);
    staying.expect_nothing().await;
}

#[tokio::test]
async fn group_messages_queued_for_an_expired_member_go_to_another() {
    let broker = TestBroker::start_default().await;
    let mut connect = connect_packet(ProtocolVersion::V5, "away");
    connect.properties.session_expiry_interval = Some(1);
    let (mut away, _) = TestClient::connect_with(broker.addr, connect).await;
    away.subscribe("$share/g/x/+", QoS::AtLeastOnce).await;
    away.disconnect().await;
    let mut present = TestClient::v5(broker.addr, "present").await;
    present.subscribe("$share/g/x/+", QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..20 {
        publisher
            .publish(&format!("x/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    // Some wait in the offline member's session until it expires (1 s), then come here.
    let (_, got) = collect(present, Duration::from_millis(2500)).await;
    let topics: HashSet<_> = got.into_iter().map(|p| p.topic).collect();
    assert_eq!(topics.len(), 20);
}

/// A persistent member whose client is away, connected as `client_id` with a long session.
async fn away_member(broker: &TestBroker, client_id: &str, filter: &str) {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.properties.session_expiry_interval = Some(300);
    let (mut member, _) = TestClient::connect_with(broker.addr, connect).await;
    member.subscribe(filter, QoS::AtLeastOnce).await;
    member.disconnect().await;
}

/// Its session again: what was queued for it while it was away.
async fn queued_for(broker: &TestBroker, client_id: &str) -> Vec<String> {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(300);
    let (member, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert!(connack.session_present);
    let (_, got) = collect(member, QUIET).await;
    got.into_iter().map(|p| p.topic).collect()
}

/// A group of three with one persistent member offline: the two connected members get every
/// message between them, and none is queued for the absent one.
#[tokio::test]
async fn connected_members_get_every_message_while_one_is_offline() {
    let broker = TestBroker::start_default().await;
    away_member(&broker, "away", "$share/g/w/+").await;
    let mut present = Vec::new();
    for id in ["one", "two"] {
        let mut member = TestClient::v5(broker.addr, id).await;
        member.subscribe("$share/g/w/+", QoS::AtLeastOnce).await;
        present.push(member);
    }
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..30 {
        publisher
            .publish(&format!("w/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    let mut topics = HashSet::new();
    for member in present {
        let (_, got) = collect(member, QUIET).await;
        for p in got {
            assert!(topics.insert(p.topic), "delivered twice");
        }
    }
    assert_eq!(topics.len(), 30, "the connected members got them all");
    assert!(queued_for(&broker, "away").await.is_empty());
}

/// With no member connected, the offline ones' sessions take the group's messages.
#[tokio::test]
async fn offline_members_get_messages_when_no_member_is_connected() {
    let broker = TestBroker::start_default().await;
    away_member(&broker, "away", "$g/g/o/+").await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..5 {
        publisher
            .publish(&format!("o/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    assert_eq!(queued_for(&broker, "away").await.len(), 5);
}

/// `limits.persistent_client_expiration_secs`: an MQTT 3.1.1 persistent session ends that long
/// after its client left (it would otherwise be kept forever).
#[tokio::test]
async fn persistent_311_sessions_expire_when_configured() {
    let broker = TestBroker::start(config_with(|l| l.persistent_client_expiration_secs = 1)).await;
    let (mut member, _) =
        TestClient::connect(broker.addr, ProtocolVersion::V311, "old", false).await;
    member.subscribe("$g/g/e/+", QoS::AtLeastOnce).await;
    member.disconnect().await;
    assert_eq!(broker.broker.session_count(), 1);
    wait_until("the 3.1.1 session expired", || {
        broker.broker.session_count() == 0
    })
    .await;
    let (_, connack) = TestClient::connect(broker.addr, ProtocolVersion::V311, "old", false).await;
    assert!(!connack.session_present);
}
