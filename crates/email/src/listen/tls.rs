//! The STARTTLS configuration from PEM files.

use super::ListenError;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::ring;

/// Reads a PEM certificate chain and its private key (PKCS#8, PKCS#1 or
/// SEC1) into a rustls server configuration for STARTTLS (ring, TLS 1.2 and
/// 1.3, no client certificates).
pub fn load_tls(
    cert_pem_path: &Path,
    key_pem_path: &Path,
) -> Result<Arc<ServerConfig>, ListenError> {
    let pem_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ListenError::Pem { path, source }
    };
    let certs = CertificateDer::pem_file_iter(cert_pem_path)
        .map_err(pem_error(cert_pem_path))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(cert_pem_path))?;
    if certs.is_empty() {
        return Err(ListenError::NoCertificate(cert_pem_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_file(key_pem_path).map_err(pem_error(key_pem_path))?;
    let config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}
