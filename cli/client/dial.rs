//! Dialling a broker: name resolution, TCP (optionally from a chosen source address), then TLS
//! and/or the WebSocket upgrade, ending in the same byte stream the broker side uses.
//!
//! Each step fails with its own [`ClientError`] variant, so the tools can tell "nothing listens
//! there" from "no such host" from "the certificate is not trusted".

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

use supermq::transport::{self, BoxStream, TransportError};

use super::ClientError;

/// Where a broker is and how to speak to it.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// TLS settings when the connection is encrypted (MQTT over TLS, or `wss`).
    pub tls: Option<Arc<ClientConfig>>,
    /// The WebSocket path when MQTT goes over WebSocket (`/mqtt` for supermq).
    pub websocket: Option<String>,
    /// How long the TCP connection, TLS and WebSocket handshakes may take together.
    pub connect_timeout: Duration,
}

impl Endpoint {
    /// A plain TCP endpoint with a 10-second connect timeout.
    pub fn tcp(host: impl Into<String>, port: u16) -> Endpoint {
        Endpoint {
            host: host.into(),
            port,
            tls: None,
            websocket: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// `host:port` (IPv6 literals in brackets), for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The WebSocket URL of the endpoint, when it uses WebSocket.
    fn url(&self, path: &str) -> String {
        let scheme = if self.tls.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}{path}", self.address())
    }
}

/// Opens a byte stream to `endpoint`, from `source` (any port) when given.
pub async fn dial(endpoint: &Endpoint, source: Option<IpAddr>) -> Result<BoxStream, ClientError> {
    let timed_out = || ClientError::Unreachable {
        addr: endpoint.address(),
        error: io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no answer within {} s", endpoint.connect_timeout.as_secs()),
        ),
    };
    tokio::time::timeout(endpoint.connect_timeout, dial_steps(endpoint, source))
        .await
        .unwrap_or_else(|_| Err(timed_out()))
}

async fn dial_steps(endpoint: &Endpoint, source: Option<IpAddr>) -> Result<BoxStream, ClientError> {
    let tcp = connect_tcp(endpoint, source).await?;
    let stream: BoxStream = match &endpoint.tls {
        Some(config) => {
            let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| {
                ClientError::TlsSetup(format!("\"{}\" is not a valid host name", endpoint.host))
            })?;
            let tls = TlsConnector::from(Arc::clone(config))
                .connect(name, tcp)
                .await
                .map_err(|error| ClientError::TlsHandshake {
                    addr: endpoint.address(),
                    error,
                })?;
            Box::new(tls)
        }
        None => Box::new(tcp),
    };
    match &endpoint.websocket {
        Some(path) => {
            let url = endpoint.url(path);
            transport::websocket_connect(stream, &url)
                .await
                .map_err(|error| ClientError::WebSocket {
                    error: match error {
                        TransportError::WebSocketHandshake(inner) => inner.to_string(),
                        other => other.to_string(),
                    },
                    url,
                })
        }
        None => Ok(stream),
    }
}

/// Resolves the host and connects to the first address that accepts.
async fn connect_tcp(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
) -> Result<TcpStream, ClientError> {
    let resolve_error = |detail: String| ClientError::Resolve {
        host: endpoint.host.clone(),
        detail,
    };
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|error| resolve_error(error.to_string()))?
        // A source address only works with a destination of the same family.
        .filter(|addr| source.is_none_or(|ip| ip.is_ipv4() == addr.is_ipv4()))
        .collect();
    let mut last = resolve_error("no usable address".to_string());
    for addr in addrs {
        match connect_addr(addr, source).await {
            Ok(stream) => {
                // Latency matters more than packet count for MQTT: acks must not wait.
                stream.set_nodelay(true).map_err(ClientError::Io)?;
                return Ok(stream);
            }
            Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
                last = ClientError::Refused {
                    addr: addr.to_string(),
                }
            }
            Err(error) => {
                last = ClientError::Unreachable {
                    addr: addr.to_string(),
                    error,
                }
            }
        }
    }
    Err(last)
}

async fn connect_addr(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}
