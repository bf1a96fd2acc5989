//! The node's step: a partial decryption `x_i = c^(2Δ·s_i) mod N`.

use super::keys::{RsaKeyShare, RsaPartial, RsaPublicPackage};
use crate::error::{Error, Result};
use crypto_bigint::ConcatenatingMul;
use zeroize::Zeroizing;

/// Node `i`'s partial decryption of `ciphertext`: `x_i = c^(2Δ·s_i) mod N`, with `Δ = n!`.
///
/// Constant time in the share: the exponent `2Δ·s_i` is a fixed-width integer (the width of
/// `s_i` plus that of `2Δ`, both public), raised by OpenSSL's constant-time Montgomery
/// exponentiation (see [`super::modexp`]). The exponent is zeroized afterwards.
///
/// # Errors
/// [`Error::UnknownNode`] if the share's node is not in `1..=n`; [`Error::Malformed`] unless
/// `ciphertext` is exactly `k` bytes (the length of `N`) encoding `0 < c < N`.
pub fn evaluate(share: &RsaKeyShare, package: &RsaPublicPackage, ciphertext: &[u8]) -> Result<RsaPartial> {
    package.check_node(share.node())?;
    let key = package.public_key();
    // 0 < c < N, checked on the public value.
    key.vartime_element(ciphertext).ok_or(Error::Malformed { what: "RSA ciphertext" })?;
    let exponent = Zeroizing::new(share.secret().concatenating_mul(package.two_delta()));
    let exponent = Zeroizing::new(exponent.to_be_bytes());
    let x = super::modexp::secret_pow(ciphertext, &exponent, &key.modulus_bytes(), key.size())?;
    Ok(RsaPartial::new(share.node(), x.to_vec()))
}
