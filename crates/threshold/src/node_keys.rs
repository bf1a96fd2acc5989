//! A node's long-term keys, one per purpose, and the signed bundle that publishes them.
//!
//! | key | secret | used for |
//! |---|---|---|
//! | identity `ID_i` | [`IdentitySecret`] | signing only: DKG messages and the key bundle |
//! | DKG transport `T_i` | [`TransportSecret`] | receiving DKG sub-shares; complaints |
//! | seal `S_i` | [`SealSecret`] | opening sealed RSA shares |
//! | audit `A_i` | [`AuditSecret`] | signing audit chain heads |
//!
//! No key serves two purposes, so a value a node reveals with one key (a DKG complaint
//! `tr_i·E_j`) can never open what was encrypted to another (a sealed RSA share under `S_i`).
//!
//! The public keys travel in a [`SignedKeyBundle`]: `(node id, ID_i, T_i, S_i, A_i)` and a
//! Schnorr signature under `ID_i` over the transcript
//! `H("hyok/v1/node-key-bundle", node, ID_i, T_i, S_i, A_i)`. A bundle becomes usable only
//! through [`SignedKeyBundle::verify`], which checks the signature against the identity key the
//! caller already trusts (pinned, or named by the run) and yields a [`KeyBundle`].

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{
    AuditPublicKey, AuditSecret, IdentityPublicKey, IdentitySecret, NodeId, SealPublicKey, SealSecret,
    TransportPublicKey, TransportSecret,
};
use crate::schnorr;
use crate::transcript::Transcript;
use rand_core::CryptoRng;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Every long-term secret of one node. Zeroized on drop; `Debug` prints `<redacted>`.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct NodeSecrets {
    identity: IdentitySecret,
    transport: TransportSecret,
    seal: SealSecret,
    audit: AuditSecret,
}

impl fmt::Debug for NodeSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSecrets(<redacted>)")
    }
}

/// The encoding's type tag.
const SECRETS_TAG: u8 = 0x05;

impl NodeSecrets {
    /// Fresh keys for every purpose.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        NodeSecrets::from_identity(IdentitySecret::generate(rng), rng)
    }

    /// Keeps an existing identity (a data directory from before keys per purpose) and
    /// generates every other key afresh.
    pub fn from_identity<R: CryptoRng + ?Sized>(identity: IdentitySecret, rng: &mut R) -> Self {
        NodeSecrets {
            identity,
            transport: TransportSecret::generate(rng),
            seal: SealSecret::generate(rng),
            audit: AuditSecret::generate(rng),
        }
    }

    /// The identity (signing) secret.
    pub fn identity(&self) -> &IdentitySecret {
        &self.identity
    }
    /// The DKG transport secret.
    pub fn transport(&self) -> &TransportSecret {
        &self.transport
    }
    /// The RSA share seal secret.
    pub fn seal(&self) -> &SealSecret {
        &self.seal
    }
    /// The audit signing secret.
    pub fn audit(&self) -> &AuditSecret {
        &self.audit
    }

    /// `version ‖ 0x05 ‖ identity ‖ transport ‖ seal ‖ audit` (4 × 32 bytes), for sealing at
    /// rest. Zeroized on drop.
    pub fn to_secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Writer(Vec::with_capacity(2 + 4 * 32));
        w.u8(crate::encoding::WIRE_VERSION);
        w.u8(SECRETS_TAG);
        for key in [
            self.identity.to_secret_bytes(),
            self.transport.to_secret_bytes(),
            self.seal.to_secret_bytes(),
            self.audit.to_secret_bytes(),
        ] {
            w.fixed(key.as_ref());
        }
        Zeroizing::new(std::mem::take(&mut w.0))
    }

    /// Decodes [`NodeSecrets::to_secret_bytes`]; every key must be canonical and non-zero.
    pub fn from_secret_bytes(bytes: &[u8]) -> Result<Self> {
        crate::encoding::decode(bytes, "node secrets", SECRETS_TAG, |r| {
            let mut next = || -> Result<Zeroizing<[u8; 32]>> { Ok(Zeroizing::new(r.array()?)) };
            let identity = IdentitySecret::from_secret_bytes(*next()?)?;
            let transport = TransportSecret::from_secret_bytes(*next()?)?;
            let seal = SealSecret::from_secret_bytes(*next()?)?;
            let audit = AuditSecret::from_secret_bytes(*next()?)?;
            Ok(NodeSecrets { identity, transport, seal, audit })
        })
    }

    /// Decodes what a node stored: a [`NodeSecrets::to_secret_bytes`] encoding, or — from a data
    /// directory made before keys per purpose — a bare 32-byte identity secret, which is kept
    /// and completed with fresh transport, seal and audit keys. The flag is `true` for the
    /// latter: the caller must store the new encoding (and flush) before using the keys.
    pub fn from_stored<R: CryptoRng + ?Sized>(bytes: &[u8], rng: &mut R) -> Result<(Self, bool)> {
        if bytes.len() == 32 {
            let mut legacy = Zeroizing::new([0u8; 32]);
            legacy.copy_from_slice(bytes);
            let identity = IdentitySecret::from_secret_bytes(*legacy)?;
            return Ok((NodeSecrets::from_identity(identity, rng), true));
        }
        Ok((NodeSecrets::from_secret_bytes(bytes)?, false))
    }

    /// This node's public keys, signed with its identity key.
    pub fn key_bundle<R: CryptoRng + ?Sized>(&self, node: NodeId, rng: &mut R) -> SignedKeyBundle {
        let keys = KeyBundle {
            node,
            identity: self.identity.public_key(),
            transport: self.transport.public_key(),
            seal: self.seal.public_key(),
            audit: self.audit.public_key(),
        };
        let signature = schnorr::Proof::prove(self.identity.scalar(), &keys.identity.0, &keys.signature_context(), rng);
        SignedKeyBundle { keys, signature }
    }
}

