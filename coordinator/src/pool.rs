//! The nodes as the coordinator sees them: one mTLS channel each, their batch queues, and
//! what the coordinator remembers about their health (a node that failed at the transport
//! level is skipped for `down_ms`, so a dead node costs no latency; a background probe brings
//! it back as soon as it answers).

use crate::batch::{Batcher, Evaluate, Unwrap};
use crate::config::Config;
use anyhow::{Context, Result};
use hyok_proto::Role;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_proto::whole_body::{WholeBody, WholeChannel};
use hyok_threshold::NodeId;
use hyok_threshold::{Manifest, Wire};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Endpoint;

/// What the last probe of a node found.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    /// Whether it answered.
    pub reachable: bool,
    /// Round trip of `GetIdentity`.
    pub latency: Duration,
    /// Its answer, when it answered.
    pub identity: Option<pb::GetIdentityResponse>,
    /// Why not, when it did not.
    pub error: String,
}

/// One node.
#[derive(Debug)]
pub struct NodeHandle {
    /// Its id.
    pub id: NodeId,
    /// Where it is called.
    pub endpoint: String,
    client: NodeClient<WholeChannel>,
    /// Its DPRF queue.
    pub evaluate: Batcher<Evaluate>,
    /// Its unwrap queue.
    pub unwrap: Batcher<Unwrap>,
    down_until: Mutex<Option<Instant>>,
    last_probe: Mutex<Probe>,
    /// Partials from this node that failed verification (a metric; also logged).
    pub invalid_partials: AtomicU64,
    /// How long its answers to partial requests take (when a gather hedges).
    pub latency: crate::latency::Latency,
}

impl NodeHandle {
    /// A client for direct (unbatched) calls.
    pub fn client(&self) -> NodeClient<WholeChannel> {
        self.client.clone()
    }

    /// Whether the node is believed reachable.
    pub fn is_up(&self) -> bool {
        match self.down_until.lock() {
            Ok(guard) => guard.is_none_or(|until| Instant::now() >= until),
            Err(_) => true,
        }
    }

    /// Remembers a transport failure: skip the node for `for_`.
    pub fn mark_down(&self, for_: Duration, why: &str) {
        if let Ok(mut guard) = self.down_until.lock() {
            if guard.is_none() {
                tracing::warn!(node = self.id.get(), reason = why, "node unreachable; skipping it for now");
            }
            *guard = Some(Instant::now() + for_);
        }
    }

    /// Forgets a transport failure.
    pub fn mark_up(&self) {
        if let Ok(mut guard) = self.down_until.lock()
            && guard.take().is_some()
        {
            tracing::info!(node = self.id.get(), "node reachable again");
        }
    }

    /// The last probe's result.
    pub fn last_probe(&self) -> Probe {
        self.last_probe.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Counts and logs a partial that failed verification.
    pub fn record_invalid_partial(&self, key_id: &str, version: u32) {
        let total = self.invalid_partials.fetch_add(1, Ordering::Relaxed) + 1;
        crate::metrics::invalid_partial(self.id);
        tracing::error!(
            node = self.id.get(),
            key_id,
            version,
            total,
            "partial result failed verification; node excluded from this request"
        );
    }
}

/// Whether a failed call says the node (or the path to it) is down, rather than that it
/// refused this request.
pub fn is_transport_failure(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled)
}

/// Every node of the cluster.
///
/// The node list is the configuration's, and follows it when it is reloaded (a membership
/// change adds or removes nodes). The threshold `t` is the cluster's current epoch's: the
/// highest-epoch manifest that at least `quorum` nodes report identically (the configured
/// threshold, and the least number of distinct nodes whose agreement the coordinator trusts).
#[derive(Debug)]
pub struct Pool {
    nodes: RwLock<Arc<Vec<Arc<NodeHandle>>>>,
    quorum: usize,
    threshold: AtomicUsize,
    epoch: AtomicU64,
    change_pending: std::sync::atomic::AtomicBool,
    down_for: Duration,
    next: AtomicUsize,
}

