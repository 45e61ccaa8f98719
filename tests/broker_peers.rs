//! The broker's side of the cluster interface ([`supermq::broker::Peers`]), driven by a
//! recording stand-in for the other nodes: the broker says what they need to know (interest,
//! group member counts, connected clients, messages to forward) and chooses every group's
//! member itself, here or on a peer, by `cluster.group_strategy` on every path.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use std::future::Future;
use std::pin::Pin;

use supermq::broker::{
    Assigned, Fetched, Forward, GroupRef, Message, MovedMessage, MovedSubscription, PeerId, Peers,
    RemoteGroup, SessionImage, Version, Waiter,
};
use supermq::protocol::{Packet, ProtocolVersion, QoS, SubscriptionOptions, reason};

/// Other nodes that hold members of one group and record what the broker tells them.
#[derive(Default)]
struct Recorder {
    /// (group, connected members per peer) the stand-in reports for every topic under `jobs/`.
    remote: Vec<(GroupRef, Vec<(u64, u32)>)>,
    interest: Mutex<Vec<(String, bool)>>,
    groups: Mutex<Vec<(GroupRef, usize, usize)>>,
    forwarded: Mutex<Vec<(String, Vec<Assigned>)>>,
    /// The version each forwarded message carried.
    versions: Mutex<Vec<Option<Version>>>,
    redirected: Mutex<Vec<(GroupRef, PeerId)>>,
    connected: Mutex<Vec<String>>,
    /// Hold every QoS 1/2 publisher's ack on a copy, as the cluster does until a peer took it.
    hold_acks: bool,
    held: Mutex<Vec<Forward>>,
    /// The session another node hands over to the next resuming client.
    session: Mutex<Option<SessionImage>>,
}

impl Peers for Recorder {
    fn local_interest(&self, filter: &str, present: bool) {
        self.interest
            .lock()
            .unwrap()
            .push((filter.to_string(), present));
    }

    fn local_group(&self, group: &GroupRef, online: usize, offline: usize) {
        self.groups
            .lock()
            .unwrap()
            .push((group.clone(), online, offline));
    }

    fn remote_groups(&self, topic: &str) -> Vec<RemoteGroup> {
        if !topic.starts_with("jobs/") {
            return Vec::new();
        }
        self.remote
            .iter()
            .map(|(group, peers)| RemoteGroup {
                group: group.clone(),
                peers: peers.iter().map(|&(id, _)| PeerId(id)).collect(),
                online: peers.iter().map(|&(_, n)| n).collect(),
                offline: vec![0; peers.len()],
            })
            .collect()
    }

    fn forward(
        &self,
        message: &Message,
        assigned: &[Assigned],
        publisher: Option<&Arc<Waiter>>,
    ) -> usize {
        if let Some(waiter) = publisher.filter(|_| self.hold_acks) {
            self.held.lock().unwrap().push(waiter.forwarded());
        }
        self.forwarded
            .lock()
            .unwrap()
            .push((message.topic.to_string(), assigned.to_vec()));
        self.versions.lock().unwrap().push(message.version.clone());
        assigned.len()
    }

    fn redirect(&self, _message: &Message, group: &GroupRef, peer: PeerId) -> bool {
        self.redirected.lock().unwrap().push((group.clone(), peer));
        true
    }

    fn fetch_session(
        &self,
        _client_id: &str,
        _username: Option<&str>,
    ) -> Option<Pin<Box<dyn Future<Output = Fetched> + Send>>> {
        let image = self.session.lock().unwrap().take()?;
        Some(Box::pin(std::future::ready(Fetched::Found(Box::new(
            image,
        )))))
    }

    fn client_connected(&self, client_id: &str, _connected_at: u64, _clean_start: bool) {
        self.connected.lock().unwrap().push(client_id.to_string());
    }
}

fn workers() -> GroupRef {
    GroupRef {
        group: "workers".to_string(),
        filter: "jobs/#".to_string(),
    }
}

async fn broker_with(strategy: &str, peers: Arc<Recorder>) -> TestBroker {
    let mut config = config();
    config.cluster.group_strategy = strategy.to_string();
    let broker = TestBroker::start(config).await;
    broker.broker.attach_peers(peers);
    broker
}

