//! AES-256-GCM keyed by the DPRF: one key and nonce per message, derived from `Y = k·H(x)`.
//!
//! `(key ‖ nonce) = HKDF-SHA256(salt = "hyok/v1/dprf-aead", ikm = Y, info = encode(x))`. Each
//! key seals exactly one message (the seed in `x` is fresh per encryption), so the derived nonce
//! never repeats under a key. The ciphertext is exactly as long as the plaintext; the 16-byte
//! tag travels beside it ([`seal_detached`]) or inside a self-describing [`Blob`].

use crate::dprf::{self, DprfInput, DprfOutput, SEED_LEN};
use crate::encoding::Wire;
use crate::error::{Error, Result};
use crate::keys::PublicKeyPackage;
use crate::partial::{Opened, PartialEvaluation};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use rand_core::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Length of the detached GCM tag.
pub const TAG_LEN: usize = 16;

const KDF_SALT: &[u8] = b"hyok/v1/dprf-aead";

fn cipher(output: &DprfOutput, input: &DprfInput) -> (Aes256Gcm, [u8; 12]) {
    let mut okm = Zeroizing::new([0u8; 44]);
    let ikm = Zeroizing::new(output.0.compress().to_bytes());
    let hk = Hkdf::<Sha256>::new(Some(KDF_SALT), ikm.as_ref());
    // 44 bytes is far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
    let _ = hk.expand(&input.to_bytes(), okm.as_mut());
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&okm[..32]);
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&okm[32..]);
    (Aes256Gcm::new(&(*key).into()), nonce)
}

/// Encrypts `buffer` in place under the key derived from `(Y, x)` and returns the tag.
pub fn seal_detached(output: &DprfOutput, input: &DprfInput, aad: &[u8], buffer: &mut [u8]) -> [u8; TAG_LEN] {
    let (cipher, nonce) = cipher(output, input);
    // AES-GCM fails only past 2^36 bytes; a larger buffer is a caller bug we report as all-zero
    // output rather than a panic.
    match cipher.encrypt_inout_detached(&nonce.into(), aad, buffer.into()) {
        Ok(tag) => tag.into(),
        Err(_) => {
            buffer.fill(0);
            [0u8; TAG_LEN]
        }
    }
}

/// Decrypts `buffer` in place; on a bad tag the buffer is left as it was and the result is
/// [`Error::DecryptionFailed`].
pub fn open_detached(
    output: &DprfOutput,
    input: &DprfInput,
    aad: &[u8],
    buffer: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<()> {
    let (cipher, nonce) = cipher(output, input);
    cipher
        .decrypt_inout_detached(&nonce.into(), aad, buffer.into(), tag.into())
        .map_err(|_| Error::DecryptionFailed { culprits: Vec::new() })
}

/// A detached encryption: ciphertext as long as the plaintext, and its tag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sealed {
    /// `|ciphertext| = |plaintext|`.
    pub ciphertext: Vec<u8>,
    /// The GCM tag.
    pub tag: [u8; TAG_LEN],
}

/// Coordinator side of encryption: verify the partials (batched), combine `t` valid ones, seal.
pub fn encrypt<R: CryptoRng + ?Sized>(
    package: &PublicKeyPackage,
    input: &DprfInput,
    partials: &[PartialEvaluation],
    aad: &[u8],
    plaintext: &[u8],
    rng: &mut R,
) -> Result<Opened<Sealed>> {
    let combined = dprf::combine(package, input, partials, rng)?;
    let mut ciphertext = plaintext.to_vec();
    let tag = seal_detached(&combined.value, input, aad, &mut ciphertext);
    Ok(Opened { value: Sealed { ciphertext, tag }, culprits: combined.culprits })
}

/// Coordinator side of decryption, combine-first: the GCM tag checks the combined value, and
/// proofs are verified only when it fails (to name culprits and retry without them).
pub fn decrypt(
    package: &PublicKeyPackage,
    input: &DprfInput,
    partials: &[PartialEvaluation],
    aad: &[u8],
    ciphertext: &[u8],
    tag: &[u8; TAG_LEN],
) -> Result<Opened<Zeroizing<Vec<u8>>>> {
    dprf::open_combine_first(package, input, partials, |output| {
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        open_detached(output, input, aad, &mut buffer, tag).ok().map(|()| buffer)
    })
}

/// The self-describing ciphertext of the gRPC `Encrypt` API:
/// `0x01 ‖ u32be(key version) ‖ seed[16] ‖ ciphertext ‖ tag[16]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The key version whose share set encrypted it.
    pub version: u32,
    /// The DPRF seed (fresh per encryption).
    pub seed: [u8; SEED_LEN],
    /// As long as the plaintext.
    pub ciphertext: Vec<u8>,
    /// The GCM tag.
    pub tag: [u8; TAG_LEN],
}

impl Blob {
    /// The format byte that starts every blob.
    pub const FORMAT: u8 = 0x01;
    /// Bytes a blob adds to the plaintext.
    pub const OVERHEAD: usize = 1 + 4 + SEED_LEN + TAG_LEN;

    /// Encodes the blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::OVERHEAD + self.ciphertext.len());
        out.push(Self::FORMAT);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.seed);
        out.extend_from_slice(&self.ciphertext);
        out.extend_from_slice(&self.tag);
        out
    }

    /// Decodes a blob; a wrong format byte is [`Error::UnsupportedVersion`], a short one
    /// [`Error::Malformed`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const WHAT: &str = "ciphertext blob";
        let (&format, rest) = bytes.split_first().ok_or(Error::Malformed { what: WHAT })?;
        if format != Self::FORMAT {
            return Err(Error::UnsupportedVersion { what: WHAT, version: format });
        }
        if rest.len() < Self::OVERHEAD - 1 {
            return Err(Error::Malformed { what: WHAT });
        }
        let (version, rest) = rest.split_at(4);
        let (seed, rest) = rest.split_at(SEED_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let mut v = [0u8; 4];
        v.copy_from_slice(version);
        let mut s = [0u8; SEED_LEN];
        s.copy_from_slice(seed);
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(tag);
        Ok(Blob { version: u32::from_be_bytes(v), seed: s, ciphertext: ciphertext.to_vec(), tag: t })
    }

    /// The DPRF input this blob was made with under `key_id`.
    pub fn input(&self, key_id: &str) -> Result<DprfInput> {
        DprfInput::new(key_id, self.version, self.seed)
    }
}
