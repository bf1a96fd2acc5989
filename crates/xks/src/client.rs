//! A small XKS client, as KMS would call hyok-xks: SigV4-signed JSON POSTs over the front-end
//! toolkit's HTTPS test client (`hyok_frontend::testing`), HTTP/2 or HTTP/1.1. Used by
//! `hyokctl bench` and the tests; not by the proxy (feature `client`).

use crate::sigv4;
use anyhow::Result;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use hyok_frontend::testing;
pub use hyok_frontend::testing::{Answer, split_url};
use std::path::Path;
use std::time::SystemTime;

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

/// One HTTP connection to hyok-xks (the toolkit's test client, with SigV4 signing on top).
#[derive(Debug, Clone)]
pub struct Connection(testing::Connection);

/// Connects to the server of `base_url`, trusting `ca` (PEM), offering HTTP/2 if `h2` (else
/// HTTP/1.1 only), optionally presenting a client certificate.
pub async fn connect(base_url: &str, ca: &Path, h2: bool, client_cert: Option<(&Path, &Path)>) -> Result<Connection> {
    Ok(Connection(testing::connect(base_url, ca, h2, client_cert).await?))
}

impl Connection {
    /// Whether requests go over HTTP/2 (else HTTP/1.1 keep-alive).
    pub fn is_h2(&self) -> bool {
        self.0.is_h2()
    }

    /// Sends `request` and reads the whole answer.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer> {
        self.0.send(request).await
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
