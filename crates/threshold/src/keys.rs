//! Key material by role: secret shares, public verification keys, group keys, node identities.

use crate::encoding::{MAX_NODES, Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::lagrange;
use curve25519_dalek::{
    RistrettoPoint, Scalar,
    constants::RISTRETTO_BASEPOINT_POINT,
    ristretto::{CompressedRistretto, VartimeRistrettoPrecomputation},
    traits::VartimePrecomputedMultiscalarMul,
};
use rand_core::CryptoRng;
use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU16;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A node's identifier: its Shamir evaluation point `x_i = i`, never zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(NonZeroU16);

impl NodeId {
    /// `id` as a node id; zero is refused (it is where the secret lives).
    pub fn new(id: u16) -> Result<Self> {
        NonZeroU16::new(id).map(NodeId).ok_or(Error::UnknownNode { node: id })
    }
    /// The numeric id.
    pub fn get(self) -> u16 {
        self.0.get()
    }
    /// The evaluation point `x_i` as a scalar.
    pub(crate) fn scalar(self) -> Scalar {
        Scalar::from(u64::from(self.get()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

impl TryFrom<u16> for NodeId {
    type Error = Error;
    fn try_from(id: u16) -> Result<Self> {
        NodeId::new(id)
    }
}

/// A public group element together with its canonical encoding (kept so that hashing it into
/// transcripts costs no compression).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Element {
    pub(crate) point: RistrettoPoint,
    pub(crate) compressed: CompressedRistretto,
}

impl Element {
    pub(crate) fn new(point: RistrettoPoint) -> Self {
        Element { point, compressed: point.compress() }
    }
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        let (point, compressed) = r.point()?;
        Ok(Element { point, compressed })
    }
    pub(crate) fn write(&self, w: &mut Writer) {
        w.point(&self.compressed);
    }
}

impl fmt::Debug for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.compressed.as_bytes()[..8] {
            write!(f, "{b:02x}")?;
        }
        f.write_str("…")
    }
}

/// A node's secret Shamir share `k_i = f(i)` of a root key.
///
/// Zeroized on drop, not `Clone`, and its `Debug` prints `<redacted>`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct KeyShare {
    #[zeroize(skip)]
    node: NodeId,
    secret: Scalar,
    #[zeroize(skip)]
    verification_key: VerificationKey,
}

impl KeyShare {
    pub(crate) fn new(node: NodeId, secret: Scalar) -> Self {
        let verification_key = VerificationKey(Element::new(RistrettoPoint::mul_base(&secret)));
        KeyShare { node, secret, verification_key }
    }
    /// The node this share belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }
    pub(crate) fn secret(&self) -> &Scalar {
        &self.secret
    }
    /// `K_i = k_i·G`.
    pub fn verification_key(&self) -> VerificationKey {
        self.verification_key
    }
    /// The share's encoding, for sealing at rest: `version || tag || u16be(node) || k_i`.
    /// The buffer is zeroized when dropped.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer(Vec::with_capacity(36));
        w.u8(crate::encoding::WIRE_VERSION);
        w.u8(Self::TAG);
        w.node(self.node);
        w.scalar(&self.secret);
        Zeroizing::new(w.0)
    }
    /// Decodes [`KeyShare::to_secret_bytes`]; rejects a non-canonical scalar.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        crate::encoding::decode(bytes, "key share", Self::TAG, |r| Ok(KeyShare::new(r.node()?, r.scalar()?)))
    }
    /// The raw secret scalar. Only for tests that must compare against a dealt key.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_secret(&self) -> Scalar {
        self.secret
    }
}

impl KeyShare {
    /// The type tag of a share's encoding. A share deliberately does not implement [`Wire`]:
    /// its only encoding is the zeroizing [`KeyShare::to_secret_bytes`].
    const TAG: u8 = 0x01;
}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare").field("node", &self.node).field("secret", &"<redacted>").finish()
    }
}

/// A node's public verification key `K_i = k_i·G`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VerificationKey(pub(crate) Element);

impl VerificationKey {
    /// The 32-byte compressed encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.compressed.as_bytes()
    }
}

/// The group public key `K = k·G` of a root key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupPublicKey(pub(crate) Element);

impl GroupPublicKey {
    /// The 32-byte compressed encoding.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.compressed.as_bytes()
    }
    /// Decodes a 32-byte compressed point, rejecting non-canonical encodings.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let bad = Error::Malformed { what: "group public key" };
        let c = CompressedRistretto::from_slice(bytes).map_err(|_| bad.clone())?;
        let point = c.decompress().ok_or(bad)?;
        Ok(GroupPublicKey(Element { point, compressed: c }))
    }
}

/// Everything public about one root key: threshold `t`, every node's verification key `K_i`,
/// and the group key `K`. Verified on construction: all `K_i` lie on one polynomial of degree
/// `t − 1` whose value at 0 is `K`.
#[derive(Clone, Debug)]
pub struct PublicKeyPackage {
    threshold: u16,
    verification_keys: BTreeMap<NodeId, VerificationKey>,
    group_key: GroupPublicKey,
    bases: Bases,
}

