//! hyok-dke's HTTP side: the per-request pipeline (body → route → method → concurrency →
//! service, one log line per request), the JWKS file watcher and URL refresher, over the
//! front-end toolkit's HTTPS accept loop ([`hyok_frontend::https::serve`]).

use crate::backend::Backend;
use crate::error::DkeError;
use crate::service::{Dke, Route, route};
use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyok_frontend::body::{self, BodyError};
use hyok_frontend::metrics::RequestMetrics;
use hyper::body::Incoming;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Largest request body: a 4096-bit ciphertext in Base64 is under 700 bytes.
pub const MAX_BODY: usize = 16 * 1024;
/// How often the JWKS file is checked for changes.
const JWKS_POLL: Duration = Duration::from_secs(2);

/// Per-request state shared by every connection.
#[derive(Debug)]
pub struct Pipeline<B> {
    dke: Arc<Dke<B>>,
    permits: Arc<Semaphore>,
    metrics: &'static RequestMetrics,
}

/// The API of a route, as a metric label.
fn api_name(route: &Result<Route<'_>, DkeError>) -> &'static str {
    match route {
        Ok(Route::PublicKey { .. }) => "public_key",
        Ok(Route::Decrypt { .. }) => "decrypt",
        Err(_) => "none",
    }
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

impl<B: Backend> Pipeline<B> {
    /// A pipeline over `dke` with at most `max_in_flight` requests served at once.
    pub fn new(dke: Arc<Dke<B>>, max_in_flight: usize) -> Self {
        Pipeline {
            dke,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            metrics: hyok_frontend::metrics::requests("hyok_dke"),
        }
    }

    fn error_response(&self, error: &DkeError) -> Response<Full<Bytes>> {
        let mut response = respond(error.status(), error.body());
        match error {
            DkeError::Unauthorized => {
                if let Ok(value) = HeaderValue::from_str(self.dke.challenge()) {
                    response.headers_mut().insert(header::WWW_AUTHENTICATE, value);
                }
            }
            DkeError::MethodNotAllowed(allow) => {
                response.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }

    /// Answers one HTTP request; never fails (every failure is a JSON error response). The
    /// request gets an id of its own (`dke-…`), in every line it logs and in its coordinator
    /// call.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let request_id = hyok_proto::request_id::generate("dke");
        hyok_frontend::request_id::serve(&request_id, self.answer(request)).await
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        // The body is read before any answer, even a refusal: an HTTP/2 client whose request
        // body is left unread sees its stream reset instead of the answer. An oversized one is
        // read and discarded up to a bound (413); beyond that the answer also closes the
        // connection.
        let read = body::read(body, MAX_BODY).await;
        let close = read.as_ref().is_err_and(BodyError::must_close);
        let body = read.map_err(|e| match e {
            BodyError::TooLarge { .. } => DkeError::PayloadTooLarge,
            _ => DkeError::BadRequest(e.to_string()),
        });
        let path = parts.uri.path();
        let result = self.serve(&parts.method, path, &parts.headers, body, started).await;
        self.metrics.observe(
            api_name(&route(path)),
            result.as_ref().map_or_else(|e| e.status().as_u16(), |_| 200),
            result.as_ref().err().map(DkeError::name),
            started.elapsed(),
        );
        let elapsed_us = started.elapsed().as_micros() as u64;
        let shown: String = path.chars().take(200).collect();
        let mut response = match result {
            Ok(answer) => {
                tracing::info!(method = %parts.method, path = %shown, status = 200, elapsed_us, "served");
                respond(StatusCode::OK, answer.to_vec())
            }
            Err(error) => {
                tracing::info!(
                    method = %parts.method, path = %shown, status = error.status().as_u16(), error = error.name(),
                    message = %error, elapsed_us, "refused"
                );
                self.error_response(&error)
            }
        };
        if close {
            body::close_connection(parts.version, &mut response);
        }
        response
    }

    async fn serve(
        &self,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
        body: Result<Bytes, DkeError>,
        started: Instant,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, DkeError> {
        let route = route(path)?;
        let api = api_name(&Ok(route));
        match (route, method) {
            (Route::PublicKey { .. }, &Method::GET) | (Route::Decrypt { .. }, &Method::POST) => {}
            (Route::PublicKey { .. }, _) => return Err(DkeError::MethodNotAllowed("GET")),
            (Route::Decrypt { .. }, _) => return Err(DkeError::MethodNotAllowed("POST")),
        }
        let body = body?;
        // Bounded concurrency: a full house is a 503 at once, never a queue.
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            self.metrics.throttled(api);
            return Err(DkeError::Unavailable("too many requests in flight; retry".into()));
        };
        let _in_flight = self.metrics.enter();
        let deadline = started + self.dke.budget();
        let now = SystemTime::now();
        let work = async {
            match route {
                Route::PublicKey { name } => {
                    self.dke.public_key(name, now, deadline).await.map(zeroize::Zeroizing::new)
                }
                Route::Decrypt { name, key_id } => self.dke.decrypt(name, key_id, headers, &body, now, deadline).await,
            }
        };
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(DkeError::Unavailable("the request's time budget ran out".into())),
        }
    }
}

/// Reloads the JWKS file when it changes.
async fn watch_jwks<B: Backend>(dke: Arc<Dke<B>>) {
    loop {
        tokio::time::sleep(JWKS_POLL).await;
        match dke.reload_jwks_if_changed() {
            Ok(true) => tracing::info!("JWKS reloaded"),
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, "JWKS file not reloaded; keeping the old keys"),
        }
    }
}

/// Fetches the JWKS URL at start and then as [`Dke::refresh_jwks_url`] says.
async fn refresh_jwks_url<B: Backend>(dke: Arc<Dke<B>>) {
    while let Some(wait) = dke.refresh_jwks_url().await {
        tokio::time::sleep(wait).await;
    }
}

/// Serves `pipeline` over TLS on `listener` until `shutdown` completes, keeping the JWKS
/// fresh all along; open connections get a few seconds to finish.
pub async fn serve<B: Backend>(
    pipeline: Arc<Pipeline<B>>,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let watcher_task = tokio::spawn(watch_jwks(pipeline.dke.clone()));
    let refresher_task = tokio::spawn(refresh_jwks_url(pipeline.dke.clone()));
    let handle = move |request| {
        let pipeline = pipeline.clone();
        async move { pipeline.handle(request).await }
    };
    hyok_frontend::https::serve(handle, acceptor, listener, shutdown).await;
    watcher_task.abort();
    refresher_task.abort();
}
