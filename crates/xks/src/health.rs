//! The deep health check behind `GetHealthStatus`: a real encrypt and decrypt on a dedicated
//! health key, plus every node's reachability and latency from the coordinator. It runs in the
//! background every `refresh_ms`; requests are answered from the latest result, never one older
//! than `max_age_ms` (at most a minute, as the spec allows for slow checks).

use crate::api::FleetEntry;
use crate::backend::Backend;
use crate::config;
use hyok_proto::metrics::{Family, Gauge, Labels, ThresholdMonitor};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Most `ekmFleetDetails` entries the spec allows.
pub const MAX_ENTRIES: usize = 10;
/// `ACTIVE`.
pub const ACTIVE: &str = "ACTIVE";
/// `DEGRADED`.
pub const DEGRADED: &str = "DEGRADED";
/// `UNAVAILABLE`.
pub const UNAVAILABLE: &str = "UNAVAILABLE";

/// Budget of the deep operation and of the status read.
const CHECK_BUDGET: Duration = Duration::from_secs(2);

/// One health result.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken.
    pub at: Instant,
    /// One entry per node.
    pub fleet: Vec<FleetEntry>,
    /// Whether the cluster completed a real operation (or, without a health key, whether at
    /// least t nodes answered).
    pub serving: bool,
}

/// The background check and its latest result.
#[derive(Debug)]
pub struct HealthMonitor {
    /// Signs the deep check's own requests (`health.caller_key`).
    signer: Option<hyok_evidence::caller::Signer>,
    backend: Arc<Backend>,
    config: config::Health,
    latest: Mutex<Option<Arc<Snapshot>>>,
    /// Invalid partials per node at the previous check: a node whose count grew is DEGRADED.
    invalid: Mutex<HashMap<u32, u64>>,
    /// The node ids last seen, to name them when the coordinator itself cannot be reached.
    known: Mutex<Vec<u32>>,
    /// Nodes up against t, once the coordinator has said what n and t are.
    threshold: Mutex<Option<ThresholdMonitor>>,
}

/// The deep-health state as metrics: `hyok_xks_health_serving` (1 when the last check
/// completed a real operation, or without a health key found t nodes) and
/// `hyok_xks_node_health{node,state}` (1 for each node's current `ACTIVE` / `DEGRADED` /
/// `UNAVAILABLE`, 0 for the others).
struct HealthMetrics {
    serving: Gauge,
    nodes: Family<Labels, Gauge>,
}

static METRICS: LazyLock<HealthMetrics> = LazyLock::new(|| {
    let metrics = HealthMetrics { serving: Gauge::default(), nodes: Family::default() };
    hyok_proto::metrics::register(
        "hyok_xks_health_serving",
        "Whether the last deep health check found the cluster serving (1) or not (0).",
        metrics.serving.clone(),
    );
    hyok_proto::metrics::register(
        "hyok_xks_node_health",
        "Each node's state in the last health check: 1 for its current state, 0 for the others.",
        metrics.nodes.clone(),
    );
    metrics
});

/// Exports one health result.
fn export(snapshot: &Snapshot) {
    METRICS.serving.set(i64::from(snapshot.serving));
    for entry in &snapshot.fleet {
        for state in [ACTIVE, DEGRADED, UNAVAILABLE] {
            METRICS
                .nodes
                .get_or_create(&vec![("node", entry.id.clone()), ("state", state.into())])
                .set(i64::from(entry.health_status == state));
        }
    }
}

fn node_name(id: u32) -> String {
    format!("hyok-node-{id}")
}

/// The entries for a cluster that cannot serve: every known node UNAVAILABLE (or one entry for
/// the coordinator when no node is known yet).
fn all_unavailable(known: &[u32]) -> Vec<FleetEntry> {
    if known.is_empty() {
        return vec![FleetEntry {
            id: "hyok-coordinator".into(),
            model: format!("hyok {}", env!("CARGO_PKG_VERSION")),
            health_status: UNAVAILABLE,
        }];
    }
    known
        .iter()
        .take(MAX_ENTRIES)
        .map(|id| FleetEntry { id: node_name(*id), model: "hyok-node".into(), health_status: UNAVAILABLE })
        .collect()
}

