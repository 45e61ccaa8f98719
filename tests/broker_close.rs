//! Graceful close: when the broker ends a connection with a reason (a DISCONNECT with an error
//! code, or a refusing CONNACK), a client that is still sending reads that reason and then the
//! end of the stream, not a TCP reset, and its writes do not fail meanwhile. (A socket closed
//! with unread bytes, or that receives more after its close, answers with a reset: the client's
//! next writes fail with a broken pipe and, on some systems, what it had not read yet is lost.
//! The broker avoids it by reading on, for a short and bounded while, after it has shut its
//! side down.)
//!
//! These clients are raw sockets split in two, so that one task can keep writing while the
//! test reads, as a real client with PUBRELs in flight does.

mod common;

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use supermq::protocol::{self, Ack, Packet, ProtocolVersion, QoS, reason};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use ProtocolVersion::{V5, V311};

fn encode(packets: &[Packet], version: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    for packet in packets {
        protocol::encode(packet, version, &mut out).expect("encode");
    }
    out.to_vec()
}

/// PUBRELs for packet ids `from..from + n`.
fn pubrels(from: u16, n: u16) -> Vec<Packet> {
    (from..from + n)
        .map(|id| Packet::PubRel(Ack::new(id)))
        .collect()
}

/// Reads packets until the stream ends: `Ok` with them at the end of the stream, `Err` if the
/// read failed (a reset) first.
async fn read_to_end(
    read: &mut OwnedReadHalf,
    version: ProtocolVersion,
) -> io::Result<Vec<Packet>> {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    loop {
        while let Some(packet) =
            protocol::decode(&mut buf, version, usize::MAX).expect("a valid packet")
        {
            packets.push(packet);
        }
        let read = tokio::time::timeout(WAIT, read.read_buf(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("still open after {WAIT:?}; got {packets:?}"));
        if read? == 0 {
            return Ok(packets);
        }
    }
}

/// Writes `bytes` every few milliseconds until stopped; the result is the first write error,
/// if any came before the stop. See [`stop_sending`].
fn keep_sending(
    mut write: OwnedWriteHalf,
    bytes: Vec<u8>,
) -> (oneshot::Sender<()>, JoinHandle<io::Result<()>>) {
    let (stop, mut stopped) = oneshot::channel();
    let task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => return Ok(()),
                () = tokio::time::sleep(Duration::from_millis(2)) => write.write_all(&bytes).await?,
            }
        }
    });
    (stop, task)
}

/// Lets the sender go on for a while, as a client with packets in flight does after it has
/// read the reason, then stops it and returns whether all its writes succeeded. (A socket the
/// broker had closed at once would have answered them with a reset, and the writes after it
/// would fail.)
async fn stop_sending(
    stop: oneshot::Sender<()>,
    sending: JoinHandle<io::Result<()>>,
) -> io::Result<()> {
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = stop.send(());
    sending.await.expect("the sending task")
}

/// Connects and returns the halves once the CONNACK is read.
async fn connected(
    addr: std::net::SocketAddr,
    version: ProtocolVersion,
    id: &str,
) -> (OwnedReadHalf, OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.expect("tcp connect");
    let (mut read, mut write) = stream.into_split();
    let connect = Packet::Connect(Box::new(connect_packet(version, id)));
    write
        .write_all(&encode(&[connect], version))
        .await
        .expect("write");
    let mut buf = BytesMut::new();
    loop {
        if let Some(packet) = protocol::decode(&mut buf, version, usize::MAX).expect("valid") {
            assert!(
                matches!(packet, Packet::ConnAck(ref c) if c.code == 0),
                "{packet:?}"
            );
            return (read, write);
        }
        let n = tokio::time::timeout(WAIT, read.read_buf(&mut buf))
            .await
            .expect("CONNACK in time")
            .expect("read");
        assert!(n > 0, "closed before the CONNACK");
    }
}

/// A 5.0 client exceeds our Receive Maximum with a QoS 2 PUBLISH, with PUBRELs before and after
/// it in the same write and more following: it reads DISCONNECT 0x93 and then the end of the
/// stream, and none of its writes fail meanwhile.
#[tokio::test]
async fn a_client_still_sending_pubrels_reads_the_disconnect_then_the_end() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 2)).await;
    let (mut read, mut write) = connected(broker.addr, V5, "pubrels").await;
    let publish = |id| Packet::Publish(publish_packet("t", b"x", QoS::ExactlyOnce, false, id));
    let mut burst = vec![publish(1), publish(2)];
    burst.extend(pubrels(100, 50));
    burst.push(publish(3));
    burst.extend(pubrels(200, 50));
    write.write_all(&encode(&burst, V5)).await.expect("write");
    let (stop, sending) = keep_sending(write, encode(&pubrels(300, 20), V5));

    let packets = read_to_end(&mut read, V5)
        .await
        .expect("the end of the stream, not a reset");
    match packets.last() {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason, reason::RECEIVE_MAXIMUM_EXCEEDED);
        }
        other => panic!("expected DISCONNECT 0x93 last, got {other:?} in {packets:?}"),
    }
    stop_sending(stop, sending).await.expect("no write failed");
}

