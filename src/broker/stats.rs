//! Counters of what the broker did, and of what it refused or dropped.
//!
//! Every dropped message and every refused input increments one of these, so that an operator
//! can see losses; drops are summed up in the log every few seconds ([`DropReport`]), and
//! [`super::sys`] publishes the main figures under `$SYS/broker/`.
//!
//! The counters on the hot path are cheap by where they are counted: bytes once per read or
//! write system call, messages sent once per batch the writer fills, never per packet.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn add(&self, n: u64) {
        if n > 0 {
            self.0.fetch_add(n, Ordering::Relaxed);
        }
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The broker's counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections that completed CONNECT.
    pub connections_accepted: Counter,
    /// CONNECTs refused (limit, bad client id, unsupported version, ...).
    pub connections_refused: Counter,
    /// Sockets closed before CONNECT to make room for newer ones
    /// (`limits.max_pending_connections`).
    pub pending_evicted: Counter,
    /// Sockets refused at accept because their address had `limits.max_connections_per_ip`
    /// open.
    pub refused_per_ip_count: Counter,
    /// Sockets refused at accept because their address connected faster than
    /// `limits.max_connect_rate_per_ip`.
    pub refused_per_ip_rate: Counter,
    /// PUBLISH packets received from clients.
    pub messages_received: Counter,
    /// PUBLISH packets written to clients, sent again (DUP) included and `$SYS` updates not:
    /// those come by themselves, and an idle broker's figures must stay idle.
    pub messages_sent: Counter,
    /// Bytes read from connected clients' sockets, their CONNECT included.
    pub bytes_received: Counter,
    /// Bytes written to connected clients' sockets, but for the PUBLISH packets of `$SYS`
    /// updates (as `messages_sent`).
    pub bytes_sent: Counter,
    /// Messages queued to a session (one per subscriber).
    pub messages_routed: Counter,
    /// Messages dropped because a session's queue was full and nothing could wait for room:
    /// an offline session, or a message of the broker's own (Will, group hand-over,
    /// retained message on subscribe).
    pub dropped_queue_full: Counter,
    /// Messages dropped for a session declared slow (`limits.slow_consumer_policy`).
    pub dropped_slow_consumer: Counter,
    /// Messages from another node dropped because the route's budget for messages parked
    /// in full queues was used up (`cluster.route_backlog_bytes`).
    pub dropped_route_backlog: Counter,
    /// Times a session was declared slow.
    pub slow_consumers: Counter,
    /// Subscriptions whose matching retained messages did not all fit in the subscriber's
    /// queue (the rest were not sent).
    pub retained_not_sent: Counter,
    /// Messages dropped because their expiry interval ran out while queued.
    pub dropped_expired: Counter,
    /// Messages dropped because they exceed the receiving client's Maximum Packet Size.
    pub dropped_too_large: Counter,
    /// Group messages dropped because no member of the group was left, here or elsewhere.
    pub dropped_no_group_member: Counter,
    /// PUBLISH packets refused (topic over the limits, `$SYS`, ...).
    pub publishes_refused: Counter,
    /// CONNECTs refused for a bad user name or password, or for having none.
    pub auth_failures: Counter,
    /// PUBLISH packets and Wills the ACL did not let through (`auth.acl_file`).
    pub publishes_denied: Counter,
    /// Subscriptions the ACL refused.
    pub subscriptions_denied: Counter,
    /// Deliveries the ACL kept from a subscriber (a rule changed since it subscribed, or a
    /// deny covers part of its filter), retained messages on subscribe included.
    pub deliveries_denied: Counter,
    /// Connections closed for a malformed packet or a protocol error.
    pub protocol_errors: Counter,
    /// Wills published.
    pub wills_published: Counter,
    /// Sessions taken over from another node, and handed over to one
    /// ([`super::handover`]).
    pub sessions_moved_in: Counter,
    pub sessions_moved_out: Counter,
    /// Messages of a session moved here that did not fit this node's bounds or limits.
    pub dropped_handover: Counter,
}

impl Stats {
    /// Every count of dropped messages, by reason.
    pub fn drops(&self) -> [(&'static str, u64); 7] {
        [
            ("queue_full", self.dropped_queue_full.get()),
            ("slow_consumer", self.dropped_slow_consumer.get()),
            ("route_backlog", self.dropped_route_backlog.get()),
            ("expired", self.dropped_expired.get()),
            ("too_large", self.dropped_too_large.get()),
            ("no_group_member", self.dropped_no_group_member.get()),
            ("handover", self.dropped_handover.get()),
        ]
    }
}

/// Says in the log, now and then, how many messages were dropped since it last said, by
/// reason: most drops are logged one by one only at debug level, as a flood of them would
/// flood the log, so this is what tells an operator that something is being lost.
#[derive(Default)]
pub struct DropReport {
    last: [u64; 7],
}

impl DropReport {
    /// Logs the drops since the last call, if there were any.
    pub fn report(&mut self, stats: &Stats) {
        let now = stats.drops();
        let since: Vec<String> = now
            .iter()
            .zip(self.last)
            .filter(|((_, count), last)| count > last)
            .map(|((reason, count), last)| format!("{reason}={}", count - last))
            .collect();
        self.last = now.map(|(_, count)| count);
        if !since.is_empty() {
            tracing::info!(dropped = %since.join(" "), "messages dropped since the last report");
        }
    }
}
