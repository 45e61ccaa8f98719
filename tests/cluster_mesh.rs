//! The route layer across real processes: three `supermq` nodes on loopback ports, nodes 2
//! and 3 seeded with node 1 only, talked to over MQTT.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::{
    Node, NodeSpec, RoutePeer, SECRET, start_cluster, wait_for_mesh, wait_for_path,
};
use common::{Received, TestClient, publish_packet};
use supermq::protocol::{Packet, ProtocolVersion, QoS, reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn full_mesh_from_single_seeds_and_every_pair_delivers_at_every_qos() {
    let nodes = start_cluster(3).await;
    // A message never crosses two routes, so node2 → node3 proves a direct route between
    // them, learned by discovery.
    wait_for_mesh(&nodes).await;
    for (i, from) in nodes.iter().enumerate() {
        for (j, to) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let topic = format!("pair/{i}/{j}/{}", qos as u8);
                let mut sub = to.client(&format!("sub-{i}-{j}-{}", qos as u8)).await;
                sub.subscribe(&topic, qos).await;
                wait_for_path(from, to, Duration::from_secs(5)).await;
                let mut publisher = from.client(&format!("pub-{i}-{j}-{}", qos as u8)).await;
                let code = publisher.publish(&topic, b"hello", qos, false).await;
                assert_eq!(
                    code,
                    reason::SUCCESS,
                    "{topic}: a remote subscriber matched"
                );
                let got = sub.recv_acked().await;
                assert_eq!((got.topic.as_str(), got.qos), (topic.as_str(), qos));
                assert_eq!(got.payload, Bytes::from_static(b"hello"));
            }
        }
    }
}

#[tokio::test]
async fn wildcard_interest_then_unsubscribe_and_disconnect_remove_it() {
    let nodes = start_cluster(2).await;
    wait_for_mesh(&nodes).await;
    let mut sub = nodes[1].client("wild").await;
    sub.subscribe("w/+/x/#", QoS::AtLeastOnce).await;
    let mut publisher = nodes[0].client("wild-pub").await;
    // Interest travels asynchronously: publish until the remote filter is known.
    wait_until_reason(&mut publisher, "w/a/x/y/z", reason::SUCCESS).await;
    let got = sub.recv_acked().await;
    assert_eq!(got.topic, "w/a/x/y/z");

    sub.send(&Packet::Unsubscribe(supermq::protocol::Unsubscribe {
        packet_id: 9,
        filters: vec!["w/+/x/#".into()],
        properties: Default::default(),
    }))
    .await;
    assert!(matches!(sub.recv().await, Packet::UnsubAck(_)));
    wait_until_reason(&mut publisher, "w/a/x", reason::NO_MATCHING_SUBSCRIBERS).await;

    let mut second = nodes[1].client("wild2").await;
    second.subscribe("d/#", QoS::AtLeastOnce).await;
    wait_until_reason(&mut publisher, "d/1", reason::SUCCESS).await;
    second.disconnect().await;
    wait_until_reason(&mut publisher, "d/1", reason::NO_MATCHING_SUBSCRIBERS).await;
    sub.expect_nothing().await;
}

