//! The distributed PRF: `F_k(x) = k·H(x)`, evaluated by `t` nodes and combined in the exponent.
//!
//! Steps: a node runs [`evaluate`] (it hashes `x` to `P = H(x)` itself, so it never raises its
//! share to a point the caller chose); the coordinator runs [`combine`] (verify, then combine)
//! or [`combine_unchecked`] (combine only; for callers that check the result another way).

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{Element, KeyShare, NodeId, PublicKeyPackage};
use crate::partial::{self, Opened, PartialEvaluation};
use crate::transcript::Transcript;
use curve25519_dalek::RistrettoPoint;
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
    let p = Element::new(input.hash_to_point());
    partial::vartime_find_invalid(package, &p, |n| input.proof_context(n), partials, rng)
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
    use crate::dleq::vartime_verify_batch;
    use curve25519_dalek::Scalar;

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
        assert!(vartime_verify_batch(package.bases(), &h, &items, &mut rng));
        assert!(vartime_verify_batch(package.bases(), &h, &items, &mut rng));
        for wrong in [2, 0, 6] {
            let mut items = partial::statements(&package, &h, |n| input.proof_context(n), &partials).unwrap();
            items[1].0 = wrong;
            assert!(!vartime_verify_batch(package.bases(), &h, &items, &mut rng), "index {wrong}");
        }
    }
}
