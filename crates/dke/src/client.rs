//! A small DKE client, as Office calls hyok-dke: GET a public key, POST a decrypt with a bearer
//! token, over the front-end toolkit's HTTPS test client (`hyok_frontend::testing`), HTTP/2 or
//! HTTP/1.1. For tests and tools; not used by the service (feature `client`).

use anyhow::Result;
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::Full;
use hyok_frontend::testing;
pub use hyok_frontend::testing::Answer;
use std::path::Path;

/// One HTTP connection to hyok-dke (the toolkit's test client, with DKE's two calls on top).
#[derive(Debug, Clone)]
pub struct Connection(testing::Connection);

/// Connects to the server of `base_url`, trusting the CA certificates in `ca` (PEM), offering
/// HTTP/2 if `h2` (else HTTP/1.1 only).
///
/// # Errors
/// If the CA cannot be read or the connection or handshake fails.
pub async fn connect(base_url: &str, ca: &Path, h2: bool) -> Result<Connection> {
    Ok(Connection(testing::connect(base_url, ca, h2, None).await?))
}

impl Connection {
    fn authority(&self) -> &str {
        self.0.authority()
    }

    /// Sends `request` and reads the whole answer.
    ///
    /// # Errors
    /// If the exchange fails.
    pub async fn send(&self, request: Request<Full<Bytes>>) -> Result<Answer> {
        self.0.send(request).await
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
