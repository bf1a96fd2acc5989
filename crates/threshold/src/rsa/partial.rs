//! The node's step: a partial decryption `x_i = c^(2Δ·s_i) mod N`.

use super::keys::{RsaKeyShare, RsaPartial, RsaPublicPackage};
use super::num;
use crate::error::{Error, Result};
use crypto_bigint::ConcatenatingMul;
use crypto_bigint::modular::BoxedMontyForm;
use zeroize::Zeroizing;

/// Node `i`'s partial decryption of `ciphertext`: `x_i = c^(2Δ·s_i) mod N`, with `Δ = n!`.
///
/// Constant time in the share: the exponent `2Δ·s_i` is a fixed-width integer (the width of
/// `s_i` plus that of `2Δ`, both public) and the Montgomery exponentiation walks every bit of
/// that width with constant-time table lookups, no secret-dependent branch or early exit. The
/// exponent is zeroized afterwards.
///
/// # Errors
/// [`Error::UnknownNode`] if the share's node is not in `1..=n`; [`Error::Malformed`] unless
/// `ciphertext` is exactly `k` bytes (the length of `N`) encoding `0 < c < N`.
pub fn evaluate(share: &RsaKeyShare, package: &RsaPublicPackage, ciphertext: &[u8]) -> Result<RsaPartial> {
    package.check_node(share.node())?;
    let key = package.public_key();
    let c = key.vartime_element(ciphertext).ok_or(Error::Malformed { what: "RSA ciphertext" })?;
    let exponent = Zeroizing::new(share.secret().concatenating_mul(package.two_delta()));
    let x = BoxedMontyForm::new(c, key.params()).pow(&exponent).retrieve();
    Ok(RsaPartial::new(share.node(), num::to_be_fixed(&x, key.size()).to_vec()))
}
