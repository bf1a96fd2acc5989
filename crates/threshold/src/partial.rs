//! A node's partial result `Y_i = k_i·H` with its DLEQ proof, and the coordinator's two ways of
//! combining partials in the exponent: verify-then-combine, and combine-first.
//!
//! `H` is the DPRF point `H(x)` (hashed by the node itself) or the KEM's ephemeral `R` (whose
//! proof of knowledge the node checked). The proof's context names the operation, so a DPRF
//! partial never verifies as a KEM partial or vice versa.

use crate::dleq::{self, DleqProof, Statement};
use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{Element, KeyShare, NodeId, PublicKeyPackage};
use crate::lagrange;
use crate::transcript::Transcript;
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;

/// The public factor `μ` a node multiplies its partial by: it answers `μ·Y_i = (μ·k_i)·H`
/// instead of `Y_i`. The coordinator asks each node of the `t` it plans to combine for that
/// node's own Lagrange coefficient `λ_i(0)` over them, so that combining their answers is a
/// plain sum instead of a multiscalar multiplication; any other set (a node missed, another
/// asked in its place) is combined with `λ_i/μ_i`.
///
/// It reveals nothing `Y_i` does not: whoever holds `μ` turns `Y_i` into `μ·Y_i` and back, so a
/// node may take any nonzero `μ` from anyone. The point is still the node's own hash.
#[derive(Clone, Copy, Debug)]
pub struct Coefficient {
    value: Scalar,
    /// `1/μ` where it came at no cost (a Lagrange coefficient's, from small inverses); the
    /// verifier and a combine of another set need it, a node never does.
    inverse: Option<Scalar>,
}

impl PartialEq for Coefficient {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Coefficient {}

impl Coefficient {
    /// No factor: `Y_i` itself.
    pub const ONE: Coefficient = Coefficient { value: Scalar::ONE, inverse: Some(Scalar::ONE) };

    /// `λ_node(0)` over `set`, which must hold `node` and no id twice.
    pub fn lagrange(set: &[NodeId], node: NodeId) -> Result<Self> {
        let at = set.iter().position(|id| *id == node).ok_or(Error::UnknownNode { node: node.get() })?;
        Ok(Coefficient::lagrange_all(set)?[at])
    }

    /// `λ_i(0)` for every node `i` of `set` (no id twice), in the order of `set`, each with its
    /// inverse.
    pub fn lagrange_all(set: &[NodeId]) -> Result<Vec<Self>> {
        let values = lagrange::coefficients_at(set, Scalar::ZERO)?;
        let inverses = lagrange::inverse_coefficients_at_zero(set);
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, value)| Coefficient { value, inverse: inverses.as_ref().map(|inv| inv[i]) })
            .collect())
    }

    /// From the wire: empty is [`Coefficient::ONE`]; otherwise 32 bytes, a canonical nonzero
    /// scalar (zero would make a value that says nothing of the share, and no proof of it).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let malformed = Error::Malformed { what: "coefficient" };
        if bytes.is_empty() {
            return Ok(Coefficient::ONE);
        }
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| malformed.clone())?;
        let value = Option::<Scalar>::from(Scalar::from_canonical_bytes(bytes)).ok_or(malformed.clone())?;
        if value == Scalar::ZERO { Err(malformed) } else { Ok(Coefficient { value, inverse: None }) }
    }

    /// For the wire: empty for [`Coefficient::ONE`].
    pub fn to_bytes(&self) -> Vec<u8> {
        if *self == Coefficient::ONE { Vec::new() } else { self.value.to_bytes().to_vec() }
    }

    /// `μ`.
    pub(crate) fn value(&self) -> Scalar {
        self.value
    }

    /// `1/μ` (an inversion unless it came with it; `μ` is never zero).
    pub(crate) fn inverse(&self) -> Scalar {
        self.inverse.unwrap_or_else(|| self.value.invert())
    }
}

/// The check of a node's batch proof, run only if and when a value it covers must be verified:
/// for values whose use is checked another way first (an AEAD tag, for combine-first), so that
/// the check is paid only when that check fails. The coordinator implements it over the batch
/// it received (no I/O here); [`holds`](DeferredCheck::holds) runs the check once and keeps the
/// verdict.
pub trait DeferredCheck: Send + Sync + std::fmt::Debug {
    /// Whether the batch proof holds for every value it covers.
    fn holds(&self) -> bool;
}

