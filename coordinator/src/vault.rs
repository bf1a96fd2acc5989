//! The coordinator's cryptographic operations, in plain types: encrypt and decrypt with the
//! DPRF-keyed AEAD, wrap and unwrap with the threshold KEM. Partials are combined in the
//! exponent; no key is ever rebuilt.

use crate::batch::EvaluateJob;
use crate::config::Config;
use crate::error::CoordError;
use crate::fanout::{Spread, Step, gather};
use crate::metadata::{Ec, KeyView, Metadata, Rsa, TrustedVersion};
use crate::pool::Pool;
use hyok_proto::v1 as pb;
use hyok_threshold::aead::{self, TAG_LEN};
use hyok_threshold::dprf::{self, DprfInput, HashedInput, SEED_LEN};
use hyok_threshold::kem::{self, WrappedKey};
use hyok_threshold::{Coefficient, Error as ThresholdError, NodeId, PartialEvaluation, Wire};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// Largest plaintext (and ciphertext) accepted by Encrypt/Decrypt.
pub const MAX_PLAINTEXT: usize = 1024 * 1024;
/// Largest additional authenticated data.
pub const MAX_AAD: usize = 64 * 1024;

/// A detached encryption.
#[derive(Debug)]
pub struct Detached {
    /// Key version used.
    pub version: u32,
    /// The DPRF seed.
    pub seed: [u8; SEED_LEN],
    /// As long as the plaintext.
    pub ciphertext: Vec<u8>,
    /// GCM tag.
    pub tag: [u8; TAG_LEN],
}

/// The coordinator's state: the node pool and the metadata cache. Stateless in the sense that
/// matters: nothing here is durable, and any number of coordinators can run side by side.
#[derive(Debug)]
pub struct Vault {
    pub(crate) pool: Pool,
    pub(crate) metadata: Metadata<Ec>,
    pub(crate) rsa_metadata: Metadata<Rsa>,
    /// One RSA import at a time through this coordinator (two concurrent imports of one
    /// version would otherwise replace each other's PENDING shares node by node).
    pub(crate) rsa_import: tokio::sync::Mutex<()>,
    /// One reshare or key creation at a time through this coordinator: two runs for one version
    /// would both produce the next generation.
    pub(crate) key_changes: tokio::sync::Mutex<()>,
    extra: usize,
    hedge: Duration,
    timeout: Duration,
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), CoordError> {
    if len > max { Err(CoordError::Invalid(format!("{what} is longer than {max} bytes"))) } else { Ok(()) }
}

fn require_usage(view: &KeyView, usage: pb::KeyUsage) -> Result<(), CoordError> {
    if view.allows(usage) {
        Ok(())
    } else {
        Err(CoordError::UsageNotAllowed(format!(
            "key {} does not allow {}",
            view.name,
            usage.as_str_name().trim_start_matches("KEY_USAGE_").to_lowercase()
        )))
    }
}

/// The request's evidence, which the nodes verify; the coordinator refuses a request without
/// any at once.
pub(crate) fn required(evidence: Option<&pb::Evidence>) -> Result<&pb::Evidence, CoordError> {
    evidence.filter(|e| e.kind.is_some()).ok_or_else(|| {
        CoordError::PermissionDenied(
            "the request carries no evidence (a signed XKS request, a DKE token or a caller signature): every node \
             refuses it"
                .into(),
        )
    })
}

/// The DPRF nonce of an encryption, as its evidence fixes it (every node derives the same one),
/// after checking what the coordinator can: a caller's signed digest of the plaintext and AAD.
fn encryption_nonce(evidence: &pb::Evidence, plaintext: &[u8], aad: &[u8]) -> Result<[u8; SEED_LEN], CoordError> {
    if let Some(pb::evidence::Kind::Caller(c)) = &evidence.kind
        && c.content_digest.as_slice() != hyok_evidence::caller::content_digest(plaintext, aad).as_slice()
    {
        return Err(CoordError::PermissionDenied("the caller signed another plaintext or AAD".into()));
    }
    hyok_evidence::encryption_nonce(evidence)
        .ok_or_else(|| CoordError::PermissionDenied("the request's evidence is not for an encryption".into()))
}

