//! `supermq health`, the Docker image's health check: exit 0 only when the broker answers
//! CONNECT with a successful CONNACK, found from `-h`/`-p` or from the node's own configuration
//! file and `SUPERMQ_` environment.

mod common;

use std::path::PathBuf;
use std::process::Output;

use common::{TestBroker, TestClient, config_with};

/// Runs `supermq health ARGS` with `env` added to a clean environment (no inherited
/// `SUPERMQ_` variable can leak in) off the runtime's threads.
async fn health(args: &[&str], env: &[(&str, String)]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_supermq"));
    command.arg("health").args(args);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("SUPERMQ_")) {
        command.env_remove(name);
    }
    command.envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    tokio::task::spawn_blocking(move || command.output().expect("supermq runs"))
        .await
        .expect("not cancelled")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A configuration file with `body`, unique to the test.
fn config_file(test: &str, body: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("supermq-health-{test}-{}.conf", std::process::id()));
    std::fs::write(&path, body).expect("temp file written");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serving_broker_is_healthy() {
    let broker = TestBroker::start_default().await;
    let port = broker.addr.port().to_string();
    let out = health(&["-h", "127.0.0.1", "-p", &port], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(
        text(&out.stdout).trim(),
        format!("127.0.0.1:{port}: serving")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_comes_from_the_configuration_file() {
    let broker = TestBroker::start_default().await;
    let path = config_file("file", &format!("[mqtt]\ntcp = \"{}\"\n", broker.addr));
    let out = health(&["-c", path.to_str().expect("utf-8 path")], &[]).await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// The environment wins over the file, as for the broker, and a wildcard listener is
/// dialled on loopback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_environment_wins_and_a_wildcard_means_loopback() {
    let broker = TestBroker::start_default().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let path = config_file("env", &format!("[mqtt]\ntcp = \"{closed}\"\n"));
    let wildcard = format!("0.0.0.0:{}", broker.addr.port());
    let out = health(
        &["-c", path.to_str().expect("utf-8 path")],
        &[("SUPERMQ_MQTT_TCP", wildcard)],
    )
    .await;
    let _ = std::fs::remove_file(&path);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(text(&out.stdout).starts_with("127.0.0.1:"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_not_healthy() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port")
        .port()
        .to_string();
    let out = health(&["-h", "127.0.0.1", "-p", &port], &[]).await;
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(
        text(&out.stderr).contains("not serving: connection refused"),
        "{out:?}"
    );
}

/// A TCP accept is not enough: a broker that refuses the CONNECT is not serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_refuses_connect_is_not_healthy() {
    let broker = TestBroker::start(config_with(|limits| limits.max_connections = 1)).await;
    let _only = TestClient::v311(broker.addr, "only").await;
    let port = broker.addr.port().to_string();
    let out = health(&["-h", "127.0.0.1", "-p", &port], &[]).await;
    assert_eq!(out.status.code(), Some(8), "{out:?}");
    assert!(text(&out.stderr).contains("CONNACK 0x97"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_configuration_names_the_key() {
    let out = health(&[], &[("SUPERMQ_MQTT_TCP", "nonsense".to_string())]).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(text(&out.stderr).contains("mqtt.tcp"), "{out:?}");
    let ws_only = [
        ("SUPERMQ_MQTT_TCP", String::new()),
        ("SUPERMQ_MQTT_WS", "127.0.0.1:8083".to_string()),
    ];
    let out = health(&[], &ws_only).await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        text(&out.stderr).contains("no [mqtt] tcp listener"),
        "{out:?}"
    );
}