fn handle(config: &Config, node: &crate::config::NodeConfig) -> Result<Arc<NodeHandle>> {
    let tls = config.tls_files();
    let id = NodeId::new(node.id)?;
    let server_name = Role::Node(node.id).proof_name();
    let endpoint = Endpoint::from_shared(node.endpoint.clone())
        .with_context(|| format!("node {} endpoint", node.id))?
        .tls_config(tls.client_config(&server_name)?)?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let client = NodeClient::new(WholeBody::new(endpoint.connect_lazy()))
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    Ok(Arc::new(NodeHandle {
        id,
        endpoint: node.endpoint.clone(),
        evaluate: Batcher::spawn(client.clone(), config.max_batch, config.max_in_flight, config.queue),
        unwrap: Batcher::spawn(client.clone(), config.max_batch, config.max_in_flight, config.queue),
        client,
        down_until: Mutex::new(None),
        last_probe: Mutex::new(Probe::default()),
        invalid_partials: AtomicU64::new(0),
        latency: crate::latency::Latency::default(),
    }))
}

impl Pool {
    /// Builds lazily-connecting mTLS channels to every node (inside a Tokio runtime).
    pub fn new(config: &Config) -> Result<Self> {
        let nodes = config.nodes.iter().map(|n| handle(config, n)).collect::<Result<Vec<_>>>()?;
        crate::metrics::init(nodes.iter().map(|n| n.id));
        Ok(Pool {
            nodes: RwLock::new(Arc::new(nodes)),
            quorum: usize::from(config.threshold),
            threshold: AtomicUsize::new(usize::from(config.threshold)),
            epoch: AtomicU64::new(0),
            change_pending: std::sync::atomic::AtomicBool::new(false),
            down_for: Duration::from_millis(config.down_ms),
            next: AtomicUsize::new(0),
        })
    }

    /// Follows a reloaded configuration's node list: a node with the same id and endpoint keeps
    /// its channel, queues and health; new ones are added, missing ones dropped.
    pub fn reconfigure(&self, config: &Config) -> Result<()> {
        let current = self.all();
        let mut nodes = Vec::with_capacity(config.nodes.len());
        let mut added = Vec::new();
        for n in &config.nodes {
            match current.iter().find(|h| h.id.get() == n.id && h.endpoint == n.endpoint) {
                Some(h) => nodes.push(h.clone()),
                None => {
                    let h = handle(config, n)?;
                    added.push(h.id);
                    nodes.push(h);
                }
            }
        }
        let removed: Vec<u16> =
            current.iter().filter(|h| !nodes.iter().any(|n| Arc::ptr_eq(n, h))).map(|h| h.id.get()).collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        crate::metrics::init(added.iter().copied());
        tracing::warn!(added = ?added.iter().map(|n| n.get()).collect::<Vec<_>>(), ?removed, "node list reloaded");
        let mut slot = self.nodes.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Arc::new(nodes);
        Ok(())
    }

