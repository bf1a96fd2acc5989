//! The node's logic, in plain types (no network): partial evaluations and unwraps with the
//! node's own policy checks, the DKG state machine per session, key state, audit.

use crate::keys::{KeyCache, KeyError, LoadedVersion};
use crate::rsa::RsaKeyCache;
use hyok_evidence::policy::Request;
use hyok_proto::v1 as pb;
use hyok_store::{AuditEvent, Store, Usages};
use hyok_threshold::Manifest;
use hyok_threshold::audit_head;
use hyok_threshold::dkg::{self, round1, round2};
use hyok_threshold::dprf::{self, DprfInput, HashedInput};
use hyok_threshold::kem::{self, WrappedKey};
use hyok_threshold::{Coefficient, IdentityPublicKey, NodeId, NodeSecrets, SignedKeyBundle, Wire};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most items one batch may carry.
pub const MAX_BATCH: usize = 1024;
/// Most DKG sessions a node keeps open at once (older ones are dropped).
const MAX_SESSIONS: usize = 64;

/// A request-level failure, mapped to a gRPC status in `service.rs`.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Malformed input.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// Unknown session or key.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request is valid but this node's state does not allow it.
    #[error("failed precondition: {0}")]
    Precondition(String),
    /// The key is disabled on this node (sent with `hyok-reason: key-disabled`).
    #[error("disabled: {0}")]
    Disabled(String),
    /// The key version already exists (ACTIVE) here.
    #[error("already exists: {0}")]
    Exists(String),
    /// The request disagrees with this node's cluster manifest, or none is installed.
    #[error("refused by the cluster manifest: {0}")]
    Manifest(String),
    /// The requester's evidence is missing or does not cover the request.
    #[error("permission denied: {0}")]
    Denied(String),
    /// Storage or internal failure (details are logged, not returned).
    #[error("internal error")]
    Internal,
}

/// `2,5` for nodes 2 and 5 (`-` for none), for audit entries.
pub(crate) fn ids(nodes: &[NodeId]) -> String {
    if nodes.is_empty() {
        return "-".into();
    }
    nodes.iter().map(|n| n.get().to_string()).collect::<Vec<_>>().join(",")
}

/// SHA-256 of `bytes`, for audit digests.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

impl NodeError {
    /// The kind of failure, one lowercase word (for audit entries of refusals).
    pub fn kind(&self) -> &'static str {
        match self {
            NodeError::Invalid(_) => "invalid",
            NodeError::NotFound(_) => "not_found",
            NodeError::Precondition(_) => "precondition",
            NodeError::Disabled(_) => "disabled",
            NodeError::Exists(_) => "exists",
            NodeError::Manifest(_) => "manifest",
            NodeError::Denied(_) => "permission_denied",
            NodeError::Internal => "internal",
        }
    }
}

impl From<hyok_store::Error> for NodeError {
    fn from(e: hyok_store::Error) -> Self {
        match e {
            hyok_store::Error::NotFound(what) => NodeError::NotFound(what),
            hyok_store::Error::Exists(what) => NodeError::Precondition(format!("{what} already exists")),
            hyok_store::Error::Invalid(what) => NodeError::Invalid(what.to_owned()),
            other => {
                tracing::error!(error = %other, "store failure");
                NodeError::Internal
            }
        }
    }
}

