//! A small HTTPS client, as the cloud services call the front-ends: rustls (ring), HTTP/2 or
//! HTTP/1.1, optionally presenting a client certificate. For tests and `hyokctl bench`; the
//! front-ends themselves never use it (feature `testing`).

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;

/// One HTTP connection to a front-end.
#[derive(Debug, Clone)]
pub struct Connection {
    sender: Sender,
    authority: String,
}

#[derive(Debug, Clone)]
enum Sender {
    /// HTTP/2: requests multiplexed (clone the connection freely).
    H2(http2::SendRequest<Full<Bytes>>),
    /// HTTP/1.1 keep-alive: one request at a time.
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
}

/// An answer: status, headers and body (parsed as JSON when it is JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body as JSON (`Null` when empty or not JSON).
    pub json: serde_json::Value,
    /// The raw body.
    pub body: Bytes,
}

/// Splits `https://host[:port][/path]` into (host, port, path); the port defaults to 443.
///
/// # Errors
/// If the URL is not `https://` or its port is not a number.
pub fn split_url(url: &str) -> Result<(String, u16, String)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| anyhow!("{url} is not an https:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().with_context(|| format!("port in {url}"))?),
        None => (authority.to_owned(), 443),
    };
    Ok((host, port, path.to_owned()))
}

/// Connects to the server of `base_url`, trusting the CA certificates in `ca` (PEM), offering
/// HTTP/2 if `h2` (else HTTP/1.1 only), presenting `client_cert` (certificate and key files) if
/// given.
///
/// # Errors
/// If a file cannot be read, or the connection or handshake fails.
pub async fn connect(base_url: &str, ca: &Path, h2: bool, client_cert: Option<(&Path, &Path)>) -> Result<Connection> {
    let (host, port, _) = split_url(base_url)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(cert?)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client_cert {
        Some((cert, key)) => builder.with_client_auth_cert(
            CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?,
            PrivateKeyDer::from_pem_file(key)?,
        )?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    let tcp =
        TcpStream::connect((host.as_str(), port)).await.with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let io = TokioIo::new(tls);
    let sender = if h2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Sender::H2(send)
    } else {
        let (send, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Sender::H1(Arc::new(tokio::sync::Mutex::new(send)))
    };
    Ok(Connection { sender, authority: format!("{host}:{port}") })
}

impl Connection {
    /// `host:port` of the server.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Whether requests go over HTTP/2.
    pub fn is_h2(&self) -> bool {
        matches!(self.sender, Sender::H2(_))
    }

    /// Sends `request` and reads the whole answer.
    ///
    /// # Errors
    /// If the exchange fails.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer> {
        let response = match &self.sender {
            Sender::H2(send) => send.clone().send_request(request).await?,
            Sender::H1(send) => {
                let mut send = send.lock().await;
                send.ready().await?;
                send.send_request(request).await?
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok(Answer { status, headers, json, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_host_port_and_path() {
        assert_eq!(split_url("https://localhost:8443/a/b").unwrap(), ("localhost".into(), 8443, "/a/b".into()));
        assert_eq!(split_url("https://dke.example.com").unwrap(), ("dke.example.com".into(), 443, String::new()));
        assert!(split_url("http://localhost:1/").is_err());
        assert!(split_url("https://localhost:port/").is_err());
    }
}