/// One request's DPRF item, as the batcher sends it to each node asked and checks the answer.
/// A node of the `planned` set is asked for its value times its Lagrange coefficient over that
/// set, so that the set's values combine by a sum; any other node for its plain value.
/// `checked_by_result`: what the values combine to is checked by an AEAD tag (decryption), so
/// their batch proofs are checked only when it fails.
struct Jobs<'a> {
    item: &'a pb::EvaluateItem,
    input: &'a Arc<HashedInput>,
    view: &'a Arc<KeyView>,
    checked_by_result: bool,
    /// The planned set and its coefficients, computed for the first node asked (one gather
    /// plans one set).
    planned: std::sync::OnceLock<(Vec<NodeId>, Vec<Coefficient>)>,
}

impl<'a> Jobs<'a> {
    fn new(
        item: &'a pb::EvaluateItem,
        input: &'a Arc<HashedInput>,
        view: &'a Arc<KeyView>,
        checked_by_result: bool,
    ) -> Self {
        Jobs { item, input, view, checked_by_result, planned: std::sync::OnceLock::new() }
    }

    /// What `node` is sent, with `planned` the gather's planned set.
    fn for_node(&self, node: NodeId, planned: &[NodeId]) -> EvaluateJob {
        let of_set = |(set, coefficients): &(Vec<NodeId>, Vec<Coefficient>)| {
            set.iter().position(|id| *id == node).and_then(|at| coefficients.get(at).copied())
        };
        let computed = || (planned.to_vec(), Coefficient::lagrange_all(planned).unwrap_or_default());
        let cached = self.planned.get_or_init(computed);
        let coefficient = if cached.0 == planned { of_set(cached) } else { of_set(&computed()) };
        let coefficient = coefficient.unwrap_or(Coefficient::ONE);
        let item = pb::EvaluateItem { coefficient: coefficient.to_bytes(), ..self.item.clone() };
        EvaluateJob {
            item,
            input: Arc::clone(self.input),
            view: Arc::clone(self.view),
            coefficient,
            checked_by_result: self.checked_by_result,
        }
    }
}

fn input(key_id: &str, version: u32, seed: [u8; SEED_LEN]) -> Result<DprfInput, CoordError> {
    DprfInput::new(key_id, version, seed).map_err(|e| CoordError::Invalid(e.to_string()))
}

