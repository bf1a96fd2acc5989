//! The distributed PRF: `F_k(x) = k·H(x)`, evaluated by `t` nodes and combined in the exponent.
//!
//! Steps: a node runs [`evaluate`] (it hashes `x` to `P = H(x)` itself, so it never raises its
//! share to a point the caller chose); the coordinator runs [`combine`] (verify, then combine)
//! or [`combine_unchecked`] (combine only; for callers that check the result another way).
//!
//! A node answering many inputs at once runs [`evaluate_batch`] instead: its values carry no
//! proof of their own, and one proof covers them all (a DLEQ proof for a random combination of
//! the batch, the weights hashed from the whole batch, as in RFC 9497's batched proofs). The
//! coordinator checks it with [`vartime_verify_batch`], which alone turns the values into
//! partials.

use crate::dleq::{self, DleqProof};
use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{Element, KeyShare, NodeId, PublicKeyPackage};
use crate::partial::{self, Coefficient, Opened, PartialEvaluation};
use crate::transcript::Transcript;
use curve25519_dalek::{RistrettoPoint, Scalar, traits::VartimeMultiscalarMul};
use rand_core::CryptoRng;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Longest key id accepted in a DPRF input, in bytes.
pub const MAX_KEY_ID_LEN: usize = 255;
/// Length of the per-encryption random seed.
pub const SEED_LEN: usize = 16;

/// The DPRF input `x = (domain, key id, key version, seed)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DprfInput {
    key_id: String,
    version: u32,
    seed: [u8; SEED_LEN],
}

impl DprfInput {
    /// `x` for one encryption under `key_id` version `version`, with a fresh random `seed`.
    pub fn new(key_id: &str, version: u32, seed: [u8; SEED_LEN]) -> Result<Self> {
        if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
            return Err(Error::InvalidParameters("key id must be 1..=255 bytes"));
        }
        Ok(DprfInput { key_id: key_id.to_owned(), version, seed })
    }
    /// A fresh input with a random seed.
    pub fn random<R: CryptoRng + ?Sized>(key_id: &str, version: u32, rng: &mut R) -> Result<Self> {
        let mut seed = [0u8; SEED_LEN];
        rng.fill_bytes(&mut seed);
        Self::new(key_id, version, seed)
    }
    /// The key id.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }
    /// The key version.
    pub fn version(&self) -> u32 {
        self.version
    }
    /// The 16-byte seed.
    pub fn seed(&self) -> &[u8; SEED_LEN] {
        &self.seed
    }

    /// Appends `x` to a transcript, field by field.
    pub(crate) fn append_to(&self, t: &mut Transcript) {
        t.append(b"key-id", self.key_id.as_bytes());
        t.append_u64(b"version", u64::from(self.version));
        t.append(b"seed", &self.seed);
    }

    /// `P = H(x)`, hashed to Ristretto255 with its own domain.
    pub fn hash_to_point(&self) -> RistrettoPoint {
        let mut t = Transcript::new(b"hyok/v1/dprf/hash-to-group");
        self.append_to(&mut t);
        t.hash_to_point()
    }

    fn proof_context(&self, node: NodeId) -> Transcript {
        let mut t = Transcript::new(b"hyok/v1/dprf/dleq");
        t.append_u64(b"node", u64::from(node.get()));
        self.append_to(&mut t);
        t
    }
}

impl Wire for DprfInput {
    const NAME: &'static str = "DPRF input";
    const TAG: u8 = 0x20;
    fn encode_body(&self, w: &mut Writer) {
        w.bytes(self.key_id.as_bytes());
        w.u32(self.version);
        w.fixed(&self.seed);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let key_id = std::str::from_utf8(r.bytes(MAX_KEY_ID_LEN)?)
            .map_err(|_| Error::Malformed { what: Self::NAME })?
            .to_owned();
        let version = r.u32()?;
        let seed = r.array()?;
        DprfInput::new(&key_id, version, seed)
    }
}

