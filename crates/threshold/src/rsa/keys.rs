//! Threshold RSA key material by role: the public key `(N, e)`, the public package every
//! party holds, a node's secret share `s_i`, and a node's partial decryption `x_i`.

use super::num;
use crate::encoding::{Reader, WIRE_VERSION, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::NodeId;
use crypto_bigint::modular::BoxedMontyParams;
use crypto_bigint::{BoxedUint, ConcatenatingMul, Odd};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Smallest accepted modulus, in bits.
pub const MIN_MODULUS_BITS: u32 = 2048;
/// Largest accepted modulus, in bits.
pub const MAX_MODULUS_BITS: u32 = 4096;
/// Largest number of nodes a key may be split among (node ids are `1..=n`, and `Δ = n!`
/// enters every exponent the combiner computes).
pub const MAX_NODES: u16 = 255;
/// Largest byte length of any integer on the wire: a 4096-bit modulus.
const MAX_INT_BYTES: usize = (MAX_MODULUS_BITS / 8) as usize;

/// An RSA public key `(N, e)`, validated: `N` odd with 2048..=4096 bits, `e` odd with
/// `3 ≤ e < N`.
#[derive(Clone)]
pub struct RsaPublicKey {
    modulus: Odd<BoxedUint>,
    exponent: Odd<BoxedUint>,
    /// Montgomery parameters for `N`, computed once.
    params: BoxedMontyParams,
    /// `k`, the byte length of `N`: every ciphertext, partial and `EM` is exactly `k` bytes.
    size: usize,
}

impl RsaPublicKey {
    /// The key `(N, e)` from big-endian integers (leading zero bytes are ignored).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] unless `N` is odd with 2048..=4096 bits and `e` is odd
    /// with `3 ≤ e < N`.
    pub fn from_components(modulus: &[u8], exponent: &[u8]) -> Result<Self> {
        let too_big = Error::InvalidParameters("RSA modulus must have 2048 to 4096 bits");
        let n = num::vartime_from_be(modulus, MAX_INT_BYTES).ok_or(too_big.clone())?;
        let bits = n.bits_vartime();
        if !(MIN_MODULUS_BITS..=MAX_MODULUS_BITS).contains(&bits) {
            return Err(too_big);
        }
        let n = Odd::new(n).into_option().ok_or(Error::InvalidParameters("RSA modulus must be odd"))?;
        let bad_e = Error::InvalidParameters("RSA exponent must satisfy 3 ≤ e < N");
        let e = num::vartime_from_be(exponent, MAX_INT_BYTES).ok_or(bad_e.clone())?;
        if e.bits_vartime() < 2 || e.cmp_vartime(n.as_ref()).is_ge() {
            return Err(bad_e);
        }
        let e = Odd::new(e).into_option().ok_or(Error::InvalidParameters("RSA exponent must be odd"))?;
        let size = bits.div_ceil(8) as usize;
        let params = BoxedMontyParams::new_vartime(n.clone());
        Ok(RsaPublicKey { modulus: n, exponent: e, params, size })
    }

    /// `N`, big-endian, without leading zeros (`k` bytes).
    pub fn modulus_bytes(&self) -> Vec<u8> {
        num::vartime_to_be_minimal(self.modulus.as_ref())
    }

    /// `e`, big-endian, without leading zeros.
    pub fn exponent_bytes(&self) -> Vec<u8> {
        num::vartime_to_be_minimal(self.exponent.as_ref())
    }

    /// `k = ⌈log₂(N + 1) / 8⌉`, the length in bytes of `N` and of every ciphertext.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The DER `SubjectPublicKeyInfo` of `(N, e)`, as `openssl rsa -pubout -outform DER`
    /// writes it.
    pub fn to_spki_der(&self) -> Vec<u8> {
        super::der::spki(&self.modulus_bytes(), &self.exponent_bytes())
    }

    /// The bit length of `N`.
    pub fn bits(&self) -> u32 {
        self.modulus.as_ref().bits_vartime()
    }

    pub(crate) fn modulus(&self) -> &Odd<BoxedUint> {
        &self.modulus
    }
    pub(crate) fn exponent(&self) -> &Odd<BoxedUint> {
        &self.exponent
    }
    pub(crate) fn params(&self) -> &BoxedMontyParams {
        &self.params
    }
    /// The precision (bits, a whole number of limbs) of integers modulo `N`.
    pub(crate) fn precision(&self) -> u32 {
        self.modulus.as_ref().bits_precision()
    }

    /// `OS2IP(bytes)` as an element of `[1, N)`, for public inputs (ciphertexts, partials):
    /// `None` unless `bytes` is exactly `k` bytes long and encodes `0 < x < N`.
    pub(crate) fn vartime_element(&self, bytes: &[u8]) -> Option<BoxedUint> {
        if bytes.len() != self.size {
            return None;
        }
        let x = num::from_be(bytes, self.precision())?;
        let in_range = !bool::from(x.is_zero()) && x.cmp_vartime(self.modulus.as_ref()).is_lt();
        in_range.then_some(x)
    }
}

impl PartialEq for RsaPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.modulus.as_ref() == other.modulus.as_ref() && self.exponent.as_ref() == other.exponent.as_ref()
    }
}
impl Eq for RsaPublicKey {}

