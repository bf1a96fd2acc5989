//! Resharing a threshold RSA key over the integers (Rabin-style, statistical hiding): `≥ t`
//! old holders deal fresh `t′`-of-`n′` shares of what their shares represent to a new set of
//! nodes, without `d` or `φ(N)` ever existing anywhere. No I/O: a per-node state machine.
//!
//! ```text
//! deal(me, secrets, share, params)       -> DealerPackage            (old holder j, broadcast)
//! receive(me, secrets, params, packages) -> ReceiverState (kept), ComplaintPackage (broadcast)
//! ReceiverState::finish(complaints)      -> Output { share, package, disqualified, false_accusers }
//! ```
//!
//! The old package represents `D = M·d + K` (see [`RsaPublicPackage`]):
//! `Σ_{j∈S} λ_{S,j}·s_j ≡ Δ·D (mod λ(N))` for every `t`-set `S`, `Δ = n!`. Dealer `j` picks an
//! integer polynomial `g_j(X) = Δ′·s_j + a_1·X + … + a_{t′−1}·X^{t′−1}` (`Δ′ = n′!`) with every
//! `a_k` uniform in `[2^(A−1), 2^A)` (`A` from [`ShareSizes`]), commits
//! `C_jk = g^(a_jk) mod N` (`g = H(N)²`, [`Parameters`]), and sends `g_j(i)` to receiver `i`
//! encrypted to `i`'s DKG transport key exactly as the DKG does (fresh ephemeral with a Schnorr
//! proof of knowledge bound to this run, ECDH, HKDF over the run transcript, AES-256-GCM), the
//! package signed by `j`'s identity key.
//!
//! Receiver `i` checks `g^(g_j(i)) ≡ Π_k C_jk^(i^k)` and the range of `g_j(i)`, and complains
//! (revealing `tr_i·E_j` with a DLEQ proof, the DKG's complaint) otherwise. After complaints,
//! every receiver takes the dealers `Q` without a justified complaint and picks the first
//! `t`-subset `S ⊆ Q` (lexicographic) whose constant terms pass
//! `(Π_{j∈S} C_j0^(λ_{S,j}))^e ≡ g^(Δ′·Δ·(M + K·e)) (mod N)` — which holds iff
//! `Σ λ_{S,j}·Δ′·s_j ≡ Δ′·Δ·D` in the exponent of `g`, checked with public data only. Dealers
//! in no passing subset are disqualified. The new share is
//!
//! `s′_i = K″ + Σ_{j∈S} λ_{S,j}·g_j(i)` (integers; `K″` a public offset making it positive),
//!
//! and the new package represents `D′ = M′·d + K′` with `M′ = Δ′·Δ·M`, `K′ = Δ′·Δ·K + K″` over
//! `t′`-of-`n′` (the crate README, "Resharing threshold RSA", has the argument and the sizes).

use super::keys::{RsaKeyShare, RsaPublicPackage};
use super::{modexp, num};
use crate::ecies;
use crate::encoding::{MAX_NODES, Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{Element, NodeId, TransportSecret};
use crate::node_keys::{KeyBundle, NodeSecrets};
use crate::schnorr;
use crate::transcript::Transcript;
use crate::vss::{self, Channel, SignedComplaints};
use aes_gcm::{AeadInOut, Aes256Gcm};
use crypto_bigint::{BoxedUint, ConcatenatingMul, RandomBits};
use curve25519_dalek::{RistrettoPoint, Scalar};
use openssl::bn::{BigNum, BigNumContext};
use rand_core::CryptoRng;
use sha2::{Digest, Sha512};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use zeroize::Zeroizing;

/// `κ`: every dealer's sub-shares to any `t′ − 1` receivers are within statistical distance
/// `2^-κ` of sub-shares of any other old share. 128, the margin the dealer uses for its
/// reductions: the leak is not something an attacker can grind offline, so 80 would do, but
/// 48 bits per reshare are cheap next to the modulus.
pub const STATISTICAL_SECURITY: u32 = 128;
/// Most old or new nodes a reshare supports (the constant-term check may search subsets).
pub const MAX_RESHARE_NODES: u16 = 16;
/// Longest session id, in bytes.
pub const MAX_SESSION_LEN: usize = 256;
const GCM_TAG: usize = 16;

fn bits_u128(x: u128) -> u32 {
    128 - x.leading_zeros()
}

fn factorial_u128(n: u16) -> Option<u128> {
    (1..=u128::from(n)).try_fold(1u128, |acc, i| acc.checked_mul(i))
}

/// The public sizes of one reshare, fixed by the old share bound `B`, `(t, n)` and `(t′, n′)`:
///
/// - `A = B + bits(Δ′) + t′ + 5 + κ`: coefficients are uniform in `[2^(A−1), 2^A)`;
/// - `SB = A + bits(Σ_{k<t′} n′^k)`: every sub-share `g_j(i) < 2^SB`;
/// - `L = bits(t·Δ·n^(t−1))` bounds `Σ_j |λ_{S,j}|` for every `S`; `Kb = SB + L` (plus 1 when
///   `Kb + 3 + bits(Δ′)` is a multiple of 64, so that `2Δ′·s′_i` always has the same number of
///   64-bit words);
/// - `B′ = Kb + 3`, and `K″ = 2^(B′−1) + 2^(B′−2)`: every new share has exactly `B′` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShareSizes {
    /// `A`.
    pub coefficient_bits: u32,
    /// `SB`.
    pub sub_share_bits: u32,
    /// `B′`, the bit length of every new share.
    pub share_bits: u32,
}