/// The seed of an encryption, derived from the encryption's `nonce`:
/// `seed = SHA-512("hyok/v1/dprf/encryption-seed", key id, version, nonce)[..16]`.
///
/// A node asked to evaluate for an *encryption* evaluates on this derived seed, never on a seed
/// the caller names, so whoever may only encrypt cannot steer an evaluation onto the seed of an
/// existing ciphertext (that would need a preimage of the hash): the ENCRYPT/DECRYPT split is
/// enforced by what the node computes, not by the caller's word.
pub fn encryption_seed(key_id: &str, version: u32, nonce: &[u8; SEED_LEN]) -> [u8; SEED_LEN] {
    let mut t = Transcript::new(b"hyok/v1/dprf/encryption-seed");
    t.append(b"key-id", key_id.as_bytes());
    t.append_u64(b"version", u64::from(version));
    t.append(b"nonce", nonce);
    let digest = t.digest();
    let mut seed = [0u8; SEED_LEN];
    seed.copy_from_slice(&digest[..SEED_LEN]);
    seed
}

/// The combined DPRF value `Y = k·H(x)`: key material, so zeroized and never printed.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct DprfOutput(pub(crate) RistrettoPoint);

impl fmt::Debug for DprfOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DprfOutput(<redacted>)")
    }
}

/// Node side: `Y_i = k_i·H(x)` with a DLEQ proof against `K_i`.
pub fn evaluate<R: CryptoRng + ?Sized>(share: &KeyShare, input: &DprfInput, rng: &mut R) -> PartialEvaluation {
    let p = Element::new(input.hash_to_point());
    PartialEvaluation::compute(share, &p, &input.proof_context(share.node()), rng)
}

/// An input together with its point `H(x)`, hashed once for all its uses: a node's batch, the
/// coordinator's check of every node's batch.
#[derive(Clone, Debug)]
pub struct HashedInput {
    input: DprfInput,
    point: RistrettoPoint,
}

impl HashedInput {
    /// Hashes `input` to the curve.
    pub fn new(input: DprfInput) -> Self {
        let point = input.hash_to_point();
        HashedInput { input, point }
    }
    /// The input.
    pub fn input(&self) -> &DprfInput {
        &self.input
    }
}

/// One value of a node's batch, `{ node, Y_i = k_i·H(x) }`, without a proof of its own: the
/// batch's [`BatchProof`] covers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartialValue {
    node: NodeId,
    value: Element,
}

impl PartialValue {
    /// The node that computed it.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// This value as a partial for combine-first only, made with `coefficient`: unverified,
    /// its batch proof checked by `check` when a check of it is first needed (when the result
    /// does not open). The caller must check what it combines to, as [`crate::aead::decrypt`]
    /// does with the tag; [`vartime_find_invalid`] and the other checks run `check`.
    pub fn with_deferred_check(
        &self,
        coefficient: Coefficient,
        check: std::sync::Arc<dyn crate::partial::DeferredCheck>,
    ) -> PartialEvaluation {
        PartialEvaluation::with_deferred_check(self.node, self.value, coefficient, check)
    }

    /// Another value in its place, keeping the node: a tampered value, for tests.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_with_value_of(&self, other: &PartialValue) -> Self {
        PartialValue { value: other.value, ..self.clone() }
    }
}

impl Wire for PartialValue {
    const NAME: &'static str = "partial value";
    const TAG: u8 = 0x11;
    fn encode_body(&self, w: &mut Writer) {
        w.node(self.node);
        self.value.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        Ok(PartialValue { node: r.node()?, value: Element::read(r)? })
    }
}

/// A node's one proof for a batch of its values under one share: that `log_G K_i = log_M Z` for
/// `M = Σ d_j·H(x_j)` and `Z = Σ d_j·μ_j⁻¹·Y_j`, the 128-bit weights `d_j` hashed from the node,
/// `K_i`, every input, every coefficient `μ_j` and every value. A value that is not
/// `μ_j·k_i·H(x_j)` makes `Z ≠ k_i·M` except with probability about 2⁻¹²⁸ over the weights, which
/// the node cannot choose after the values. (The node computes only `M`, with short weights;
/// the coefficients' inverses fall to the verifier, who has them for free.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchProof {
    node: NodeId,
    proof: DleqProof,
}

