//! Admission: which sockets the broker takes on, and how it counts them from accept to close.
//!
//! A listener's socket goes through [`Broker::admit`] before anything else (before any TLS or
//! WebSocket work), which counts it and gives two things:
//! - a [`Counted`], held for the socket's whole life: it counts the socket among the open ones
//!   (what shutdown waits for), among its address's (`limits.max_connections_per_ip`) and,
//!   once its CONNECT is accepted, among the connected clients (`limits.max_connections`);
//! - an [`Arrival`], held only until CONNECT is answered: the socket's place among the pending
//!   ones ([`super::pending`]), its deadline (`limits.connect_timeout_secs` from accept, for
//!   the handshake and the CONNECT together) and, if a per-address limit refused it
//!   ([`super::per_ip`]), the refusal its CONNECT will get.
//!
//! So silent sockets are bounded on their own, and never take a connected client's place.
//!
//! A socket a per-address limit refused is not pending in that sense: the limit is there to
//! spare the broker a flood from one address, so the socket takes none of the places other
//! addresses' sockets need. On TCP it may still be told why (its CONNECT is read and answered
//! with a refusing CONNACK), but only within [`REFUSED_DEADLINE`] and among at most
//! [`MAX_REFUSED_WAITING`] such sockets, which never dismiss one another; past that a refused
//! socket is closed at once, unanswered.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::Limits;
use crate::protocol::reason;
use crate::transport::{ReadBudget, TransportError};

use super::Broker;
use super::connect::Refusal;
use super::log_limit::LogLimit;
use super::pending::{PendingSet, Place};
use super::per_ip::{Exceeded, PerIp};

/// How long a socket refused by a per-address limit has, from accept, to send the CONNECT
/// that its refusal answers: a client sends CONNECT within a round trip of connecting, and a
/// silent one is owed no wait.
const REFUSED_DEADLINE: Duration = Duration::from_secs(1);

/// What a TLS or WebSocket socket may send before its CONNECT is accepted besides the CONNECT
/// (`limits.max_connect_size`): its handshakes, framing and read-ahead. 64 KiB is what rustls
/// allows a TLS handshake message and tungstenite an HTTP upgrade request, and dozens of times
/// what a usual client sends for both.
const HANDSHAKE_BYTES: usize = 64 * 1024;

/// Sockets refused by a per-address limit that wait for their CONNECT at once. Enough for the
/// clients of a busy address to learn why they were refused, few enough that a flood of them
/// costs little: at most this many descriptors and CONNECT buffers.
const MAX_REFUSED_WAITING: usize = 256;

/// The broker's counts and tables of sockets.
pub(super) struct Admission {
    /// Sockets open, in any phase (handshake, waiting for CONNECT, connected, closing).
    open: AtomicUsize,
    /// Sockets whose CONNECT was accepted and that are still open.
    connected: AtomicUsize,
    pending: Arc<PendingSet>,
    /// The sockets a per-address limit refused that wait for their CONNECT, to answer it.
    refused_waiting: Arc<PendingSet>,
    /// `None` when both per-address limits are off.
    per_ip: Option<PerIp>,
    /// The connection phase's log lines.
    pub logs: Logs,
}

/// The log lines of the connection phase, which anyone who can connect can repeat at will:
/// each kind is let through at most once a second ([`LogLimit`]).
#[derive(Default)]
pub(super) struct Logs {
    /// Pending sockets closed to make room for newer ones.
    pub evicted: LogLimit,
    /// Sockets refused by a per-address limit.
    pub refused_per_ip: LogLimit,
    /// TLS and WebSocket handshakes that failed or timed out.
    pub handshake_failed: LogLimit,
    /// CONNECTs refused with a reason: a limit, the protocol version, the client id, no room
    /// for a session.
    pub connect_refused: LogLimit,
    /// Sockets closed for what they sent instead of a CONNECT the broker could take: another
    /// packet, a malformed one, too many bytes.
    pub connect_invalid: LogLimit,
    /// Sockets that sent no CONNECT in time.
    pub connect_timed_out: LogLimit,
}

impl Admission {
    pub fn new(limits: &Limits) -> Self {
        Admission {
            open: AtomicUsize::new(0),
            connected: AtomicUsize::new(0),
            pending: PendingSet::new(limits.max_pending_connections),
            refused_waiting: PendingSet::new(MAX_REFUSED_WAITING),
            per_ip: PerIp::new(limits),
            logs: Logs::default(),
        }
    }
}

