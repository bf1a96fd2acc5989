//! Key metadata, read from the nodes and cached, for both key families (EC keys made by DKG,
//! threshold RSA keys made by the dealer ceremony). The coordinator stores nothing: a version's
//! public package is trusted only when at least t **distinct** nodes hold it ACTIVE with
//! identical bytes, so no single node (nor t − 1 colluding ones) can make the coordinator use a
//! key of its choice. A node that contradicts itself (reports a key twice, or a version twice)
//! counts for nothing and is named in [`View::inconsistent`].

use crate::error::CoordError;
use crate::fanout::{self, Answers, Ask};
use crate::pool::Pool;
use hyok_proto::cache::Cache;
use hyok_proto::v1 as pb;
use hyok_proto::v1::node_client::NodeClient;
use hyok_proto::whole_body::WholeChannel;
use hyok_threshold::rsa::RsaPublicPackage;
use hyok_threshold::{NodeId, PublicKeyPackage, Wire};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;

/// One version as a node reports it.
#[derive(Clone, Copy, Debug)]
pub struct Reported<'a> {
    /// Version number.
    pub version: u32,
    /// The public package's wire bytes.
    pub package: &'a [u8],
    /// ACTIVE (committed) rather than PENDING.
    pub active: bool,
    /// When the node stored it.
    pub created_at_ms: u64,
    /// The generation of the shares behind it (a node reports the generation a committed
    /// reshare replaced too, while it still serves it).
    pub generation: u32,
    /// The generation of a reshare's output for this version the node has not committed.
    pub next: Option<u32>,
    /// That output's public package (empty when there is none).
    pub next_package: &'a [u8],
    /// This is the generation a committed reshare replaced, not the node's current one.
    pub replaced: bool,
}

/// A version as a node reports it, and the generation a committed reshare replaced, which an
/// ACTIVE version still serves until the reshare is finalized.
fn with_previous<'a>(
    current: Reported<'a>,
    previous: Option<&'a pb::NodeKeyGeneration>,
) -> impl Iterator<Item = Reported<'a>> {
    let previous = previous.filter(|_| current.active).map(|p| Reported {
        package: &p.public_key_package,
        generation: p.generation,
        next: None,
        next_package: &[],
        replaced: true,
        ..current
    });
    std::iter::once(current).chain(previous)
}

/// What differs between the key families: how a node's state is read and what it says.
pub trait Family: Send + Sync + 'static {
    /// A node's state of one key.
    type State: Clone + Send + Debug + 'static;
    /// A trusted version's public package.
    type Package: Send + Sync + Debug;
    /// "key" or "RSA key", for messages.
    const WHAT: &'static str;
    /// Threshold RSA keys (a reshare says which family it is for).
    const RSA: bool;
    /// The key's name.
    fn name(state: &Self::State) -> &str;
    /// Whether this node lets the key be used.
    fn enabled(state: &Self::State) -> bool;
    /// The key's usages (`KeyUsage` values); t nodes must agree on them.
    fn usages(state: &Self::State) -> Vec<i32>;
    /// The versions the node holds.
    fn versions(state: &Self::State) -> impl Iterator<Item = Reported<'_>>;
    /// Decodes a package; `None` if it does not decode.
    fn decode(bytes: &[u8]) -> Option<Self::Package>;
    /// The package's threshold.
    fn threshold(package: &Self::Package) -> usize;
    /// Reads one key's state (`Some`) or every key's (`None`) from a node.
    fn read(
        client: NodeClient<WholeChannel>,
        name: Option<String>,
        deadline: Instant,
    ) -> impl Future<Output = Result<Vec<Self::State>, Status>> + Send + 'static;
}

/// EC keys (DPRF, KEM), made by DKG.
#[derive(Debug)]
pub struct Ec;