/// Decodes every DKG package of a round; malformed input is refused before the session is
/// touched, so a bad request cannot destroy a run in progress.
pub(crate) fn decode_all<T: Wire>(packages: &[Vec<u8>]) -> Result<Vec<T>, NodeError> {
    packages.iter().map(|b| T::from_bytes(b)).collect::<Result<_, _>>().map_err(|e| NodeError::Invalid(e.to_string()))
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Key usage enum of the API → store bit.
pub fn usage_bit(u: pb::KeyUsage) -> Option<u8> {
    match u {
        pb::KeyUsage::Encrypt => Some(Usages::ENCRYPT),
        pb::KeyUsage::Decrypt => Some(Usages::DECRYPT),
        pb::KeyUsage::Wrap => Some(Usages::WRAP),
        pb::KeyUsage::Unwrap => Some(Usages::UNWRAP),
        pb::KeyUsage::Unspecified => None,
    }
}

/// Store bits → API enum values.
pub fn usages_to_proto(u: Usages) -> Vec<i32> {
    [
        (Usages::ENCRYPT, pb::KeyUsage::Encrypt),
        (Usages::DECRYPT, pb::KeyUsage::Decrypt),
        (Usages::WRAP, pb::KeyUsage::Wrap),
        (Usages::UNWRAP, pb::KeyUsage::Unwrap),
    ]
    .into_iter()
    .filter(|(bit, _)| u.allows(*bit))
    .map(|(_, e)| e as i32)
    .collect()
}

pub(crate) struct SessionMeta {
    pub(crate) key_id: String,
    pub(crate) version: u32,
    pub(crate) usages: Usages,
    /// For a reshare: the generation it produces (its output goes to the store's `next`), and
    /// once finished, the package it produced.
    pub(crate) generation: Option<u32>,
    pub(crate) package: Vec<u8>,
    /// A reshare of a threshold RSA key's version (else an EC key's).
    pub(crate) rsa: bool,
    /// A membership change's reshare into this epoch (committed by `CommitEpoch` only); 0 else.
    pub(crate) epoch: u64,
}

pub(crate) enum Session {
    Round1(SessionMeta, Box<round1::SecretPackage>),
    Round2(SessionMeta, Box<round2::SecretPackage>),
    /// A reshare's receiver waiting for the dealers' packages.
    ReshareRound1(SessionMeta, Box<hyok_threshold::reshare::Parameters>),
    /// A reshare's receiver waiting for the complaints.
    ReshareRound2(SessionMeta, Box<hyok_threshold::reshare::ReceiverState>),
    /// The same two for a threshold RSA key's version.
    RsaReshareRound1(SessionMeta, Box<hyok_threshold::rsa::reshare::Parameters>),
    RsaReshareRound2(SessionMeta, Box<hyok_threshold::rsa::reshare::ReceiverState>),
    Finished(SessionMeta),
}

impl Session {
    fn meta(&self) -> &SessionMeta {
        match self {
            Session::Round1(m, _)
            | Session::Round2(m, _)
            | Session::ReshareRound1(m, _)
            | Session::ReshareRound2(m, _)
            | Session::RsaReshareRound1(m, _)
            | Session::RsaReshareRound2(m, _)
            | Session::Finished(m) => m,
        }
    }
}

/// Open DKG sessions, and their ids in arrival order (to drop the oldest).
type Sessions = (Vec<Vec<u8>>, HashMap<Vec<u8>, Session>);

/// One hyok node.
pub struct Node {
    id: NodeId,
    secrets: NodeSecrets,
    /// This node's signed key bundle (wire encoding), made once at start.
    key_bundle: Vec<u8>,
    store: Store,
    keys: KeyCache,
    rsa_keys: RsaKeyCache,
    sessions: Mutex<Sessions>,
    /// The pinned cluster manifest (see [`crate::manifest`]); `None` until the operator installs one.
    manifest: RwLock<Option<Manifest>>,
    /// The operator's evidence policy and the caller signatures seen (see [`crate::evidence`]).
    evidence: crate::evidence::Evidence,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish_non_exhaustive()
    }
}

fn item_error(e: KeyError) -> pb::ItemError {
    let code = match e {
        KeyError::NotFound => pb::item_error::Code::NotFound,
        KeyError::Pending => pb::item_error::Code::Pending,
        // A veto is refused exactly like a disabled key; the message tells them apart.
        KeyError::Disabled | KeyError::Vetoed => pb::item_error::Code::Disabled,
        KeyError::UsageNotAllowed => pb::item_error::Code::UsageNotAllowed,
        KeyError::Internal => pb::item_error::Code::Internal,
    };
    pb::ItemError { code: code as i32, message: e.to_string() }
}

fn invalid_item(message: &str) -> pb::ItemError {
    pb::ItemError { code: pb::item_error::Code::Invalid as i32, message: message.to_owned() }
}

fn result(r: Result<Vec<u8>, pb::ItemError>) -> pb::PartialResult {
    pb::PartialResult {
        result: Some(match r {
            Ok(bytes) => pb::partial_result::Result::Partial(bytes),
            Err(e) => pb::partial_result::Result::Error(e),
        }),
    }
}