impl Broker {
    /// Takes on a socket a listener accepted from `peer`. `answerable` says whether a socket
    /// that a per-address limit refuses may still read its CONNECT and be answered with a
    /// refusing CONNACK (plain TCP); otherwise (TLS, WebSocket) it gets `None` and is to be
    /// closed at once, as the handshake is the very work the limit is there to spare. A
    /// refused socket also gets `None` when 256 refused ones (`MAX_REFUSED_WAITING`) wait
    /// already.
    pub fn admit(
        self: &Arc<Self>,
        peer: SocketAddr,
        answerable: bool,
    ) -> Option<(Counted, Box<Arrival>)> {
        let ip = peer.ip().to_canonical();
        let mut counted_ip = None;
        let mut refusal = None;
        if let Some(per_ip) = &self.admission.per_ip {
            match per_ip.admit(ip, Instant::now()) {
                Ok(()) => counted_ip = Some(ip),
                Err(exceeded) => {
                    self.refused(ip, exceeded);
                    refusal = Some(refusal_for(exceeded));
                }
            }
        }
        let (place, wait) = match refusal {
            None => (
                self.enter_pending(),
                Duration::from_secs(self.limits.connect_timeout_secs),
            ),
            Some(_) if answerable => (
                self.admission.refused_waiting.try_enter()?,
                REFUSED_DEADLINE,
            ),
            Some(_) => return None,
        };
        self.admission.open.fetch_add(1, Ordering::Relaxed);
        let counted = Counted {
            broker: Arc::clone(self),
            ip: counted_ip,
            connected: false,
        };
        let arrival = Arrival {
            broker: Arc::clone(self),
            peer,
            deadline: tokio::time::Instant::now() + wait,
            refusal,
            place,
            max_connect: self.max_connect_size(),
            budget: None,
            shutdown: self.shutdown.subscribe(),
            certificate_name: None,
        };
        Some((counted, Box::new(arrival)))
    }

    /// A pending place for a socket that no limit refused, made by closing the oldest pending
    /// socket if need be.
    fn enter_pending(&self) -> Place {
        let (place, evicted) = self.admission.pending.enter();
        if evicted {
            self.stats.pending_evicted.inc();
            if let Some(held_back) = self.admission.logs.evicted.allow() {
                tracing::warn!(
                    held_back,
                    "limits.max_pending_connections reached: closed the oldest connection \
                     that had not completed CONNECT"
                );
            }
        }
        place
    }

    /// Open client sockets, in any phase: in a TLS or WebSocket handshake, waiting for
    /// CONNECT, connected, or closing. Shutdown waits for this to reach zero.
    pub fn connection_count(&self) -> usize {
        self.admission.open.load(Ordering::Relaxed)
    }

    /// Connections whose CONNECT was accepted and that are still open: what
    /// `limits.max_connections` bounds.
    pub fn connected_count(&self) -> usize {
        self.admission.connected.load(Ordering::Relaxed)
    }

    /// The largest CONNECT taken: `limits.max_connect_size`, or `limits.max_packet_size` if
    /// that is smaller.
    pub(super) fn max_connect_size(&self) -> u32 {
        self.limits
            .max_connect_size
            .min(self.limits.max_packet_size)
    }

    /// Sockets that have not completed CONNECT: what `limits.max_pending_connections` bounds.
    pub fn pending_count(&self) -> usize {
        self.admission.pending.len()
    }

    fn refused(&self, ip: IpAddr, exceeded: Exceeded) {
        let key = match exceeded {
            Exceeded::Count => {
                self.stats.refused_per_ip_count.inc();
                "limits.max_connections_per_ip"
            }
            Exceeded::Rate => {
                self.stats.refused_per_ip_rate.inc();
                "limits.max_connect_rate_per_ip"
            }
        };
        if let Some(held_back) = self.admission.logs.refused_per_ip.allow() {
            tracing::warn!(%ip, limit = key, held_back, "connection refused: per-address limit");
        }
    }
}

/// The CONNACK a socket refused by a per-address limit gets for its CONNECT.
fn refusal_for(exceeded: Exceeded) -> Refusal {
    match exceeded {
        Exceeded::Count => Refusal {
            code: reason::QUOTA_EXCEEDED,
            why: "too many connections from this address (limits.max_connections_per_ip)",
        },
        Exceeded::Rate => Refusal {
            code: reason::CONNECTION_RATE_EXCEEDED,
            why: "connections from this address too frequent (limits.max_connect_rate_per_ip)",
        },
    }
}

