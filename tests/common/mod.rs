//! Test harness: a real broker in-process on a loopback port, and a raw MQTT client built on
//! our codec that can send anything, including bytes no well-behaved client would. The client
//! runs over TCP, TLS, WebSocket or secure WebSocket ([`Io`]); `raw_*` build packets by hand.
//!
//! Every helper waits with a timeout, so a broker that does not answer fails the test instead
//! of hanging it.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use supermq::broker::Broker;
use supermq::config::{Config, Limits};
use supermq::protocol::{
    self, ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, SubAck, Subscribe,
    SubscriptionOptions,
};
use supermq::server::Server;
use supermq::transport::Kind;

pub mod cluster;
pub mod process;

/// How long a test waits for something it expects.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does NOT happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A configuration for tests: TCP on an ephemeral loopback port, nothing else (no HTTP: its
/// default port would be shared by every broker of a test run).
pub fn config() -> Config {
    let mut config = Config::default();
    config.mqtt.tcp = "127.0.0.1:0".to_string();
    config.http.listen = String::new();
    config
}

/// The test configuration with some limits changed.
pub fn config_with(change: impl FnOnce(&mut Limits)) -> Config {
    let mut config = config();
    change(&mut config.limits);
    config
}

/// A file of tests/certs/.
pub fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

/// Polls `condition` until it holds; fails the test if it does not within [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A broker running in-process; shut down when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    /// This node's part of the cluster, when the configuration turns it on.
    pub cluster: Option<Arc<supermq::cluster::Cluster>>,
    /// The HTTP listener, when the configuration turns it on.
    pub http: Option<SocketAddr>,
    /// Every bound listener, recorded before the server starts running (and is moved).
    listeners: Vec<(Kind, SocketAddr)>,
    server: Option<Server>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    /// A broker with the default test configuration.
    pub async fn start_default() -> TestBroker {
        TestBroker::start(config()).await
    }

    /// A broker with the default test configuration and the HTTP listener on (an ephemeral
    /// loopback port, [`TestBroker::http`]) with these `http.api_keys`.
    pub async fn with_http(keys: Vec<String>) -> TestBroker {
        let mut config = config();
        config.http.listen = "127.0.0.1:0".to_string();
        config.http.api_keys = keys;
        TestBroker::start(config).await
    }

    pub async fn start(config: Config) -> TestBroker {
        let server = Server::bind(&config).await.expect("server binds");
        let addr = server.local_addr(Kind::Tcp).expect("tcp listener");
        let broker = Arc::clone(server.broker());
        let cluster = server.cluster().cloned();
        let http = server.http_addr();
        let listeners = [Kind::Tcp, Kind::Tls, Kind::Ws, Kind::Wss]
            .into_iter()
            .filter_map(|kind| server.local_addr(kind).map(|addr| (kind, addr)))
            .collect();
        let mut test = TestBroker {
            addr,
            broker,
            cluster,
            http,
            listeners,
            server: Some(server),
            stop: None,
            done: None,
        };
        test.run();
        test
    }

    /// The bound address of another listener kind.
    pub fn listener(&self, kind: Kind) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(k, _)| *k == kind)
            .map(|(_, addr)| *addr)
    }

    fn run(&mut self) {
        let (stop, stopped) = oneshot::channel::<()>();
        let server = self.server.take().expect("not running yet");
        self.stop = Some(stop);
        self.done = Some(tokio::spawn(server.run(async {
            let _ = stopped.await;
        })));
    }

    /// Shuts the broker down gracefully and waits until it has stopped.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(Duration::from_secs(10), done)
                .await
                .expect("shutdown finishes")
                .expect("server task");
        }
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A byte stream a WebSocket can run over: TCP or TLS.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// The byte stream under a [`TestClient`]: plain TCP, TLS, or WebSocket binary frames (over
/// TCP or TLS).
pub enum Io {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<Box<dyn Stream>>>),
}

impl Io {
    async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Io::Tcp(stream) => stream.write_all(bytes).await,
            Io::Tls(stream) => {
                stream.write_all(bytes).await?;
                stream.flush().await
            }
            Io::Ws(ws) => ws
                .send(Message::Binary(Bytes::copy_from_slice(bytes)))
                .await
                .map_err(io::Error::other),
        }
    }

    /// Appends what arrives to `buf`; `Ok(0)` at the end of the stream. Cancel-safe.
    async fn read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        match self {
            Io::Tcp(stream) => stream.read_buf(buf).await,
            Io::Tls(stream) => stream.read_buf(buf).await,
            Io::Ws(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(0),
                    Some(Ok(Message::Binary(data))) if !data.is_empty() => {
                        buf.extend_from_slice(&data);
                        return Ok(data.len());
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => return Err(io::Error::other(error)),
                }
            },
        }
    }
}