impl Node {
    /// A node with the long-term keys `secrets` over `store`, and the manifest the store holds.
    ///
    /// # Errors
    /// [`NodeError::Manifest`] if the stored manifest does not list this node as `id` with its
    /// identity key (the operator started it with the wrong `--id`, or installed another
    /// cluster's manifest); a stored manifest that does not decode is an internal error.
    pub fn new(id: NodeId, secrets: NodeSecrets, store: Store) -> Result<Self, NodeError> {
        let manifest = match store.manifest()? {
            None => None,
            Some(bytes) => {
                let m = Manifest::from_bytes(&bytes).map_err(|e| {
                    tracing::error!(error = %e, "the stored cluster manifest does not decode");
                    NodeError::Internal
                })?;
                crate::manifest::check_names(&m, id, &secrets.identity().public_key())?;
                Some(m)
            }
        };
        let key_bundle = secrets.key_bundle(id, &mut rand::rng()).to_bytes();
        let evidence = crate::evidence::Evidence::load(&store)?;
        Ok(Node {
            id,
            secrets,
            key_bundle,
            store,
            keys: KeyCache::default(),
            rsa_keys: RsaKeyCache::default(),
            sessions: Mutex::new((Vec::new(), HashMap::new())),
            manifest: RwLock::new(manifest),
            evidence,
        })
    }

    pub(crate) fn evidence(&self) -> &crate::evidence::Evidence {
        &self.evidence
    }

