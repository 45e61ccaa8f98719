//! The route port against any peer (issue 10, item 4): one INTEREST frame whose filter was
//! 65,535 `/` overflowed the stack (a recursive trie insert, peer filters never validated) and
//! aborted the process; a handshake frame's length was trusted up to 1 MiB before the peer had
//! proved anything. The dialler's side of the handshake is `common::cluster::RoutePeer`
//! (HMAC-SHA256 with `ring`, as src/cluster/handshake.rs).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::MIB;
use crate::broker::{CLUSTER, RealBroker, SECRET, Spec};
use crate::common::WAIT;
use crate::common::cluster::RoutePeer;
use crate::watch::{Rss, Watch};

/// How long the node has to act on a frame before the verdict: it closes the route or not,
/// but a crash would come at once.
const ACT_WITHIN: Duration = Duration::from_secs(1);

/// Memory: one route connection and a 64 KiB frame.
const RSS_BOUND: u64 = 16 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interest_of_65535_slashes_does_not_crash_the_node() {
    let mut node = RealBroker::start(Spec::new("route-interest").cluster(&[])).await;
    let watch = Watch::start(&node).await;
    let mut peer = RoutePeer::connect(node.route_addr(), "intruder", CLUSTER, SECRET, None).await;
    peer.interest(&"/".repeat(65_535)).await;
    // Read what the node sends (heartbeats) until it closes the route or time is up.
    let deadline = tokio::time::Instant::now() + ACT_WITHIN;
    while let Ok(Some(_)) = tokio::time::timeout_at(deadline, peer.frame()).await {}
    watch.verdict(&mut node, Rss::Peak, RSS_BOUND).await;
}

/// The length a hostile handshake frame claims.
const CLAIMED: u32 = 1 << 30;

/// Bytes of it actually sent.
const SENT: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handshake_frame_claiming_1_gib_is_refused() {
    let mut node = RealBroker::start(Spec::new("route-length").cluster(&[])).await;
    let watch = Watch::start(&node).await;
    let mut stream = TcpStream::connect(node.route_addr())
        .await
        .expect("connect");
    let mut bytes = b"SMQR".to_vec();
    bytes.extend_from_slice(&CLAIMED.to_be_bytes());
    bytes.resize(bytes.len() + SENT, b'x');
    // The node may close the connection before it has read everything.
    let _ = stream.write_all(&bytes).await;
    // It refuses the length at once: it neither waits for a gigabyte nor allocates it.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the node still holds a connection that claimed a {CLAIMED}-byte frame"
    );
    watch.verdict(&mut node, Rss::Peak, RSS_BOUND).await;
}