/// One node's entry: UNAVAILABLE when it is down or the cluster cannot serve; DEGRADED when it
/// answers slower than `degraded` or sent invalid partials since the previous check
/// (`invalid_before`); ACTIVE otherwise.
fn classify(
    node: &hyok_proto::v1::NodeStatus,
    serving: bool,
    invalid_before: Option<u64>,
    degraded: Duration,
) -> &'static str {
    let grew = invalid_before.is_some_and(|before| node.invalid_partials > before);
    let slow = Duration::from_micros(node.latency_us) > degraded;
    if !serving || !node.reachable {
        UNAVAILABLE
    } else if slow || grew {
        DEGRADED
    } else {
        ACTIVE
    }
}

impl HealthMonitor {
    /// A monitor with no result yet.
    ///
    /// # Errors
    /// If the configured caller key cannot be read.
    pub fn new(backend: Arc<Backend>, config: config::Health) -> anyhow::Result<Self> {
        let signer = config.caller_key.as_deref().map(hyok_evidence::caller::Signer::load).transpose()?;
        Ok(HealthMonitor {
            backend,
            signer,
            config,
            latest: Mutex::new(None),
            invalid: Mutex::new(HashMap::new()),
            known: Mutex::new(Vec::new()),
            threshold: Mutex::new(None),
        })
    }

    /// Runs the check every `refresh_ms` until the task is dropped.
    pub async fn run(self: Arc<Self>) {
        loop {
            self.refresh().await;
            tokio::time::sleep(Duration::from_millis(self.config.refresh_ms)).await;
        }
    }

    /// The latest result if it is young enough; otherwise a new check, bounded by `deadline`
    /// (a check that cannot finish in time reports every node UNAVAILABLE).
    pub async fn current(&self, deadline: Instant) -> Arc<Snapshot> {
        if let Some(snapshot) = self.latest()
            && snapshot.at.elapsed() <= Duration::from_millis(self.config.max_age_ms)
        {
            return snapshot;
        }
        match tokio::time::timeout_at(deadline, self.refresh()).await {
            Ok(snapshot) => snapshot,
            Err(_) => {
                let known = self.known.lock().map(|k| k.clone()).unwrap_or_default();
                Arc::new(Snapshot { at: Instant::now(), fleet: all_unavailable(&known), serving: false })
            }
        }
    }

    fn latest(&self) -> Option<Arc<Snapshot>> {
        self.latest.lock().ok().and_then(|l| l.clone())
    }

    /// Checks now and keeps the result.
    pub async fn refresh(&self) -> Arc<Snapshot> {
        let deadline = Instant::now() + CHECK_BUDGET;
        let (status, deep) = tokio::join!(self.backend.cluster_status(deadline), self.deep_check(deadline));
        let snapshot = match status {
            Ok(status) => {
                let threshold = status.threshold as usize;
                let reachable = status.nodes.iter().filter(|n| n.reachable).count();
                self.observe_threshold(Some((status.nodes.len(), threshold)), reachable);
                let serving = match deep {
                    Some(ok) => ok,
                    None => reachable >= threshold,
                };
                if let Ok(mut known) = self.known.lock() {
                    *known = status.nodes.iter().map(|n| n.node_id).collect();
                }
                let mut invalid = self.invalid.lock().map(|m| m.clone()).unwrap_or_default();
                let fleet = status
                    .nodes
                    .iter()
                    .take(MAX_ENTRIES)
                    .map(|node| {
                        let health_status = classify(
                            node,
                            serving,
                            invalid.get(&node.node_id).copied(),
                            Duration::from_millis(self.config.degraded_ms),
                        );
                        let model = if node.software_version.is_empty() {
                            "hyok-node".to_owned()
                        } else {
                            format!("hyok-node {}", node.software_version)
                        };
                        FleetEntry { id: node_name(node.node_id), model, health_status }
                    })
                    .collect();
                for node in &status.nodes {
                    invalid.insert(node.node_id, node.invalid_partials);
                }
                if let Ok(mut shared) = self.invalid.lock() {
                    *shared = invalid;
                }
                Snapshot { at: Instant::now(), fleet, serving }
            }
            Err(e) => {
                tracing::warn!(error = %e, "health: the coordinator did not answer");
                self.observe_threshold(None, 0);
                let known = self.known.lock().map(|k| k.clone()).unwrap_or_default();
                Snapshot { at: Instant::now(), fleet: all_unavailable(&known), serving: false }
            }
        };
        export(&snapshot);
        let snapshot = Arc::new(snapshot);
        let previous = self.latest.lock().ok().and_then(|mut l| l.replace(snapshot.clone()));
        if previous.is_none_or(|p| p.serving != snapshot.serving) {
            tracing::info!(serving = snapshot.serving, "health changed");
        }
        snapshot
    }

