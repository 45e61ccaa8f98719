//! Route TLS with mutual authentication (`cluster.tls_cert`, `cluster.tls_key`,
//! `cluster.tls_ca`).
//!
//! When the three keys are set, every route is TLS both ways: the accepting node requires the
//! dialler's certificate and the dialler requires the acceptor's, and each must chain to the
//! cluster's CA. Only then does the route handshake ([`super::handshake`]) run, inside the
//! encrypted stream, so the secret's proof, the INFO frames (advertised address, peer list)
//! and all traffic after them are hidden from the network. A stranger on the route port gets
//! as far as the acceptor's certificate (TLS 1.3 sends it before asking for the client's) and
//! no further: nothing of the route protocol. A dialler sends its own certificate only to a
//! peer whose certificate it has verified.
//!
//! **What the certificate proves: membership, not a host name.** Nodes dial each other by
//! whatever `host:port` they were configured with or told by a peer: IP addresses, Docker
//! service names, aliases of a private network. A certificate would need every one of them as
//! a subject name, and a node's address changes more often than its membership. So the dialler
//! verifies that the acceptor's certificate chains to `cluster.tls_ca` (validity dates and the
//! `serverAuth` extended key usage included) and does **not** compare its names with the
//! address dialled; the acceptor does the same with the dialler's certificate
//! (`clientAuth`). A node certificate therefore needs both extended key usages. This is only
//! sound when `cluster.tls_ca` is the cluster's own CA, which signs node certificates and
//! nothing else: any certificate it signed admits its holder to the route layer (who must
//! then still prove `cluster.secret`). Never point it at a public or company-wide CA. No
//! revocation list is checked: a node whose certificate has not expired is shut out by
//! changing the secret (or the CA).
//!
//! Certificate and key files are read once, at start-up, with the PEM loading of the MQTT TLS
//! listeners ([`crate::transport`]), so a bad file stops the node with a line naming it.

use std::fmt;
use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ParsedCertificate;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};

use crate::transport::{self, TransportError};

/// The TLS side of this node's routes: one configuration for accepting, one for dialling.
pub struct RouteTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
}

impl RouteTls {
    /// Loads this node's certificate chain and key and the cluster's CA, all PEM.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<RouteTls, TransportError> {
        // The accepting side is an MQTT TLS listener's configuration with a required client CA.
        let server = transport::load_tls(cert, key, Some(ca))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = ClusterCa {
            roots: Arc::new(transport::read_roots(ca)?),
            algorithms: provider.signature_verification_algorithms,
        };
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TransportError::Tls)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(
                transport::read_certificates(cert)?,
                transport::read_private_key(key)?,
            )
            .map_err(|error| {
                transport::file_error(key, format!("unusable as a client key: {error}"))
            })?;
        Ok(RouteTls {
            acceptor: TlsAcceptor::from(server),
            connector: TlsConnector::from(Arc::new(client)),
        })
    }

    /// The accepting side's TLS handshake: fails unless the dialler presents a certificate
    /// signed by the cluster's CA.
    pub async fn accept(&self, stream: TcpStream) -> io::Result<server::TlsStream<TcpStream>> {
        self.acceptor.accept(stream).await
    }

    /// The dialling side's TLS handshake with the node dialled at `addr` (`host:port`). The
    /// host goes out as SNI when it is a name; it is not verified (see the module doc).
    pub async fn connect(
        &self,
        addr: &str,
        stream: TcpStream,
    ) -> io::Result<client::TlsStream<TcpStream>> {
        self.connector.connect(server_name(addr)?, stream).await
    }
}

/// The server name to hand rustls for `host:port` (an IPv6 host in brackets).
fn server_name(addr: &str) -> io::Result<ServerName<'static>> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string()).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{addr:?} has no usable host name for TLS: {error}"),
        )
    })
}

/// Verifies a peer node's certificate against the cluster's CA only, not against the address
/// dialled (see the module doc for why).
struct ClusterCa {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl ServerCertVerifier for ClusterCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let certificate = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &certificate,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dialled_host_becomes_the_server_name() {
        let name = |addr| server_name(addr).map(|n| n.to_str().into_owned());
        assert_eq!(
            name("node1-route:9999").ok().as_deref(),
            Some("node1-route")
        );
        assert_eq!(name("127.0.0.1:9999").ok().as_deref(), Some("127.0.0.1"));
        assert_eq!(name("[::1]:9999").ok().as_deref(), Some("::1"));
        assert!(server_name("bad host:1").is_err());
    }
}
