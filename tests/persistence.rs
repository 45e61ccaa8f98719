//! Persistence (`[storage]`) across real crashes: the broker binary runs with a store
//! directory, is SIGKILLed at chosen moments, starts again on the same directory, and is talked
//! to over MQTT. What a client was told before the kill — a PUBACK, a PUBREC, a retained
//! message, a will — must still hold after the restart; a corrupt store must be refused and
//! left untouched; and a broker without a store must forget, which shows that the store is what
//! remembers.
//!
//! The storage contract these tests hold the broker to: in "immediate" mode a QoS 1/2 message
//! matched to a persistent session, and a QoS 1/2 retained set or clear, is acknowledged only
//! once it is on disk, so a SIGKILL right after the acknowledgement loses nothing; "batched"
//! writes within `flush_ms`. The store is `DIR/supermq.redb`; each start logs one line with
//! "store loaded".

mod common;

use std::time::{Duration, Instant};

use common::process::{Process, Storage};
use common::*;
use supermq::protocol::{self, ConnAck, Connect, Packet, ProtocolVersion::V5, Publish, QoS};

/// Session Expiry Interval of the persistent sessions: longer than any test.
const EXPIRY: u32 = 3600;

/// Queues deep enough for the tests' backlogs (the default holds 1,000 messages, and test a
/// queues exactly that many: it is about the store, not the limit).
const LIMITS: &str = "[limits]\nmax_queued_messages = 10000\n";

/// QoS 1 PUBLISHes a publisher keeps outstanding at once: well under the broker's Receive
/// Maximum (limits.max_inflight, 256), so group commit has something to group.
const WINDOW: usize = 50;

/// A 5.0 CONNECT of a session that outlives its connection by [`EXPIRY`].
fn persistent(id: &str, clean_start: bool) -> Connect {
    let mut connect = connect_packet(V5, id);
    connect.clean_start = clean_start;
    connect.properties.session_expiry_interval = Some(EXPIRY);
    connect
}

/// Connects and expects a successful CONNACK.
async fn connect(broker: &Process, connect: Connect) -> (TestClient, ConnAck) {
    let (client, connack) = TestClient::connect_with(broker.addr(), connect).await;
    assert_eq!(connack.code, 0, "CONNACK refused: {connack:?}");
    (client, connack)
}

/// Resumes the persistent session `id` (clean start 0): the broker must still have it.
async fn resume(broker: &Process, id: &str) -> TestClient {
    let (client, connack) = connect(broker, persistent(id, false)).await;
    assert!(
        connack.session_present,
        "session {id} did not survive the restart: {connack:?}"
    );
    client
}

/// A persistent session `id` subscribed to `filter` at QoS `qos`, then disconnected: from now
/// on its messages queue in the broker (and, with a store, on disk).
async fn offline_subscriber(broker: &Process, id: &str, filter: &str, qos: QoS) {
    let (mut client, connack) = connect(broker, persistent(id, true)).await;
    assert!(!connack.session_present);
    let suback = client.subscribe(filter, qos).await;
    assert_eq!(suback.reasons, vec![qos as u8], "{suback:?}");
    client.disconnect().await;
}

/// `count` payloads "`prefix` 0", "`prefix` 1", ...
fn payloads(prefix: &str, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|i| format!("{prefix} {i}").into_bytes())
        .collect()
}

/// Publishes every payload at QoS 1 on `topic`, [`WINDOW`] at a time, and checks that each
/// PUBACK is a success: by the contract each one is on disk from that moment.
async fn publish_all(client: &mut TestClient, topic: &str, payloads: &[Vec<u8>], retain: bool) {
    for window in payloads.chunks(WINDOW) {
        for (i, payload) in window.iter().enumerate() {
            let id = u16::try_from(i + 1).expect("a small window");
            let publish = publish_packet(topic, payload, QoS::AtLeastOnce, retain, id);
            client.send_publish(publish).await;
        }
        let mut acked = Vec::new();
        while acked.len() < window.len() {
            match client.recv().await {
                Packet::PubAck(ack) => {
                    assert!(ack.reason < 0x80, "PUBACK refused: {ack:?}");
                    acked.push(ack.packet_id);
                }
                other => panic!("expected PUBACK, got {other:?}"),
            }
        }
        acked.sort_unstable();
        let sent: Vec<u16> = (1..=window.len())
            .map(|i| u16::try_from(i).expect("a small window"))
            .collect();
        assert_eq!(acked, sent, "one PUBACK per PUBLISH");
    }
}

