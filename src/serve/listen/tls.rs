//! TLS for the listeners, as TorchServe configures it (`certificate_file` and
//! `private_key_file` in config.properties, PEM files): rustls with the ring provider,
//! HTTP/1.1 by ALPN (`h2` on the gRPC listener).

use std::path::Path;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig};

use crate::error::{Error, Result};

/// A TLS acceptor for the certificate chain in `cert` and the private key in `key` (PEM:
/// PKCS#8, PKCS#1 or SEC1), offering `alpn` (e.g. `http/1.1`, or `h2`).
pub fn acceptor(cert: &Path, key: &Path, alpn: &[u8]) -> Result<TlsAcceptor> {
    let bad = |path: &Path, what: &str, e: &dyn std::fmt::Display| {
        Error::InvalidInput(format!("{}: {what}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, "not a PEM certificate file", &e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(cert, "not a PEM certificate file", &e))?;
    if chain.is_empty() {
        return Err(Error::InvalidInput(format!(
            "{}: no certificate in it",
            cert.display()
        )));
    }
    let key_der =
        PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, "no PEM private key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::InvalidInput(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| bad(key, "does not fit the certificate", &e))?;
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
