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

/// The subject's common name (CN) in a DER certificate: the client's identity when
/// `tls.use_identity_as_username` is on. `None` if the certificate has no CN in a string
/// type that is text (UTF8String, PrintableString, IA5String) or cannot be read.
///
/// A small DER walk, enough for the one field: Certificate → TBSCertificate → the sixth
/// field (the subject, after the optional version, serial, signature algorithm, issuer and
/// validity) → each RDN's attributes, looking for id-at-commonName (2.5.4.3).
pub(crate) fn subject_common_name(certificate: &[u8]) -> Option<String> {
    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const VERSION: u8 = 0xA0;
    const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
    let (tag, certificate, _) = der(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut fields, _) = der(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, _, rest) = der(fields)?;
    if tag == VERSION {
        fields = rest;
    }
    // Serial, signature algorithm, issuer, validity.
    for _ in 0..4 {
        fields = der(fields)?.2;
    }
    let (tag, mut subject, _) = der(fields)?;
    if tag != SEQUENCE {
        return None;
    }
    while !subject.is_empty() {
        let (tag, mut rdn, rest) = der(subject)?;
        subject = rest;
        if tag != SET {
            return None;
        }
        while !rdn.is_empty() {
            let (_, attribute, rest) = der(rdn)?;
            rdn = rest;
            let (tag, oid, value) = der(attribute)?;
            if tag == 0x06 && oid == COMMON_NAME {
                let (kind, text, _) = der(value)?;
                // UTF8String, PrintableString, IA5String.
                return matches!(kind, 0x0C | 0x13 | 0x16)
                    .then(|| String::from_utf8(text.to_vec()).ok())
                    .flatten();
            }
        }
    }
    None
}

/// One DER element: its tag, its contents and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let bytes = usize::from(first & 0x7F);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let (length, rest) = rest.split_at(bytes);
        let length = length
            .iter()
            .fold(0usize, |n, &byte| (n << 8) | usize::from(byte));
        (length, rest)
    };
    if rest.len() < length {
        return None;
    }
    let (contents, rest) = rest.split_at(length);
    Some((tag, contents, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_subject_common_name_of_the_test_certificates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/certs");
        let client = read_certificates(&dir.join("client.pem")).expect("client.pem");
        let ca = read_certificates(&dir.join("ca.pem")).expect("ca.pem");
        assert_eq!(
            subject_common_name(&ca[0]).as_deref(),
            Some("supermq test CA")
        );
        assert_eq!(
            subject_common_name(&client[0]).as_deref(),
            Some("supermq test client")
        );
    }

    #[test]
    fn garbage_is_no_name() {
        assert_eq!(subject_common_name(&[]), None);
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[0x30, 0x02, 0x30, 0x00]), None);
    }
}
