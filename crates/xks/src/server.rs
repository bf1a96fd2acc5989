//! hyok-xks's HTTP side: the per-request pipeline (body → request id → route → method →
//! concurrency → SigV4 → API, one log line per request, every line in the request's span) and
//! the credentials reloader, over the front-end toolkit's HTTPS accept loop
//! ([`hyok_frontend::https::serve`]).

use crate::api::RequestMetadata;
use crate::error::XksError;
use crate::service::Xks;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyok_frontend::body::{self, BodyError};
use hyok_frontend::metrics::RequestMetrics;
use hyper::body::Incoming;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// The load balancer's health path (outside the XKS API, unauthenticated, shallow).
pub const PING_PATH: &str = "/ping";

/// Per-request state shared by every connection.
#[derive(Debug)]
pub struct Pipeline {
    xks: Arc<Xks>,
    permits: Arc<Semaphore>,
    metrics: &'static RequestMetrics,
}

fn respond(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    response
}

fn error_response(error: &XksError) -> Response<Full<Bytes>> {
    respond(error.status(), Bytes::from(error.body()), "application/json")
}

fn method_not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = respond(StatusCode::METHOD_NOT_ALLOWED, Bytes::new(), "text/plain");
    response.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    response
}

impl Pipeline {
    /// A pipeline over `xks` with at most `max_in_flight` requests served at once.
    pub fn new(xks: Arc<Xks>, max_in_flight: usize) -> Self {
        Pipeline {
            xks,
            permits: Arc::new(Semaphore::new(max_in_flight)),
            metrics: hyok_frontend::metrics::requests("hyok_xks"),
        }
    }

    /// Answers one HTTP request; never fails (every failure is an XKS error response).
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        if parts.uri.path() == PING_PATH {
            // HEAD gets no body: HTTP/2 would send one anyway and the client resets the stream.
            return match parts.method {
                Method::GET => respond(StatusCode::OK, Bytes::from_static(b"OK\n"), "text/plain"),
                Method::HEAD => respond(StatusCode::OK, Bytes::new(), "text/plain"),
                _ => method_not_allowed("GET, HEAD"),
            };
        }
        // The body is read before any answer, even a refusal: an HTTP/2 client whose request
        // body is left unread sees its stream reset instead of the answer. An oversized one is
        // read and discarded up to a bound (UnsupportedOperationException, as the spec says
        // for inputs larger than supported); beyond that the answer also closes the connection.
        let read = body::read(body, self.xks.max_body()).await;
        let close = read.as_ref().is_err_and(BodyError::must_close);
        let body = read.map_err(|e| match e {
            BodyError::TooLarge { .. } => XksError::UnsupportedOperation(e.to_string()),
            _ => XksError::Validation(e.to_string()),
        });
        // Every line of the request carries its kmsRequestId (or, lacking one, an id made here),
        // as does every call to the coordinator.
        let request_id = body
            .as_ref()
            .ok()
            .and_then(|b| crate::api::peek_request_id(b))
            .unwrap_or_else(|| hyok_proto::request_id::generate("xks"));
        let answer = self.answer(&parts, body, started);
        let mut response = hyok_frontend::request_id::serve(&request_id, answer).await;
        if close {
            body::close_connection(parts.version, &mut response);
        }
        response
    }

    /// The answer to a request (not `/ping`) whose body has been read.
    async fn answer(
        &self,
        parts: &http::request::Parts,
        body: Result<Bytes, XksError>,
        started: Instant,
    ) -> Response<Full<Bytes>> {
        let path = parts.uri.path();
        let route = match self.xks.route(path) {
            Ok(route) => route,
            Err(e) => {
                tracing::info!(method = %parts.method, path = %truncated(path), error = e.name(), "no such path");
                self.metrics.observe("none", e.status().as_u16(), Some(e.name()), started.elapsed());
                return error_response(&e);
            }
        };
        let api = route.api.name();
        if parts.method != Method::POST {
            self.metrics.observe(api, 405, Some("MethodNotAllowed"), started.elapsed());
            return method_not_allowed("POST");
        }
        let body = match body {
            Ok(body) => body,
            Err(e) => {
                tracing::info!(api, status = e.status().as_u16(), error = e.name(), message = %e, "refused");
                self.metrics.observe(api, e.status().as_u16(), Some(e.name()), started.elapsed());
                return error_response(&e);
            }
        };
        // Bounded concurrency: a full house is ThrottlingException at once, never a queue.
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            tracing::warn!(api, "throttled: too many requests in flight");
            let e = XksError::Throttling;
            self.metrics.throttled(api);
            self.metrics.observe(api, e.status().as_u16(), Some(e.name()), started.elapsed());
            return error_response(&e);
        };
        let _in_flight = self.metrics.enter();
        let store = &self.xks.stores()[route.store].prefix;
        let mut meta: Option<RequestMetadata> = None;
        let result = match self.xks.authenticate(&route, &parts.method, &parts.uri, &parts.headers, &body) {
            Ok(_) => {
                let budget = self.xks.budget();
                let signed = crate::service::Signed { method: &parts.method, uri: &parts.uri, headers: &parts.headers };
                match tokio::time::timeout(budget, self.xks.serve(&route, &signed, &body, started, &mut meta)).await {
                    Ok(result) => result,
                    Err(_) => Err(XksError::DependencyTimeout("the request's time budget ran out".into())),
                }
            }
            Err(e) => Err(e),
        };
        let elapsed_us = started.elapsed().as_micros() as u64;
        let (request_id, operation) =
            meta.as_ref().map_or(("-", "-"), |m| (m.request_id.as_str(), m.operation.as_str()));
        let key = route.external_id.unwrap_or("-");
        self.metrics.observe(
            api,
            result.as_ref().map_or_else(|e| e.status().as_u16(), |_| 200),
            result.as_ref().err().map(XksError::name),
            started.elapsed(),
        );
        match result {
            Ok(answer) => {
                tracing::info!(
                    prefix = %store, api = route.api.name(), key, kms_request_id = request_id,
                    kms_operation = operation, status = 200, elapsed_us, "served"
                );
                respond(StatusCode::OK, Bytes::from(answer.to_vec()), "application/json")
            }
            Err(error) => {
                tracing::info!(
                    prefix = %store, api = route.api.name(), key, kms_request_id = request_id,
                    kms_operation = operation, status = error.status().as_u16(), error = error.name(),
                    message = %error, elapsed_us, "refused"
                );
                error_response(&error)
            }
        }
    }
}

fn truncated(path: &str) -> &str {
    path.get(..path.len().min(200)).unwrap_or("")
}

/// Reloads every key store's credentials file when it changes.
async fn reload_credentials(xks: Arc<Xks>) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        for store in xks.stores() {
            match store.credentials.reload_if_changed() {
                Ok(true) => tracing::info!(prefix = %store.prefix, "credentials reloaded"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(prefix = %store.prefix, error = %e, "credentials file not reloaded; keeping the old credentials")
                }
            }
        }
    }
}

/// Serves `pipeline` over TLS on `listener` until `shutdown` completes, reloading credentials
/// all along; open connections get a few seconds to finish.
pub async fn serve(
    pipeline: Arc<Pipeline>,
    acceptor: TlsAcceptor,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let reloader = tokio::spawn(reload_credentials(pipeline.xks.clone()));
    let handle = move |request| {
        let pipeline = pipeline.clone();
        async move { pipeline.handle(request).await }
    };
    hyok_frontend::https::serve(handle, acceptor, listener, shutdown).await;
    reloader.abort();
}