/// What vouches for a partial's value.
#[derive(Clone, Debug)]
enum Proof {
    /// Its own DLEQ proof.
    Own(DleqProof),
    /// Its batch's proof, which held ([`crate::dprf::vartime_verify_batch`] made it).
    Batch,
    /// Its batch's proof, checked when first needed.
    Deferred(std::sync::Arc<dyn DeferredCheck>),
}

impl PartialEq for Proof {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Proof::Own(a), Proof::Own(b)) => a == b,
            (Proof::Batch, Proof::Batch) => true,
            (Proof::Deferred(a), Proof::Deferred(b)) => std::sync::Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Eq for Proof {}

/// A node's partial result with its proof: `{ node, value: Y_i = k_i·H, proof }`.
///
/// A DPRF partial that came in a node's batch has no proof of its own: the batch had one, and
/// either this value exists only because that proof held ([`crate::dprf::vartime_verify_batch`]
/// is its only maker), so its checks pass at no cost, or it carries the batch's
/// [`DeferredCheck`], which its checks run (once for the batch) and combine-first never needs
/// when the result opens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialEvaluation {
    node: NodeId,
    value: Element,
    proof: Proof,
    /// What the node multiplied its value by ([`Coefficient`]): `value = μ·k_i·H`. Only a
    /// batch's values have one other than 1; it is the coordinator's own, never read off the
    /// wire.
    coefficient: Coefficient,
}

/// A combined result together with the nodes whose partials failed verification on the way.
pub struct Opened<T> {
    /// The result (often a plaintext or key material: never printed).
    pub value: T,
    /// Nodes whose partials failed their proofs and were skipped (log and count them).
    pub culprits: Vec<NodeId>,
}

impl<T> std::fmt::Debug for Opened<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("value", &"<redacted>").field("culprits", &self.culprits).finish()
    }
}

impl PartialEvaluation {
    /// The node that produced this partial.
    pub fn node(&self) -> NodeId {
        self.node
    }

    #[cfg(any(test, feature = "dangerous-testing"))]
    pub(crate) fn value_point(&self) -> RistrettoPoint {
        self.value.point
    }

    /// `Y_i = k_i·H` with a proof that `log_G K_i = log_H Y_i`.
    pub(crate) fn compute<R: CryptoRng + ?Sized>(
        share: &KeyShare,
        h: &Element,
        context: &Transcript,
        rng: &mut R,
    ) -> Self {
        let vk = share.verification_key();
        let (value, proof) = DleqProof::prove_value(share.secret(), &vk.0, h, context, rng);
        PartialEvaluation { node: share.node(), value, proof: Proof::Own(proof), coefficient: Coefficient::ONE }
    }

    /// A value, made with `coefficient`, whose batch proof the caller has just verified.
    pub(crate) fn proven_with_batch(node: NodeId, value: Element, coefficient: Coefficient) -> Self {
        PartialEvaluation { node, value, proof: Proof::Batch, coefficient }
    }

    /// A value, made with `coefficient`, whose batch proof `check` checks when first needed.
    pub(crate) fn with_deferred_check(
        node: NodeId,
        value: Element,
        coefficient: Coefficient,
        check: std::sync::Arc<dyn DeferredCheck>,
    ) -> Self {
        PartialEvaluation { node, value, proof: Proof::Deferred(check), coefficient }
    }

    pub(crate) fn vartime_verify(&self, package: &PublicKeyPackage, h: &Element, context: &Transcript) -> Result<()> {
        let vk = package.verification_key(self.node)?;
        let proof = match &self.proof {
            Proof::Own(proof) => proof,
            Proof::Batch => return Ok(()),
            Proof::Deferred(check) if check.holds() => return Ok(()),
            Proof::Deferred(_) => return Err(Error::InvalidProof { node: self.node }),
        };
        let statement = Statement { x: &vk.0, h, y: &self.value };
        if proof.vartime_verify(statement, context) { Ok(()) } else { Err(Error::InvalidProof { node: self.node }) }
    }