/// A TLS connection to `addr` for the name `localhost`, trusting the test CA.
async fn tls_stream(addr: SocketAddr) -> tokio_rustls::client::TlsStream<TcpStream> {
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    stream.set_nodelay(true).expect("nodelay");
    let name = ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(WAIT, tls_connector().connect(name, stream))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake")
}

/// A TLS connector that trusts only the test CA (tests/certs/ca.pem).
pub fn tls_connector() -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(cert("ca.pem")).expect("ca.pem") {
        roots.add(ca.expect("CA certificate")).expect("CA accepted");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

/// What [`TestClient::recv_within`] saw: a packet, nothing (the connection still open), or
/// the end of the connection. Silence and a dead connection are different answers, so a test
/// that expects nothing cannot pass on a broker that closed the connection.
#[derive(Debug)]
// Returned once per packet and matched at once: boxing the packet would only lengthen every
// match.
#[allow(clippy::large_enum_variant)]
pub enum Received {
    Packet(Packet),
    Silent,
    Closed,
}

impl Received {
    /// The packet, or `None` for silence; fails the test if the connection ended.
    pub fn open(self) -> Option<Packet> {
        match self {
            Received::Packet(packet) => Some(packet),
            Received::Silent => None,
            Received::Closed => panic!("the connection ended unexpectedly"),
        }
    }
}

/// A raw MQTT client over TCP, TLS or WebSocket.
pub struct TestClient {
    io: Io,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl TestClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        TestClient::over(Io::Tcp(stream), version)
    }

    /// Opens a TCP connection from the loopback address `source` (any of 127.0.0.0/8), so
    /// that the broker sees another client address than 127.0.0.1, without sending anything.
    pub async fn open_from(
        addr: SocketAddr,
        source: std::net::Ipv4Addr,
        version: ProtocolVersion,
    ) -> TestClient {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from((source, 0)))
            .expect("bind the source address");
        let stream = socket.connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        TestClient::over(Io::Tcp(stream), version)
    }

    /// Opens a TLS connection (server name `localhost`, trusting the test CA).
    pub async fn open_tls(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
        TestClient::over(Io::Tls(Box::new(tls_stream(addr).await)), version)
    }

    /// Opens a WebSocket connection on `/mqtt` offering the `mqtt` subprotocol, and checks
    /// that the broker chose it.
    pub async fn open_ws(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        TestClient::websocket(Box::new(stream), "ws", addr, version).await
    }

    /// Opens a secure WebSocket connection (WebSocket over TLS) on `/mqtt`.
    pub async fn open_wss(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
        let stream = tls_stream(addr).await;
        TestClient::websocket(Box::new(stream), "wss", addr, version).await
    }

    async fn websocket(
        stream: Box<dyn Stream>,
        scheme: &str,
        addr: SocketAddr,
        version: ProtocolVersion,
    ) -> TestClient {
        let mut request = format!("{scheme}://{addr}/mqtt")
            .into_client_request()
            .expect("request");
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "mqtt".parse().expect("header"));
        let (ws, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
                .await
                .expect("WebSocket handshake in time")
                .expect("WebSocket handshake");
        let protocol = response.headers().get("Sec-WebSocket-Protocol");
        assert_eq!(
            protocol.map(|p| p.to_str().expect("ascii")),
            Some("mqtt"),
            "subprotocol"
        );
        TestClient::over(Io::Ws(Box::new(ws)), version)
    }

    /// A client over an already opened stream.
    pub fn over(io: Io, version: ProtocolVersion) -> TestClient {
        TestClient {
            io,
            buf: BytesMut::new(),
            version,
        }
    }

    /// Sends CONNECT on an opened stream and expects a successful CONNACK.
    pub async fn handshake(&mut self, connect: Connect) -> ConnAck {
        self.version = connect.protocol;
        self.send(&Packet::Connect(Box::new(connect))).await;
        match self.recv().await {
            Packet::ConnAck(connack) => {
                assert_eq!(connack.code, 0, "CONNACK refused: {connack:?}");
                connack
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// A connected MQTT 5.0 client with a clean start.
    pub async fn v5(addr: SocketAddr, client_id: &str) -> TestClient {
        TestClient::connect(addr, ProtocolVersion::V5, client_id, true)
            .await
            .0
    }

    /// A connected MQTT 3.1.1 client with a clean session.
    pub async fn v311(addr: SocketAddr, client_id: &str) -> TestClient {
        TestClient::connect(addr, ProtocolVersion::V311, client_id, true)
            .await
            .0
    }

    /// Connects and expects a successful CONNACK.
    pub async fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean_start: bool,
    ) -> (TestClient, ConnAck) {
        let mut connect = connect_packet(version, client_id);
        connect.clean_start = clean_start;
        let (client, connack) = TestClient::connect_with(addr, connect).await;
        assert_eq!(connack.code, 0, "CONNACK refused: {connack:?}");
        (client, connack)
    }

    /// Sends the given CONNECT and returns the CONNACK, whatever its code.
    pub async fn connect_with(addr: SocketAddr, connect: Connect) -> (TestClient, ConnAck) {
        let mut client = TestClient::open(addr, connect.protocol).await;
        client.send(&Packet::Connect(Box::new(connect))).await;
        match client.recv().await {
            Packet::ConnAck(connack) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub async fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        protocol::encode(packet, self.version, &mut out).expect("encode");
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write");
    }

    /// Sends bytes the broker may refuse before it has read them all: a write that fails
    /// because the broker closed the connection is an answer, not a test failure.
    pub async fn try_send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes).await
    }

    /// The next packet; fails the test if none comes within [`WAIT`] or the connection ends.
    pub async fn recv(&mut self) -> Packet {
        match self.recv_within(WAIT).await {
            Received::Packet(packet) => packet,
            Received::Silent => panic!("no packet within {WAIT:?}"),
            Received::Closed => panic!("the connection ended while a packet was expected"),
        }
    }

    /// The next packet, or what happened instead within `wait`: silence, or the end of the
    /// stream (the broker closed it, or it failed).
    pub async fn recv_within(&mut self, wait: Duration) -> Received {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(packet) = protocol::decode(&mut self.buf, self.version, usize::MAX)
                .expect("broker sent a valid packet")
            {
                return Received::Packet(packet);
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Err(_) => return Received::Silent,
                Ok(Ok(0)) | Ok(Err(_)) => return Received::Closed,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Asserts that nothing arrives for a short while and that the connection is still open.
    pub async fn expect_nothing(&mut self) {
        match self.recv_within(QUIET).await {
            Received::Silent => {}
            Received::Packet(packet) => panic!("expected nothing, got {packet:?}"),
            Received::Closed => panic!("expected nothing, but the connection ended"),
        }
    }

    /// Waits for the broker to close the connection; returns the packets sent before that.
    pub async fn expect_closed(&mut self) -> Vec<Packet> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut packets = Vec::new();
        loop {
            while let Ok(Some(packet)) = protocol::decode(&mut self.buf, self.version, usize::MAX) {
                packets.push(packet);
            }
            self.buf.reserve(4096);
            match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return packets,
                Ok(Ok(_)) => {}
                Err(_) => panic!("connection still open after {WAIT:?}; got {packets:?}"),
            }
        }
    }

    /// Waits for the broker to close the connection and checks that an MQTT 5.0 client got a
    /// DISCONNECT with `code` as the last packet (an older client gets no DISCONNECT at all).
    /// Returns the packets before the DISCONNECT.
    pub async fn expect_disconnect(&mut self, code: u8) -> Vec<Packet> {
        let mut packets = self.expect_closed().await;
        if self.version.is_v5() {
            match packets.pop() {
                Some(Packet::Disconnect(disconnect)) => assert_eq!(
                    disconnect.reason, code,
                    "DISCONNECT reason {:#04x}, expected {code:#04x}: {disconnect:?}",
                    disconnect.reason
                ),
                other => panic!("expected DISCONNECT {code:#04x} before the close, got {other:?}"),
            }
        } else {
            assert!(
                !packets.iter().any(|p| matches!(p, Packet::Disconnect(_))),
                "a server never sends DISCONNECT before 5.0: {packets:?}"
            );
        }
        packets
    }

    /// Subscribes to one filter and returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_with(
            1,
            vec![(filter.to_string(), options)],
            Properties::default(),
        )
        .await
    }

    pub async fn subscribe_with(
        &mut self,
        packet_id: u16,
        filters: Vec<(String, SubscriptionOptions)>,
        properties: Properties,
    ) -> SubAck {
        self.send(&Packet::Subscribe(Subscribe {
            packet_id,
            filters,
            properties,
        }))
        .await;
        match self.recv().await {
            Packet::SubAck(suback) => suback,
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Publishes; for QoS 1/2 also completes the exchange and returns the ack's reason code.
    pub async fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, retain: bool) -> u8 {
        let packet_id = if qos == QoS::AtMostOnce { 0 } else { 7 };
        self.send(&Packet::Publish(publish_packet(
            topic, payload, qos, retain, packet_id,
        )))
        .await;
        match qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => match self.recv().await {
                Packet::PubAck(ack) => ack.reason,
                other => panic!("expected PUBACK, got {other:?}"),
            },
            QoS::ExactlyOnce => {
                let code = match self.recv().await {
                    Packet::PubRec(ack) => ack.reason,
                    other => panic!("expected PUBREC, got {other:?}"),
                };
                self.send(&Packet::PubRel(protocol::Ack::new(packet_id)))
                    .await;
                match self.recv().await {
                    Packet::PubComp(_) => code,
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
        }
    }

    /// Publishes to a topic this client is subscribed to and completes both exchanges — its
    /// own as publisher and the broker's delivery back to it — whatever order the broker's
    /// packets come in (MQTT leaves it open). Returns the delivered PUBLISH.
    pub async fn publish_to_self(&mut self, topic: &str, payload: &[u8], qos: QoS) -> Publish {
        const ID: u16 = 4242;
        let packet_id = if qos == QoS::AtMostOnce { 0 } else { ID };
        self.send_publish(publish_packet(topic, payload, qos, false, packet_id))
            .await;
        let mut sent = qos == QoS::AtMostOnce;
        let mut delivered: Option<Publish> = None;
        let mut received = false;
        while !(sent && received) {
            match self.recv().await {
                Packet::PubAck(ack) if ack.packet_id == ID => sent = true,
                Packet::PubRec(ack) if ack.packet_id == ID => {
                    self.send(&Packet::PubRel(protocol::Ack::new(ID))).await;
                }
                Packet::PubComp(ack) if ack.packet_id == ID => sent = true,
                Packet::Publish(publish) if delivered.is_none() => {
                    let id = publish.packet_id;
                    match publish.qos {
                        QoS::AtMostOnce => received = true,
                        QoS::AtLeastOnce => {
                            self.send(&Packet::PubAck(protocol::Ack::new(id))).await;
                            received = true;
                        }
                        QoS::ExactlyOnce => {
                            self.send(&Packet::PubRec(protocol::Ack::new(id))).await;
                        }
                    }
                    delivered = Some(publish);
                }
                Packet::PubRel(rel)
                    if delivered.as_ref().map(|p| p.packet_id) == Some(rel.packet_id) =>
                {
                    self.send(&Packet::PubComp(protocol::Ack::new(rel.packet_id)))
                        .await;
                    received = true;
                }
                other => panic!("unexpected {other:?} while publishing to self"),
            }
        }
        delivered.expect("delivered")
    }

    /// Sends a PUBLISH as given, without waiting for any answer.
    pub async fn send_publish(&mut self, publish: Publish) {
        self.send(&Packet::Publish(publish)).await;
    }

    /// Publishes at QoS 1 and returns the whole PUBACK.
    pub async fn publish_qos1(&mut self, publish: Publish) -> protocol::Ack {
        assert_eq!(publish.qos, QoS::AtLeastOnce);
        self.send_publish(publish).await;
        match self.recv().await {
            Packet::PubAck(ack) => ack,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// Acknowledges a received PUBLISH as the protocol requires: PUBACK for QoS 1,
    /// PUBREC → PUBREL → PUBCOMP for QoS 2, nothing for QoS 0.
    pub async fn ack(&mut self, publish: &Publish) {
        match publish.qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.send(&Packet::PubAck(protocol::Ack::new(publish.packet_id)))
                    .await;
            }
            QoS::ExactlyOnce => {
                self.send(&Packet::PubRec(protocol::Ack::new(publish.packet_id)))
                    .await;
                match self.recv().await {
                    Packet::PubRel(rel) => assert_eq!(rel.packet_id, publish.packet_id),
                    other => panic!("expected PUBREL, got {other:?}"),
                }
                self.send(&Packet::PubComp(protocol::Ack::new(publish.packet_id)))
                    .await;
            }
        }
    }

    /// The next PUBLISH, acknowledged.
    pub async fn recv_acked(&mut self) -> Publish {
        let publish = self.recv_publish().await;
        self.ack(&publish).await;
        publish
    }

    /// Sends PINGREQ and expects PINGRESP: proves the connection is open and that everything
    /// the broker sent before has been read.
    pub async fn ping(&mut self) {
        self.send(&Packet::PingReq).await;
        match self.recv().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// The next PUBLISH; fails on anything else.
    pub async fn recv_publish(&mut self) -> Publish {
        match self.recv().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// Sends DISCONNECT (normal) and waits for the close.
    pub async fn disconnect(mut self) {
        self.send(&Packet::Disconnect(protocol::Disconnect::default()))
            .await;
        self.expect_closed().await;
    }
}

/// Subscription options with only a QoS.
pub fn qos(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        qos,
        ..SubscriptionOptions::default()
    }
}

/// A CONNECT with a clean start and keep alive 60.
pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        protocol: version,
        clean_start: true,
        keep_alive: 60,
        client_id: client_id.to_string(),
        will: None,
        username: None,
        password: None,
        properties: Properties::default(),
    }
}

