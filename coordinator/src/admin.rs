//! Key administration and cluster status: create, rotate, list, enable, disable, status.

use crate::dkg::{self, DkgRequest};
use crate::error::CoordError;
use crate::fanout::{self, Ask, ask_every};
use crate::metadata::{self, Ec, KeyView, flatten, merge, read_states};
use crate::reshare;
use crate::vault::Vault;
use hyok_proto::v1 as pb;
use hyok_threshold::NodeId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// Every usage, in `KeyUsage` values.
const ALL_USAGES: [pb::KeyUsage; 4] =
    [pb::KeyUsage::Encrypt, pb::KeyUsage::Decrypt, pb::KeyUsage::Wrap, pb::KeyUsage::Unwrap];

/// The version after `highest` (a number read from nodes): refused, never wrapped to 0, when
/// `highest` is already `u32::MAX`.
fn next_version(key_id: &str, highest: u32) -> Result<u32, CoordError> {
    highest
        .checked_add(1)
        .ok_or_else(|| CoordError::Precondition(format!("key {key_id} is at the highest version number ({highest})")))
}

/// DKGs get more time than single operations.
const DKG_BUDGET: Duration = Duration::from_secs(30);

/// What the nodes answered to one `SetKeyEnabled` fan-out.
#[derive(Debug, Default)]
struct Tally {
    /// Nodes whose effective state is now the one asked for.
    changed: usize,
    /// Nodes that report their operator's veto.
    vetoed: Vec<u16>,
    /// Nodes without the key.
    not_found: usize,
    /// Other failures, per node.
    failures: Vec<String>,
}

impl Tally {
    fn of(enabled: bool, answers: fanout::Answers<pb::NodeKeyState>) -> Self {
        let mut tally = Tally::default();
        for (id, result) in answers {
            match result {
                Ok(state) => {
                    if state.vetoed {
                        tally.vetoed.push(id.get());
                    }
                    if state.enabled == enabled {
                        tally.changed += 1;
                    }
                }
                Err(s) if s.code() == tonic::Code::NotFound => tally.not_found += 1,
                Err(s) => tally.failures.push(format!("node {}: {}", id.get(), s.message())),
            }
        }
        tally
    }

    /// Enough nodes for the change to hold: t serving (enable), n − t + 1 refusing (disable).
    fn verdict(&self, key_id: &str, enabled: bool, n: usize, t: usize) -> Result<(), CoordError> {
        let needed = if enabled { t } else { n - t + 1 };
        if self.changed == 0 && self.not_found > 0 && self.vetoed.is_empty() {
            return Err(CoordError::NotFound(format!("no key {key_id}")));
        }
        if self.changed >= needed {
            return Ok(());
        }
        let mut why = self.failures.clone();
        if enabled && !self.vetoed.is_empty() {
            let nodes: Vec<String> = self.vetoed.iter().map(u16::to_string).collect();
            why.insert(0, format!("vetoed by the operators of nodes {}", nodes.join(", ")));
            return Err(CoordError::Disabled(format!(
                "key {key_id} is served by {} nodes, {needed} needed: {}",
                self.changed,
                why.join("; ")
            )));
        }
        Err(CoordError::Unavailable(format!("changed on {} nodes, {needed} needed: {}", self.changed, why.join("; "))))
    }
}

/// One [`Vault::reshare_keys`] pass: what it was asked, and what it did so far.
struct Pass<'a> {
    key_id: Option<&'a str>,
    missing_only: bool,
    members: Vec<reshare::Member>,
    request_id: &'a str,
    deadline: Instant,
    found: bool,
    out: Vec<pb::ResharedVersion>,
    committed: Vec<reshare::Outcome>,
}

impl Vault {
    /// `KeyInfo` for a trusted view.
    pub fn key_info(&self, view: &KeyView) -> pb::KeyInfo {
        let threshold = self.pool.threshold();
        pb::KeyInfo {
            key_id: view.name.clone(),
            usages: view.usages.clone(),
            primary_version: view.primary_version(),
            versions: view.each_version(|v| pb::KeyVersion {
                version: v.version,
                public_key: v.package.group_key().as_bytes().to_vec(),
                created_at_ms: v.created_at_ms,
                generation: v.generation,
            }),
            state: view.state(threshold) as i32,
            threshold: threshold as u32,
            nodes: self.pool.all().len() as u32,
        }
    }