/// The next `count` PUBLISHes, each acknowledged.
async fn receive(client: &mut TestClient, count: usize) -> Vec<Publish> {
    let mut got = Vec::with_capacity(count);
    while got.len() < count {
        got.push(client.recv_acked().await);
    }
    got
}

/// Checks that `got` carries exactly `expected`, in order, naming the first difference (not
/// a thousand-line dump).
fn assert_payloads(got: &[Publish], expected: &[Vec<u8>]) {
    for (i, (publish, want)) in got.iter().zip(expected).enumerate() {
        assert_eq!(
            publish.payload.as_ref(),
            want.as_slice(),
            "message {i} of {}: got {:?}, expected {:?}",
            expected.len(),
            String::from_utf8_lossy(&publish.payload),
            String::from_utf8_lossy(want)
        );
    }
    assert_eq!(got.len(), expected.len(), "messages received");
}

/// Asserts that nothing arrives for a second (more than [`QUIET`]: a restarted broker on a
/// loaded machine may be slow to send a duplicate it should not send at all).
async fn expect_nothing_for_a_second(client: &mut TestClient) {
    match client.recv_within(Duration::from_secs(1)).await {
        Received::Silent => {}
        Received::Packet(packet) => panic!("expected nothing, got {packet:?}"),
        Received::Closed => panic!("expected nothing, but the connection ended"),
    }
}

/// a. A thousand QoS 1 messages acknowledged to the publisher while their subscriber was
/// offline survive a SIGKILL: after the restart the subscriber resumes its session and gets
/// every one, in order, and nothing more.
#[tokio::test]
async fn acknowledged_messages_for_an_offline_session_survive_sigkill() {
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    offline_subscriber(&broker, "a-sub", "persist/a", QoS::AtLeastOnce).await;
    let sent = payloads("a", 1000);
    let mut publisher = TestClient::v5(broker.addr(), "a-pub").await;
    publish_all(&mut publisher, "persist/a", &sent, false).await;

    broker.kill();
    broker.start().await;

    let mut sub = resume(&broker, "a-sub").await;
    let got = receive(&mut sub, sent.len()).await;
    assert_payloads(&got, &sent);
    assert!(got.iter().all(|p| p.qos == QoS::AtLeastOnce && !p.dup));
    expect_nothing_for_a_second(&mut sub).await;
}

/// b. Messages the broker had sent but the subscriber had not acknowledged when the broker was
/// SIGKILLed are sent again after the restart first, with DUP = 1 and their packet ids
/// (MQTT 5.0 §4.4); the ones still queued behind the Receive Maximum follow, as first sends.
#[tokio::test]
async fn unacknowledged_messages_are_resent_with_dup_and_their_packet_ids() {
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    let with_window = |clean_start| {
        let mut connect = persistent("b-sub", clean_start);
        connect.properties.receive_maximum = Some(3);
        connect
    };
    let (mut sub, _) = connect(&broker, with_window(true)).await;
    sub.subscribe("persist/b", QoS::AtLeastOnce).await;
    let sent = payloads("b", 5);
    let mut publisher = TestClient::v5(broker.addr(), "b-pub").await;
    publish_all(&mut publisher, "persist/b", &sent, false).await;
    // Three in flight (the Receive Maximum), none acknowledged; two queued behind them.
    let mut in_flight = Vec::new();
    for _ in 0..3 {
        in_flight.push(sub.recv_publish().await);
    }
    assert_payloads(&in_flight, &sent[..3]);
    assert!(
        in_flight.iter().all(|p| !p.dup),
        "first sends: {in_flight:?}"
    );
    sub.ping().await;

    broker.kill();
    drop(sub);
    broker.start().await;

    let (mut sub, connack) = connect(&broker, with_window(false)).await;
    assert!(connack.session_present, "session lost: {connack:?}");
    let mut again = Vec::new();
    for _ in 0..3 {
        again.push(sub.recv_publish().await);
    }
    for (before, after) in in_flight.iter().zip(&again) {
        assert_eq!(after.payload, before.payload, "resent in order: {again:?}");
        assert_eq!(
            after.packet_id, before.packet_id,
            "same packet id: {after:?}"
        );
        assert!(after.dup, "DUP = 1 on a resend: {after:?}");
        assert_eq!(after.qos, QoS::AtLeastOnce);
    }
    for publish in &again {
        sub.ack(publish).await;
    }
    let rest = receive(&mut sub, 2).await;
    assert_payloads(&rest, &sent[3..]);
    assert!(rest.iter().all(|p| !p.dup), "never sent before: {rest:?}");
    expect_nothing_for_a_second(&mut sub).await;
}