pub fn publish_packet(
    topic: &str,
    payload: &[u8],
    qos: QoS,
    retain: bool,
    packet_id: u16,
) -> Publish {
    Publish {
        dup: false,
        qos,
        retain,
        topic: topic.to_string(),
        packet_id,
        properties: Properties::default(),
        payload: Bytes::copy_from_slice(payload),
    }
}

/// A CONNECT with a will (QoS 0, not retained) and keep alive 60.
pub fn connect_with_will(
    version: ProtocolVersion,
    client_id: &str,
    topic: &str,
    payload: &[u8],
) -> Connect {
    let mut connect = connect_packet(version, client_id);
    connect.will = Some(protocol::Will {
        topic: topic.to_string(),
        payload: Bytes::copy_from_slice(payload),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Properties::default(),
    });
    connect
}

// ---------------------------------------------------------------------------------------------
// Raw bytes, for packets our encoder would never produce.

/// A whole packet from its first byte and its body; the remaining length is computed.
pub fn raw_packet(first: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![first];
    let mut rest = body.len();
    loop {
        let byte = (rest & 0x7F) as u8;
        rest >>= 7;
        if rest == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(body);
    out
}

/// A UTF-8 string or binary field: two-byte length, then the bytes.
pub fn raw_string(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).expect("short field");
    let mut out = len.to_be_bytes().to_vec();
    out.extend_from_slice(bytes);
    out
}

