//! MQTT over the other transports, end to end through the broker (MQTT 5.0 §4.2 and §6,
//! MQTT 3.1.1 §4.2 and §6): TLS with a client trusting tests/certs/ca.pem, WebSocket on /mqtt
//! with the `mqtt` subprotocol, and secure WebSocket. Each does CONNECT, SUBSCRIBE and PUBLISH
//! on its own, messages cross between transports, and MQTT packets need not line up with
//! WebSocket frames. WebSocket messages are bounded by limits.max_packet_size.

mod common;

use common::*;
use supermq::config::Config;
use supermq::protocol::{Packet, ProtocolVersion, QoS, reason};
use supermq::transport::Kind;

use ProtocolVersion::{V5, V311};
use QoS::{AtLeastOnce, AtMostOnce, ExactlyOnce};

/// TCP, TLS, WS and WSS listeners on loopback ports, with the test certificate.
fn all_transports() -> Config {
    let mut config = config();
    config.mqtt.tls = "127.0.0.1:0".to_string();
    config.mqtt.ws = "127.0.0.1:0".to_string();
    config.mqtt.wss = "127.0.0.1:0".to_string();
    config.tls.cert = cert("server.pem").display().to_string();
    config.tls.key = cert("server.key").display().to_string();
    config
}

fn addr(broker: &TestBroker, kind: Kind) -> std::net::SocketAddr {
    broker
        .listener(kind)
        .unwrap_or_else(|| panic!("no {kind} listener"))
}

/// Connects `client`, subscribes it, publishes to itself at QoS 2 and checks the message.
async fn end_to_end(mut client: TestClient, id: &str) {
    let version = client.version;
    let connack = client.handshake(connect_packet(version, id)).await;
    assert!(!connack.session_present);
    let topic = format!("{id}/t");
    let suback = client.subscribe(&topic, ExactlyOnce).await;
    assert_eq!(suback.reasons, vec![2]);
    let publish = client
        .publish_to_self(&topic, b"over the wire", ExactlyOnce)
        .await;
    assert_eq!(publish.qos, ExactlyOnce);
    assert_eq!(publish.topic, topic);
    assert_eq!(&publish.payload[..], b"over the wire");
    client.ping().await;
    client.disconnect().await;
}

#[tokio::test]
async fn tls_client_connects_subscribes_and_publishes() {
    let broker = TestBroker::start(all_transports()).await;
    let client = TestClient::open_tls(addr(&broker, Kind::Tls), V5).await;
    end_to_end(client, "tls").await;
}

#[tokio::test]
async fn tls_client_works_with_mqtt_3_1_1() {
    let broker = TestBroker::start(all_transports()).await;
    let client = TestClient::open_tls(addr(&broker, Kind::Tls), V311).await;
    end_to_end(client, "tls3").await;
}

#[tokio::test]
async fn websocket_client_connects_subscribes_and_publishes() {
    let broker = TestBroker::start(all_transports()).await;
    let client = TestClient::open_ws(addr(&broker, Kind::Ws), V5).await;
    end_to_end(client, "ws").await;
}

#[tokio::test]
async fn websocket_client_works_with_mqtt_3_1_1() {
    let broker = TestBroker::start(all_transports()).await;
    let client = TestClient::open_ws(addr(&broker, Kind::Ws), V311).await;
    end_to_end(client, "ws3").await;
}

#[tokio::test]
async fn secure_websocket_client_connects_subscribes_and_publishes() {
    let broker = TestBroker::start(all_transports()).await;
    let client = TestClient::open_wss(addr(&broker, Kind::Wss), V5).await;
    end_to_end(client, "wss").await;
}

/// A message published over TCP reaches a WebSocket subscriber.
#[tokio::test]
async fn message_crosses_from_tcp_to_websocket() {
    let broker = TestBroker::start(all_transports()).await;
    let mut subscriber = TestClient::open_ws(addr(&broker, Kind::Ws), V5).await;
    subscriber.handshake(connect_packet(V5, "ws-sub")).await;
    subscriber.subscribe("cross/#", AtLeastOnce).await;
    let mut publisher = TestClient::v311(broker.addr, "tcp-pub").await;
    publisher
        .publish("cross/tcp", b"from tcp", AtLeastOnce, false)
        .await;
    let publish = subscriber.recv_acked().await;
    assert_eq!(publish.topic, "cross/tcp");
    assert_eq!(&publish.payload[..], b"from tcp");
}

/// And the other way, and across TLS and secure WebSocket: every transport reaches every
/// other.
#[tokio::test]
async fn messages_cross_between_all_transports() {
    let broker = TestBroker::start(all_transports()).await;
    let mut clients = vec![
        ("tcp", TestClient::open(broker.addr, V5).await),
        (
            "tls",
            TestClient::open_tls(addr(&broker, Kind::Tls), V5).await,
        ),
        ("ws", TestClient::open_ws(addr(&broker, Kind::Ws), V5).await),
        (
            "wss",
            TestClient::open_wss(addr(&broker, Kind::Wss), V5).await,
        ),
    ];
    for (name, client) in &mut clients {
        client.handshake(connect_packet(V5, name)).await;
        client.subscribe(&format!("to/{name}"), AtLeastOnce).await;
    }
    for from in 0..clients.len() {
        for to in 0..clients.len() {
            if from == to {
                continue;
            }
            let topic = format!("to/{}", clients[to].0);
            let payload = format!("{} -> {}", clients[from].0, clients[to].0);
            clients[from]
                .1
                .publish(&topic, payload.as_bytes(), AtLeastOnce, false)
                .await;
            let got = clients[to].1.recv_acked().await;
            assert_eq!(got.payload, payload.as_bytes());
        }
    }
}