/// A 3.1.1 client has no DISCONNECT to read, but still gets the end of the stream, not a
/// reset, when the broker closes it for a malformed packet while it goes on sending.
#[tokio::test]
async fn a_3_1_1_client_still_sending_reads_the_end_not_a_reset() {
    let broker = TestBroker::start_default().await;
    let (mut read, mut write) = connected(broker.addr, V311, "malformed").await;
    let mut burst = encode(&pubrels(1, 20), V311);
    // PUBREL without its fixed header flags 0b0010: malformed (MQTT-3.6.1-1).
    burst.extend_from_slice(&[0x60, 0x02, 0x00, 0x01]);
    burst.extend(encode(&pubrels(21, 20), V311));
    write.write_all(&burst).await.expect("write");
    let (stop, sending) = keep_sending(write, encode(&pubrels(100, 20), V311));

    let packets = read_to_end(&mut read, V311)
        .await
        .expect("the end of the stream, not a reset");
    assert!(
        packets.iter().all(|p| matches!(p, Packet::PubComp(_))),
        "{packets:?}"
    );
    stop_sending(stop, sending).await.expect("no write failed");
    assert_eq!(broker.broker.stats().protocol_errors.get(), 1);
}

/// A refusing CONNACK is closed gracefully too: a client that sent more right behind its
/// CONNECT (and goes on) reads CONNACK 0x97 and then the end of the stream.
#[tokio::test]
async fn a_refused_client_still_sending_reads_the_connack_then_the_end() {
    let broker = TestBroker::start(config_with(|limits| limits.max_connections = 1)).await;
    let mut first = TestClient::v5(broker.addr, "first").await;
    let stream = TcpStream::connect(broker.addr).await.expect("tcp connect");
    let (mut read, mut write) = stream.into_split();
    let mut burst = vec![Packet::Connect(Box::new(connect_packet(V5, "second")))];
    burst.extend(
        (1..=20)
            .map(|id| Packet::Publish(publish_packet("t", &[0; 64], QoS::AtLeastOnce, false, id))),
    );
    write.write_all(&encode(&burst, V5)).await.expect("write");
    let (stop, sending) = keep_sending(write, encode(&[Packet::PingReq], V5));

    let packets = read_to_end(&mut read, V5)
        .await
        .expect("the end of the stream, not a reset");
    match packets.as_slice() {
        [Packet::ConnAck(connack)] => assert_eq!(connack.code, reason::QUOTA_EXCEEDED),
        other => panic!("expected CONNACK 0x97 alone, got {other:?}"),
    }
    stop_sending(stop, sending).await.expect("no write failed");
    first.ping().await;
}

/// Provokes DISCONNECT 0x93 (max_inflight is 1, two QoS 2 PUBLISHes) and reads up to the end
/// of the stream; returns the write half, still open.
async fn provoke_disconnect(broker: &TestBroker, id: &str) -> OwnedWriteHalf {
    let (mut read, mut write) = connected(broker.addr, V5, id).await;
    let publish = |id| Packet::Publish(publish_packet("t", b"x", QoS::ExactlyOnce, false, id));
    write
        .write_all(&encode(&[publish(1), publish(2)], V5))
        .await
        .expect("write");
    let packets = read_to_end(&mut read, V5)
        .await
        .expect("the end of the stream");
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason == reason::RECEIVE_MAXIMUM_EXCEEDED),
        "{packets:?}"
    );
    write
}

/// The linger is bounded in time: a client that goes on sending a little and never closes is
/// closed all the same, about a second after the DISCONNECT.
#[tokio::test]
async fn a_client_that_never_closes_is_closed_after_the_linger() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 1)).await;
    let write = provoke_disconnect(&broker, "endless").await;
    let started = tokio::time::Instant::now();
    let (stop, _sending) = keep_sending(write, encode(&pubrels(1, 10), V5));
    wait_until("the broker closed the socket", || {
        broker.broker.connection_count() == 0
    })
    .await;
    let _ = stop.send(());
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800) && waited < Duration::from_millis(2500),
        "closed after {waited:?}, not after the 1 s linger"
    );
}

/// The linger is bounded in bytes: a client that floods after the DISCONNECT is closed once
/// 64 KiB have been discarded, well before the second is up.
#[tokio::test]
async fn a_client_that_floods_is_closed_after_64_kib() {
    let broker = TestBroker::start(config_with(|limits| limits.max_inflight = 1)).await;
    let write = provoke_disconnect(&broker, "flood").await;
    let started = tokio::time::Instant::now();
    let (stop, _sending) = keep_sending(write, vec![0; 16 * 1024]);
    wait_until("the broker closed the socket", || {
        broker.broker.connection_count() == 0
    })
    .await;
    let _ = stop.send(());
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_millis(700),
        "closed after {waited:?}: the byte bound did not end the linger"
    );
}
