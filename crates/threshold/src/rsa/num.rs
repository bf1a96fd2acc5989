//! Big-integer helpers on [`BoxedUint`], with the precision bookkeeping crypto-bigint wants
//! (operands of one operation share a precision, a multiple of 64 bits).
//!
//! Functions named `vartime_*` only ever see public values (node ids, `n!`, `e`, partials).

use crate::error::{Error, Result};
use crypto_bigint::{BoxedUint, ConcatenatingMul, CtEq, Limb, NonZero, Odd, Resize};
use zeroize::Zeroizing;

/// `bits` rounded up to whole limbs: the precision crypto-bigint gives a `bits`-bit integer.
pub(crate) fn precision(bits: u32) -> u32 {
    bits.div_ceil(Limb::BITS) * Limb::BITS
}

/// `x` at precision `bits`: high limbs dropped or zero-filled, constant time in `x`. The caller
/// guarantees that the value fits.
pub(crate) fn resized(x: &BoxedUint, bits: u32) -> BoxedUint {
    x.resize_unchecked(bits)
}

/// Constant-time `x == y` for integers of possibly different precisions.
pub(crate) fn ct_eq(x: &BoxedUint, y: &BoxedUint) -> bool {
    let width = x.bits_precision().max(y.bits_precision());
    resized(x, width).ct_eq(&resized(y, width)).into()
}

/// A public big-endian integer, leading zeros stripped, at the precision its length needs;
/// `None` if it has more than `max_len` significant bytes.
pub(crate) fn vartime_from_be(bytes: &[u8], max_len: usize) -> Option<BoxedUint> {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    let trimmed = &bytes[start..];
    if trimmed.len() > max_len {
        return None;
    }
    let bits = u32::try_from(trimmed.len() * 8).ok()?.max(Limb::BITS);
    Some(BoxedUint::from_be_slice_truncated(trimmed, bits))
}

/// A big-endian integer at exactly `bits_precision` (constant time in the value); `None` if
/// the bytes do not fit.
pub(crate) fn from_be(bytes: &[u8], bits_precision: u32) -> Option<BoxedUint> {
    BoxedUint::from_be_slice(bytes, bits_precision).ok()
}

/// `I2OSP(x, len)`: the last `len` bytes of `x`'s big-endian encoding. Constant time in `x`;
/// the caller guarantees `x < 256^len` and `len ≤` the precision in bytes.
pub(crate) fn to_be_fixed(x: &BoxedUint, len: usize) -> Zeroizing<Vec<u8>> {
    let full = Zeroizing::new(x.to_be_bytes());
    let start = full.len().saturating_sub(len);
    let mut out = Zeroizing::new(vec![0u8; len - (full.len() - start)]);
    out.extend_from_slice(&full[start..]);
    out
}

/// Minimal big-endian encoding of a public integer (at least one byte).
pub(crate) fn vartime_to_be_minimal(x: &BoxedUint) -> Vec<u8> {
    let bytes = x.to_be_bytes_trimmed_vartime();
    if bytes.is_empty() { vec![0] } else { bytes.into_vec() }
}

/// `x · k` for a small public `k`, in `x`'s precision; `None` on overflow.
pub(crate) fn vartime_mul_small(x: &BoxedUint, k: u64) -> Option<BoxedUint> {
    x.checked_mul(BoxedUint::from(k)).into_option()
}

/// `x / k` for a small public `k` that divides `x` exactly; `None` otherwise.
pub(crate) fn vartime_div_small_exact(x: &BoxedUint, k: u64) -> Option<BoxedUint> {
    let divisor = NonZero::new(Limb::from(k)).into_option()?;
    let (q, r) = x.div_rem_limb(divisor);
    if r == Limb::ZERO { Some(q) } else { None }
}

/// `n! = Δ`, the factor that clears every Lagrange denominator over the ids `1..=n`. Public.
///
/// `log2(n!) < 8n` for `n ≤ 255`, so a precision of `8n + 64` bits always suffices.
pub(crate) fn vartime_factorial(n: u16) -> Result<BoxedUint> {
    let mut acc = BoxedUint::one_with_precision(precision(8 * u32::from(n) + 64));
    for i in 2..=u64::from(n) {
        acc = vartime_mul_small(&acc, i).ok_or(Error::InvalidParameters("n! overflows"))?;
    }
    Ok(acc)
}

