//! Prometheus metrics every hyok binary shares: one process-wide registry (of the
//! `prometheus-client` crate), the metrics listener that serves it over plain HTTP, process
//! metrics read from `/proc/self`, the per-RPC layer of the gRPC servers, and the threshold
//! monitor (nodes up against t) of the coordinator and hyok-xks.
//!
//! Each component registers its own metrics once (a `LazyLock` that calls [`register`]); its
//! binary serves them with [`start`] on the address its configuration gives ([`Listen`],
//! loopback by default, `off` to serve none). Metrics carry no secret, no plaintext, no key id
//! and no caller-chosen label value: every label comes from a fixed set.
//!
//! The listener answers `GET /metrics` in the Prometheus text format 0.0.4 (what `promtool
//! check metrics` and `curl` read), or in OpenMetrics when the scraper asks for it (`Accept:
//! application/openmetrics-text`, as Prometheus does).

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;

/// Labels as (name, value) pairs; names are always constants.
pub type Labels = Vec<(&'static str, String)>;
/// A histogram family built with [`latency_histogram`].
pub type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

static REGISTRY: LazyLock<Mutex<Registry>> = LazyLock::new(|| {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(ProcessCollector));
    Mutex::new(registry)
});

type Hook = Box<dyn Fn() + Send + Sync>;
static HOOKS: LazyLock<Mutex<Vec<Hook>>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Registers `metric` in the process-wide registry. `name` follows Prometheus conventions
/// (base unit suffix such as `_seconds` or `_bytes`); a counter's samples get `_total`.
pub fn register(name: &str, help: &str, metric: impl Metric) {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner).register(name, help, metric);
}

/// Runs `hook` before every scrape (to refresh gauges read from elsewhere, e.g. a store).
pub fn on_scrape(hook: impl Fn() + Send + Sync + 'static) {
    HOOKS.lock().unwrap_or_else(PoisonError::into_inner).push(Box::new(hook));
}

/// Latency buckets in seconds: 0.5 ms doubling to about 8 s.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 15)
}

/// A latency histogram over [`latency_buckets`].
pub fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

/// A family of latency histograms.
pub fn latency_histograms() -> Histograms {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

/// Every registered metric in the OpenMetrics text format.
pub fn encode_openmetrics() -> String {
    for hook in HOOKS.lock().unwrap_or_else(PoisonError::into_inner).iter() {
        hook();
    }
    let mut out = String::new();
    let registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
    if prometheus_client::encoding::text::encode(&mut out, &registry).is_err() {
        tracing::error!("metrics could not be encoded");
    }
    out
}

/// Every registered metric in the Prometheus text format 0.0.4.
pub fn encode_text() -> String {
    openmetrics_to_text(&encode_openmetrics())
}

/// OpenMetrics text (as `prometheus-client` encodes it) as Prometheus text 0.0.4: a counter
/// family is named with its `_total` suffix in `HELP` and `TYPE`, `unknown` is `untyped`, and
/// the `UNIT` and `EOF` lines go. Samples are the same in both formats.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    let flush_help = |help: &mut Option<&str>, out: &mut String| {
        if let Some(h) = help.take() {
            out.push_str("# HELP ");
            out.push_str(h);
            out.push('\n');
        }
    };
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            flush_help(&mut help, &mut out);
            help = Some(rest);
            continue;
        }
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|rest| rest.split_once(' ')) {
            let renamed =
                if kind == "counter" && !name.ends_with("_total") { format!("{name}_total") } else { name.into() };
            let kind = if kind == "unknown" { "untyped" } else { kind };
            if let Some(h) = help.take() {
                match h.split_once(' ') {
                    Some((n, text)) if n == name => out.push_str(&format!("# HELP {renamed} {text}\n")),
                    None if h == name => out.push_str(&format!("# HELP {renamed}\n")),
                    _ => out.push_str(&format!("# HELP {h}\n")),
                }
            }
            out.push_str(&format!("# TYPE {renamed} {kind}\n"));
            continue;
        }
        flush_help(&mut help, &mut out);
        out.push_str(line);
        out.push('\n');
    }
    flush_help(&mut help, &mut out);
    out
}

/// Where a binary serves its metrics: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listen {
    /// No metrics listener.
    Off,
    /// Plain HTTP on this address (loopback unless the operator chooses otherwise).
    On(SocketAddr),
}

impl Listen {
    /// The loopback address `127.0.0.1:port`.
    pub const fn loopback(port: u16) -> Self {
        Listen::On(SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), port))
    }
}