impl fmt::Debug for RsaPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.modulus_bytes();
        let head: String = n.iter().take(8).map(|b| format!("{b:02x}")).collect();
        f.debug_struct("RsaPublicKey")
            .field("bits", &self.bits())
            .field("n", &format_args!("{head}…"))
            .field("e", &self.exponent.as_ref().to_string_radix_vartime(10))
            .finish()
    }
}

/// What every party of a threshold RSA key holds: `(N, e)`, the threshold `t` and the number
/// of nodes `n`, what the shares represent, plus values derived from them once: `Δ = n!` and
/// the Bézout coefficients of the combine step.
///
/// **Representation.** For every set `S` of `t` node ids, with the integer Lagrange
/// coefficients `λ_i = Δ·Π_{j∈S∖{i}} j/(j−i)`, the shares satisfy
/// `Σ_{i∈S} λ_i·s_i ≡ Δ·(M·d + K) (mod λ(N))`: the *scale* `M` and *offset* `K` are `1` and `0`
/// for a dealt key, and change with every reshare ([`super::reshare`]). Every share has at
/// most [`RsaPublicPackage::share_bits`] bits (the bit length of `N` for a dealt key).
///
/// The combiner forms `w = c^(4Δ²(M·d + K))` and returns `y = w^a · c^(−|b'|)` with
/// `a·4Δ²M + b·e = 1` and `|b'| = |b| + 4Δ²·K·a`, which is `c^d`.
///
/// Invariants (checked by every constructor): `1 ≤ t ≤ n ≤ 255`, `M ≥ 1` and
/// `gcd(e, 4Δ²M) = 1`.
#[derive(Clone)]
pub struct RsaPublicPackage {
    key: RsaPublicKey,
    threshold: u16,
    nodes: u16,
    /// `M`, 1 for a dealt key.
    scale: BoxedUint,
    /// `K`, 0 for a dealt key.
    offset: BoxedUint,
    /// An upper bound on the bit length of every share.
    share_bits: u32,
    /// `Δ = n!`.
    delta: BoxedUint,
    /// `2Δ`, the node's extra exponent.
    two_delta: BoxedUint,
    /// `a = (4Δ²M)^{-1} mod e`.
    bezout_a: BoxedUint,
    /// `|b'| = (a·4Δ²M − 1)/e + 4Δ²·K·a`.
    bezout_b_abs: BoxedUint,
}

/// Largest share, in bits, any package may announce: twice the largest modulus (a reshare that
/// would exceed the key's own cap, [`RsaPublicPackage::max_share_bits`], is refused first).
pub(crate) const MAX_SHARE_BITS: u32 = 2 * MAX_MODULUS_BITS;
/// Largest byte length of a share's value on the wire or at rest.
pub(crate) const MAX_SHARE_BYTES: usize = (MAX_SHARE_BITS / 8) as usize + 8;
/// Largest byte length of a scale or offset.
const MAX_REPRESENTATION_BYTES: usize = MAX_SHARE_BYTES + 64;

