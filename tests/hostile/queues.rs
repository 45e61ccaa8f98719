//! Queues bounded in bytes (issue 10, item 5): session queues were bounded in messages only,
//! so a subscriber that never reads could make the broker hold 1,000 messages of 1 MiB each.

use std::time::Duration;

use crate::MIB;
use crate::attack::publish_window;
use crate::broker::{RealBroker, Spec};
use crate::common::TestClient;
use crate::watch::{Rss, Watch};
use supermq::protocol::QoS;

/// Messages published to the subscriber that never reads, and their size.
const MESSAGES: u32 = 1_000;
const SIZE: usize = 1 << 20;

/// `limits.max_packet_size` for this test: room for a 1 MiB payload and its header.
const MAX_PACKET: u32 = 2 << 20;

/// The default of `limits.max_queued_bytes`: what one session may hold.
const MAX_QUEUED_BYTES: u64 = 16 * MIB;

/// On top of the queue: the publisher's read buffer, the message in hand, the subscriber's
/// write buffer, allocator slack. Measured at d4b088b with the queue bounded in messages
/// instead (16 queued and 1 in flight, 17 MiB): peak +27 MiB, so about 10 MiB besides it.
const SLACK: u64 = 16 * MIB;

/// Peak memory bound: one session's queue in bytes plus the slack.
const RSS_BOUND: u64 = MAX_QUEUED_BYTES + SLACK;

/// QoS 1 messages in flight from the publisher.
const WINDOW: u32 = 4;

/// 1 GiB through a debug build on loopback takes several seconds; the publisher may also be
/// held for one `queue_full_wait_ms` (2 s) before the subscriber is declared slow.
const PUBLISHED_WITHIN: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_never_reads_costs_at_most_max_queued_bytes() {
    let mut broker =
        RealBroker::start(Spec::new("queue-bytes").limit("max_packet_size", MAX_PACKET)).await;
    let watch = Watch::start(&broker).await;
    let mut hoarder = TestClient::v5(broker.addr(), "hoarder").await;
    hoarder.subscribe("hoard/#", QoS::AtLeastOnce).await;
    // From here on the hoarder reads nothing.
    let mut publisher = TestClient::v5(broker.addr(), "publisher").await;
    publish_window(
        &mut publisher,
        "hoard/1",
        MESSAGES,
        WINDOW,
        SIZE,
        PUBLISHED_WITHIN,
        // Stop as soon as the bound is broken rather than let the broker take a gigabyte.
        |acked| {
            let grown = watch.grown(&broker, Rss::Peak);
            assert!(
                grown < RSS_BOUND,
                "after {acked} messages of 1 MiB to a subscriber that never reads, peak memory \
                 grew by {} MiB (bound {} MiB)",
                grown / MIB,
                RSS_BOUND / MIB
            );
        },
    )
    .await;
    watch.verdict(&mut broker, Rss::Peak, RSS_BOUND).await;
    drop(hoarder);
}
