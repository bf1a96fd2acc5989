//! The one key derivation for encrypting to a node's long-term key: an AES-256-GCM key from
//! an ECDH value `dh = e·P_i = p_i·E` on Ristretto255, `key = HKDF-SHA256(salt, ikm = dh, info)`.
//!
//! Shared by the DKG (sub-shares, to the DKG transport key) and threshold RSA (sealed dealer
//! shares, to the seal key); never used with the identity key, which only signs. Every key derived
//! here encrypts exactly one message (the ephemeral `E` is fresh per message and is bound into
//! `info`), so callers use the all-zero nonce.

use aes_gcm::{Aes256Gcm, KeyInit};
use curve25519_dalek::RistrettoPoint;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The nonce of every one-message key derived here.
pub(crate) const NONCE: [u8; 12] = [0u8; 12];

/// `AES-256-GCM` under `HKDF-SHA256(salt, ikm = compress(dh), info)`.
pub(crate) fn cipher(salt: &[u8], dh: &RistrettoPoint, info: &[u8]) -> Aes256Gcm {
    let ikm = Zeroizing::new(dh.compress().to_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's limit: expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm.as_ref()).expand(info, key.as_mut());
    Aes256Gcm::new(&(*key).into())
}
