//! Sealing a dealt [`RsaKeyShare`] to its node's **seal key** (from the node's key bundle,
//! verified under its identity key; never the identity or DKG transport key), so that the coordinator relaying
//! it (and every other node) learns nothing, and the share cannot be replayed under another
//! key name, version, node or public package.
//!
//! The dealer (the `hyokctl rsa` ceremony) picks a fresh ephemeral `e`, sends `E = e·G`, and
//! encrypts the share's encoding with AES-256-GCM under
//! `HKDF-SHA256(salt = "hyok/v1/rsa-share", ikm = e·S_i, info = S_i ‖ E)` (the derivation the
//! DKG uses for its sub-shares); node `i` recomputes `s_i·E` with its seal secret, which serves
//! nothing else and whose products are never published (a DKG complaint reveals values of the
//! transport key only, so it can never open a sealed share). The additional data is the
//! [`ShareBinding`]: `("hyok/v1/rsa-share", name, version, node id, SHA-256(public package))`.
//! Each key seals one message, so the nonce is zero.

use super::keys::{MAX_SHARE_BYTES, RsaKeyShare, RsaPublicPackage};
use crate::ecies;
use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{Element, NodeId, SealPublicKey, SealSecret};
use aes_gcm::AeadInOut;
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const DOMAIN: &[u8] = b"hyok/v1/rsa-share";
/// Longest sealed share accepted: the longest share (a reshared one may be up to twice the
/// modulus), its header and the tag.
const MAX_SEALED_BYTES: usize = MAX_SHARE_BYTES + 256;
/// The GCM tag length.
const TAG_LEN: usize = 16;

/// What a sealed share is bound to: it opens only for this key name, version, node and public
/// package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareBinding {
    name: String,
    version: u32,
    node: NodeId,
    package_digest: [u8; 32],
}

impl ShareBinding {
    /// The binding of `node`'s share of version `version` of the key `name`, dealt with
    /// `package` (bound by the SHA-256 of its wire encoding).
    pub fn new(name: &str, version: u32, node: NodeId, package: &RsaPublicPackage) -> Self {
        ShareBinding { name: name.to_owned(), version, node, package_digest: Sha256::digest(package.to_bytes()).into() }
    }

    /// The node the share belongs to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// `len ‖ "hyok/v1/rsa-share" ‖ len ‖ name ‖ u32be(version) ‖ u16be(node) ‖ SHA-256(package)`.
    fn aad(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + self.name.len()));
        w.bytes(DOMAIN);
        w.bytes(self.name.as_bytes());
        w.u32(self.version);
        w.node(self.node);
        w.fixed(&self.package_digest);
        w.0
    }
}

/// An [`RsaKeyShare`] sealed to one node's seal key: the ephemeral `E` and the AES-GCM
/// ciphertext of the share's encoding with its tag. Public: it reveals nothing without `s_i`.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedRsaShare {
    ephemeral: Element,
    ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedRsaShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedRsaShare")
            .field("ephemeral", &self.ephemeral)
            .field("len", &self.ciphertext.len())
            .finish()
    }
}

fn cipher(recipient: &SealPublicKey, ephemeral: &Element, dh: &RistrettoPoint) -> aes_gcm::Aes256Gcm {
    let mut info = Vec::with_capacity(64);
    info.extend_from_slice(recipient.as_bytes());
    info.extend_from_slice(ephemeral.compressed.as_bytes());
    ecies::cipher(DOMAIN, dh, &info)
}

/// Seals `share` to `recipient`, the seal key of `binding.node()` taken from its verified
/// [`crate::KeyBundle`].
///
/// # Errors
/// [`Error::InvalidParameters`] if the share belongs to another node than the binding names.
pub fn seal<R: CryptoRng + ?Sized>(
    share: &RsaKeyShare,
    recipient: &SealPublicKey,
    binding: &ShareBinding,
    rng: &mut R,
) -> Result<SealedRsaShare> {
    if share.node() != binding.node {
        return Err(Error::InvalidParameters("RSA share sealed under another node's binding"));
    }
    let e = Zeroizing::new(Scalar::random(rng));
    let ephemeral = Element::new(RistrettoPoint::mul_base(&e));
    let dh = recipient.0.point * *e;
    let cipher = cipher(recipient, &ephemeral, &dh);
    let plaintext = share.to_secret_bytes();
    let mut buffer = Zeroizing::new(plaintext.to_vec());
    let tag = cipher
        .encrypt_inout_detached(&ecies::NONCE.into(), &binding.aad(), buffer.as_mut_slice().into())
        .map_err(|_| Error::InvalidParameters("RSA share encryption failed"))?;
    let mut ciphertext = buffer.to_vec();
    ciphertext.extend_from_slice(&tag);
    Ok(SealedRsaShare { ephemeral, ciphertext })
}

