//! Connections that never become clients (issue 10, item 5): silent sockets held connection
//! slots for `connect_timeout_secs`, since `max_connections` was checked only after CONNECT;
//! and WebSocket messages could be 16 MiB whatever `max_packet_size` said.

use std::time::Duration;

use tokio::net::TcpStream;

use crate::MIB;
use crate::broker::{RealBroker, Spec};
use crate::common::{Received, TestClient, WAIT, connect_packet};
use crate::watch::{Rss, Watch};
use supermq::protocol::{ProtocolVersion, reason};

/// `limits.max_pending_connections` in the flood test (the default is 10,000; lower here so
/// the flood is small and quick).
const MAX_PENDING: usize = 50;

/// `limits.max_connections` in the flood test: twice the pending cap, a fifth of the flood.
const MAX_CONNECTIONS: usize = 100;

/// Silent sockets opened and held: ten times the pending cap, five times `max_connections`,
/// under the listener's accept backlog (1,024) so they connect even if the broker stops
/// accepting.
const SILENT: usize = 500;

/// The client that does send CONNECT must be answered within this.
const CONNACK_WITHIN: Duration = Duration::from_secs(2);

/// Descriptors the broker may hold beyond one per pending connection: the pair, the probes,
/// a few sockets on their way to being closed.
const FD_SLACK: usize = 32;

/// Memory: 50 pending connections of a few KiB each, and nothing for the rest.
const FLOOD_RSS_BOUND: u64 = 16 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_do_not_lock_out_a_client_that_sends_connect() {
    let spec = Spec::new("silent-flood")
        .limit("max_pending_connections", MAX_PENDING)
        .limit("max_connections", MAX_CONNECTIONS);
    let mut broker = RealBroker::start(spec).await;
    let watch = Watch::start(&broker).await;
    let files_before = broker.open_files();
    let mut silent = Vec::with_capacity(SILENT);
    for _ in 0..SILENT {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(broker.addr())).await
        {
            silent.push(stream);
        }
    }
    // A broker may stop accepting at its cap (the kernel's backlog takes the rest), and a
    // machine busy with other tests may drop a SYN: enough of a flood is more than both caps.
    assert!(
        silent.len() > MAX_PENDING + MAX_CONNECTIONS,
        "only {} of {SILENT} silent sockets connected",
        silent.len()
    );
    // Let the broker accept (or refuse) them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let files = broker.open_files();
    assert!(
        files <= files_before + MAX_PENDING + FD_SLACK,
        "{SILENT} silent sockets hold {} descriptors in the broker (pending cap {MAX_PENDING})",
        files.saturating_sub(files_before)
    );

    let latecomer = connect_packet(ProtocolVersion::V5, "latecomer");
    let (_client, connack) = tokio::time::timeout(
        CONNACK_WITHIN,
        TestClient::connect_with(broker.addr(), latecomer),
    )
    .await
    .unwrap_or_else(|_| {
        panic!("no CONNACK within {CONNACK_WITHIN:?} behind {SILENT} silent sockets")
    });
    assert_eq!(
        connack.code,
        reason::SUCCESS,
        "a client that sends CONNECT gets in"
    );
    watch.verdict(&mut broker, Rss::Peak, FLOOD_RSS_BOUND).await;
    drop(silent);
}

/// `limits.max_packet_size` in the WebSocket test.
const WS_MAX_PACKET: u32 = 64 * 1024;

/// The WebSocket message sent: sixteen times `max_packet_size`, and well under the 16 MiB
/// the WebSocket layer accepted by itself. It holds nothing but valid PINGREQs, so only its
/// size can be refused.
const WS_MESSAGE: usize = 1 << 20;

/// Memory: a refused message is never buffered whole; one `max_packet_size` at most.
const WS_RSS_BOUND: u64 = 16 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_message_larger_than_max_packet_size_closes_the_connection() {
    let spec = Spec::new("ws-message")
        .websocket()
        .limit("max_packet_size", WS_MAX_PACKET);
    let mut broker = RealBroker::start(spec).await;
    let watch = Watch::start(&broker).await;
    let mut client = TestClient::open_ws(broker.ws_addr(), ProtocolVersion::V311).await;
    client
        .handshake(connect_packet(ProtocolVersion::V311, "ws-big"))
        .await;
    let pings = [0xC0u8, 0x00].repeat(WS_MESSAGE / 2);
    // The broker may close the connection before the message is written whole.
    let _ = client.try_send_bytes(&pings).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut answered = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_within(left).await {
            Received::Closed => break,
            Received::Packet(_) => answered += 1,
            Received::Silent => panic!(
                "a {WS_MESSAGE}-byte WebSocket message was accepted under max_packet_size = \
                 {WS_MAX_PACKET} ({answered} packets answered); the connection is still open"
            ),
        }
    }
    watch.verdict(&mut broker, Rss::Peak, WS_RSS_BOUND).await;
}