impl Family for Ec {
    type State = pb::NodeKeyState;
    type Package = PublicKeyPackage;
    const WHAT: &'static str = "key";
    const RSA: bool = false;
    fn name(state: &pb::NodeKeyState) -> &str {
        &state.key_id
    }
    fn enabled(state: &pb::NodeKeyState) -> bool {
        state.enabled
    }
    fn usages(state: &pb::NodeKeyState) -> Vec<i32> {
        let mut usages = state.usages.clone();
        usages.sort_unstable();
        usages.dedup();
        usages
    }
    fn versions(state: &pb::NodeKeyState) -> impl Iterator<Item = Reported<'_>> {
        state.versions.iter().flat_map(|v| {
            let current = Reported {
                version: v.version,
                package: &v.public_key_package,
                active: v.active,
                created_at_ms: v.created_at_ms,
                generation: v.generation,
                next: v.next.as_ref().map(|n| n.generation),
                next_package: v.next.as_ref().map_or(&[], |n| &n.public_key_package),
                replaced: false,
            };
            with_previous(current, v.previous.as_ref())
        })
    }
    fn decode(bytes: &[u8]) -> Option<PublicKeyPackage> {
        PublicKeyPackage::from_bytes(bytes).ok()
    }
    fn threshold(package: &PublicKeyPackage) -> usize {
        usize::from(package.threshold())
    }
    async fn read(
        mut client: NodeClient<WholeChannel>,
        name: Option<String>,
        deadline: Instant,
    ) -> Result<Vec<pb::NodeKeyState>, Status> {
        match name {
            Some(key_id) => client
                .get_key_state(fanout::request(pb::GetKeyStateRequest { key_id }, deadline))
                .await
                .map(|r| vec![r.into_inner()]),
            None => client
                .list_key_states(fanout::request(pb::ListKeyStatesRequest {}, deadline))
                .await
                .map(|r| r.into_inner().keys),
        }
    }
}

/// Threshold RSA keys (DKE), made by the dealer ceremony.
#[derive(Debug)]
pub struct Rsa;

impl Family for Rsa {
    type State = pb::NodeRsaKeyState;
    type Package = RsaPublicPackage;
    const WHAT: &'static str = "RSA key";
    const RSA: bool = true;
    fn name(state: &pb::NodeRsaKeyState) -> &str {
        &state.name
    }
    fn enabled(state: &pb::NodeRsaKeyState) -> bool {
        state.enabled
    }
    fn usages(_: &pb::NodeRsaKeyState) -> Vec<i32> {
        Vec::new()
    }
    fn versions(state: &pb::NodeRsaKeyState) -> impl Iterator<Item = Reported<'_>> {
        state.versions.iter().flat_map(|v| {
            let current = Reported {
                version: v.version,
                package: &v.public_package,
                active: v.active,
                created_at_ms: v.created_at_ms,
                generation: v.generation,
                next: v.next.as_ref().map(|n| n.generation),
                next_package: v.next.as_ref().map_or(&[], |n| &n.public_key_package),
                replaced: false,
            };
            with_previous(current, v.previous.as_ref())
        })
    }
    fn decode(bytes: &[u8]) -> Option<RsaPublicPackage> {
        RsaPublicPackage::from_bytes(bytes).ok()
    }
    fn threshold(package: &RsaPublicPackage) -> usize {
        usize::from(package.threshold())
    }
    async fn read(
        mut client: NodeClient<WholeChannel>,
        name: Option<String>,
        deadline: Instant,
    ) -> Result<Vec<pb::NodeRsaKeyState>, Status> {
        match name {
            Some(name) => client
                .get_rsa_key_state(fanout::request(pb::GetRsaKeyStateRequest { name }, deadline))
                .await
                .map(|r| vec![r.into_inner()]),
            None => client
                .list_rsa_key_states(fanout::request(pb::ListRsaKeyStatesRequest {}, deadline))
                .await
                .map(|r| r.into_inner().keys),
        }
    }
}

/// One trusted key version.
#[derive(Debug)]
pub struct Trusted<F: Family> {
    /// Version number.
    pub version: u32,
    /// The newest generation of its shares that t distinct nodes hold: what requests use.
    pub generation: u32,
    /// The public package (t distinct nodes agree on it).
    pub package: F::Package,
    /// Its wire bytes.
    pub package_bytes: Vec<u8>,
    /// Creation time (the earliest any agreeing node reports).
    pub created_at_ms: u64,
}

/// A key as at least t distinct nodes describe it.
#[derive(Debug)]
pub struct View<F: Family> {
    /// The key's name.
    pub name: String,
    /// Usages (as `KeyUsage` values), agreed by at least t nodes (empty for RSA keys).
    pub usages: Vec<i32>,
    /// Trusted versions.
    pub versions: BTreeMap<u32, Trusted<F>>,
    /// Consistent nodes that report the key enabled.
    pub enabled_on: Vec<NodeId>,
    /// Nodes whose answers contradicted themselves (the key or a version listed twice); their
    /// answers were not counted.
    pub inconsistent: Vec<NodeId>,
}