/// c. A QoS 2 PUBLISH answered with PUBREC is the broker's promise to deliver it exactly once.
/// The broker dies before PUBREL; the publisher resumes its session and sends the PUBLISH
/// again (DUP, same packet id) as MQTT requires: PUBREC, then PUBREL → PUBCOMP, and the
/// subscriber gets the message once.
#[tokio::test]
async fn qos2_publish_received_before_sigkill_is_delivered_exactly_once() {
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    offline_subscriber(&broker, "c-sub", "persist/c", QoS::ExactlyOnce).await;
    let (mut publisher, _) = connect(&broker, persistent("c-pub", true)).await;
    let publish = publish_packet("persist/c", b"exactly once", QoS::ExactlyOnce, false, 42);
    publisher.send_publish(publish.clone()).await;
    match publisher.recv().await {
        Packet::PubRec(rec) => {
            assert_eq!(rec.packet_id, 42);
            assert!(rec.reason < 0x80, "PUBREC refused: {rec:?}");
        }
        other => panic!("expected PUBREC, got {other:?}"),
    }

    broker.kill();
    drop(publisher);
    broker.start().await;

    let mut publisher = resume(&broker, "c-pub").await;
    publisher
        .send_publish(Publish {
            dup: true,
            ..publish
        })
        .await;
    match publisher.recv().await {
        Packet::PubRec(rec) => {
            assert_eq!(rec.packet_id, 42);
            assert!(rec.reason < 0x80, "PUBREC refused: {rec:?}");
        }
        other => panic!("expected PUBREC to the resent PUBLISH, got {other:?}"),
    }
    publisher
        .send(&Packet::PubRel(protocol::Ack::new(42)))
        .await;
    match publisher.recv().await {
        Packet::PubComp(comp) => {
            assert_eq!((comp.packet_id, comp.reason), (42, 0), "PUBCOMP: {comp:?}")
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }

    let mut sub = resume(&broker, "c-sub").await;
    let got = sub.recv_acked().await;
    assert_eq!(got.payload.as_ref(), b"exactly once");
    assert_eq!(got.qos, QoS::ExactlyOnce);
    expect_nothing_for_a_second(&mut sub).await;
}

/// d. A retained message set at QoS 1 survives a SIGKILL, and so does a retained clear: after
/// the restart a new subscriber gets the one that was set and nothing on the cleared topic.
#[tokio::test]
async fn retained_messages_and_their_clearing_survive_sigkill() {
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    let mut publisher = TestClient::v5(broker.addr(), "d-pub").await;
    publish_all(&mut publisher, "persist/d/kept", &[b"kept".to_vec()], true).await;
    publish_all(
        &mut publisher,
        "persist/d/cleared",
        &[b"gone".to_vec()],
        true,
    )
    .await;
    publish_all(&mut publisher, "persist/d/cleared", &[Vec::new()], true).await;

    broker.kill();
    broker.start().await;

    let mut sub = TestClient::v5(broker.addr(), "d-sub").await;
    sub.subscribe("persist/d/#", QoS::AtLeastOnce).await;
    let got = sub.recv_acked().await;
    assert_eq!(
        (got.topic.as_str(), got.payload.as_ref(), got.retain),
        ("persist/d/kept", b"kept".as_slice(), true),
        "{got:?}"
    );
    expect_nothing_for_a_second(&mut sub).await;
}

/// The will of the will tests: QoS 1 (so it queues for an offline persistent subscriber),
/// delayed by `delay` seconds, of a session that outlives it by far.
fn with_will(id: &str, topic: &str, delay: u32) -> Connect {
    let mut connect = persistent(id, true);
    connect.will = Some(protocol::Will {
        topic: topic.to_string(),
        payload: bytes::Bytes::from_static(b"gone"),
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: protocol::PropertyValues {
            will_delay_interval: Some(delay),
            ..protocol::PropertyValues::default()
        }
        .into(),
    });
    connect
}

/// Two connected persistent sessions: `{case}-sub` subscribed to `persist/{case}/#`, and
/// `{case}-will` with a will on `persist/{case}/will` delayed by `delay` s. Returned once a
/// QoS 1 message matched to both has been acknowledged: by the contract it is then on disk in
/// both sessions, so the sessions are too, with their subscriptions and the will.
async fn will_scenario(broker: &Process, case: &str, delay: u32) -> (TestClient, TestClient) {
    let (mut sub, _) = connect(broker, persistent(&format!("{case}-sub"), true)).await;
    sub.subscribe(&format!("persist/{case}/#"), QoS::AtLeastOnce)
        .await;
    let will_topic = format!("persist/{case}/will");
    let barrier = format!("persist/{case}/barrier");
    let (mut will, _) = connect(
        broker,
        with_will(&format!("{case}-will"), &will_topic, delay),
    )
    .await;
    will.subscribe(&barrier, QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr(), &format!("{case}-pub")).await;
    publish_all(&mut publisher, &barrier, &[b"barrier".to_vec()], false).await;
    for client in [&mut sub, &mut will] {
        let got = client.recv_acked().await;
        assert_eq!(got.topic, barrier);
    }
    (sub, will)
}

/// Receives (and acknowledges) until the will arrives on `topic`, within `within`; other
/// messages (a barrier sent again after the restart) are passed over.
async fn wait_for_will(client: &mut TestClient, topic: &str, within: Duration) -> Publish {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_within(left).await {
            Received::Packet(Packet::Publish(publish)) => {
                client.ack(&publish).await;
                if publish.topic == topic {
                    return publish;
                }
            }
            Received::Packet(other) => panic!("expected the will, got {other:?}"),
            Received::Silent => panic!("no will on {topic} within {within:?}"),
            Received::Closed => panic!("the connection ended while waiting for the will"),
        }
    }
}

