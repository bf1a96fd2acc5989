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
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// An audit append slower than this is logged, and counted as slow by `hyokctl bench`: the
/// disk (or sled's flush when the journal fills) held up every partial waiting on it.
pub const SLOW_AUDIT_APPEND: Duration = Duration::from_millis(50);

/// At most one slow-append warning per this long: a disk that stalls for good would otherwise
/// log one line for every batch (hundreds a second); the histogram counts every one anyway.
const SLOW_WARNING_EVERY: Duration = Duration::from_secs(1);

/// Slow appends not logged since the last warning, reported with the next one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Unlogged {
    count: u64,
    slowest: Duration,
}

/// The rate limit of the slow-append warning: the first slow append is logged at once, those
/// that follow within [`SLOW_WARNING_EVERY`] only counted, and the next one logged says how many
/// went unlogged before it and the slowest of them.
#[derive(Debug, Default)]
struct SlowWarnings {
    last: Option<Instant>,
    unlogged: Unlogged,
}

impl SlowWarnings {
    /// A slow append that took `took`, at `now`: `Some` (what went unlogged since the last
    /// warning) if this one is to be logged, `None` if it is only counted.
    fn note(&mut self, took: Duration, now: Instant) -> Option<Unlogged> {
        if self.last.is_some_and(|last| now.saturating_duration_since(last) < SLOW_WARNING_EVERY) {
            self.unlogged.count += 1;
            self.unlogged.slowest = self.unlogged.slowest.max(took);
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

static SLOW_WARNINGS: Mutex<SlowWarnings> =
    Mutex::new(SlowWarnings { last: None, unlogged: Unlogged { count: 0, slowest: Duration::ZERO } });

/// Logs an audit append that took `took` to be durable if it was slow, at most once per
/// [`SLOW_WARNING_EVERY`] for the whole process.
fn warn_if_slow(took: Duration, entries: usize) {
    if took <= SLOW_AUDIT_APPEND {
        return;
    }
    let noted = SLOW_WARNINGS.lock().unwrap_or_else(PoisonError::into_inner).note(took, Instant::now());
    let Some(unlogged) = noted else { return };
    tracing::warn!(
        took_ms = took.as_millis() as u64,
        entries,
        unlogged_slow_appends = unlogged.count,
        unlogged_slowest_ms = unlogged.slowest.as_millis() as u64,
        "a slow audit append held up its partials"
    );
}

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
/// that took `took` to be durable (and logs the append if that was slow).
pub fn audited(events: &[AuditEvent], len: u64, took: Duration) {
    METRICS.audit_append.observe(took.as_secs_f64());
    warn_if_slow(took, events.len());
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

    #[test]
    fn slow_appends_are_logged_at_most_once_a_second_and_the_next_warning_counts_the_rest() {
        let ms = Duration::from_millis;
        let start = Instant::now();
        let mut warnings = SlowWarnings::default();
        // The first is logged at once, with nothing before it.
        assert_eq!(warnings.note(ms(60), start), Some(Unlogged::default()));
        // Within the second: only counted.
        assert_eq!(warnings.note(ms(120), start + ms(10)), None);
        assert_eq!(warnings.note(ms(80), start + ms(999)), None);
        // A second after the last warning, logged with the two before it and the slowest of them.
        assert_eq!(warnings.note(ms(70), start + ms(1_000)), Some(Unlogged { count: 2, slowest: ms(120) }));
        // And the count starts over.
        assert_eq!(warnings.note(ms(55), start + ms(1_500)), None);
        assert_eq!(warnings.note(ms(51), start + ms(5_000)), Some(Unlogged { count: 1, slowest: ms(55) }));
    }
}