/// An EC key's trusted view.
pub type KeyView = View<Ec>;
/// A trusted EC key version.
pub type TrustedVersion = Trusted<Ec>;
/// A threshold RSA key's trusted view.
pub type RsaKeyView = View<Rsa>;

impl<F: Family> View<F> {
    /// The version new operations use: the highest trusted one.
    pub fn primary(&self) -> Option<&Trusted<F>> {
        self.versions.values().next_back()
    }

    /// The primary version's number (0 when there is none).
    pub fn primary_version(&self) -> u32 {
        self.primary().map_or(0, |v| v.version)
    }

    /// `describe` applied to every trusted version, oldest first.
    pub fn each_version<T>(&self, describe: impl Fn(&Trusted<F>) -> T) -> Vec<T> {
        self.versions.values().map(describe).collect()
    }

    /// Trusted version `version`; VERSION_NOT_FOUND if there is none (a view read again may
    /// lack a version an earlier one had).
    pub fn version(&self, version: u32) -> Result<&Trusted<F>, CoordError> {
        self.versions
            .get(&version)
            .ok_or_else(|| CoordError::VersionNotFound(format!("{} {} has no version {version}", F::WHAT, self.name)))
    }

    /// Whether the key allows `usage`.
    pub fn allows(&self, usage: pb::KeyUsage) -> bool {
        self.usages.contains(&(usage as i32))
    }

    /// ENABLED when at least `threshold` nodes let it be used.
    pub fn state(&self, threshold: usize) -> pb::KeyState {
        if self.enabled_on.len() >= threshold { pb::KeyState::Enabled } else { pb::KeyState::Disabled }
    }
}

/// Builds the trusted view of key `name` from the nodes' answers; `threshold` is the quorum
/// (the pool's [`crate::pool::Pool::quorum`]), and a package of a higher t needs that many.
/// `None` when no version is held ACTIVE with identical bytes by `threshold` distinct nodes (the key does not exist as
/// far as the cluster can prove), or no usage set has `threshold` supporters.
pub fn merge<F: Family>(name: &str, answers: &[(NodeId, F::State)], threshold: usize) -> Option<View<F>> {
    // Each node's one answer about this key; a node that answers twice, or lists a version
    // twice, contradicts itself and is not counted at all.
    let mut by_node: BTreeMap<NodeId, &F::State> = BTreeMap::new();
    let mut inconsistent: BTreeSet<NodeId> = BTreeSet::new();
    for (node, state) in answers.iter().filter(|(_, s)| F::name(s) == name) {
        let mut seen = BTreeSet::new();
        if by_node.insert(*node, state).is_some() || !F::versions(state).all(|v| seen.insert((v.version, v.generation)))
        {
            inconsistent.insert(*node);
        }
    }
    by_node.retain(|node, _| !inconsistent.contains(node));
    if !inconsistent.is_empty() {
        tracing::error!(name, nodes = ?inconsistent, "nodes contradict themselves about a key; not counted");
    }

    let mut usage_tally: HashMap<Vec<i32>, usize> = HashMap::new();
    // (version, generation, package bytes) → distinct nodes holding it ACTIVE, earliest
    // creation time.
    let mut tally: BTreeMap<(u32, u32, &[u8]), (usize, u64)> = BTreeMap::new();
    for state in by_node.values() {
        *usage_tally.entry(F::usages(state)).or_default() += 1;
        for v in F::versions(state).filter(|v| v.active) {
            let entry = tally.entry((v.version, v.generation, v.package)).or_insert((0, u64::MAX));
            entry.0 += 1;
            entry.1 = entry.1.min(v.created_at_ms);
        }
    }
    let usages = usage_tally.into_iter().find(|(_, count)| *count >= threshold)?.0;
    let mut versions = BTreeMap::new();
    // Ascending (version, generation): a newer trusted generation replaces an older one.
    for ((version, generation, bytes), (count, created_at_ms)) in tally {
        if count < threshold {
            continue;
        }
        let Some(package) = F::decode(bytes) else {
            tracing::error!(name, version, what = F::WHAT, "t nodes agree on a package that does not decode");
            continue;
        };
        // A package of t′ > the quorum (a membership change raised t) needs t′ agreeing nodes.
        if count < F::threshold(&package) {
            continue;
        }
        let created_at_ms =
            versions.get(&version).map_or(created_at_ms, |t: &Trusted<F>| t.created_at_ms.min(created_at_ms));
        versions
            .insert(version, Trusted { version, generation, package, package_bytes: bytes.to_vec(), created_at_ms });
    }
    if versions.is_empty() {
        return None;
    }
    Some(View {
        name: name.to_owned(),
        usages,
        versions,
        enabled_on: by_node.iter().filter(|(_, s)| F::enabled(s)).map(|(n, _)| *n).collect(),
        inconsistent: inconsistent.into_iter().collect(),
    })
}

