//! The real `supermq` binary as a child process: its configuration written to a temporary
//! directory, free loopback ports, its log kept in a file (printed when a test fails), and what
//! the kernel knows about it — resident memory and open descriptors from /proc. Killed when
//! dropped.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::cluster::free_port;
use crate::common::{TestClient, WAIT, cert, raw_connect};
use supermq::protocol::{Packet, QoS};

/// The cluster name and secret of every node these tests start.
pub const CLUSTER: &str = "hostile";
pub const SECRET: &str = "hostile-cluster-secret";

/// How long a node may take to start listening.
const START_WITHIN: Duration = Duration::from_secs(10);

/// One broker's configuration: its ports and the `[limits]` keys a test changes.
pub struct Spec {
    name: String,
    mqtt: u16,
    ws: Option<u16>,
    tls: Option<u16>,
    route: Option<u16>,
    seeds: Vec<u16>,
    limits: Vec<String>,
}

impl Spec {
    /// A broker with MQTT over TCP on a free port and default limits.
    pub fn new(name: &str) -> Spec {
        Spec {
            name: name.to_string(),
            mqtt: free_port(),
            ws: None,
            tls: None,
            route: None,
            seeds: Vec::new(),
            limits: Vec::new(),
        }
    }

    /// Sets `key = value` in `[limits]` (strings must come quoted).
    pub fn limit(mut self, key: &str, value: impl Display) -> Spec {
        self.limits.push(format!("{key} = {value}"));
        self
    }

    /// Adds the MQTT over WebSocket listener.
    pub fn websocket(mut self) -> Spec {
        self.ws = Some(free_port());
        self
    }

    /// Adds the MQTT over TLS listener, with the test certificate (tests/certs).
    pub fn tls(mut self) -> Spec {
        self.tls = Some(free_port());
        self
    }

    /// Makes the broker a cluster node with a route listener, seeded with `seeds` (route ports).
    pub fn cluster(mut self, seeds: &[u16]) -> Spec {
        self.route = Some(free_port());
        self.seeds = seeds.to_vec();
        self
    }

    fn toml(&self) -> String {
        let mut text = format!(
            "[node]\nname = \"{}\"\n\n[http]\nlisten = \"\"\n\n[mqtt]\ntcp = \"127.0.0.1:{}\"\n",
            self.name, self.mqtt
        );
        if let Some(ws) = self.ws {
            text.push_str(&format!("ws = \"127.0.0.1:{ws}\"\n"));
        }
        if let Some(tls) = self.tls {
            text.push_str(&format!(
                "tls = \"127.0.0.1:{tls}\"\n\n[tls]\ncert = {:?}\nkey = {:?}\n",
                cert("server.pem").display().to_string(),
                cert("server.key").display().to_string()
            ));
        }
        text.push_str("\n[limits]\n");
        for line in &self.limits {
            text.push_str(line);
            text.push('\n');
        }
        if let Some(route) = self.route {
            let seeds: Vec<String> = self
                .seeds
                .iter()
                .map(|port| format!("\"127.0.0.1:{port}\""))
                .collect();
            text.push_str(&format!(
                "\n[cluster]\nlisten = \"127.0.0.1:{route}\"\nroutes = [{}]\nname = \"{CLUSTER}\"\n\
                 secret = \"{SECRET}\"\nredial_min_ms = 50\nredial_max_ms = 400\n",
                seeds.join(", ")
            ));
        }
        text.push_str("\n[log]\nlevel = \"info\"\n");
        text
    }
}

