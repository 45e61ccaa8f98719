//! `supermq pub` and `supermq sub` as users run them: the real binary against an in-process
//! broker, over TCP, TLS and WebSocket, MQTT 3.1.1 and 5.0.

mod common;
mod tools_common;

use common::{TestBroker, cert, config, wait_until};
use supermq::transport::Kind;
use tools_common::{Running, run, run_with_stdin, start};

fn port(broker: &TestBroker) -> String {
    broker.addr.port().to_string()
}

/// Starts `sub` and waits until it has subscribed, so a publication cannot race past it.
async fn subscriber(broker: &TestBroker, args: &[&str]) -> Running {
    let before = broker.broker.subscription_count();
    let running = start(args, b"");
    wait_until("the subscriber subscribed", || {
        broker.broker.subscription_count() > before
    })
    .await;
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_lines_and_sub_count_round_trip_a_file() {
    let broker = TestBroker::start(config()).await;
    let port = port(&broker);
    // Lines of every kind: empty, with a CR before the LF, long.
    let mut lines: Vec<String> = (0..200)
        .map(|i| format!("line {i}: {}", "x".repeat(i)))
        .collect();
    lines[10] = String::new();
    let mut file = lines.join("\n").into_bytes();
    file.extend_from_slice(b"\n");
    let crlf = file.iter().position(|&b| b == b'\n').expect("a line end");
    file.insert(crlf, b'\r');

    let count = lines.len().to_string();
    let sub = subscriber(
        &broker,
        &["sub", "-p", &port, "-t", "files/#", "-q", "1", "-C", &count],
    )
    .await;
    run_with_stdin(
        &["pub", "-p", &port, "-t", "files/a", "-q", "1", "-l"],
        &file,
    )
    .await
    .expect_code(0);
    let received = sub.finish().await;
    received.expect_code(0);
    let want: String = lines.iter().map(|line| format!("{line}\n")).collect();
    assert_eq!(received.stdout, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retained_message_reaches_a_later_subscriber() {
    let broker = TestBroker::start(config()).await;
    let port = port(&broker);
    run(&[
        "pub",
        "-p",
        &port,
        "-t",
        "state/lamp",
        "-r",
        "-q",
        "1",
        "-m",
        "on",
    ])
    .await
    .expect_code(0);
    let received = run(&[
        "sub", "-p", &port, "-t", "state/+", "-C", "1", "-v", "-W", "5",
    ])
    .await;
    received.expect_code(0);
    assert_eq!(received.stdout, "state/lamp on\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_at_qos2_with_every_version_spelling() {
    let broker = TestBroker::start(config()).await;
    let port = port(&broker);
    let sub = subscriber(
        &broker,
        &[
            "sub", "-p", &port, "-V", "mqttv5", "-t", "v5/x", "-q", "2", "-C", "2",
        ],
    )
    .await;
    for version in ["5", "mqttv5"] {
        run(&[
            "pub", "-p", &port, "-V", version, "-t", "v5/x", "-q", "2", "-m", version,
        ])
        .await
        .expect_code(0);
    }
    let received = sub.finish().await;
    received.expect_code(0);
    assert_eq!(received.stdout, "5\nmqttv5\n");
    for version in ["311", "3.1.1", "mqttv311"] {
        run(&["pub", "-p", &port, "-V", version, "-t", "v3", "-m", "x"])
            .await
            .expect_code(0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sends_a_whole_file_and_empty_messages() {
    let broker = TestBroker::start(config()).await;
    let port = port(&broker);
    let path = std::env::temp_dir().join(format!("supermq-pub-{}.txt", std::process::id()));
    std::fs::write(&path, "first line\nsecond line").expect("write the file");
    let sub = subscriber(&broker, &["sub", "-p", &port, "-t", "f", "-C", "2"]).await;
    let file = path.to_str().expect("a UTF-8 path");
    run(&["pub", "-p", &port, "-t", "f", "-f", file])
        .await
        .expect_code(0);
    run(&["pub", "-p", &port, "-t", "f", "-n"])
        .await
        .expect_code(0);
    let received = sub.finish().await;
    let _ = std::fs::remove_file(&path);
    received.expect_code(0);
    assert_eq!(received.stdout, "first line\nsecond line\n\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_session_keeps_messages_while_the_subscriber_is_away() {
    let broker = TestBroker::start(config()).await;
    let port = port(&broker);
    let join = [
        "sub", "-p", &port, "-t", "away", "-q", "1", "-c", "-i", "keeper",
    ];
    // -C 0: subscribe, then leave at once; the session stays.
    let mut first = join.to_vec();
    first.extend(["-C", "0"]);
    run(&first).await.expect_code(0);
    run(&[
        "pub",
        "-p",
        &port,
        "-t",
        "away",
        "-q",
        "1",
        "-m",
        "while you were out",
    ])
    .await
    .expect_code(0);
    let mut second = join.to_vec();
    second.extend(["-C", "1", "-W", "5"]);
    let received = run(&second).await;
    received.expect_code(0);
    assert_eq!(received.stdout, "while you were out\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_and_sub_over_tls_websocket_and_secure_websocket() {
    let mut config = config();
    config.mqtt.tls = "127.0.0.1:0".to_string();
    config.mqtt.ws = "127.0.0.1:0".to_string();
    config.mqtt.wss = "127.0.0.1:0".to_string();
    config.tls.cert = cert("server.pem").display().to_string();
    config.tls.key = cert("server.key").display().to_string();
    let broker = TestBroker::start(config).await;
    let ca = cert("ca.pem").display().to_string();
    let listeners = [
        (Kind::Tls, vec!["--ca", ca.as_str()]),
        (Kind::Ws, vec!["--ws"]),
        (Kind::Wss, vec!["--ws", "--tls", "--ca", ca.as_str()]),
    ];
    for (kind, transport) in listeners {
        let port = broker.listener(kind).expect("listener").port().to_string();
        let topic = format!("over/{kind}");
        let mut sub = vec![
            "sub",
            "-h",
            "localhost",
            "-p",
            &port,
            "-t",
            &topic,
            "-C",
            "1",
        ];
        sub.extend(&transport);
        let sub = subscriber(&broker, &sub).await;
        let mut publish = vec![
            "pub",
            "-h",
            "localhost",
            "-p",
            &port,
            "-t",
            &topic,
            "-q",
            "1",
        ];
        publish.extend(&transport);
        publish.extend(["-m", kind.name()]);
        run(&publish).await.expect_code(0);
        let received = sub.finish().await;
        received.expect_code(0);
        assert_eq!(received.stdout, format!("{kind}\n"));
    }
}