impl RsaPublicPackage {
    /// The package for `key` split `threshold`-of-`nodes` over the node ids `1..=nodes` by the
    /// dealer (scale 1, offset 0, shares below `N`).
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] unless `1 ≤ t ≤ n ≤ 255` and `gcd(e, 4·(n!)²) = 1`
    /// (i.e. `e` has no prime factor `≤ n`; `e = 65537` always qualifies).
    pub fn new(key: RsaPublicKey, threshold: u16, nodes: u16) -> Result<Self> {
        let share_bits = key.bits();
        Self::with_representation(key, threshold, nodes, BoxedUint::one(), BoxedUint::zero(), share_bits)
    }

    /// The package of reshared shares: representation `(M, K)` and share bound as described on
    /// the type.
    pub(crate) fn with_representation(
        key: RsaPublicKey,
        threshold: u16,
        nodes: u16,
        scale: BoxedUint,
        offset: BoxedUint,
        share_bits: u32,
    ) -> Result<Self> {
        if threshold == 0 || threshold > nodes {
            return Err(Error::InvalidParameters("threshold RSA needs 1 ≤ t ≤ n"));
        }
        if nodes > MAX_NODES {
            return Err(Error::InvalidParameters("threshold RSA supports at most 255 nodes"));
        }
        if bool::from(scale.is_zero()) {
            return Err(Error::InvalidParameters("threshold RSA scale must be at least 1"));
        }
        if !(key.bits()..=MAX_SHARE_BITS).contains(&share_bits) {
            return Err(Error::InvalidParameters("threshold RSA share bound out of range"));
        }
        let delta = num::vartime_factorial(nodes)?;
        let two_delta = num::vartime_mul_small(&delta, 2).ok_or(Error::InvalidParameters("2Δ overflows"))?;
        let (bezout_a, b_abs) = num::vartime_shoup_bezout(&delta, &scale, key.exponent())
            .ok_or(Error::InvalidParameters("RSA exponent e must be coprime to 4·(n!)²·M"))?;
        // |b'| = |b| + 4Δ²·K·a: folds c^(−4Δ²K·a), which removes the offset, into c^b.
        let offset_term = delta
            .concatenating_mul(&delta)
            .concatenating_mul(BoxedUint::from(4u64))
            .concatenating_mul(&offset)
            .concatenating_mul(&bezout_a);
        let width = offset_term.bits_precision().max(b_abs.bits_precision()) + 64;
        let bezout_b_abs = num::resized(&offset_term, width).wrapping_add(num::resized(&b_abs, width));
        Ok(RsaPublicPackage {
            key,
            threshold,
            nodes,
            scale,
            offset,
            share_bits,
            delta,
            two_delta,
            bezout_a,
            bezout_b_abs,
        })
    }

    /// The RSA public key `(N, e)`.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.key
    }
    /// `t`: how many partials a decryption needs.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }
    /// `n`: the key is split among the node ids `1..=n`.
    pub fn nodes(&self) -> u16 {
        self.nodes
    }
    /// The scale `M`, big-endian and minimal (`[1]` for a dealt key).
    pub fn scale_bytes(&self) -> Vec<u8> {
        num::vartime_to_be_minimal(&self.scale)
    }
    /// The offset `K`, big-endian and minimal (`[0]` for a dealt key).
    pub fn offset_bytes(&self) -> Vec<u8> {
        num::vartime_to_be_minimal(&self.offset)
    }
    /// An upper bound on every share's bit length (for a reshared key, the exact length).
    pub fn share_bits(&self) -> u32 {
        self.share_bits
    }
    /// The largest share bound a reshare of this key may produce: twice the modulus length, so
    /// a partial never costs more than twice what it cost for the dealt key.
    pub fn max_share_bits(&self) -> u32 {
        2 * self.key.bits()
    }
    /// Whether this is a dealt key (`M = 1`, `K = 0`) rather than a reshared one.
    pub fn is_dealt(&self) -> bool {
        self.scale_bytes() == [1] && self.offset_bytes() == [0]
    }

    /// `node` if it is one of `1..=n`.
    pub(crate) fn check_node(&self, node: NodeId) -> Result<()> {
        if node.get() <= self.nodes { Ok(()) } else { Err(Error::UnknownNode { node: node.get() }) }
    }
    pub(crate) fn delta(&self) -> &BoxedUint {
        &self.delta
    }
    pub(crate) fn two_delta(&self) -> &BoxedUint {
        &self.two_delta
    }
    pub(crate) fn scale(&self) -> &BoxedUint {
        &self.scale
    }
    pub(crate) fn offset(&self) -> &BoxedUint {
        &self.offset
    }
    pub(crate) fn bezout(&self) -> (&BoxedUint, &BoxedUint) {
        (&self.bezout_a, &self.bezout_b_abs)
    }
}