    /// `CreateKey`: a DKG across every node for version 1.
    pub async fn create_key(&self, key_id: &str, usages: &[i32], request_id: &str) -> Result<pb::KeyInfo, CoordError> {
        hyok_proto::validate_key_id(key_id).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        let mut chosen: Vec<i32> = Vec::new();
        for u in usages {
            match pb::KeyUsage::try_from(*u) {
                Ok(pb::KeyUsage::Unspecified) | Err(_) => {
                    return Err(CoordError::Invalid(format!("unknown key usage {u}")));
                }
                Ok(u) => chosen.push(u as i32),
            }
        }
        if chosen.is_empty() {
            chosen = ALL_USAGES.iter().map(|u| *u as i32).collect();
        }
        chosen.sort_unstable();
        chosen.dedup();
        let deadline = Instant::now() + DKG_BUDGET;
        // A key any node holds an ACTIVE version of exists; PENDING leftovers of an aborted run do not count.
        let states = read_states::<Ec>(&self.pool, Ask::EVERY_STATE, Some(key_id), deadline).await;
        if flatten::<Ec>(&states).iter().any(|(_, s)| s.versions.iter().any(|v| v.active)) {
            return Err(CoordError::Exists(format!("key {key_id} already exists")));
        }
        let _one_at_a_time = self.key_changes.lock().await;
        let req =
            DkgRequest { key_id: key_id.to_owned(), version: 1, usages: chosen, request_id: request_id.to_owned() };
        dkg::run(&self.pool, req, deadline).await?;
        let view = self.metadata.refresh(&self.pool, key_id, deadline).await?;
        Ok(self.key_info(&view))
    }

    /// `RotateKey`: a DKG for the next version, which becomes primary.
    pub async fn rotate_key(&self, key_id: &str, request_id: &str) -> Result<pb::KeyInfo, CoordError> {
        let deadline = Instant::now() + DKG_BUDGET;
        hyok_proto::validate_key_id(key_id).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        let _one_at_a_time = self.key_changes.lock().await;
        // One read serves both: the trusted view (usages, primary) and the highest version any
        // node knows, pending or active on too few nodes to be trusted, so a leftover of a failed
        // run never blocks the new one.
        let states = read_states::<Ec>(&self.pool, Ask::EVERY_STATE, Some(key_id), deadline).await;
        let answers = flatten::<Ec>(&states);
        let view = merge::<Ec>(key_id, &answers, self.pool.quorum()).ok_or_else(|| {
            CoordError::NotFound(format!("no key {key_id} (held by fewer than {} nodes)", self.pool.threshold()))
        })?;
        let highest = answers.iter().flat_map(|(_, s)| s.versions.iter().map(|v| v.version)).max().unwrap_or(0);
        let req = DkgRequest {
            key_id: key_id.to_owned(),
            version: next_version(key_id, highest.max(view.primary().map_or(0, |v| v.version)))?,
            usages: view.usages.clone(),
            request_id: request_id.to_owned(),
        };
        dkg::run(&self.pool, req, deadline).await?;
        let view = self.metadata.refresh(&self.pool, key_id, deadline).await?;
        Ok(self.key_info(&view))
    }