/// round_robin for a group whose members are all on other nodes: the peers take turns, by
/// their member counts, and the broker says whom with each forwarded message.
#[tokio::test]
async fn remote_only_groups_take_turns_by_the_configured_strategy() {
    let peers = Arc::new(Recorder {
        remote: vec![(workers(), vec![(7, 1), (9, 1)])],
        ..Recorder::default()
    });
    let broker = broker_with("round_robin", Arc::clone(&peers)).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    assert_eq!(peers.connected.lock().unwrap().as_slice(), ["pub"]);
    for i in 0..4 {
        let code = publisher
            .publish(&format!("jobs/{i}"), b"x", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(code, 0, "a peer took it");
    }
    let chosen: Vec<u64> = peers
        .forwarded
        .lock()
        .unwrap()
        .iter()
        .map(|(_, assigned)| {
            assert_eq!(assigned.len(), 1);
            assert_eq!(assigned[0].group, workers());
            assigned[0].peer.0
        })
        .collect();
    assert_eq!(chosen, [7, 9, 7, 9]);
}

/// prefer_local with a member here: every message stays on this node, and the peers hear
/// of the local member (and of plain interest) as it comes and goes.
#[tokio::test]
async fn prefer_local_keeps_messages_with_a_local_member() {
    let peers = Arc::new(Recorder {
        remote: vec![(workers(), vec![(7, 5)])],
        ..Recorder::default()
    });
    let broker = broker_with("prefer_local", Arc::clone(&peers)).await;
    let mut member = TestClient::v5(broker.addr, "member").await;
    member
        .subscribe("$share/workers/jobs/#", QoS::AtLeastOnce)
        .await;
    member.subscribe("plain/#", QoS::AtLeastOnce).await;
    assert_eq!(peers.groups.lock().unwrap().as_slice(), [(workers(), 1, 0)]);
    assert_eq!(
        peers.interest.lock().unwrap().as_slice(),
        [("plain/#".to_string(), true)]
    );
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..10 {
        publisher
            .publish(&format!("jobs/{i}"), b"x", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(member.recv_acked().await.topic, format!("jobs/{i}"));
    }
    assert!(
        peers
            .forwarded
            .lock()
            .unwrap()
            .iter()
            .all(|(_, assigned)| assigned.is_empty()),
        "no group message left this node"
    );
}

/// A retained set or clear goes to the peers with a fresh version, each newer than the last
/// and carrying this node's name; a message that is not retained carries none (and never
/// steps the clock).
#[tokio::test]
async fn retained_sets_and_clears_are_forwarded_with_fresh_versions() {
    let peers = Arc::new(Recorder::default());
    let broker = TestBroker::start(config()).await;
    broker
        .broker
        .version_retained("here", std::time::Duration::from_secs(60));
    broker
        .broker
        .attach_peers(Arc::clone(&peers) as Arc<dyn Peers>);
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher.publish("r", b"1", QoS::AtLeastOnce, true).await;
    publisher.publish("p", b"x", QoS::AtLeastOnce, false).await;
    publisher.publish("r", b"", QoS::AtLeastOnce, true).await;
    publisher.publish("r", b"2", QoS::AtLeastOnce, true).await;
    let versions = peers.versions.lock().unwrap().clone();
    assert_eq!(versions.len(), 4);
    assert!(versions[1].is_none(), "not retained: no version");
    let retained: Vec<Version> = [0, 2, 3]
        .iter()
        .map(|&i| versions[i].clone().expect("retained: a version"))
        .collect();
    assert!(retained.iter().all(|v| &*v.node == "here"));
    assert!(retained[0] < retained[1] && retained[1] < retained[2]);
    assert_eq!(broker.broker.retained_count(), 1);
    assert_eq!(
        broker.broker.retained_tombstone_count(),
        0,
        "the set replaced it"
    );
}

/// A QoS 1 publisher's PUBACK waits while a copy forwarded to a peer is not taken, comes when
/// it is, and is negative when the peer did not take it.
#[tokio::test]
async fn a_forwarded_message_holds_its_ack_until_the_peer_took_it() {
    let peers = Arc::new(Recorder {
        hold_acks: true,
        ..Recorder::default()
    });
    let broker = TestBroker::start(config()).await;
    broker
        .broker
        .attach_peers(Arc::clone(&peers) as Arc<dyn Peers>);
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher
        .send(&Packet::Publish(publish_packet(
            "far/1",
            b"x",
            QoS::AtLeastOnce,
            false,
            1,
        )))
        .await;
    publisher.expect_nothing().await;
    let taken = peers
        .held
        .lock()
        .unwrap()
        .pop()
        .expect("a copy held the ack");
    taken.delivered();
    match publisher.recv().await {
        Packet::PubAck(ack) => assert_eq!(ack.reason, reason::NO_MATCHING_SUBSCRIBERS),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    publisher
        .send(&Packet::Publish(publish_packet(
            "far/2",
            b"y",
            QoS::AtLeastOnce,
            false,
            2,
        )))
        .await;
    wait_until("the copy holds the ack", || {
        !peers.held.lock().unwrap().is_empty()
    })
    .await;
    drop(peers.held.lock().unwrap().pop());
    match publisher.recv().await {
        Packet::PubAck(ack) => {
            assert_eq!((ack.packet_id, ack.reason), (2, reason::UNSPECIFIED_ERROR));
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn moved(topic: &str, payload: &[u8], in_flight: Option<(u16, bool)>) -> MovedMessage {
    let mut publish = publish_packet(topic, payload, QoS::AtLeastOnce, false, 1);
    publish.properties.subscription_identifiers = vec![7];
    if let Some((id, _)) = in_flight {
        publish.packet_id = id;
    }
    MovedMessage {
        publish,
        in_flight,
        group: None,
    }
}

/// A client that resumes here a session another node hands over gets it whole: session
/// present, the in-flight message again with DUP first, then the queued one, the
/// subscription (with its identifier) in place, and its inbound QoS 2 ids.
#[tokio::test]
async fn a_session_handed_over_by_another_node_is_resumed_here() {
    let image = SessionImage {
        subscriptions: vec![MovedSubscription {
            filter: "moved/#".into(),
            options: SubscriptionOptions {
                qos: QoS::AtLeastOnce,
                ..SubscriptionOptions::default()
            },
            id: Some(7),
        }],
        messages: vec![
            moved("moved/a", b"in flight", Some((3, false))),
            moved("moved/b", b"queued", None),
        ],
        inbound_qos2: vec![9],
    };
    let peers = Arc::new(Recorder {
        session: Mutex::new(Some(image)),
        ..Recorder::default()
    });
    let broker = TestBroker::start(config()).await;
    broker
        .broker
        .attach_peers(Arc::clone(&peers) as Arc<dyn Peers>);
    let mut connect = connect_packet(ProtocolVersion::V5, "roamer");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(600);
    let (mut client, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert!(connack.session_present, "the moved session is resumed");
    let first = client.recv_acked().await;
    assert_eq!(
        (first.packet_id, first.dup, &first.payload[..]),
        (3, true, &b"in flight"[..])
    );
    let second = client.recv_acked().await;
    assert_eq!(
        (
            &second.payload[..],
            second.dup,
            &second.properties.subscription_identifiers[..]
        ),
        (&b"queued"[..], false, &[7][..])
    );
    let third = client
        .publish_to_self("moved/c", b"live", QoS::AtLeastOnce)
        .await;
    assert_eq!(third.properties.subscription_identifiers, [7]);
    // Packet id 9 was received (PUBREC) and not released on the old node: a resend of it
    // is not delivered again.
    client
        .send(&Packet::Publish(publish_packet(
            "moved/d",
            b"resent",
            QoS::ExactlyOnce,
            false,
            9,
        )))
        .await;
    assert!(matches!(client.recv().await, Packet::PubRec(_)));
    client.expect_nothing().await;
}

/// Asked for a session, the node hands it over and keeps nothing: its client's connection is
/// closed (0x8E), the subscription is gone from its router, and the session from its table.
#[tokio::test]
async fn a_session_asked_for_by_another_node_is_handed_over_whole() {
    let broker = TestBroker::start(config()).await;
    let mut connect = connect_packet(ProtocolVersion::V5, "leaver");
    connect.clean_start = false;
    connect.properties.session_expiry_interval = Some(600);
    let (mut client, _) = TestClient::connect_with(broker.addr, connect.clone()).await;
    client.subscribe("leave/#", QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    for i in 0..3u8 {
        publisher
            .publish("leave/x", &[i], QoS::AtLeastOnce, false)
            .await;
    }
    let image = broker
        .broker
        .export_session("leaver", None)
        .expect("the session is here");
    client.expect_disconnect(reason::SESSION_TAKEN_OVER).await;
    assert_eq!(image.subscriptions.len(), 1);
    assert_eq!(image.subscriptions[0].filter, "leave/#");
    let payloads: Vec<u8> = image
        .messages
        .iter()
        .map(|m| m.publish.payload[0])
        .collect();
    assert_eq!(payloads, [0, 1, 2], "in order");
    assert_eq!(
        publisher
            .publish("leave/x", b"after", QoS::AtLeastOnce, false)
            .await,
        reason::NO_MATCHING_SUBSCRIBERS,
        "no subscription left here"
    );
    assert!(broker.broker.export_session("leaver", None).is_none());
    let (_, connack) = TestClient::connect_with(broker.addr, connect).await;
    assert!(!connack.session_present, "nothing kept");
}