/// Asks reachable nodes, as `ask` says, for one key's state (`Some`) or every key's (`None`).
pub async fn read_states<F: Family>(
    pool: &Pool,
    ask: Ask,
    name: Option<&str>,
    deadline: Instant,
) -> Answers<Vec<F::State>> {
    let name = name.map(str::to_owned);
    fanout::ask_every(pool, ask, deadline, |node| F::read(node.client(), name.clone(), deadline)).await
}

/// The answers of [`read_states`] as `(node, state)` pairs.
pub fn flatten<F: Family>(answers: &Answers<Vec<F::State>>) -> Vec<(NodeId, F::State)> {
    answers
        .iter()
        .filter_map(|(n, r)| r.as_ref().ok().map(|states| (n, states)))
        .flat_map(|(n, states)| states.iter().map(|s| (*n, s.clone())))
        .collect()
}

/// Every key of the family that t nodes agree on, by name.
pub async fn list<F: Family>(pool: &Pool, deadline: Instant) -> Result<Vec<View<F>>, CoordError> {
    let answers = read_states::<F>(pool, Ask::STATE, None, deadline).await;
    let answered = answers.iter().filter(|(_, r)| r.is_ok()).count();
    if answered < pool.quorum() {
        return Err(CoordError::Unavailable(format!(
            "only {answered} nodes answered, {} needed to trust key metadata",
            pool.quorum()
        )));
    }
    let mut by_name: BTreeMap<String, Vec<(NodeId, F::State)>> = BTreeMap::new();
    for (node, state) in flatten::<F>(&answers) {
        by_name.entry(F::name(&state).to_owned()).or_default().push((node, state));
    }
    Ok(by_name.iter().filter_map(|(name, states)| merge::<F>(name, states, pool.quorum())).collect())
}

/// Cached key views of one family: refreshed in the background once `ttl` old while requests
/// keep using them, served up to [`STALE_FACTOR`] × `ttl` old when refreshes fail, and read
/// once for every concurrent miss (`hyok_proto::cache`). No metadata read is on a warm
/// request's path.
#[derive(Debug)]
pub struct Metadata<F: Family> {
    ttl: Duration,
    cache: Cache<Arc<View<F>>, CoordError>,
}

/// How many `ttl`s old a view may be served while its refreshes fail.
pub const STALE_FACTOR: u32 = 6;

impl<F: Family> Metadata<F> {
    /// An empty cache whose entries are refreshed once `ttl` old.
    pub fn new(ttl: Duration) -> Self {
        Metadata { ttl, cache: Cache::new(ttl, ttl * STALE_FACTOR) }
    }

