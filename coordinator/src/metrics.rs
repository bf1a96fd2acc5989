//! What the coordinator knows about each node, as Prometheus metrics (labels: the node id,
//! from the configuration, and reasons from fixed sets — never a key id or a message):
//!
//! - `hyok_coordinator_node_partial_duration_seconds{node,outcome}`: one ask of one node
//!   (`outcome` = `partial`, `refused` or `failed`), batching included;
//! - `hyok_coordinator_node_refusals_total{node,reason}`;
//! - `hyok_coordinator_node_invalid_partials_total{node}`: partials that failed verification;
//! - `hyok_coordinator_node_up{node}` and `hyok_coordinator_node_probe_duration_seconds{node}`
//!   from the periodic probe (nodes up against t are `hyok_proto::metrics::ThresholdMonitor`'s).

use hyok_proto::metrics::{self as m, Counter, Family, Gauge, Histograms, Labels};
use hyok_threshold::NodeId;
use std::sync::LazyLock;
use std::time::Duration;

struct Metrics {
    partial_duration: Histograms,
    refusals: Family<Labels, Counter>,
    invalid_partials: Family<Labels, Counter>,
    up: Family<Labels, Gauge>,
    probe_duration: Family<Labels, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics {
        partial_duration: m::latency_histograms(),
        refusals: Family::default(),
        invalid_partials: Family::default(),
        up: Family::default(),
        probe_duration: Family::default(),
    };
    m::register(
        "hyok_coordinator_node_partial_duration_seconds",
        "Time for one node to answer one partial request, by node and outcome (partial, refused, failed).",
        metrics.partial_duration.clone(),
    );
    m::register(
        "hyok_coordinator_node_refusals",
        "Partial requests a node refused, by node and reason.",
        metrics.refusals.clone(),
    );
    m::register(
        "hyok_coordinator_node_invalid_partials",
        "Partials from a node that failed verification.",
        metrics.invalid_partials.clone(),
    );
    m::register(
        "hyok_coordinator_node_up",
        "Whether the node answered the last probe (1) or not (0).",
        metrics.up.clone(),
    );
    m::register(
        "hyok_coordinator_node_probe_duration_seconds",
        "Round trip of the last successful probe of the node.",
        metrics.probe_duration.clone(),
    );
    metrics
});

fn node(id: NodeId) -> Labels {
    vec![("node", id.get().to_string())]
}

/// Registers the metrics (so they are served before the first request).
pub fn init(nodes: impl IntoIterator<Item = NodeId>) {
    for id in nodes {
        let _ = METRICS.invalid_partials.get_or_create(&node(id));
        let _ = METRICS.up.get_or_create(&node(id));
    }
}

/// One node answered one ask after `elapsed`: `outcome` is `partial`, `refused` or `failed`.
pub fn partial(id: NodeId, outcome: &'static str, elapsed: Duration) {
    let mut labels = node(id);
    labels.push(("outcome", outcome.into()));
    METRICS.partial_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
}

/// A node refused, for `reason` (a fixed word).
pub fn refusal(id: NodeId, reason: &'static str) {
    let mut labels = node(id);
    labels.push(("reason", reason.into()));
    METRICS.refusals.get_or_create(&labels).inc();
}

/// A node's partial failed verification.
pub fn invalid_partial(id: NodeId) {
    METRICS.invalid_partials.get_or_create(&node(id)).inc();
}

/// The probe's verdict on a node.
pub fn probed(id: NodeId, reachable: bool, latency: Duration) {
    METRICS.up.get_or_create(&node(id)).set(i64::from(reachable));
    if reachable {
        METRICS.probe_duration.get_or_create(&node(id)).set(latency.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_metrics_are_labelled_by_node_and_reason() {
        let n1 = NodeId::new(1).unwrap();
        init([n1]);
        partial(n1, "partial", Duration::from_millis(3));
        refusal(n1, "disabled");
        invalid_partial(n1);
        probed(n1, true, Duration::from_millis(2));
        let text = m::encode_text();
        for line in [
            "# TYPE hyok_coordinator_node_refusals_total counter\n",
            "hyok_coordinator_node_refusals_total{node=\"1\",reason=\"disabled\"} ",
            "hyok_coordinator_node_invalid_partials_total{node=\"1\"} ",
            "hyok_coordinator_node_partial_duration_seconds_count{node=\"1\",outcome=\"partial\"} ",
            "hyok_coordinator_node_up{node=\"1\"} 1\n",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }
}