impl FromStr for Listen {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen::Off);
        }
        s.parse().map(Listen::On).map_err(|_| format!("{s:?} is neither host:port nor \"off\""))
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Off => f.write_str("off"),
            Listen::On(addr) => addr.fmt(f),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Listen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Binds `listen` (unless `off`) and serves the registry on it in the background, for the
/// life of the process. Logs and returns the bound address.
///
/// # Errors
/// If the address cannot be bound.
pub async fn start(binary: &str, listen: Listen) -> Result<Option<SocketAddr>> {
    let Listen::On(addr) = listen else {
        tracing::info!(binary, "metrics listener off");
        return Ok(None);
    };
    let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the metrics listener {addr}"))?;
    let local = listener.local_addr()?;
    tracing::info!(binary, addr = %local, "serving metrics on http://{local}/metrics");
    tokio::spawn(serve(listener));
    Ok(Some(local))
}

/// Serves `GET /metrics` on `listener` (HTTP/1.1, a few connections at once) forever.
pub async fn serve(listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(16));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(
                    |request| async move { Ok::<_, std::convert::Infallible>(answer(&request)) },
                );
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(60), connection).await;
            drop(permit);
        });
    }
}

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The answer to one request on the metrics listener.
pub fn answer<B>(request: &Request<B>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", "metrics are at /metrics\n".into());
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", String::new());
    }
    let openmetrics = request
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        reply(StatusCode::OK, OPENMETRICS, encode_openmetrics())
    } else {
        reply(StatusCode::OK, TEXT, encode_text())
    }
}

// ---- process metrics -------------------------------------------------------------------

/// `process_*` metrics from `/proc/self` (Linux; elsewhere none), read at each scrape.
#[derive(Debug)]
struct ProcessCollector;

/// Linux's USER_HZ, the unit of the CPU times in `/proc/self/stat` (100 on every common
/// architecture).
const CLOCK_TICKS: f64 = 100.0;

#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: Option<i64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
    threads: Option<i64>,
}

/// The CPU seconds, start time (ticks after boot) and threads from `/proc/self/stat`'s text.
fn parse_stat(stat: &str) -> Option<(f64, u64, i64)> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Field k of proc(5) (1-based) is fields[k - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let threads: i64 = fields.get(17)?.parse().ok()?;
    let start: u64 = fields.get(19)?.parse().ok()?;
    Some(((utime + stime) as f64 / CLOCK_TICKS, start, threads))
}

fn read_process_stats() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let (cpu_seconds, start_ticks, threads) = parse_stat(&stat)?;
    let resident_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|status| {
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: i64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    });
    let start_time_seconds = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        let boot: f64 = s.lines().find_map(|l| l.strip_prefix("btime "))?.trim().parse().ok()?;
        Some(boot + start_ticks as f64 / CLOCK_TICKS)
    });
    let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count() as i64);
    let max_fds = std::fs::read_to_string("/proc/self/limits").ok().and_then(|s| {
        let line = s.lines().find(|l| l.starts_with("Max open files"))?;
        line.trim_start_matches("Max open files").split_whitespace().next()?.parse().ok()
    });
    Some(ProcessStats { cpu_seconds, resident_bytes, start_time_seconds, open_fds, max_fds, threads: Some(threads) })
}

fn encode_gauge<N>(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: N) -> fmt::Result
where
    ConstGauge<N>: EncodeMetric,
{
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let Some(stats) = read_process_stats() else { return Ok(()) };
        let cpu = ConstCounter::new(stats.cpu_seconds);
        let metric = encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?;
        cpu.encode(metric)?;
        if let Some(v) = stats.resident_bytes {
            encode_gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes.", v)?;
        }
        if let Some(v) = stats.start_time_seconds {
            encode_gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                v,
            )?;
        }
        if let Some(v) = stats.open_fds {
            encode_gauge(&mut encoder, "process_open_fds", "Number of open file descriptors.", v)?;
        }
        if let Some(v) = stats.max_fds {
            encode_gauge(&mut encoder, "process_max_fds", "Maximum number of open file descriptors.", v)?;
        }
        if let Some(v) = stats.threads {
            encode_gauge(&mut encoder, "process_threads", "Number of OS threads in the process.", v)?;
        }
        Ok(())
    }
}

// ---- the threshold monitor ---------------------------------------------------------------