    pub(crate) fn manifest_slot(&self) -> &RwLock<Option<Manifest>> {
        &self.manifest
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The store (for tests and admin tooling).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub(crate) fn secrets(&self) -> &NodeSecrets {
        &self.secrets
    }

    pub(crate) fn rsa_keys(&self) -> &RsaKeyCache {
        &self.rsa_keys
    }

    pub(crate) fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// This node's identity public key (what a manifest pins for it).
    pub fn identity_public_key(&self) -> hyok_threshold::IdentityPublicKey {
        self.secrets.identity().public_key()
    }

    /// `GetIdentity`.
    pub fn identity(&self) -> Result<pb::GetIdentityResponse, NodeError> {
        let accepted = self.accepted()?;
        let mut key_count = 0u32;
        for key_id in self.store.ec().list()? {
            if self.store.ec().versions(&key_id)?.iter().any(|v| v.active) {
                key_count += 1;
            }
        }
        for name in self.store.rsa().list()? {
            if self.store.rsa().versions(&name)?.iter().any(|v| v.active) {
                key_count += 1;
            }
        }
        Ok(pb::GetIdentityResponse {
            node_id: u32::from(self.id.get()),
            identity_public_key: self.secrets.identity().public_key().as_bytes().to_vec(),
            software_version: env!("CARGO_PKG_VERSION").to_owned(),
            key_count,
            key_bundle: self.key_bundle.clone(),
            manifest: self.manifest().map(|m| m.to_bytes()).unwrap_or_default(),
            proposal: accepted.as_ref().map(|(p, _)| p.to_bytes()).unwrap_or_default(),
            acceptance: accepted.as_ref().map(|(_, a)| a.to_bytes()).unwrap_or_default(),
        })
    }

    pub(crate) fn audit(&self, events: &[AuditEvent]) -> Result<(), NodeError> {
        if events.is_empty() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let entries = self.store.append_audit(events).map_err(NodeError::from)?;
        crate::metrics::audited(events, entries.last().map_or(0, |e| e.seq), started.elapsed());
        Ok(())
    }

    /// `EvaluateBatch`: one DPRF value per item, the node hashing each input itself, and one
    /// proof for all the values made with one share. Every item served is audited (one flush
    /// for the batch) before the answer goes out.
    pub fn evaluate_batch(
        &self,
        items: &[pb::EvaluateItem],
        caller: &str,
    ) -> Result<pb::EvaluateBatchResponse, NodeError> {
        if items.len() > MAX_BATCH {
            return Err(NodeError::Invalid(format!("at most {MAX_BATCH} items per batch")));
        }
        let mut rng = rand::rng();
        let mut events = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        // The items served: (index, share, input, coefficient), evaluated below share by share.
        let mut served: Vec<(usize, Arc<LoadedVersion>, HashedInput, Coefficient)> = Vec::with_capacity(items.len());
        for (index, item) in items.iter().enumerate() {
            let r = (|| {
                let given: [u8; 16] =
                    item.seed.as_slice().try_into().map_err(|_| invalid_item("seed must be 16 bytes"))?;
                // Any nonzero public factor is harmless (see `Coefficient`); a malformed one is refused.
                let coefficient = Coefficient::from_bytes(&item.coefficient)
                    .map_err(|_| invalid_item("coefficient must be empty or a canonical nonzero 32-byte scalar"))?;
                let operation = pb::Operation::try_from(item.operation)
                    .ok()
                    .filter(|o| *o != pb::Operation::Unspecified)
                    .ok_or_else(|| invalid_item("operation must be ENCRYPT or DECRYPT"))?;
                // Nothing is computed for a request the requester's own evidence does not cover.
                let request =
                    Request::Evaluate { key_id: &item.key_id, version: item.version, seed: &given, operation };
                let grant = self.authorize(&request, item.evidence.as_ref())?;
                // An encryption is evaluated on a seed this node derives from the nonce (which the
                // evidence fixes), so ENCRYPT can never be steered onto an existing ciphertext's
                // seed; only DECRYPT evaluates on the seed as given.
                let (usage, op, seed) = match operation {
                    pb::Operation::Encrypt => {
                        (Usages::ENCRYPT, "evaluate:encrypt", dprf::encryption_seed(&item.key_id, item.version, &given))
                    }
                    _ => (Usages::DECRYPT, "evaluate:decrypt", given),
                };
                let input = DprfInput::new(&item.key_id, item.version, seed).map_err(|_| invalid_item("bad key id"))?;
                let loaded = self
                    .keys
                    .usable(&self.store, &item.key_id, item.version, item.generation, usage)
                    .map_err(item_error)?;
                self.consume(&grant)?;
                let who = format!("{caller} for {}", grant.principal);
                events.push(self.event(&item.key_id, item.version, op, &item.request_id, &who).with_digest(&seed));
                Ok((loaded, HashedInput::new(input), coefficient))
            })();
            let r = match r {
                Ok((loaded, input, coefficient)) => {
                    served.push((index, loaded, input, coefficient));
                    // Filled in with its value below.
                    Ok(Vec::new())
                }
                Err(e) => Err(e),
            };
            if let Err(e) = &r {
                let op = match pb::Operation::try_from(item.operation) {
                    Ok(pb::Operation::Encrypt) => "evaluate:encrypt",
                    Ok(pb::Operation::Decrypt) => "evaluate:decrypt",
                    _ => "evaluate",
                };
                events.push(
                    self.refusal(&item.key_id, item.version, op, e, &item.request_id, caller).with_digest(&item.seed),
                );
            }
            out.push(result(r));
        }
        let mut proofs = Vec::new();
        while let Some((_, first, _, _)) = served.first() {
            // Every item served with the same share (key, version, generation), in order.
            let key = |(index, loaded, _, _): &(usize, Arc<LoadedVersion>, HashedInput, Coefficient)| {
                (&items[*index].key_id, items[*index].version, loaded.generation)
            };
            let same = key(&served[0]);
            let share = Arc::clone(first);
            let (group, rest): (Vec<_>, Vec<_>) = served.drain(..).partition(|s| key(s) == same);
            served = rest;
            let inputs: Vec<dprf::BatchItem<'_>> =
                group.iter().map(|(_, _, input, coefficient)| (input, *coefficient)).collect();
            let (values, proof) = dprf::evaluate_batch(&share.share, &inputs, &mut rng);
            for ((index, _, _, _), value) in group.iter().zip(values) {
                out[*index] = result(Ok(value.to_bytes()));
            }
            proofs.push(pb::BatchProof {
                items: group.iter().map(|(index, _, _, _)| *index as u32).collect(),
                proof: proof.to_bytes(),
            });
        }
        self.audit(&events)?;
        Ok(pb::EvaluateBatchResponse { results: out, proofs })
    }

    /// An audit entry for a refused item: `refused:OPERATION:REASON`.
    fn refusal(
        &self,
        key_id: &str,
        version: u32,
        operation: &str,
        error: &pb::ItemError,
        request_id: &str,
        caller: &str,
    ) -> AuditEvent {
        let reason =
            pb::item_error::Code::try_from(error.code).map_or("UNKNOWN", |c| c.as_str_name()).to_ascii_lowercase();
        self.event(key_id, version, &format!("refused:{operation}:{reason}"), request_id, caller)
    }

    /// `UnwrapBatch`: one KEM partial per item; a wrapped key whose proof of knowledge fails is
    /// refused (the node is no Diffie–Hellman oracle).
    pub fn unwrap_batch(&self, items: &[pb::UnwrapItem], caller: &str) -> Result<Vec<pb::PartialResult>, NodeError> {
        if items.len() > MAX_BATCH {
            return Err(NodeError::Invalid(format!("at most {MAX_BATCH} items per batch")));
        }
        let mut rng = rand::rng();
        let mut events = Vec::new();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let r = (|| {
                let request = Request::Unwrap {
                    key_id: &item.key_id,
                    version: item.version,
                    wrapped: &item.wrapped,
                    label: &item.label,
                };
                let grant = self.authorize(&request, item.evidence.as_ref())?;
                let wrapped =
                    WrappedKey::from_bytes(&item.wrapped).map_err(|_| invalid_item("malformed wrapped key"))?;
                let loaded = self
                    .keys
                    .usable(&self.store, &item.key_id, item.version, item.generation, Usages::UNWRAP)
                    .map_err(item_error)?;
                self.consume(&grant)?;
                let partial =
                    kem::partial_unwrap(&loaded.share, loaded.package.group_key(), &wrapped, &item.label, &mut rng)
                        .map_err(|_| invalid_item("wrapped key proof does not verify for this key and label"))?;
                let who = format!("{caller} for {}", grant.principal);
                events.push(
                    self.event(&item.key_id, item.version, "unwrap", &item.request_id, &who)
                        .with_digest(&sha256(&item.wrapped)),
                );
                Ok(partial.to_bytes())
            })();
            if let Err(e) = &r {
                events.push(
                    self.refusal(&item.key_id, item.version, "unwrap", e, &item.request_id, caller)
                        .with_digest(&sha256(&item.wrapped)),
                );
            }
            out.push(result(r));
        }
        self.audit(&events)?;
        Ok(out)
    }

