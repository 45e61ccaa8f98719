//! Multi-process cluster harness: real `supermq` processes on loopback ports, each with its
//! own configuration file and log, killed when dropped. Logs are printed when a test fails.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use supermq::protocol::{Packet, ProtocolVersion, QoS};

use super::TestClient;

/// The cluster secret of the nodes these tests start (`cluster.secret` wants 16 characters
/// or more).
pub const SECRET: &str = "test-cluster-secret-4b7e9c";

/// A free loopback port below the kernel's ephemeral range (32768 and up), so the nodes'
/// own outgoing connections cannot take it between this check and the node's bind; never the
/// same one twice in a test process, as tests run in parallel and bind late.
/// The configuration of an in-process node (`TestBroker`) called `name`, accepting routes on
/// `route` and dialling `seeds`, with fast heartbeats.
pub fn in_process_node(name: &str, route: u16, seeds: &[u16]) -> supermq::config::Config {
    let mut config = super::config();
    config.node.name = name.to_string();
    config.cluster.listen = format!("127.0.0.1:{route}");
    config.cluster.routes = seeds.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    config.cluster.secret = SECRET.to_string();
    config.cluster.heartbeat_ms = 100;
    config.cluster.heartbeat_timeout_ms = 1000;
    config
}

pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = rand::random_range(20_000..32_000);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// One node's identity and ports; `extra` is appended to its `[cluster]` section.
#[derive(Clone)]
pub struct NodeSpec {
    pub name: String,
    pub mqtt: u16,
    pub route: u16,
    pub seeds: Vec<u16>,
    pub cluster: String,
    pub secret: String,
    pub extra: String,
}

impl NodeSpec {
    pub fn new(name: &str, seeds: &[u16]) -> NodeSpec {
        NodeSpec {
            name: name.to_string(),
            mqtt: free_port(),
            route: free_port(),
            seeds: seeds.to_vec(),
            cluster: "test".to_string(),
            secret: SECRET.to_string(),
            extra: String::new(),
        }
    }

    fn config(&self) -> String {
        let seeds: Vec<String> = self
            .seeds
            .iter()
            .map(|p| format!("\"127.0.0.1:{p}\""))
            .collect();
        format!(
            "[node]\nname = \"{}\"\n[mqtt]\ntcp = \"127.0.0.1:{}\"\n[http]\nlisten = \"\"\n[log]\nlevel = \"info\"\n\
             [cluster]\nlisten = \"127.0.0.1:{}\"\nroutes = [{}]\nname = \"{}\"\nsecret = \"{}\"\n\
             heartbeat_ms = 100\nheartbeat_timeout_ms = 1000\nredial_min_ms = 50\nredial_max_ms = 400\n{}",
            self.name,
            self.mqtt,
            self.route,
            seeds.join(", "),
            self.cluster,
            self.secret,
            self.extra
        )
    }
}

/// A running node.
pub struct Node {
    pub spec: NodeSpec,
    child: Option<Child>,
    log: PathBuf,
}