impl ShareSizes {
    /// The sizes for resharing shares of at most `old_share_bits` bits held `t`-of-`n` to
    /// `t′`-of-`n′`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for thresholds or node counts outside `1..=16`.
    pub fn new(old_share_bits: u32, t: u16, n: u16, new_t: u16, new_n: u16) -> Result<Self> {
        let bad = Error::InvalidParameters("reshare sizes out of range");
        if t == 0 || t > n || new_t == 0 || new_t > new_n || n > MAX_RESHARE_NODES || new_n > MAX_RESHARE_NODES {
            return Err(bad);
        }
        let new_delta_bits = bits_u128(factorial_u128(new_n).ok_or(bad.clone())?);
        let coefficient_bits = old_share_bits + new_delta_bits + u32::from(new_t) + 5 + STATISTICAL_SECURITY;
        let powers: u128 = (0..u32::from(new_t)).map(|k| u128::from(new_n).pow(k)).sum();
        let sub_share_bits = coefficient_bits + bits_u128(powers);
        let lambda_sum = u128::from(t)
            .checked_mul(factorial_u128(n).ok_or(bad.clone())?)
            .and_then(|x| x.checked_mul(u128::from(n).checked_pow(u32::from(t) - 1)?))
            .ok_or(bad)?;
        let mut offset_bits = sub_share_bits + bits_u128(lambda_sum);
        if (offset_bits + 3 + new_delta_bits).is_multiple_of(64) {
            offset_bits += 1;
        }
        Ok(ShareSizes { coefficient_bits, sub_share_bits, share_bits: offset_bits + 3 })
    }

    fn sub_share_bytes(&self) -> usize {
        self.sub_share_bits.div_ceil(8) as usize
    }
    /// The precision holding a sub-share, a coefficient or a product with `i`.
    fn work_precision(&self) -> u32 {
        num::precision(self.sub_share_bits + 64)
    }
}

/// Public big-integer arithmetic modulo `N` on OpenSSL (variable time: public values only).
struct Modulus {
    n: BigNum,
    size: usize,
}

fn bn_failed(_: openssl::error::ErrorStack) -> Error {
    Error::InvalidParameters("big-number arithmetic failed")
}

impl Modulus {
    fn new(package: &RsaPublicPackage) -> Result<Self> {
        let key = package.public_key();
        Ok(Modulus { n: BigNum::from_slice(&key.modulus_bytes()).map_err(bn_failed)?, size: key.size() })
    }
    fn element(&self, bytes: &[u8]) -> Result<BigNum> {
        BigNum::from_slice(bytes).map_err(bn_failed)
    }
    fn vartime_pow(&self, base: &BigNum, exponent: &BigNum) -> Result<BigNum> {
        let mut ctx = BigNumContext::new().map_err(bn_failed)?;
        let mut out = BigNum::new().map_err(bn_failed)?;
        out.mod_exp(base, exponent, &self.n, &mut ctx).map_err(bn_failed)?;
        Ok(out)
    }
    fn mul(&self, x: &BigNum, y: &BigNum) -> Result<BigNum> {
        let mut ctx = BigNumContext::new().map_err(bn_failed)?;
        let mut out = BigNum::new().map_err(bn_failed)?;
        out.mod_mul(x, y, &self.n, &mut ctx).map_err(bn_failed)?;
        Ok(out)
    }
    fn invert(&self, x: &BigNum) -> Result<BigNum> {
        let mut ctx = BigNumContext::new().map_err(bn_failed)?;
        let mut out = BigNum::new().map_err(bn_failed)?;
        out.mod_inverse(x, &self.n, &mut ctx).map_err(bn_failed)?;
        Ok(out)
    }
    fn to_bytes(&self, x: &BigNum) -> Result<Vec<u8>> {
        x.to_vec_padded(i32::try_from(self.size).map_err(|_| Error::InvalidParameters("modulus too long"))?)
            .map_err(bn_failed)
    }
    /// `Π_k C_k^(i^k) mod N`.
    fn vartime_feldman(&self, commitments: &[Vec<u8>], i: NodeId) -> Result<BigNum> {
        let mut acc = BigNum::from_u32(1).map_err(bn_failed)?;
        let mut power = BigNum::from_u32(1).map_err(bn_failed)?;
        let id = BigNum::from_u32(u32::from(i.get())).map_err(bn_failed)?;
        let mut ctx = BigNumContext::new().map_err(bn_failed)?;
        for c in commitments {
            let term = self.vartime_pow(&self.element(c)?, &power)?;
            acc = self.mul(&acc, &term)?;
            let mut next = BigNum::new().map_err(bn_failed)?;
            next.checked_mul(&power, &id, &mut ctx).map_err(bn_failed)?;
            power = next;
        }
        Ok(acc)
    }
}

/// `2^bits` at `precision`.
fn pow2(bits: u32, precision: u32) -> Result<BoxedUint> {
    BoxedUint::one_with_precision(precision)
        .shl_vartime(bits)
        .ok_or(Error::InvalidParameters("reshare size out of range"))
}

fn bn(x: &BoxedUint) -> Result<BigNum> {
    BigNum::from_slice(&num::vartime_to_be_minimal(x)).map_err(bn_failed)
}

/// `g = (H(N) mod N)²`, with `H` SHA-512 in counter mode over twice the length of `N`: a square
/// nobody knows a discrete logarithm of.
fn generator(package: &RsaPublicPackage, modulus: &Modulus) -> Result<Vec<u8>> {
    let key = package.public_key();
    let mut wide = Vec::with_capacity(2 * key.size() + 64);
    let mut counter = 0u32;
    while wide.len() < 2 * key.size() {
        let mut h = Sha512::new();
        h.update(<Parameters as Channel>::DOMAIN.as_bytes());
        h.update(b"/generator");
        h.update(key.modulus_bytes());
        h.update(counter.to_be_bytes());
        wide.extend_from_slice(&h.finalize());
        counter += 1;
    }
    let mut ctx = BigNumContext::new().map_err(bn_failed)?;
    let mut reduced = BigNum::new().map_err(bn_failed)?;
    let wide = modulus.element(&wide)?;
    reduced.nnmod(&wide, &modulus.n, &mut ctx).map_err(bn_failed)?;
    let g = modulus.mul(&reduced, &reduced)?;
    let mut gcd = BigNum::new().map_err(bn_failed)?;
    gcd.gcd(&g, &modulus.n, &mut ctx).map_err(bn_failed)?;
    if g.num_bits() < 2 || gcd != BigNum::from_u32(1).map_err(bn_failed)? {
        return Err(Error::InvalidParameters("RSA modulus gives no reshare generator"));
    }
    modulus.to_bytes(&g)
}

