//! [auth] as raw MQTT 5 clients meet it, where Paho cannot show it: the PUBREC of a denied
//! QoS 2 message (Paho answers it with PUBREL all the same), reason strings, the counters
//! that record each refusal, and a reload of the ACL in place.

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::*;
use supermq::protocol::{Ack, Packet, QoS, reason};

/// An ACL file in the temporary directory, removed when dropped.
struct AclFile(PathBuf);

impl AclFile {
    fn new(text: &str) -> AclFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "supermq-acl-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).expect("ACL written");
        AclFile(path)
    }

    fn rewrite(&self, text: &str) {
        std::fs::write(&self.0, text).expect("ACL rewritten");
    }
}

impl Drop for AclFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn broker_with(acl: &AclFile) -> TestBroker {
    let mut config = config();
    config.auth.acl_file = acl.0.display().to_string();
    TestBroker::start(config).await
}

/// MQTT 5: a denied QoS 2 message gets PUBREC 0x87 and nothing is stored for it, so a
/// PUBREL for it gets PUBCOMP 0x92 (MQTT 5 §4.3.3: a PUBREC of 0x80 or more ends the
/// exchange). A denied QoS 1 message gets PUBACK 0x87 with a reason string.
#[tokio::test]
async fn denied_publishes_get_0x87_and_are_counted() {
    let acl = AclFile::new("topic read #\ntopic write open/#\n");
    let broker = broker_with(&acl).await;
    let mut watcher = TestClient::v5(broker.addr, "watcher").await;
    watcher.subscribe("#", QoS::AtLeastOnce).await;
    let mut client = TestClient::v5(broker.addr, "pub").await;

    client
        .send_publish(publish_packet("closed/2", b"x", QoS::ExactlyOnce, false, 9))
        .await;
    match client.recv().await {
        Packet::PubRec(ack) => assert_eq!(ack.reason, reason::NOT_AUTHORIZED),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    client.send(&Packet::PubRel(Ack::new(9))).await;
    match client.recv().await {
        Packet::PubComp(ack) => assert_eq!(ack.reason, reason::PACKET_IDENTIFIER_NOT_FOUND),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }

    client
        .send_publish(publish_packet(
            "closed/1",
            b"x",
            QoS::AtLeastOnce,
            false,
            10,
        ))
        .await;
    match client.recv().await {
        Packet::PubAck(ack) => {
            assert_eq!(ack.reason, reason::NOT_AUTHORIZED);
            assert_eq!(
                ack.properties.reason_string.as_deref(),
                Some("not authorized")
            );
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(
        client
            .publish("open/1", b"ok", QoS::AtLeastOnce, false)
            .await,
        0
    );
    let delivered = watcher.recv_acked().await;
    assert_eq!(
        delivered.topic, "open/1",
        "the denied messages never arrived"
    );
    assert_eq!(broker.broker.stats().publishes_denied.get(), 2);
}

/// A reload reaches subscriptions made before it: once the rules no longer let the
/// subscriber read, each delivery is kept from it and counted. A SUBSCRIBE refused by the
/// ACL is counted too.
#[tokio::test]
async fn a_reload_reaches_existing_subscriptions() {
    let acl = AclFile::new("topic readwrite news/#\n");
    let broker = broker_with(&acl).await;
    let mut subscriber = TestClient::v5(broker.addr, "sub").await;
    let suback = subscriber.subscribe("news/#", QoS::AtLeastOnce).await;
    assert_eq!(suback.reasons, vec![1]);
    let suback = subscriber.subscribe("other/#", QoS::AtLeastOnce).await;
    assert_eq!(suback.reasons, vec![reason::NOT_AUTHORIZED]);
    assert_eq!(broker.broker.stats().subscriptions_denied.get(), 1);

    let mut publisher = TestClient::v5(broker.addr, "pub").await;
    publisher
        .publish("news/1", b"a", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(subscriber.recv_acked().await.topic, "news/1");

    acl.rewrite("topic write news/#\ntopic read news/public/#\n");
    broker.broker.auth().reload().expect("the new ACL parses");
    publisher
        .publish("news/2", b"b", QoS::AtLeastOnce, false)
        .await;
    publisher
        .publish("news/public/3", b"c", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(subscriber.recv_acked().await.topic, "news/public/3");
    assert_eq!(broker.broker.stats().deliveries_denied.get(), 1);

    // A broken file is refused and the rules stay as they were.
    acl.rewrite("topic write news/#\nnonsense\n");
    let error = broker.broker.auth().reload().expect_err("a broken ACL");
    assert_eq!(error.line, 2);
    publisher
        .publish("news/public/4", b"d", QoS::AtLeastOnce, false)
        .await;
    assert_eq!(subscriber.recv_acked().await.topic, "news/public/4");
}
