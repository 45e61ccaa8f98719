//! Route security across real processes: the secret never crosses the wire (a recording proxy
//! sits between two nodes), route TLS with mutual authentication forms the mesh and carries
//! messages, and a node whose certificate another CA signed is kept out.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::cluster::{Node, NodeSpec, SECRET, free_port, wait_for_mesh, wait_for_path};
use supermq::protocol::{QoS, reason};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every byte that went through a [`Tap`], one buffer per connection and direction (so a
/// string cannot be missed for being cut by the other direction's bytes).
type Capture = Arc<Mutex<Vec<Arc<Mutex<Vec<u8>>>>>>;

/// A TCP proxy on a loopback port that forwards every connection to `target` and records
/// what passes, both ways.
struct Tap {
    port: u16,
    capture: Capture,
}

impl Tap {
    async fn start(target: SocketAddr) -> Tap {
        let port = free_port();
        let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        let capture: Capture = Arc::default();
        let streams = Arc::clone(&capture);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let (in_read, in_write) = inbound.into_split();
                let (out_read, out_write) = outbound.into_split();
                let (there, back) = (Arc::default(), Arc::default());
                let mut recorded = streams.lock().expect("not poisoned");
                recorded.push(Arc::clone(&there));
                recorded.push(Arc::clone(&back));
                tokio::spawn(copy(in_read, out_write, there));
                tokio::spawn(copy(out_read, in_write, back));
            }
        });
        Tap { port, capture }
    }

    /// What went through so far, per connection and direction.
    fn recorded(&self) -> Vec<Vec<u8>> {
        self.capture
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|seen| seen.lock().expect("not poisoned").clone())
            .collect()
    }
}