/// What every dealer and receiver of one reshare agrees on before it starts.
#[derive(Clone)]
pub struct Parameters {
    old: RsaPublicPackage,
    dealers: BTreeMap<NodeId, KeyBundle>,
    receivers: BTreeMap<NodeId, KeyBundle>,
    threshold: u16,
    session: Vec<u8>,
    sizes: ShareSizes,
    /// `g`, `k` bytes.
    generator: Vec<u8>,
    /// `Δ′ = n′!`.
    new_delta: BoxedUint,
}

impl fmt::Debug for Parameters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("reshare::Parameters")
            .field("old", &self.old)
            .field("dealers", &self.dealers.keys().collect::<Vec<_>>())
            .field("receivers", &self.receivers.keys().collect::<Vec<_>>())
            .field("threshold", &self.threshold)
            .field("sizes", &self.sizes)
            .finish_non_exhaustive()
    }
}

impl Parameters {
    /// A reshare of the key `old` by `dealers` (old holders, by their old node ids, each one's
    /// verified key bundle; at least `t` of them) to `receivers` (by their new node ids, which
    /// must be exactly `1..=n′`), `new_threshold`-of-`n′`, for the run named by `session`.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] for fewer than `t` dealers, a dealer outside `1..=n`,
    /// receivers other than `1..=n′`, `n` or `n′` above [`MAX_RESHARE_NODES`], a bad `t′` or
    /// session, an `e` sharing a factor with `4Δ′²M′`, or new shares longer than
    /// [`RsaPublicPackage::max_share_bits`] (then the key must be replaced by a new version: see
    /// the README); [`Error::DuplicateNode`] for a repeated bundle.
    pub fn new(
        old: RsaPublicPackage,
        dealers: impl IntoIterator<Item = KeyBundle>,
        receivers: impl IntoIterator<Item = KeyBundle>,
        new_threshold: u16,
        session: &[u8],
    ) -> Result<Self> {
        let collect = |bundles: &mut dyn Iterator<Item = KeyBundle>| -> Result<BTreeMap<NodeId, KeyBundle>> {
            let mut map = BTreeMap::new();
            for b in bundles {
                if map.insert(b.node(), b).is_some() {
                    return Err(Error::DuplicateNode { node: b.node() });
                }
            }
            Ok(map)
        };
        let dealers = collect(&mut dealers.into_iter())?;
        let receivers = collect(&mut receivers.into_iter())?;
        if old.nodes() > MAX_RESHARE_NODES {
            return Err(Error::InvalidParameters("reshare supports keys of at most 16 nodes"));
        }
        if dealers.len() < usize::from(old.threshold()) {
            return Err(Error::InvalidParameters("reshare needs at least t dealers"));
        }
        for id in dealers.keys() {
            old.check_node(*id)?;
        }
        let new_nodes = u16::try_from(receivers.len()).map_err(|_| Error::InvalidParameters("too many receivers"))?;
        if new_nodes > MAX_RESHARE_NODES || !receivers.keys().map(|n| n.get()).eq(1..=new_nodes) {
            return Err(Error::InvalidParameters("reshare receivers must be the node ids 1..=n′, n′ ≤ 16"));
        }
        if new_threshold == 0 || new_threshold > new_nodes {
            return Err(Error::InvalidParameters("threshold must satisfy 1 ≤ t′ ≤ n′"));
        }
        if session.is_empty() || session.len() > MAX_SESSION_LEN {
            return Err(Error::InvalidParameters("session id must be 1..=256 bytes"));
        }
        let sizes = ShareSizes::new(old.share_bits(), old.threshold(), old.nodes(), new_threshold, new_nodes)?;
        if sizes.share_bits > old.max_share_bits() {
            return Err(Error::InvalidParameters("reshared shares would exceed the key's share cap: rotate the key"));
        }
        let new_delta = num::vartime_factorial(new_nodes)?;
        let new_scale = new_delta.concatenating_mul(old.delta()).concatenating_mul(old.scale());
        num::vartime_shoup_bezout(&new_delta, &new_scale, old.public_key().exponent())
            .ok_or(Error::InvalidParameters("RSA exponent e must be coprime to 4·(n′!)²·M′"))?;
        let generator = generator(&old, &Modulus::new(&old)?)?;
        Ok(Parameters {
            old,
            dealers,
            receivers,
            threshold: new_threshold,
            session: session.to_vec(),
            sizes,
            generator,
            new_delta,
        })
    }

    /// The package being reshared.
    pub fn old_package(&self) -> &RsaPublicPackage {
        &self.old
    }
    /// `t′`.
    pub fn new_threshold(&self) -> u16 {
        self.threshold
    }
    /// `n′`.
    pub fn new_nodes(&self) -> u16 {
        self.receivers.len() as u16
    }
    /// The dealers' (old) node ids, ascending.
    pub fn dealers(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.dealers.keys().copied()
    }
    /// The public sizes of this reshare.
    pub fn sizes(&self) -> ShareSizes {
        self.sizes
    }

    fn dealer(&self, node: NodeId) -> Result<&KeyBundle> {
        self.dealers.get(&node).ok_or(Error::UnknownNode { node: node.get() })
    }
    fn receiver(&self, node: NodeId) -> Result<&KeyBundle> {
        self.receivers.get(&node).ok_or(Error::UnknownNode { node: node.get() })
    }

    fn ephemeral_context(&self, dealer: NodeId) -> Transcript {
        vss::dealer_context(self, "ephemeral", dealer)
    }

    /// `AES-256-GCM` under `HKDF(dh, info = H(run, j, i, E_j, C_j))`; each key encrypts one
    /// sub-share.
    fn share_cipher(&self, body: &Body, recipient: NodeId, dh: &RistrettoPoint) -> Aes256Gcm {
        let mut t = self.transcript("share-encryption");
        t.append_u64(b"dealer", u64::from(body.dealer.get()));
        t.append_u64(b"recipient", u64::from(recipient.get()));
        t.append_point(b"ephemeral", &body.ephemeral.compressed);
        for c in &body.commitments {
            t.append(b"commitment", c);
        }
        ecies::cipher(<Self as Channel>::DOMAIN.as_bytes(), dh, &t.digest())
    }
}

