//! One request id through every hop, and the log span that carries it.
//!
//! A request's id is the caller's: XKS's `kmsRequestId`, which hyok-xks passes on as the
//! `request_id` field of its `KeyVault` call; the coordinator passes it on to every node in the
//! items it asks for (`EvaluateItem`, `UnwrapItem`, `RsaPartialRequest`, …), and nodes write it
//! into their audit entries. Where the caller gave none, the first hop that needs one makes one
//! ([`generate`]: `dke-…` in hyok-dke, `coordinator-…` for a gRPC call without one) and the
//! rest carry that. A call whose message has no `request_id` field may carry the id in the gRPC
//! metadata entry [`HEADER`] (the front-ends send it on every call).
//!
//! Every gRPC server handles each call inside a span `rpc{rpc=/pkg.Service/Method
//! request_id=…}` ([`SpanLayer`]); the handler records the id in it first thing ([`adopt`],
//! [`of_call`], [`record_batch`]), so every log line of the call carries it — in the text
//! format as the span's fields, in the JSON format (`HYOK_LOG_FORMAT=json`) as
//! `span.request_id`. Work a handler hands to other tasks carries the span along (the node's
//! blocking pool, the coordinator's fan-out to nodes).
//!
//! Ids are opaque and caller-chosen: they are clipped to [`MAX_LEN`] bytes and logged as
//! strings (escaped by either format), never parsed.

use std::fmt::Write as _;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tracing::Instrument as _;

/// The gRPC metadata entry that carries the request id of a call whose message has no
/// `request_id` field.
pub const HEADER: &str = "x-hyok-request-id";

/// Longest request id kept (the node's audit entries keep as much).
pub const MAX_LEN: usize = 256;

/// Longest list of ids recorded for one node batch.
const MAX_BATCH_LEN: usize = 4096;

/// A new request id, `ORIGIN-` and 16 random hex digits (`dke-5f0c…`): where the request
/// entered hyok without an id of its own.
pub fn generate(origin: &str) -> String {
    format!("{origin}-{:016x}", rand::random::<u64>())
}

/// `id` cut to at most [`MAX_LEN`] bytes, at a character boundary.
pub fn clip(id: &str) -> &str {
    let mut end = id.len().min(MAX_LEN);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// The span a gRPC call to `path` is handled in, its `request_id` still to be recorded.
pub fn rpc_span(path: &str) -> tracing::Span {
    let path: String = path.chars().take(128).collect();
    tracing::info_span!("rpc", rpc = path.as_str(), request_id = tracing::field::Empty)
}

/// Records `id` as the current span's `request_id`.
pub fn record(id: &str) {
    tracing::Span::current().record("request_id", clip(id));
}

/// The id in a call's [`HEADER`] metadata entry, if it sent a non-empty one.
pub fn from_metadata<T>(req: &tonic::Request<T>) -> Option<String> {
    let value = req.metadata().get(HEADER)?.to_str().ok()?;
    (!value.is_empty()).then(|| clip(value).to_owned())
}

/// What ids made by the server handling `req` start with (its [`SpanLayer`]'s origin).
fn origin<T>(req: &tonic::Request<T>) -> &'static str {
    req.extensions().get::<Origin>().map_or("hyok", |o| o.0)
}

/// For a handler whose message has no `request_id` field: the call's id ([`HEADER`], or a new
/// one), recorded in the current span.
pub fn of_call<T>(req: &tonic::Request<T>) -> String {
    let id = from_metadata(req).unwrap_or_else(|| generate(origin(req)));
    record(&id);
    id
}

/// For a handler whose message carries `request_id` (`field` finds it): the caller's id, or
/// else the call's [`HEADER`] entry, or else a new one — written into the message, so that it
/// travels on to the nodes and into their audit entries, and recorded in the current span.
pub fn adopt<T>(mut req: tonic::Request<T>, field: fn(&mut T) -> &mut String) -> tonic::Request<T> {
    let header = from_metadata(&req);
    let origin = origin(&req);
    let id = field(req.get_mut());
    if id.is_empty() {
        *id = header.unwrap_or_else(|| generate(origin));
    }
    record(id);
    req
}

/// For a node's batch: every distinct id of its items, comma-separated in order (up to a few
/// kilobytes), recorded as the current span's `request_id`.
pub fn record_batch<'a>(ids: impl IntoIterator<Item = &'a str>) {
    tracing::Span::current().record("request_id", batch_ids(ids).as_str());
}