    pub(crate) fn event(
        &self,
        key_id: &str,
        version: u32,
        operation: &str,
        request_id: &str,
        caller: &str,
    ) -> AuditEvent {
        // Truncate on character boundaries, within the store's byte limits.
        let clip = |s: &str, max: usize| -> String {
            let mut end = s.len().min(max);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s[..end].to_owned()
        };
        let request_id = clip(request_id, 256);
        AuditEvent {
            time_ms: now_ms(),
            key_id: clip(key_id, 128),
            version,
            operation: operation.to_owned(),
            request_id,
            caller: caller.to_owned(),
            digest: Vec::new(),
        }
    }

    pub(crate) fn with_sessions<T>(
        &self,
        f: impl FnOnce(&mut Vec<Vec<u8>>, &mut HashMap<Vec<u8>, Session>) -> T,
    ) -> Result<T, NodeError> {
        let mut guard = self.sessions.lock().map_err(|_| NodeError::Internal)?;
        let (order, map) = &mut *guard;
        Ok(f(order, map))
    }

    pub(crate) fn take_session(&self, session_id: &[u8]) -> Result<Session, NodeError> {
        self.with_sessions(|_, map| map.remove(session_id))?
            .ok_or_else(|| NodeError::NotFound("no such DKG session".into()))
    }

    pub(crate) fn put_session(&self, session_id: &[u8], session: Session) -> Result<(), NodeError> {
        self.with_sessions(|order, map| {
            if !map.contains_key(session_id) {
                order.push(session_id.to_vec());
            }
            map.insert(session_id.to_vec(), session);
            while map.len() > MAX_SESSIONS && !order.is_empty() {
                let oldest = order.remove(0);
                map.remove(&oldest);
            }
            order.retain(|s| map.contains_key(s));
        })
    }