/// This run: session, old package, `t′`, every dealer's and receiver's identity and transport
/// keys. The complaint round is the DKG's ([`vss::judge_complaints`]).
impl Channel for Parameters {
    const DOMAIN: &'static str = "hyok/v1/rsa-reshare";

    fn bind(&self, t: &mut Transcript) {
        t.append(b"session", &self.session);
        t.append(b"old-package", &self.old.to_bytes());
        t.append_u64(b"new-threshold", u64::from(self.threshold));
        for (role, set) in [(&b"dealer"[..], &self.dealers), (&b"receiver"[..], &self.receivers)] {
            for (id, keys) in set {
                t.append_u64(role, u64::from(id.get()));
                t.append_point(b"identity", &keys.identity().0.compressed);
                t.append_point(b"transport", &keys.transport().0.compressed);
            }
        }
    }
    fn receiver_bundle(&self, node: NodeId) -> Result<&KeyBundle> {
        self.receiver(node)
    }
    fn receiver_ids(&self) -> Vec<NodeId> {
        self.receivers.keys().copied().collect()
    }
}

/// What a dealer signs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Body {
    dealer: NodeId,
    /// `C_jk = g^(a_jk) mod N`, `k` bytes each, `k = 0..t′`.
    commitments: Vec<Vec<u8>>,
    ephemeral: Element,
    ephemeral_proof: schnorr::Proof,
    /// `g_j(i)` in `⌈SB/8⌉` bytes, encrypted, and the GCM tag, by receiver.
    shares: BTreeMap<NodeId, Vec<u8>>,
}

impl Body {
    fn write(&self, w: &mut Writer) {
        w.node(self.dealer);
        w.u16(self.commitments.len() as u16);
        for c in &self.commitments {
            w.bytes(c);
        }
        self.ephemeral.write(w);
        self.ephemeral_proof.write(w);
        w.u16(self.shares.len() as u16);
        for (id, s) in &self.shares {
            w.node(*id);
            w.bytes(s);
        }
    }

    fn signature_context(&self, params: &Parameters) -> Transcript {
        let mut w = Writer(Vec::new());
        self.write(&mut w);
        let mut t = params.transcript("dealer-signature");
        t.append(b"package", &w.0);
        t
    }
}

/// A dealer's broadcast: commitments, its ephemeral and proof, the encrypted sub-shares, and
/// its identity key's signature. Public.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DealerPackage {
    body: Body,
    signature: schnorr::Proof,
}

/// Another reshare's ephemeral and proof, as an attacker replays it.
#[cfg(feature = "dangerous-testing")]
#[derive(Clone, Copy, Debug)]
pub struct ForeignEphemeral {
    ephemeral: Element,
    proof: schnorr::Proof,
}

impl DealerPackage {
    /// The dealer (old node id).
    pub fn dealer(&self) -> NodeId {
        self.body.dealer
    }

    /// This package's ephemeral and proof, as an attacker would copy them into another run.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_ephemeral(&self) -> ForeignEphemeral {
        ForeignEphemeral { ephemeral: self.body.ephemeral, proof: self.body.ephemeral_proof }
    }

    /// Signature, then the ephemeral's proof of knowledge for this run: failure aborts.
    fn check_signature_and_ephemeral(&self, params: &Parameters) -> Result<()> {
        let dealer = self.body.dealer;
        let identity = params.dealer(dealer)?.identity();
        if !self.signature.vartime_verify(&identity.0, &self.body.signature_context(params)) {
            return Err(Error::InvalidSignature { node: dealer });
        }
        if !self.body.ephemeral_proof.vartime_verify(&self.body.ephemeral, &params.ephemeral_context(dealer)) {
            return Err(Error::InvalidEphemeralProof { node: dealer });
        }
        Ok(())
    }

    /// `t′` commitments in `[1, N)`, one ciphertext of the right length for every receiver.
    fn shape_ok(&self, params: &Parameters) -> bool {
        let key = params.old.public_key();
        let expected = params.sizes.sub_share_bytes() + GCM_TAG;
        self.body.commitments.len() == usize::from(params.threshold)
            && self.body.commitments.iter().all(|c| key.vartime_element(c).is_some())
            && self.body.shares.keys().eq(params.receivers.keys())
            && self.body.shares.values().all(|s| s.len() == expected)
    }

    /// Decrypts `recipient`'s sub-share with the ECDH value `dh` and checks it: in range
    /// (`< 2^SB`) and on the committed polynomial. `None` if any of that fails.
    fn open_share(
        &self,
        params: &Parameters,
        recipient: NodeId,
        dh: &RistrettoPoint,
    ) -> Result<Option<Zeroizing<BoxedUint>>> {
        let Some(encrypted) = self.body.shares.get(&recipient) else { return Ok(None) };
        let (ciphertext, tag) = encrypted.split_at(encrypted.len().saturating_sub(GCM_TAG));
        let mut tag_bytes = [0u8; GCM_TAG];
        if tag.len() != GCM_TAG {
            return Ok(None);
        }
        tag_bytes.copy_from_slice(tag);
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        let cipher = params.share_cipher(&self.body, recipient, dh);
        if cipher
            .decrypt_inout_detached(&ecies::NONCE.into(), &[], buffer.as_mut_slice().into(), &tag_bytes.into())
            .is_err()
        {
            return Ok(None);
        }
        let sizes = params.sizes;
        // Range: the bits above SB in the leading byte are zero (leaks only pass or fail).
        let excess = (8 * sizes.sub_share_bytes()) as u32 - sizes.sub_share_bits;
        if buffer.len() != sizes.sub_share_bytes() || buffer.first().is_some_and(|b| u32::from(*b) >> (8 - excess) != 0)
        {
            return Ok(None);
        }
        let Some(value) = num::from_be(&buffer, sizes.work_precision()).map(Zeroizing::new) else {
            return Ok(None);
        };
        Ok(feldman_holds(params, &self.body.commitments, recipient, &value)?.then_some(value))
    }
}