    /// Replaces the value, keeping node and proof: a tampered partial, for tests.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_with_value_of(&self, other: &PartialEvaluation) -> Self {
        PartialEvaluation { value: other.value, ..self.clone() }
    }

    /// Replaces the proof, keeping node and value: a tampered partial, for tests.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_with_proof_of(&self, other: &PartialEvaluation) -> Self {
        PartialEvaluation { proof: other.proof.clone(), ..self.clone() }
    }

    /// Claims to be from another node: a tampered partial, for tests.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_with_node(&self, node: NodeId) -> Self {
        PartialEvaluation { node, ..self.clone() }
    }
}

impl Wire for PartialEvaluation {
    const NAME: &'static str = "partial evaluation";
    const TAG: u8 = 0x10;
    fn encode_body(&self, w: &mut Writer) {
        w.node(self.node);
        self.value.write(w);
        // A partial proven with its batch has no proof to send on; what stands in never verifies.
        match &self.proof {
            Proof::Own(proof) => proof.write(w),
            Proof::Batch | Proof::Deferred(_) => DleqProof::NONE.write(w),
        }
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        Ok(PartialEvaluation {
            node: r.node()?,
            value: Element::read(r)?,
            proof: Proof::Own(DleqProof::read(r)?),
            coefficient: Coefficient::ONE,
        })
    }
}

/// Every partial must come from a node of the key, at most once.
fn check_membership(package: &PublicKeyPackage, partials: &[PartialEvaluation]) -> Result<()> {
    for (k, p) in partials.iter().enumerate() {
        package.verification_key(p.node)?;
        if partials[..k].iter().any(|q| q.node == p.node) {
            return Err(Error::DuplicateNode { node: p.node });
        }
    }
    Ok(())
}

/// `Y = Σ_{i∈S} λ_i · Y_i` over the first `t` partials, without checking any proof. A partial
/// made with a coefficient `μ_i` ([`Coefficient`]) enters with `λ_i/μ_i`: when every node of
/// `S` applied its own `λ_i`, `Y` is the plain sum of the partials.
pub(crate) fn combine_unchecked(package: &PublicKeyPackage, partials: &[&PartialEvaluation]) -> Result<RistrettoPoint> {
    let t = usize::from(package.threshold());
    if partials.len() < t {
        return Err(Error::NotEnoughPartials { needed: t, got: partials.len() });
    }
    let chosen = &partials[..t];
    let ids: Vec<NodeId> = chosen.iter().map(|p| p.node).collect();
    let lambdas = lagrange::coefficients_at(&ids, Scalar::ZERO)?;
    if chosen.iter().zip(&lambdas).all(|(p, lambda)| p.coefficient.value() == *lambda) {
        return Ok(chosen.iter().map(|p| p.value.point).sum());
    }
    // μ is public and never zero (a coefficient is checked when it is made).
    let factors: Vec<Scalar> =
        chosen.iter().zip(&lambdas).map(|(p, lambda)| lambda * p.coefficient.inverse()).collect();
    let points: Vec<RistrettoPoint> = chosen.iter().map(|p| p.value.point).collect();
    Ok(lagrange::vartime_combine(&factors, &points))
}

/// What each partial's own proof is about, for [`dleq::vartime_verify_batch`]: where the node's
/// verification key is among the package's bases, the statement, the proof and its context.
/// Partials of a batch (proven, or with a deferred check) are left out.
pub(crate) fn statements<'a>(
    package: &'a PublicKeyPackage,
    h: &'a Element,
    context_for: impl Fn(NodeId) -> Transcript,
    partials: &'a [PartialEvaluation],
) -> Result<Vec<(usize, Statement<'a>, &'a DleqProof, Transcript)>> {
    partials
        .iter()
        .filter_map(|p| match &p.proof {
            Proof::Own(proof) => Some((p, proof)),
            Proof::Batch | Proof::Deferred(_) => None,
        })
        .map(|(p, proof)| {
            let vk = package.verification_key(p.node)?;
            Ok((package.base_index(p.node)?, Statement { x: &vk.0, h, y: &p.value }, proof, context_for(p.node)))
        })
        .collect()
}