/// How close a cluster is to losing its threshold (drand's threshold monitor).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Margin {
    /// Fewer failing nodes than ⌈(n − t)/2⌉.
    Healthy,
    /// At least ⌈(n − t)/2⌉ nodes failing (at least one).
    Warning,
    /// At least n − t nodes failing (at least one): one more and requests fail.
    Critical,
}

/// Exports nodes up against t and logs a warning when the failing nodes reach (n − t)/2 and an
/// error at n − t, once per change of [`Margin`], not per probe.
#[derive(Debug)]
pub struct ThresholdMonitor {
    n: usize,
    t: usize,
    last: Option<Margin>,
    gauges: &'static ThresholdGauges,
}

#[derive(Debug)]
struct ThresholdGauges {
    up: Gauge,
    nodes: Gauge,
    threshold: Gauge,
    margin: Gauge,
}

impl ThresholdMonitor {
    /// A monitor of `n` nodes with threshold `t`, exporting `{prefix}_nodes_up`,
    /// `{prefix}_nodes`, `{prefix}_threshold` and `{prefix}_threshold_margin` (failing nodes
    /// the cluster can still lose: n − t − failing, negative when requests fail).
    /// `prefix` is a constant per binary (e.g. `hyok_coordinator`).
    pub fn new(prefix: &'static str, n: usize, t: usize) -> Self {
        static GAUGES: LazyLock<Mutex<HashMap<&'static str, &'static ThresholdGauges>>> =
            LazyLock::new(|| Mutex::new(HashMap::new()));
        let mut all = GAUGES.lock().unwrap_or_else(PoisonError::into_inner);
        let gauges = *all.entry(prefix).or_insert_with(|| {
            let gauges: &'static ThresholdGauges = Box::leak(Box::new(ThresholdGauges {
                up: Gauge::default(),
                nodes: Gauge::default(),
                threshold: Gauge::default(),
                margin: Gauge::default(),
            }));
            register(&format!("{prefix}_nodes_up"), "Nodes answering the health probe.", gauges.up.clone());
            register(&format!("{prefix}_nodes"), "Nodes in the cluster (n).", gauges.nodes.clone());
            register(&format!("{prefix}_threshold"), "Partials needed per operation (t).", gauges.threshold.clone());
            register(
                &format!("{prefix}_threshold_margin"),
                "Further nodes the cluster can lose before requests fail (n - t - failing).",
                gauges.margin.clone(),
            );
            gauges
        });
        gauges.nodes.set(n as i64);
        gauges.threshold.set(t as i64);
        ThresholdMonitor { n, t, last: None, gauges }
    }

    /// `(n, t)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.t)
    }

    /// The margin with `up` of the n nodes answering.
    pub fn margin(&self, up: usize) -> Margin {
        let failing = self.n.saturating_sub(up);
        let spare = self.n.saturating_sub(self.t);
        if failing >= spare.max(1) {
            Margin::Critical
        } else if failing >= spare.div_ceil(2).max(1) {
            Margin::Warning
        } else {
            Margin::Healthy
        }
    }

    /// Records a probe that found `up` nodes answering; logs when the margin changed and
    /// returns the new margin then.
    pub fn observe(&mut self, up: usize) -> Option<Margin> {
        let (n, t) = (self.n, self.t);
        let failing = n.saturating_sub(up);
        self.gauges.up.set(up as i64);
        self.gauges.margin.set(n as i64 - t as i64 - failing as i64);
        let margin = self.margin(up);
        if self.last == Some(margin) {
            return None;
        }
        let first = self.last.is_none();
        self.last = Some(margin);
        match margin {
            Margin::Critical => {
                tracing::error!(
                    up,
                    failing,
                    n,
                    t,
                    "threshold monitor: failing nodes reached n - t; one more and requests fail"
                )
            }
            Margin::Warning => {
                tracing::warn!(up, failing, n, t, "threshold monitor: failing nodes reached (n - t)/2")
            }
            Margin::Healthy if !first => tracing::info!(up, failing, n, t, "threshold monitor: nodes recovered"),
            Margin::Healthy => {}
        }
        Some(margin)
    }
}

// ---- gRPC servers ------------------------------------------------------------------------

/// The metrics of a gRPC server, per service and method (from hyok's own descriptors; any
/// other path, e.g. health or reflection, counts as `other`) and status code.
#[derive(Debug)]
struct GrpcMetrics {
    requests: Family<Labels, Counter>,
    duration: Histograms,
    in_flight: Gauge,
    methods: HashMap<String, (String, String)>,
}

