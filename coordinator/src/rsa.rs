//! Threshold RSA (DKE) on the coordinator: import a dealt key version (every node stores its
//! sealed share PENDING, then all commit), describe RSA keys (trusted only when t nodes hold a
//! version ACTIVE with byte-identical packages, as in [`crate::metadata`]), and decrypt.
//!
//! Decrypt asks `t + extra_nodes` nodes for `RsaPartial` at once (reachable ones first), asks
//! the next node whenever one fails, and every remaining reachable one after `hedge`; all within
//! the request deadline. With `t` partials it combines and checks `y^e ≡ c`; if the check fails
//! it waits for one more partial and combines again, so that the combiner can find a consistent
//! `t`-subset and name the node(s) outside it. The coordinator never sees a share or `d`.

use crate::error::CoordError;
use crate::pool::{NodeHandle, Pool, is_transport_failure};
use crate::vault::Vault;
use hyok_proto::v1 as pb;
use hyok_threshold::rsa::seal::SealedRsaShare;
use hyok_threshold::rsa::{RsaPartial, RsaPublicPackage, combine, fingerprint};
use hyok_threshold::{Error as ThresholdError, NodeId, Wire};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::Status;
use zeroize::Zeroizing;

/// An import gets more time than a single operation (every node opens and stores a share).
const IMPORT_BUDGET: Duration = Duration::from_secs(30);
/// After t nodes have answered a metadata read, how long to wait for the rest.
const STRAGGLER_GRACE: Duration = Duration::from_millis(25);

/// One trusted RSA key version.
#[derive(Debug)]
pub struct TrustedRsaVersion {
    /// Version number.
    pub version: u32,
    /// `(N, e, t, n)`, held ACTIVE with identical bytes by at least t nodes.
    pub package: RsaPublicPackage,
    /// Its wire bytes.
    pub package_bytes: Vec<u8>,
    /// SHA-256 of the SubjectPublicKeyInfo, hex.
    pub fingerprint: String,
    /// The earliest creation time an agreeing node reports.
    pub created_at_ms: u64,
}

/// An RSA key as at least t nodes describe it.
#[derive(Debug)]
pub struct RsaKeyView {
    /// The key name.
    pub name: String,
    /// Trusted versions.
    pub versions: BTreeMap<u32, TrustedRsaVersion>,
    /// Nodes that report the key enabled.
    pub enabled_on: Vec<NodeId>,
}

impl RsaKeyView {
    /// The highest trusted version.
    pub fn primary(&self) -> Option<&TrustedRsaVersion> {
        self.versions.values().next_back()
    }
}

/// The trusted view of one RSA key from the nodes' answers; `None` when no version is held
/// ACTIVE with identical package bytes by `threshold` nodes (or the agreed package's threshold
/// is not the cluster's).
pub fn merge(name: &str, answers: &[(NodeId, pb::NodeRsaKeyState)], threshold: usize) -> Option<RsaKeyView> {
    let mut tally: BTreeMap<(u32, &[u8]), (usize, u64)> = BTreeMap::new();
    for (_, state) in answers.iter().filter(|(_, s)| s.name == name) {
        for v in state.versions.iter().filter(|v| v.active) {
            let entry = tally.entry((v.version, v.public_package.as_slice())).or_insert((0, u64::MAX));
            entry.0 += 1;
            entry.1 = entry.1.min(v.created_at_ms);
        }
    }
    let mut versions = BTreeMap::new();
    for ((version, bytes), (count, created_at_ms)) in tally {
        if count < threshold {
            continue;
        }
        let Ok(package) = RsaPublicPackage::from_bytes(bytes) else {
            tracing::error!(name, version, "t nodes agree on an RSA package that does not decode");
            continue;
        };
        if usize::from(package.threshold()) != threshold {
            tracing::error!(name, version, "RSA package threshold differs from the configured threshold");
            continue;
        }
        let fingerprint = fingerprint(package.public_key());
        versions.insert(
            version,
            TrustedRsaVersion { version, package, package_bytes: bytes.to_vec(), fingerprint, created_at_ms },
        );
    }
    if versions.is_empty() {
        return None;
    }
    let enabled_on = answers.iter().filter(|(_, s)| s.name == name && s.enabled).map(|(n, _)| *n).collect();
    Some(RsaKeyView { name: name.to_owned(), versions, enabled_on })
}

