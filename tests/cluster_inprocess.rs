//! The cluster as the library shows it: two brokers in this process, joined by a route,
//! report their peers and route drops through `Broker::cluster`.

mod common;

use common::cluster::free_port;
use common::{TestBroker, config, wait_until};
use supermq::protocol::QoS;

fn node(name: &str, route: u16, seeds: &[u16]) -> supermq::config::Config {
    let mut config = config();
    config.node.name = name.to_string();
    config.cluster.listen = format!("127.0.0.1:{route}");
    config.cluster.routes = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    config.cluster.heartbeat_ms = 100;
    config.cluster.heartbeat_timeout_ms = 1000;
    config
}

#[tokio::test]
async fn brokers_in_one_process_form_a_cluster_and_report_their_peers() {
    let (ra, rb) = (free_port(), free_port());
    let a = TestBroker::start(node("a", ra, &[])).await;
    let b = TestBroker::start(node("b", rb, &[ra])).await;
    assert!(TestBroker::start_default().await.broker.cluster().is_none());
    let peers = |broker: &TestBroker| {
        broker
            .broker
            .cluster()
            .map(|c| c.peers())
            .unwrap_or_default()
    };
    wait_until("a and b see each other", || {
        peers(&a) == ["b"] && peers(&b) == ["a"]
    })
    .await;
    let mut sub = common::TestClient::v5(b.addr, "sub").await;
    sub.subscribe("in/#", QoS::AtLeastOnce).await;
    let mut publisher = common::TestClient::v5(a.addr, "pub").await;
    wait_until_delivered(&mut publisher, &mut sub).await;
    assert_eq!(a.broker.cluster().map(|c| c.dropped()), Some(0));
}

async fn wait_until_delivered(publisher: &mut common::TestClient, sub: &mut common::TestClient) {
    let deadline = tokio::time::Instant::now() + common::WAIT;
    loop {
        publisher
            .publish("in/x", b"x", QoS::AtMostOnce, false)
            .await;
        if sub
            .recv_within(std::time::Duration::from_millis(50))
            .await
            .is_some()
        {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
    }
}
