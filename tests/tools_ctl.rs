//! `supermq ctl` against the real server in-process: its tables, `--json`, kick and publish,
//! API keys, and the exit codes it shares with the other tools.

mod common;

use std::net::SocketAddr;
use std::process::Output;

use common::{TestBroker, TestClient, config};
use supermq::auth::hash_password;
use supermq::protocol::{QoS, reason};

async fn ctl(http: SocketAddr, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_supermq"));
    command
        .arg("ctl")
        .arg("--http")
        .arg(http.to_string())
        .args(args);
    tokio::task::spawn_blocking(move || command.output().expect("supermq runs"))
        .await
        .expect("not cancelled")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn with_http(keys: Vec<String>) -> TestBroker {
    let mut config = config();
    config.node.name = "ctl-node".to_string();
    config.http.listen = "127.0.0.1:0".to_string();
    config.http.api_keys = keys;
    TestBroker::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_json_kick_and_publish() {
    let broker = with_http(Vec::new()).await;
    let http = broker.http.expect("http on");
    let mut client = TestClient::v5(broker.addr, "watched").await;
    client.subscribe("ctl/#", QoS::AtLeastOnce).await;

    let out = ctl(http, &["nodes"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = text(&out.stdout);
    assert!(table.starts_with("NODE "), "{table}");
    assert!(
        table
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("ctl-node ")),
        "{table}"
    );

    let out = ctl(http, &["clients"]).await;
    let table = text(&out.stdout);
    assert!(table.contains("watched"), "{table}");
    assert!(table.contains("(1 of 1)"), "{table}");

    let out = ctl(http, &["--json", "subs"]).await;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["data"][0]["topic"], "ctl/#");

    let out = ctl(http, &["publish", "ctl/x", "hello", "-q", "1"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(&client.recv_acked().await.payload[..], b"hello");

    let out = ctl(http, &["kick", "watched"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    client
        .expect_disconnect(reason::ADMINISTRATIVE_ACTION)
        .await;
    let out = ctl(http, &["kick", "nobody"]).await;
    assert_eq!(out.status.code(), Some(13), "{out:?}");
    assert!(text(&out.stderr).contains("CLIENT_NOT_FOUND"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_unreachable_nodes_have_their_exit_codes() {
    let hash = hash_password(b"pw").expect("hash");
    let broker = with_http(vec![format!("ops:admin:{hash}")]).await;
    let http = broker.http.expect("http on");
    let out = ctl(http, &["nodes"]).await;
    assert_eq!(out.status.code(), Some(8), "no key: {out:?}");
    let out = ctl(http, &["--key", "ops:pw", "nodes"]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let nowhere = closed.local_addr().expect("addr");
    drop(closed);
    let out = ctl(nowhere, &["nodes"]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}
