//! TLS settings of the client side: which CAs to trust and, for mutual TLS, which certificate
//! to present, loaded into one rustls [`ClientConfig`].
//!
//! Without `--ca`, the system's CA bundle is used (the usual Debian, Red Hat and Alpine paths),
//! so a broker with a public certificate works out of the box; a broker with a private CA needs
//! `--ca`. The ring provider is passed explicitly, as on the server side.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::ClientError;

/// Where Linux distributions keep the system CA bundle.
const SYSTEM_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// What the client trusts and presents.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM file of CA certificates to trust; `None` for the system bundle.
    pub ca: Option<PathBuf>,
    /// PEM certificate chain and private key, for brokers that require client certificates.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// Builds the rustls configuration for `options`.
pub fn client_config(options: &TlsOptions) -> Result<Arc<ClientConfig>, ClientError> {
    let ca = match &options.ca {
        Some(ca) => ca.clone(),
        None => SYSTEM_BUNDLES
            .iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .ok_or_else(|| {
                ClientError::TlsSetup(
                    "no system CA bundle found; name the broker's CA with --ca FILE".to_string(),
                )
            })?,
    };
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(&ca)? {
        roots
            .add(certificate)
            .map_err(|error| setup_error(&ca, &format!("unusable CA certificate: {error}")))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ClientError::TlsSetup(error.to_string()))?
        .with_root_certificates(roots);
    let config = match &options.identity {
        Some((cert, key)) => {
            let chain = read_certificates(cert)?;
            let private_key = PrivateKeyDer::from_pem_file(key)
                .map_err(|error| setup_error(key, &format!("no usable private key: {error}")))?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|error| setup_error(key, &error.to_string()))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let chain = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| setup_error(path, &error.to_string()))?;
    if chain.is_empty() {
        return Err(setup_error(path, "no PEM \"BEGIN CERTIFICATE\" block"));
    }
    Ok(chain)
}

fn setup_error(path: &Path, problem: &str) -> ClientError {
    ClientError::TlsSetup(format!("{}: {problem}", path.display()))
}