impl Vault {
    /// Connects (lazily) to the nodes of `config`.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        Ok(Vault {
            pool: Pool::new(config)?,
            metadata: Metadata::new(Duration::from_millis(config.metadata_ttl_ms)),
            rsa_metadata: Metadata::new(Duration::from_millis(config.metadata_ttl_ms)),
            rsa_import: tokio::sync::Mutex::new(()),
            key_changes: tokio::sync::Mutex::new(()),
            extra: usize::from(config.extra_nodes),
            hedge: Duration::from_millis(config.hedge_ms),
            timeout: config.request_timeout(),
        })
    }

    /// The node pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The request deadline: the configured budget, or the caller's if shorter.
    pub fn deadline(&self, caller: Option<Duration>) -> Instant {
        Instant::now() + caller.map_or(self.timeout, |c| c.min(self.timeout))
    }

    /// How a request with this deadline is spread over the nodes.
    pub(crate) fn spread(&self, deadline: Instant) -> Spread {
        Spread { extra: self.extra, hedge: self.hedge, deadline }
    }

    /// The key's view.
    pub async fn view(&self, key_id: &str, deadline: Instant) -> Result<Arc<KeyView>, CoordError> {
        hyok_proto::validate_key_id(key_id).map_err(|e| CoordError::Invalid(e.to_owned()))?;
        self.metadata.get(&self.pool, key_id, deadline).await
    }

    /// Encrypts under the key's primary version; the ciphertext is as long as the plaintext.
    pub async fn encrypt_detached(
        &self,
        key_id: &str,
        plaintext: &[u8],
        aad: &[u8],
        request_id: &str,
        evidence: Option<&pb::Evidence>,
        deadline: Instant,
    ) -> Result<Detached, CoordError> {
        check_len("plaintext", plaintext.len(), MAX_PLAINTEXT)?;
        check_len("aad", aad.len(), MAX_AAD)?;
        let evidence = required(evidence)?;
        let nonce = encryption_nonce(evidence, plaintext, aad)?;
        self.metadata
            .using(&self.pool, key_id, None, deadline, move |view: Arc<KeyView>| async move {
                require_usage(&view, pb::KeyUsage::Encrypt)?;
                let primary =
                    view.primary().ok_or_else(|| CoordError::NotFound(format!("key {key_id} has no version")))?;
                let seed = dprf::encryption_seed(key_id, primary.version, &nonce);
                let input = input(key_id, primary.version, seed)?;
                let hashed = Arc::new(HashedInput::new(input.clone()));
                // The nodes derive the same nonce from the evidence, and the seed from it, themselves.
                let item = pb::EvaluateItem {
                    key_id: key_id.to_owned(),
                    version: primary.version,
                    seed: nonce.to_vec(),
                    operation: pb::Operation::Encrypt as i32,
                    request_id: request_id.to_owned(),
                    evidence: Some(evidence.clone()),
                    generation: Some(primary.generation),
                    coefficient: Vec::new(),
                };
                let jobs = Jobs::new(&item, &hashed, &view, false);
                // Encryption has no check on its result, so every partial used is verified first:
                // the batcher checks each node's batch proof before any of its values becomes a
                // partial, and only valid ones are combined.
                let output = gather(
                    &self.pool,
                    self.spread(deadline),
                    (key_id, primary.version, usize::from(primary.package.threshold())),
                    |node, planned| node.evaluate.ask(jobs.for_node(node.id, planned), deadline),
                    |partials: &[PartialEvaluation]| {
                        let t = usize::from(primary.package.threshold());
                        match dprf::vartime_find_invalid(&primary.package, &input, partials, &mut rand::rng()) {
                            // The usual case: every partial valid, nothing copied.
                            Ok(culprits) if culprits.is_empty() => {
                                match dprf::combine_unchecked(&primary.package, partials) {
                                    Ok(output) => Step::Done(output, culprits),
                                    Err(e) => Step::Fail(CoordError::Internal(e.to_string())),
                                }
                            }
                            Ok(culprits) => {
                                let valid: Vec<_> =
                                    partials.iter().filter(|p| !culprits.contains(&p.node())).cloned().collect();
                                if valid.len() < t {
                                    return Step::Retry { culprits, need: t };
                                }
                                match dprf::combine_unchecked(&primary.package, &valid) {
                                    Ok(output) => Step::Done(output, culprits),
                                    Err(e) => Step::Fail(CoordError::Internal(e.to_string())),
                                }
                            }
                            Err(e) if !e.culprits().is_empty() => Step::Retry { culprits: e.culprits(), need: t },
                            Err(e) => Step::Fail(CoordError::Internal(e.to_string())),
                        }
                    },
                )
                .await?;
                let mut ciphertext = plaintext.to_vec();
                let tag = aead::seal_detached(&output, &input, aad, &mut ciphertext);
                Ok(Detached { version: primary.version, seed, ciphertext, tag })
            })
            .await
    }

    /// Decrypts a detached ciphertext. Combine-first: the GCM tag checks the combined value;
    /// proofs are verified only when it fails, to name the culprits and ask other nodes.
    #[allow(clippy::too_many_arguments)]
    pub async fn decrypt_detached(
        &self,
        key_id: &str,
        version: u32,
        seed: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
        aad: &[u8],
        request_id: &str,
        evidence: Option<&pb::Evidence>,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, CoordError> {
        check_len("ciphertext", ciphertext.len(), MAX_PLAINTEXT)?;
        let evidence = required(evidence)?;
        check_len("aad", aad.len(), MAX_AAD)?;
        let seed: [u8; SEED_LEN] =
            seed.try_into().map_err(|_| CoordError::Invalid(format!("seed must be {SEED_LEN} bytes")))?;
        let tag: [u8; TAG_LEN] =
            tag.try_into().map_err(|_| CoordError::Invalid(format!("tag must be {TAG_LEN} bytes")))?;
        if version == 0 {
            return Err(CoordError::Invalid("version must be at least 1".into()));
        }
        let input = &input(key_id, version, seed)?;
        // An encryption's own evidence opens only what that encryption made (hyok-xks proves a
        // fresh ciphertext decrypts this way): the nodes evaluate the encryption again.
        let (operation, given) = match hyok_evidence::encryption_nonce(evidence) {
            Some(nonce) if dprf::encryption_seed(key_id, version, &nonce) == seed => (pb::Operation::Encrypt, nonce),
            Some(_) => {
                return Err(CoordError::PermissionDenied(
                    "the request's evidence is for an encryption of another ciphertext".into(),
                ));
            }
            None => (pb::Operation::Decrypt, seed),
        };
        self.metadata
            .using(&self.pool, key_id, Some(version), deadline, move |view: Arc<KeyView>| async move {
                require_usage(&view, pb::KeyUsage::Decrypt)?;
                let trusted = view.version(version)?;
                let hashed = Arc::new(HashedInput::new(input.clone()));
                let item = pb::EvaluateItem {
                    key_id: key_id.to_owned(),
                    version,
                    seed: given.to_vec(),
                    operation: operation as i32,
                    request_id: request_id.to_owned(),
                    evidence: Some(evidence.clone()),
                    generation: Some(trusted.generation),
                    coefficient: Vec::new(),
                };
                let jobs = Jobs::new(&item, &hashed, &view, true);
                gather(
                    &self.pool,
                    self.spread(deadline),
                    (key_id, version, usize::from(trusted.package.threshold())),
                    |node, planned| node.evaluate.ask(jobs.for_node(node.id, planned), deadline),
                    |partials: &[PartialEvaluation]| {
                        opened(
                            aead::decrypt(&trusted.package, input, partials, aad, ciphertext, &tag),
                            partials.len(),
                            trusted,
                        )
                    },
                )
                .await
            })
            .await
    }

    /// Wraps a data key under the primary version (no node is needed: only the public key).
    pub async fn wrap(
        &self,
        key_id: &str,
        data_key: &[u8],
        label: &[u8],
        deadline: Instant,
    ) -> Result<(Vec<u8>, u32), CoordError> {
        let view = self.view(key_id, deadline).await?;
        require_usage(&view, pb::KeyUsage::Wrap)?;
        let primary = view.primary().ok_or_else(|| CoordError::NotFound(format!("key {key_id} has no version")))?;
        let wrapped = kem::wrap(primary.package.group_key(), data_key, label, &mut rand::rng())
            .map_err(|e| CoordError::Invalid(e.to_string()))?;
        Ok((wrapped.to_bytes(), primary.version))
    }

    /// Unwraps a data key with t nodes.
    #[allow(clippy::too_many_arguments)]
    pub async fn unwrap(
        &self,
        key_id: &str,
        version: u32,
        wrapped: &[u8],
        label: &[u8],
        request_id: &str,
        evidence: Option<&pb::Evidence>,
        deadline: Instant,
    ) -> Result<Zeroizing<Vec<u8>>, CoordError> {
        let evidence = required(evidence)?;
        let parsed = &WrappedKey::from_bytes(wrapped).map_err(|e| CoordError::Invalid(e.to_string()))?;
        if version == 0 {
            return Err(CoordError::Invalid("version must be at least 1".into()));
        }
        self.metadata
            .using(&self.pool, key_id, Some(version), deadline, move |view: Arc<KeyView>| async move {
                require_usage(&view, pb::KeyUsage::Unwrap)?;
                let trusted = view.version(version)?;
                // A wrap whose proof fails is refused here already; the nodes would refuse it too.
                parsed.vartime_verify(trusted.package.group_key(), label).map_err(|_| {
                    CoordError::Invalid("wrapped key does not verify for this key version and label".into())
                })?;
                let item = pb::UnwrapItem {
                    key_id: key_id.to_owned(),
                    version,
                    wrapped: wrapped.to_vec(),
                    label: label.to_vec(),
                    request_id: request_id.to_owned(),
                    evidence: Some(evidence.clone()),
                    generation: Some(trusted.generation),
                };
                gather(
                    &self.pool,
                    self.spread(deadline),
                    (key_id, version, usize::from(trusted.package.threshold())),
                    |node, _| node.unwrap.ask(item.clone(), deadline),
                    |partials: &[PartialEvaluation]| {
                        opened(kem::combine_unwrap(&trusted.package, parsed, label, partials), partials.len(), trusted)
                    },
                )
                .await
            })
            .await
    }
}

/// Interprets a combine-first result: success; culprits to drop (if fewer than t valid
/// partials remain, more are needed); or a ciphertext that does not authenticate although t
/// valid partials opened it.
fn opened<T>(
    result: Result<hyok_threshold::Opened<T>, ThresholdError>,
    gathered: usize,
    version: &TrustedVersion,
) -> Step<T> {
    let t = usize::from(version.package.threshold());
    // `gathered ≥ t` here; the culprits are among them.
    match result {
        Ok(opened) => Step::Done(opened.value, opened.culprits),
        // Every proof checked out, or enough valid partials remain: the ciphertext is wrong.
        Err(ThresholdError::DecryptionFailed { culprits }) if culprits.is_empty() || gathered - culprits.len() >= t => {
            Step::Fail(CoordError::DataLoss)
        }
        Err(e) if !e.culprits().is_empty() => Step::Retry { culprits: e.culprits(), need: t },
        Err(e) => Step::Fail(CoordError::Internal(e.to_string())),
    }
}
