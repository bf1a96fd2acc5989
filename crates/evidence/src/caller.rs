//! gRPC callers' request signatures (`hyok_threshold::caller`), as evidence: the caller side
//! ([`Signer`]: one signed [`pb::Evidence`] per request) and the subjects both sides compute.
//!
//! | operation | version signed | subject |
//! |---|---|---|
//! | `encrypt` | 0 (the primary one) or a version | [`content_digest`] of plaintext and AAD |
//! | `decrypt` | the ciphertext's | its 16-byte DPRF seed |
//! | `unwrap` | the wrap's | [`wrapped_digest`] of wrapped key and label |
//! | `rsa-decrypt` | the ciphertext's | [`ciphertext_digest`] |
//! | `rsa-import` | the one added | [`package_digest`] of its public package |
//!
//! An encryption's DPRF nonce is derived from the signature ([`encryption_nonce`]) by every
//! node, as for XKS: no one can steer it onto another ciphertext's seed.

use hyok_proto::v1 as pb;
use hyok_threshold::caller::{self, CallerRequest};
use hyok_threshold::{CallerPublicKey, CallerSecret, Wire};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

/// How far a caller's clock may be from a node's, either way.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;

/// The operation names signed.
pub mod op {
    /// A DPRF encryption.
    pub const ENCRYPT: &str = "encrypt";
    /// A DPRF decryption.
    pub const DECRYPT: &str = "decrypt";
    /// A KEM unwrap.
    pub const UNWRAP: &str = "unwrap";
    /// A threshold RSA decryption.
    pub const RSA_DECRYPT: &str = "rsa-decrypt";
    /// Adding a version to an RSA key (the dealer ceremony).
    pub const RSA_IMPORT: &str = "rsa-import";
}

fn digest(context: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(context);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// An encryption's subject: SHA-256 over its plaintext and AAD (lengths included).
pub fn content_digest(plaintext: &[u8], aad: &[u8]) -> [u8; 32] {
    digest(b"hyok/v1/caller/content", &[plaintext, aad])
}

/// An unwrap's subject: SHA-256 over the wrapped key and its label.
pub fn wrapped_digest(wrapped: &[u8], label: &[u8]) -> [u8; 32] {
    digest(b"hyok/v1/caller/wrapped", &[wrapped, label])
}

/// An RSA decryption's subject: SHA-256 over the ciphertext.
pub fn ciphertext_digest(ciphertext: &[u8]) -> [u8; 32] {
    digest(b"hyok/v1/caller/rsa-ciphertext", &[ciphertext])
}

/// An RSA import's subject: SHA-256 over the version's public package.
pub fn package_digest(package: &[u8]) -> [u8; 32] {
    digest(b"hyok/v1/caller/rsa-package", &[package])
}

/// The DPRF nonce of a signed encryption: the first 16 bytes of
/// `SHA-256("hyok/v1/caller-encrypt-nonce" ‖ signature)`.
pub fn encryption_nonce(signature: &[u8]) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"hyok/v1/caller-encrypt-nonce");
    h.update(signature);
    let mut nonce = [0u8; 16];
    nonce.copy_from_slice(&h.finalize()[..16]);
    nonce
}

