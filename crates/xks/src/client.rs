//! A small XKS client, as KMS would call hyok-xks: SigV4-signed JSON POSTs over HTTPS (rustls),
//! HTTP/2 or HTTP/1.1. Used by `hyokctl bench` and the end-to-end tests; not by the proxy.

use crate::sigv4;
use anyhow::{Context, Result, anyhow};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::net::TcpStream;

/// Where and as whom to call.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https://host:port/prefix/kms/xks/v1`.
    pub base_url: String,
    /// SigV4 region.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret: String,
}

/// One HTTP connection to hyok-xks.
#[derive(Debug, Clone)]
pub enum Connection {
    /// HTTP/2: one connection, requests multiplexed (clone it freely).
    H2(http2::SendRequest<Full<Bytes>>),
    /// HTTP/1.1 keep-alive: one request at a time.
    H1(Arc<tokio::sync::Mutex<http1::SendRequest<Full<Bytes>>>>),
}

/// An answer: status and JSON body.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// The body, parsed as JSON (`Null` when empty or not JSON).
    pub json: serde_json::Value,
    /// The raw body.
    pub body: Bytes,
}

/// Splits `https://host:port/path` into (host, port, path).
pub fn split_url(url: &str) -> Result<(String, u16, String)> {
    let rest = url.strip_prefix("https://").ok_or_else(|| anyhow!("{url} is not an https:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().with_context(|| format!("port in {url}"))?),
        None => (authority.to_owned(), 443),
    };
    Ok((host, port, path.to_owned()))
}

/// Connects to the server of `base_url`, trusting `ca` (PEM), offering HTTP/2 if `h2` (else
/// HTTP/1.1 only), optionally presenting a client certificate.
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
            rustls::pki_types::PrivateKeyDer::from_pem_file(key)?,
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
    if h2 {
        let (send, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok(Connection::H2(send))
    } else {
        let (send, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok(Connection::H1(Arc::new(tokio::sync::Mutex::new(send))))
    }
}

impl Connection {
    /// Sends `request` and reads the whole answer.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer> {
        let response = match self {
            Connection::H2(send) => send.clone().send_request(request).await?,
            Connection::H1(send) => {
                let mut send = send.lock().await;
                send.ready().await?;
                send.send_request(request).await?
            }
        };
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let json = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        Ok(Answer { status, json, body })
    }

    /// POSTs `body` to `base_url + api_path` (e.g. `/keys/k/encrypt`), signed as of `now`.
    pub async fn post_signed(&self, target: &Target, api_path: &str, body: &[u8], now: SystemTime) -> Result<Answer> {
        self.send(signed_request(target, api_path, body, now)?).await
    }
}

/// A signed POST, as KMS sends it.
pub fn signed_request(target: &Target, api_path: &str, body: &[u8], now: SystemTime) -> Result<Request<Full<Bytes>>> {
    let (host, port, base) = split_url(&target.base_url)?;
    let authority = format!("{host}:{port}");
    let path = format!("{base}{api_path}");
    let signed = sigv4::sign(&path, &authority, body, &target.access_key_id, &target.secret, &target.region, now);
    Ok(Request::builder()
        .method(Method::POST)
        .uri(format!("https://{authority}{path}"))
        .header(header::HOST, &authority)
        .header(header::CONTENT_TYPE, "application/json")
        .header("x-amz-date", signed.amz_date)
        .header(header::AUTHORIZATION, signed.authorization)
        .body(Full::new(Bytes::copy_from_slice(body)))?)
}

/// `requestMetadata` for an API, as KMS fills it.
pub fn request_metadata(operation: &str, request_id: &str) -> serde_json::Value {
    serde_json::json!({
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": operation,
        "kmsRequestId": request_id,
        "kmsViaService": "ebs",
    })
}
