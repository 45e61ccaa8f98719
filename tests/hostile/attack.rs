//! The attackers and the measuring clients around them, on the raw [`TestClient`]: a slow
//! subscriber, a publisher with a window of QoS 1 messages, a subscriber that counts what
//! reaches it, and packets (and a TLS ClientHello) built by hand.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::common::{Received, TestClient, connect_packet, publish_packet, raw_packet, raw_string};
use supermq::protocol::{Connect, Packet, ProtocolVersion, QoS};

/// An MQTT 5.0 CONNECT with a clean start or not, and optionally a Receive Maximum and a
/// session expiry.
pub fn v5_connect(
    client_id: &str,
    clean_start: bool,
    receive_maximum: Option<u16>,
    session_expiry: Option<u32>,
) -> Connect {
    let mut connect = connect_packet(ProtocolVersion::V5, client_id);
    connect.clean_start = clean_start;
    connect.properties.receive_maximum = receive_maximum;
    connect.properties.session_expiry_interval = session_expiry;
    connect
}

/// An MQTT 5.0 subscriber with Receive Maximum 1 that acknowledges one message every
/// `every`: alive, reading, and slow. The broker may have one message in flight to it, so
/// everything else for it waits in its session queue. Disconnected when dropped.
pub struct SlowSubscriber {
    task: JoinHandle<()>,
    received: Arc<AtomicU64>,
}

impl SlowSubscriber {
    pub async fn start(
        addr: SocketAddr,
        client_id: &str,
        filter: &str,
        every: Duration,
    ) -> SlowSubscriber {
        let (mut client, connack) =
            TestClient::connect_with(addr, v5_connect(client_id, true, Some(1), None)).await;
        assert_eq!(connack.code, 0, "the slow subscriber connects: {connack:?}");
        let suback = client.subscribe(filter, QoS::AtLeastOnce).await;
        assert_eq!(
            suback.reasons,
            vec![1],
            "the slow subscriber's subscription"
        );
        let received = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&received);
        let task = tokio::spawn(async move {
            loop {
                match client.recv_within(Duration::from_secs(3600)).await {
                    Received::Packet(Packet::Publish(publish)) => {
                        counted.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(every).await;
                        client.ack(&publish).await;
                    }
                    Received::Packet(_) => {}
                    Received::Silent | Received::Closed => return,
                }
            }
        });
        SlowSubscriber { task, received }
    }

    /// Messages it has been sent so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for SlowSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publishes `count` QoS 1 messages of `size` bytes (at least 4: the sequence number comes
/// first) to `topic`, with at most `window` unacknowledged, calling `guard` after each PUBACK
/// (a check that may fail the test early). Returns when the last PUBACK came; fails if that
/// takes longer than `within`, saying how many were acknowledged.
pub async fn publish_window(
    client: &mut TestClient,
    topic: &str,
    count: u32,
    window: u32,
    size: usize,
    within: Duration,
    mut guard: impl FnMut(u32),
) -> Instant {
    let deadline = tokio::time::Instant::now() + within;
    let mut payload = vec![0u8; size.max(4)];
    let (mut sent, mut acked) = (0u32, 0u32);
    while acked < count {
        while sent < count && sent - acked < window {
            payload[..4].copy_from_slice(&sent.to_be_bytes());
            let packet_id = (sent % u32::from(u16::MAX)) as u16 + 1;
            client
                .send_publish(publish_packet(
                    topic,
                    &payload,
                    QoS::AtLeastOnce,
                    false,
                    packet_id,
                ))
                .await;
            sent += 1;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match client.recv_within(left).await {
            Received::Packet(Packet::PubAck(ack)) => {
                assert!(ack.reason < 0x80, "PUBACK refused: {ack:?}");
                acked += 1;
                guard(acked);
            }
            Received::Packet(other) => panic!("the publisher expected PUBACK, got {other:?}"),
            Received::Silent => panic!(
                "the publisher was held back: {acked} of {count} messages to {topic} \
                 acknowledged within {within:?}"
            ),
            Received::Closed => panic!("the publisher was disconnected after {acked} PUBACKs"),
        }
    }
    Instant::now()
}

/// Counts, in a task, the distinct messages (by the sequence number publish_window puts
/// first) that reach a subscribed client on `topic`, acknowledging every delivery.
pub struct Counter {
    task: JoinHandle<()>,
    unique: Arc<AtomicU64>,
}

impl Counter {
    pub fn start(mut client: TestClient, topic: &str) -> Counter {
        let unique = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&unique);
        let topic = topic.to_string();
        let task = tokio::spawn(async move {
            let mut seen = HashSet::new();
            loop {
                match client.recv_within(Duration::from_secs(3600)).await {
                    Received::Packet(Packet::Publish(publish)) => {
                        client.ack(&publish).await;
                        let sequence = publish.payload.get(..4).map(<[u8]>::to_vec);
                        if publish.topic == topic && seen.insert(sequence) {
                            counted.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Received::Packet(_) => {}
                    Received::Silent | Received::Closed => return,
                }
            }
        });
        Counter { task, unique }
    }

    /// Waits until `expected` distinct messages arrived or `deadline` passed; returns how
    /// many arrived.
    pub async fn wait_for(&self, expected: u64, deadline: Instant) -> u64 {
        while self.unique.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.unique.load(Ordering::Relaxed)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An MQTT 3.1.1 SUBSCRIBE with `copies` copies of `filter`, each at QoS 0.
pub fn raw_subscribe(packet_id: u16, filter: &str, copies: usize) -> Vec<u8> {
    let mut entry = raw_string(filter.as_bytes());
    entry.push(0);
    let mut body = packet_id.to_be_bytes().to_vec();
    body.reserve(entry.len() * copies);
    for _ in 0..copies {
        body.extend_from_slice(&entry);
    }
    raw_packet(0x82, &body)
}

/// The first `size - 1` bytes of an MQTT 5.0 CONNECT of `size` bytes (at least 12): its fixed
/// header, protocol name and level, and filler. The broker can only wait for the last byte.
pub fn connect_but_the_last_byte(size: usize) -> Vec<u8> {
    // One byte of type, and the remaining length in one, two or three bytes.
    let header = if size <= 129 {
        2
    } else if size <= 16_386 {
        3
    } else {
        4
    };
    let mut bytes = vec![0x10];
    let mut remaining = size - header;
    while remaining >= 0x80 {
        bytes.push((remaining & 0x7F) as u8 | 0x80);
        remaining >>= 7;
    }
    bytes.push(remaining as u8);
    assert_eq!(bytes.len(), header, "a fixed header for {size} bytes");
    bytes.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 5]);
    bytes.resize(size - 1, 0);
    bytes
}

/// The ClientHello a TLS client sends first, for the server name `localhost`.
pub fn client_hello() -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let mut client = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
    let mut hello = Vec::new();
    client.write_tls(&mut hello).expect("ClientHello");
    hello
}