/// `g^(v + 2^SB) ≡ g^(2^SB) · Π_k C_k^(i^k) (mod N)`: `g^v` on the committed polynomial, with
/// the secret exponent raised in constant time at a fixed length (`v + 2^SB` has exactly
/// `SB + 1` bits).
fn feldman_holds(params: &Parameters, commitments: &[Vec<u8>], i: NodeId, value: &BoxedUint) -> Result<bool> {
    let modulus = Modulus::new(&params.old)?;
    let key = params.old.public_key();
    let top = pow2(params.sizes.sub_share_bits, value.bits_precision())?;
    let shifted = Zeroizing::new(value.wrapping_add(&top));
    let exponent = Zeroizing::new(shifted.to_be_bytes());
    let lhs = modexp::secret_pow(&params.generator, &exponent, &key.modulus_bytes(), key.size())?;
    let g = modulus.element(&params.generator)?;
    let g_top = modulus.vartime_pow(&g, &bn(&top)?)?;
    let rhs = modulus.mul(&g_top, &modulus.vartime_feldman(commitments, i)?)?;
    Ok(*lhs == modulus.to_bytes(&rhs)?)
}

/// Ways a dealer or receiver can cheat, for tests that prove the reshare catches them.
#[cfg(feature = "dangerous-testing")]
// Test-only and passed by value once per dealer: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum DangerousFault {
    /// Deal `g_j(0) = Δ′·(s_j + 1)`, consistently committed: only the constant-term check sees it.
    WrongConstantTerm,
    /// Deal `g_j(i) + 1` to receiver `i` (encrypted and signed, but off the polynomial).
    CorruptShareFor(NodeId),
    /// Replay another run's ephemeral and proof, with garbage sub-shares.
    ReplayEphemeral(ForeignEphemeral),
}

#[cfg(not(feature = "dangerous-testing"))]
type Fault = ();
#[cfg(feature = "dangerous-testing")]
type Fault = DangerousFault;

/// Dealer `me`'s package: `g_j` with `g_j(0) = Δ′·s_j`, its commitments, and the encrypted
/// sub-shares, signed. Constant time in the share and the coefficients.
///
/// # Errors
/// [`Error::InvalidParameters`] if `me` is no dealer of `params`, `secrets` are not its
/// registered keys, or `share` is not its share of the old package.
pub fn deal<R: CryptoRng + ?Sized>(
    me: NodeId,
    secrets: &NodeSecrets,
    share: &RsaKeyShare,
    params: &Parameters,
    rng: &mut R,
) -> Result<DealerPackage> {
    deal_inner(me, secrets, share, params, None, rng)
}

/// [`deal`] for a dealer that cheats in the given way (and signs its cheating properly).
///
/// # Errors
/// As [`deal`].
#[cfg(feature = "dangerous-testing")]
pub fn dangerous_deal_with_fault<R: CryptoRng + ?Sized>(
    me: NodeId,
    secrets: &NodeSecrets,
    share: &RsaKeyShare,
    params: &Parameters,
    fault: DangerousFault,
    rng: &mut R,
) -> Result<DealerPackage> {
    deal_inner(me, secrets, share, params, Some(fault), rng)
}

fn deal_inner<R: CryptoRng + ?Sized>(
    me: NodeId,
    secrets: &NodeSecrets,
    share: &RsaKeyShare,
    params: &Parameters,
    fault: Option<Fault>,
    rng: &mut R,
) -> Result<DealerPackage> {
    let bundle = params.dealer(me)?;
    if *bundle.identity() != secrets.identity().public_key() || *bundle.transport() != secrets.transport().public_key()
    {
        return Err(Error::InvalidParameters("secrets do not match this dealer's registered keys"));
    }
    if share.node() != me || share.secret().bits_precision() > num::precision(params.old.share_bits()) {
        return Err(Error::InvalidParameters("not this dealer's share of the old package"));
    }
    #[cfg(not(feature = "dangerous-testing"))]
    let _ = fault;
    let sizes = params.sizes;
    let wide = sizes.work_precision();
    let key = params.old.public_key();
    let modulus = Modulus::new(&params.old)?;
    let n_bytes = key.modulus_bytes();

    #[allow(unused_mut)]
    let mut secret = Zeroizing::new(num::resized(share.secret(), wide));
    #[cfg(feature = "dangerous-testing")]
    if let Some(DangerousFault::WrongConstantTerm) = fault {
        *secret = secret.wrapping_add(BoxedUint::one_with_precision(wide));
    }
    // C_0 = (g^s_j)^Δ′: the secret exponent s_j has a public word length (exactly B bits for a
    // reshared share), which Δ′·s_j would not always have.
    let secret_bytes = Zeroizing::new(secret.to_be_bytes());
    let g_s = modexp::secret_pow(&params.generator, &secret_bytes, &n_bytes, key.size())?;
    let c0 = modulus.vartime_pow(&modulus.element(&g_s)?, &bn(&params.new_delta)?)?;
    let mut commitments = vec![modulus.to_bytes(&c0)?];
    let constant = Zeroizing::new(num::resized(&secret.concatenating_mul(&params.new_delta), wide));

    // a_k = 2^(A−1) + r, r uniform in [0, 2^(A−1)): exactly A bits, so g^(a_k) runs at a public
    // length.
    let top = pow2(sizes.coefficient_bits - 1, wide)?;
    let mut coefficients = vec![constant];
    for _ in 1..params.threshold {
        let r = Zeroizing::new(
            BoxedUint::try_random_bits_with_precision(rng, sizes.coefficient_bits - 1, wide)
                .map_err(|_| Error::InvalidParameters("random sampling failed"))?,
        );
        let a = Zeroizing::new(r.wrapping_add(&top));
        let a_bytes = Zeroizing::new(a.to_be_bytes());
        commitments.push(modexp::secret_pow(&params.generator, &a_bytes, &n_bytes, key.size())?.to_vec());
        coefficients.push(a);
    }

    let e = Zeroizing::new(Scalar::random(rng));
    #[allow(unused_mut)]
    let mut ephemeral = Element::new(RistrettoPoint::mul_base(&e));
    #[allow(unused_mut)]
    let mut ephemeral_proof = schnorr::Proof::prove(&e, &ephemeral, &params.ephemeral_context(me), rng);
    #[cfg(feature = "dangerous-testing")]
    if let Some(DangerousFault::ReplayEphemeral(foreign)) = fault {
        ephemeral = foreign.ephemeral;
        ephemeral_proof = foreign.proof;
    }
    let mut body = Body { dealer: me, commitments, ephemeral, ephemeral_proof, shares: BTreeMap::new() };

    for (id, keys) in &params.receivers {
        // Horner: acc ← acc·i + a_k, from the top coefficient down, at a fixed width.
        let mut acc = Zeroizing::new(BoxedUint::zero_with_precision(wide));
        for a in coefficients.iter().rev() {
            let mut next = Zeroizing::new(acc.wrapping_mul(num::resized(&BoxedUint::from(u64::from(id.get())), wide)));
            next.wrapping_add_assign(&**a);
            acc = next;
        }
        #[cfg(feature = "dangerous-testing")]
        if let Some(DangerousFault::CorruptShareFor(victim)) = fault
            && victim == *id
        {
            *acc = acc.wrapping_add(BoxedUint::one_with_precision(wide));
        }
        let mut buffer = num::to_be_fixed(&acc, sizes.sub_share_bytes());
        let dh = keys.transport().0.point * *e;
        let cipher = params.share_cipher(&body, *id, &dh);
        let tag = cipher
            .encrypt_inout_detached(&ecies::NONCE.into(), &[], buffer.as_mut_slice().into())
            .map_err(|_| Error::InvalidParameters("sub-share encryption failed"))?;
        let mut out = buffer.to_vec();
        out.extend_from_slice(&tag);
        #[cfg(feature = "dangerous-testing")]
        if let Some(DangerousFault::ReplayEphemeral(_)) = fault {
            rng.fill_bytes(&mut out);
        }
        body.shares.insert(*id, out);
    }
    let identity = secrets.identity();
    let signature =
        schnorr::Proof::prove(identity.scalar(), &identity.public_key().0, &body.signature_context(params), rng);
    Ok(DealerPackage { body, signature })
}

