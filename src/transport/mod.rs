//! Listeners: TCP, TLS, WebSocket and secure WebSocket.
//!
//! Each listener accepts sockets and turns them into a plain byte stream, so one connection
//! handler in the broker serves all four transports ([`Duplex`]: a stream it can read and write
//! at once). Accepting is split in two steps so that a slow or hostile client cannot stall the
//! accept loop:
//!
//! 1. [`Listener::accept`] only accepts the TCP socket and returns a [`Pending`] connection;
//! 2. [`Pending::handshake`] runs the TLS and/or WebSocket handshake and boxes the result
//!    ([`Boxed`]). The broker calls it in the connection's own task, by the deadline that also
//!    bounds the wait for CONNECT (`limits.connect_timeout_secs` from accept), and with a
//!    [`ReadBudget`] that bounds what the client can make it hold until its CONNECT is
//!    accepted. Plain TCP needs neither: [`Pending::into_plain`] gives the [`TcpStream`]
//!    itself, which the broker serves unboxed (an idle connection costs less).
//!
//! - `listener`: binding, accepting, and the per-kind handshake;
//! - `read_budget`: the bound on bytes read from a TLS or WebSocket socket until it is lifted;
//! - `tls`: loading PEM certificates and keys into a rustls server configuration;
//! - `websocket`: the HTTP upgrade on `/mqtt` and the adapter from binary frames to bytes, with
//!   messages bounded by the broker's maximum packet size ([`MessageTooLarge`]); its client
//!   side ([`websocket_connect`]) serves the client tools.

mod listener;
mod read_budget;
mod tls;
mod websocket;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp;

pub use listener::{Listener, Pending};
pub use read_budget::{BudgetSpent, ReadBudget};
pub use tls::load_tls;
pub(crate) use tls::{file_error, read_certificates, read_private_key, read_roots};
pub use websocket::{MessageTooLarge, connect as websocket_connect};

/// A connection's byte stream, whatever the transport underneath.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A TLS or WebSocket stream (or any stream, for the client tools), boxed.
pub type BoxStream = Box<dyn Stream>;

/// A TLS or WebSocket stream, as [`Pending::handshake`] gives it. (A type of its own: the
/// compiler cannot prove a boxed trait object's halves `Send` for every lifetime.) Plain TCP
/// is served as the [`TcpStream`] itself: no box, and halves that need no lock.
pub struct Boxed(pub BoxStream);

/// A byte stream that one task reads and writes at the same time, through two halves that
/// borrow it. Plain TCP splits for free; other streams share a lock between the halves.
pub trait Duplex: Sized + Send + 'static {
    type Reader<'a>: AsyncRead + Unpin + Send
    where
        Self: 'a;
    type Writer<'a>: AsyncWrite + Unpin + Send
    where
        Self: 'a;

    /// Whether [`Duplex::into_tcp`] gives the socket: only a stream that is a socket and
    /// nothing more can rest without its task while idle (the broker's `idle` module).
    const RESTS: bool;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>);

    /// The plain TCP socket this stream is, or the stream back.
    fn into_tcp(self) -> Result<TcpStream, Self>;
}

impl Duplex for TcpStream {
    type Reader<'a> = tcp::ReadHalf<'a>;
    type Writer<'a> = tcp::WriteHalf<'a>;

    const RESTS: bool = true;

    fn halves(&mut self) -> (tcp::ReadHalf<'_>, tcp::WriteHalf<'_>) {
        self.split()
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Ok(self)
    }
}

impl Duplex for Boxed {
    type Reader<'a> = ReadHalf<&'a mut BoxStream>;
    type Writer<'a> = WriteHalf<&'a mut BoxStream>;

    /// TLS and WebSocket keep state of their own above the socket.
    const RESTS: bool = false;

    fn halves(&mut self) -> (Self::Reader<'_>, Self::Writer<'_>) {
        tokio::io::split(&mut self.0)
    }

    fn into_tcp(self) -> Result<TcpStream, Self> {
        Err(self)
    }
}

/// The four ways a client can reach the broker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// MQTT over plain TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket, on the path `/mqtt`.
    Ws,
    /// MQTT over WebSocket over TLS, on the path `/mqtt`.
    Wss,
}

impl Kind {
    /// The short name used in logs and in the configuration (`[mqtt] tcp`, `tls`, `ws`, `wss`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tcp => "tcp",
            Kind::Tls => "tls",
            Kind::Ws => "ws",
            Kind::Wss => "wss",
        }
    }

    /// Whether listeners of this kind need a TLS configuration.
    pub fn needs_tls(self) -> bool {
        matches!(self, Kind::Tls | Kind::Wss)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a listener could not start, a TLS configuration could not load, or a handshake failed.
///
/// Each message is one self-contained line (the cause is part of it, not a separate
/// [`std::error::Error::source`]), ready to print at start-up or to log per connection.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address could not be bound (in use, not local, no permission…).
    #[error("cannot listen on {addr} ({kind}): {error}")]
    Bind {
        kind: Kind,
        addr: SocketAddr,
        error: io::Error,
    },
    /// A `tls` or `wss` listener was bound without a TLS configuration.
    #[error("the {kind} listener on {addr} needs a TLS certificate and key")]
    TlsConfigMissing { kind: Kind, addr: SocketAddr },
    /// A certificate, key or CA file is unusable; `problem` says why.
    #[error("{}: {problem}", path.display())]
    TlsFile { path: PathBuf, problem: String },
    /// rustls refused the configuration for a reason that belongs to no single file.
    #[error("TLS configuration: {0}")]
    Tls(rustls::Error),
    /// The client's TLS handshake failed (bad certificate, wrong protocol, timeout on its side…).
    #[error("TLS handshake failed: {0}")]
    TlsHandshake(io::Error),
    /// A WebSocket upgrade failed (wrong path, not a WebSocket request…), as server or client. Boxed
    /// because tungstenite's error is large and this type travels in every `Result`.
    #[error("WebSocket handshake failed: {0}")]
    WebSocketHandshake(Box<tokio_tungstenite::tungstenite::Error>),
}
