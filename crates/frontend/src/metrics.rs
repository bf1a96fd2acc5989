//! The request metrics every front-end exports, under its own prefix (`hyok_xks`, `hyok_dke`):
//!
//! - `{prefix}_requests_total{api,status,error}`: answered requests by API, HTTP status and
//!   error name (`none` on success);
//! - `{prefix}_request_duration_seconds{api}`: time to answer, from the headers' arrival;
//! - `{prefix}_requests_in_flight`: requests holding a concurrency permit;
//! - `{prefix}_throttled_requests_total{api}`: requests refused because `max_in_flight` were in
//!   flight.
//!
//! The API and error labels are the front-end's own constant names, never a path, key or
//! request id.

use hyok_proto::metrics::{self as m, Counter, Family, Gauge, Histograms, Labels};
use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

/// One front-end's request metrics.
#[derive(Debug)]
pub struct RequestMetrics {
    requests: Family<Labels, Counter>,
    duration: Histograms,
    in_flight: Gauge,
    throttled: Family<Labels, Counter>,
}

/// The request metrics under `prefix` (registered on first use; one set per prefix).
pub fn requests(prefix: &'static str) -> &'static RequestMetrics {
    static ALL: LazyLock<Mutex<HashMap<&'static str, &'static RequestMetrics>>> =
        LazyLock::new(|| Mutex::new(HashMap::new()));
    let mut all = ALL.lock().unwrap_or_else(PoisonError::into_inner);
    all.entry(prefix).or_insert_with(|| {
        let metrics: &'static RequestMetrics = Box::leak(Box::new(RequestMetrics {
            requests: Family::default(),
            duration: m::latency_histograms(),
            in_flight: Gauge::default(),
            throttled: Family::default(),
        }));
        m::register(
            &format!("{prefix}_requests"),
            "Requests answered, by API, HTTP status and error name.",
            metrics.requests.clone(),
        );
        m::register(
            &format!("{prefix}_request_duration_seconds"),
            "Time to answer a request, by API.",
            metrics.duration.clone(),
        );
        m::register(&format!("{prefix}_requests_in_flight"), "Requests being served.", metrics.in_flight.clone());
        m::register(
            &format!("{prefix}_throttled_requests"),
            "Requests refused because too many were in flight, by API.",
            metrics.throttled.clone(),
        );
        metrics
    })
}

/// Holds one in-flight slot of the gauge until dropped.
#[derive(Debug)]
pub struct InFlight(&'static RequestMetrics);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.dec();
    }
}

impl RequestMetrics {
    /// Counts one answered request.
    pub fn observe(&self, api: &'static str, status: u16, error: Option<&'static str>, elapsed: Duration) {
        self.requests
            .get_or_create(&vec![
                ("api", api.into()),
                ("status", status.to_string()),
                ("error", error.unwrap_or("none").into()),
            ])
            .inc();
        self.duration.get_or_create(&vec![("api", api.into())]).observe(elapsed.as_secs_f64());
    }

    /// Counts one throttled request.
    pub fn throttled(&'static self, api: &'static str) {
        self.throttled.get_or_create(&vec![("api", api.into())]).inc();
    }

    /// One more request in flight, until the guard drops.
    pub fn enter(&'static self) -> InFlight {
        self.in_flight.inc();
        InFlight(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_labelled_by_api_status_and_error() {
        let metrics = requests("hyok_test_frontend");
        assert!(std::ptr::eq(metrics, requests("hyok_test_frontend")), "one set per prefix");
        metrics.observe("Encrypt", 200, None, Duration::from_millis(2));
        metrics.observe("Encrypt", 400, Some("ValidationException"), Duration::from_millis(1));
        metrics.throttled("Decrypt");
        let guard = metrics.enter();
        let text = m::encode_text();
        drop(guard);
        for line in [
            "hyok_test_frontend_requests_total{api=\"Encrypt\",status=\"200\",error=\"none\"} 1\n",
            "hyok_test_frontend_requests_total{api=\"Encrypt\",status=\"400\",error=\"ValidationException\"} 1\n",
            "hyok_test_frontend_request_duration_seconds_count{api=\"Encrypt\"} 2\n",
            "hyok_test_frontend_throttled_requests_total{api=\"Decrypt\"} 1\n",
            "hyok_test_frontend_requests_in_flight 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