/// `version ‖ 0x5A ‖ u16be(dealer) ‖ u16be(t′) ‖ (u32be(len) ‖ C_k)* ‖ E (32) ‖ proof (64) ‖
/// u16be(n′) ‖ (u16be(i) ‖ u32be(len) ‖ ciphertext ‖ tag)* ‖ signature (64)`.
impl Wire for DealerPackage {
    const NAME: &'static str = "RSA reshare dealer package";
    const TAG: u8 = 0x5A;
    fn encode_body(&self, w: &mut Writer) {
        self.body.write(w);
        self.signature.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let max = super::keys::MAX_SHARE_BYTES + 64;
        let dealer = r.node()?;
        let k = r.count(usize::from(MAX_RESHARE_NODES))?;
        let commitments = (0..k).map(|_| r.bytes(max).map(<[u8]>::to_vec)).collect::<Result<Vec<_>>>()?;
        let ephemeral = Element::read(r)?;
        let ephemeral_proof = schnorr::Proof::read(r)?;
        let m = r.count(MAX_NODES)?;
        let mut shares = BTreeMap::new();
        for _ in 0..m {
            let id = r.node()?;
            if shares.insert(id, r.bytes(max)?.to_vec()).is_some() {
                return Err(Error::DuplicateNode { node: id });
            }
        }
        let signature = schnorr::Proof::read(r)?;
        Ok(DealerPackage { body: Body { dealer, commitments, ephemeral, ephemeral_proof, shares }, signature })
    }
}

pub use crate::vss::Complaint;

/// A receiver's broadcast after the dealing: its complaints and a digest of the dealer
/// packages it saw, signed with its identity key (the DKG's round 2 message, under this run's
/// transcript and wire tag).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComplaintPackage(SignedComplaints);

impl ComplaintPackage {
    /// The receiver that sent it.
    pub fn sender(&self) -> NodeId {
        self.0.sender()
    }
    /// Its complaints.
    pub fn complaints(&self) -> &[Complaint] {
        self.0.complaints()
    }
}

/// `version ‖ 0x5B ‖ u16be(sender) ‖ u16be(count) ‖ (u16be(accused) ‖ dh (32) ‖ DLEQ (96))* ‖
/// view (64) ‖ signature (64)`.
impl Wire for ComplaintPackage {
    const NAME: &'static str = "RSA reshare complaint package";
    const TAG: u8 = 0x5B;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        SignedComplaints::read(r).map(ComplaintPackage)
    }
}

/// What a receiver keeps between [`receive`] and [`ReceiverState::finish`]: the sub-shares it
/// accepted and the public packages.
pub struct ReceiverState {
    me: NodeId,
    params: Parameters,
    packages: BTreeMap<NodeId, DealerPackage>,
    received: BTreeMap<NodeId, Zeroizing<BoxedUint>>,
    bad_shape: Vec<NodeId>,
    own: ComplaintPackage,
}

impl fmt::Debug for ReceiverState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("reshare::ReceiverState").field("me", &self.me).finish_non_exhaustive()
    }
}

/// What a receiver keeps from a successful reshare.
#[derive(Debug)]
pub struct Output {
    /// The new share `s′_i`.
    pub share: RsaKeyShare,
    /// The new public package (identical on every honest receiver).
    pub package: RsaPublicPackage,
    /// Dealers disqualified: malformed package, justified complaint, or a constant term in no
    /// passing `t`-subset.
    pub disqualified: Vec<NodeId>,
    /// Receivers whose complaint was unjustified.
    pub false_accusers: Vec<NodeId>,
}

/// Receiver `me`'s step: check every dealer package (signatures and ephemeral proofs first —
/// any failure aborts before a secret touches an ephemeral), decrypt and check the sub-share
/// dealt to `me`, and complain about every one that fails.
///
/// # Errors
/// [`Error::InvalidSignature`] / [`Error::InvalidEphemeralProof`] naming the dealer (abort the
/// run); [`Error::MissingMessage`] / [`Error::DuplicateNode`] / [`Error::UnknownNode`] for a
/// wrong set of packages; [`Error::InvalidParameters`] if `me` is no receiver or `secrets` are
/// not its keys.
pub fn receive<R: CryptoRng + ?Sized>(
    me: NodeId,
    secrets: &NodeSecrets,
    params: Parameters,
    packages: &[DealerPackage],
    rng: &mut R,
) -> Result<(ReceiverState, ComplaintPackage)> {
    receive_inner(me, secrets, params, packages, None, rng)
}