/// Publishes QoS 1 until the PUBACK carries `code` (0x10 means no subscriber anywhere).
async fn wait_until_reason(client: &mut TestClient, topic: &str, code: u8) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let got = client.publish(topic, b"x", QoS::AtLeastOnce, false).await;
        if got == code {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "PUBACK for {topic} stayed {got:#04x}, expected {code:#04x}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_message_crosses_to_a_node_once_with_its_properties() {
    let nodes = start_cluster(3).await;
    wait_for_mesh(&nodes).await;
    // Overlapping filters on node2 (two clients, three filters) and node3.
    let mut a = nodes[1].client("once-a").await;
    a.subscribe("o/#", QoS::AtLeastOnce).await;
    a.subscribe("o/+", QoS::AtLeastOnce).await;
    let mut b = nodes[1].client("once-b").await;
    b.subscribe("o/1", QoS::AtMostOnce).await;
    let mut c = nodes[2].client("once-c").await;
    c.subscribe("+/1", QoS::AtLeastOnce).await;
    for node in &nodes[1..] {
        wait_for_path(&nodes[0], node, Duration::from_secs(5)).await;
    }
    let mut publisher = nodes[0].client("once-pub").await;
    let mut publish = publish_packet("o/1", b"payload", QoS::AtLeastOnce, false, 3);
    let p = &mut publish.properties;
    p.user_properties = vec![("k".into(), "v".into())];
    p.content_type = Some("text/plain".into());
    p.response_topic = Some("reply/here".into());
    p.correlation_data = Some(Bytes::from_static(b"corr"));
    p.payload_format_indicator = Some(1);
    p.message_expiry_interval = Some(60);
    publisher.publish_qos1(publish).await;

    for client in [&mut a, &mut b, &mut c] {
        let got = client.recv_acked().await;
        assert_eq!(got.payload, Bytes::from_static(b"payload"));
        let p = &got.properties;
        assert_eq!(p.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
        assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
        assert_eq!(p.correlation_data.as_deref(), Some(&b"corr"[..]));
        assert_eq!(p.payload_format_indicator, Some(1));
        assert!(
            p.message_expiry_interval
                .is_some_and(|s| (55..=60).contains(&s))
        );
        client.expect_nothing().await;
    }
}

#[tokio::test]
async fn a_killed_node_rejoins_and_traffic_resumes_within_seconds() {
    let mut nodes = start_cluster(3).await;
    wait_for_mesh(&nodes).await;
    let spec = nodes[1].spec.clone();
    nodes[1].kill();
    // The peers notice (heartbeat timeout 1 s) and the restarted node is redialled/dials.
    tokio::time::sleep(Duration::from_millis(300)).await;
    nodes[1] = Node::start(spec).await;
    let started = tokio::time::Instant::now();
    for other in [0, 2] {
        wait_for_path(&nodes[other], &nodes[1], Duration::from_secs(8)).await;
        wait_for_path(&nodes[1], &nodes[other], Duration::from_secs(8)).await;
    }
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn a_frozen_peer_is_noticed_by_heartbeat() {
    let nodes = start_cluster(2).await;
    wait_for_mesh(&nodes).await;
    // A fake peer that passes the handshake, then says nothing more.
    let _silent = RoutePeer::connect(nodes[0].route_addr(), "silent", "test", SECRET, None).await;
    nodes[0].wait_for_log("peer=silent").await;
    nodes[0].wait_for_log("peer dead or frozen").await;
}

#[tokio::test]
async fn a_bad_secret_and_a_wrong_cluster_name_are_refused() {
    let nodes = start_cluster(1).await;
    let seed = nodes[0].spec.route;
    let mut bad_secret = NodeSpec::new("intruder", &[seed]);
    bad_secret.secret = "a-wrong-secret-of-enough-length".into();
    let mut other_cluster = NodeSpec::new("stranger", &[seed]);
    other_cluster.cluster = "elsewhere".into();
    let intruder = Node::start(bad_secret).await;
    let stranger = Node::start(other_cluster).await;
    nodes[0]
        .wait_for_log("node intruder presented a wrong secret")
        .await;
    // Logged with the address it came from.
    let log = nodes[0].log();
    assert!(
        log.lines().any(|l| l.contains("presented a wrong secret")
            && l.contains("route refused")
            && l.contains("peer=127.0.0.1:")),
        "{log}"
    );
    nodes[0]
        .wait_for_log("node stranger belongs to cluster \"elsewhere\"")
        .await;
    intruder.wait_for_log("refused by the peer").await;
    stranger.wait_for_log("refused").await;
    // And no message passes.
    let mut sub = nodes[0].client("guarded").await;
    sub.subscribe("secret/#", QoS::AtMostOnce).await;
    let mut publisher = intruder.client("intruder-pub").await;
    for _ in 0..5 {
        let code = publisher
            .publish("secret/x", b"x", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(code, reason::NO_MATCHING_SUBSCRIBERS);
    }
    sub.expect_nothing().await;
}

#[tokio::test]
async fn a_node_of_route_protocol_version_1_is_refused_for_its_version() {
    let nodes = start_cluster(1).await;
    // Version 1's INFO: the same layout, with the secret in clear where version 2 has its
    // nonce; the refusal must name the version, not a malformed frame.
    let mut body = vec![1u8, 0, 1];
    for s in ["old", "test", "127.0.0.1:1", "s3cret"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    let mut hello = b"SMQR".to_vec();
    hello.extend_from_slice(&(body.len() as u32).to_be_bytes());
    hello.extend_from_slice(&body);
    let mut stream = tokio::net::TcpStream::connect(nodes[0].route_addr())
        .await
        .expect("connect");
    stream.write_all(&hello).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
        .await
        .expect("closed in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.contains("node old speaks route protocol version 1, this node 5"),
        "{answer}"
    );
    nodes[0]
        .wait_for_log("node old speaks route protocol version 1")
        .await;
}

#[tokio::test]
async fn wrong_ports_get_clean_refusals() {
    let nodes = start_cluster(1).await;
    // An MQTT client on the route port gets CONNACK "Server unavailable", in its version.
    for (version, code) in [(ProtocolVersion::V5, 0x88), (ProtocolVersion::V311, 0x03)] {
        let (_, connack) = TestClient::connect_with(
            nodes[0].route_addr(),
            common::connect_packet(version, "lost"),
        )
        .await;
        assert_eq!(connack.code, code);
    }
    // A route dialling an MQTT port is closed by the broker and says so.
    let mut confused = NodeSpec::new("confused", &[nodes[0].spec.mqtt]);
    confused.extra = String::new();
    let confused = Node::start(confused).await;
    confused
        .wait_for_log("does not speak the route protocol")
        .await;
}

#[tokio::test]
async fn retained_messages_reach_every_node_and_a_node_that_joins_later() {
    let mut nodes = start_cluster(2).await;
    wait_for_mesh(&nodes).await;
    let mut publisher = nodes[0].client("ret-pub").await;
    publisher
        .publish("ret/a", b"kept", QoS::AtLeastOnce, true)
        .await;
    publisher
        .publish("ret/b", b"gone", QoS::AtLeastOnce, true)
        .await;
    publisher
        .publish("ret/b", b"", QoS::AtLeastOnce, true)
        .await;
    let seed = nodes[0].spec.route;
    nodes.push(Node::start(NodeSpec::new("node3", &[seed])).await);
    wait_for_mesh(&nodes).await;
    for node in &nodes {
        let mut sub = node.client("ret-sub").await;
        sub.subscribe("ret/#", QoS::AtLeastOnce).await;
        let got = sub.recv_acked().await;
        assert_eq!(
            (got.topic.as_str(), got.retain),
            ("ret/a", true),
            "{}",
            node.spec.name
        );
        assert_eq!(got.payload, Bytes::from_static(b"kept"));
        sub.expect_nothing().await;
    }
}

#[tokio::test]
async fn a_client_id_connecting_on_another_node_takes_over() {
    let nodes = start_cluster(2).await;
    wait_for_mesh(&nodes).await;
    let mut first = nodes[0].client("roaming").await;
    let _second = nodes[1].client("roaming").await;
    first.expect_disconnect(reason::SESSION_TAKEN_OVER).await;
}

/// True if the connection is still served: a PINGREQ gets its PINGRESP (a connection told to
/// close gets DISCONNECT or is closed).
async fn served(client: &mut TestClient) -> bool {
    client.send(&Packet::PingReq).await;
    loop {
        match client.recv_within(Duration::from_secs(2)).await {
            Received::Packet(Packet::PingResp) => return true,
            Received::Packet(Packet::Disconnect(_)) | Received::Closed | Received::Silent => {
                return false;
            }
            Received::Packet(_) => {}
        }
    }
}

/// One client id connecting to two nodes at the same moment, 40 times: every time exactly one
/// of the two connections stays (before, both were often closed, each node taking the other's
/// announcement for the newer connection).
#[tokio::test]
async fn simultaneous_connects_of_one_client_id_leave_exactly_one() {
    let nodes = start_cluster(2).await;
    wait_for_mesh(&nodes).await;
    let mut outcomes = Vec::new();
    for round in 0..40 {
        let id = format!("race-{round}");
        let (mut a, mut b) = tokio::join!(nodes[0].client(&id), nodes[1].client(&id));
        // Both announcements cross the route within a heartbeat.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (a_alive, b_alive) = tokio::join!(served(&mut a), served(&mut b));
        outcomes.push((a_alive, b_alive));
    }
    let bad: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, (a, b))| a == b)
        .collect();
    assert!(
        bad.is_empty(),
        "rounds without exactly one survivor: {bad:?}"
    );
}

#[tokio::test]
async fn nodes_that_seed_each_other_keep_exactly_one_route() {
    let mut a = NodeSpec::new("alpha", &[]);
    let mut b = NodeSpec::new("beta", &[]);
    a.seeds = vec![b.route];
    b.seeds = vec![a.route];
    let nodes = vec![Node::start(a).await, Node::start(b).await];
    wait_for_mesh(&nodes).await;
    // No flapping: after the duplicate is settled, the kept route stays up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for node in &nodes {
        let log = node.log();
        let ups = log.matches("route up").count();
        let downs = log.matches("route down").count();
        assert!(
            ups - downs == 1 && ups <= 2,
            "{}: {ups} up, {downs} down\n{log}",
            node.spec.name
        );
    }
    let mut sub = nodes[1].client("dup-sub").await;
    sub.subscribe("dup/#", QoS::AtMostOnce).await;
    wait_for_path(&nodes[0], &nodes[1], Duration::from_secs(5)).await;
    let mut publisher = nodes[0].client("dup-pub").await;
    publisher
        .publish("dup/1", b"x", QoS::AtMostOnce, false)
        .await;
    assert_eq!(sub.recv_publish().await.topic, "dup/1");
    sub.expect_nothing().await;
}

#[tokio::test]
async fn two_nodes_with_one_name_are_refused_by_both_and_neither_takes_the_other_for_itself() {
    let first = Node::start(NodeSpec::new("twin", &[])).await;
    let second = Node::start(NodeSpec::new("twin", &[first.spec.route])).await;
    first
        .wait_for_log("has the same name as this node ([node] name must be unique)")
        .await;
    second
        .wait_for_log("refused by the peer: refused: node twin at")
        .await;
    for node in [&first, &second] {
        assert!(!node.log().contains("route up"), "{}", node.log());
        assert!(!node.log().contains("is this node"), "{}", node.log());
    }
}

#[tokio::test]
async fn a_seed_that_is_the_node_itself_is_closed_and_not_redialled() {
    let mut spec = NodeSpec::new("narcissus", &[]);
    spec.seeds = vec![spec.route];
    // Advertise another spelling of the address, so only the handshake can tell.
    spec.extra = format!("advertise = \"localhost:{}\"\n", spec.route);
    let node = Node::start(spec).await;
    node.wait_for_log("route address is this node").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(node.log().matches("route address is this node").count(), 1);
    assert!(!node.log().contains("route up"));
}