impl BatchProof {
    /// The node that made it.
    pub fn node(&self) -> NodeId {
        self.node
    }
}

impl Wire for BatchProof {
    const NAME: &'static str = "batch proof";
    const TAG: u8 = 0x12;
    fn encode_body(&self, w: &mut Writer) {
        w.node(self.node);
        self.proof.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        Ok(BatchProof { node: r.node()?, proof: DleqProof::read(r)? })
    }
}

/// One input of a batch with the public [`Coefficient`] its value is made with.
pub type BatchItem<'a> = (&'a HashedInput, Coefficient);

/// The batch's transcript (the proof's context) and its weights `d_j`.
fn batch_statement<'a>(
    node: NodeId,
    vk: &Element,
    batch: impl ExactSizeIterator<Item = (&'a BatchItem<'a>, &'a Element)>,
) -> (Transcript, Vec<Scalar>) {
    let mut t = Transcript::new(b"hyok/v1/dprf/dleq-batch");
    t.append_u64(b"node", u64::from(node.get()));
    t.append_point(b"X", &vk.compressed);
    let len = batch.len();
    t.append_u64(b"items", len as u64);
    for ((input, coefficient), y) in batch {
        input.input.append_to(&mut t);
        t.append(b"coefficient", coefficient.value().as_bytes());
        t.append_point(b"Y", &y.compressed);
    }
    let digest = t.clone().digest();
    let weights = (0..len)
        .map(|j| {
            let mut w = Transcript::new(b"hyok/v1/dprf/dleq-batch/weight");
            w.append(b"batch", &digest);
            w.append_u64(b"index", j as u64);
            dleq::derived_weight(w)
        })
        .collect();
    (t, weights)
}