    /// After how long a view is read again.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// How often [`Metadata::refresh_due`] should run: a tenth of `ttl`, 50 ms to 1 s.
    pub fn refresh_period(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    /// The key's view: the cached one (refreshed in the background), or read now, once for
    /// every concurrent caller.
    pub async fn get(&self, pool: &Pool, name: &str, deadline: Instant) -> Result<Arc<View<F>>, CoordError> {
        self.cache.get(name, || self.read(pool, name, deadline)).await
    }

    /// The key's view with `version` in it: reads once more if the cached view lacks it (a
    /// rotation or import through another coordinator); concurrent callers share that read.
    pub async fn get_version(
        &self,
        pool: &Pool,
        name: &str,
        version: u32,
        deadline: Instant,
    ) -> Result<Arc<View<F>>, CoordError> {
        let (view, read_at) = self.cache.get_stamped(name, || self.read(pool, name, deadline)).await?;
        if view.versions.contains_key(&version) {
            return Ok(view);
        }
        let since = read_at + Duration::from_nanos(1);
        let view = self.cache.newer(name, since, || self.read(pool, name, deadline)).await?;
        if view.versions.contains_key(&version) {
            Ok(view)
        } else {
            Err(CoordError::VersionNotFound(format!("{} {name} has no version {version}", F::WHAT)))
        }
    }

    /// Checks the name, then runs `op` on the key's view with `version` in it (for `None`, the
    /// view as cached, whose primary version `op` uses). When every node refused the generation that view names
    /// (`VersionNotFound`: a reshare through this or another coordinator finalized it after the
    /// view was read, or committed a second time over it), the view is read again and, if it
    /// now names another generation of that version, `op` runs once more on it. A refusal
    /// that a fresh read does not explain is returned as it was.
    pub async fn using<T, Fut>(
        &self,
        pool: &Pool,
        name: &str,
        version: Option<u32>,
        deadline: Instant,
        op: impl Fn(Arc<View<F>>) -> Fut,
    ) -> Result<T, CoordError>
    where
        Fut: Future<Output = Result<T, CoordError>>,
    {
        hyok_proto::validate_key_id(name).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        let view = match version {
            Some(v) => self.get_version(pool, name, v, deadline).await?,
            None => self.get(pool, name, deadline).await?,
        };
        let first = op(view.clone()).await;
        if !matches!(first, Err(CoordError::VersionNotFound(_))) {
            return first;
        }
        let named = |view: &View<F>| {
            match version {
                Some(v) => view.versions.get(&v),
                None => view.primary(),
            }
            .map(|t| (t.version, t.generation))
        };
        let Ok(again) = self.refresh(pool, name, deadline).await else { return first };
        if named(&again) == named(&view) {
            return first;
        }
        tracing::info!(
            name,
            what = F::WHAT,
            before = ?named(&view),
            now = ?named(&again),
            "the nodes refused the cached generation; asking again at the one they now hold"
        );
        op(again).await
    }

    /// Forgets a key (after a rotation, import, enable or disable through this coordinator).
    pub fn invalidate(&self, name: &str) {
        self.cache.invalidate(name);
    }

    /// Forgets every cached key (a membership change replaced every version's package).
    pub fn invalidate_all(&self) {
        self.cache.invalidate_all();
    }

    /// Checks the name, then reads the key from the nodes now (`GetKey`, `GetRsaKey`).
    pub async fn fresh(&self, pool: &Pool, name: &str, deadline: Instant) -> Result<Arc<View<F>>, CoordError> {
        hyok_proto::validate_key_id(name).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        self.refresh(pool, name, deadline).await
    }

    /// Reads the key from the nodes now (sharing a read that started since), and caches it.
    pub async fn refresh(&self, pool: &Pool, name: &str, deadline: Instant) -> Result<Arc<View<F>>, CoordError> {
        self.cache.newer(name, Instant::now(), || self.read(pool, name, deadline)).await
    }

    /// Refreshes every cached view that is due (used since it was read, `ttl` old), each
    /// within `budget`; the background half of [`Metadata::get`].
    pub async fn refresh_due(&self, pool: &Pool, budget: Duration) {
        for name in self.cache.due() {
            if let Err(error) = self.refresh(pool, &name, Instant::now() + budget).await {
                tracing::warn!(name = %name, what = F::WHAT, %error, "background metadata refresh failed; serving the cached view");
            }
        }
    }

    /// Reads every key the nodes agree on into the cache, so that the first request for each
    /// finds its view there (at start, then once per TTL). Returns how many.
    ///
    /// # Errors
    /// If fewer than t nodes answered; the cache is left as it was.
    pub async fn preload(&self, pool: &Pool, budget: Duration) -> Result<usize, CoordError> {
        let started = Instant::now();
        let views = list::<F>(pool, started + budget).await?;
        let count = views.len();
        for view in views {
            let name = view.name.clone();
            self.cache.offer(&name, Arc::new(view), started);
        }
        Ok(count)
    }

    /// Reads the key from the nodes (no cache); a key the nodes do not hold is forgotten.
    async fn read(&self, pool: &Pool, name: &str, deadline: Instant) -> Result<Arc<View<F>>, CoordError> {
        let answers = read_states::<F>(pool, Ask::STATE, Some(name), deadline).await;
        let states = flatten::<F>(&answers);
        if let Some(view) = merge::<F>(name, &states, pool.quorum()) {
            return Ok(Arc::new(view));
        }
        let not_found =
            answers.iter().filter(|(_, r)| matches!(r, Err(s) if s.code() == tonic::Code::NotFound)).count();
        let answered = states.len() + not_found;
        if answered < pool.quorum() {
            Err(CoordError::Unavailable(format!(
                "only {answered} of {} nodes answered; {} needed to trust key metadata",
                pool.all().len(),
                pool.quorum()
            )))
        } else {
            self.invalidate(name);
            Err(CoordError::NotFound(format!("no {} {name} (held by fewer than {} nodes)", F::WHAT, pool.quorum())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use curve25519_dalek::Scalar;
    use hyok_threshold::dealer::dangerous_deal;
    use hyok_threshold::rsa::deal::{PrivateKey, deal};
    use std::sync::OnceLock;

    const PEM: &str = include_str!("../../crates/threshold/tests/fixtures/rsa2048-pkcs8.pem");

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
                    ..Default::default()
                })
                .collect(),
            vetoed: false,
        }
    }

    fn packages() -> (Vec<u8>, Vec<u8>) {
        let mut rng = rand::rng();
        let ids: Vec<NodeId> = (1..=5).map(node).collect();
        let (_, honest) = dangerous_deal(&Scalar::from(11u64), 3, &ids, &mut rng).unwrap();
        let (_, forged) = dangerous_deal(&Scalar::from(12u64), 3, &ids, &mut rng).unwrap();
        (honest.to_bytes(), forged.to_bytes())
    }

    #[test]
    fn a_version_is_trusted_only_when_t_nodes_agree() {
        let (h, f) = packages();
        // Two nodes push a forged package for version 1 and a forged version 2.
        let answers = vec![
            (node(1), state("k", true, &[(1, &h)])),
            (node(2), state("k", true, &[(1, &h)])),
            (node(3), state("k", false, &[(1, &h)])),
            (node(4), state("k", true, &[(1, &f), (2, &f)])),
            (node(5), state("k", true, &[(1, &f), (2, &f)])),
        ];
        let view = merge::<Ec>("k", &answers, 3).unwrap();
        assert_eq!(view.versions.len(), 1, "the forged version 2 has only two supporters");
        assert_eq!(view.primary().unwrap().package_bytes, h);
        assert_eq!(view.enabled_on.len(), 4);
        assert_eq!(view.state(3), pb::KeyState::Enabled);
        assert!(view.allows(pb::KeyUsage::Encrypt));
        assert!(!view.allows(pb::KeyUsage::Wrap));
        assert!(view.inconsistent.is_empty());
        // With only two honest answers nothing is trusted.
        assert!(merge::<Ec>("k", &answers[..2], 3).is_none());
        assert!(merge::<Ec>("other", &answers, 3).is_none());
    }

    /// During a reshare some nodes have committed the new generation and keep the old one as
    /// `previous`, others hold only the old one: the old generation stays trusted (every node
    /// holds it) until t nodes hold the new one, which then wins.
    #[test]
    fn the_newest_generation_t_nodes_hold_is_the_one_used() {
        let (old, new) = packages();
        let with = |current: &[u8], generation: u32, previous: Option<&[u8]>| {
            let mut s = state("k", true, &[(1, current)]);
            s.versions[0].generation = generation;
            s.versions[0].previous =
                previous.map(|p| pb::NodeKeyGeneration { generation: generation - 1, public_key_package: p.to_vec() });
            s
        };
        let answers = vec![
            (node(1), with(&new, 1, Some(&old))),
            (node(2), with(&new, 1, Some(&old))),
            (node(3), with(&old, 0, None)),
            (node(4), with(&old, 0, None)),
        ];
        let view = merge::<Ec>("k", &answers, 3).unwrap();
        assert_eq!((view.versions[&1].generation, &view.versions[&1].package_bytes), (0, &old));
        let mut answers = answers;
        answers[2].1 = with(&new, 1, Some(&old));
        let view = merge::<Ec>("k", &answers, 3).unwrap();
        assert_eq!((view.versions[&1].generation, &view.versions[&1].package_bytes), (1, &new));
        // Finalized everywhere: only the new one is left, and still trusted.
        let answers: Vec<_> = (1..=3).map(|i| (node(i), with(&new, 1, None))).collect();
        assert_eq!(merge::<Ec>("k", &answers, 3).unwrap().versions[&1].generation, 1);
    }

    #[test]
    fn one_node_repeating_itself_counts_once_and_is_named() {
        let (_, f) = packages();
        // Node 4 answers three times with the forged version, and lists it twice as well.
        let repeated = vec![
            (node(4), state("k", true, &[(1, &f)])),
            (node(4), state("k", true, &[(1, &f)])),
            (node(4), state("k", true, &[(1, &f)])),
        ];
        assert!(merge::<Ec>("k", &repeated, 3).is_none(), "one node is one vote, however often it answers");
        let listed_twice: Vec<_> = (0..3).map(|_| (node(5), state("k", true, &[(1, &f), (1, &f), (1, &f)]))).collect();
        assert!(merge::<Ec>("k", &listed_twice, 3).is_none());
        // Beside three honest nodes, the repeating node is named and not counted.
        let (h, _) = packages();
        let mut answers: Vec<_> = (1..=3).map(|i| (node(i), state("k", true, &[(1, &h)]))).collect();
        answers.push((node(4), state("k", true, &[(1, &h), (1, &h)])));
        let view = merge::<Ec>("k", &answers, 3).unwrap();
        assert_eq!(view.inconsistent, vec![node(4)]);
        assert_eq!(view.enabled_on, vec![node(1), node(2), node(3)]);
    }

    fn rsa_package() -> &'static RsaPublicPackage {
        static SPLIT: OnceLock<RsaPublicPackage> = OnceLock::new();
        SPLIT.get_or_init(|| deal(&PrivateKey::from_pem(PEM).unwrap(), 3, 5, &mut rand::rng()).unwrap().1)
    }