fn batch_ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    let mut out = String::new();
    for id in ids {
        let id = clip(id);
        if id.is_empty() || seen.contains(&id) {
            continue;
        }
        if out.len() + id.len() + 1 > MAX_BATCH_LEN {
            let _ = write!(out, ",…");
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(id);
        seen.push(id);
    }
    out
}

/// The origin of the ids a server makes, in each request's extensions (for [`adopt`] and
/// [`of_call`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin(pub &'static str);

/// A tower layer for `tonic::transport::Server::builder().layer(..)` that handles every call
/// inside its own [`rpc_span`]: hyok's own handlers record the id in it first thing ([`adopt`],
/// [`of_call`], [`record_batch`]); for any other service (health, reflection) the layer records
/// the call's [`HEADER`] or a new id itself. Each answer is logged at debug level
/// (`RUST_LOG=info,hyok_proto::request_id=debug`: one line per call, with its status code and
/// time).
#[derive(Clone, Copy, Debug)]
pub struct SpanLayer {
    origin: &'static str,
}

impl SpanLayer {
    /// The layer of a server whose ids start with `origin` (`coordinator`, `node`).
    pub fn new(origin: &'static str) -> Self {
        SpanLayer { origin }
    }
}

impl<S> tower_layer::Layer<S> for SpanLayer {
    type Service = SpanService<S>;
    fn layer(&self, inner: S) -> SpanService<S> {
        SpanService { inner, origin: self.origin }
    }
}

/// The service [`SpanLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct SpanService<S> {
    inner: S,
    origin: &'static str,
}

impl<S, B, RB> tower_service::Service<http::Request<B>> for SpanService<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let span = rpc_span(request.uri().path());
        if !request.uri().path().starts_with("/hyok.") {
            let header = request.headers().get(HEADER).and_then(|v| v.to_str().ok()).filter(|v| !v.is_empty());
            let id = header.map_or_else(|| generate(self.origin), |h| clip(h).to_owned());
            span.record("request_id", id.as_str());
        }
        request.extensions_mut().insert(Origin(self.origin));
        let started = std::time::Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let code = match &result {
                        Ok(response) => response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                        Err(_) => tonic::Code::Unknown,
                    };
                    let elapsed_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tracing::debug!(code = crate::metrics::code_name(code), elapsed_us, "rpc answered");
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_name_their_origin_and_differ() {
        let a = generate("coordinator");
        let b = generate("coordinator");
        assert!(a.starts_with("coordinator-") && a.len() == "coordinator-".len() + 16, "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn ids_are_clipped_at_a_character_boundary() {
        assert_eq!(clip("r-1"), "r-1");
        let long = "é".repeat(200);
        let clipped = clip(&long);
        assert!(clipped.len() <= MAX_LEN && clipped.chars().all(|c| c == 'é'), "{}", clipped.len());
    }

    #[test]
    fn a_callers_id_is_kept_else_the_header_else_a_new_one() {
        fn field(r: &mut String) -> &mut String {
            r
        }
        fn at<T>(origin: &'static str, message: T) -> tonic::Request<T> {
            let mut req = tonic::Request::new(message);
            req.extensions_mut().insert(Origin(origin));
            req
        }
        let kept = adopt(at("coordinator", "r-1".to_owned()), field);
        assert_eq!(kept.get_ref(), "r-1");

        let mut req = at("coordinator", String::new());
        req.metadata_mut().insert(HEADER, tonic::metadata::MetadataValue::from_static("xks-7"));
        assert_eq!(adopt(req, field).get_ref(), "xks-7");

        let made = adopt(at("coordinator", String::new()), field);
        assert!(made.get_ref().starts_with("coordinator-"), "{}", made.get_ref());
        assert!(adopt(tonic::Request::new(String::new()), field).get_ref().starts_with("hyok-"));

        let mut req = at("node", ());
        assert!(of_call(&req).starts_with("node-"));
        req.metadata_mut().insert(HEADER, tonic::metadata::MetadataValue::from_static("dke-1"));
        assert_eq!(of_call(&req), "dke-1");
    }

    #[test]
    fn a_batch_lists_each_distinct_id_once_and_stays_bounded() {
        assert_eq!(batch_ids(["a", "b", "a", "", "c"]), "a,b,c");
        let many: Vec<String> = (0..1000).map(|i| format!("request-{i:05}")).collect();
        let listed = batch_ids(many.iter().map(String::as_str));
        assert!(listed.len() <= MAX_BATCH_LEN + ",…".len() && listed.ends_with(",…"), "{}", listed.len());
        assert!(listed.starts_with("request-00000,request-00001,"));
    }
}