/// [`receive`] for a receiver that also files a false complaint against `accused`.
///
/// # Errors
/// As [`receive`].
#[cfg(feature = "dangerous-testing")]
pub fn dangerous_receive_with_false_complaint<R: CryptoRng + ?Sized>(
    me: NodeId,
    secrets: &NodeSecrets,
    params: Parameters,
    packages: &[DealerPackage],
    accused: NodeId,
    rng: &mut R,
) -> Result<(ReceiverState, ComplaintPackage)> {
    receive_inner(me, secrets, params, packages, Some(accused), rng)
}

fn receive_inner<R: CryptoRng + ?Sized>(
    me: NodeId,
    secrets: &NodeSecrets,
    params: Parameters,
    packages: &[DealerPackage],
    false_accusation: Option<NodeId>,
    rng: &mut R,
) -> Result<(ReceiverState, ComplaintPackage)> {
    let bundle = params.receiver(me)?;
    if *bundle.identity() != secrets.identity().public_key() || *bundle.transport() != secrets.transport().public_key()
    {
        return Err(Error::InvalidParameters("secrets do not match this receiver's registered keys"));
    }
    let mut all = BTreeMap::new();
    for p in packages {
        params.dealer(p.dealer())?;
        if all.insert(p.dealer(), p.clone()).is_some() {
            return Err(Error::DuplicateNode { node: p.dealer() });
        }
    }
    if let Some(node) = params.dealers().find(|d| !all.contains_key(d)) {
        return Err(Error::MissingMessage { node });
    }
    for package in all.values() {
        package.check_signature_and_ephemeral(&params)?;
    }
    let transport: &TransportSecret = secrets.transport();
    let mut received = BTreeMap::new();
    let mut bad_shape = Vec::new();
    let mut complaints = Vec::new();
    for (dealer, package) in &all {
        if !package.shape_ok(&params) {
            bad_shape.push(*dealer);
            continue;
        }
        let dh = package.body.ephemeral.point * transport.scalar();
        let opened = package.open_share(&params, me, &dh)?;
        let complain = opened.is_none() || false_accusation == Some(*dealer);
        if let Some(value) = opened {
            received.insert(*dealer, value);
        }
        if complain {
            complaints.push(Complaint::prove(&params, transport, me, *dealer, &package.body.ephemeral, rng));
        }
    }
    let view = vss::view_of(&params, all.values());
    let own = ComplaintPackage(SignedComplaints::sign(&params, secrets.identity(), me, complaints, view, rng));
    let state = ReceiverState { me, params, packages: all, received, bad_shape, own: own.clone() };
    Ok((state, own))
}

impl ReceiverState {
    /// `Ok(true)` if `accused` dealt `accuser` a bad sub-share, `Ok(false)` if the accuser lied.
    fn judge(&self, accuser: NodeId, complaint: &Complaint) -> Result<bool> {
        let Some(accused) = self.packages.get(&complaint.accused()) else { return Ok(false) };
        if !complaint.reveals(&self.params, accuser, &accused.body.ephemeral)? {
            return Ok(false);
        }
        Ok(accused.open_share(&self.params, accuser, &complaint.dh.point)?.is_none())
    }

    /// The end of the reshare: check every complaint package, judge the complaints, pick the
    /// dealer set `S` (the first `t`-subset of the unaccused dealers whose constant terms pass
    /// the `e`-th power check), and compute `s′_i = K″ + Σ_{j∈S} λ_{S,j}·g_j(i)` and the new
    /// package.
    ///
    /// # Errors
    /// [`Error::InvalidSignature`] / [`Error::InconsistentView`] / [`Error::MissingMessage`]
    /// (abort the run); [`Error::NotEnoughQualifiedDealers`] when no `t`-subset passes.
    pub fn finish(self, packages: &[ComplaintPackage]) -> Result<Output> {
        let params = &self.params;
        let packages = packages.iter().map(|p| &p.0);
        let verdict = vss::judge_complaints(params, self.me, &self.own.0, packages, |accuser, complaint| {
            self.judge(accuser, complaint)
        })?;
        let mut disqualified: BTreeSet<NodeId> = self.bad_shape.iter().copied().collect();
        disqualified.extend(verdict.bad_dealers);
        let false_accusers = verdict.false_accusers;
        let candidates: Vec<NodeId> = params.dealers().filter(|d| !disqualified.contains(d)).collect();
        let t = usize::from(params.old.threshold());
        let checker = ConstantTermCheck::new(&self)?;
        let chosen = subsets(candidates.len(), t).find_map(|s| {
            let ids: Vec<NodeId> = s.iter().map(|&k| candidates[k]).collect();
            checker.passes(&ids).ok()?.then_some(ids)
        });
        let Some(chosen) = chosen else {
            disqualified.extend(candidates.iter().copied());
            return Err(Error::NotEnoughQualifiedDealers {
                qualified: 0,
                needed: t,
                disqualified: disqualified.into_iter().collect(),
            });
        };
        // A dealer outside S is qualified if some passing t-subset contains it.
        for (k, dealer) in candidates.iter().enumerate() {
            if chosen.contains(dealer) {
                continue;
            }
            let others: Vec<NodeId> = candidates.iter().copied().filter(|d| d != dealer).collect();
            let passes = subsets(others.len(), t - 1).any(|s| {
                let mut ids: Vec<NodeId> = s.iter().map(|&x| others[x]).collect();
                ids.push(candidates[k]);
                ids.sort();
                checker.passes(&ids).unwrap_or(false)
            });
            if !passes {
                disqualified.insert(*dealer);
            }
        }
        let (share, package) = self.new_share(&chosen)?;
        Ok(Output {
            share,
            package,
            disqualified: disqualified.into_iter().collect(),
            false_accusers: false_accusers.into_iter().collect(),
        })
    }