/// MQTT 5.0 §6.0: an MQTT packet may span WebSocket frames, and one frame may hold several
/// packets; the broker reads the bytes, not the frames.
#[tokio::test]
async fn packets_need_not_line_up_with_websocket_frames() {
    let broker = TestBroker::start(all_transports()).await;
    let mut client = TestClient::open_ws(addr(&broker, Kind::Ws), V311).await;
    let connect = raw_connect(b"MQTT", 4, false, "frames");
    // CONNECT split over three frames.
    client.send_bytes(&connect[..3]).await;
    client.send_bytes(&connect[3..7]).await;
    client.send_bytes(&connect[7..]).await;
    assert!(matches!(client.recv().await, Packet::ConnAck(c) if c.code == 0));
    // Three PINGREQs in one frame.
    client
        .send_bytes(&[0xC0, 0x00, 0xC0, 0x00, 0xC0, 0x00])
        .await;
    for _ in 0..3 {
        assert_eq!(client.recv().await, Packet::PingResp);
    }
}

/// The Will works over WebSocket as over TCP: a dropped WebSocket connection publishes it.
#[tokio::test]
async fn will_is_published_when_a_websocket_connection_drops() {
    let broker = TestBroker::start(all_transports()).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("will/ws", AtLeastOnce).await;
    let mut client = TestClient::open_ws(addr(&broker, Kind::Ws), V5).await;
    client
        .handshake(connect_with_will(V5, "ws-will", "will/ws", b"ws gone"))
        .await;
    drop(client);
    assert_eq!(&watcher.recv_acked().await.payload[..], b"ws gone");
}

/// limits.max_packet_size bounds WebSocket messages too (not tungstenite's 16 MiB): a message
/// of max_packet_size bytes goes through; a larger one is refused before it is buffered whole,
/// and answered as a packet too large would be, with DISCONNECT 0x95 before the close.
#[tokio::test]
async fn websocket_message_larger_than_max_packet_size_gets_disconnect_0x95() {
    let mut config = all_transports();
    config.limits.max_packet_size = 100;
    let broker = TestBroker::start(config).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("b", AtMostOnce).await;
    let mut client = TestClient::open_ws(addr(&broker, Kind::Ws), V5).await;
    client.handshake(connect_packet(V5, "ws-big")).await;
    // 1 (type) + 1 (length) + 3 (topic "b") + 1 (no properties) + 94 = 100 bytes: one message.
    client.publish("b", &[0; 94], AtMostOnce, false).await;
    assert_eq!(watcher.recv_publish().await.payload.len(), 94);
    // Two of those in one message: 200 bytes. Each packet is within the limit, so only the
    // bound on the message refuses them.
    let mut two = bytes::BytesMut::new();
    for _ in 0..2 {
        let publish = publish_packet("b", &[0; 94], AtMostOnce, false, 0);
        supermq::protocol::encode(&Packet::Publish(publish), V5, &mut two).expect("encode");
    }
    client.send_bytes(&two).await;
    client.expect_disconnect(reason::PACKET_TOO_LARGE).await;
    watcher.expect_nothing().await;
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
}

/// Before its CONNECT is accepted a WebSocket may send at most `limits.max_connect_size` and
/// 64 KiB for its handshake: the WebSocket layer buffers a message whole before handing it on,
/// so the bound is kept below it, on the socket. A 900 KiB frame (within max_packet_size)
/// that never ends is cut off there, instead of being held until connect_timeout_secs.
#[tokio::test]
async fn a_websocket_sending_far_more_than_a_connect_before_it_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut config = all_transports();
    config.limits.connect_timeout_secs = 60;
    let broker = TestBroker::start(config).await;
    let ws = addr(&broker, Kind::Ws);
    let tcp = tokio::net::TcpStream::connect(ws).await.expect("connect");
    let (mut client, _) = tokio_tungstenite::client_async(format!("ws://{ws}/mqtt"), tcp)
        .await
        .expect("upgrade");
    // A masked binary frame announcing 900 KiB (mask key 0: the payload goes as is), and
    // 200 KiB of it.
    let mut frame = vec![0x82, 0xFF];
    frame.extend_from_slice(&(900u64 * 1024).to_be_bytes());
    frame.extend_from_slice(&[0; 4]);
    frame.resize(frame.len() + 200 * 1024, 0);
    let socket = client.get_mut();
    // The broker may stop reading before all of it is written.
    let _ = socket.write_all(&frame).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, socket.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "a WebSocket that sent 200 KiB of an unfinished frame before CONNECT is still open"
    );
}
