//! Test harness: a real broker in-process on a loopback port, and a raw MQTT client built on
//! our codec that can send anything, including bytes no well-behaved client would.
//!
//! Every helper waits with a timeout, so a broker that does not answer fails the test instead
//! of hanging it.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use supermq::broker::Broker;
use supermq::config::Config;
use supermq::protocol::{
    self, ConnAck, Connect, Packet, Properties, ProtocolVersion, Publish, QoS, SubAck, Subscribe,
    SubscriptionOptions,
};
use supermq::server::Server;
use supermq::transport::Kind;

/// How long a test waits for something it expects.
pub const WAIT: Duration = Duration::from_secs(5);
/// How long a test waits to be sure something does NOT happen.
pub const QUIET: Duration = Duration::from_millis(300);

/// A configuration for tests: TCP on an ephemeral loopback port, nothing else.
pub fn config() -> Config {
    let mut config = Config::default();
    config.mqtt.tcp = "127.0.0.1:0".to_string();
    config
}

/// A broker running in-process; shut down when dropped.
pub struct TestBroker {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    server: Option<Server>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestBroker {
    pub async fn start(config: Config) -> TestBroker {
        let server = Server::bind(&config).await.expect("server binds");
        let addr = server.local_addr(Kind::Tcp).expect("tcp listener");
        let broker = Arc::clone(server.broker());
        let mut test = TestBroker {
            addr,
            broker,
            server: Some(server),
            stop: None,
            done: None,
        };
        test.run();
        test
    }

    /// The bound address of another listener kind.
    pub fn listener(&self, kind: Kind) -> Option<SocketAddr> {
        self.server.as_ref().and_then(|s| s.local_addr(kind))
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

/// A raw MQTT client over TCP.
pub struct TestClient {
    stream: TcpStream,
    buf: BytesMut,
    pub version: ProtocolVersion,
}

impl TestClient {
    /// Opens a TCP connection without sending anything.
    pub async fn open(addr: SocketAddr, version: ProtocolVersion) -> TestClient {
        let stream = TcpStream::connect(addr).await.expect("tcp connect");
        stream.set_nodelay(true).expect("nodelay");
        TestClient {
            stream,
            buf: BytesMut::new(),
            version,
        }
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
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next packet; fails the test if none comes within [`WAIT`].
    pub async fn recv(&mut self) -> Packet {
        match self.recv_within(WAIT).await {
            Some(packet) => packet,
            None => panic!("no packet within {WAIT:?}"),
        }
    }

    /// The next packet, or `None` if nothing arrives within `wait` or the stream ends.
    pub async fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(packet) = protocol::decode(&mut self.buf, self.version, usize::MAX)
                .expect("broker sent a valid packet")
            {
                return Some(packet);
            }
            self.buf.reserve(4096);
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Asserts that nothing arrives for a short while.
    pub async fn expect_nothing(&mut self) {
        if let Some(packet) = self.recv_within(QUIET).await {
            panic!("expected nothing, got {packet:?}");
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
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return packets,
                Ok(Ok(_)) => {}
                Err(_) => panic!("connection still open after {WAIT:?}; got {packets:?}"),
            }
        }
    }

    /// Subscribes to one filter and returns the SUBACK.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubAck {
        let options = SubscriptionOptions {
            qos,
            ..SubscriptionOptions::default()
        };
        self.subscribe_with(1, vec![(filter.to_string(), options)], Properties::default())
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
        self.send(&Packet::Publish(publish_packet(topic, payload, qos, retain, packet_id)))
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
                self.send(&Packet::PubRel(protocol::Ack::new(packet_id))).await;
                match self.recv().await {
                    Packet::PubComp(_) => code,
                    other => panic!("expected PUBCOMP, got {other:?}"),
                }
            }
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
        self.send(&Packet::Disconnect(protocol::Disconnect::default())).await;
        self.expect_closed().await;
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

pub fn publish_packet(topic: &str, payload: &[u8], qos: QoS, retain: bool, packet_id: u16) -> Publish {
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
