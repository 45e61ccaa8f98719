//! Unbounded session state (issue 10, item 5): sessions had no cap (10,000 abandoned
//! persistent sessions: +15 MB, never freed), and every disconnect with a session expiry
//! spawned a timer task that resuming the session did not cancel (+390 B per reconnect).

use std::time::Duration;

use crate::MIB;
use crate::attack::v5_connect;
use crate::broker::{RealBroker, Spec};
use crate::common::{TestClient, connect_packet};
use crate::watch::{Rss, Watch};
use supermq::protocol::{ProtocolVersion, reason};

/// Session expiry the clients ask for, in seconds: far longer than any test.
const EXPIRY: u32 = 3600;

/// `limits.max_sessions` in the session-cap test.
const MAX_SESSIONS: usize = 5_000;

/// New persistent sessions tried, one after the other, and then abandoned.
const ATTEMPTS: usize = 10_000;

/// Peak memory of the session-cap test: the issue measured 15 MB for 10,000 offline sessions,
/// so 5,000 are under 8 MiB; twice that again covers the connections' transient buffers and
/// allocator slack, and nothing like the 10,000 sessions a missing cap would keep.
const SESSIONS_RSS_BOUND: u64 = 16 * MIB;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_sessions_stop_at_max_sessions() {
    let mut broker =
        RealBroker::start(Spec::new("session-cap").limit("max_sessions", MAX_SESSIONS)).await;
    let watch = Watch::start(&broker).await;
    // The pair's two sessions count too.
    let room = MAX_SESSIONS - 2;
    let mut accepted = 0;
    let mut first_refusal = None;
    for attempt in 0..ATTEMPTS {
        let connect = v5_connect(&format!("abandoned-{attempt}"), false, None, Some(EXPIRY));
        let (client, connack) = TestClient::connect_with(broker.addr(), connect).await;
        match connack.code {
            reason::SUCCESS => {
                assert!(
                    first_refusal.is_none(),
                    "session {attempt} accepted after a refusal at {first_refusal:?}"
                );
                accepted += 1;
            }
            reason::QUOTA_EXCEEDED => {
                first_refusal.get_or_insert(attempt);
            }
            other => panic!("CONNACK {other:#04x} for new session {attempt}"),
        }
        drop(client);
    }
    assert_eq!(
        (accepted, first_refusal),
        (room, Some(room)),
        "with the pair's 2 sessions, {room} new ones fit under max_sessions = {MAX_SESSIONS}"
    );
    // An MQTT 3.1.1 client is refused with its own code.
    let mut v3 = connect_packet(ProtocolVersion::V311, "abandoned-v3");
    v3.clean_start = false;
    let (_, connack) = TestClient::connect_with(broker.addr(), v3).await;
    assert_eq!(connack.code, reason::v3::SERVER_UNAVAILABLE, "3.1.1: 0x03");
    // A session that exists is not a new one: it can still be resumed at the cap.
    let resume = v5_connect("abandoned-0", false, None, Some(EXPIRY));
    let (_client, connack) = TestClient::connect_with(broker.addr(), resume).await;
    assert_eq!(
        (connack.code, connack.session_present),
        (reason::SUCCESS, true),
        "an existing session is resumed at the cap"
    );
    watch
        .verdict(&mut broker, Rss::Peak, SESSIONS_RSS_BOUND)
        .await;
}

/// Clients that reconnect over and over, each resuming its own session.
const CHURNING_CLIENTS: usize = 20;

/// Reconnects in all (each one a disconnect with a session expiry, then a resume).
const RECONNECTS: usize = 20_000;

/// Memory once the churn is over: twenty sessions are nothing, but what each reconnect leaves
/// behind adds up. Measured at d4b088b: the same churn without a session expiry (no timer)
/// grows it by 0.3 MiB; with one, a timer task per disconnect, by 8.4 MiB.
const CHURN_RSS_BOUND: u64 = 4 * MIB;

/// How long the broker may take to settle after the churn before its memory is read.
const SETTLE: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_churn_with_session_expiry_leaves_nothing_behind() {
    let mut broker = RealBroker::start(Spec::new("reconnect-churn")).await;
    let watch = Watch::start(&broker).await;
    let addr = broker.addr();
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CHURNING_CLIENTS {
        clients.spawn(async move {
            let id = format!("churn-{client}");
            for round in 0..RECONNECTS / CHURNING_CLIENTS {
                let connect = v5_connect(&id, false, None, Some(EXPIRY));
                let (connection, connack) = TestClient::connect_with(addr, connect).await;
                assert_eq!(connack.code, reason::SUCCESS);
                assert_eq!(
                    connack.session_present,
                    round > 0,
                    "{id} resumes its session"
                );
                connection.disconnect().await;
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.expect("a churning client");
    }
    tokio::time::sleep(SETTLE).await;
    watch.verdict(&mut broker, Rss::Now, CHURN_RSS_BOUND).await;
}