impl PartialEq for RsaPublicPackage {
    fn eq(&self, other: &Self) -> bool {
        // Everything else is derived from these.
        self.key == other.key
            && self.threshold == other.threshold
            && self.nodes == other.nodes
            && self.scale_bytes() == other.scale_bytes()
            && self.offset_bytes() == other.offset_bytes()
            && self.share_bits == other.share_bits
    }
}
impl Eq for RsaPublicPackage {}

impl fmt::Debug for RsaPublicPackage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaPublicPackage")
            .field("key", &self.key)
            .field("threshold", &self.threshold)
            .field("nodes", &self.nodes)
            .field("scale_bits", &self.scale.bits_vartime())
            .field("share_bits", &self.share_bits)
            .finish()
    }
}

/// `version || 0x60 || u16be(t) || u16be(n) || u32be(len) || N || u32be(len) || e`, with `N`
/// and `e` big-endian and minimal (no leading zero byte); for a reshared key (and only then)
/// followed by `u32be(share bits) || u32be(len) || M || u32be(len) || K`, minimal, `M > 1`.
/// A dealt key's encoding is the one it always had. Decoding re-checks every invariant.
impl Wire for RsaPublicPackage {
    const NAME: &'static str = "RSA public package";
    const TAG: u8 = 0x60;
    fn encode_body(&self, w: &mut Writer) {
        w.u16(self.threshold);
        w.u16(self.nodes);
        w.bytes(&self.key.modulus_bytes());
        w.bytes(&self.key.exponent_bytes());
        if !self.is_dealt() {
            w.u32(self.share_bits);
            w.bytes(&self.scale_bytes());
            w.bytes(&self.offset_bytes());
        }
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let malformed = Error::Malformed { what: Self::NAME };
        let threshold = r.u16()?;
        let nodes = r.u16()?;
        let modulus = r.bytes(MAX_INT_BYTES)?;
        let exponent = r.bytes(MAX_INT_BYTES)?;
        if modulus.first().is_none_or(|b| *b == 0) || exponent.first().is_none_or(|b| *b == 0) {
            return Err(malformed);
        }
        let key = RsaPublicKey::from_components(modulus, exponent).map_err(|_| malformed.clone())?;
        if r.is_empty() {
            return RsaPublicPackage::new(key, threshold, nodes).map_err(|_| malformed);
        }
        let share_bits = r.u32()?;
        let scale = r.bytes(MAX_REPRESENTATION_BYTES)?;
        let offset = r.bytes(MAX_REPRESENTATION_BYTES)?;
        let minimal = |b: &[u8]| b.len() == 1 || b.first().is_some_and(|x| *x != 0);
        if !minimal(scale) || !minimal(offset) || scale.is_empty() || offset.is_empty() {
            return Err(malformed);
        }
        let scale = num::vartime_from_be(scale, MAX_REPRESENTATION_BYTES).ok_or(malformed.clone())?;
        let offset = num::vartime_from_be(offset, MAX_REPRESENTATION_BYTES).ok_or(malformed.clone())?;
        let package = RsaPublicPackage::with_representation(key, threshold, nodes, scale, offset, share_bits)
            .map_err(|_| malformed.clone())?;
        // The extension is there exactly when the key is not a dealt one.
        if package.is_dealt() { Err(malformed) } else { Ok(package) }
    }
}

/// A node's secret share `s_i = f(i) mod m` of the private exponent `d`, where `f` is the
/// dealer's polynomial over `Z_m` with `f(0) = d` and `m = φ(N)`.
///
/// Zeroized on drop, not `Clone`, `Debug` prints `<redacted>`; its only encoding is the
/// zeroizing [`RsaKeyShare::to_secret_bytes`].
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct RsaKeyShare {
    #[zeroize(skip)]
    node: NodeId,
    secret: BoxedUint,
}