/// Node side, many inputs at once: `Y_j = (μ_j·k_i)·H(x_j)` for each input and its
/// coefficient (dalek's constant-time multiplication), and one [`BatchProof`] for them all. It
/// costs one constant-time multiplication per input and one more for the batch, where
/// [`evaluate`] costs two per input. Values come in the order of `items`; an empty batch gives
/// no values and a proof nobody accepts.
pub fn evaluate_batch<R: CryptoRng + ?Sized>(
    share: &KeyShare,
    items: &[BatchItem<'_>],
    rng: &mut R,
) -> (Vec<PartialValue>, BatchProof) {
    let node = share.node();
    let vk = share.verification_key();
    let hs: Vec<RistrettoPoint> = items.iter().map(|(i, _)| i.point).collect();
    let factors: Vec<Scalar> = items.iter().map(|(_, c)| c.value()).collect();
    let values = dleq::multiply_all(share.secret(), &hs, &factors);
    let (context, weights) = batch_statement(node, &vk.0, items.iter().zip(&values));
    // M is public (the inputs' points and public weights): variable time is fine.
    let m = RistrettoPoint::vartime_multiscalar_mul(&weights, &hs);
    let proof = DleqProof::prove_combined(share.secret(), &m, &context, rng);
    (values.into_iter().map(|value| PartialValue { node, value }).collect(), BatchProof { node, proof })
}

/// Coordinator side: checks `proof` over the node's `values` for `items` (the inputs in the
/// order the node was asked, each with the coefficient it was asked to apply), and only then
/// gives them as partials, ready to combine. The node of `proof` must be the node of every
/// value and a node of `package`. [`Error::InvalidProof`] names the node when anything is off.
/// Variable time: public data only.
pub fn vartime_verify_batch<R: CryptoRng + ?Sized>(
    package: &PublicKeyPackage,
    items: &[BatchItem<'_>],
    values: &[PartialValue],
    proof: &BatchProof,
    rng: &mut R,
) -> Result<Vec<PartialEvaluation>> {
    let node = proof.node;
    let invalid = Error::InvalidProof { node };
    if values.is_empty() || values.len() != items.len() || values.iter().any(|v| v.node != node) {
        return Err(invalid);
    }
    let vk = package.verification_key(node)?;
    let x_at = package.base_index(node)?;
    let (context, weights) = batch_statement(node, &vk.0, items.iter().zip(values.iter().map(|v| &v.value)));
    let hs: Vec<(RistrettoPoint, Scalar)> =
        items.iter().zip(&weights).map(|((input, _), d)| (input.point, *d)).collect();
    let ys: Vec<(RistrettoPoint, Scalar)> = values
        .iter()
        .zip(items)
        .zip(&weights)
        .map(|((v, (_, coefficient)), d)| (v.value.point, d * coefficient.inverse()))
        .collect();
    if !dleq::vartime_verify_combined(package.bases(), x_at, &hs, &ys, &proof.proof, &context, rng) {
        return Err(invalid);
    }
    Ok(values
        .iter()
        .zip(items)
        .map(|(v, (_, coefficient))| PartialEvaluation::proven_with_batch(node, v.value, *coefficient))
        .collect())
}

/// Checks one partial's proof; [`Error::InvalidProof`] names the node.
pub fn vartime_verify(package: &PublicKeyPackage, input: &DprfInput, partial: &PartialEvaluation) -> Result<()> {
    let p = Element::new(input.hash_to_point());
    partial.vartime_verify(package, &p, &input.proof_context(partial.node()))
}

/// Nodes whose partials fail their proofs (empty: all valid), by one batch verification with
/// random weights, and one-by-one verification only when the batch fails.
pub fn vartime_find_invalid<R: CryptoRng + ?Sized>(
    package: &PublicKeyPackage,
    input: &DprfInput,
    partials: &[PartialEvaluation],
    rng: &mut R,
) -> Result<Vec<NodeId>> {
    partial::vartime_find_invalid(
        package,
        || Element::new(input.hash_to_point()),
        |n| input.proof_context(n),
        partials,
        rng,
    )
}

/// Verify, then combine: `Y = Σ_{i∈S} λ_i·Y_i` over the first `t` partials whose proofs hold.
/// For operations with no other check on the result (encryption).
pub fn combine<R: CryptoRng + ?Sized>(
    package: &PublicKeyPackage,
    input: &DprfInput,
    partials: &[PartialEvaluation],
    rng: &mut R,
) -> Result<Opened<DprfOutput>> {
    let p = Element::new(input.hash_to_point());
    let opened = partial::combine_verified(package, &p, |n| input.proof_context(n), partials, rng)?;
    Ok(Opened { value: DprfOutput(opened.value), culprits: opened.culprits })
}

/// Combine only: `Y = Σ_{i∈S} λ_i·Y_i` over the first `t` partials, no proof checked. The caller
/// must check the result (an AEAD tag) and fall back to [`vartime_find_invalid`].
pub fn combine_unchecked(package: &PublicKeyPackage, partials: &[PartialEvaluation]) -> Result<DprfOutput> {
    let refs: Vec<&PartialEvaluation> = partials.iter().collect();
    partial::combine_unchecked(package, &refs).map(DprfOutput)
}

/// Combine-first with a result check: combine the first `t`, call `open`; if it fails, find
/// the culprits by their proofs and retry with `t` valid partials.
pub(crate) fn open_combine_first<T>(
    package: &PublicKeyPackage,
    input: &DprfInput,
    partials: &[PartialEvaluation],
    mut open: impl FnMut(&DprfOutput) -> Option<T>,
) -> Result<Opened<T>> {
    partial::open_combine_first(
        package,
        || Element::new(input.hash_to_point()),
        |n| input.proof_context(n),
        partials,
        |y| open(&DprfOutput(*y)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dealer::dangerous_deal;
    use curve25519_dalek::Scalar;

    fn batch_setup() -> (Vec<KeyShare>, PublicKeyPackage, Vec<HashedInput>) {
        let mut rng = rand::rng();
        let ids: Vec<NodeId> = (1..=5).map(|i| NodeId::new(i).unwrap()).collect();
        let (shares, package) = dangerous_deal(&Scalar::random(&mut rng), 3, &ids, &mut rng).unwrap();
        let inputs = (0..4).map(|_| HashedInput::new(DprfInput::random("key", 1, &mut rng).unwrap())).collect();
        (shares, package, inputs)
    }

    /// Values from three nodes' batches, once their proofs hold, combine to what the nodes'
    /// single evaluations combine to, input by input.
    #[test]
    fn batch_values_verify_and_combine_to_the_single_evaluations_result() {
        let mut rng = rand::rng();
        let (shares, package, inputs) = batch_setup();
        let refs: Vec<BatchItem<'_>> = inputs.iter().map(|i| (i, Coefficient::ONE)).collect();
        let per_node: Vec<Vec<PartialEvaluation>> = [0, 2, 4]
            .iter()
            .map(|i| {
                let (values, proof) = evaluate_batch(&shares[*i], &refs, &mut rng);
                assert_eq!(proof.node(), shares[*i].node());
                vartime_verify_batch(&package, &refs, &values, &proof, &mut rng).unwrap()
            })
            .collect();
        for (j, input) in inputs.iter().enumerate() {
            let batched: Vec<PartialEvaluation> = per_node.iter().map(|p| p[j].clone()).collect();
            // Nothing left to check for them, and nothing found.
            assert!(vartime_find_invalid(&package, &input.input, &batched, &mut rng).unwrap().is_empty());
            let single: Vec<PartialEvaluation> =
                [1, 3, 4].iter().map(|i| evaluate(&shares[*i], &input.input, &mut rng)).collect();
            assert!(
                combine_unchecked(&package, &batched).unwrap().0 == combine_unchecked(&package, &single).unwrap().0
            );
        }
    }

    /// A batch proof holds for exactly the values, inputs, order and node it was made for.
    #[test]
    fn a_batch_proof_fails_for_any_value_input_order_or_node_but_its_own() {
        let mut rng = rand::rng();
        let (shares, package, inputs) = batch_setup();
        let refs: Vec<BatchItem<'_>> = inputs.iter().map(|i| (i, Coefficient::ONE)).collect();
        let (values, proof) = evaluate_batch(&shares[1], &refs, &mut rng);
        let node = shares[1].node();
        let refused = |inputs: &[BatchItem<'_>], values: &[PartialValue], proof: &BatchProof| {
            vartime_verify_batch(&package, inputs, values, proof, &mut rand::rng()).unwrap_err()
        };
        assert!(vartime_verify_batch(&package, &refs, &values, &proof, &mut rng).is_ok());
        // One value replaced by another input's value, or by the right value plus G.
        let mut swapped = values.clone();
        swapped[2] = PartialValue { node, value: values[0].value };
        assert_eq!(refused(&refs, &swapped, &proof), Error::InvalidProof { node });
        let mut shifted = values.clone();
        shifted[3].value = Element::new(values[3].value.point + RistrettoPoint::mul_base(&Scalar::ONE));
        assert_eq!(refused(&refs, &shifted, &proof), Error::InvalidProof { node });
        // Two values (and their inputs) in another order.
        let (mut rv, mut ri) = (values.clone(), refs.clone());
        rv.swap(0, 1);
        ri.swap(0, 1);
        assert_eq!(refused(&ri, &rv, &proof), Error::InvalidProof { node });
        // Another input, one value fewer, none.
        let other = HashedInput::new(DprfInput::random("key", 1, &mut rng).unwrap());
        let mut elsewhere = refs.clone();
        elsewhere[1] = (&other, Coefficient::ONE);
        assert_eq!(refused(&elsewhere, &values, &proof), Error::InvalidProof { node });
        assert_eq!(refused(&refs[..3], &values[..3], &proof), Error::InvalidProof { node });
        assert_eq!(refused(&[], &[], &proof), Error::InvalidProof { node });
        // Node 2's values under node 3's name, and with node 3's proof of its own batch.
        let (theirs, their_proof) = evaluate_batch(&shares[2], &refs, &mut rng);
        let renamed: Vec<PartialValue> =
            values.iter().map(|v| PartialValue { node: theirs[0].node, ..v.clone() }).collect();
        assert!(refused(&refs, &renamed, &their_proof) == Error::InvalidProof { node: theirs[0].node });
        assert_eq!(refused(&refs, &theirs, &proof), Error::InvalidProof { node });
        // The proof with its response changed.
        let mut bytes = proof.to_bytes();
        let s_low = bytes.len() - 32;
        bytes[s_low] ^= 1;
        let bent = BatchProof::from_bytes(&bytes).unwrap();
        assert_eq!(refused(&refs, &values, &bent), Error::InvalidProof { node });
    }

    /// A partial proven with its batch has no proof to send on: encoded and read back, it
    /// fails the check it passed for free.
    #[test]
    fn a_batch_proven_partial_sent_on_fails_closed() {
        let mut rng = rand::rng();
        let (shares, package, inputs) = batch_setup();
        let refs: Vec<BatchItem<'_>> = inputs.iter().map(|i| (i, Coefficient::ONE)).collect();
        let (values, proof) = evaluate_batch(&shares[0], &refs, &mut rng);
        let partial = vartime_verify_batch(&package, &refs, &values, &proof, &mut rng).unwrap().remove(0);
        assert!(vartime_verify(&package, &inputs[0].input, &partial).is_ok());
        let resent = PartialEvaluation::from_bytes(&partial.to_bytes()).unwrap();
        assert_eq!(
            vartime_verify(&package, &inputs[0].input, &resent),
            Err(Error::InvalidProof { node: partial.node() })
        );
    }

    /// The batch check itself, not the one-by-one fallback that would hide a batch that always
    /// failed: valid partials pass it (twice over one package's prepared bases), and a statement
    /// pointed at another node's key, or at `G`, or past the bases, fails it.
    #[test]
    fn the_batch_check_passes_valid_partials_and_fails_a_wrong_statement() {
        let mut rng = rand::rng();
        let ids: Vec<NodeId> = (1..=5).map(|i| NodeId::new(i).unwrap()).collect();
        let (shares, package) = dangerous_deal(&Scalar::random(&mut rng), 3, &ids, &mut rng).unwrap();
        let input = DprfInput::random("key", 1, &mut rng).unwrap();
        let h = Element::new(input.hash_to_point());
        let partials: Vec<PartialEvaluation> =
            [0, 2, 4].iter().map(|i| evaluate(&shares[*i], &input, &mut rng)).collect();
        let items = partial::statements(&package, &h, |n| input.proof_context(n), &partials).unwrap();
        assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), vec![1, 3, 5]);
        assert!(dleq::vartime_verify_batch(package.bases(), &h, &items, &mut rng));
        assert!(dleq::vartime_verify_batch(package.bases(), &h, &items, &mut rng));
        for wrong in [2, 0, 6] {
            let mut items = partial::statements(&package, &h, |n| input.proof_context(n), &partials).unwrap();
            items[1].0 = wrong;
            assert!(!dleq::vartime_verify_batch(package.bases(), &h, &items, &mut rng), "index {wrong}");
        }
    }

    /// Nodes that apply their own Lagrange coefficients over the set asked give values whose
    /// plain sum is the output; combined with another set, or with one node's value made
    /// without its coefficient, the result is the same output.
    #[test]
    fn values_made_with_their_lagrange_coefficients_combine_to_the_same_output() {
        let mut rng = rand::rng();
        let (shares, package, inputs) = batch_setup();
        let set: Vec<NodeId> = [0, 2, 4].iter().map(|i| shares[*i].node()).collect();
        let proven = |i: usize, coefficient: Coefficient| {
            let items: Vec<BatchItem<'_>> = inputs.iter().map(|input| (input, coefficient)).collect();
            let (values, proof) = evaluate_batch(&shares[i], &items, &mut rand::rng());
            vartime_verify_batch(&package, &items, &values, &proof, &mut rand::rng()).unwrap()
        };
        let lagrange = |i: usize| Coefficient::lagrange(&set, shares[i].node()).unwrap();
        let scaled: Vec<Vec<PartialEvaluation>> = [0, 2, 4].iter().map(|i| proven(*i, lagrange(*i))).collect();
        let plain: Vec<Vec<PartialEvaluation>> = [0, 2, 4].iter().map(|i| proven(*i, Coefficient::ONE)).collect();
        // Node 2 (index 1) asked for its coefficient over {1, 3, 5}, then combined in {2, 3, 5}.
        let elsewhere = proven(1, lagrange(0));
        for (j, input) in inputs.iter().enumerate() {
            let expected =
                combine_unchecked(&package, &[plain[0][j].clone(), plain[1][j].clone(), plain[2][j].clone()]).unwrap();
            let summed: RistrettoPoint = scaled.iter().map(|p| p[j].value_point()).sum();
            assert!(summed == expected.0, "the plain sum is the output");
            let with_set = [scaled[0][j].clone(), scaled[1][j].clone(), scaled[2][j].clone()];
            assert!(combine_unchecked(&package, &with_set).unwrap().0 == expected.0);
            let mixed = [scaled[0][j].clone(), plain[1][j].clone(), scaled[2][j].clone()];
            assert!(combine_unchecked(&package, &mixed).unwrap().0 == expected.0);
            let other_set = [elsewhere[j].clone(), scaled[1][j].clone(), scaled[2][j].clone()];
            assert!(combine_unchecked(&package, &other_set).unwrap().0 == expected.0);
            let single: Vec<PartialEvaluation> =
                [1, 3, 4].iter().map(|i| evaluate(&shares[*i], &input.input, &mut rng)).collect();
            assert!(combine_unchecked(&package, &single).unwrap().0 == expected.0);
        }
    }

    /// A node that applies another coefficient than the one it was asked for (or none) fails
    /// its batch proof: the coefficient is part of the statement.
    #[test]
    fn a_value_made_with_another_coefficient_than_asked_fails_the_proof() {
        let mut rng = rand::rng();
        let (shares, package, inputs) = batch_setup();
        let node = shares[1].node();
        let set: Vec<NodeId> = [1, 2, 3].iter().map(|i| shares[*i].node()).collect();
        let asked = Coefficient::lagrange(&set, node).unwrap();
        let items: Vec<BatchItem<'_>> = inputs.iter().map(|i| (i, asked)).collect();
        let (values, proof) = evaluate_batch(&shares[1], &items, &mut rng);
        assert!(vartime_verify_batch(&package, &items, &values, &proof, &mut rng).is_ok());
        for used in [Coefficient::ONE, Coefficient::lagrange(&set, shares[2].node()).unwrap()] {
            let made: Vec<BatchItem<'_>> = inputs.iter().map(|i| (i, used)).collect();
            let (values, proof) = evaluate_batch(&shares[1], &made, &mut rng);
            let err = vartime_verify_batch(&package, &items, &values, &proof, &mut rng).unwrap_err();
            assert_eq!(err, Error::InvalidProof { node });
        }
        // Zero, non-canonical and short coefficients never come off the wire.
        assert!(Coefficient::from_bytes(&[0; 32]).is_err());
        assert!(Coefficient::from_bytes(&[0xff; 32]).is_err());
        assert!(Coefficient::from_bytes(&[1; 31]).is_err());
        assert_eq!(Coefficient::from_bytes(&[]).unwrap(), Coefficient::ONE);
        assert_eq!(Coefficient::from_bytes(&asked.to_bytes()).unwrap(), asked);
        assert!(Coefficient::lagrange(&set, shares[0].node()).is_err(), "a node outside the set has none");
    }
}