    /// The least number of distinct nodes whose agreement is trusted (metadata, manifests).
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The current epoch (as learnt from the nodes' manifests; 0 until then).
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Learns the current epoch and its `t` from the manifests the nodes report: the
    /// highest-epoch one that at least [`Self::quorum`] nodes report identically.
    fn learn_epoch(&self, manifests: &[Vec<u8>]) {
        let mut tally: BTreeMap<(u64, &[u8]), usize> = BTreeMap::new();
        for bytes in manifests.iter().filter(|b| !b.is_empty()) {
            if let Ok(m) = Manifest::from_bytes(bytes) {
                *tally.entry((m.epoch(), bytes.as_slice())).or_default() += 1;
            }
        }
        let Some(((epoch, bytes), _)) = tally.into_iter().rev().find(|(_, count)| *count >= self.quorum) else {
            return;
        };
        let Ok(m) = Manifest::from_bytes(bytes) else { return };
        let t = usize::from(m.threshold());
        if self.threshold.swap(t, Ordering::Relaxed) != t || self.epoch.swap(epoch, Ordering::Relaxed) != epoch {
            tracing::info!(epoch, threshold = t, nodes = m.n(), "cluster epoch");
        }
    }

    /// The current epoch's threshold t (the configured one until the nodes' manifests say).
    pub fn threshold(&self) -> usize {
        self.threshold.load(Ordering::Relaxed)
    }

    /// Every node, in configuration order (a snapshot: a reload does not change it).
    pub fn all(&self) -> Arc<Vec<Arc<NodeHandle>>> {
        self.nodes.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// How long a failed node is skipped.
    pub fn down_for(&self) -> Duration {
        self.down_for
    }

    /// The node with id `id`.
    pub fn get(&self, id: NodeId) -> Option<Arc<NodeHandle>> {
        self.all().iter().find(|n| n.id == id).cloned()
    }

    /// Nodes in the order to ask them: reachable ones first, rotated per request so load
    /// spreads; nodes believed down last (asked only if the others do not suffice).
    pub fn ordered(&self) -> Vec<Arc<NodeHandle>> {
        let nodes = self.all();
        let n = nodes.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n.max(1);
        let rotated = nodes.iter().cycle().skip(start).take(n);
        let (mut up, down): (Vec<_>, Vec<_>) = rotated.cloned().partition(|node| node.is_up());
        up.extend(down);
        up
    }

    /// Number of nodes believed reachable.
    pub fn up_count(&self) -> usize {
        self.all().iter().filter(|n| n.is_up()).count()
    }

    /// Probes every node once (`GetIdentity`, bounded by `timeout`), updating health.
    pub async fn probe_all(&self, timeout: Duration) {
        let mut probes = tokio::task::JoinSet::new();
        for node in self.all().iter() {
            let node = node.clone();
            probes.spawn(async move {
                let probe = probe(&node, timeout).await;
                (node, probe)
            });
        }
        let mut manifests = Vec::new();
        let mut pending = false;
        while let Some(Ok((node, probe))) = probes.join_next().await {
            if let Some(identity) = &probe.identity {
                manifests.push(identity.manifest.clone());
                pending |= !identity.proposal.is_empty()
                    && hyok_threshold::epoch::Proposal::from_bytes(&identity.proposal)
                        .is_ok_and(|p| p.to().to_bytes() != identity.manifest);
            }
            crate::metrics::probed(node.id, probe.reachable, probe.latency);
            if probe.reachable {
                node.mark_up();
            } else {
                node.mark_down(self.down_for, &probe.error);
            }
            if let Ok(mut last) = node.last_probe.lock() {
                *last = probe;
            }
        }
        self.learn_epoch(&manifests);
        self.change_pending.store(pending, Ordering::Relaxed);
    }

    /// Whether, at the last probe, some node's operator had accepted a membership change that
    /// is not in force there (repair waits for it: the nodes refuse other reshares meanwhile).
    pub fn change_pending(&self) -> bool {
        self.change_pending.load(Ordering::Relaxed)
    }
}

async fn probe(node: &NodeHandle, timeout: Duration) -> Probe {
    let started = Instant::now();
    let mut request = tonic::Request::new(pb::GetIdentityRequest {});
    request.set_timeout(timeout);
    let mut client = node.client();
    match tokio::time::timeout(timeout, client.get_identity(request)).await {
        Ok(Ok(response)) => {
            let identity = response.into_inner();
            if identity.node_id != u32::from(node.id.get()) {
                return Probe {
                    error: format!("answered as node {}, configured as node {}", identity.node_id, node.id.get()),
                    ..Probe::default()
                };
            }
            Probe { reachable: true, latency: started.elapsed(), identity: Some(identity), error: String::new() }
        }
        Ok(Err(status)) => Probe { error: format!("{}: {}", status.code(), status.message()), ..Probe::default() },
        Err(_) => Probe { error: format!("no answer within {} ms", timeout.as_millis()), ..Probe::default() },
    }
}