/// A CONNECT with any protocol name and level, the clean flag, keep alive 60, an empty
/// property block if `properties` (as MQTT 5.0 has), and `client_id`.
pub fn raw_connect(name: &[u8], level: u8, properties: bool, client_id: &str) -> Vec<u8> {
    let mut body = raw_string(name);
    body.extend_from_slice(&[level, 0x02, 0x00, 60]);
    if properties {
        body.push(0);
    }
    body.extend_from_slice(&raw_string(client_id.as_bytes()));
    raw_packet(0x10, &body)
}

/// Receives (and acknowledges) PUBLISH packets until none arrives for `quiet`; returns them
/// with the client. Fails if the connection ends. Run it in a task while another client
/// publishes.
pub async fn collect(mut client: TestClient, quiet: Duration) -> (TestClient, Vec<Publish>) {
    let mut got = Vec::new();
    while let Some(packet) = client.recv_within(quiet).await.open() {
        if let Packet::Publish(publish) = packet {
            client.ack(&publish).await;
            got.push(publish);
        }
    }
    (client, got)
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`), as a client of the
/// admin API sends it; returns the status code and the body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String) {
    http_with(addr, method, path, bearer, "").await
}

/// [`http`] with a JSON body.
pub async fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("http connect");
    let auth = bearer.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("http write");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an HTTP answer in time")
        .expect("http read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}
