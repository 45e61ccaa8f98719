//! The client tools' failures: each prints one clear line on stderr and exits with its own
//! code (the table in `--help`).

mod common;
mod tools_common;

use common::{TestBroker, cert, config, config_with};
use supermq::transport::Kind;
use tools_common::{Ran, closed_port, run};

/// Exit codes, as `supermq pub --help` documents them.
const USAGE: i32 = 2;
const REFUSED: i32 = 3;
const RESOLVE: i32 = 5;
const TLS: i32 = 6;
const CONNACK: i32 = 8;
const SUBACK: i32 = 9;
const TIMEOUT: i32 = 12;

/// Asserts the exit code and that stderr holds `needle` on its first line.
fn expect_failure(ran: &Ran, code: i32, needle: &str) {
    ran.expect_code(code);
    let first = ran.stderr.lines().next().unwrap_or_default();
    assert!(
        first.contains(needle),
        "stderr should say \"{needle}\"; {ran:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_listening_is_connection_refused() {
    let port = closed_port().to_string();
    for tool in [
        vec!["pub", "-h", "127.0.0.1", "-p", &port, "-t", "t", "-m", "x"],
        vec!["sub", "-h", "127.0.0.1", "-p", &port, "-t", "t"],
        vec![
            "bench",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-n",
            "10",
            "--quiet",
        ],
    ] {
        let ran = run(&tool).await;
        expect_failure(
            &ran,
            REFUSED,
            &format!("connection refused by 127.0.0.1:{port}"),
        );
        assert_eq!(ran.stderr.lines().count(), 1, "one line; {ran:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_does_not_resolve() {
    // RFC 6761: names under .invalid never resolve.
    let ran = run(&["pub", "-h", "no-such-host.invalid", "-t", "t", "-m", "x"]).await;
    expect_failure(
        &ran,
        RESOLVE,
        "cannot resolve host \"no-such-host.invalid\"",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_usage_errors_before_connecting() {
    // The port is closed: a usage error must come first, not "connection refused".
    let port = closed_port().to_string();
    let ran = run(&["pub", "-p", &port, "-t", "t", "-q", "3", "-m", "x"]).await;
    expect_failure(&ran, USAGE, "QoS must be 0, 1 or 2");
    let ran = run(&["sub", "-p", &port, "-t", "t", "-q", "one"]).await;
    expect_failure(&ran, USAGE, "QoS must be 0, 1 or 2");
    let ran = run(&["pub", "-p", &port, "-t", "a/+", "-m", "x"]).await;
    expect_failure(&ran, USAGE, "cannot publish to \"a/+\"");
    let ran = run(&["pub", "-p", &port, "-t", "t", "-V", "4.0", "-m", "x"]).await;
    expect_failure(&ran, USAGE, "invalid value '4.0'");
    let ran = run(&["sub", "-p", &port, "-t", "t", "-c"]).await;
    expect_failure(
        &ran,
        USAGE,
        "-c (keep the session) needs a client identifier",
    );
    let ran = run(&["pub", "-p", &port, "-t", "t"]).await;
    expect_failure(
        &ran,
        USAGE,
        "the following required arguments were not provided",
    );
    let ran = run(&["bench", "-p", &port, "-s", "8"]).await;
    expect_failure(&ran, USAGE, "payload size must be at least 16 bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connack_names_its_reason() {
    let broker = TestBroker::start(config_with(|limits| limits.max_client_id_length = 23)).await;
    let port = broker.addr.port().to_string();
    let id = "a-client-id-longer-than-23-bytes";
    let ran = run(&["pub", "-p", &port, "-i", id, "-t", "t", "-m", "x"]).await;
    expect_failure(&ran, CONNACK, "CONNACK 0x02 (identifier rejected)");
    let ran = run(&["sub", "-p", &port, "-V", "5", "-i", id, "-t", "t"]).await;
    expect_failure(
        &ran,
        CONNACK,
        "CONNACK 0x85 (client identifier not valid): client identifier too long",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_subscription_names_the_filter() {
    let broker = TestBroker::start(config()).await;
    let port = broker.addr.port().to_string();
    let ran = run(&["sub", "-p", &port, "-t", "ok/#", "-t", "a/#/b"]).await;
    expect_failure(
        &ran,
        SUBACK,
        "subscription to \"a/#/b\" refused: SUBACK 0x80",
    );
    let ran = run(&["sub", "-p", &port, "-V", "5", "-t", "a/#/b"]).await;
    expect_failure(&ran, SUBACK, "SUBACK 0x8f (topic filter invalid)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_tls_failure() {
    // The broker presents a self-signed certificate; the tool trusts only the test CA.
    let mut config = config();
    config.mqtt.tls = "127.0.0.1:0".to_string();
    config.tls.cert = cert("other.pem").display().to_string();
    config.tls.key = cert("other.key").display().to_string();
    let broker = TestBroker::start(config).await;
    let ca = cert("ca.pem").display().to_string();
    let port = broker
        .listener(Kind::Tls)
        .expect("tls listener")
        .port()
        .to_string();
    let ran = run(&[
        "pub",
        "-h",
        "localhost",
        "-p",
        &port,
        "--ca",
        &ca,
        "-t",
        "t",
        "-m",
        "x",
    ])
    .await;
    expect_failure(&ran, TLS, "TLS handshake with localhost:");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sub_gives_up_after_its_timeout() {
    let broker = TestBroker::start(config()).await;
    let port = broker.addr.port().to_string();
    let ran = run(&["sub", "-p", &port, "-t", "quiet", "-C", "1", "-W", "1"]).await;
    expect_failure(
        &ran,
        TIMEOUT,
        "timed out after 1 s with 0 message(s) received",
    );
}
