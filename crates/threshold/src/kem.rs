//! Envelope wrapping with threshold ElGamal (TDH2-style, with a Schnorr proof of knowledge).
//!
//! - [`wrap`] needs only the group key `K`: `R = r·G`, `Z = r·K`, a KEK from
//!   `HKDF(Z, R, K, label)`, AES-256-GCM over the data key with the label as AAD, and a proof of
//!   knowledge of `r` bound to `K`, the label and the ciphertext. Anyone can wrap, offline.
//! - [`partial_unwrap`] (node): refuses a wrapped key whose proof fails — so the node is never a
//!   Diffie–Hellman oracle on a point someone chose — and returns `Y_i = k_i·R` with a DLEQ proof.
//! - [`combine_unwrap`] (coordinator): `Z = Σ λ_i·Y_i` over `t` partials, then opens the data key;
//!   the GCM tag checks `Z`, and proofs are verified only to name culprits.

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{Element, GroupPublicKey, KeyShare, NodeId, PublicKeyPackage};
use crate::partial::{self, Opened, PartialEvaluation};
use crate::schnorr;
use crate::transcript::Transcript;
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use curve25519_dalek::{RistrettoPoint, Scalar};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Largest data key that can be wrapped, in bytes.
pub const MAX_DATA_KEY_LEN: usize = 1024;
/// Largest label, in bytes.
pub const MAX_LABEL_LEN: usize = 4096;

/// A data key wrapped under a group key: `(R, proof, ciphertext, tag)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    r: Element,
    proof: schnorr::Proof,
    ciphertext: Vec<u8>,
    tag: [u8; 16],
}

fn proof_context(group_key: &GroupPublicKey, label: &[u8], ciphertext: &[u8], tag: &[u8; 16]) -> Transcript {
    let mut t = Transcript::new(b"hyok/v1/kem/wrap-pok");
    t.append_point(b"K", &group_key.0.compressed);
    t.append(b"label", label);
    t.append(b"ciphertext", ciphertext);
    t.append(b"tag", tag);
    t
}

fn dleq_context(node: NodeId, r: &Element, label: &[u8]) -> Transcript {
    let mut t = Transcript::new(b"hyok/v1/kem/dleq");
    t.append_u64(b"node", u64::from(node.get()));
    t.append_point(b"R", &r.compressed);
    t.append(b"label", label);
    t
}

/// `(KEK, nonce) = HKDF-SHA256(salt = "hyok/v1/kem", ikm = Z, info = R ‖ K ‖ label)`.
fn cipher(z: &RistrettoPoint, r: &Element, group_key: &GroupPublicKey, label: &[u8]) -> (Aes256Gcm, [u8; 12]) {
    let ikm = Zeroizing::new(z.compress().to_bytes());
    let hk = Hkdf::<Sha256>::new(Some(b"hyok/v1/kem"), ikm.as_ref());
    let mut okm = Zeroizing::new([0u8; 44]);
    // 44 bytes is far below HKDF-SHA256's limit: expand cannot fail.
    let _ = hk.expand_multi_info(&[r.compressed.as_bytes(), group_key.0.compressed.as_bytes(), label], okm.as_mut());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (Aes256Gcm::new(&(*key).into()), nonce)
}

fn check_sizes(data_key_len: usize, label: &[u8]) -> Result<()> {
    if data_key_len == 0 || data_key_len > MAX_DATA_KEY_LEN {
        return Err(Error::InvalidParameters("data key must be 1..=1024 bytes"));
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(Error::InvalidParameters("label must be at most 4096 bytes"));
    }
    Ok(())
}

/// Wraps `data_key` under `K` for `label`. Needs no node: only the public key.
pub fn wrap<R: CryptoRng + ?Sized>(
    group_key: &GroupPublicKey,
    data_key: &[u8],
    label: &[u8],
    rng: &mut R,
) -> Result<WrappedKey> {
    check_sizes(data_key.len(), label)?;
    let r_secret = Zeroizing::new(Scalar::random(rng));
    let r = Element::new(RistrettoPoint::mul_base(&r_secret));
    let z = Zeroizing::new(group_key.0.point * *r_secret);
    let (cipher, nonce) = cipher(&z, &r, group_key, label);
    let mut ciphertext = data_key.to_vec();
    let tag: [u8; 16] = cipher
        .encrypt_inout_detached(&nonce.into(), label, ciphertext.as_mut_slice().into())
        .map_err(|_| Error::InvalidParameters("data key too long"))?
        .into();
    let proof = schnorr::Proof::prove(&r_secret, &r, &proof_context(group_key, label, &ciphertext, &tag), rng);
    Ok(WrappedKey { r, proof, ciphertext, tag })
}

impl WrappedKey {
    /// Checks the proof of knowledge of `r` for this group key and label.
    pub fn vartime_verify(&self, group_key: &GroupPublicKey, label: &[u8]) -> Result<()> {
        let context = proof_context(group_key, label, &self.ciphertext, &self.tag);
        if self.proof.vartime_verify(&self.r, &context) { Ok(()) } else { Err(Error::InvalidWrapProof) }
    }
}

impl Wire for WrappedKey {
    const NAME: &'static str = "wrapped key";
    const TAG: u8 = 0x40;
    fn encode_body(&self, w: &mut Writer) {
        self.r.write(w);
        self.proof.write(w);
        w.bytes(&self.ciphertext);
        w.fixed(&self.tag);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        let point = Element::read(r)?;
        let proof = schnorr::Proof::read(r)?;
        let ciphertext = r.bytes(MAX_DATA_KEY_LEN)?.to_vec();
        let tag = r.array()?;
        Ok(WrappedKey { r: point, proof, ciphertext, tag })
    }
}

/// Node side: checks the wrap's proof (refusing with [`Error::InvalidWrapProof`]), then returns
/// `Y_i = k_i·R` with a DLEQ proof against `K_i`.
pub fn partial_unwrap<R: CryptoRng + ?Sized>(
    share: &KeyShare,
    group_key: &GroupPublicKey,
    wrapped: &WrappedKey,
    label: &[u8],
    rng: &mut R,
) -> Result<PartialEvaluation> {
    wrapped.vartime_verify(group_key, label)?;
    Ok(PartialEvaluation::compute(share, &wrapped.r, &dleq_context(share.node(), &wrapped.r, label), rng))
}

/// Coordinator side: `Z = Σ λ_i·Y_i`, then opens the data key. Combine-first: proofs are checked
/// only if the GCM tag fails, to name the culprits and retry with `t` valid partials.
pub fn combine_unwrap(
    package: &PublicKeyPackage,
    wrapped: &WrappedKey,
    label: &[u8],
    partials: &[PartialEvaluation],
) -> Result<Opened<Zeroizing<Vec<u8>>>> {
    let group_key = package.group_key();
    wrapped.vartime_verify(group_key, label)?;
    partial::open_combine_first(
        package,
        || wrapped.r,
        |n| dleq_context(n, &wrapped.r, label),
        partials,
        |z| {
            let (cipher, nonce) = cipher(z, &wrapped.r, group_key, label);
            let mut buffer = Zeroizing::new(wrapped.ciphertext.clone());
            cipher
                .decrypt_inout_detached(&nonce.into(), label, buffer.as_mut_slice().into(), &wrapped.tag.into())
                .ok()
                .map(|()| buffer)
        },
    )
}
