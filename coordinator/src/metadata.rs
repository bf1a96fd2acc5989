//! Key metadata, read from the nodes and cached. The coordinator stores nothing: a version's
//! public key package is trusted only when at least t nodes hold it ACTIVE with identical bytes,
//! so no single node (nor t − 1 colluding ones) can make the coordinator use a key of its choice.

use crate::error::CoordError;
use crate::pool::{Pool, is_transport_failure};
use hyok_proto::v1 as pb;
use hyok_threshold::{NodeId, PublicKeyPackage, Wire};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::time::Instant;

/// One trusted key version.
#[derive(Debug)]
pub struct TrustedVersion {
    /// Version number.
    pub version: u32,
    /// The public key package (t nodes agree on it).
    pub package: PublicKeyPackage,
    /// Its wire bytes.
    pub package_bytes: Vec<u8>,
    /// Creation time (the earliest any agreeing node reports).
    pub created_at_ms: u64,
}

/// A key as at least t nodes describe it.
#[derive(Debug)]
pub struct KeyView {
    /// The key.
    pub key_id: String,
    /// Usages (as `KeyUsage` values), agreed by at least t nodes.
    pub usages: Vec<i32>,
    /// Trusted versions.
    pub versions: BTreeMap<u32, TrustedVersion>,
    /// Nodes that report the key enabled.
    pub enabled_on: Vec<NodeId>,
    /// Nodes that answered about the key.
    pub answered: Vec<NodeId>,
}

impl KeyView {
    /// The version new encryptions use: the highest trusted one.
    pub fn primary(&self) -> Option<&TrustedVersion> {
        self.versions.values().next_back()
    }

    /// Whether the key allows `usage`.
    pub fn allows(&self, usage: pb::KeyUsage) -> bool {
        self.usages.contains(&(usage as i32))
    }
}

/// Builds the trusted view of one key from the nodes' answers; `None` when no version is held
/// by t nodes (the key does not exist as far as the cluster can prove).
pub fn merge(key_id: &str, answers: &[(NodeId, pb::NodeKeyState)], threshold: usize) -> Option<KeyView> {
    // (version, package bytes) → nodes holding it ACTIVE, earliest creation time.
    let mut tally: BTreeMap<(u32, &[u8]), (usize, u64)> = BTreeMap::new();
    let mut usage_tally: HashMap<Vec<i32>, usize> = HashMap::new();
    for (_, state) in answers {
        if state.key_id != key_id {
            continue;
        }
        let mut usages = state.usages.clone();
        usages.sort_unstable();
        *usage_tally.entry(usages).or_default() += 1;
        for v in state.versions.iter().filter(|v| v.active) {
            let entry = tally.entry((v.version, v.public_key_package.as_slice())).or_insert((0, u64::MAX));
            entry.0 += 1;
            entry.1 = entry.1.min(v.created_at_ms);
        }
    }
    let usages = usage_tally.into_iter().find(|(_, count)| *count >= threshold)?.0;
    let mut versions = BTreeMap::new();
    for ((version, bytes), (count, created_at_ms)) in tally {
        if count < threshold {
            continue;
        }
        let Ok(package) = PublicKeyPackage::from_bytes(bytes) else {
            tracing::error!(key_id, version, "t nodes agree on a package that does not decode");
            continue;
        };
        if usize::from(package.threshold()) != threshold {
            tracing::error!(key_id, version, "package threshold differs from the configured threshold");
            continue;
        }
        versions.insert(version, TrustedVersion { version, package, package_bytes: bytes.to_vec(), created_at_ms });
    }
    if versions.is_empty() {
        return None;
    }
    let same_key = answers.iter().filter(|(_, s)| s.key_id == key_id);
    Some(KeyView {
        key_id: key_id.to_owned(),
        usages,
        versions,
        enabled_on: same_key.clone().filter(|(_, s)| s.enabled).map(|(n, _)| *n).collect(),
        answered: same_key.map(|(n, _)| *n).collect(),
    })
}

/// Cached key views.
#[derive(Debug)]
pub struct Metadata {
    ttl: Duration,
    cache: RwLock<HashMap<String, (Instant, Arc<KeyView>)>>,
}

/// After t nodes have answered, how long to wait for the rest.
const STRAGGLER_GRACE: Duration = Duration::from_millis(25);

impl Metadata {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Metadata { ttl, cache: RwLock::new(HashMap::new()) }
    }

    /// The key's view, from the cache when fresh.
    pub async fn get(&self, pool: &Pool, key_id: &str, deadline: Instant) -> Result<Arc<KeyView>, CoordError> {
        if let Ok(cache) = self.cache.read()
            && let Some((at, view)) = cache.get(key_id)
            && at.elapsed() < self.ttl
        {
            return Ok(view.clone());
        }
        self.refresh(pool, key_id, deadline).await
    }

    /// The key's view with `version` in it: refreshes once if the cached view lacks it (a
    /// rotation by another coordinator).
    pub async fn get_version(
        &self,
        pool: &Pool,
        key_id: &str,
        version: u32,
        deadline: Instant,
    ) -> Result<Arc<KeyView>, CoordError> {
        let view = self.get(pool, key_id, deadline).await?;
        if view.versions.contains_key(&version) {
            return Ok(view);
        }
        let view = self.refresh(pool, key_id, deadline).await?;
        if view.versions.contains_key(&version) {
            Ok(view)
        } else {
            Err(CoordError::VersionNotFound(format!("key {key_id} has no version {version}")))
        }
    }

    /// Forgets a key (after a rotation, enable or disable through this coordinator).
    pub fn invalidate(&self, key_id: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(key_id);
        }
    }

    /// Reads the key from the nodes now.
    pub async fn refresh(&self, pool: &Pool, key_id: &str, deadline: Instant) -> Result<Arc<KeyView>, CoordError> {
        let answers = key_states(pool, Some(key_id), deadline).await;
        let states = flatten(&answers);
        match merge(key_id, &states, pool.threshold()) {
            Some(view) => {
                let view = Arc::new(view);
                if let Ok(mut cache) = self.cache.write() {
                    cache.insert(key_id.to_owned(), (Instant::now(), view.clone()));
                }
                Ok(view)
            }
            None => {
                self.invalidate(key_id);
                let not_found =
                    answers.iter().filter(|(_, r)| matches!(r, Err(s) if s.code() == tonic::Code::NotFound)).count();
                let answered = states.len() + not_found;
                if answered < pool.threshold() {
                    Err(CoordError::Unavailable(format!(
                        "only {answered} of {} nodes answered; {} needed to trust key metadata",
                        pool.all().len(),
                        pool.threshold()
                    )))
                } else {
                    Err(CoordError::NotFound(format!(
                        "no key {key_id} (held by fewer than {} nodes)",
                        pool.threshold()
                    )))
                }
            }
        }
    }
}

