//! Hostile tests: the real `supermq` binary, attacked over real sockets the way a hostile or
//! unlucky client or peer would, must keep serving everyone else with bounded memory (issue 10).
//!
//! Every test starts its own broker process ([`broker::RealBroker`], a TOML configuration in a
//! temporary directory, free loopback ports) and, before the attack, a well-behaved pub/sub
//! pair on a topic of its own ([`watch::Watch`]). After the attack — with the attacker still
//! connected where that is the point — every test asserts the same three things:
//!
//! - (a) **alive**: the process has not exited and a new connection still gets a CONNACK;
//! - (b) **others keep working**: the pair still moves [`watch::PAIR_MESSAGES`] QoS 1 messages
//!   end to end, in order, at most [`watch::PAIR_SLOWDOWN`] times slower than before the attack
//!   (or within [`watch::PAIR_FLOOR`], below which a difference is the scheduling noise of a
//!   busy 2-core machine, not the attack);
//! - (c) **bounded memory**: the broker's resident memory (VmRSS, or its peak VmHWM where a
//!   transient spike is the danger) grew by less than a bound each test states, with why.
//!
//! On top of that each test asserts what its attack must not achieve:
//!
//! - [`slow_consumer`]: a subscriber that takes one message every 1.5 s does not hold back a
//!   fast one, on its node or behind a route: the fast one has all its messages within 5 s of
//!   the last PUBACK;
//! - [`subscribe`]: one SUBSCRIBE of 200,000 `#` filters with 200 retained messages is answered
//!   (a SUBACK) at the cost of the session's own bounds;
//! - [`sessions`]: abandoned persistent sessions stop at `limits.max_sessions` (CONNACK 0x97 /
//!   0x03) while an existing session can still be resumed, and reconnect churn with a session
//!   expiry leaves nothing behind per reconnect;
//! - [`queues`]: a subscriber that never reads costs at most `limits.max_queued_bytes`;
//! - [`connections`]: silent sockets past `limits.max_pending_connections` cost bounded
//!   descriptors and do not lock out a client that sends CONNECT; a socket that sends part of
//!   a CONNECT holds at most about twice `limits.max_connect_size`, over TCP and WebSocket
//!   alike, and a TLS handshake left hanging a bounded amount; a WebSocket message larger than
//!   `max_packet_size` closes the connection; a flood of refused connections writes a log line
//!   a second per kind, not one per connection;
//! - [`route`]: an INTEREST frame of 65,535 `/` after a valid handshake, and a handshake frame
//!   claiming 1 GiB, do not crash the node.
//!
//! Each bound is a constant next to its test, with the reason for its value.

#[path = "../common/mod.rs"]
mod common;

mod attack;
mod broker;
mod watch;

mod connections;
mod queues;
mod route;
mod sessions;
mod slow_consumer;
mod subscribe;

/// One mebibyte, for memory bounds.
const MIB: u64 = 1 << 20;
