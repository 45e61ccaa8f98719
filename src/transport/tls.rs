//! TLS configuration: PEM certificate chain, private key and optional client CA, loaded into one
//! rustls [`ServerConfig`] that the `tls` and `wss` listeners share.
//!
//! This runs once at start-up, so it reads files synchronously, and every error names the file
//! and the problem: a bad certificate must stop the broker with a line the operator can act on.
//! The ring provider is passed explicitly, so no process-wide rustls provider has to be
//! installed. The cluster's route TLS (`crate::cluster`) loads its files with the same
//! functions, so its errors read the same.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::TransportError;

/// Loads the server's certificate chain (`cert`, leaf first) and private key (`key`), both PEM.
///
/// With `client_ca`, clients are required to present a certificate signed by one of the CA
/// certificates in that PEM file, and connections without one fail their handshake.
pub fn load_tls(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TransportError> {
    let chain = read_certificates(cert)?;
    let private_key = read_private_key(key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TransportError::Tls)?;
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(client_verifier(ca, provider)?),
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, private_key)
        .map_err(|error| match error {
            rustls::Error::InconsistentKeys(_) => file_error(
                key,
                format!(
                    "private key does not match the certificate in {}",
                    cert.display()
                ),
            ),
            invalid @ rustls::Error::InvalidCertificate(_) => file_error(cert, invalid.to_string()),
            other => file_error(key, format!("unusable private key: {other}")),
        })?;
    Ok(Arc::new(config))
}

/// A verifier that requires a client certificate signed by a CA in `ca` (rustls's default for
/// a verifier built from roots: unauthenticated clients are refused).
fn client_verifier(
    ca: &Path,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TransportError> {
    WebPkiClientVerifier::builder_with_provider(Arc::new(read_roots(ca)?), provider)
        .build()
        .map_err(|error| file_error(ca, format!("unusable client CA: {error}")))
}

/// The CA certificates in the PEM file `ca`, as trust anchors.
pub(crate) fn read_roots(ca: &Path) -> Result<RootCertStore, TransportError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(ca)? {
        roots
            .add(certificate)
            .map_err(|error| file_error(ca, format!("unusable CA certificate: {error}")))?;
    }
    Ok(roots)
}

pub(crate) fn read_certificates(
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TransportError> {
    let pem = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| file_error(path, format!("not valid PEM: {error}")))?;
    if chain.is_empty() {
        return Err(file_error(
            path,
            "no certificate found (expected a PEM \"BEGIN CERTIFICATE\" block)".to_string(),
        ));
    }
    Ok(chain)
}

pub(crate) fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TransportError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|error| match error {
        pem::Error::NoItemsFound => file_error(
            path,
            "no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE \
             KEY\" or \"BEGIN EC PRIVATE KEY\" block; encrypted keys are not supported)"
                .to_string(),
        ),
        other => file_error(path, format!("not valid PEM: {other}")),
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|error| file_error(path, format!("cannot read: {error}")))
}

pub(crate) fn file_error(path: &Path, problem: String) -> TransportError {
    TransportError::TlsFile {
        path: path.to_path_buf(),
        problem,
    }
}