/// The answers of [`key_states`] as `(node, state)` pairs.
pub fn flatten(answers: &[(NodeId, Result<Vec<pb::NodeKeyState>, tonic::Status>)]) -> Vec<(NodeId, pb::NodeKeyState)> {
    answers
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|states| (n, states)))
        .flat_map(|(n, states)| states.iter().map(|s| (*n, s.clone())))
        .collect()
}

/// Asks reachable nodes for one key's state (`Some`) or every key's (`None`). Returns each
/// node's answer (its key states); waits for every node, but no more than a short grace once t have answered.
pub async fn key_states(
    pool: &Pool,
    key_id: Option<&str>,
    deadline: Instant,
) -> Vec<(NodeId, Result<Vec<pb::NodeKeyState>, tonic::Status>)> {
    let mut calls = tokio::task::JoinSet::new();
    let nodes = pool.ordered();
    let up = nodes.iter().filter(|n| n.is_up()).count();
    // Ask only reachable nodes, unless too few are: then ask everyone.
    let asked: Vec<_> = if up >= pool.threshold() { nodes.into_iter().filter(|n| n.is_up()).collect() } else { nodes };
    for node in asked {
        let key_id = key_id.map(str::to_owned);
        calls.spawn(async move {
            let mut client = node.client();
            let timeout = deadline.saturating_duration_since(Instant::now());
            let result = match key_id {
                Some(key_id) => {
                    let mut request = tonic::Request::new(pb::GetKeyStateRequest { key_id });
                    request.set_timeout(timeout);
                    client.get_key_state(request).await.map(|r| vec![r.into_inner()])
                }
                None => {
                    let mut request = tonic::Request::new(pb::ListKeyStatesRequest {});
                    request.set_timeout(timeout);
                    client.list_key_states(request).await.map(|r| r.into_inner().keys)
                }
            };
            if let Err(status) = &result
                && is_transport_failure(status)
            {
                node.mark_down(Duration::from_secs(1), status.message());
            }
            (node.id, result)
        });
    }
    let mut out = Vec::new();
    let mut soft_deadline = deadline;
    loop {
        let next = tokio::time::timeout_at(soft_deadline, calls.join_next()).await;
        let Ok(Some(Ok((id, result)))) = next else {
            break;
        };
        out.push((id, result));
        let ok = out.iter().filter(|(_, r)| r.is_ok()).count();
        if ok >= pool.threshold() && soft_deadline == deadline {
            soft_deadline = (Instant::now() + STRAGGLER_GRACE).min(deadline);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::Scalar;
    use hyok_threshold::dealer::dangerous_deal;

    fn node(i: u16) -> NodeId {
        NodeId::new(i).unwrap()
    }

    fn state(key_id: &str, enabled: bool, versions: &[(u32, &[u8])]) -> pb::NodeKeyState {
        pb::NodeKeyState {
            key_id: key_id.into(),
            enabled,
            usages: vec![1, 2],
            versions: versions
                .iter()
                .map(|(v, p)| pb::NodeKeyVersion {
                    version: *v,
                    public_key_package: p.to_vec(),
                    active: true,
                    created_at_ms: 7,
                })
                .collect(),
        }
    }

    #[test]
    fn a_version_is_trusted_only_when_t_nodes_agree() {
        let mut rng = rand::rng();
        let ids: Vec<NodeId> = (1..=5).map(node).collect();
        let (_, honest) = dangerous_deal(&Scalar::from(11u64), 3, &ids, &mut rng).unwrap();
        let (_, forged) = dangerous_deal(&Scalar::from(12u64), 3, &ids, &mut rng).unwrap();
        let (h, f) = (honest.to_bytes(), forged.to_bytes());
        // Two nodes push a forged package for version 1 and a forged version 2.
        let answers = vec![
            (node(1), state("k", true, &[(1, &h)])),
            (node(2), state("k", true, &[(1, &h)])),
            (node(3), state("k", false, &[(1, &h)])),
            (node(4), state("k", true, &[(1, &f), (2, &f)])),
            (node(5), state("k", true, &[(1, &f), (2, &f)])),
        ];
        let view = merge("k", &answers, 3).unwrap();
        assert_eq!(view.versions.len(), 1, "the forged version 2 has only two supporters");
        assert_eq!(view.primary().unwrap().package_bytes, h);
        assert_eq!(view.enabled_on.len(), 4);
        assert!(view.allows(pb::KeyUsage::Encrypt));
        assert!(!view.allows(pb::KeyUsage::Wrap));
        // With only two honest answers nothing is trusted.
        assert!(merge("k", &answers[..2], 3).is_none());
        assert!(merge("other", &answers, 3).is_none());
    }
}