/// A running broker process.
pub struct RealBroker {
    spec: Spec,
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl RealBroker {
    /// Writes the configuration, starts the binary and waits until its MQTT port accepts
    /// connections (every listener is bound before any accepts). Fails with the log if the
    /// process exits first, say because the configuration names a key it does not have.
    pub async fn start(spec: Spec) -> RealBroker {
        let dir = std::env::temp_dir().join(format!(
            "supermq-hostile-{}-{}",
            std::process::id(),
            spec.mqtt
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let conf = dir.join("broker.conf");
        std::fs::write(&conf, spec.toml()).expect("write config");
        let log = dir.join("broker.log");
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_supermq"))
            .arg("-c")
            .arg(&conf)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("spawn supermq");
        let mut broker = RealBroker {
            spec,
            child,
            dir,
            log,
        };
        let deadline = tokio::time::Instant::now() + START_WITHIN;
        while TcpStream::connect(broker.addr()).await.is_err() {
            if let Ok(Some(status)) = broker.child.try_wait() {
                panic!(
                    "{} exited at start ({status}); config:\n{}\nlog:\n{}",
                    broker.spec.name,
                    broker.spec.toml(),
                    broker.log()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not listen within {START_WITHIN:?}; log:\n{}",
                broker.spec.name,
                broker.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        broker
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.spec.mqtt))
    }

    pub fn ws_addr(&self) -> SocketAddr {
        let port = self.spec.ws.expect("started with a WebSocket listener");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn tls_addr(&self) -> SocketAddr {
        let port = self.spec.tls.expect("started with a TLS listener");
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    pub fn route_port(&self) -> u16 {
        self.spec.route.expect("started as a cluster node")
    }

    pub fn route_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.route_port()))
    }

    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Resident memory now (VmRSS), in bytes.
    pub fn rss(&self) -> u64 {
        self.status_kib("VmRSS") * 1024
    }

    /// The most resident memory the process ever had (VmHWM), in bytes.
    pub fn peak_rss(&self) -> u64 {
        self.status_kib("VmHWM") * 1024
    }

    /// Descriptors the process has open: sockets, listeners, files.
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .expect("the broker's /proc/PID/fd")
            .count()
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the broker's /proc/PID/status");
        let line = status
            .lines()
            .find(|line| line.starts_with(&format!("{field}:")))
            .unwrap_or_else(|| panic!("no {field} in /proc/PID/status"));
        line.split_whitespace()
            .nth(1)
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("unreadable {line:?}"))
    }

    /// True while the process runs and a new connection gets a CONNACK (whatever its code: a
    /// broker at one of its limits still answers).
    pub async fn is_alive(&mut self) -> bool {
        if !matches!(self.child.try_wait(), Ok(None)) {
            return false;
        }
        let probe = async {
            let mut stream = TcpStream::connect(self.addr()).await.ok()?;
            let id = format!("alive-{}", free_port());
            let connect = raw_connect(b"MQTT", 4, false, &id);
            stream.write_all(&connect).await.ok()?;
            let mut connack = [0u8; 4];
            stream.read_exact(&mut connack).await.ok()?;
            (connack[0] == 0x20).then_some(())
        };
        tokio::time::timeout(WAIT, probe)
            .await
            .ok()
            .flatten()
            .is_some()
    }

    /// Everything the broker logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RealBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- log of {} ----\n{}", self.spec.name, self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two cluster nodes with default limits, node 2 seeded with node 1; returns once a message
/// published on node 1 reaches a subscriber on node 2.
pub async fn two_nodes(name: &str) -> (RealBroker, RealBroker) {
    let first = RealBroker::start(Spec::new(&format!("{name}-1")).cluster(&[])).await;
    let seed = first.route_port();
    let second = RealBroker::start(Spec::new(&format!("{name}-2")).cluster(&[seed])).await;
    wait_for_path(&first, &second).await;
    (first, second)
}

/// Waits until a QoS 0 probe published on `from` reaches a subscriber on `to`: the route is
/// up and `to`'s interest arrived.
async fn wait_for_path(from: &RealBroker, to: &RealBroker) {
    let topic = format!("probe/{}", free_port());
    let mut sub = TestClient::v5(to.addr(), &format!("probe-sub-{}", free_port())).await;
    sub.subscribe(&topic, QoS::AtMostOnce).await;
    let mut publisher = TestClient::v5(from.addr(), &format!("probe-pub-{}", free_port())).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        publisher
            .publish(&topic, b"probe", QoS::AtMostOnce, false)
            .await;
        let received = sub.recv_within(Duration::from_millis(100)).await.open();
        if let Some(Packet::Publish(_)) = received {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no path from {} to {} within 10 s; logs:\n{}\n{}",
            from.name(),
            to.name(),
            from.log(),
            to.log()
        );
    }
}