/// Nodes whose partials fail verification: one batch check first, and one by one only if the
/// batch fails.
///
/// `h` is called only when some partial has a proof of its own (not for a batch's values). A
/// batch value with a deferred check is a culprit when that check fails.
pub(crate) fn vartime_find_invalid<R: CryptoRng + ?Sized>(
    package: &PublicKeyPackage,
    h: impl FnOnce() -> Element,
    context_for: impl Fn(NodeId) -> Transcript,
    partials: &[PartialEvaluation],
    rng: &mut R,
) -> Result<Vec<NodeId>> {
    check_membership(package, partials)?;
    let mut culprits: Vec<NodeId> = partials
        .iter()
        .filter(|p| matches!(&p.proof, Proof::Deferred(check) if !check.holds()))
        .map(|p| p.node)
        .collect();
    if partials.iter().all(|p| !matches!(p.proof, Proof::Own(_))) {
        return Ok(culprits);
    }
    let h = &h();
    let items = statements(package, h, context_for, partials)?;
    if items.is_empty() || dleq::vartime_verify_batch(package.bases(), h, &items, rng) {
        return Ok(culprits);
    }
    let own: Vec<NodeId> = partials.iter().filter(|p| matches!(p.proof, Proof::Own(_))).map(|p| p.node).collect();
    culprits.extend(
        items
            .iter()
            .zip(own)
            .filter(|((_, statement, proof, context), _)| !proof.vartime_verify(*statement, context))
            .map(|(_, node)| node),
    );
    Ok(culprits)
}

/// Verify-then-combine (for operations with no result check, such as encryption): batch-verify
/// every partial, drop the invalid ones, combine the first `t` valid ones.
pub(crate) fn combine_verified<R: CryptoRng + ?Sized>(
    package: &PublicKeyPackage,
    h: &Element,
    context_for: impl Fn(NodeId) -> Transcript,
    partials: &[PartialEvaluation],
    rng: &mut R,
) -> Result<Opened<RistrettoPoint>> {
    let culprits = vartime_find_invalid(package, || *h, context_for, partials, rng)?;
    let valid: Vec<&PartialEvaluation> = partials.iter().filter(|p| !culprits.contains(&p.node)).collect();
    let value = combine_unchecked(package, &valid)?;
    Ok(Opened { value, culprits })
}

/// Combine-first (for operations whose result can be checked, such as AEAD decryption):
/// combine the first `t` partials and try `open`; only if that fails, verify proofs one by one,
/// drop the culprits and try once more with `t` valid partials.
pub(crate) fn open_combine_first<T>(
    package: &PublicKeyPackage,
    h: impl FnOnce() -> Element,
    context_for: impl Fn(NodeId) -> Transcript,
    partials: &[PartialEvaluation],
    mut open: impl FnMut(&RistrettoPoint) -> Option<T>,
) -> Result<Opened<T>> {
    check_membership(package, partials)?;
    let all: Vec<&PartialEvaluation> = partials.iter().collect();
    let first = combine_unchecked(package, &all)?;
    if let Some(value) = open(&first) {
        return Ok(Opened { value, culprits: Vec::new() });
    }
    // Only now is the base needed (for the DPRF, hashing to the curve costs a square root).
    let h = h();
    let mut culprits = Vec::new();
    let mut valid = Vec::with_capacity(partials.len());
    for p in partials {
        match p.vartime_verify(package, &h, &context_for(p.node)) {
            Ok(()) => valid.push(p),
            Err(_) => culprits.push(p.node),
        }
    }
    let t = usize::from(package.threshold());
    let first_t_were_valid = culprits.iter().all(|c| !partials[..t].iter().any(|p| p.node == *c));
    if first_t_were_valid {
        // The partials were right: the ciphertext (or its tag, AAD, seed…) is not.
        return Err(Error::DecryptionFailed { culprits });
    }
    let retry =
        combine_unchecked(package, &valid).map_err(|_| Error::DecryptionFailed { culprits: culprits.clone() })?;
    match open(&retry) {
        Some(value) => Ok(Opened { value, culprits }),
        None => Err(Error::DecryptionFailed { culprits }),
    }
}