impl RsaKeyShare {
    /// The type tag of a share's encoding (a share deliberately does not implement [`Wire`]).
    const TAG: u8 = 0x61;

    pub(crate) fn new(node: NodeId, secret: BoxedUint) -> Self {
        RsaKeyShare { node, secret }
    }
    /// The node this share belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }
    pub(crate) fn secret(&self) -> &BoxedUint {
        &self.secret
    }

    /// The share's encoding, for sealing at rest:
    /// `version || 0x61 || u16be(node) || u32be(len) || s_i`, with `s_i` big-endian in a fixed
    /// width (its precision, so the length does not depend on the value). Zeroized on drop.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let value = Zeroizing::new(self.secret.to_be_bytes());
        let mut w = Writer(Vec::with_capacity(value.len() + 8));
        w.u8(WIRE_VERSION);
        w.u8(Self::TAG);
        w.node(self.node);
        w.bytes(&value);
        Zeroizing::new(w.0)
    }

    /// Decodes [`RsaKeyShare::to_secret_bytes`].
    ///
    /// # Errors
    /// [`Error::Malformed`] or [`Error::UnsupportedVersion`] for anything else.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        crate::encoding::decode(bytes, "RSA key share", Self::TAG, |r| {
            let node = r.node()?;
            let value = r.bytes(MAX_SHARE_BYTES)?;
            if value.is_empty() {
                return Err(Error::Malformed { what: "RSA key share" });
            }
            let bits = u32::try_from(value.len() * 8).map_err(|_| Error::Malformed { what: "RSA key share" })?;
            let secret = num::from_be(value, num::precision(bits)).ok_or(Error::Malformed { what: "RSA key share" })?;
            Ok(RsaKeyShare { node, secret })
        })
    }

    /// The raw share `s_i`, big-endian. Only for tests that must compare against a dealt key.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_be_bytes().into_vec())
    }
}

impl fmt::Debug for RsaKeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RsaKeyShare").field("node", &self.node).field("secret", &"<redacted>").finish()
    }
}

/// A node's partial decryption `x_i = c^(2Δ·s_i) mod N`, as `k` big-endian bytes.
///
/// Public. Nothing about it is checked on arrival but its shape: the combiner checks the value
/// (`0 < x_i < N`, and the result `y^e ≡ c`) and names the node if it is wrong.
#[derive(Clone, PartialEq, Eq)]
pub struct RsaPartial {
    node: NodeId,
    value: Vec<u8>,
}

impl RsaPartial {
    /// A partial from its parts, e.g. as received from `node` over the network.
    pub fn new(node: NodeId, value: Vec<u8>) -> Self {
        RsaPartial { node, value }
    }
    /// The node that produced this partial.
    pub fn node(&self) -> NodeId {
        self.node
    }
    /// `x_i`, big-endian.
    pub fn value(&self) -> &[u8] {
        &self.value
    }
}

impl fmt::Debug for RsaPartial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head: String = self.value.iter().take(8).map(|b| format!("{b:02x}")).collect();
        f.debug_struct("RsaPartial").field("node", &self.node).field("value", &format_args!("{head}…")).finish()
    }
}

/// `version || 0x62 || u16be(node) || u32be(len) || x_i`.
impl Wire for RsaPartial {
    const NAME: &'static str = "RSA partial";
    const TAG: u8 = 0x62;
    fn encode_body(&self, w: &mut Writer) {
        w.node(self.node);
        w.bytes(&self.value);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        Ok(RsaPartial { node: r.node()?, value: r.bytes(MAX_INT_BYTES)?.to_vec() })
    }
}

/// The key's fingerprint: lowercase hex SHA-256 of its DER `SubjectPublicKeyInfo`
/// (`openssl rsa -pubout -outform DER | sha256sum`). What `hyokctl rsa` prints and
/// `RsaKeyVersion.fingerprint` carries.
pub fn fingerprint(key: &RsaPublicKey) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.to_spki_der()).iter().map(|b| format!("{b:02x}")).collect()
}