/// e. A client with a delayed will whose connection dies with the broker (SIGKILL while it is
/// connected): after the restart its will is published, but not before the delay has run from
/// the moment the connection died.
#[tokio::test]
async fn delayed_will_of_a_connection_that_died_with_the_broker_is_published_after_restart() {
    const DELAY: u32 = 4;
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    let (sub, will) = will_scenario(&broker, "e1", DELAY).await;

    let died = Instant::now();
    broker.kill();
    drop((sub, will));
    broker.start().await;

    let mut sub = resume(&broker, "e1-sub").await;
    let got = wait_for_will(&mut sub, "persist/e1/will", Duration::from_secs(30)).await;
    let after = died.elapsed();
    assert_eq!(got.payload.as_ref(), b"gone");
    assert!(
        after >= Duration::from_secs(DELAY.into()),
        "the will came {after:?} after its connection died, before its delay of {DELAY} s"
    );
}

/// e. A client with a delayed will that lost its connection (no DISCONNECT) shortly before the
/// broker was SIGKILLed, its will delay still running: after the restart the will is
/// published, not before the delay has run from the connection's end.
#[tokio::test]
async fn delayed_will_pending_at_sigkill_is_published_after_restart() {
    const DELAY: u32 = 4;
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    let (sub, will) = will_scenario(&broker, "e2", DELAY).await;

    let dropped = Instant::now();
    drop(will);
    broker
        .wait_for_line(&["connection closed", "e2-will"])
        .await;
    broker.kill();
    drop(sub);
    broker.start().await;

    let mut sub = resume(&broker, "e2-sub").await;
    let got = wait_for_will(&mut sub, "persist/e2/will", Duration::from_secs(30)).await;
    let after = dropped.elapsed();
    assert_eq!(got.payload.as_ref(), b"gone");
    assert!(
        after >= Duration::from_secs(DELAY.into()),
        "the will came {after:?} after its connection ended, before its delay of {DELAY} s"
    );
}

/// e. A will whose delay ran out while the broker was down is published when the broker
/// starts again: the persistent subscriber finds it queued when it resumes.
#[tokio::test]
async fn will_whose_delay_passed_while_the_broker_was_down_is_published_at_start() {
    const DELAY: u32 = 2;
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    let (sub, will) = will_scenario(&broker, "e3", DELAY).await;

    let died = Instant::now();
    broker.kill();
    drop((sub, will));
    // The point of the test: the broker stays down until the delay is over.
    tokio::time::sleep(Duration::from_secs(DELAY.into()) + Duration::from_millis(500)).await;
    broker.start().await;
    assert!(died.elapsed() > Duration::from_secs(DELAY.into()));

    let mut sub = resume(&broker, "e3-sub").await;
    let got = wait_for_will(&mut sub, "persist/e3/will", Duration::from_secs(10)).await;
    assert_eq!(got.payload.as_ref(), b"gone");
}

