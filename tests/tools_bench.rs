//! `supermq bench` against the real broker: every run must account for every message, and
//! the JSON line must say so in numbers a script can check.

mod common;
mod tools_common;

use common::{TestBroker, config, config_with, wait_until};
use supermq::config::Config;
use tools_common::{Json, run};

/// A broker whose session queues hold a whole test run: bench runs here must lose nothing,
/// whatever the scheduling of a debug build on a busy machine (QoS 0 included).
fn roomy() -> Config {
    config_with(|limits| limits.max_queued_messages = 100_000)
}

/// Runs bench with `args` against `broker`; returns its JSON line after checking it exited
/// well.
async fn bench(broker: &TestBroker, args: &[&str]) -> Json {
    let port = broker.addr.port().to_string();
    let mut all = vec![
        "bench",
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--quiet",
        "--threads",
        "2",
    ];
    all.extend(args);
    let ran = run(&all).await;
    ran.expect_code(0);
    ran.json()
}

/// Asserts a lossless run: everything sent, confirmed and delivered exactly once.
fn assert_lossless(json: &Json, sent: u64, expected: u64) {
    assert_eq!(json.u64("sent"), sent, "{json:?}");
    assert_eq!(json.u64("acked"), sent, "{json:?}");
    assert_eq!(json.u64("expected"), expected, "{json:?}");
    assert_eq!(json.u64("received"), expected, "{json:?}");
    assert_eq!(json.u64("unique"), expected, "{json:?}");
    for zero in ["lost", "dup", "foreign"] {
        assert_eq!(json.u64(zero), 0, "{zero}: {json:?}");
    }
    assert_eq!(json.raw("drained"), "true", "{json:?}");
    if expected > 0 {
        assert!(json.f64("recv_rate") > 0.0, "{json:?}");
        let (p50, p99, max) = (json.f64("p50_us"), json.f64("p99_us"), json.f64("max_us"));
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{json:?}");
    }
    assert!(json.f64("pub_rate") > 0.0, "{json:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_to_one_at_every_qos() {
    let broker = TestBroker::start(roomy()).await;
    for qos in ["0", "1", "2"] {
        let json = bench(&broker, &["-q", qos, "-n", "3000"]).await;
        assert_lossless(&json, 3000, 3000);
        assert_eq!(json.raw("qos"), qos);
        assert_eq!(
            json.u64("ooo"),
            0,
            "one publisher on one connection stays in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_publishers_to_two_subscribers_at_every_qos() {
    let broker = TestBroker::start(roomy()).await;
    for qos in ["0", "1", "2"] {
        let json = bench(
            &broker,
            &[
                "--pubs", "4", "--subs", "2", "-q", qos, "-n", "1000", "-V", "5",
            ],
        )
        .await;
        // Every subscriber receives every publisher's messages.
        assert_lossless(&json, 4000, 8000);
        assert_eq!(json.raw("version"), "\"5.0\"");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_topic_small_window_and_warm_up() {
    let broker = TestBroker::start(roomy()).await;
    let json = bench(
        &broker,
        &[
            "--pubs",
            "3",
            "--subs",
            "2",
            "-q",
            "1",
            "--sub-qos",
            "2",
            "-n",
            "500",
            "--shared-topic",
            "--inflight",
            "1",
            "--warmup",
            "50",
            "-s",
            "300",
        ],
    )
    .await;
    // Warm-up messages are delivered but not counted.
    assert_lossless(&json, 1500, 3000);
    assert_eq!(json.u64("size"), 300);
    assert_eq!(json.u64("sub_qos"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishers_only_and_the_rate_limit() {
    let broker = TestBroker::start(roomy()).await;
    let json = bench(
        &broker,
        &["--pubs", "2", "--subs", "0", "-q", "1", "-n", "1000"],
    )
    .await;
    assert_lossless(&json, 2000, 0);
    assert_eq!(json.raw("recv_rate"), "null");

    // 400 messages at 1000 msg/s: the last one is due 0.399 s after the start.
    let json = bench(&broker, &["-n", "400", "--rate", "1000", "-q", "1"]).await;
    assert_lossless(&json, 400, 400);
    let seconds = json.f64("pub_secs");
    assert!(
        (0.39..1.5).contains(&seconds),
        "400 messages at 1000/s took {seconds} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legacy_format_prints_micro_mq_lines() {
    let broker = TestBroker::start(roomy()).await;
    let port = broker.addr.port().to_string();
    // The micro-mq-1 shape, shortened to 2000 messages.
    let ran = run(&[
        "bench",
        "-p",
        &port,
        "--quiet",
        "--preset",
        "micro-mq-1",
        "-n",
        "2000",
        "-q",
        "1",
        "--format",
        "legacy",
    ])
    .await;
    ran.expect_code(0);
    let mut lines = ran.stdout.lines();
    assert_eq!(
        lines.next(),
        Some("1 client, 100k messages, no sub, QoS 1:")
    );
    let total = lines.next().unwrap_or_default();
    let words: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(
        words[..6],
        ["Total", "sent", "2000", "messages", "dropped", "0"],
        "{total}"
    );
    assert!(
        total.contains(" ms, ") && total.contains(" ms/msg, ") && total.ends_with(" msgs/sec"),
        "{total}"
    );
    assert_eq!(ran.json().raw("preset"), "\"micro-mq-1\"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conns_opens_idle_connections_and_measures_memory() {
    let broker = TestBroker::start(config()).await;
    let port = broker.addr.port().to_string();
    // The broker runs in this process, so its memory is this process's.
    let pid = std::process::id().to_string();
    let ran = run(&[
        "bench",
        "conns",
        "-p",
        &port,
        "-n",
        "200",
        "--pid",
        &pid,
        "--settle",
        "0",
        "--source-ips",
        "127.0.0.1-127.0.0.4",
    ])
    .await;
    ran.expect_code(0);
    let json = ran.json();
    assert_eq!(json.u64("connections"), 200);
    assert_eq!(json.u64("source_ips"), 4);
    assert!(json.f64("rss_after") > 0.0, "{json:?}");
    assert!(json.f64("bytes_per_conn") >= 0.0, "{json:?}");
    assert!(ran.stdout.contains("per connection"), "{ran:#?}");
}

/// `--isolation` runs the shape alone and then beside a slow MQTT 5 subscriber (Receive
/// Maximum 1, one acknowledgement every 50 ms), and reports both and their ratio. The broker's
/// queues here hold the whole run, so the subscribers lose nothing either way; what the slow
/// one costs a real broker is for `bench` to measure, not for this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_compares_subscribers_alone_and_beside_a_slow_one() {
    let broker = TestBroker::start(roomy()).await;
    let port = broker.addr.port().to_string();
    let ran = run(&[
        "bench",
        "-p",
        &port,
        "--quiet",
        "--threads",
        "2",
        "--isolation",
        "--slow-ack-ms",
        "50",
        "--subs",
        "2",
        "-n",
        "2000",
    ])
    .await;
    ran.expect_code(0);
    let json = ran.json();
    // The keys of the run beside the slow subscriber, at QoS 1 by default.
    assert_lossless(&json, 2000, 4000);
    assert_eq!(json.raw("qos"), "1");
    assert!(json.raw("scenario").ends_with(" isolation\""), "{json:?}");
    assert_eq!(json.u64("slow_ack_ms"), 50);
    assert!(json.u64("slow_received") >= 1, "{json:?}");
    assert_eq!(json.raw("slow_closed"), "null");
    assert_eq!(json.u64("alone_lost"), 0);
    for key in ["alone_recv_rate", "alone_p50_us", "alone_p99_us"] {
        assert!(json.f64(key) > 0.0, "{key}: {json:?}");
    }
    // The ratios are the two runs' figures divided.
    let rate_ratio = json.f64("recv_rate") / json.f64("alone_recv_rate");
    assert!(
        (json.f64("rate_ratio") - rate_ratio).abs() < 0.01 * rate_ratio.max(1.0),
        "{json:?}"
    );
    assert!(json.f64("p99_ratio") > 0.0, "{json:?}");
    // Both tables, then the comparison.
    for line in [
        "scenario     1->2 qos1 64B isolation, alone",
        "scenario     1->2 qos1 64B isolation (",
        "isolation    slow subscriber (MQTT 5, Receive Maximum 1, one acknowledgement every 50 ms",
        "beside/alone rate ",
    ] {
        assert!(ran.stdout.contains(line), "{line:?} in:\n{}", ran.stdout);
    }

    // The slow subscriber is slow by its Receive Maximum, which QoS 0 does not count against.
    let refused = run(&["bench", "-p", &port, "--isolation", "-q", "0"]).await;
    refused.expect_code(2);
    assert!(
        refused.stderr.contains("--isolation needs -q 1 or 2"),
        "{refused:#?}"
    );
}

/// `--persistent` subscribers keep their sessions: after the run their connections are gone
/// and their sessions, with the run's subscription, are still in the broker (3.1.1: clean
/// session 0, kept for ever by default; MQTT 5: clean start, expiry 3600 s). Without the
/// flag, nothing stays; the publishers' sessions never do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_subscribers_keep_their_sessions() {
    let broker = TestBroker::start(roomy()).await;
    let json = bench(&broker, &["-q", "1", "-n", "500", "--subs", "2"]).await;
    assert_lossless(&json, 500, 1000);
    assert_eq!(json.raw("persistent"), "false");
    wait_until("the clean sessions are gone", || {
        broker.broker.client_list().is_empty()
    })
    .await;

    for (version, clean_start, expiry) in [("311", false, u32::MAX), ("5", true, 3600)] {
        // A broker per version, so the sessions left are this run's.
        let broker = TestBroker::start(roomy()).await;
        let args = ["-q", "1", "-n", "500", "--subs", "2", "-V", version];
        let json = bench(&broker, &[&args[..], &["--persistent"]].concat()).await;
        assert_lossless(&json, 500, 1000);
        assert_eq!(json.raw("persistent"), "true");
        assert!(json.raw("scenario").ends_with(" persistent\""), "{json:?}");
        wait_until("only the subscribers' sessions are left, offline", || {
            let sessions = broker.broker.client_list();
            sessions.len() == 2 && sessions.iter().all(|session| !session.connected)
        })
        .await;
        for session in broker.broker.client_list() {
            assert!(session.clientid.contains("-s"), "{session:?}");
            assert_eq!(session.clean_start, clean_start, "{version}: {session:?}");
            assert_eq!(session.session_expiry, expiry, "{version}: {session:?}");
            assert_eq!(session.subscriptions, 1, "{session:?}");
        }
    }
}
