//! `/metrics`: this node's figures in the Prometheus text format.
//!
//! The broker keeps its own counters ([`crate::broker::Stats`]) and the routes theirs
//! ([`crate::cluster::Cluster::route_figures`]); a scrape reads them into a registry made for
//! that scrape and encodes it, so the publish path pays nothing for metrics beyond the
//! counters it keeps anyway. Names follow Prometheus' conventions: `supermq_` first,
//! `_total` on counters, base units (bytes, seconds).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use crate::cluster::RouteFigures;

use super::Shared;

type Labels = Vec<(&'static str, String)>;

/// The Prometheus text for this node now.
pub(super) fn render(shared: &Shared) -> String {
    let broker = &shared.broker;
    let stats = broker.stats();
    let mut registry = Registry::default();
    let gauge = |value: usize| ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    registry.register(
        "supermq_connections",
        "Client connections open",
        gauge(broker.connection_count()),
    );
    registry.register(
        "supermq_connections_resting",
        "Client connections quiet for a while, resting without a task of their own",
        gauge(broker.resting_count()),
    );
    registry.register(
        "supermq_sessions",
        "Sessions, connected or waiting for their client",
        gauge(broker.session_count()),
    );
    registry.register(
        "supermq_subscriptions",
        "Subscriptions, consumer group memberships included",
        gauge(broker.subscription_count()),
    );
    registry.register(
        "supermq_retained_messages",
        "Retained messages held",
        gauge(broker.retained_count()),
    );
    registry.register(
        "supermq_uptime_seconds",
        "Seconds since this node started",
        ConstGauge::new(shared.started.elapsed().as_secs_f64()),
    );
    let counters = [
        (
            "supermq_messages_received",
            "PUBLISH packets received from clients",
            stats.messages_received.get(),
        ),
        (
            "supermq_messages_delivered",
            "Messages queued to a subscriber's session (one per subscriber)",
            stats.messages_routed.get(),
        ),
        (
            "supermq_connections_accepted",
            "Connections accepted (CONNACK 0x00)",
            stats.connections_accepted.get(),
        ),
        (
            "supermq_connections_refused",
            "Connections refused",
            stats.connections_refused.get(),
        ),
        (
            "supermq_auth_failures",
            "CONNECTs refused for a bad or missing user name or password",
            stats.auth_failures.get(),
        ),
        (
            "supermq_publishes_refused",
            "PUBLISH packets refused (topic over the limits, $SYS, ...)",
            stats.publishes_refused.get(),
        ),
        (
            "supermq_publishes_denied",
            "PUBLISH packets and Wills the ACL did not let through",
            stats.publishes_denied.get(),
        ),
        (
            "supermq_protocol_errors",
            "Connections closed for a malformed packet or a protocol error",
            stats.protocol_errors.get(),
        ),
        (
            "supermq_wills_published",
            "Wills published",
            stats.wills_published.get(),
        ),
    ];
    for (name, help, value) in counters {
        registry.register(name, help, ConstCounter::new(value));
    }
    let dropped = Family::<Labels, Counter>::default();
    for (reason, count) in stats.drops() {
        dropped
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(count);
    }
    if let Some(figures) = broker.store_figures() {
        let store = [
            (
                "supermq_store_commits",
                "Commits to the store (each one fsync, many writes)",
                &figures.commits,
            ),
            (
                "supermq_store_failures",
                "Commits to the store that failed (disk full, I/O error); acks are refused meanwhile",
                &figures.failures,
            ),
            (
                "supermq_store_dropped_writes",
                "Writes dropped while the store failed and its pending writes were at their bound",
                &figures.dropped,
            ),
        ];
        for (name, help, value) in store {
            let value = value.load(std::sync::atomic::Ordering::Relaxed);
            registry.register(name, help, ConstCounter::new(value));
        }
        registry.register(
            "supermq_store_failing",
            "1 while the store cannot be written to",
            gauge(usize::from(broker.store_failing())),
        );
    }
    let cluster = shared.cluster();
    if let Some(cluster) = &cluster {
        dropped
            .get_or_create(&vec![("reason", "route".to_string())])
            .inc_by(cluster.dropped());
    }
    registry.register(
        "supermq_messages_dropped",
        "Messages dropped, by reason",
        dropped,
    );
    if let Some(cluster) = &cluster {
        let routes = cluster.route_figures();
        registry.register(
            "supermq_routes",
            "Routes to peer nodes up",
            gauge(routes.len()),
        );
        type Figure = fn(&RouteFigures) -> u64;
        let per_peer: [(&str, &str, Figure); 7] = [
            (
                "supermq_route_in_messages",
                "Messages received from the peer",
                |r| r.in_msgs,
            ),
            (
                "supermq_route_out_messages",
                "Messages queued for the peer",
                |r| r.out_msgs,
            ),
            (
                "supermq_route_in_bytes",
                "Bytes received from the peer",
                |r| r.in_bytes,
            ),
            (
                "supermq_route_out_bytes",
                "Bytes written to the peer",
                |r| r.out_bytes,
            ),
            (
                "supermq_route_dropped",
                "Messages for the peer dropped",
                |r| r.dropped,
            ),
            (
                "supermq_route_paced_messages",
                "Messages whose local publisher was held back because the peer was behind",
                |r| r.paced,
            ),
            (
                "supermq_route_acks_held",
                "Times an acknowledgement to the peer was held back to pace it",
                |r| r.acks_held,
            ),
        ];
        for (name, help, figure) in per_peer {
            let family = Family::<Labels, Counter>::default();
            for route in &routes {
                family
                    .get_or_create(&vec![("peer", route.peer.clone())])
                    .inc_by(figure(route));
            }
            registry.register(name, help, family);
        }
        let pending = Family::<Labels, Gauge>::default();
        let rtt = Family::<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        for route in &routes {
            let peer = vec![("peer", route.peer.clone())];
            pending
                .get_or_create(&peer)
                .set(i64::try_from(route.pending_bytes).unwrap_or(i64::MAX));
            rtt.get_or_create(&peer).set(route.rtt_us as f64 / 1e6);
        }
        registry.register(
            "supermq_route_pending_bytes",
            "Bytes of messages queued for the peer, not yet written",
            pending,
        );
        registry.register(
            "supermq_route_rtt_seconds",
            "The route's last measured round trip (0: not measured yet)",
            rtt,
        );
    }
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut text, &registry);
    text
}
