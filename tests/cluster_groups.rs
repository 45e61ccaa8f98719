//! Consumer groups across a three-node cluster of real processes: each message to exactly
//! one member cluster-wide with a fair spread, `$g/` and `$share/`, several groups and plain
//! subscribers side by side, and hand-over to a member on another node when one leaves.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::cluster::{Node, start_cluster, wait_for_mesh};
use common::{TestClient, collect, connect_packet};
use supermq::protocol::{Packet, ProtocolVersion, QoS};

const QUIET: Duration = Duration::from_millis(1500);

/// Subscribes `client` to `filter`, then publishes probes on `probe` from `publisher` until
/// `client` got one: proves the publishing node knows about this member.
async fn join(client: &mut TestClient, filter: &str, publisher: &mut TestClient, probe: &str) {
    client.subscribe(filter, QoS::AtLeastOnce).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(8);
    loop {
        publisher
            .publish(probe, b"probe", QoS::AtMostOnce, false)
            .await;
        if let Some(Packet::Publish(p)) = client.recv_within(Duration::from_millis(30)).await.open()
        {
            client.ack(&p).await;
            if p.topic == probe {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{filter} never reached"
        );
    }
}

/// One member per node: `count` QoS 1 messages from node1 each reach exactly one member,
/// and each member gets between 25% and 42%.
async fn fair_spread(nodes: &[Node], prefix: &str, count: usize) {
    let name = prefix.trim_start_matches('$');
    let filter = format!("{prefix}/fair/{name}fair/+");
    let probe = format!("{name}fair/probe");
    let mut publisher = nodes[0].client(&format!("{prefix}-pub")).await;
    let mut members = Vec::new();
    for node in nodes {
        let mut member = node.client(&format!("{prefix}-{}", node.spec.name)).await;
        join(&mut member, &filter, &mut publisher, &probe).await;
        members.push(member);
    }
    // Drain probes still on their way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(collect(m, QUIET)))
        .collect();
    for i in 0..count {
        let topic = format!("{name}fair/{i}");
        publisher
            .publish(&topic, b"m", QoS::AtLeastOnce, false)
            .await;
    }
    let mut seen = HashSet::new();
    let mut shares = Vec::new();
    for task in tasks {
        let (_, got) = task.await.expect("collector");
        let data: Vec<_> = got.into_iter().filter(|p| p.topic != probe).collect();
        shares.push(data.len());
        for p in data {
            assert_eq!(p.qos, QoS::AtLeastOnce);
            assert!(seen.insert(p.topic.clone()), "{} delivered twice", p.topic);
        }
    }
    assert_eq!(
        seen.len(),
        count,
        "{prefix}: every message once; shares {shares:?}"
    );
    for share in &shares {
        let low = count * 25 / 100;
        let high = count * 42 / 100;
        assert!(
            (low..=high).contains(share),
            "{prefix}: unfair shares {shares:?}"
        );
    }
}

#[tokio::test]
async fn groups_deliver_each_message_once_across_nodes_with_a_fair_spread() {
    let nodes = start_cluster(3).await;
    wait_for_mesh(&nodes).await;
    fair_spread(&nodes, "$g", 3000).await;
    fair_spread(&nodes, "$share", 3000).await;
}

#[tokio::test]
async fn two_groups_on_one_filter_and_a_plain_subscriber_each_get_everything() {
    let nodes = start_cluster(3).await;
    wait_for_mesh(&nodes).await;
    let mut publisher = nodes[0].client("two-pub").await;
    let mut clients = Vec::new();
    for (node, id, filter) in [
        (1, "a-2", "$g/a/two/+"),
        (2, "a-3", "$g/a/two/+"),
        (2, "b-3", "$share/b/two/+"),
        (1, "plain-2", "two/+"),
    ] {
        let mut client = nodes[node].client(id).await;
        join(&mut client, filter, &mut publisher, "two/probe").await;
        clients.push(client);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(collect(c, QUIET)))
        .collect();
    for i in 0..200 {
        publisher
            .publish(&format!("two/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    let mut counts = Vec::new();
    for task in tasks {
        let (_, got) = task.await.expect("collector");
        counts.push(got.iter().filter(|p| p.topic != "two/probe").count());
    }
    assert_eq!(counts[0] + counts[1], 200, "group a: {counts:?}");
    assert!(
        counts[0] > 0 && counts[1] > 0,
        "group a uses both nodes: {counts:?}"
    );
    assert_eq!(counts[2], 200, "group b: {counts:?}");
    assert_eq!(counts[3], 200, "plain: {counts:?}");
}

#[tokio::test]
async fn a_leaving_members_unacknowledged_messages_go_to_a_member_on_another_node() {
    let nodes = start_cluster(3).await;
    wait_for_mesh(&nodes).await;
    let mut publisher = nodes[0].client("hand-pub").await;
    let mut leaving = nodes[1].client("leaving").await;
    join(&mut leaving, "$g/h/hand/#", &mut publisher, "hand/probe").await;
    for i in 0..20 {
        publisher
            .publish(&format!("hand/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    let mut held = 0;
    while held < 20 {
        if let Packet::Publish(p) = leaving.recv().await
            && p.topic != "hand/probe"
        {
            held += 1; // received, never acknowledged
        }
    }
    // A second member on node3, known to node2 (probes from node2 reach it).
    let mut staying = nodes[2].client("staying").await;
    let mut prober = nodes[1].client("hand-prober").await;
    join(&mut staying, "$g/h/hand/#", &mut prober, "hand/probe").await;
    drop(leaving);
    let (_, got) = collect(staying, QUIET).await;
    let topics: HashSet<_> = got
        .iter()
        .filter(|p| p.topic != "hand/probe")
        .map(|p| p.topic.clone())
        .collect();
    assert_eq!(topics.len(), 20, "all 20 handed over: {topics:?}");
}

/// A group with an offline persistent member on the publishing node and a connected one on
/// another node: every message crosses to the connected member (none waits in the absent
/// member's session), and the absent one, back, finds nothing queued.
#[tokio::test]
async fn connected_members_elsewhere_win_over_an_offline_member_here() {
    let nodes = start_cluster(2).await;
    wait_for_mesh(&nodes).await;
    let mut publisher = nodes[0].client("away-pub").await;
    let mut connect = connect_packet(ProtocolVersion::V5, "away-member");
    connect.properties.session_expiry_interval = Some(300);
    let (mut away, _) = TestClient::connect_with(nodes[0].mqtt(), connect.clone()).await;
    away.subscribe("$share/a/away/+", QoS::AtLeastOnce).await;
    away.disconnect().await;
    let mut present = nodes[1].client("present-member").await;
    join(
        &mut present,
        "$share/a/away/+",
        &mut publisher,
        "away/probe",
    )
    .await;
    // Let node1 hear that its own member went offline and node2's is connected; then drain
    // probes still on their way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..20 {
        publisher
            .publish(&format!("away/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    let (_, got) = collect(present, QUIET).await;
    let topics: HashSet<_> = got
        .iter()
        .filter(|p| p.topic != "away/probe")
        .map(|p| p.topic.clone())
        .collect();
    assert_eq!(
        topics.len(),
        20,
        "every message to the connected member: {topics:?}"
    );
    connect.clean_start = false;
    let (back, connack) = TestClient::connect_with(nodes[0].mqtt(), connect).await;
    assert!(connack.session_present);
    let (_, queued) = collect(back, Duration::from_millis(300)).await;
    assert!(
        queued.iter().all(|p| p.topic == "away/probe"),
        "nothing but probes was queued for the absent member: {queued:?}"
    );
}

/// Starts three nodes with `cluster.group_strategy = strategy`, one member of `$g/s/st/+` on
/// each of `members_on`, known to node1.
async fn strategy_cluster(strategy: &str, members_on: &[usize]) -> (Vec<Node>, Vec<TestClient>) {
    use common::cluster::NodeSpec;
    let extra = format!("group_strategy = \"{strategy}\"\n");
    let mut first = NodeSpec::new("node1", &[]);
    first.extra = extra.clone();
    let mut nodes = vec![Node::start(first).await];
    for i in 2..=3 {
        let mut spec = NodeSpec::new(&format!("node{i}"), &[nodes[0].spec.route]);
        spec.extra = extra.clone();
        nodes.push(Node::start(spec).await);
    }
    wait_for_mesh(&nodes).await;
    let mut publisher = nodes[0].client("st-prober").await;
    let mut members = Vec::new();
    for &i in members_on {
        let mut member = nodes[i].client(&format!("st-{i}")).await;
        join(&mut member, "$g/s/st/+", &mut publisher, "st/probe").await;
        members.push(member);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    (nodes, members)
}

async fn shares(nodes: &[Node], members: Vec<TestClient>, count: usize) -> Vec<usize> {
    let tasks: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(collect(m, QUIET)))
        .collect();
    let mut publisher = nodes[0].client("st-pub").await;
    for i in 0..count {
        publisher
            .publish(&format!("st/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    let mut shares = Vec::new();
    for task in tasks {
        let (_, got) = task.await.expect("collector");
        shares.push(got.iter().filter(|p| p.topic != "st/probe").count());
    }
    shares
}

#[tokio::test]
async fn round_robin_takes_every_member_in_the_cluster_in_turn() {
    let (nodes, members) = strategy_cluster("round_robin", &[0, 1, 2]).await;
    assert_eq!(shares(&nodes, members, 300).await, vec![100, 100, 100]);
}

#[tokio::test]
async fn prefer_local_keeps_messages_on_the_publishing_node_while_it_has_a_member() {
    // The local member joins last: once it is there, probes from node1 reach no one else.
    let (nodes, members) = strategy_cluster("prefer_local", &[1, 2, 0]).await;
    assert_eq!(shares(&nodes, members, 200).await, vec![0, 0, 200]);
}

#[tokio::test]
async fn a_node_with_three_members_gets_three_times_the_share_of_a_node_with_one() {
    let nodes = start_cluster(3).await;
    wait_for_mesh(&nodes).await;
    let mut publisher = nodes[0].client("w-pub").await;
    let mut members = Vec::new();
    for (i, node) in [1, 1, 1, 2].into_iter().enumerate() {
        let mut member = nodes[node].client(&format!("w-{i}")).await;
        join(&mut member, "$share/w/wt/+", &mut publisher, "wt/probe").await;
        members.push(member);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tasks: Vec<_> = members
        .into_iter()
        .map(|m| tokio::spawn(collect(m, QUIET)))
        .collect();
    for i in 0..2000 {
        publisher
            .publish(&format!("wt/{i}"), b"m", QoS::AtLeastOnce, false)
            .await;
    }
    let mut counts = Vec::new();
    for task in tasks {
        let (_, got) = task.await.expect("collector");
        counts.push(got.iter().filter(|p| p.topic != "wt/probe").count());
    }
    let node2: usize = counts[..3].iter().sum();
    assert_eq!(node2 + counts[3], 2000, "{counts:?}");
    // Expected 1500 / 500: every member, wherever it is, has the same chance.
    assert!(
        (1350..=1650).contains(&node2),
        "node2 {node2} of 2000: {counts:?}"
    );
}