/// The key version and seed in the header of a ciphertext blob made by `Encrypt`
/// (`0x01 ‖ u32be(version) ‖ seed[16] ‖ …`).
pub fn blob_header(blob: &[u8]) -> Option<(u32, [u8; 16])> {
    match blob {
        [0x01, a, b, c, d, rest @ ..] if rest.len() >= 16 => {
            let mut seed = [0u8; 16];
            seed.copy_from_slice(&rest[..16]);
            Some((u32::from_be_bytes([*a, *b, *c, *d]), seed))
        }
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A caller's signing key. `Debug` shows only the public key.
pub struct Signer {
    secret: CallerSecret,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signer({})", hex::encode(self.public_key().as_bytes()))
    }
}

impl Signer {
    /// A fresh key.
    pub fn generate<R: rand::CryptoRng + ?Sized>(rng: &mut R) -> Self {
        Signer { secret: CallerSecret::generate(rng) }
    }

    /// Reads a key file: 64 hex digits of secret (what [`Signer::to_file_text`] writes).
    ///
    /// # Errors
    /// If the file cannot be read or holds no key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading caller key {}: {e}", path.display()))?,
        );
        let bytes = zeroize::Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| anyhow::anyhow!("caller key {} is not hex", path.display()))?,
        );
        let bytes: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| anyhow::anyhow!("caller key {} is not 32 bytes", path.display()))?;
        let secret = CallerSecret::from_secret_bytes(bytes)
            .map_err(|_| anyhow::anyhow!("caller key {} is not a valid key", path.display()))?;
        Ok(Signer { secret })
    }

    /// The key file's text (keep it 0600).
    pub fn to_file_text(&self) -> zeroize::Zeroizing<String> {
        zeroize::Zeroizing::new(format!("{}\n", hex::encode(self.secret.to_secret_bytes().as_ref())))
    }

    /// The public key node operators list.
    pub fn public_key(&self) -> CallerPublicKey {
        self.secret.public_key()
    }

    fn sign(&self, operation: &str, key: &str, version: u32, subject: &[u8], content_digest: Vec<u8>) -> pb::Evidence {
        let mut nonce = [0u8; 16];
        rand::fill(&mut nonce);
        let time_ms = now_ms();
        let request = CallerRequest { operation, key, version, subject, time_ms, nonce: &nonce };
        let signature = caller::sign(&self.secret, &request, &mut rand::rng());
        pb::Evidence {
            kind: Some(pb::evidence::Kind::Caller(pb::CallerSignature {
                public_key: self.public_key().as_bytes().to_vec(),
                time_ms,
                nonce: nonce.to_vec(),
                content_digest,
                version,
                signature: signature.to_bytes(),
            })),
        }
    }

    /// Evidence for `Encrypt`/`EncryptDetached` of `plaintext` with `aad` under `key`'s primary
    /// version.
    pub fn encrypt(&self, key: &str, plaintext: &[u8], aad: &[u8]) -> pb::Evidence {
        let content = content_digest(plaintext, aad);
        self.sign(op::ENCRYPT, key, 0, &content, content.to_vec())
    }

    /// Evidence for `DecryptDetached` of the ciphertext with this seed and version.
    pub fn decrypt(&self, key: &str, version: u32, seed: &[u8]) -> pb::Evidence {
        self.sign(op::DECRYPT, key, version, seed, Vec::new())
    }

    /// Evidence for `Decrypt` of a blob (its header names the version and seed); `None` when
    /// the blob has no header.
    pub fn decrypt_blob(&self, key: &str, blob: &[u8]) -> Option<pb::Evidence> {
        let (version, seed) = blob_header(blob)?;
        Some(self.decrypt(key, version, &seed))
    }

    /// Evidence for `Unwrap`.
    pub fn unwrap(&self, key: &str, version: u32, wrapped: &[u8], label: &[u8]) -> pb::Evidence {
        self.sign(op::UNWRAP, key, version, &wrapped_digest(wrapped, label), Vec::new())
    }

    /// Evidence for `ImportRsaKey`: the dealer adds `version` of `name` with this public package.
    pub fn rsa_import(&self, name: &str, version: u32, package: &[u8]) -> pb::Evidence {
        self.sign(op::RSA_IMPORT, name, version, &package_digest(package), Vec::new())
    }

    /// Evidence for `RsaDecrypt`.
    pub fn rsa_decrypt(&self, name: &str, version: u32, ciphertext: &[u8]) -> pb::Evidence {
        self.sign(op::RSA_DECRYPT, name, version, &ciphertext_digest(ciphertext), Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_round_trips_and_debug_shows_no_secret() {
        let signer = Signer::generate(&mut rand::rng());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("caller.key");
        std::fs::write(&path, signer.to_file_text().as_bytes()).unwrap();
        let loaded = Signer::load(&path).unwrap();
        assert_eq!(loaded.public_key(), signer.public_key());
        let secret_hex = signer.to_file_text().trim().to_owned();
        assert!(!format!("{signer:?}").contains(&secret_hex));
        std::fs::write(&path, "zz").unwrap();
        assert!(Signer::load(&path).is_err());
    }

    #[test]
    fn blob_headers_parse() {
        let mut blob = vec![0x01, 0, 0, 0, 4];
        blob.extend_from_slice(&[3u8; 16]);
        blob.extend_from_slice(&[0u8; 16]);
        assert_eq!(blob_header(&blob), Some((4, [3u8; 16])));
        assert_eq!(blob_header(&blob[..10]), None);
        assert_eq!(blob_header(&[0x02; 40]), None);
    }
}
