//! RSAES-OAEP (RFC 8017 §7.1) with SHA-256, MGF1-SHA-256 and the empty label — the padding
//! Microsoft DKE uses (`RSA-OAEP-256`).
//!
//! [`decode`] removes the padding from a threshold decryption `y` in constant time: every
//! check is computed over every byte, combined with `subtle`, and reported as one
//! [`Error::OaepDecodingFailed`], so that its timing and its error say nothing about which
//! check failed (Manger's attack). [`encrypt`] is the public-key operation, for clients and
//! tests.

use super::keys::RsaPublicKey;
use super::num;
use crate::error::{Error, Result};
use crypto_bigint::modular::BoxedMontyForm;
use rand_core::CryptoRng;
use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};
use zeroize::Zeroizing;

/// `hLen`, the SHA-256 output length.
const H_LEN: usize = 32;

/// `lHash = SHA-256("")`, the hash of the empty label.
fn label_hash() -> [u8; H_LEN] {
    Sha256::digest(b"").into()
}

/// `mask ^= MGF1-SHA-256(seed, mask.len())`: XORs `Hash(seed || C)` for `C = 0, 1, …`
/// (a 4-byte big-endian counter) into `mask`.
fn xor_mgf1(seed: &[u8], mask: &mut [u8]) {
    for (counter, chunk) in mask.chunks_mut(H_LEN).enumerate() {
        let block: [u8; H_LEN] =
            Sha256::new().chain_update(seed).chain_update((counter as u32).to_be_bytes()).finalize().into();
        for (m, b) in chunk.iter_mut().zip(block) {
            *m ^= b;
        }
    }
}

/// The longest message [`encrypt`] accepts for `key`: `k − 2·hLen − 2` bytes.
pub fn max_message_len(key: &RsaPublicKey) -> usize {
    key.size() - 2 * H_LEN - 2
}

/// RSAES-OAEP-ENCRYPT: `EM = 0x00 || maskedSeed || maskedDB` with
/// `DB = lHash || PS || 0x01 || M`, `maskedDB = DB ⊕ MGF1(seed)`,
/// `maskedSeed = seed ⊕ MGF1(maskedDB)` and a random `hLen`-byte `seed`; returns
/// `c = EM^e mod N` as `k` bytes.
///
/// # Errors
/// [`Error::InvalidParameters`] if `message` is longer than [`max_message_len`].
pub fn encrypt<R: CryptoRng + ?Sized>(key: &RsaPublicKey, message: &[u8], rng: &mut R) -> Result<Vec<u8>> {
    if message.len() > max_message_len(key) {
        return Err(Error::InvalidParameters("message too long for RSA-OAEP-SHA256 with this key"));
    }
    let mut seed = Zeroizing::new([0u8; H_LEN]);
    rng.fill_bytes(seed.as_mut());
    let em = encode(key.size(), message, &seed);
    let m = num::from_be(&em, key.precision()).ok_or(Error::InvalidParameters("OAEP encoding does not fit"))?;
    let e = key.exponent().as_ref();
    let c = BoxedMontyForm::new(m, key.params()).pow_bounded_exp(e, e.bits_vartime()).retrieve();
    Ok(num::to_be_fixed(&c, key.size()).to_vec())
}

/// EME-OAEP encoding of `message` into `k` bytes with the given `seed`.
fn encode(k: usize, message: &[u8], seed: &[u8; H_LEN]) -> Zeroizing<Vec<u8>> {
    let mut em = Zeroizing::new(vec![0u8; k]);
    let (head, db) = em.split_at_mut(1 + H_LEN);
    let masked_seed = &mut head[1..];
    db[..H_LEN].copy_from_slice(&label_hash());
    let one_at = db.len() - message.len() - 1;
    db[one_at] = 0x01;
    db[one_at + 1..].copy_from_slice(message);
    xor_mgf1(seed, db);
    masked_seed.copy_from_slice(seed);
    xor_mgf1(db, masked_seed);
    em
}

/// EME-OAEP decoding of `em = I2OSP(y, k)` (for instance [`super::combine::combine`]'s
/// output): recovers `seed = maskedSeed ⊕ MGF1(maskedDB)`, `DB = maskedDB ⊕ MGF1(seed)`, and
/// accepts iff `Y = 0x00`, `DB` starts with `lHash`, and is followed by zero or more `0x00`
/// and then `0x01`; returns the rest, `M`.
///
/// Constant time in `em` up to the length of `M`, which the result reveals anyway: all three
/// checks and the position of the `0x01` are computed with `subtle` over every byte, and
/// combined into one decision at the end.
///
/// # Errors
/// [`Error::OaepDecodingFailed`], the same for every failure, including a wrong length.
pub fn decode(key: &RsaPublicKey, em: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let k = key.size();
    if em.len() != k || k < 2 * H_LEN + 2 {
        return Err(Error::OaepDecodingFailed);
    }
    let mut buf = Zeroizing::new(em.to_vec());
    let (head, db) = buf.split_at_mut(1 + H_LEN);
    let (y, masked_seed) = head.split_at_mut(1);
    xor_mgf1(db, masked_seed);
    xor_mgf1(masked_seed, db);

    let mut good = y[0].ct_eq(&0);
    good &= db[..H_LEN].ct_eq(&label_hash());
    // Scan PS || 0x01 || M: `index` ends at the position of the first 0x01; any other nonzero
    // byte before it is an error.
    let rest = &db[H_LEN..];
    let mut found = subtle::Choice::from(0);
    let mut index: u32 = 0;
    let mut bad_byte = subtle::Choice::from(0);
    for (i, byte) in rest.iter().enumerate() {
        let is_one = byte.ct_eq(&1);
        let is_zero = byte.ct_eq(&0);
        let first_one = is_one & !found;
        index.conditional_assign(&(i as u32), first_one);
        found |= is_one;
        bad_byte |= !found & !is_zero;
    }
    good &= found & !bad_byte;
    if bool::from(good) {
        Ok(Zeroizing::new(rest[index as usize + 1..].to_vec()))
    } else {
        Err(Error::OaepDecodingFailed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mgf1_matches_a_direct_computation() {
        let seed = b"seed";
        let mut mask = [0u8; 40];
        xor_mgf1(seed, &mut mask);
        let first: [u8; 32] = Sha256::new().chain_update(seed).chain_update([0, 0, 0, 0]).finalize().into();
        let second: [u8; 32] = Sha256::new().chain_update(seed).chain_update([0, 0, 0, 1]).finalize().into();
        assert_eq!(&mask[..32], &first);
        assert_eq!(&mask[32..], &second[..8]);
    }
}
