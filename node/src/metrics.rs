//! The node's Prometheus metrics (per-RPC counts and latencies, partial latency included, are
//! `hyok_proto::metrics::GrpcLayer`'s):
//!
//! - `hyok_node_operations_total{operation}`: audited operations served (`evaluate:encrypt`,
//!   `unwrap`, `rsa:partial`, `dkg:commit`, …);
//! - `hyok_node_refusals_total{operation,reason}`: audited refusals (`refused:OPERATION:REASON`);
//! - `hyok_node_audit_log_entries`: the audit log's length;
//! - `hyok_node_audit_append_seconds`: how long each audit append took to be durable (every
//!   partial waits on one; a slow disk shows here first);
//! - `hyok_node_keys{family}` and `hyok_node_key_versions{family,state}`, read at each scrape.
//!
//! Labels come from the node's own operation names, never from a request: no key id, no
//! request id, no caller.

use crate::node::Node;
use hyok_proto::metrics::{self as m, Counter, Family, Gauge, Labels};
use hyok_store::AuditEvent;
use std::sync::{Arc, LazyLock, Weak};

/// An audit append slower than this is logged, and counted as slow by `hyokctl bench`: the
/// disk (or sled's flush when the journal fills) held up every partial waiting on it.
pub const SLOW_AUDIT_APPEND: std::time::Duration = std::time::Duration::from_millis(50);

struct Metrics {
    operations: Family<Labels, Counter>,
    refusals: Family<Labels, Counter>,
    audit_entries: Gauge,
    audit_append: m::Histogram,
    keys: Family<Labels, Gauge>,
    versions: Family<Labels, Gauge>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let metrics = Metrics {
        operations: Family::default(),
        refusals: Family::default(),
        audit_entries: Gauge::default(),
        audit_append: m::latency_histogram(),
        keys: Family::default(),
        versions: Family::default(),
    };
    m::register(
        "hyok_node_operations",
        "Audited operations the node served, by operation.",
        metrics.operations.clone(),
    );
    m::register("hyok_node_refusals", "Audited refusals, by operation and reason.", metrics.refusals.clone());
    m::register("hyok_node_audit_log_entries", "Entries in the node's audit log.", metrics.audit_entries.clone());
    m::register(
        "hyok_node_audit_append_seconds",
        "Time an audit append took to become durable.",
        metrics.audit_append.clone(),
    );
    m::register("hyok_node_keys", "Keys with at least one version on this node, by family.", metrics.keys.clone());
    m::register("hyok_node_key_versions", "Key versions on this node, by family and state.", metrics.versions.clone());
    metrics
});

/// The metric labels of one audited event: `(operation, Some(reason))` for a refusal.
fn classify(operation: &str) -> (&str, Option<&str>) {
    match operation.strip_prefix("refused:").and_then(|rest| rest.rsplit_once(':')) {
        Some((operation, reason)) => (operation, Some(reason)),
        None => (operation, None),
    }
}

/// Counts events just appended to the audit log, which is now `len` entries long, in an append
/// that took `took` to be durable.
pub fn audited(events: &[AuditEvent], len: u64, took: std::time::Duration) {
    METRICS.audit_append.observe(took.as_secs_f64());
    for event in events {
        match classify(&event.operation) {
            (operation, Some(reason)) => {
                METRICS.refusals.get_or_create(&vec![("operation", operation.into()), ("reason", reason.into())]).inc()
            }
            (operation, None) => METRICS.operations.get_or_create(&vec![("operation", operation.into())]).inc(),
        };
    }
    METRICS.audit_entries.set(i64::try_from(len).unwrap_or(i64::MAX));
}

/// Registers the node's metrics and refreshes the store-derived gauges of `node` at each scrape
/// (for as long as the node lives).
pub fn watch(node: &Arc<Node>) {
    LazyLock::force(&METRICS);
    let weak: Weak<Node> = Arc::downgrade(node);
    let refresh = move || {
        let Some(node) = weak.upgrade() else { return };
        refresh(&node);
    };
    refresh();
    m::on_scrape(refresh);
}

fn refresh(node: &Node) {
    let store = node.store();
    if let Ok(len) = store.audit_len() {
        METRICS.audit_entries.set(i64::try_from(len).unwrap_or(i64::MAX));
    }
    let count = |family: &'static str, keys: hyok_store::Result<Vec<Vec<bool>>>| {
        let Ok(keys) = keys else { return };
        let (active, pending) =
            keys.iter().flatten().fold((0, 0), |(a, p), &v| if v { (a + 1, p) } else { (a, p + 1) });
        METRICS.keys.get_or_create(&vec![("family", family.into())]).set(keys.len() as i64);
        for (state, n) in [("active", active), ("pending", pending)] {
            METRICS.versions.get_or_create(&vec![("family", family.into()), ("state", state.into())]).set(n);
        }
    };
    let ec = store.ec();
    count(
        "ec",
        ec.list()
            .and_then(|ids| ids.iter().map(|id| Ok(ec.versions(id)?.iter().map(|v| v.active).collect())).collect()),
    );
    let rsa = store.rsa();
    count(
        "rsa",
        rsa.list()
            .and_then(|ids| ids.iter().map(|id| Ok(rsa.versions(id)?.iter().map(|v| v.active).collect())).collect()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_split_into_operation_and_reason() {
        assert_eq!(classify("refused:evaluate:encrypt:disabled"), ("evaluate:encrypt", Some("disabled")));
        assert_eq!(classify("refused:unwrap:not_found"), ("unwrap", Some("not_found")));
        assert_eq!(classify("evaluate:decrypt"), ("evaluate:decrypt", None));
        assert_eq!(classify("refused:"), ("refused:", None));
    }
}