/// A socket's place in the broker's counts, from accept to close (see the module doc).
pub struct Counted {
    broker: Arc<Broker>,
    /// The address it counts for, when the per-address limits are on and counted it.
    ip: Option<IpAddr>,
    /// Whether it counts among the connected clients.
    connected: bool,
}

impl Counted {
    pub(super) fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Counts the socket among the connected clients if `limits.max_connections` leaves room;
    /// false if it does not.
    pub(super) fn connect(&mut self) -> bool {
        let max = self.broker.limits.max_connections;
        self.connected = self
            .broker
            .admission
            .connected
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok();
        self.connected
    }

    /// Gives the connected client's place back (its CONNECT was refused after all).
    pub(super) fn disconnect(&mut self) {
        if std::mem::take(&mut self.connected) {
            self.broker
                .admission
                .connected
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.disconnect();
        let admission = &self.broker.admission;
        admission.open.fetch_sub(1, Ordering::Relaxed);
        if let (Some(ip), Some(per_ip)) = (self.ip, &admission.per_ip) {
            per_ip.release(ip, Instant::now());
        }
    }
}

/// A socket until its CONNECT is answered (see the module doc). Dropping it gives its place
/// back.
pub struct Arrival {
    broker: Arc<Broker>,
    peer: SocketAddr,
    deadline: tokio::time::Instant,
    refusal: Option<Refusal>,
    place: Place,
    /// The largest CONNECT taken ([`Broker::max_connect_size`]).
    max_connect: u32,
    /// What a TLS or WebSocket socket may still send, once [`Arrival::read_budget`] made it.
    budget: Option<ReadBudget>,
    shutdown: watch::Receiver<bool>,
    /// The subject CN of the client's TLS certificate, if it presented one.
    certificate_name: Option<String>,
}

impl Arrival {
    /// Records the name in the certificate the client presented in its TLS handshake.
    pub fn set_certificate_name(&mut self, name: Option<String>) {
        self.certificate_name = name;
    }

    /// The name in the client's certificate, taken for its authentication.
    pub fn take_certificate_name(&mut self) -> Option<String> {
        self.certificate_name.take()
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// When the handshake and CONNECT must be done: `limits.connect_timeout_secs` after accept
    /// (a second, `REFUSED_DEADLINE`, for a socket a per-address limit refused).
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    /// The bytes the socket may send through its TLS and WebSocket layers until its CONNECT
    /// is accepted (then it is lifted): the largest CONNECT and 64 KiB (`HANDSHAKE_BYTES`).
    /// So the layers under MQTT, which buffer what they read until it makes a whole record or
    /// message, hold no more for a socket that has proved nothing.
    pub fn read_budget(&mut self) -> ReadBudget {
        let connect = usize::try_from(self.max_connect).unwrap_or(usize::MAX);
        let budget = ReadBudget::new(connect.saturating_add(HANDSHAKE_BYTES));
        self.budget = Some(budget.clone());
        budget
    }

    /// The socket's CONNECT was accepted: it may send without the bound of its read budget.
    pub(super) fn accepted(&self) {
        if let Some(budget) = &self.budget {
            budget.lift();
        }
    }

    /// Its TLS or WebSocket handshake failed: logged, at most once a second.
    pub fn handshake_failed(&self, error: &TransportError) {
        if let Some(held_back) = self.broker.admission.logs.handshake_failed.allow() {
            tracing::info!(peer = %self.peer, %error, held_back, "handshake failed");
        }
    }

    /// Its TLS or WebSocket handshake did not finish by the deadline: logged, at most once a
    /// second (with the failed ones).
    pub fn handshake_timed_out(&self) {
        if let Some(held_back) = self.broker.admission.logs.handshake_failed.allow() {
            tracing::info!(peer = %self.peer, held_back, "handshake timed out");
        }
    }

    /// The refusal a per-address limit decided at accept, taken once.
    pub(super) fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
    }

    /// Completes when the socket must close without waiting any longer: it is the oldest
    /// pending socket and room was needed, or the broker is shutting down. It has no session
    /// or Will to look after yet. Cancel safe.
    pub async fn dismissed(&mut self) {
        tokio::select! {
            () = self.place.dismissed() => {}
            _ = self.shutdown.wait_for(|down| *down) => {}
        }
    }
}