/// Two packages are equal when their public values are (the prepared bases follow from them).
impl PartialEq for PublicKeyPackage {
    fn eq(&self, other: &Self) -> bool {
        (self.threshold, &self.verification_keys, &self.group_key)
            == (other.threshold, &other.verification_keys, &other.group_key)
    }
}

impl Eq for PublicKeyPackage {}

/// `[G, K_i in node order]`, prepared once, on first use, for variable-time multiscalar
/// multiplications with these fixed points: checking a batch of proofs against the package
/// ([`crate::dleq::vartime_verify_batch`]), with wider windows than a one-off multiplication
/// can afford (criterion verify_batch/3: 227 → 219 µs). Shared by clones.
#[derive(Clone, Default)]
pub(crate) struct Bases(std::sync::Arc<std::sync::OnceLock<VartimeRistrettoPrecomputation>>);

impl fmt::Debug for Bases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() { "Bases(prepared)" } else { "Bases(not yet)" })
    }
}

impl PublicKeyPackage {
    /// Builds and checks a package.
    ///
    /// Consistency: with `S` the first `t` nodes, for every other node `j`,
    /// `K_j = Σ_{i∈S} λ_i(x_j)·K_i`, and `K = Σ_{i∈S} λ_i(0)·K_i`.
    pub fn new(
        threshold: u16,
        verification_keys: BTreeMap<NodeId, VerificationKey>,
        group_key: GroupPublicKey,
    ) -> Result<Self> {
        let n = verification_keys.len();
        if threshold == 0 || usize::from(threshold) > n || n > MAX_NODES {
            return Err(Error::InvalidParameters("threshold must satisfy 1 ≤ t ≤ n"));
        }
        let base: Vec<(NodeId, RistrettoPoint)> =
            verification_keys.iter().take(usize::from(threshold)).map(|(id, vk)| (*id, vk.0.point)).collect();
        let ids: Vec<NodeId> = base.iter().map(|(id, _)| *id).collect();
        let points: Vec<RistrettoPoint> = base.iter().map(|(_, p)| *p).collect();
        let at = |x: Scalar| -> Result<RistrettoPoint> {
            Ok(lagrange::vartime_combine(&lagrange::coefficients_at(&ids, x)?, &points))
        };
        if at(Scalar::ZERO)? != group_key.0.point {
            return Err(Error::InconsistentPackage);
        }
        for (id, vk) in verification_keys.iter().skip(usize::from(threshold)) {
            if at(id.scalar())? != vk.0.point {
                return Err(Error::InconsistentPackage);
            }
        }
        Ok(PublicKeyPackage { threshold, verification_keys, group_key, bases: Bases::default() })
    }
    /// The threshold `t`.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }
    /// The group key `K`.
    pub fn group_key(&self) -> &GroupPublicKey {
        &self.group_key
    }
    /// Every node's `K_i`.
    pub fn verification_keys(&self) -> &BTreeMap<NodeId, VerificationKey> {
        &self.verification_keys
    }
    /// The node ids of the key, ascending.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.verification_keys.keys().copied()
    }
    pub(crate) fn verification_key(&self, node: NodeId) -> Result<&VerificationKey> {
        self.verification_keys.get(&node).ok_or(Error::UnknownNode { node: node.get() })
    }
    /// The prepared `[G, K_i…]` ([`Bases`]), built on the first call.
    pub(crate) fn bases(&self) -> &VartimeRistrettoPrecomputation {
        self.bases.0.get_or_init(|| {
            VartimeRistrettoPrecomputation::new(
                std::iter::once(RISTRETTO_BASEPOINT_POINT).chain(self.verification_keys.values().map(|vk| vk.0.point)),
            )
        })
    }
    /// Where `node`'s `K_i` is in [`PublicKeyPackage::bases`] (`G` is at 0).
    pub(crate) fn base_index(&self, node: NodeId) -> Result<usize> {
        self.verification_keys
            .keys()
            .position(|id| *id == node)
            .map(|i| i + 1)
            .ok_or(Error::UnknownNode { node: node.get() })
    }
}

impl Wire for PublicKeyPackage {
    const NAME: &'static str = "public key package";
    const TAG: u8 = 0x02;
    fn encode_body(&self, w: &mut Writer) {
        w.u16(self.threshold);
        w.u16(self.verification_keys.len() as u16);
        for (id, vk) in &self.verification_keys {
            w.node(*id);
            vk.0.write(w);
        }
        self.group_key.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let threshold = r.u16()?;
        let n = r.count(MAX_NODES)?;
        let mut vks = BTreeMap::new();
        for _ in 0..n {
            let id = r.node()?;
            if vks.insert(id, VerificationKey(Element::read(r)?)).is_some() {
                return Err(Error::DuplicateNode { node: id });
            }
        }
        let group_key = GroupPublicKey(Element::read(r)?);
        PublicKeyPackage::new(threshold, vks, group_key)
    }
}