    /// `DkgRound1`.
    pub fn dkg_round1(&self, req: &pb::DkgRound1Request, caller: &str) -> Result<pb::DkgRound1Response, NodeError> {
        hyok_proto::validate_key_id(&req.key_id).map_err(|e| NodeError::Invalid(e.to_owned()))?;
        if req.version == 0 {
            return Err(NodeError::Invalid("version must be at least 1".into()));
        }
        let mut usages = 0u8;
        for u in &req.usages {
            let u = pb::KeyUsage::try_from(*u).map_err(|_| NodeError::Invalid("unknown key usage".into()))?;
            usages |= usage_bit(u).ok_or_else(|| NodeError::Invalid("unspecified key usage".into()))?;
        }
        if usages == 0 {
            return Err(NodeError::Invalid("a key needs at least one usage".into()));
        }
        // The manifest decides who takes part and at what threshold, before anything is touched;
        // a membership change's reshare, the change this node's operator accepted. While one is
        // accepted, no other reshare runs (its pending shares are never replaced under it).
        let epoch = req.reshare.as_ref().map_or(0, |r| r.epoch);
        let agreed = match (self.pending_change()?, req.reshare.as_ref()) {
            (Some((p, _)), Some(reshare)) if epoch != 0 => {
                let in_force = self.manifest().is_none_or(|m| &m == p.from());
                if in_force {
                    crate::epoch::check_run(&p, req, reshare)
                } else {
                    Err("the manifest in force is not the accepted change's starting point".to_owned())
                }
            }
            (None, _) if epoch != 0 => Err(format!("this node's operator accepted no change to epoch {epoch}")),
            (Some((p, _)), Some(_)) => Err(format!(
                "a membership change to epoch {} is accepted here: no other reshare runs until it is executed or withdrawn",
                p.epoch()
            )),
            _ => match self.manifest() {
                None => Err(crate::manifest::NO_MANIFEST.to_owned()),
                Some(m) => crate::manifest::check_dkg(&m, req),
            },
        };
        if let Err(why) = agreed {
            self.audit(&[self.event(&req.key_id, req.version, "refused:dkg:manifest", &req.request_id, caller)])?;
            tracing::warn!(key_id = req.key_id, caller, why, "DKG refused by the cluster manifest");
            return Err(NodeError::Manifest(why));
        }
        if let Some(reshare) = &req.reshare {
            return self.reshare_round1(req, reshare, Usages(usages), caller);
        }
        if let Some(meta) = self.store.ec().key(&req.key_id)?
            && meta.usages.0 != usages
        {
            return Err(NodeError::Precondition("usage differs from the key's existing usage".into()));
        }
        if self.store.ec().versions(&req.key_id)?.iter().any(|v| v.version == req.version && v.active) {
            return Err(NodeError::Precondition(format!("{}/{} already exists", req.key_id, req.version)));
        }
        // A PENDING version of this key and version is left over from a run that never
        // committed: this new run replaces it (and any session still open for it).
        if self.store.ec().versions(&req.key_id)?.iter().any(|v| v.version == req.version && !v.active) {
            self.with_sessions(|order, map| {
                map.retain(|_, s| !(s.meta().key_id == req.key_id && s.meta().version == req.version));
                order.retain(|id| map.contains_key(id));
            })?;
            self.store.ec().remove_pending(&req.key_id, req.version)?;
        }
        let participants = self.bundles(req, &req.participants, caller)?;
        let threshold = u16::try_from(req.threshold).map_err(|_| NodeError::Invalid("bad threshold".into()))?;
        let params = dkg::Parameters::new(threshold, participants.into_values(), &req.session_id)
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let (secret, package) = dkg::part1(self.id, &self.secrets, params, &mut rand::rng())
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let meta = SessionMeta {
            key_id: req.key_id.clone(),
            version: req.version,
            usages: Usages(usages),
            generation: None,
            package: Vec::new(),
            rsa: false,
            epoch: 0,
        };
        self.put_session(&req.session_id, Session::Round1(meta, Box::new(secret)))?;
        self.audit(&[self.event(&req.key_id, req.version, "dkg:round1", &req.request_id, caller)])?;
        Ok(pb::DkgRound1Response { package: package.to_bytes() })
    }

    /// Every participant of `list` with its key bundle, verified under its identity key: a
    /// relay cannot make this node encrypt a sub-share to a key of its choosing.
    pub(crate) fn bundles(
        &self,
        req: &pb::DkgRound1Request,
        list: &[pb::Participant],
        caller: &str,
    ) -> Result<BTreeMap<NodeId, hyok_threshold::KeyBundle>, NodeError> {
        let mut participants = BTreeMap::new();
        for p in list {
            let id = u16::try_from(p.node_id)
                .ok()
                .and_then(|id| NodeId::new(id).ok())
                .ok_or_else(|| NodeError::Invalid("bad participant id".into()))?;
            let key = IdentityPublicKey::from_slice(&p.identity_public_key)
                .map_err(|_| NodeError::Invalid("bad participant identity key".into()))?;
            let keys = SignedKeyBundle::from_bytes(&p.key_bundle).and_then(|bundle| bundle.verify(id, &key));
            let keys = match keys {
                Ok(keys) => keys,
                Err(_) => {
                    self.audit(&[self.event(&req.key_id, req.version, "dkg:refused", &req.request_id, caller)])?;
                    return Err(NodeError::Invalid(format!(
                        "participant {id}'s key bundle does not verify under its identity key"
                    )));
                }
            };
            if participants.insert(id, keys).is_some() {
                return Err(NodeError::Invalid("duplicate participant".into()));
            }
        }
        Ok(participants)
    }

