//! Fetching a JSON Web Key Set from the issuer's `jwks_uri` (Entra ID publishes its signing
//! keys there and rotates them): one HTTPS GET over rustls (ring) trusting only the configured
//! CA certificates, HTTP/1.1, bounded in time and size.

use crate::jwt::KeySet;
use anyhow::{Context, Result, anyhow, bail, ensure};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// Largest JWKS document accepted.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Time for the whole fetch.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// The rustls client configuration trusting the certificates in `ca` (PEM).
///
/// # Errors
/// If the file cannot be read or holds no certificate.
pub fn client_config(ca: &Path) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        // A system bundle may hold certificates webpki cannot use; skip those.
        let _ = roots.add(cert.with_context(|| format!("reading {}", ca.display()))?);
    }
    ensure!(!roots.is_empty(), "{} holds no usable CA certificate", ca.display());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `https://host[:port]/path?query` → (host, port, path and query).
fn split(url: &str) -> Result<(String, u16, String)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| anyhow!("{url} is not an https:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().with_context(|| format!("port in {url}"))?),
        None => (authority.to_owned(), 443),
    };
    ensure!(!host.is_empty(), "{url} has no host");
    Ok((host, port, if path.is_empty() { "/".to_owned() } else { path.to_owned() }))
}

/// GETs `url` and parses the JWKS.
///
/// # Errors
/// On any connection, TLS, HTTP or parse failure, or after [`FETCH_TIMEOUT`].
pub async fn fetch(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<KeySet> {
    tokio::time::timeout(FETCH_TIMEOUT, fetch_inner(url, tls)).await.map_err(|_| anyhow!("fetching {url} timed out"))?
}

async fn fetch_inner(url: &str, tls: Arc<rustls::ClientConfig>) -> Result<KeySet> {
    let (host, port, path) = split(url)?;
    let tcp =
        TcpStream::connect((host.as_str(), port)).await.with_context(|| format!("connecting to {host}:{port}"))?;
    let name = ServerName::try_from(host.clone())?;
    let stream = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.context("TLS handshake")?;
    let (mut send, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let authority = if port == 443 { host.clone() } else { format!("{host}:{port}") };
    let request = Request::get(path)
        .header(header::HOST, authority)
        .header(header::ACCEPT, "application/json")
        .body(Empty::new())?;
    let response = send.send_request(request).await?;
    if response.status() != StatusCode::OK {
        driver.abort();
        bail!("{url} answered {}", response.status());
    }
    let body = Limited::new(response.into_body(), MAX_JWKS_BYTES)
        .collect()
        .await
        .map_err(|e| anyhow!("reading the JWKS body: {e}"))?
        .to_bytes();
    driver.abort();
    KeySet::parse(&body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(
            split("https://login.example.com/common/discovery/keys").unwrap(),
            ("login.example.com".into(), 443, "/common/discovery/keys".into())
        );
        assert_eq!(split("https://localhost:8443").unwrap(), ("localhost".into(), 8443, "/".into()));
        assert_eq!(split("https://h:1/k?x=1").unwrap(), ("h".into(), 1, "/k?x=1".into()));
        assert!(split("http://h/k").is_err());
        assert!(split("https://h:x/k").is_err());
        assert!(split("https:///k").is_err());
    }
}