/// A store with data in it, its broker stopped: a persistent session with 200 queued 1 KiB
/// messages and 50 retained messages, one of them (`persist/f/marker`) with a payload of
/// [`MARKER`]s that a test can find in the file. Checked good by `supermq storage check`.
async fn stored_broker() -> Process {
    let mut broker = Process::new(Storage::Immediate, LIMITS);
    broker.start().await;
    offline_subscriber(&broker, "f-sub", "persist/f/queue", QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr(), "f-pub").await;
    let filler: Vec<Vec<u8>> = (0..200)
        .map(|i| format!("{i:>1024}").into_bytes())
        .collect();
    publish_all(&mut publisher, "persist/f/queue", &filler, false).await;
    for i in 0..50 {
        let topic = format!("persist/f/retained/{i}");
        publish_all(&mut publisher, &topic, &filler[i..=i], true).await;
    }
    publish_all(
        &mut publisher,
        "persist/f/marker",
        &[MARKER.repeat(400)],
        true,
    )
    .await;
    publisher.disconnect().await;
    broker.stop().await;
    check_store(&broker, true);
    broker
}

/// The payload a test looks for in the store file to corrupt a block that holds data.
const MARKER: &[u8] = b"<corrupt-me>";

/// Runs `supermq storage check DIR` and checks its verdict.
fn check_store(broker: &Process, good: bool) {
    let dir = broker.store_dir();
    let dir = dir.to_str().expect("a UTF-8 temp path");
    let out = broker.tool(&["storage", "check", dir]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if good {
        assert!(
            out.status.success(),
            "storage check of a good store: {}: {said}",
            out.status
        );
    } else {
        assert!(
            !out.status.success(),
            "storage check passed a corrupt store: {said}"
        );
        assert!(
            !said.trim().is_empty(),
            "storage check failed without a word"
        );
    }
}

/// Garbage for a 4 KiB block: bytes of a fixed xorshift sequence (reproducible, and no
/// structure a reader could take for its own).
fn garbage() -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// Starts the broker on its corrupted store and checks the refusal: exit code 2, a message
/// naming the store file, and the file exactly as it was; `storage check` fails too.
async fn assert_refused(broker: &mut Process) {
    let file = broker.store_file();
    let before = std::fs::read(&file).expect("read the store");
    let (status, said) = broker.start_refused().await;
    assert_eq!(
        status.code(),
        Some(2),
        "exit status {status}; output:\n{said}"
    );
    assert!(
        said.contains(&file.display().to_string()),
        "the message names {}:\n{said}",
        file.display()
    );
    check_store(broker, false);
    let after = std::fs::read(&file).expect("the store is still there");
    assert!(
        before == after,
        "the corrupt store was changed ({} bytes before, {} after)",
        before.len(),
        after.len()
    );
}

/// f. A store whose first 4 KiB are garbage (its header) is refused, and left as it was.
#[tokio::test]
async fn store_with_a_garbage_header_is_refused_untouched() {
    let mut broker = stored_broker().await;
    let file = broker.store_file();
    let mut bytes = std::fs::read(&file).expect("read the store");
    assert!(
        bytes.len() > 4096,
        "a store with data: {} bytes",
        bytes.len()
    );
    bytes[..4096].copy_from_slice(&garbage());
    std::fs::write(&file, &bytes).expect("corrupt the store");
    assert_refused(&mut broker).await;
}

/// f. A store with garbage over the blocks holding a retained message, in the middle of the
/// file, is refused, and left as it was.
#[tokio::test]
async fn store_with_a_garbage_data_block_is_refused_untouched() {
    let mut broker = stored_broker().await;
    let file = broker.store_file();
    let mut bytes = std::fs::read(&file).expect("read the store");
    // Every 4 KiB block that holds part of the marker payload: the live copy among them, and
    // any older copy the store left behind.
    let needle = MARKER.repeat(4);
    let blocks: Vec<usize> = (0..bytes.len().div_ceil(4096))
        .filter(|block| {
            let start = block * 4096;
            let end = (start + 4096 + needle.len()).min(bytes.len());
            bytes[start..end]
                .windows(needle.len())
                .any(|window| window == needle.as_slice())
        })
        .collect();
    assert!(
        !blocks.is_empty(),
        "the marker payload is not in the store file ({} bytes)",
        bytes.len()
    );
    assert!(!blocks.contains(&0), "the data is past the header");
    for block in &blocks {
        let start = block * 4096;
        let end = (start + 4096).min(bytes.len());
        bytes[start..end].copy_from_slice(&garbage()[..end - start]);
    }
    std::fs::write(&file, &bytes).expect("corrupt the store");
    assert_refused(&mut broker).await;
}

/// `supermq storage compact` on a good store keeps everything: `storage check` still passes,
/// and the broker started on it has the queued messages and the retained ones.
#[tokio::test]
async fn compacted_store_keeps_sessions_and_retained_messages() {
    let mut broker = stored_broker().await;
    let dir = broker.store_dir();
    let out = broker.tool(&[
        "storage",
        "compact",
        dir.to_str().expect("a UTF-8 temp path"),
    ]);
    assert!(
        out.status.success(),
        "storage compact: {}: {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    check_store(&broker, true);
    broker.start().await;
    let mut sub = resume(&broker, "f-sub").await;
    assert_eq!(receive(&mut sub, 200).await.len(), 200);
    let mut retained = TestClient::v5(broker.addr(), "f-retained").await;
    retained
        .subscribe("persist/f/marker", QoS::AtLeastOnce)
        .await;
    let got = retained.recv_acked().await;
    assert_eq!(got.payload.as_ref(), MARKER.repeat(400).as_slice());
}

/// g. Without a store (no `[storage]` section) a restart forgets everything: no session, no
/// queued message, no retained message — the contrast that shows the store is what remembers.
#[tokio::test]
async fn broker_without_a_store_forgets_everything_on_restart() {
    let mut broker = Process::new(Storage::Memory, LIMITS);
    broker.start().await;
    offline_subscriber(&broker, "g-sub", "persist/g/#", QoS::AtLeastOnce).await;
    let mut publisher = TestClient::v5(broker.addr(), "g-pub").await;
    publish_all(&mut publisher, "persist/g/queued", &payloads("g", 3), false).await;
    publish_all(&mut publisher, "persist/g/retained", &[b"r".to_vec()], true).await;
    // Both were kept while the broker ran.
    let mut probe = TestClient::v5(broker.addr(), "g-probe").await;
    probe
        .subscribe("persist/g/retained", QoS::AtLeastOnce)
        .await;
    assert_eq!(probe.recv_acked().await.payload.as_ref(), b"r");

    broker.kill();
    broker.start().await;

    let (mut sub, connack) = connect(&broker, persistent("g-sub", false)).await;
    assert!(
        !connack.session_present,
        "an in-memory broker kept a session across a restart"
    );
    sub.subscribe("persist/g/#", QoS::AtLeastOnce).await;
    expect_nothing_for_a_second(&mut sub).await;
}

/// h. In batched mode a message is acknowledged at once and written within `flush_ms`: killed
/// well after that, the broker has lost none of the acknowledged messages or retained ones.
#[tokio::test]
async fn batched_mode_writes_acknowledged_messages_within_flush_ms() {
    const FLUSH_MS: u64 = 100;
    let mut broker = Process::new(Storage::Batched { flush_ms: FLUSH_MS }, LIMITS);
    broker.start().await;
    offline_subscriber(&broker, "h-sub", "persist/h/queue", QoS::AtLeastOnce).await;
    let sent = payloads("h", 300);
    let mut publisher = TestClient::v5(broker.addr(), "h-pub").await;
    publish_all(&mut publisher, "persist/h/queue", &sent, false).await;
    publish_all(&mut publisher, "persist/h/retained", &[b"r".to_vec()], true).await;
    // Ten flush intervals: the contract's bound, with room for a loaded machine's scheduler.
    tokio::time::sleep(Duration::from_millis(10 * FLUSH_MS)).await;

    broker.kill();
    broker.start().await;

    let mut sub = resume(&broker, "h-sub").await;
    let got = receive(&mut sub, sent.len()).await;
    assert_payloads(&got, &sent);
    expect_nothing_for_a_second(&mut sub).await;
    let mut retained = TestClient::v5(broker.addr(), "h-retained").await;
    retained
        .subscribe("persist/h/retained", QoS::AtLeastOnce)
        .await;
    assert_eq!(retained.recv_acked().await.payload.as_ref(), b"r");
}