impl Node {
    /// Starts the node and waits until its MQTT port accepts connections and its route port
    /// is bound (it is bound after the MQTT ones; the log says so, and a probe connection
    /// would count as a refused route handshake).
    pub async fn start(spec: NodeSpec) -> Node {
        let dir = std::env::temp_dir().join(format!(
            "supermq-cluster-{}-{}",
            std::process::id(),
            spec.route
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join(format!("{}.conf", spec.name));
        std::fs::write(&conf, spec.config()).expect("write config");
        let log = dir.join(format!("{}.log", spec.name));
        let child = super::process::spawn(&conf, &log);
        let mut node = Node {
            spec,
            child: Some(child),
            log,
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(node.mqtt()).await.is_err()
            || !node.log().contains("listening for routes")
        {
            if let Some(child) = &mut node.child {
                assert!(
                    child.try_wait().ok().flatten().is_none(),
                    "node {} exited; log:\n{}",
                    node.spec.name,
                    node.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "node {} did not start; log:\n{}",
                node.spec.name,
                node.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        node
    }

    pub fn mqtt(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.spec.mqtt))
    }

    pub fn route_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.spec.route))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// True while the node's process has not exited (a crash, an abort).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// SIGKILL: no goodbye to the peers.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM: a graceful shutdown; returns once the process has exited.
    pub fn stop(&mut self) {
        self.signal("-TERM");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the node stops dead, its sockets open, as a hung or paused machine does.
    /// Returns once the kernel shows it stopped: the signal is asynchronous, and a node busy
    /// on a CPU could otherwise still answer a request sent right after.
    pub fn freeze(&self) {
        self.signal("-STOP");
        let pid = self.child.as_ref().expect("node running").id();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // The state follows the command name, which is in parentheses.
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next());
            if state == Some("T") || std::time::Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// SIGCONT: a frozen node runs on.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("node running").id();
        let status = Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// How many times the log contains `text`.
    pub fn log_count(&self, text: &str) -> usize {
        self.log().matches(text).count()
    }

    /// Waits until the log contains `text` at least `times` times.
    pub async fn wait_for_log_count(&self, text: &str, times: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.log_count(text) < times {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not log {text:?} {times} times; log:\n{}",
                self.spec.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A connected MQTT 5 client on this node.
    pub async fn client(&self, id: &str) -> TestClient {
        TestClient::connect(self.mqtt(), ProtocolVersion::V5, id, true)
            .await
            .0
    }

    /// Waits until the log contains `text`.
    pub async fn wait_for_log(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !self.log().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} never logged {text:?}; log:\n{}",
                self.spec.name,
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.spec.name, self.log());
        }
    }
}

/// Starts node1 and nodes 2..=n seeded with node1 only.
pub async fn start_cluster(n: usize) -> Vec<Node> {
    let first = NodeSpec::new("node1", &[]);
    let seed = first.route;
    let mut nodes = vec![Node::start(first).await];
    for i in 2..=n {
        nodes.push(Node::start(NodeSpec::new(&format!("node{i}"), &[seed])).await);
    }
    nodes
}

/// Waits until a message published on `from` reaches a subscriber on `to`: proves the route
/// between them is up and `to`'s interest arrived. Polls with QoS 0 publishes.
pub async fn wait_for_path(from: &Node, to: &Node, within: Duration) {
    let topic = format!("probe/{}/{}/{}", from.spec.name, to.spec.name, free_port());
    let mut sub = to.client(&format!("probe-sub-{}", free_port())).await;
    sub.subscribe(&topic, QoS::AtMostOnce).await;
    let mut publisher = from.client(&format!("probe-pub-{}", free_port())).await;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        publisher
            .publish(&topic, b"probe", QoS::AtMostOnce, false)
            .await;
        if let Some(Packet::Publish(_)) = sub.recv_within(Duration::from_millis(100)).await.open() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no path from {} to {} within {within:?}",
            from.spec.name,
            to.spec.name
        );
    }
}

/// Waits until every ordered pair of nodes has a path.
pub async fn wait_for_mesh(nodes: &[Node]) {
    for a in nodes {
        for b in nodes {
            if a.spec.name != b.spec.name {
                wait_for_path(a, b, Duration::from_secs(10)).await;
            }
        }
    }
}

/// A fake route peer speaking the wire format by hand (tests/common cannot reach the crate's
/// private frame module): it passes the handshake, declares interest, and reads what the node
/// sends it, as slowly as a test wants.
pub struct RoutePeer {
    stream: tokio::net::TcpStream,
}

/// Frame kinds of the route protocol (src/cluster/frame.rs).
pub mod kind {
    pub const INFO: u8 = 1;
    pub const INTEREST: u8 = 4;
    pub const GROUP_WEIGHT: u8 = 6;
    pub const MESSAGE: u8 = 7;
    pub const RETAINED: u8 = 8;
    pub const PEERS: u8 = 9;
    pub const CLIENT_CONNECTED: u8 = 10;
    pub const CHALLENGE: u8 = 11;
    pub const PROOF: u8 = 12;
    pub const SYNCED: u8 = 13;
}

/// The route protocol version the fake peer speaks.
const VERSION: u16 = 5;

/// The fake peer's epoch (what a node draws at start).
const EPOCH: u64 = 7;