/// Copies `from` to `to`, recording every byte into `seen`, until either side closes.
async fn copy<R, W>(mut from: R, mut to: W, seen: Arc<Mutex<Vec<u8>>>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        seen.lock()
            .expect("not poisoned")
            .extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Standard base64, with padding; the URL-safe and unpadded forms are derived from it.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The secret in every form a careless implementation might send it: as is, in hex (both
/// cases), in base64 (standard and URL-safe, padded or not).
fn secret_forms(secret: &str) -> Vec<Vec<u8>> {
    let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
    let b64 = base64(secret.as_bytes());
    let url = b64.replace('+', "-").replace('/', "_");
    [
        secret.to_string(),
        hex.clone(),
        hex.to_uppercase(),
        b64.trim_end_matches('=').to_string(),
        url.trim_end_matches('=').to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}

/// `[cluster]` lines for route TLS with the test certificates (tests/certs/README.md).
fn route_tls(cert: &str, ca: &str) -> String {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/certs");
    format!(
        "tls_cert = \"{dir}/{cert}.pem\"\ntls_key = \"{dir}/{cert}.key\"\ntls_ca = \"{dir}/{ca}.pem\"\n"
    )
}

/// Node `a` dials node `b` through a recording proxy only (`b` learns `a`'s address but never
/// dials it: a route goes one way), they exchange a message each way, and the capture is
/// returned with the payload sent from `a` to `b`.
async fn mesh_through_a_tap(extra: &str) -> (Vec<Vec<u8>>, Vec<u8>, Node, Node) {
    let mut spec_b = NodeSpec::new("b", &[]);
    spec_b.extra = extra.to_string();
    let b = Node::start(spec_b).await;
    let tap = Tap::start(b.route_addr()).await;
    let mut spec_a = NodeSpec::new("a", &[tap.port]);
    spec_a.extra = extra.to_string();
    let a = Node::start(spec_a).await;
    wait_for_path(&a, &b, Duration::from_secs(10)).await;
    wait_for_path(&b, &a, Duration::from_secs(10)).await;
    let payload = format!("payload-through-the-tap-{}", free_port()).into_bytes();
    let mut sub = b.client("tap-sub").await;
    sub.subscribe("tap/check", QoS::AtLeastOnce).await;
    let mut publisher = a.client("tap-pub").await;
    loop {
        let code = publisher
            .publish("tap/check", &payload, QoS::AtLeastOnce, false)
            .await;
        if code == reason::SUCCESS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sub.recv_acked().await.payload.as_ref(), payload.as_slice());
    // The one route is a's, through the tap: b never dialled a around it.
    assert!(!b.log().contains("outbound=true"), "{}", b.log());
    (tap.recorded(), payload, a, b)
}

fn assert_no_secret(capture: &[Vec<u8>]) {
    for stream in capture {
        for form in secret_forms(SECRET) {
            assert!(
                !contains(stream, &form),
                "{:?} crossed the wire",
                String::from_utf8_lossy(&form)
            );
        }
    }
}

#[tokio::test]
async fn the_secret_never_crosses_the_wire_between_two_nodes() {
    let (capture, payload, _a, _b) = mesh_through_a_tap("").await;
    // The capture holds the real traffic: the handshake and the message in clear.
    assert!(
        capture.iter().any(|s| s.starts_with(b"SMQR")),
        "no handshake captured"
    );
    assert!(
        capture.iter().any(|s| contains(s, &payload)),
        "no message captured"
    );
    assert_no_secret(&capture);
}

#[tokio::test]
async fn over_route_tls_neither_the_secret_nor_the_traffic_is_readable() {
    let (capture, payload, a, b) = mesh_through_a_tap(&route_tls("node", "ca")).await;
    assert!(
        capture.iter().map(Vec::len).sum::<usize>() > 1000,
        "nothing captured"
    );
    for stream in &capture {
        assert!(!contains(stream, &payload), "the message crossed in clear");
        assert!(
            !contains(stream, b"SMQR"),
            "the route protocol crossed in clear"
        );
    }
    assert_no_secret(&capture);
    for node in [&a, &b] {
        assert!(!node.log().contains("route traffic is not encrypted"));
    }
}

#[tokio::test]
async fn tls_routes_form_the_mesh_and_carry_messages() {
    let tls = route_tls("node", "ca");
    let mut first = NodeSpec::new("node1", &[]);
    first.extra = tls.clone();
    let seed = first.route;
    let mut nodes = vec![Node::start(first).await];
    for name in ["node2", "node3"] {
        let mut spec = NodeSpec::new(name, &[seed]);
        spec.extra = tls.clone();
        nodes.push(Node::start(spec).await);
    }
    // node2 → node3 crosses a route learned by discovery, over TLS too.
    wait_for_mesh(&nodes).await;
    nodes[0].wait_for_log("tls=true").await;
}

#[tokio::test]
async fn a_node_whose_certificate_another_ca_signed_is_kept_out() {
    let tls = route_tls("node", "ca");
    let mut spec1 = NodeSpec::new("node1", &[]);
    spec1.extra = tls.clone();
    // The impostor trusts our CA, but its own certificate is another CA's: node1 refuses it
    // as a dialler, and node2 refuses it when node2 dials it.
    let mut impostor = NodeSpec::new("impostor", &[spec1.route]);
    impostor.extra = route_tls("other-node", "ca");
    let mut spec2 = NodeSpec::new("node2", &[spec1.route, impostor.route]);
    spec2.extra = tls;
    let impostor_route = impostor.route;
    let node1 = Node::start(spec1).await;
    let impostor = Node::start(impostor).await;
    let node2 = Node::start(spec2).await;

    let good = [node1, node2];
    wait_for_mesh(&good).await;
    let [node1, node2] = good;
    node1.wait_for_log("route refused").await;
    let refused = node1.log();
    assert!(
        refused.lines().any(|l| l.contains("route refused")
            && l.contains("peer=127.0.0.1:")
            && l.contains("route TLS")),
        "{refused}"
    );
    let dialled = format!("addr=127.0.0.1:{impostor_route}");
    node2.wait_for_log(&dialled).await;
    assert!(
        node2.log().lines().any(|l| l.contains(&dialled)
            && l.contains("cannot establish route")
            && l.contains("route TLS")),
        "{}",
        node2.log()
    );

    // Nothing passes to or from the impostor.
    let mut sub = node1.client("guarded").await;
    sub.subscribe("guarded/#", QoS::AtMostOnce).await;
    let mut publisher = impostor.client("impostor-pub").await;
    for _ in 0..5 {
        let code = publisher
            .publish("guarded/x", b"x", QoS::AtLeastOnce, false)
            .await;
        assert_eq!(code, reason::NO_MATCHING_SUBSCRIBERS);
    }
    sub.expect_nothing().await;
    for node in [&node1, &node2] {
        assert!(!node.log().contains("route up peer=impostor"));
    }
    assert!(!impostor.log().contains("route up"), "{}", impostor.log());
}

/// A node dialling an address where something that does not know the secret listens shows it
/// nothing of the cluster: its INFO names itself only, with no peer list (its peers come in a
/// PEERS frame once the route is authenticated), and nothing follows it.
#[tokio::test]
async fn a_dialler_shows_no_peers_to_a_peer_that_has_not_proved_the_secret() {
    let stranger_port = free_port();
    let stranger = TcpListener::bind(("127.0.0.1", stranger_port))
        .await
        .expect("bind");
    let node1 = Node::start(NodeSpec::new("node1", &[])).await;
    let node2 = Node::start(NodeSpec::new("node2", &[node1.spec.route, stranger_port])).await;
    let nodes = [node1, node2];
    wait_for_mesh(&nodes).await;
    let node1_addr = nodes[0].route_addr().to_string();
    // node2 dials the stranger again and again (a seed); a dial after the mesh is up would
    // once have listed node1.
    for _ in 0..2 {
        let (mut socket, _) = tokio::time::timeout(Duration::from_secs(10), stranger.accept())
            .await
            .expect("node2 dials the stranger")
            .expect("accept");
        let mut head = [0u8; 8];
        socket
            .read_exact(&mut head)
            .await
            .expect("magic and length");
        assert_eq!(&head[..4], b"SMQR");
        let len = u32::from_be_bytes([head[4], head[5], head[6], head[7]]) as usize;
        let mut info = vec![0u8; len];
        socket.read_exact(&mut info).await.expect("INFO");
        assert_eq!(info[0], 1, "an INFO frame");
        // Kind, version, then node, cluster, advertise and nonce, each length-prefixed.
        let mut at = 3;
        let mut strings = Vec::new();
        for _ in 0..4 {
            let n = usize::from(u16::from_be_bytes([info[at], info[at + 1]]));
            strings.push(String::from_utf8_lossy(&info[at + 2..at + 2 + n]).into_owned());
            at += 2 + n;
        }
        assert_eq!(strings[0], "node2");
        // The peer count, then the node's epoch.
        assert_eq!(&info[at..at + 2], [0, 0], "no peers listed: {strings:?}");
        assert_eq!(info.len(), at + 2 + 8, "only the epoch follows");
        assert!(!contains(&info, node1_addr.as_bytes()));
        // Nothing more comes before a CHALLENGE: the node waits, then gives up.
        let mut more = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.read_to_end(&mut more)).await;
        assert!(more.is_empty(), "sent after its INFO: {more:?}");
    }
}

/// Route TLS on one node and not on the other: no route, and each side says why.
#[tokio::test]
async fn route_tls_on_one_node_only_is_refused_both_ways_with_the_reason() {
    let mut secure = NodeSpec::new("secure", &[]);
    secure.extra = route_tls("node", "ca");
    let plain = NodeSpec::new("plain", &[secure.route]);
    secure.seeds = vec![plain.route];
    let secure = Node::start(secure).await;
    let plain = Node::start(plain).await;
    // plain dials secure in clear; secure dials plain in TLS.
    secure
        .wait_for_log("the peer dialled without route TLS, which this node requires")
        .await;
    plain
        .wait_for_log("the peer dialled in TLS and this node has no route TLS")
        .await;
    for node in [&secure, &plain] {
        assert!(!node.log().contains("route up"), "{}", node.log());
    }
}