    /// `DkgRound2`.
    pub fn dkg_round2(&self, req: &pb::DkgRound2Request) -> Result<pb::DkgRound2Response, NodeError> {
        let (meta, secret) = match self.take_session(&req.session_id)? {
            Session::Round1(meta, secret) => (meta, secret),
            Session::ReshareRound1(meta, params) => return self.reshare_round2(req, meta, *params),
            Session::RsaReshareRound1(meta, params) => return self.rsa_reshare_round2(req, meta, *params),
            _ => return Err(NodeError::Precondition("DKG session is not at round 1".into())),
        };
        let packages: Vec<round1::Package> = decode_all(&req.packages)?;
        let (secret, package) = match secret.receive(&packages, &mut rand::rng()) {
            Ok(received) => received,
            Err(e) => {
                // The run dies here (a bad signature, a replayed ephemeral, …): say whom it blames.
                let blamed = format!("culprits={}", ids(&e.culprits()));
                let _ = self.audit(&[self.event(&meta.key_id, meta.version, "dkg:abort:round2", &blamed, "")]);
                return Err(NodeError::Precondition(e.to_string()));
            }
        };
        let accused: Vec<NodeId> = package.complaints().iter().map(|c| c.accused()).collect();
        if !accused.is_empty() {
            let what = format!("accused={}", ids(&accused));
            self.audit(&[self.event(&meta.key_id, meta.version, "dkg:complaint", &what, "")])?;
        }
        self.put_session(&req.session_id, Session::Round2(meta, Box::new(secret)))?;
        Ok(pb::DkgRound2Response { package: package.to_bytes() })
    }

    /// `DkgFinish`: stores the share as PENDING (flushed) and returns the public package.
    pub fn dkg_finish(&self, req: &pb::DkgFinishRequest) -> Result<pb::DkgFinishResponse, NodeError> {
        let (meta, secret) = match self.take_session(&req.session_id)? {
            Session::Round2(meta, secret) => (meta, secret),
            Session::ReshareRound2(meta, state) => return self.reshare_finish(req, meta, *state),
            Session::RsaReshareRound2(meta, state) => return self.rsa_reshare_finish(req, meta, *state),
            _ => return Err(NodeError::Precondition("DKG session is not at round 2".into())),
        };
        let packages: Vec<round2::Package> = decode_all(&req.packages)?;
        let output = match secret.finish(&packages) {
            Ok(output) => output,
            Err(e) => {
                let blamed = format!("culprits={}", ids(&e.culprits()));
                let _ = self.audit(&[self.event(&meta.key_id, meta.version, "dkg:abort:finish", &blamed, "")]);
                return Err(NodeError::Precondition(e.to_string()));
            }
        };
        if !output.disqualified.is_empty() {
            let what = format!("dealers={}", ids(&output.disqualified));
            self.audit(&[self.event(&meta.key_id, meta.version, "dkg:disqualified", &what, "")])?;
        }
        let package = output.package.to_bytes();
        self.store.ec().put_pending(
            &meta.key_id,
            meta.version,
            meta.usages,
            &output.share.to_secret_bytes(),
            &package,
            now_ms(),
        )?;
        let disqualified = output.disqualified.iter().map(|n| u32::from(n.get())).collect();
        self.put_session(&req.session_id, Session::Finished(meta))?;
        Ok(pb::DkgFinishResponse { public_key_package: package, disqualified, false_accusers: Vec::new() })
    }

    /// `DkgCommit`: PENDING → ACTIVE, flushed.
    pub fn dkg_commit(&self, req: &pb::DkgCommitRequest, caller: &str) -> Result<(), NodeError> {
        let session = self.take_session(&req.session_id)?;
        let Session::Finished(meta) = session else {
            self.put_session(&req.session_id, session)?;
            return Err(NodeError::Precondition("DKG session is not finished".into()));
        };
        match meta.generation {
            None => {
                self.store.ec().activate(&meta.key_id, meta.version)?;
                self.audit(&[self.event(&meta.key_id, meta.version, "dkg:commit", "", caller)])?;
            }
            Some(_) if meta.epoch != 0 => {
                self.put_session(&req.session_id, Session::Finished(meta))?;
                return Err(NodeError::Precondition(
                    "a membership change's shares are committed by CommitEpoch".into(),
                ));
            }
            Some(generation) => self.reshare_commit(&meta, generation, caller)?,
        }
        Ok(())
    }

    /// `DkgAbort`: forgets the session and removes its PENDING version, if any.
    pub fn dkg_abort(&self, req: &pb::DkgAbortRequest) -> Result<(), NodeError> {
        if let Ok(session) = self.take_session(&req.session_id) {
            let meta = session.meta();
            if matches!(session, Session::Finished(_)) {
                match meta.generation {
                    None => self.store.ec().remove_pending(&meta.key_id, meta.version)?,
                    Some(_) if meta.rsa => self.store.rsa().remove_next(&meta.key_id, meta.version)?,
                    Some(_) => self.store.ec().remove_next(&meta.key_id, meta.version)?,
                }
            }
            self.audit(&[self.event(&meta.key_id, meta.version, "dkg:abort", "", "")])?;
        }
        Ok(())
    }