impl RoutePeer {
    /// Connects to `addr` and passes the handshake as node `node`. `receive_buffer` shrinks the
    /// socket's receive buffer (set before connecting, so the kernel cannot grow it), which
    /// makes a peer that does not read hold the node's route queue up quickly.
    pub async fn connect(
        addr: SocketAddr,
        node: &str,
        cluster: &str,
        secret: &str,
        receive_buffer: Option<u32>,
    ) -> RoutePeer {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let stream = socket.connect(addr).await.expect("connect");
        let mut peer = RoutePeer { stream };
        let nonce = "5a".repeat(32);
        peer.write(&fake_info(node, cluster, &nonce)).await;
        let mut magic = [0u8; 4];
        peer.read_exact(&mut magic).await;
        assert_eq!(&magic, b"SMQR");
        let (kind, body) = peer.frame().await.expect("CHALLENGE");
        assert_eq!(kind, kind::CHALLENGE, "the node challenges the dialler");
        let challenge = &body[3..];
        let proof = dialler_proof(secret, challenge, nonce.as_bytes(), node, cluster);
        let mut body = vec![kind::PROOF];
        put_bytes(&mut body, &proof);
        peer.write(&framed(&body)).await;
        let (kind, _) = peer.frame().await.expect("INFO back");
        assert_eq!(kind, kind::INFO, "the node answers with its INFO");
        let (kind, _) = peer.frame().await.expect("PROOF back");
        assert_eq!(kind, kind::PROOF, "and its own proof");
        // Its full interest set, empty: what it declares from now on applies at once.
        peer.send(&[kind::SYNCED]).await;
        peer
    }

    /// Declares interest in `filter`.
    pub async fn interest(&mut self, filter: &str) {
        let mut body = vec![kind::INTEREST];
        put_str(&mut body, filter);
        self.send(&body).await;
    }

    /// Sends a QoS 0 message on `topic` for the node's plain subscribers.
    pub async fn message(&mut self, topic: &str, payload: &[u8]) {
        let mut body = vec![kind::MESSAGE, 1, 0, 0];
        let publish = super::publish_packet(topic, payload, QoS::AtMostOnce, false, 0);
        let mut packet = bytes::BytesMut::new();
        supermq::protocol::encode(&Packet::Publish(publish), ProtocolVersion::V5, &mut packet)
            .expect("encodes");
        body.extend_from_slice(&packet);
        self.send(&body).await;
    }

    /// Sends one frame: `body` is its kind and what follows; the length prefix is added.
    pub async fn send(&mut self, body: &[u8]) {
        self.write(&framed(body)).await;
    }

    /// The next frame (kind and body), or `None` when the node closed the connection.
    pub async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        let read = async {
            let len = self.stream.read_u32().await.ok()? as usize;
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.ok()?;
            let kind = *body.first()?;
            Some((kind, body))
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("a frame or the end of the route within 20 s")
    }

    async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.expect("write");
    }

    async fn read_exact(&mut self, buf: &mut [u8]) {
        use tokio::io::AsyncReadExt;
        tokio::time::timeout(Duration::from_secs(10), self.stream.read_exact(buf))
            .await
            .expect("in time")
            .expect("read");
    }
}

/// The dialler's proof of the secret (src/cluster/handshake.rs): HMAC-SHA256 over the magic,
/// the version and the length-prefixed role, challenge, own nonce, node and cluster names
/// and epoch.
fn dialler_proof(
    secret: &str,
    challenge: &[u8],
    nonce: &[u8],
    node: &str,
    cluster: &str,
) -> Vec<u8> {
    let mut signed = b"SMQR".to_vec();
    signed.extend_from_slice(&VERSION.to_be_bytes());
    for part in [
        b"dialler",
        challenge,
        nonce,
        node.as_bytes(),
        cluster.as_bytes(),
        format!("{EPOCH:016x}").as_bytes(),
    ] {
        signed.extend_from_slice(&(part.len() as u64).to_be_bytes());
        signed.extend_from_slice(part);
    }
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    ring::hmac::sign(&key, &signed).as_ref().to_vec()
}

/// The bytes that open a route handshake from a fake node: magic and an INFO frame.
pub fn fake_info(node: &str, cluster: &str, nonce: &str) -> Vec<u8> {
    let mut body = vec![kind::INFO];
    body.extend_from_slice(&VERSION.to_be_bytes());
    for s in [node, cluster, "127.0.0.1:1", nonce] {
        put_str(&mut body, s);
    }
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&EPOCH.to_be_bytes());
    let mut out = b"SMQR".to_vec();
    out.extend_from_slice(&framed(&body));
    out
}

pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}