    /// `ReshareKeys`: every version of `key_id` (or of every key), EC and threshold RSA alike,
    /// that needs it — with `missing_only`, those some reachable member lacks — reshared one
    /// after the other, then the old generations finalized after one grace period. A version
    /// that cannot be reshared now keeps its old generation and is reported with its error.
    pub async fn reshare_keys(
        &self,
        key_id: Option<&str>,
        missing_only: bool,
        request_id: &str,
    ) -> Result<pb::ReshareKeysResponse, CoordError> {
        if let Some(k) = key_id {
            hyok_proto::validate_key_id(k).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        }
        let _one_at_a_time = self.key_changes.lock().await;
        let deadline = Instant::now() + DKG_BUDGET;
        // Who could receive, asked once for the whole pass (each reshare asks again itself).
        let members = if missing_only { reshare::members(&self.pool, deadline).await } else { Vec::new() };
        let mut pass = Pass {
            key_id,
            missing_only,
            members,
            request_id,
            deadline,
            found: false,
            out: Vec::new(),
            committed: Vec::new(),
        };
        self.reshare_family(&self.metadata, &mut pass).await?;
        self.reshare_family(&self.rsa_metadata, &mut pass).await?;
        if let Some(k) = key_id
            && !pass.found
        {
            return Err(CoordError::NotFound(format!("no key {k}")));
        }
        if !pass.committed.is_empty() {
            let finalize_deadline = Instant::now() + reshare::FINALIZE_GRACE + Duration::from_secs(10);
            tokio::time::sleep(reshare::FINALIZE_GRACE).await;
            for outcome in &pass.committed {
                reshare::finalize(&self.pool, outcome, request_id, finalize_deadline).await?;
                if outcome.rsa {
                    self.reread(&self.rsa_metadata, &outcome.key_id).await;
                } else {
                    self.reread(&self.metadata, &outcome.key_id).await;
                }
            }
        }
        Ok(pb::ReshareKeysResponse { versions: pass.out })
    }

    /// `ExecuteEpoch` (one key change at a time: no creation, rotation or reshare runs beside it).
    pub async fn execute_epoch(&self, request_id: &str) -> Result<pb::ExecuteEpochResponse, CoordError> {
        let _one_at_a_time = self.key_changes.lock().await;
        let forget = || {
            self.metadata.invalidate_all();
            self.rsa_metadata.invalidate_all();
        };
        let result = crate::epoch::execute(&self.pool, request_id, forget).await;
        self.metadata.invalidate_all();
        self.rsa_metadata.invalidate_all();
        result
    }

    /// `AbortEpoch`.
    pub async fn abort_epoch(&self, request_id: &str) -> Result<pb::AbortEpochVaultResponse, CoordError> {
        let _one_at_a_time = self.key_changes.lock().await;
        crate::epoch::abort(&self.pool, request_id).await
    }

    /// Reads `key` again ahead of the requests after its shares changed (they keep the cached
    /// view meanwhile); forgets it if the read fails.
    async fn reread<F: metadata::Family>(&self, cache: &metadata::Metadata<F>, key: &str) {
        if cache.refresh(&self.pool, key, Instant::now() + DKG_BUDGET).await.is_err() {
            cache.invalidate(key);
        }
    }

    /// One family's part of a [`Vault::reshare_keys`] pass.
    async fn reshare_family<F: metadata::Family>(
        &self,
        cache: &metadata::Metadata<F>,
        pass: &mut Pass<'_>,
    ) -> Result<(), CoordError> {
        let names: Vec<String> = metadata::list::<F>(&self.pool, pass.deadline)
            .await?
            .into_iter()
            .map(|v| v.name.clone())
            .filter(|name| pass.key_id.is_none_or(|k| k == name))
            .collect();
        for key in names {
            pass.found = true;
            let versions = if pass.missing_only {
                reshare::needing_repair::<F>(&self.pool, &pass.members, &key, pass.deadline).await?
            } else {
                cache.fresh(&self.pool, &key, pass.deadline).await?.versions.keys().copied().collect()
            };
            // A run that failed may have committed on some nodes first (a node lost mid-commit):
            // the view is read again after any run, not only a committed one.
            let attempted = !versions.is_empty();
            for version in versions {
                let run_deadline = Instant::now() + DKG_BUDGET;
                let mut reported =
                    pb::ResharedVersion { key_id: key.clone(), version, rsa: F::RSA, ..Default::default() };
                match reshare::reshare::<F>(&self.pool, &key, version, pass.request_id, run_deadline).await {
                    Ok(outcome) => {
                        reported.generation = outcome.generation;
                        reported.receivers = outcome.receivers.iter().map(|r| u32::from(*r)).collect();
                        pass.committed.push(outcome);
                    }
                    Err(e) => reported.error = e.to_string(),
                }
                pass.out.push(reported);
            }
            // Requests keep using the cached view (its generation still serves until the
            // finalize) while the new one is read ahead of them; a pass that ran nothing
            // leaves the cache alone (the repair loop runs every few seconds).
            if attempted {
                self.reread(cache, &key).await;
            }
        }
        Ok(())
    }