    /// Feeds the threshold monitor: `up` of the cluster's `(n, t)` nodes reachable (`None`
    /// when the coordinator did not say: then none is reachable from here).
    fn observe_threshold(&self, shape: Option<(usize, usize)>, up: usize) {
        let Ok(mut monitor) = self.threshold.lock() else { return };
        if let Some((n, t)) = shape
            && monitor.as_ref().is_none_or(|m| m.shape() != (n, t))
        {
            *monitor = Some(ThresholdMonitor::new("hyok_xks", n, t));
        }
        if let Some(monitor) = monitor.as_mut() {
            monitor.observe(up);
        }
    }

    /// A real encrypt and decrypt on the health key: `Some(true)` if both worked and the
    /// plaintext came back, `None` without a health key.
    async fn deep_check(&self, deadline: Instant) -> Option<bool> {
        let key = self.config.key_id.as_deref()?;
        let probe = b"hyok-xks health check";
        let result = async {
            let signer = self.signer.as_ref().ok_or_else(|| {
                crate::error::XksError::Internal(
                    "health.caller_key is not set: the nodes refuse unsigned requests".into(),
                )
            })?;
            let evidence = signer.encrypt(key, probe, &[]);
            let sealed = self.backend.encrypt(key, probe, Vec::new(), "hyok-xks-health", evidence, deadline).await?;
            let evidence = signer.decrypt(key, sealed.version, &sealed.seed);
            let opened = self
                .backend
                .decrypt(
                    key,
                    sealed.version,
                    &sealed.seed,
                    &sealed.ciphertext,
                    &sealed.tag,
                    Vec::new(),
                    "hyok-xks-health",
                    evidence,
                    deadline,
                )
                .await?;
            Ok::<bool, crate::error::XksError>(opened.as_slice() == probe)
        }
        .await;
        match result {
            Ok(ok) => Some(ok),
            Err(e) => {
                tracing::warn!(key, error = %e, "health: deep check failed");
                Some(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_are_active_degraded_or_unavailable_by_reachability_latency_and_invalid_partials() {
        let node = |reachable, latency_us, invalid_partials| hyok_proto::v1::NodeStatus {
            node_id: 1,
            reachable,
            latency_us,
            invalid_partials,
            ..Default::default()
        };
        let limit = Duration::from_millis(100);
        assert_eq!(classify(&node(true, 2_000, 0), true, Some(0), limit), ACTIVE);
        assert_eq!(classify(&node(true, 150_000, 0), true, Some(0), limit), DEGRADED, "slow");
        assert_eq!(classify(&node(true, 2_000, 3), true, Some(1), limit), DEGRADED, "new invalid partials");
        assert_eq!(classify(&node(true, 2_000, 3), true, Some(3), limit), ACTIVE, "old invalid partials");
        assert_eq!(classify(&node(true, 2_000, 3), true, None, limit), ACTIVE, "first check");
        assert_eq!(classify(&node(false, 0, 0), true, Some(0), limit), UNAVAILABLE);
        assert_eq!(classify(&node(true, 2_000, 0), false, Some(0), limit), UNAVAILABLE, "cluster not serving");
    }

    #[test]
    fn an_unreachable_cluster_is_reported_unavailable_within_the_spec_limits() {
        let none = all_unavailable(&[]);
        assert_eq!(none.len(), 1);
        assert_eq!(none[0].health_status, UNAVAILABLE);
        let many: Vec<u32> = (1..=12).collect();
        let entries = all_unavailable(&many);
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert!(entries.iter().all(|e| e.health_status == UNAVAILABLE));
        assert_eq!(entries[0].id, "hyok-node-1");
    }
}