    /// This node's view of one key: `enabled` is the effective state (the admin's flag, unless
    /// the operator vetoed the key here), `vetoed` the veto.
    pub fn key_state(&self, key_id: &str) -> Result<pb::NodeKeyState, NodeError> {
        let meta = self.store.ec().key(key_id)?.ok_or_else(|| NodeError::NotFound(key_id.to_owned()))?;
        let vetoed = self.store.vetoed(key_id)?.is_some();
        let mut versions = Vec::new();
        for v in self.store.ec().versions(key_id)? {
            let (generation, previous, next) = crate::reshare::generations(self.store.ec(), key_id, v.version)?;
            versions.push(pb::NodeKeyVersion {
                version: v.version,
                public_key_package: v.package,
                active: v.active,
                created_at_ms: v.created_at_ms,
                generation,
                previous,
                next,
            });
        }
        Ok(pb::NodeKeyState {
            key_id: key_id.to_owned(),
            enabled: meta.enabled && !vetoed,
            usages: usages_to_proto(meta.usages),
            versions,
            vetoed,
        })
    }

    /// Every key on this node.
    pub fn key_states(&self) -> Result<Vec<pb::NodeKeyState>, NodeError> {
        self.store.ec().list()?.iter().map(|k| self.key_state(k)).collect()
    }

    /// `SetKeyEnabled` (flushed and audited): the admin's flag only.
    ///
    /// The name is looked up among EC keys and threshold RSA keys alike: every key of that name
    /// is turned on or off (an operator disables "the key named X" on their node). For a name
    /// that is only an RSA key, the answer lists no usages and no versions (those are in
    /// `GetRsaKeyState`). The node operator's veto is a separate record this never touches: an
    /// enable of a vetoed key sets the flag, is audited as `enable:vetoed`, and answers with the
    /// effective state (disabled, vetoed).
    pub fn set_enabled(&self, req: &pb::SetKeyEnabledRequest, caller: &str) -> Result<pb::NodeKeyState, NodeError> {
        hyok_proto::validate_key_id(&req.key_id).map_err(|e| NodeError::Invalid(e.to_owned()))?;
        let ec = self.store.ec().key(&req.key_id)?.is_some();
        let rsa = self.store.rsa().key(&req.key_id)?.is_some();
        if !ec && !rsa {
            return Err(NodeError::NotFound(req.key_id.clone()));
        }
        if ec {
            self.keys.set_enabled(&self.store, &req.key_id, req.enabled)?;
        }
        if rsa {
            self.store.rsa().set_enabled(&req.key_id, req.enabled)?;
        }
        let vetoed = self.store.vetoed(&req.key_id)?.is_some();
        let op = match (req.enabled, vetoed) {
            (true, true) => "enable:vetoed",
            (true, false) => "enable",
            (false, _) => "disable",
        };
        self.audit(&[self.event(&req.key_id, 0, op, &req.request_id, caller)])?;
        if ec {
            self.key_state(&req.key_id)
        } else {
            Ok(pb::NodeKeyState {
                key_id: req.key_id.clone(),
                enabled: req.enabled && !vetoed,
                usages: Vec::new(),
                versions: Vec::new(),
                vetoed,
            })
        }
    }

    /// The audit chain's head, signed with this node's audit key.
    pub fn signed_audit_head(&self) -> Result<pb::SignedAuditHead, NodeError> {
        let (seq, hash) = self.store.audit_head()?;
        let signature = audit_head::sign_head(self.secrets.audit(), self.id, seq, &hash, &mut rand::rng());
        Ok(pb::SignedAuditHead { seq, hash: hash.to_vec(), signature: signature.to_bytes() })
    }

    /// `ReadAudit`.
    pub fn read_audit(&self, from_seq: u64, limit: u32) -> Result<Vec<pb::AuditEntry>, NodeError> {
        let limit = limit.clamp(1, 1000) as usize;
        Ok(self
            .store
            .read_audit(from_seq.max(1), limit)?
            .into_iter()
            .map(|e| pb::AuditEntry {
                seq: e.seq,
                time_ms: e.event.time_ms,
                key_id: e.event.key_id,
                version: e.event.version,
                operation: e.event.operation,
                request_id: e.event.request_id,
                caller: e.event.caller,
                digest: e.event.digest,
                prev_hash: e.prev_hash.to_vec(),
                hash: e.hash.to_vec(),
            })
            .collect())
    }
}