/// One pair of long-term node key types, secret and public, for one purpose. Every purpose has
/// its own pair of types so that a key made for one job cannot be handed to another.
macro_rules! long_term_key {
    ($(#[$sdoc:meta])* $secret:ident, $(#[$pdoc:meta])* $public:ident, $what:literal) => {
        $(#[$sdoc])*
        ///
        /// Zeroized on drop, not `Clone`; `Debug` prints `<redacted>`.
        #[derive(Zeroize, ZeroizeOnDrop)]
        pub struct $secret(Scalar);

        impl $secret {
            /// A fresh, non-zero key.
            pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
                loop {
                    let s = Scalar::random(rng);
                    if s != Scalar::ZERO {
                        return $secret(s);
                    }
                }
            }
            /// The public half, `s·G`.
            pub fn public_key(&self) -> $public {
                $public(Element::new(RistrettoPoint::mul_base(&self.0)))
            }
            #[allow(dead_code)]
            pub(crate) fn scalar(&self) -> &Scalar {
                &self.0
            }
            /// A second zeroizing copy, for state machines that must own one.
            #[allow(dead_code)]
            pub(crate) fn copy_secret(&self) -> Self {
                $secret(self.0)
            }
            /// 32 secret bytes, for sealing at rest; zeroized on drop.
            pub fn to_secret_bytes(&self) -> Zeroizing<[u8; 32]> {
                Zeroizing::new(self.0.to_bytes())
            }
            /// Decodes [`Self::to_secret_bytes`]; rejects a non-canonical or zero scalar.
            pub fn from_secret_bytes(bytes: [u8; 32]) -> Result<Self> {
                let bytes = Zeroizing::new(bytes);
                let s: Option<Scalar> = Scalar::from_canonical_bytes(*bytes).into();
                match s {
                    Some(s) if s != Scalar::ZERO => Ok($secret(s)),
                    _ => Err(Error::Malformed { what: $what }),
                }
            }
        }

        impl fmt::Debug for $secret {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($secret), "(<redacted>)"))
            }
        }

        $(#[$pdoc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub struct $public(pub(crate) Element);

        impl $public {
            /// The 32-byte compressed encoding.
            pub fn as_bytes(&self) -> &[u8; 32] {
                self.0.compressed.as_bytes()
            }
            /// Decodes 32 bytes, rejecting non-canonical encodings and the identity element.
            pub fn from_slice(bytes: &[u8]) -> Result<Self> {
                let bad = Error::Malformed { what: $what };
                let c = CompressedRistretto::from_slice(bytes).map_err(|_| bad.clone())?;
                let point = c.decompress().ok_or(bad.clone())?;
                if point == RistrettoPoint::default() {
                    return Err(bad);
                }
                Ok($public(Element { point, compressed: c }))
            }
            #[allow(dead_code)]
            pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
                let e = Element::read(r)?;
                if e.point == RistrettoPoint::default() {
                    return Err(Error::Malformed { what: $what });
                }
                Ok($public(e))
            }
        }
    };
}

long_term_key!(
    /// A node's long-term identity secret `id_i`. It **only signs**: DKG messages and the node's
    /// [`crate::node_keys::SignedKeyBundle`]. It is never multiplied by a point another party chose.
    IdentitySecret,
    /// A node's public identity key `ID_i = id_i·G`: what operators pin and what every other
    /// node key is certified under.
    IdentityPublicKey,
    "identity key"
);

long_term_key!(
    /// A node's long-term DKG transport secret `tr_i`: sub-shares are encrypted to it, and a
    /// complaint reveals `tr_i·E_j` only for an ephemeral `E_j` whose dealer proved, in that run,
    /// that it knows `log_G E_j`.
    TransportSecret,
    /// The public DKG transport key `T_i = tr_i·G`, certified in the node's key bundle.
    TransportPublicKey,
    "DKG transport key"
);

long_term_key!(
    /// A node's long-term seal secret: opens the RSA shares a dealer ceremony sealed to it. Used
    /// for nothing else, and nothing computed with it is ever published.
    SealSecret,
    /// The public seal key, certified in the node's key bundle: what `hyokctl rsa` seals to.
    SealPublicKey,
    "seal key"
);

long_term_key!(
    /// A node's long-term audit secret: signs the node's audit chain heads.
    AuditSecret,
    /// The public audit key, certified in the node's key bundle.
    AuditPublicKey,
    "audit key"
);

long_term_key!(
    /// A gRPC caller's signing secret: signs the caller's requests ([`crate::caller`]). Held by
    /// an application or an operator's tool, never by a node or the coordinator.
    CallerSecret,
    /// A caller's public key: what each node's operator lists in the node's policy.
    CallerPublicKey,
    "caller key"
);
