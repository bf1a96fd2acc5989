//! A small DKE client, as Office calls hyok-dke: GET a public key, POST a decrypt with a bearer
//! token, over HTTPS (rustls), HTTP/2 or HTTP/1.1. For tests and tools; not used by the service.

use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;

/// One HTTP connection to hyok-dke.
#[derive(Debug, Clone)]
pub enum Connection {
    /// HTTP/2: requests multiplexed (clone it freely).
    H2 {
        /// The sender.
        send: http2::SendRequest<Full<Bytes>>,
        /// `host:port`.
        authority: String,
    },
    /// HTTP/1.1 keep-alive: one request at a time.
    H1 {
        /// The sender.
        send: Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>,
        /// `host:port`.
        authority: String,
    },
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

/// Splits `https://host:port[/path]` into (host, port).
fn split_url(url: &str) -> Result<(String, u16)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| anyhow!("{url} is not an https:// URL"))?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((h.to_owned(), p.parse().with_context(|| format!("port in {url}"))?)),
        None => Ok((authority.to_owned(), 443)),
    }
}

/// Connects to the server of `base_url`, trusting the CA certificates in `ca` (PEM), offering
/// HTTP/2 if `h2` (else HTTP/1.1 only).
///
/// # Errors
/// If the CA cannot be read or the connection or handshake fails.
pub async fn connect(base_url: &str, ca: &Path, h2: bool) -> Result<Connection> {
    let (host, port) = split_url(base_url)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {}", ca.display()))? {
        roots.add(cert?)?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    let tcp =
        TcpStream::connect((host.as_str(), port)).await.with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from(host.clone())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await?;
    let io = TokioIo::new(tls);
    let authority = format!("{host}:{port}");
    if h2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Connection::H2 { send, authority })
    } else {
        let (send, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Connection::H1 { send: Arc::new(tokio::sync::Mutex::new(send)), authority })
    }
}

impl Connection {
    fn authority(&self) -> &str {
        match self {
            Connection::H2 { authority, .. } | Connection::H1 { authority, .. } => authority,
        }
    }

    /// Sends `request` and reads the whole answer.
    ///
    /// # Errors
    /// If the exchange fails.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer> {
        let response = match self {
            Connection::H2 { send, .. } => send.clone().send_request(request).await?,
            Connection::H1 { send, .. } => {
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

    /// A request to `path` (with any query) on this connection's server.
    ///
    /// # Errors
    /// If the request cannot be built.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: &[u8],
    ) -> Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("https://{}{path}", self.authority()))
            .header(header::HOST, self.authority());
        if !body.is_empty() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        if let Some(token) = bearer {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        Ok(builder.body(Full::new(Bytes::copy_from_slice(body)))?)
    }

    /// `GET path`.
    ///
    /// # Errors
    /// If the exchange fails.
    pub async fn get(&self, path: &str) -> Result<Answer> {
        self.send(self.request(Method::GET, path, None, &[])?).await
    }

    /// `POST path` with a JSON body and an optional bearer token.
    ///
    /// # Errors
    /// If the exchange fails.
    pub async fn post(&self, path: &str, bearer: Option<&str>, body: &[u8]) -> Result<Answer> {
        self.send(self.request(Method::POST, path, bearer, body)?).await
    }
}