/// A node's public keys, their signature checked under its identity key. Obtained only from
/// [`SignedKeyBundle::verify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyBundle {
    node: NodeId,
    identity: IdentityPublicKey,
    transport: TransportPublicKey,
    seal: SealPublicKey,
    audit: AuditPublicKey,
}

impl KeyBundle {
    /// The node the keys belong to.
    pub fn node(&self) -> NodeId {
        self.node
    }
    /// The identity key that signed the bundle.
    pub fn identity(&self) -> &IdentityPublicKey {
        &self.identity
    }
    /// The DKG transport key.
    pub fn transport(&self) -> &TransportPublicKey {
        &self.transport
    }
    /// The RSA share seal key.
    pub fn seal(&self) -> &SealPublicKey {
        &self.seal
    }
    /// The audit signing key.
    pub fn audit(&self) -> &AuditPublicKey {
        &self.audit
    }

    /// `H("hyok/v1/node-key-bundle", node, ID, T, S, A)`.
    fn signature_context(&self) -> Transcript {
        let mut t = Transcript::new(b"hyok/v1/node-key-bundle");
        t.append_u64(b"node", u64::from(self.node.get()));
        t.append_point(b"identity", &self.identity.0.compressed);
        t.append_point(b"transport", &self.transport.0.compressed);
        t.append_point(b"seal", &self.seal.0.compressed);
        t.append_point(b"audit", &self.audit.0.compressed);
        t
    }
}

/// A [`KeyBundle`] as it travels: not to be used before [`SignedKeyBundle::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedKeyBundle {
    keys: KeyBundle,
    signature: schnorr::Proof,
}

impl SignedKeyBundle {
    /// Checks that this is `node`'s bundle, signed by `identity` (the key the caller already
    /// trusts for that node), and returns the keys.
    ///
    /// # Errors
    /// [`Error::InvalidKeyBundle`] naming `node` if the bundle names another node or another
    /// identity key, or its signature does not verify.
    pub fn verify(&self, node: NodeId, identity: &IdentityPublicKey) -> Result<KeyBundle> {
        let keys = &self.keys;
        let ok = keys.node == node
            && keys.identity == *identity
            && self.signature.vartime_verify(&identity.0, &keys.signature_context());
        if ok { Ok(*keys) } else { Err(Error::InvalidKeyBundle { node }) }
    }

    /// The node the bundle claims to belong to (unverified).
    pub fn claimed_node(&self) -> NodeId {
        self.keys.node
    }
}

/// `version ‖ 0x06 ‖ u16be(node) ‖ ID ‖ T ‖ S ‖ A ‖ signature (64)`.
impl Wire for SignedKeyBundle {
    const NAME: &'static str = "node key bundle";
    const TAG: u8 = 0x06;
    fn encode_body(&self, w: &mut Writer) {
        let k = &self.keys;
        w.node(k.node);
        k.identity.0.write(w);
        k.transport.0.write(w);
        k.seal.0.write(w);
        k.audit.0.write(w);
        self.signature.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let keys = KeyBundle {
            node: r.node()?,
            identity: IdentityPublicKey::read(r)?,
            transport: TransportPublicKey::read(r)?,
            seal: SealPublicKey::read(r)?,
            audit: AuditPublicKey::read(r)?,
        };
        Ok(SignedKeyBundle { keys, signature: schnorr::Proof::read(r)? })
    }
}
