//! Binding and accepting: one [`Listener`] per configured address, whatever its [`Kind`].
//!
//! Every kind listens on TCP; what differs is the handshake that turns the accepted socket into
//! a byte stream. That handshake is deferred to [`Pending::handshake`] so the accept loop only
//! ever waits for the kernel, never for a client.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::read_budget::{Budgeted, ReadBudget};
use super::{Boxed, Kind, TransportError, websocket};

/// Connections the kernel may hold completed for a listener before the broker accepts them
/// (capped by `net.core.somaxconn`). A storm of connecting clients — a restart, a network
/// flap — must find room: past a full queue Linux drops the handshake's last ACK, and a client
/// that sends nothing first is then connected on its side and forgotten on ours. The default
/// of 128 did that to one socket of 300 opened at once in about one run in twenty
/// (tests/hostile/connections.rs, `refused_connections_do_not_flood_the_log`).
const BACKLOG: u32 = 4096;

/// A listening socket on `addr`, address reuse on as `TcpListener::bind` sets it.
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// A bound listener of one [`Kind`].
pub struct Listener {
    listener: TcpListener,
    local_addr: SocketAddr,
    upgrade: Upgrade,
}

/// An accepted socket whose TLS and/or WebSocket handshake has not run yet.
///
/// Run [`Pending::handshake`] in the connection's own task, under its connect timeout: a client
/// that never finishes its handshake then costs one timer, not the accept loop.
pub struct Pending {
    stream: TcpStream,
    upgrade: Upgrade,
}

/// What runs on top of the TCP socket. Holding the TLS acceptor inside the variants that need it
/// means a TLS kind without a TLS configuration cannot exist past [`Listener::bind`].
#[derive(Clone)]
enum Upgrade {
    Tcp,
    Tls(TlsAcceptor),
    Ws,
    Wss(TlsAcceptor),
}

impl Upgrade {
    fn kind(&self) -> Kind {
        match self {
            Upgrade::Tcp => Kind::Tcp,
            Upgrade::Tls(_) => Kind::Tls,
            Upgrade::Ws => Kind::Ws,
            Upgrade::Wss(_) => Kind::Wss,
        }
    }
}

impl Listener {
    /// Binds `addr` for `kind`. `tls` is required for [`Kind::Tls`] and [`Kind::Wss`] and
    /// ignored for the others, so one configuration can be passed to every listener.
    ///
    /// Errors name the kind, the address and the OS error ("Address already in use").
    pub async fn bind(
        kind: Kind,
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Result<Listener, TransportError> {
        let upgrade = match (kind, tls) {
            (Kind::Tcp, _) => Upgrade::Tcp,
            (Kind::Ws, _) => Upgrade::Ws,
            (Kind::Tls, Some(config)) => Upgrade::Tls(TlsAcceptor::from(config)),
            (Kind::Wss, Some(config)) => Upgrade::Wss(TlsAcceptor::from(config)),
            (Kind::Tls | Kind::Wss, None) => {
                return Err(TransportError::TlsConfigMissing { kind, addr });
            }
        };
        let bind_error = |error| TransportError::Bind { kind, addr, error };
        let listener = listen(addr).map_err(bind_error)?;
        // With port 0 the kernel picks the port; remember the real one for logs and tests.
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(Listener {
            listener,
            local_addr,
            upgrade,
        })
    }

    /// The kind of connections this listener accepts.
    pub fn kind(&self) -> Kind {
        self.upgrade.kind()
    }

    /// The bound address, with the real port when bound to port 0.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts the next TCP connection, without any handshake. Cancel safe.
    ///
    /// Errors come from the kernel's accept: most (too many open files, a connection reset
    /// before it was accepted) are transient, so the caller should log, pause briefly and go
    /// on accepting rather than stop the listener.
    pub async fn accept(&self) -> io::Result<(Pending, SocketAddr)> {
        let (stream, peer) = self.listener.accept().await?;
        // MQTT packets are small and latency matters more than segment count; the broker
        // batches its own writes. Failing to set it only costs latency, so it is not fatal.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
        }
        let pending = Pending {
            stream,
            upgrade: self.upgrade.clone(),
        };
        Ok((pending, peer))
    }
}

impl Pending {
    /// The stream itself if it is plain TCP, which needs no handshake; otherwise the pending
    /// connection back, for [`Pending::handshake`].
    pub fn into_plain(self) -> Result<TcpStream, Pending> {
        match self.upgrade {
            Upgrade::Tcp => Ok(self.stream),
            _ => Err(self),
        }
    }

    /// Runs the TLS and/or WebSocket handshake and returns the connection's byte stream, boxed.
    /// For plain TCP this is immediate. Has no timeout of its own: wrap it in the connect
    /// timeout.
    ///
    /// `max_message` bounds the WebSocket messages and frames the client may send (the
    /// broker's `limits.max_packet_size`; a larger one fails the read with
    /// [`super::MessageTooLarge`]); other kinds ignore it. Reads from the socket, from the
    /// handshake on, take from `budget` until the broker lifts it ([`super::ReadBudget`]).
    ///
    /// Also returns the subject CN of the client's TLS certificate, if it presented one (it
    /// was verified against `tls.client_ca`, or the handshake would have failed).
    pub async fn handshake(
        self,
        max_message: usize,
        budget: ReadBudget,
    ) -> Result<(Boxed, Option<String>), TransportError> {
        let stream = Budgeted::new(self.stream, budget);
        let (stream, name): (super::BoxStream, _) = match self.upgrade {
            Upgrade::Tcp => (Box::new(stream), None),
            Upgrade::Tls(acceptor) => {
                let tls = tls_handshake(&acceptor, stream).await?;
                let name = certificate_name(&tls);
                (Box::new(tls), name)
            }
            Upgrade::Ws => (
                Box::new(websocket::accept(stream, max_message).await?),
                None,
            ),
            Upgrade::Wss(acceptor) => {
                let tls = tls_handshake(&acceptor, stream).await?;
                let name = certificate_name(&tls);
                (Box::new(websocket::accept(tls, max_message).await?), name)
            }
        };
        Ok((Boxed(stream), name))
    }
}

async fn tls_handshake<S: AsyncRead + AsyncWrite + Unpin>(
    acceptor: &TlsAcceptor,
    stream: S,
) -> Result<tokio_rustls::server::TlsStream<S>, TransportError> {
    acceptor
        .accept(stream)
        .await
        .map_err(TransportError::TlsHandshake)
}

/// The subject CN of the certificate the client presented, if any.
fn certificate_name<S>(tls: &tokio_rustls::server::TlsStream<S>) -> Option<String> {
    let chain = tls.get_ref().1.peer_certificates()?;
    super::tls::subject_common_name(chain.first()?)
}

// Manual impls because the TLS acceptor is not `Debug`; the kind and addresses are what a log
// line needs anyway.
impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("kind", &self.kind())
            .field("local_addr", &self.local_addr)
            .finish()
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("kind", &self.upgrade.kind())
            .field("peer", &self.stream.peer_addr().ok())
            .finish()
    }
}
