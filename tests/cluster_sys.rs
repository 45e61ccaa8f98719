//! A node's `$SYS` tree is its own: it never crosses a route, as a message or as a retained
//! one, even to a peer that declares interest in `$SYS/#` (src/broker/sys.rs).

mod common;

use common::cluster::{RoutePeer, SECRET, free_port, in_process_node, kind};
use common::{TestBroker, TestClient};
use supermq::protocol::QoS;

/// Reads the peer's frames until a MESSAGE carrying `marker`; fails if a MESSAGE or RETAINED
/// frame before it carries a `$SYS` topic.
async fn read_to(peer: &mut RoutePeer, marker: &[u8]) {
    loop {
        let (kind, body) = peer.frame().await.expect("the route stays up");
        let carries = |what: &[u8]| body.windows(what.len()).any(|w| w == what);
        if kind == kind::MESSAGE || kind == kind::RETAINED {
            assert!(!carries(b"$SYS"), "a $SYS message crossed the route");
        }
        if kind == kind::MESSAGE && carries(marker) {
            return;
        }
    }
}

#[tokio::test]
async fn the_tree_never_crosses_a_route() {
    let route = free_port();
    let mut config = in_process_node("a", route, &[]);
    config.sys.interval_secs = 1;
    // The fake peer sends nothing while it reads: the route must not time out meanwhile.
    config.cluster.heartbeat_timeout_ms = 20_000;
    let a = TestBroker::start(config).await;
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], route));
    let mut peer = RoutePeer::connect(addr, "b", "supermq", SECRET, None).await;
    peer.interest("#").await;
    peer.interest("$SYS/#").await;
    let mut publisher = TestClient::v5(a.addr, "publisher").await;
    // Once the first probe crosses, the peer's interest is in force on the node.
    publisher
        .publish("probe/1", b"", QoS::AtMostOnce, false)
        .await;
    read_to(&mut peer, b"probe/1").await;
    // The tree's retained values, then an update published while the interest was in force.
    let mut watcher = TestClient::v5(a.addr, "watcher").await;
    watcher
        .subscribe("$SYS/broker/uptime", QoS::AtMostOnce)
        .await;
    let first = watcher.recv_publish().await;
    let second = watcher.recv_publish().await;
    assert_ne!(first.payload, second.payload, "an update");
    // Frames on a route keep their order: had the update been forwarded, it would come
    // before this.
    publisher
        .publish("probe/2", b"", QoS::AtMostOnce, false)
        .await;
    read_to(&mut peer, b"probe/2").await;
}