/// The extended Euclid step of Shoup's combine: for odd `e` with `gcd(e, 4Δ²M) = 1` (`M` the
/// package's scale, 1 for a dealt key), returns `(a, |b|)` with `a·4Δ²M + b·e = 1`, where
/// `a = (4Δ²M)^{-1} mod e ∈ [1, e)` and hence `b = (1 − a·4Δ²M)/e ≤ 0`. `None` when `4Δ²M` is
/// not invertible modulo `e`. Public values only.
pub(crate) fn vartime_shoup_bezout(
    delta: &BoxedUint,
    scale: &BoxedUint,
    e: &Odd<BoxedUint>,
) -> Option<(BoxedUint, BoxedUint)> {
    let four_delta_sq =
        delta.concatenating_mul(delta).concatenating_mul(BoxedUint::from(4u64)).concatenating_mul(scale);
    let reduced = four_delta_sq.rem_vartime(e.as_nz_ref());
    let a = reduced.invert_odd_mod_vartime(e).into_option()?;
    if bool::from(a.is_zero()) {
        return None;
    }
    let a_times = four_delta_sq.concatenating_mul(&a);
    let numerator = a_times.wrapping_sub(BoxedUint::one());
    let (b_abs, rem) = numerator.div_rem_vartime(e.as_nz_ref());
    if !bool::from(rem.is_zero()) {
        return None;
    }
    Some((a, b_abs))
}

/// Integer Lagrange coefficients at zero, scaled by `Δ` so that they are exact integers:
/// `λ_{0,i}^S = Δ · Π_{j∈S∖{i}} j / (j − i)` for each `i ∈ S`, as `(|λ_i|, λ_i < 0)`.
///
/// `ids` are distinct and in `1..=n`; then `Π_{j≠i} |j − i|` divides `(i−1)!·(n−i)!`, which
/// divides `n! = Δ`, so every division is exact. Public values only.
pub(crate) fn vartime_lagrange_at_zero(delta: &BoxedUint, ids: &[u16]) -> Result<Vec<(BoxedUint, bool)>> {
    let err = Error::InvalidParameters("Lagrange coefficient out of range");
    // |λ_i| ≤ Δ · Π j ≤ Δ · 256^(t−1).
    let bits = delta.bits_precision() + 8 * u32::try_from(ids.len()).map_err(|_| err.clone())? + 64;
    let wide = precision(bits);
    let mut out = Vec::with_capacity(ids.len());
    for &i in ids {
        let mut value = resized(delta, wide);
        let mut negative = false;
        for &j in ids {
            if j == i {
                continue;
            }
            value = vartime_div_small_exact(&value, u64::from(j.abs_diff(i))).ok_or_else(|| err.clone())?;
            if j < i {
                negative = !negative;
            }
        }
        for &j in ids {
            if j != i {
                value = vartime_mul_small(&value, u64::from(j)).ok_or_else(|| err.clone())?;
            }
        }
        out.push((value, negative));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(x: &BoxedUint) -> u128 {
        let bytes = vartime_to_be_minimal(x);
        bytes.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b))
    }

    #[test]
    fn factorial_of_small_numbers() {
        assert_eq!(small(&vartime_factorial(1).unwrap()), 1);
        assert_eq!(small(&vartime_factorial(5).unwrap()), 120);
        assert_eq!(small(&vartime_factorial(20).unwrap()), 2_432_902_008_176_640_000);
        assert!(vartime_factorial(255).unwrap().bits_vartime() > 1600);
    }

    #[test]
    fn lagrange_coefficients_interpolate_a_line_exactly() {
        // f(x) = 7 + 3x, Δ = 5! = 120: Σ λ_i f(i) must equal Δ·f(0) = 840 for every set.
        let delta = vartime_factorial(5).unwrap();
        for ids in [[1u16, 2], [2, 5], [4, 1], [3, 5]] {
            let coeffs = vartime_lagrange_at_zero(&delta, &ids).unwrap();
            let sum: i128 = ids
                .iter()
                .zip(&coeffs)
                .map(|(i, (c, neg))| {
                    let c = small(c) as i128;
                    (if *neg { -c } else { c }) * (7 + 3 * i128::from(*i))
                })
                .sum();
            assert_eq!(sum, 840, "ids {ids:?}");
        }
    }

    #[test]
    fn bezout_coefficients_satisfy_the_identity() {
        let delta = vartime_factorial(5).unwrap();
        let e = Odd::new(BoxedUint::from(65_537u64)).into_option().unwrap();
        let (a, b_abs) = vartime_shoup_bezout(&delta, &BoxedUint::one(), &e).unwrap();
        let (a, b) = (small(&a) as i128, -(small(&b_abs) as i128));
        assert_eq!(a * 4 * 120 * 120 + b * 65_537, 1);
        let three = Odd::new(BoxedUint::from(3u64)).into_option().unwrap();
        assert!(vartime_shoup_bezout(&delta, &BoxedUint::one(), &three).is_none());
        // A scale enters the product: 4·120²·7 and e = 7 share the factor 7.
        let seven = Odd::new(BoxedUint::from(7u64)).into_option().unwrap();
        assert!(vartime_shoup_bezout(&vartime_factorial(2).unwrap(), &BoxedUint::from(7u64), &seven).is_none());
        assert!(vartime_shoup_bezout(&vartime_factorial(2).unwrap(), &BoxedUint::from(5u64), &seven).is_some());
    }
}