    /// `GetKey`: read fresh from the nodes.
    pub async fn get_key(&self, key_id: &str, deadline: Instant) -> Result<pb::KeyInfo, CoordError> {
        Ok(self.key_info(&*self.metadata.fresh(&self.pool, key_id, deadline).await?))
    }

    /// `ListKeys`: every key that t nodes agree on.
    pub async fn list_keys(&self, deadline: Instant) -> Result<Vec<pb::KeyInfo>, CoordError> {
        Ok(metadata::list::<Ec>(&self.pool, deadline).await?.iter().map(|v| self.key_info(v)).collect())
    }

    /// `EnableKey` / `DisableKey` on every reachable node. Succeeds when enough nodes now
    /// serve the key for it to be usable (enable: t) or refuse it for it to be unusable
    /// (disable: n − t + 1), counted from each node's answer, which is its effective state.
    /// Nodes apply it to the EC key and the threshold RSA key of that name alike. It sets the
    /// admin's flag only: a node whose operator vetoed the key answers disabled and vetoed, and
    /// an enable that cannot reach t serving nodes because of vetoes fails as key-disabled,
    /// naming the vetoing nodes.
    pub async fn set_enabled(&self, key_id: &str, enabled: bool, request_id: &str) -> Result<pb::KeyInfo, CoordError> {
        hyok_proto::validate_key_id(key_id).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        let deadline = self.deadline(None);
        let answers = ask_every(&self.pool, Ask::EVERY, deadline, |node| {
            let req =
                pb::SetKeyEnabledRequest { key_id: key_id.to_owned(), enabled, request_id: request_id.to_owned() };
            async move { node.client().set_key_enabled(fanout::request(req, deadline)).await.map(|r| r.into_inner()) }
        })
        .await;
        let tally = Tally::of(enabled, answers);
        self.metadata.invalidate(key_id);
        // Nodes apply SetKeyEnabled to an RSA key of the same name too.
        self.rsa_metadata.invalidate(key_id);
        let n = self.pool.all().len();
        let t = self.pool.threshold();
        tally.verdict(key_id, enabled, n, t)?;
        match self.metadata.refresh(&self.pool, key_id, deadline).await {
            Ok(view) => Ok(self.key_info(&view)),
            // Only a threshold RSA key has this name: describe its state (RSA versions are in
            // GetRsaKey; no EC usages or versions).
            Err(CoordError::NotFound(_)) => {
                let view = self.rsa_metadata.refresh(&self.pool, key_id, deadline).await?;
                Ok(pb::KeyInfo {
                    key_id: key_id.to_owned(),
                    usages: Vec::new(),
                    primary_version: view.primary_version(),
                    versions: Vec::new(),
                    state: view.state(t) as i32,
                    threshold: t as u32,
                    nodes: n as u32,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// `ClusterStatus`: probes every node now, and reads every key's state on each.
    pub async fn cluster_status(&self) -> pb::ClusterStatusResponse {
        let deadline = self.deadline(Some(Duration::from_secs(2)));
        self.pool.probe_all(Duration::from_secs(1)).await;
        let answers = read_states::<Ec>(&self.pool, Ask::EVERY_STATE, None, deadline).await;
        let nodes: Vec<pb::NodeStatus> = self
            .pool
            .all()
            .iter()
            .map(|node| {
                let probe = node.last_probe();
                let identity = probe.identity.clone().unwrap_or_default();
                pb::NodeStatus {
                    node_id: u32::from(node.id.get()),
                    endpoint: node.endpoint.clone(),
                    reachable: probe.reachable,
                    latency_us: if probe.reachable { probe.latency.as_micros() as u64 } else { 0 },
                    key_count: identity.key_count,
                    software_version: identity.software_version,
                    error: probe.error,
                    invalid_partials: node.invalid_partials.load(std::sync::atomic::Ordering::Relaxed),
                    identity_public_key: if probe.reachable { identity.identity_public_key } else { Vec::new() },
                    key_bundle: if probe.reachable { identity.key_bundle } else { Vec::new() },
                }
            })
            .collect();
        let mut keys: BTreeMap<String, Vec<(NodeId, pb::NodeKeyState)>> = BTreeMap::new();
        for (node, state) in flatten::<Ec>(&answers) {
            keys.entry(state.key_id.clone()).or_default().push((node, state));
        }
        let answered: std::collections::BTreeSet<NodeId> =
            answers.iter().filter(|(_, r)| r.is_ok()).map(|(n, _)| *n).collect();
        let t = self.pool.threshold();
        let keys = keys
            .into_iter()
            .map(|(key_id, states)| {
                let view = merge::<Ec>(&key_id, &states, t);
                // The trusted primary, so that one node reporting a high version cannot make the
                // others look as if they lacked the share.
                let primary = match &view {
                    Some(view) => Some(view.primary_version()),
                    None => {
                        states.iter().flat_map(|(_, s)| s.versions.iter().filter(|v| v.active)).map(|v| v.version).max()
                    }
                };
                let nodes = self
                    .pool
                    .all()
                    .iter()
                    .map(|node| {
                        let state = states.iter().find(|(n, _)| *n == node.id).map(|(_, s)| s);
                        let disagrees = |s: &pb::NodeKeyState| {
                            view.as_ref().is_some_and(|view| {
                                view.inconsistent.contains(&node.id)
                                    || s.versions.iter().filter(|v| v.active).any(|v| {
                                        view.versions
                                            .get(&v.version)
                                            .is_some_and(|t| t.package_bytes != v.public_key_package)
                                    })
                            })
                        };
                        pb::KeyNodeState {
                            node_id: u32::from(node.id.get()),
                            reachable: answered.contains(&node.id),
                            has_share: state
                                .is_some_and(|s| s.versions.iter().any(|v| v.active && Some(v.version) == primary)),
                            enabled: state.is_some_and(|s| s.enabled),
                            invalid: state.is_some_and(disagrees),
                            vetoed: state.is_some_and(|s| s.vetoed),
                        }
                    })
                    .collect();
                pb::KeyStatus { key_id, nodes }
            })
            .collect();
        pb::ClusterStatusResponse {
            threshold: self.pool.threshold() as u32,
            nodes,
            keys,
            coordinator_version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: u16, enabled: bool, vetoed: bool) -> (NodeId, Result<pb::NodeKeyState, tonic::Status>) {
        let state = pb::NodeKeyState { key_id: "k".into(), enabled, vetoed, ..Default::default() };
        (NodeId::new(id).unwrap(), Ok(state))
    }

    #[test]
    fn an_enable_that_vetoes_keep_below_t_fails_as_disabled_and_names_the_vetoing_nodes() {
        // 5 nodes, t = 3: three operators vetoed, so only two serve after the enable.
        let answers = vec![
            answer(1, false, true),
            answer(2, false, true),
            answer(3, false, true),
            answer(4, true, false),
            answer(5, true, false),
        ];
        let tally = Tally::of(true, answers);
        assert_eq!((tally.changed, tally.vetoed.clone()), (2, vec![1, 2, 3]));
        match tally.verdict("k", true, 5, 3) {
            Err(CoordError::Disabled(m)) => assert!(m.contains("vetoed by the operators of nodes 1, 2, 3"), "{m}"),
            other => panic!("{other:?}"),
        }
        // Two vetoes leave three serving nodes: the enable holds.
        let answers = vec![
            answer(1, false, true),
            answer(2, false, true),
            answer(3, true, false),
            answer(4, true, false),
            answer(5, true, false),
        ];
        assert!(Tally::of(true, answers).verdict("k", true, 5, 3).is_ok());
        // A disable counts vetoed nodes as refusing.
        let answers = vec![answer(1, false, true), answer(2, false, false), answer(3, false, false)];
        assert!(Tally::of(false, answers).verdict("k", false, 5, 3).is_ok());
        // Without vetoes, too few answers is unavailability, as before.
        let answers = vec![answer(1, true, false), answer(2, true, false)];
        assert!(matches!(Tally::of(true, answers).verdict("k", true, 5, 3), Err(CoordError::Unavailable(_))));
    }

    #[test]
    fn the_version_after_the_highest_number_is_refused_not_wrapped() {
        assert_eq!(next_version("k", 0).unwrap(), 1);
        assert_eq!(next_version("k", u32::MAX - 1).unwrap(), u32::MAX);
        assert!(matches!(next_version("k", u32::MAX), Err(CoordError::Precondition(_))));
    }
}