    fn rsa_state(name: &str, enabled: bool, versions: &[(u32, &[u8], bool)]) -> pb::NodeRsaKeyState {
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
                    ..Default::default()
                })
                .collect(),
            vetoed: false,
        }
    }

    #[test]
    fn an_rsa_version_is_trusted_only_when_t_nodes_hold_it_active_with_identical_bytes() {
        let package = rsa_package();
        let honest = package.to_bytes();
        let other_t = RsaPublicPackage::new(package.public_key().clone(), 2, 5).unwrap().to_bytes();
        let answers = vec![
            (node(1), rsa_state("dke", true, &[(1, &honest, true)])),
            (node(2), rsa_state("dke", true, &[(1, &honest, true), (2, &honest, false)])),
            (node(3), rsa_state("dke", false, &[(1, &honest, true), (2, &honest, false)])),
            (node(4), rsa_state("dke", true, &[(1, &other_t, true), (2, &honest, true)])),
            (node(5), rsa_state("dke", true, &[(1, &other_t, true), (2, &honest, true)])),
        ];
        let view = merge::<Rsa>("dke", &answers, 3).unwrap();
        assert_eq!(view.versions.keys().copied().collect::<Vec<_>>(), vec![1], "version 2 is ACTIVE on two nodes");
        assert_eq!(view.primary().unwrap().package_bytes, honest);
        assert_eq!(view.enabled_on.len(), 4);
        assert!(merge::<Rsa>("dke", &answers[..2], 3).is_none());
        assert!(merge::<Rsa>("other", &answers, 3).is_none());
        // A package of a higher t (a membership change raised it) needs that many nodes, not
        // only the quorum; one of a lower t, the quorum.
        let raised = RsaPublicPackage::new(package.public_key().clone(), 4, 5).unwrap().to_bytes();
        let skewed: Vec<_> = (1..=4).map(|i| (node(i), rsa_state("dke", true, &[(1, &raised, true)]))).collect();
        assert!(merge::<Rsa>("dke", &skewed[..3], 3).is_none());
        assert_eq!(merge::<Rsa>("dke", &skewed, 3).unwrap().primary().unwrap().package_bytes, raised);
        let lowered: Vec<_> = (1..=3).map(|i| (node(i), rsa_state("dke", true, &[(1, &other_t, true)]))).collect();
        assert_eq!(merge::<Rsa>("dke", &lowered, 3).unwrap().primary().unwrap().package_bytes, other_t);
        // Nor one node saying it three times.
        let repeated: Vec<_> = (0..3).map(|_| (node(1), rsa_state("dke", true, &[(1, &honest, true)]))).collect();
        assert!(merge::<Rsa>("dke", &repeated, 3).is_none());
    }
}
