//! The retained sync: a peer that just joined gets this node's retained messages, streamed in
//! bounded chunks by a task of its own rather than queued all at once when the route registers.
//!
//! Why a stream: the retained store may hold up to `limits.max_retained_bytes` (256 MiB by
//! default). Cloning and encoding all of it under the cluster state lock, as registration once
//! did, held every subscriber waiting on that lock under the router lock, and so every publish
//! on the node, for as long as the copy took (0.2–0.7 s for 90,000 messages of 1 KiB), and put
//! the whole store in the route's queue, beyond `cluster.route_queue_bytes`.
//!
//! How it stays cheap for everyone else:
//! - Registration, under the state lock, queues only what must be ordered with interest
//!   changes (peers, interest, groups); the route is then visible to the publish path and
//!   [`Cluster::stream_retained`] starts.
//! - The stream takes a list of the retained topics once (one short read of the store), then
//!   reads the messages a chunk at a time, at most [`CHUNK_MESSAGES`] messages or about
//!   [`CHUNK_BYTES`], each chunk under its own short read lock of the retained store. No lock
//!   a publish takes is held in between, and only a retained publish waits on a chunk at all.
//! - Backpressure, not drops: before each chunk the stream waits until the route's queue holds
//!   at most half of `cluster.route_queue_bytes` of messages, so live messages keep the other
//!   half; the chunk is counted with them, and never dropped.
//!
//! Why the receiver never keeps an older copy: every retained message and clear carries a
//! version, and the receiver keeps the newest (docs/ARCHITECTURE.md, "Retained versions"),
//! so the order of RETAINED and live MESSAGE frames does not decide what stays. The stream
//! still reads the **current** store per chunk (messages, and tombstones of clears within
//! their period), so it never sends what was already replaced. Topics retained after the list
//! was taken reach the peer as live messages, as every retained publish goes to every peer.
//! Expired messages are skipped. The task ends with the route: it stops when the route is
//! closed, and the route's runner aborts it when the route ends.

use std::sync::Arc;

use super::Cluster;
use super::frame::Frame;
use super::route::{self, Route};

/// At most this many retained messages are read under one read lock of the store.
pub const CHUNK_MESSAGES: usize = 256;
/// A chunk ends once its topics and payloads reach this many bytes (one large message may
/// pass it).
pub const CHUNK_BYTES: usize = 256 * 1024;

impl Cluster {
    /// Streams the retained store to `route`'s peer; see the module docs.
    pub(super) async fn stream_retained(self: Arc<Self>, route: Arc<Route>) {
        let Some(topics) = self.broker.upgrade().map(|b| b.retained_topics()) else {
            return;
        };
        let started = std::time::Instant::now();
        let mut sent = 0usize;
        let mut rest = &topics[..];
        while !rest.is_empty() {
            if !route.room_for_stream(CHUNK_BYTES).await {
                tracing::debug!(peer = %route.peer, sent, "route closed; retained stream stopped");
                return;
            }
            let Some(broker) = self.broker.upgrade() else {
                return;
            };
            let chunk = &rest[..rest.len().min(CHUNK_MESSAGES)];
            let taken = broker.retained_for_peer(chunk, CHUNK_BYTES, |found| {
                let frames: Vec<_> = found
                    .into_iter()
                    .filter_map(|(publish, version)| {
                        route::encode(&Frame::Retained { version, publish })
                    })
                    .collect();
                sent += frames.len();
                route.send_stream(frames);
            });
            rest = &rest[taken..];
            // A chunk is work without an await: let the worker run others' tasks in between,
            // or a stream with room to spare would hold its thread for the whole store.
            tokio::task::yield_now().await;
        }
        tracing::debug!(peer = %route.peer, sent, elapsed = ?started.elapsed(), "retained stream done");
    }
}