impl SealedRsaShare {
    /// Opens the share with the node's seal secret, checking it against `binding`.
    ///
    /// # Errors
    /// [`Error::SealedShareRejected`] if the ciphertext does not open for this identity and
    /// binding (wrong node, name, version or package; sealed to another key; tampering), or
    /// opens to a share of
    /// another node or one outside the package's node ids.
    pub fn open(&self, seal: &SealSecret, binding: &ShareBinding, package: &RsaPublicPackage) -> Result<RsaKeyShare> {
        let dh = self.ephemeral.point * seal.scalar();
        self.open_with(&seal.public_key(), &dh, binding, package)
    }

    /// Tries to open the share with a given ECDH value (e.g. one a DKG complaint revealed), for
    /// tests that prove such values open no sealed share.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_open_with_dh(
        &self,
        recipient: &SealPublicKey,
        dh: &[u8; 32],
        binding: &ShareBinding,
        package: &RsaPublicPackage,
    ) -> Result<RsaKeyShare> {
        let dh =
            curve25519_dalek::ristretto::CompressedRistretto(*dh).decompress().ok_or(Error::SealedShareRejected)?;
        self.open_with(recipient, &dh, binding, package)
    }

    /// The share's ephemeral `E`, as an attacker would replay it into a DKG.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_ephemeral(&self) -> [u8; 32] {
        self.ephemeral.compressed.to_bytes()
    }

    fn open_with(
        &self,
        recipient: &SealPublicKey,
        dh: &RistrettoPoint,
        binding: &ShareBinding,
        package: &RsaPublicPackage,
    ) -> Result<RsaKeyShare> {
        let rejected = Error::SealedShareRejected;
        if self.ciphertext.len() < TAG_LEN
            || ShareBinding::new(&binding.name, binding.version, binding.node, package) != *binding
        {
            return Err(rejected);
        }
        let (body, tag) = self.ciphertext.split_at(self.ciphertext.len() - TAG_LEN);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let cipher = cipher(recipient, &self.ephemeral, dh);
        let mut buffer = Zeroizing::new(body.to_vec());
        cipher
            .decrypt_inout_detached(
                &ecies::NONCE.into(),
                &binding.aad(),
                buffer.as_mut_slice().into(),
                &tag_bytes.into(),
            )
            .map_err(|_| rejected.clone())?;
        let share = RsaKeyShare::from_secret_bytes(&buffer).map_err(|_| rejected.clone())?;
        if share.node() != binding.node || package.check_node(share.node()).is_err() {
            return Err(rejected);
        }
        Ok(share)
    }
}

/// `version ‖ 0x63 ‖ E (32) ‖ u32be(len) ‖ ciphertext ‖ tag`. Decoding rejects a
/// non-canonical or identity `E`.
impl Wire for SealedRsaShare {
    const NAME: &'static str = "sealed RSA share";
    const TAG: u8 = 0x63;
    fn encode_body(&self, w: &mut Writer) {
        self.ephemeral.write(w);
        w.bytes(&self.ciphertext);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let ephemeral = Element::read(r)?;
        if ephemeral.point == RistrettoPoint::default() {
            return Err(Error::Malformed { what: Self::NAME });
        }
        let ciphertext = r.bytes(MAX_SEALED_BYTES)?;
        if ciphertext.len() < TAG_LEN {
            return Err(Error::Malformed { what: Self::NAME });
        }
        Ok(SealedRsaShare { ephemeral, ciphertext: ciphertext.to_vec() })
    }
}