static GRPC: LazyLock<GrpcMetrics> = LazyLock::new(|| {
    let metrics = GrpcMetrics {
        requests: Family::default(),
        duration: latency_histograms(),
        in_flight: Gauge::default(),
        methods: known_methods(),
    };
    register(
        "hyok_grpc_requests",
        "gRPC requests handled, by service, method and status code.",
        metrics.requests.clone(),
    );
    register(
        "hyok_grpc_request_duration_seconds",
        "Time to answer a gRPC request, by service and method.",
        metrics.duration.clone(),
    );
    register("hyok_grpc_requests_in_flight", "gRPC requests being handled.", metrics.in_flight.clone());
    metrics
});

/// `/package.Service/Method` → (`package.Service`, `Method`) for every method hyok defines.
fn known_methods() -> HashMap<String, (String, String)> {
    use prost::Message;
    let mut out = HashMap::new();
    let Ok(set) = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET) else { return out };
    for file in set.file {
        let package = file.package.unwrap_or_default();
        for service in file.service {
            let service_name = format!("{package}.{}", service.name.unwrap_or_default());
            for method in service.method {
                let method_name = method.name.unwrap_or_default();
                out.insert(format!("/{service_name}/{method_name}"), (service_name.clone(), method_name));
            }
        }
    }
    out
}

/// The conventional name of a gRPC status code (`OK`, `NotFound`, …).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "Canceled",
        Unknown => "Unknown",
        InvalidArgument => "InvalidArgument",
        DeadlineExceeded => "DeadlineExceeded",
        NotFound => "NotFound",
        AlreadyExists => "AlreadyExists",
        PermissionDenied => "PermissionDenied",
        ResourceExhausted => "ResourceExhausted",
        FailedPrecondition => "FailedPrecondition",
        Aborted => "Aborted",
        OutOfRange => "OutOfRange",
        Unimplemented => "Unimplemented",
        Internal => "Internal",
        Unavailable => "Unavailable",
        DataLoss => "DataLoss",
        Unauthenticated => "Unauthenticated",
    }
}

/// A tower layer for `tonic::transport::Server::builder().layer(..)` that counts and times
/// every request (`hyok_grpc_requests_total{service,method,code}`,
/// `hyok_grpc_request_duration_seconds{service,method}`, `hyok_grpc_requests_in_flight`).
/// The code is the response's `grpc-status` header, which tonic sends for every unary
/// error; a unary success carries it in the trailers only, hence `OK` when the header is
/// absent.
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcLayer;

impl GrpcLayer {
    /// The layer (registering its metrics).
    pub fn new() -> Self {
        LazyLock::force(&GRPC);
        GrpcLayer
    }
}

impl<S> tower_layer::Layer<S> for GrpcLayer {
    type Service = GrpcService<S>;
    fn layer(&self, inner: S) -> GrpcService<S> {
        GrpcService { inner }
    }
}

/// The service [`GrpcLayer`] wraps around a server.
#[derive(Clone, Debug)]
pub struct GrpcService<S> {
    inner: S,
}

/// Decrements the in-flight gauge when a request ends, however it ends.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        GRPC.in_flight.inc();
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        GRPC.in_flight.dec();
    }
}