/// Cached RSA key views (they change only by import or enable/disable).
#[derive(Debug)]
pub struct RsaMetadata {
    ttl: Duration,
    cache: RwLock<HashMap<String, (Instant, Arc<RsaKeyView>)>>,
}

impl RsaMetadata {
    /// An empty cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> Self {
        RsaMetadata { ttl, cache: RwLock::new(HashMap::new()) }
    }

    /// Forgets a key.
    pub fn invalidate(&self, name: &str) {
        if let Ok(mut cache) = self.cache.write() {
            cache.remove(name);
        }
    }

    fn cached(&self, name: &str) -> Option<Arc<RsaKeyView>> {
        let cache = self.cache.read().ok()?;
        let (at, view) = cache.get(name)?;
        (at.elapsed() < self.ttl).then(|| view.clone())
    }

    /// Reads the key from the nodes now.
    pub async fn refresh(&self, pool: &Pool, name: &str, deadline: Instant) -> Result<Arc<RsaKeyView>, CoordError> {
        let answers = rsa_states(pool, Some(name), deadline).await;
        let states = flatten(&answers);
        if let Some(view) = merge(name, &states, pool.threshold()) {
            let view = Arc::new(view);
            if let Ok(mut cache) = self.cache.write() {
                cache.insert(name.to_owned(), (Instant::now(), view.clone()));
            }
            return Ok(view);
        }
        self.invalidate(name);
        let not_found =
            answers.iter().filter(|(_, r)| matches!(r, Err(s) if s.code() == tonic::Code::NotFound)).count();
        let answered = states.len() + not_found;
        if answered < pool.threshold() {
            Err(CoordError::Unavailable(format!(
                "only {answered} of {} nodes answered; {} needed to trust RSA key metadata",
                pool.all().len(),
                pool.threshold()
            )))
        } else {
            Err(CoordError::NotFound(format!("no RSA key {name} (held by fewer than {} nodes)", pool.threshold())))
        }
    }

    /// The key's view with `version` in it (refreshed once if the cached view lacks it).
    pub async fn get_version(
        &self,
        pool: &Pool,
        name: &str,
        version: u32,
        deadline: Instant,
    ) -> Result<Arc<RsaKeyView>, CoordError> {
        if let Some(view) = self.cached(name)
            && view.versions.contains_key(&version)
        {
            return Ok(view);
        }
        let view = self.refresh(pool, name, deadline).await?;
        if view.versions.contains_key(&version) {
            Ok(view)
        } else {
            Err(CoordError::VersionNotFound(format!("RSA key {name} has no version {version}")))
        }
    }
}

type StateAnswers = Vec<(NodeId, Result<Vec<pb::NodeRsaKeyState>, Status>)>;

fn flatten(answers: &StateAnswers) -> Vec<(NodeId, pb::NodeRsaKeyState)> {
    answers
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|states| (n, states)))
        .flat_map(|(n, states)| states.iter().map(|s| (*n, s.clone())))
        .collect()
}

fn with_timeout<T>(message: T, deadline: Instant) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    request
}