    fn new_share(&self, chosen: &[NodeId]) -> Result<(RsaKeyShare, RsaPublicPackage)> {
        let params = &self.params;
        let old = &params.old;
        let sizes = params.sizes;
        let width = num::precision(sizes.share_bits + 64);
        let ids: Vec<u16> = chosen.iter().map(|d| d.get()).collect();
        let lambdas = num::vartime_lagrange_at_zero(old.delta(), &ids)?;
        let offset = pow2(sizes.share_bits - 1, width)?.wrapping_add(&pow2(sizes.share_bits - 2, width)?);
        let mut positive = Zeroizing::new(offset.clone());
        let mut negative = Zeroizing::new(BoxedUint::zero_with_precision(width));
        for (dealer, (lambda, is_negative)) in chosen.iter().zip(&lambdas) {
            let value = self.received.get(dealer).ok_or(Error::MissingMessage { node: *dealer })?;
            let term = Zeroizing::new(num::resized(&value.concatenating_mul(lambda), width));
            if *is_negative {
                negative.wrapping_add_assign(&*term);
            } else {
                positive.wrapping_add_assign(&*term);
            }
        }
        let secret = Zeroizing::new(positive.wrapping_sub(&*negative));
        let secret = num::resized(&secret, num::precision(sizes.share_bits));
        // Exactly B′ bits by construction; anything else means the sub-shares were inconsistent.
        if secret.bits() != sizes.share_bits {
            return Err(Error::InconsistentPackage);
        }
        let new_scale = params.new_delta.concatenating_mul(old.delta()).concatenating_mul(old.scale());
        let carried = params.new_delta.concatenating_mul(old.delta()).concatenating_mul(old.offset());
        let w = carried.bits_precision().max(width) + 64;
        let new_offset = num::resized(&carried, w).wrapping_add(num::resized(&offset, w));
        let package = RsaPublicPackage::with_representation(
            old.public_key().clone(),
            params.threshold,
            params.new_nodes(),
            new_scale,
            new_offset,
            sizes.share_bits,
        )?;
        Ok((RsaKeyShare::new(self.me, secret), package))
    }
}

/// `(Π_{j∈S} C_j0^(λ_{S,j}))^e ≡ g^(Δ′·Δ·(M + K·e)) (mod N)`, on public values.
struct ConstantTermCheck {
    modulus: Modulus,
    delta: BoxedUint,
    e: BigNum,
    constants: BTreeMap<NodeId, BigNum>,
    target: BigNum,
}

impl ConstantTermCheck {
    fn new(state: &ReceiverState) -> Result<Self> {
        let params = &state.params;
        let old = &params.old;
        let modulus = Modulus::new(old)?;
        let key = old.public_key();
        let mut constants = BTreeMap::new();
        for (id, p) in &state.packages {
            if let Some(c0) = p.body.commitments.first() {
                constants.insert(*id, modulus.element(c0)?);
            }
        }
        let scale = params.new_delta.concatenating_mul(old.delta());
        let ke = old.offset().concatenating_mul(key.exponent().as_ref());
        let w = ke.bits_precision().max(old.scale().bits_precision()) + 64;
        let inner = num::resized(&ke, w).wrapping_add(num::resized(old.scale(), w));
        let exponent = bn(&scale.concatenating_mul(&inner))?;
        let target = modulus.vartime_pow(&modulus.element(&params.generator)?, &exponent)?;
        let e = bn(key.exponent().as_ref())?;
        Ok(ConstantTermCheck { modulus, delta: old.delta().clone(), e, constants, target })
    }

    fn passes(&self, ids: &[NodeId]) -> Result<bool> {
        let raw: Vec<u16> = ids.iter().map(|d| d.get()).collect();
        let lambdas = num::vartime_lagrange_at_zero(&self.delta, &raw)?;
        let one = BigNum::from_u32(1).map_err(bn_failed)?;
        let (mut positive, mut negative) = (one.to_owned().map_err(bn_failed)?, one);
        for (id, (lambda, is_negative)) in ids.iter().zip(&lambdas) {
            let c0 = self.constants.get(id).ok_or(Error::MissingMessage { node: *id })?;
            let term = self.modulus.vartime_pow(c0, &bn(lambda)?)?;
            if *is_negative {
                negative = self.modulus.mul(&negative, &term)?;
            } else {
                positive = self.modulus.mul(&positive, &term)?;
            }
        }
        let Ok(inverse) = self.modulus.invert(&negative) else { return Ok(false) };
        let product = self.modulus.mul(&positive, &inverse)?;
        Ok(self.modulus.vartime_pow(&product, &self.e)? == self.target)
    }
}

/// The `k`-subsets of `0..n` in lexicographic order.
fn subsets(n: usize, k: usize) -> impl Iterator<Item = Vec<usize>> {
    let mut next = (k <= n).then(|| (0..k).collect::<Vec<usize>>());
    std::iter::from_fn(move || {
        let current = next.take()?;
        let mut following = current.clone();
        let mut i = k;
        while i > 0 {
            i -= 1;
            if following[i] < n - k + i {
                following[i] += 1;
                for j in i + 1..k {
                    following[j] = following[j - 1] + 1;
                }
                next = Some(following);
                break;
            }
        }
        Some(current)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsets_are_lexicographic_and_complete() {
        let all: Vec<Vec<usize>> = subsets(5, 3).collect();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], vec![0, 1, 2]);
        assert_eq!(all[9], vec![2, 3, 4]);
        assert_eq!(subsets(3, 0).collect::<Vec<_>>(), vec![Vec::<usize>::new()]);
        assert_eq!(subsets(2, 3).count(), 0);
    }

    #[test]
    fn sizes_follow_the_formula_for_3_of_5() {
        // A = B + 7 + 3 + 5 + 128, SB = A + 5 (31 = 1 + 5 + 25), Kb = SB + 14 (9000 = 3·120·25).
        let s = ShareSizes::new(2048, 3, 5, 3, 5).unwrap();
        assert_eq!(s.coefficient_bits, 2048 + 143);
        assert_eq!(s.sub_share_bits, 2048 + 148);
        let kb = 2048 + 148 + 14;
        let kb = if (kb + 3 + 7u32).is_multiple_of(64) { kb + 1 } else { kb };
        assert_eq!(s.share_bits, kb + 3);
    }
}
