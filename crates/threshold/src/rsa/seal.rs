//! Sealing a dealt [`RsaKeyShare`] to its node's identity key, so that the coordinator relaying
//! it (and every other node) learns nothing, and the share cannot be replayed under another
//! key name, version, node or public package.
//!
//! The dealer (the `hyokctl rsa` ceremony) picks a fresh ephemeral `e`, sends `E = e·G`, and
//! encrypts the share's encoding with AES-256-GCM under
//! `HKDF-SHA256(salt = "hyok/v1/rsa-share", ikm = e·ID_i, info = ID_i ‖ E)` (the derivation the
//! DKG uses for its sub-shares); node `i` recomputes `id_i·E`. The additional data is the
//! [`ShareBinding`]: `("hyok/v1/rsa-share", name, version, node id, SHA-256(public package))`.
//! Each key seals one message, so the nonce is zero.

use super::keys::{MAX_MODULUS_BITS, RsaKeyShare, RsaPublicPackage};
use crate::ecies;
use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{Element, IdentityPublicKey, IdentitySecret, NodeId};
use aes_gcm::AeadInOut;
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const DOMAIN: &[u8] = b"hyok/v1/rsa-share";
/// Longest sealed share accepted: a share of a 4096-bit key (plus its fixed-width slack and
/// header) and the tag.
const MAX_SEALED_BYTES: usize = (MAX_MODULUS_BITS / 8) as usize + 256;
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

/// An [`RsaKeyShare`] sealed to one node's identity key: the ephemeral `E` and the AES-GCM
/// ciphertext of the share's encoding with its tag. Public: it reveals nothing without `id_i`.
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

fn cipher(recipient: &IdentityPublicKey, ephemeral: &Element, dh: &RistrettoPoint) -> aes_gcm::Aes256Gcm {
    let mut info = Vec::with_capacity(64);
    info.extend_from_slice(recipient.as_bytes());
    info.extend_from_slice(ephemeral.compressed.as_bytes());
    ecies::cipher(DOMAIN, dh, &info)
}

/// Seals `share` to `recipient` (the identity key of `binding.node()`).
///
/// # Errors
/// [`Error::InvalidParameters`] if the share belongs to another node than the binding names.
pub fn seal<R: CryptoRng + ?Sized>(
    share: &RsaKeyShare,
    recipient: &IdentityPublicKey,
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
    /// Opens the share with the node's identity secret, checking it against `binding`.
    ///
    /// # Errors
    /// [`Error::SealedShareRejected`] if the ciphertext does not open for this identity and
    /// binding (wrong node, name, version or package; tampering), or opens to a share of
    /// another node or one outside the package's node ids.
    pub fn open(
        &self,
        identity: &IdentitySecret,
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
        let dh = self.ephemeral.point * identity.scalar();
        let cipher = cipher(&identity.public_key(), &self.ephemeral, &dh);
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