/// Asks reachable nodes (every node if fewer than t are) for one RSA key's state (`Some`) or
/// every one's (`None`); waits for all, but no more than a short grace once t have answered.
async fn rsa_states(pool: &Pool, name: Option<&str>, deadline: Instant) -> StateAnswers {
    let nodes = pool.ordered();
    let up = nodes.iter().filter(|n| n.is_up()).count();
    let asked: Vec<_> = if up >= pool.threshold() { nodes.into_iter().filter(|n| n.is_up()).collect() } else { nodes };
    let mut calls = JoinSet::new();
    for node in asked {
        let name = name.map(str::to_owned);
        calls.spawn(async move {
            let mut client = node.client();
            let result = match name {
                Some(name) => client
                    .get_rsa_key_state(with_timeout(pb::GetRsaKeyStateRequest { name }, deadline))
                    .await
                    .map(|r| vec![r.into_inner()]),
                None => client
                    .list_rsa_key_states(with_timeout(pb::ListRsaKeyStatesRequest {}, deadline))
                    .await
                    .map(|r| r.into_inner().keys),
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
        let Ok(Some(Ok((id, result)))) = tokio::time::timeout_at(soft_deadline, calls.join_next()).await else {
            break;
        };
        out.push((id, result));
        if out.iter().filter(|(_, r)| r.is_ok()).count() >= pool.threshold() && soft_deadline == deadline {
            soft_deadline = (Instant::now() + STRAGGLER_GRACE).min(deadline);
        }
    }
    out
}

/// Calls `f` on every node concurrently and returns each node's answer (a timeout is
/// DEADLINE_EXCEEDED).
async fn on_every_node<T, F, Fut>(pool: &Pool, deadline: Instant, f: F) -> Vec<(NodeId, Result<T, Status>)>
where
    T: Send + 'static,
    F: Fn(Arc<NodeHandle>) -> Fut,
    Fut: Future<Output = Result<T, Status>> + Send + 'static,
{
    let mut calls = JoinSet::new();
    for node in pool.all() {
        let id = node.id;
        let call = f(node.clone());
        calls.spawn(async move {
            let result = tokio::time::timeout_at(deadline, call)
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer before the deadline")));
            (id, result)
        });
    }
    let mut out = Vec::new();
    while let Some(joined) = calls.join_next().await {
        if let Ok(answer) = joined {
            out.push(answer);
        }
    }
    out.sort_by_key(|(id, _)| *id);
    out
}

fn describe<T>(answers: &[(NodeId, Result<T, Status>)]) -> String {
    answers
        .iter()
        .filter_map(|(id, r)| r.as_ref().err().map(|s| format!("node {}: {}: {}", id.get(), s.code(), s.message())))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Checks a ciphertext against the key before any node is asked: exactly `k` bytes encoding
/// `0 < c < N` (equal-length big-endian byte strings compare like the integers).
pub fn check_ciphertext(package: &RsaPublicPackage, ciphertext: &[u8]) -> Result<(), CoordError> {
    let key = package.public_key();
    let k = key.size();
    if ciphertext.len() != k {
        return Err(CoordError::Invalid(format!("ciphertext must be {k} bytes (the modulus length)")));
    }
    if ciphertext.iter().all(|b| *b == 0) || ciphertext >= key.modulus_bytes().as_slice() {
        return Err(CoordError::Invalid("ciphertext is not below the modulus".into()));
    }
    Ok(())
}

/// Why one node gave no partial.
#[derive(Debug)]
enum Miss {
    NotFound,
    Disabled,
    Invalid(String),
    Other(String),
}

/// What to do with the partials gathered so far.
#[derive(Debug)]
pub enum Verdict {
    /// The plaintext; the listed nodes' partials were wrong.
    Done(Zeroizing<Vec<u8>>, Vec<NodeId>),
    /// `y^e ≢ c` for every t-subset: drop the listed (malformed) partials, then combine again
    /// with at least `need` partials.
    More {
        /// Nodes whose partials were malformed.
        culprits: Vec<NodeId>,
        /// How many partials the next attempt needs.
        need: usize,
    },
    /// Give up.
    Fail(CoordError),
}

/// One combine attempt over `partials` (at least t): the decision the gathering loop acts on.
pub fn attempt(package: &RsaPublicPackage, ciphertext: &[u8], partials: &[RsaPartial]) -> Verdict {
    match combine::decrypt(package, ciphertext, partials) {
        Ok(opened) => Verdict::Done(opened.value, opened.culprits),
        // y^e ≡ c held: the ciphertext itself is not valid OAEP under this key.
        Err(ThresholdError::OaepDecodingFailed) => Verdict::Fail(CoordError::DataLoss),
        Err(ThresholdError::RsaCombineFailed { culprits }) => {
            let kept = partials.len() - partials.iter().filter(|p| culprits.contains(&p.node())).count();
            Verdict::More { culprits, need: kept + 1 }
        }
        Err(ThresholdError::UnknownNode { node }) => {
            Verdict::More { culprits: NodeId::new(node).into_iter().collect(), need: partials.len() }
        }
        Err(ThresholdError::DuplicateNode { node }) => Verdict::More { culprits: vec![node], need: partials.len() },
        Err(ThresholdError::Malformed { .. }) => {
            Verdict::Fail(CoordError::Invalid("ciphertext is not a valid RSA ciphertext for this key".into()))
        }
        Err(e) => Verdict::Fail(CoordError::Internal(e.to_string())),
    }
}

impl Vault {
    fn rsa_info(&self, view: &RsaKeyView) -> pb::RsaKeyInfo {
        pb::RsaKeyInfo {
            name: view.name.clone(),
            primary_version: view.primary().map_or(0, |v| v.version),
            versions: view
                .versions
                .values()
                .map(|v| pb::RsaKeyVersion {
                    version: v.version,
                    public_package: v.package_bytes.clone(),
                    modulus: v.package.public_key().modulus_bytes(),
                    exponent: v.package.public_key().exponent_bytes(),
                    fingerprint: v.fingerprint.clone(),
                    created_at_ms: v.created_at_ms,
                })
                .collect(),
            state: if view.enabled_on.len() >= self.pool.threshold() {
                pb::KeyState::Enabled as i32
            } else {
                pb::KeyState::Disabled as i32
            },
        }
    }

    /// `ImportRsaKey`: every node stores its sealed share PENDING; only if all of them did,
    /// every node commits. Otherwise every node drops the version and nothing is usable.
    pub async fn import_rsa_key(&self, req: pb::ImportRsaKeyRequest) -> Result<pb::RsaKeyInfo, CoordError> {
        let deadline = Instant::now() + IMPORT_BUDGET;
        hyok_proto::validate_key_id(&req.name).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        if req.version == 0 {
            return Err(CoordError::Invalid("version must be at least 1".into()));
        }
        let package = RsaPublicPackage::from_bytes(&req.public_package)
            .map_err(|_| CoordError::Invalid("malformed RSA public package".into()))?;
        let n = self.pool.all().len();
        if usize::from(package.threshold()) != self.pool.threshold() || usize::from(package.nodes()) != n {
            return Err(CoordError::Invalid(format!(
                "the package is {}-of-{}; this cluster is {}-of-{n}",
                package.threshold(),
                package.nodes(),
                self.pool.threshold()
            )));
        }
        let mut sealed: HashMap<NodeId, Vec<u8>> = HashMap::new();
        for share in &req.shares {
            let id = u16::try_from(share.node_id).ok().and_then(|i| NodeId::new(i).ok());
            let Some(id) = id.filter(|id| self.pool.get(*id).is_some()) else {
                return Err(CoordError::Invalid(format!("share for unknown node {}", share.node_id)));
            };
            SealedRsaShare::from_bytes(&share.sealed)
                .map_err(|_| CoordError::Invalid(format!("malformed sealed share for node {}", id.get())))?;
            if sealed.insert(id, share.sealed.clone()).is_some() {
                return Err(CoordError::Invalid(format!("two shares for node {}", id.get())));
            }
        }
        if sealed.len() != n {
            return Err(CoordError::Invalid(format!(
                "one sealed share per node is needed ({n}), got {}",
                sealed.len()
            )));
        }
        let _one_at_a_time = tokio::time::timeout_at(deadline, self.rsa_import.lock())
            .await
            .map_err(|_| CoordError::Unavailable("another RSA import is in progress".into()))?;
        // A version held ACTIVE anywhere exists (PENDING leftovers of a failed import do not).
        let states = rsa_states(&self.pool, Some(&req.name), deadline).await;
        let highest = flatten(&states)
            .iter()
            .flat_map(|(_, s)| s.versions.iter().filter(|v| v.active).map(|v| v.version))
            .max()
            .unwrap_or(0);
        if req.version <= highest {
            return Err(CoordError::Exists(format!("RSA key {} already has version {highest}", req.name)));
        }

        let sealed = Arc::new(sealed);
        let stored = on_every_node(&self.pool, deadline, |node| {
            let message = pb::RsaStoreRequest {
                name: req.name.clone(),
                version: req.version,
                public_package: req.public_package.clone(),
                sealed_share: sealed.get(&node.id).cloned().unwrap_or_default(),
                request_id: req.request_id.clone(),
            };
            async move { node.client().rsa_store(with_timeout(message, deadline)).await.map(|_| ()) }
        })
        .await;
        let failed = stored.len() < n || stored.iter().any(|(_, r)| r.is_err());
        let commit = !failed;
        let committed = on_every_node(&self.pool, deadline, |node| {
            let message = pb::RsaCommitRequest {
                name: req.name.clone(),
                version: req.version,
                commit,
                request_id: req.request_id.clone(),
            };
            async move { node.client().rsa_commit(with_timeout(message, deadline)).await.map(|_| ()) }
        })
        .await;
        self.rsa_metadata.invalidate(&req.name);
        if failed {
            let detail = describe(&stored);
            let any = |code: tonic::Code| stored.iter().any(|(_, r)| matches!(r, Err(s) if s.code() == code));
            return Err(if any(tonic::Code::AlreadyExists) {
                CoordError::Exists(format!("RSA key {}/{} already exists: {detail}", req.name, req.version))
            } else if any(tonic::Code::InvalidArgument) {
                CoordError::Invalid(format!("a node refused its share: {detail}"))
            } else {
                CoordError::Unavailable(format!("every node must store its share; aborted: {detail}"))
            });
        }
        let ok = committed.iter().filter(|(_, r)| r.is_ok()).count();
        if ok < n {
            tracing::warn!(
                name = req.name,
                version = req.version,
                detail = describe(&committed),
                "RSA commit missed nodes"
            );
        }
        if ok < self.pool.threshold() {
            return Err(CoordError::Unavailable(format!(
                "committed on {ok} nodes, {} needed: {}",
                self.pool.threshold(),
                describe(&committed)
            )));
        }
        let view = self.rsa_metadata.refresh(&self.pool, &req.name, deadline).await?;
        Ok(self.rsa_info(&view))
    }

    /// `GetRsaKey`: read fresh from the nodes.
    pub async fn get_rsa_key(&self, name: &str, deadline: Instant) -> Result<pb::RsaKeyInfo, CoordError> {
        hyok_proto::validate_key_id(name).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        let view = self.rsa_metadata.refresh(&self.pool, name, deadline).await?;
        Ok(self.rsa_info(&view))
    }

    /// `ListRsaKeys`: every RSA key that t nodes agree on.
    pub async fn list_rsa_keys(&self, deadline: Instant) -> Result<Vec<pb::RsaKeyInfo>, CoordError> {
        let answers = rsa_states(&self.pool, None, deadline).await;
        let answered = answers.iter().filter(|(_, r)| r.is_ok()).count();
        if answered < self.pool.threshold() {
            return Err(CoordError::Unavailable(format!(
                "only {answered} nodes answered, {} needed to trust key metadata",
                self.pool.threshold()
            )));
        }
        let mut by_name: BTreeMap<String, Vec<(NodeId, pb::NodeRsaKeyState)>> = BTreeMap::new();
        for (node, state) in flatten(&answers) {
            by_name.entry(state.name.clone()).or_default().push((node, state));
        }
        Ok(by_name
            .iter()
            .filter_map(|(name, states)| merge(name, states, self.pool.threshold()))
            .map(|view| self.rsa_info(&view))
            .collect())
    }

    /// `RsaDecrypt`: t partials (more if one is wrong), combined and checked, OAEP removed.
    pub async fn rsa_decrypt(
        &self,
        name: &str,
        version: u32,
        ciphertext: &[u8],
        request_id: &str,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, CoordError> {
        hyok_proto::validate_key_id(name).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        if version == 0 {
            return Err(CoordError::Invalid("version must be at least 1".into()));
        }
        let view = self.rsa_metadata.get_version(&self.pool, name, version, deadline).await?;
        let trusted = view.versions.get(&version).ok_or(CoordError::Internal("version vanished".into()))?;
        check_ciphertext(&trusted.package, ciphertext)?;
        let request = pb::RsaPartialRequest {
            name: name.to_owned(),
            version,
            ciphertext: ciphertext.to_vec(),
            request_id: request_id.to_owned(),
        };
        let t = self.pool.threshold();
        let mut waiting: VecDeque<Arc<NodeHandle>> = self.pool.ordered().into();
        let mut inflight: JoinSet<(NodeId, Result<pb::RsaPartialResponse, Status>)> = JoinSet::new();
        let launch = |waiting: &mut VecDeque<Arc<NodeHandle>>,
                      inflight: &mut JoinSet<(NodeId, Result<pb::RsaPartialResponse, Status>)>,
                      only_up: bool|
         -> bool {
            let Some(node) = waiting.front().cloned() else { return false };
            if only_up && !node.is_up() {
                return false;
            }
            waiting.pop_front();
            let message = request.clone();
            inflight.spawn(async move {
                let result = node.client().rsa_partial(with_timeout(message, deadline)).await.map(|r| r.into_inner());
                if let Err(status) = &result
                    && is_transport_failure(status)
                {
                    node.mark_down(Duration::from_secs(1), status.message());
                }
                (node.id, result)
            });
            true
        };
        for _ in 0..t + self.extra() {
            if !launch(&mut waiting, &mut inflight, false) {
                break;
            }
        }
        let hedge_at = Instant::now() + self.hedge();
        let mut hedged = false;
        let mut partials: Vec<RsaPartial> = Vec::new();
        let mut misses: Vec<(NodeId, Miss)> = Vec::new();
        let mut need = t;
        let mut combine_failed = false;
        loop {
            if partials.len() >= need {
                match attempt(&trusted.package, ciphertext, &partials) {
                    Verdict::Done(plaintext, culprits) => {
                        for culprit in culprits {
                            if let Some(node) = self.pool.get(culprit) {
                                node.record_invalid_partial(name, version);
                            }
                        }
                        return Ok(plaintext);
                    }
                    Verdict::Fail(e) => return Err(e),
                    Verdict::More { culprits, need: next } => {
                        combine_failed = true;
                        for culprit in &culprits {
                            if let Some(node) = self.pool.get(*culprit) {
                                node.record_invalid_partial(name, version);
                            }
                            misses.push((*culprit, Miss::Other("malformed partial".into())));
                        }
                        partials.retain(|p| !culprits.contains(&p.node()));
                        need = next.max(t);
                        // Ask for as many more as the next attempt needs, at once.
                        for _ in partials.len() + inflight.len()..need {
                            if !launch(&mut waiting, &mut inflight, false) {
                                break;
                            }
                        }
                        continue;
                    }
                }
            }
            if inflight.is_empty() && !launch(&mut waiting, &mut inflight, false) {
                return Err(rsa_shortfall(need, partials.len(), &misses, combine_failed));
            }
            tokio::select! {
                joined = inflight.join_next() => {
                    let Some(Ok((id, answer))) = joined else { continue };
                    match answer {
                        Ok(response) => match RsaPartial::from_bytes(&response.partial) {
                            Ok(p) if p.node() == id && !partials.iter().any(|q| q.node() == id) => partials.push(p),
                            _ => {
                                if let Some(node) = self.pool.get(id) {
                                    node.record_invalid_partial(name, version);
                                }
                                misses.push((id, Miss::Other("malformed partial".into())));
                                launch(&mut waiting, &mut inflight, false);
                            }
                        },
                        Err(status) => {
                            let miss = match status.code() {
                                tonic::Code::NotFound => Miss::NotFound,
                                tonic::Code::FailedPrecondition
                                    if hyok_proto::Reason::of(&status) == Some(hyok_proto::Reason::KeyDisabled) =>
                                {
                                    Miss::Disabled
                                }
                                tonic::Code::InvalidArgument => Miss::Invalid(status.message().to_owned()),
                                code => Miss::Other(format!("{code}: {}", status.message())),
                            };
                            misses.push((id, miss));
                            launch(&mut waiting, &mut inflight, false);
                        }
                    }
                }
                _ = tokio::time::sleep_until(hedge_at), if !hedged => {
                    hedged = true;
                    while launch(&mut waiting, &mut inflight, true) {}
                }
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(CoordError::Unavailable(format!(
                        "only {} of the {need} RSA partials needed arrived before the deadline",
                        partials.len()
                    )));
                }
            }
        }
    }
}

/// The error when every node has been asked and too few partials combine: a refusal every
/// node that answered agrees on (disabled, not found), else UNAVAILABLE.
fn rsa_shortfall(need: usize, got: usize, misses: &[(NodeId, Miss)], combine_failed: bool) -> CoordError {
    let detail: Vec<String> = misses
        .iter()
        .map(|(n, m)| match m {
            Miss::NotFound => format!("node {}: not found", n.get()),
            Miss::Disabled => format!("node {}: disabled", n.get()),
            Miss::Invalid(why) | Miss::Other(why) => format!("node {}: {why}", n.get()),
        })
        .collect();
    let summary = format!("{got} of {need} partials; {}", detail.join("; "));
    if let Some((_, Miss::Invalid(why))) = misses.iter().find(|(_, m)| matches!(m, Miss::Invalid(_))) {
        return CoordError::Invalid(why.clone());
    }
    if combine_failed {
        return CoordError::Unavailable(format!(
            "RSA partials did not combine to a valid decryption and no consistent set was found: {summary}"
        ));
    }
    let refused = |f: fn(&Miss) -> bool| misses.iter().filter(|(_, m)| f(m)).count();
    let disabled = refused(|m| matches!(m, Miss::Disabled));
    let not_found = refused(|m| matches!(m, Miss::NotFound));
    if disabled > 0 && disabled + not_found == misses.len() {
        return CoordError::Disabled(format!("RSA key is disabled on too many nodes: {summary}"));
    }
    if not_found > 0 && not_found == misses.len() {
        return CoordError::VersionNotFound(format!("RSA key version not found: {summary}"));
    }
    CoordError::Unavailable(format!("not enough nodes answered: {summary}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyok_threshold::rsa::deal::{PrivateKey, deal};
    use hyok_threshold::rsa::{RsaKeyShare, oaep, partial};
    use std::sync::OnceLock;

    const PEM: &str = include_str!("../../crates/threshold/tests/fixtures/rsa2048-pkcs8.pem");

    fn node(i: u16) -> NodeId {
        NodeId::new(i).unwrap()
    }

    fn split() -> &'static (Vec<RsaKeyShare>, RsaPublicPackage) {
        static SPLIT: OnceLock<(Vec<RsaKeyShare>, RsaPublicPackage)> = OnceLock::new();
        SPLIT.get_or_init(|| deal(&PrivateKey::from_pem(PEM).unwrap(), 3, 5, &mut rand::rng()).unwrap())
    }

    fn state(name: &str, enabled: bool, versions: &[(u32, &[u8], bool)]) -> pb::NodeRsaKeyState {
        pb::NodeRsaKeyState {
            name: name.into(),
            enabled,
            versions: versions
                .iter()
                .map(|(v, p, active)| pb::NodeRsaKeyVersion {
                    version: *v,
                    public_package: p.to_vec(),
                    active: *active,
                    created_at_ms: 7,
                })
                .collect(),
        }
    }

    #[test]
    fn an_rsa_version_is_trusted_only_when_t_nodes_hold_it_active_with_identical_bytes() {
        let (_, package) = split();
        let honest = package.to_bytes();
        let other_t = RsaPublicPackage::new(package.public_key().clone(), 2, 5).unwrap().to_bytes();
        let answers = vec![
            (node(1), state("dke", true, &[(1, &honest, true)])),
            (node(2), state("dke", true, &[(1, &honest, true), (2, &honest, false)])),
            (node(3), state("dke", false, &[(1, &honest, true), (2, &honest, false)])),
            (node(4), state("dke", true, &[(1, &other_t, true), (2, &honest, true)])),
            (node(5), state("dke", true, &[(1, &other_t, true), (2, &honest, true)])),
        ];
        let view = merge("dke", &answers, 3).unwrap();
        assert_eq!(view.versions.keys().copied().collect::<Vec<_>>(), vec![1], "version 2 is ACTIVE on two nodes");
        assert_eq!(view.primary().unwrap().package_bytes, honest);
        assert_eq!(view.primary().unwrap().fingerprint, fingerprint(package.public_key()));
        assert_eq!(view.enabled_on.len(), 4);
        assert!(merge("dke", &answers[..2], 3).is_none());
        assert!(merge("other", &answers, 3).is_none());
        // Agreement on a package of another threshold is not trusted either.
        let skewed: Vec<_> = (1..=3).map(|i| (node(i), state("dke", true, &[(1, &other_t, true)]))).collect();
        assert!(merge("dke", &skewed, 3).is_none());
    }

    #[test]
    fn ciphertexts_must_be_k_bytes_and_between_zero_and_n() {
        let (_, package) = split();
        let key = package.public_key();
        let ok = oaep::encrypt(key, b"m", &mut rand::rng()).unwrap();
        assert!(check_ciphertext(package, &ok).is_ok());
        for bad in [vec![], vec![1; key.size() - 1], vec![0; key.size()], key.modulus_bytes(), vec![0xff; key.size()]] {
            assert!(matches!(check_ciphertext(package, &bad), Err(CoordError::Invalid(_))), "{}", bad.len());
        }
    }

    #[test]
    fn a_wrong_partial_among_exactly_t_asks_for_one_more_and_is_then_named() {
        let (shares, package) = split();
        let c = oaep::encrypt(package.public_key(), b"dke key", &mut rand::rng()).unwrap();
        let mut partials: Vec<RsaPartial> = shares.iter().map(|s| partial::evaluate(s, package, &c).unwrap()).collect();
        // Node 2 lies with a well-formed value.
        let mut lie = partials[1].value().to_vec();
        lie[10] ^= 1;
        partials[1] = RsaPartial::new(node(2), lie);
        match attempt(package, &c, &partials[..3]) {
            Verdict::More { culprits, need } => assert_eq!((culprits, need), (vec![], 4)),
            other => panic!("{other:?}"),
        }
        match attempt(package, &c, &partials[..4]) {
            Verdict::Done(m, culprits) => assert_eq!((&m[..], culprits), (&b"dke key"[..], vec![node(2)])),
            other => panic!("{other:?}"),
        }
        // A malformed partial is named at once.
        let mut malformed = partials[..3].to_vec();
        malformed[1] = RsaPartial::new(node(2), vec![1, 2, 3]);
        assert!(
            matches!(attempt(package, &c, &malformed), Verdict::More { culprits, need: 3 } if culprits == vec![node(2)])
        );
        // A valid combination of a ciphertext that is not OAEP is DATA_LOSS.
        let mut not_oaep = vec![0u8; package.public_key().size()];
        not_oaep[5] = 7;
        let honest: Vec<RsaPartial> =
            shares[..3].iter().map(|s| partial::evaluate(s, package, &not_oaep).unwrap()).collect();
        assert!(matches!(attempt(package, &not_oaep, &honest), Verdict::Fail(CoordError::DataLoss)));
    }

    #[test]
    fn shortfalls_map_to_the_refusal_every_node_agrees_on() {
        let disabled = [(node(1), Miss::Disabled), (node(2), Miss::Disabled), (node(3), Miss::NotFound)];
        assert!(matches!(rsa_shortfall(3, 0, &disabled, false), CoordError::Disabled(_)));
        assert!(matches!(rsa_shortfall(3, 0, &[(node(1), Miss::NotFound)], false), CoordError::VersionNotFound(_)));
        let mixed = [(node(1), Miss::Disabled), (node(2), Miss::Other("unavailable".into()))];
        assert!(matches!(rsa_shortfall(3, 1, &mixed, false), CoordError::Unavailable(_)));
        assert!(matches!(
            rsa_shortfall(3, 1, &[(node(1), Miss::Invalid("bad".into()))], false),
            CoordError::Invalid(_)
        ));
        assert!(matches!(rsa_shortfall(4, 3, &[], true), CoordError::Unavailable(_)));
    }
}
