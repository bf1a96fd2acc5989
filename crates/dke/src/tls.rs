//! HTTPS for hyok-dke: rustls (ring), TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`. Office
//! authenticates with a bearer token, not a client certificate.

use crate::config::HttpsTls;
use anyhow::{Context, Result};
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The server configuration for `tls`.
///
/// # Errors
/// If the files cannot be read or do not fit together.
pub fn server_config(tls: &HttpsTls) -> Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading certificates from {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key).with_context(|| format!("reading key {}", tls.key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the HTTPS certificate and key do not fit")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