impl<S, B, RB> tower_service::Service<Request<B>> for GrpcService<S>
where
    S: tower_service::Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (service, method) =
            GRPC.methods.get(request.uri().path()).cloned().unwrap_or_else(|| ("other".into(), "other".into()));
        let guard = InFlight::enter();
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let result = future.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .map_or(tonic::Code::Ok, tonic::Code::from_i32),
                Err(_) => tonic::Code::Unknown,
            };
            GRPC.duration
                .get_or_create(&vec![("service", service.clone()), ("method", method.clone())])
                .observe(started.elapsed().as_secs_f64());
            GRPC.requests
                .get_or_create(&vec![("service", service), ("method", method), ("code", code_name(code).into())])
                .inc();
            drop(guard);
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses_an_address_or_off_and_nothing_else() {
        assert_eq!("off".parse::<Listen>().unwrap(), Listen::Off);
        assert_eq!("OFF".parse::<Listen>().unwrap(), Listen::Off);
        assert_eq!("127.0.0.1:9100".parse::<Listen>().unwrap(), Listen::loopback(9100));
        assert!("localhost".parse::<Listen>().is_err());
        assert!("".parse::<Listen>().is_err());
        #[derive(serde::Deserialize)]
        struct File {
            metrics_listen: Listen,
        }
        let file: File = toml::from_str("metrics_listen = \"0.0.0.0:9100\"").unwrap();
        assert_eq!(file.metrics_listen.to_string(), "0.0.0.0:9100");
        assert!(toml::from_str::<File>("metrics_listen = \"nope\"").is_err());
    }

    #[test]
    fn counters_are_named_with_total_in_the_prometheus_text_format() {
        let openmetrics = "# HELP a_requests Requests.\n# TYPE a_requests counter\na_requests_total{x=\"1\"} 3\n\
            # HELP b_up Up.\n# TYPE b_up gauge\nb_up 1\n# HELP c Odd.\n# TYPE c unknown\n# UNIT c seconds\nc 2\n# EOF\n";
        let text = openmetrics_to_text(openmetrics);
        assert_eq!(
            text,
            "# HELP a_requests_total Requests.\n# TYPE a_requests_total counter\na_requests_total{x=\"1\"} 3\n\
             # HELP b_up Up.\n# TYPE b_up gauge\nb_up 1\n# HELP c Odd.\n# TYPE c untyped\nc 2\n"
        );
    }

    #[test]
    fn process_stat_fields_are_read_after_the_command_name() {
        // pid (comm with ") (" inside) state ppid … utime=250 stime=50 … threads=7 … starttime=1234
        let mut fields: Vec<String> = (3..=52).map(|i| i.to_string()).collect();
        fields[14 - 3] = "250".into();
        fields[15 - 3] = "50".into();
        fields[20 - 3] = "7".into();
        fields[22 - 3] = "1234".into();
        let stat = format!("42 (a) (b c) {}", fields.join(" "));
        assert_eq!(parse_stat(&stat), Some((3.0, 1234, 7)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S"), None);
        assert!(read_process_stats().is_some_and(|s| s.resident_bytes.unwrap_or(0) > 0));
    }

    #[test]
    fn the_threshold_monitor_warns_at_half_the_spare_nodes_and_errs_at_all_of_them() {
        let mut m = ThresholdMonitor::new("hyok_test_monitor", 5, 3);
        assert_eq!(m.observe(5), Some(Margin::Healthy));
        assert_eq!(m.observe(5), None, "no change, no log");
        assert_eq!(m.observe(4), Some(Margin::Warning));
        assert_eq!(m.observe(4), None);
        assert_eq!(m.observe(3), Some(Margin::Critical));
        assert_eq!(m.observe(2), None, "still critical");
        assert_eq!(m.observe(5), Some(Margin::Healthy));
        let m = ThresholdMonitor::new("hyok_test_monitor", 7, 3);
        assert_eq!(
            [7, 6, 5, 4, 3].map(|up| m.margin(up)),
            [Margin::Healthy, Margin::Healthy, Margin::Warning, Margin::Warning, Margin::Critical]
        );
        // No spare node: any failure is critical.
        let m = ThresholdMonitor::new("hyok_test_monitor", 3, 3);
        assert_eq!([3, 2].map(|up| m.margin(up)), [Margin::Healthy, Margin::Critical]);
        let text = encode_text();
        assert!(text.contains("hyok_test_monitor_nodes 3\n"), "{text}");
        assert!(text.contains("# TYPE hyok_test_monitor_nodes_up gauge\n"), "{text}");
    }

    #[test]
    fn grpc_methods_come_from_the_descriptors() {
        let methods = known_methods();
        assert_eq!(methods["/hyok.v1.KeyVault/Encrypt"], ("hyok.v1.KeyVault".into(), "Encrypt".into()));
        assert!(methods.keys().any(|m| m.starts_with("/hyok.v1.Node/")));
    }

    #[tokio::test]
    async fn the_listener_serves_text_that_promtool_accepts() {
        let requests: Family<Labels, Counter> = Family::default();
        register("hyok_test_listener_requests", "Test requests.", requests.clone());
        requests.get_or_create(&vec![("outcome", "ok".into())]).inc_by(3);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener));
        let body = crate::metrics::tests::get(addr, "/metrics").await;
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains("text/plain; version=0.0.4"), "{body}");
        assert!(body.contains("hyok_test_listener_requests_total{outcome=\"ok\"} 3\n"), "{body}");
        assert!(body.contains("process_resident_memory_bytes "), "{body}");
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
        let text = &body[body.find("\r\n\r\n").unwrap() + 4..];
        match std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
        {
            Err(_) => eprintln!("promtool is not installed: skipping `promtool check metrics`"),
            Ok(mut child) => {
                use std::io::Write;
                child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
                let out = child.wait_with_output().unwrap();
                let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");
            }
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        stream.read_to_string(&mut out).await.unwrap();
        out
    }
}
