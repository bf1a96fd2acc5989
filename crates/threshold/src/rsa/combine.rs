//! The coordinator's step: combine `t` partials into `y = c^d mod N`, check it, and name the
//! nodes whose partials are inconsistent.
//!
//! For a set `S` of `t` node ids and `Δ = n!`, the integer Lagrange coefficients
//! `λ_i = λ_{0,i}^S = Δ·Π_{j∈S∖{i}} j/(j−i)` give `Σ_{i∈S} λ_i·s_i ≡ Δ·d (mod m)`, so
//!
//! `w = Π_{i∈S} x_i^(2λ_i) = c^(4Δ·Σ λ_i s_i) = c^(4Δ²·d) (mod N)`
//!
//! (a negative `λ_i` raises the inverse of `x_i`). With `a·4Δ² + b·e = 1` (extended Euclid,
//! `gcd(e, 4Δ²) = 1`), `y = w^a · c^b = c^(d·(4Δ²a + be)) = c^d`, because `e·d ≡ 1` modulo the
//! order of `c`. The combiner then checks `y^e ≡ c (mod N)`: a wrong partial makes it fail
//! (a partial is not proven correct on its own; this check is what catches it).
//!
//! Everything here is public except `y`: exponents (`λ_i`, `a`, `b`, `e`), partials and the
//! ciphertext. So exponentiations are variable-time in their (public) exponents only, while
//! every multiplication is constant-time Montgomery arithmetic, in particular those that form
//! and check `y`.
//!
//! **Cost.** `y` is one multi-exponentiation with the public exponents folded together,
//! `y = Π_{i∈S} x̂_i^(2|λ_i|·a) · (c^{−1})^|b|` with `x̂_i = x_i` for `λ_i > 0` and `x_i^{−1}`
//! otherwise: the squarings are shared by all `t + 1` bases (about `bits(2|λ|·a)` of them,
//! instead of a separate exponentiation per base and two more by `a`). The inverses of `c` and
//! of every partial come from one batched inversion (Montgomery's trick) per call, so a call
//! does exactly one modular inversion however many subsets it tries; a partial that is not
//! invertible modulo `N` (never the case for a correct one, `c` being invertible) is treated
//! as malformed.

use super::keys::{RsaPartial, RsaPublicPackage};
use super::{num, oaep};
use crate::error::{Error, Result};
use crate::keys::NodeId;
use crate::partial::Opened;
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, ConcatenatingMul, MontyForm, MontyMultiplier};
use zeroize::{Zeroize, Zeroizing};

/// How many `t`-subsets [`combine`] tries at most before giving up. Every subset that is a
/// cyclic window of the supplied order is tried first (so any run of up to `k − t` adjacent bad
/// partials, in particular a single bad one, is found within `k` tries), then the others in
/// lexicographic order.
pub const MAX_SUBSETS_TRIED: usize = 1024;

/// Combines partial decryptions of `ciphertext` into the raw RSA decryption `y = c^d mod N`
/// (`k` bytes, zeroized on drop), as described in the module documentation, and checks
/// `y^e ≡ c (mod N)`.
///
/// The first `t` partials are tried first. Only if they fail the check and more than `t` were
/// supplied are other `t`-subsets tried; once one passes, every partial outside it is tested
/// against it, and those that break the check are returned as [`Opened::culprits`] (with any
/// partial that was malformed: wrong length, `0`, `≥ N` or not invertible modulo `N`). Partials are not proven correct
/// individually, so with exactly `t` partials a wrong one is detected but cannot be told
/// apart from the others: ask more nodes.
///
/// # Errors
/// - [`Error::NotEnoughPartials`] for fewer than `t` partials;
/// - [`Error::UnknownNode`] / [`Error::DuplicateNode`] for a node outside `1..=n` or a repeat;
/// - [`Error::Malformed`] unless `ciphertext` is `k` bytes encoding a `c` with `0 < c < N`
///   and `gcd(c, N) = 1`;
/// - [`Error::RsaCombineFailed`] when no `t`-subset passes the check, naming the nodes whose
///   partials were malformed.
pub fn combine(
    package: &RsaPublicPackage,
    ciphertext: &[u8],
    partials: &[RsaPartial],
) -> Result<Opened<Zeroizing<Vec<u8>>>> {
    let t = usize::from(package.threshold());
    if partials.len() < t {
        return Err(Error::NotEnoughPartials { needed: t, got: partials.len() });
    }
    for (k, p) in partials.iter().enumerate() {
        package.check_node(p.node())?;
        if partials[..k].iter().any(|q| q.node() == p.node()) {
            return Err(Error::DuplicateNode { node: p.node() });
        }
    }
    let key = package.public_key();
    let params = key.params();
    let bad_ciphertext = Error::Malformed { what: "RSA ciphertext" };
    let c = BoxedMontyForm::new(key.vartime_element(ciphertext).ok_or(bad_ciphertext.clone())?, params);

    let mut culprits = Vec::new();
    let mut elements = Vec::with_capacity(partials.len());
    for p in partials {
        match key.vartime_element(p.value()) {
            Some(x) => elements.push((p.node(), BoxedMontyForm::new(x, params))),
            None => culprits.push(p.node()),
        }
    }
    // One inversion for `c` and every partial; only if that fails, one per value, to tell a
    // ciphertext sharing a factor with `N` from a partial that does.
    let mut values = vec![&c];
    values.extend(elements.iter().map(|(_, x)| x));
    let (c_inverse, inverses) = match vartime_batch_invert(&values) {
        Some(mut all) => {
            let rest = all.split_off(1);
            (all.swap_remove(0), rest.into_iter().map(Some).collect::<Vec<_>>())
        }
        None => {
            let c_inverse = c.invert_vartime().into_option().ok_or(bad_ciphertext)?;
            (c_inverse, elements.iter().map(|(_, x)| x.invert_vartime().into_option()).collect())
        }
    };
    let mut usable = Vec::with_capacity(elements.len());
    for ((node, x), inverse) in elements.into_iter().zip(inverses) {
        match inverse {
            Some(x_inverse) => usable.push(Usable { node, x, x_inverse }),
            None => culprits.push(node),
        }
    }
    if usable.len() < t {
        return Err(Error::RsaCombineFailed { culprits });
    }
    let (a, b_abs) = package.bezout();
    // A reshared key's |b| (it carries 4Δ²·K·a) is as long as a share: raised once per call,
    // with a window, rather than in every subset's multi-exponentiation.
    let c_to_minus_b = (b_abs.bits_vartime() > FOLD_BITS).then(|| vartime_pow_window(params, &c_inverse, b_abs));
    let combiner = Combiner { package, c, c_inverse, c_to_minus_b, a, b_abs };

    let mut found = None;
    for (attempt, subset) in candidate_subsets(usable.len(), t).take(MAX_SUBSETS_TRIED).enumerate() {
        if let Some(y) = combiner.try_subset(&usable, &subset) {
            found = Some((attempt, subset, y));
            break;
        }
    }
    let Some((attempt, subset, mut y)) = found else {
        return Err(Error::RsaCombineFailed { culprits });
    };
    if attempt > 0 {
        // `subset` is consistent; a partial outside it that breaks the check when swapped in
        // for one of its members is wrong.
        for j in (0..usable.len()).filter(|j| !subset.contains(j)) {
            let mut swapped = subset.clone();
            swapped[0] = j;
            if combiner.try_subset(&usable, &swapped).is_none() {
                culprits.push(usable[j].node);
            }
        }
    }
    culprits.sort();
    let mut integer = y.retrieve();
    let value = num::to_be_fixed(&integer, key.size());
    integer.zeroize();
    y.zeroize();
    Ok(Opened { value, culprits })
}

/// [`combine`], then EME-OAEP decoding (SHA-256, MGF1-SHA-256, empty label) in constant time
/// ([`oaep::decode`]): the RSAES-OAEP decryption of `ciphertext`.
///
/// # Errors
/// Those of [`combine`], and [`Error::OaepDecodingFailed`] (one error for every padding
/// failure) when `y` is not a valid OAEP encoding. The culprits of a combine that succeeded
/// are dropped in that case; call [`combine`] and [`oaep::decode`] separately to keep them.
pub fn decrypt(
    package: &RsaPublicPackage,
    ciphertext: &[u8],
    partials: &[RsaPartial],
) -> Result<Opened<Zeroizing<Vec<u8>>>> {
    let Opened { value, culprits } = combine(package, ciphertext, partials)?;
    let message = oaep::decode(package.public_key(), &value)?;
    Ok(Opened { value: message, culprits })
}

/// The inverses of `values` by Montgomery's trick: one modular inversion and `3(k − 1)`
/// multiplications for `k` values; `None` if one of them is not invertible modulo `N`. For
/// public values only (the inversion is variable time).
fn vartime_batch_invert(values: &[&BoxedMontyForm]) -> Option<Vec<BoxedMontyForm>> {
    let (first, rest) = values.split_first()?;
    // prefix[i] = v_0 · … · v_i
    let mut prefix = Vec::with_capacity(values.len());
    prefix.push((*first).clone());
    for v in rest {
        let next = prefix.last()? * *v;
        prefix.push(next);
    }
    let mut inverse = prefix.last()?.invert_vartime().into_option()?;
    let mut out = vec![BoxedMontyForm::one(first.params()); values.len()];
    // Invariant: inverse = (v_0 · … · v_i)^{-1}.
    for i in (1..values.len()).rev() {
        out[i] = &inverse * &prefix[i - 1];
        inverse *= values[i];
    }
    out[0] = inverse;
    Some(out)
}

/// `Π base_j^(e_j)` for public exponents `e_j`, by simultaneous square-and-multiply
/// (Straus–Shamir): one squaring per bit of the longest exponent, shared by every base, and one
/// multiplication per set exponent bit. Every step is a constant-time Montgomery
/// multiplication in place; only the public exponents decide which steps happen.
fn vartime_multi_pow(params: &BoxedMontyParams, terms: &[(&BoxedMontyForm, &BoxedUint)]) -> BoxedMontyForm {
    let bits = terms.iter().map(|(_, e)| e.bits_vartime()).max().unwrap_or(0);
    let mut acc = BoxedMontyForm::one(params);
    let mut multiplier = <BoxedMontyForm as MontyForm>::Multiplier::from(params);
    let mut started = false;
    for bit in (0..bits).rev() {
        if started {
            multiplier.square_assign(&mut acc);
        }
        for (base, exponent) in terms {
            if exponent.bit_vartime(bit) {
                if started {
                    multiplier.mul_assign(&mut acc, base);
                } else {
                    acc = (*base).clone();
                    started = true;
                }
            }
        }
    }
    acc
}

/// `|b|` up to this many bits (a dealt key's: about `bits(4Δ²)`) is folded into each subset's
/// multi-exponentiation; a longer one is raised once per call.
const FOLD_BITS: u32 = 64;

/// `base^exponent` for a long public exponent, by a sliding window of 5 bits: one squaring per
/// exponent bit and about one multiplication per 6 bits, after a table of the 16 odd powers
/// `base^1, base^3, …, base^31`. Constant-time Montgomery multiplications in place; only the
/// public exponent decides which ones happen.
fn vartime_pow_window(params: &BoxedMontyParams, base: &BoxedMontyForm, exponent: &BoxedUint) -> BoxedMontyForm {
    const WINDOW: u32 = 5;
    let mut multiplier = <BoxedMontyForm as MontyForm>::Multiplier::from(params);
    let mut square = base.clone();
    multiplier.square_assign(&mut square);
    let mut odd_powers = Vec::with_capacity(1 << (WINDOW - 1));
    odd_powers.push(base.clone());
    for k in 1..1usize << (WINDOW - 1) {
        let mut next = odd_powers[k - 1].clone();
        multiplier.mul_assign(&mut next, &square);
        odd_powers.push(next);
    }
    let mut acc: Option<BoxedMontyForm> = None;
    let mut bit = exponent.bits_vartime();
    while bit > 0 {
        if !exponent.bit_vartime(bit - 1) {
            if let Some(acc) = acc.as_mut() {
                multiplier.square_assign(acc);
            }
            bit -= 1;
            continue;
        }
        // The window [low, bit): at most WINDOW bits, its lowest bit set.
        let mut low = bit.saturating_sub(WINDOW);
        while !exponent.bit_vartime(low) {
            low += 1;
        }
        let mut value = 0usize;
        for i in (low..bit).rev() {
            value = (value << 1) | usize::from(exponent.bit_vartime(i));
        }
        match acc.as_mut() {
            Some(acc) => {
                for _ in low..bit {
                    multiplier.square_assign(acc);
                }
                multiplier.mul_assign(acc, &odd_powers[value >> 1]);
            }
            None => acc = Some(odd_powers[value >> 1].clone()),
        }
        bit = low;
    }
    acc.unwrap_or_else(|| BoxedMontyForm::one(params))
}

/// A well-formed partial `x_i` of node `i`, and its inverse.
struct Usable {
    node: NodeId,
    x: BoxedMontyForm,
    x_inverse: BoxedMontyForm,
}

struct Combiner<'a> {
    package: &'a RsaPublicPackage,
    c: BoxedMontyForm,
    c_inverse: BoxedMontyForm,
    /// `(c^{−1})^|b|`, when `|b|` is longer than [`FOLD_BITS`].
    c_to_minus_b: Option<BoxedMontyForm>,
    a: &'a BoxedUint,
    b_abs: &'a BoxedUint,
}

impl Combiner<'_> {
    /// `y = w^a · c^b` over the partials `usable[i]` for `i ∈ subset`, if `y^e ≡ c (mod N)`:
    /// `y = Π x̂_i^(2|λ_i|·a) · (c^{−1})^|b|` as one multi-exponentiation (`b = −|b|`, `x̂_i` the
    /// partial or, for `λ_i < 0`, its inverse).
    fn try_subset(&self, usable: &[Usable], subset: &[usize]) -> Option<BoxedMontyForm> {
        let ids: Vec<u16> = subset.iter().map(|&i| usable[i].node.get()).collect();
        let coefficients = num::vartime_lagrange_at_zero(self.package.delta(), &ids).ok()?;
        let exponents: Vec<BoxedUint> = coefficients
            .iter()
            .map(|(lambda, _)| lambda.concatenating_mul(self.a).shl_vartime(1))
            .collect::<Option<_>>()?;
        let mut terms: Vec<(&BoxedMontyForm, &BoxedUint)> = Vec::with_capacity(subset.len() + 1);
        for ((&i, (_, is_negative)), exponent) in subset.iter().zip(&coefficients).zip(&exponents) {
            let base = if *is_negative { &usable[i].x_inverse } else { &usable[i].x };
            terms.push((base, exponent));
        }
        let params = self.package.public_key().params();
        let mut y = match &self.c_to_minus_b {
            Some(c_to_minus_b) => vartime_multi_pow(params, &terms) * c_to_minus_b,
            None => {
                terms.push((&self.c_inverse, self.b_abs));
                vartime_multi_pow(params, &terms)
            }
        };
        let check = vartime_multi_pow(params, &[(&y, self.package.public_key().exponent().as_ref())]);
        if check == self.c {
            Some(y)
        } else {
            y.zeroize();
            None
        }
    }
}

/// The `t`-subsets of `0..k` (as sorted index lists) in the order [`combine`] tries them:
/// the cyclic windows `{r, r+1, …, r+t−1 mod k}` for `r = 0..k` first (just `{0..t}` when
/// `k = t`), then every other subset in lexicographic order.
fn candidate_subsets(k: usize, t: usize) -> impl Iterator<Item = Vec<usize>> {
    let window = move |r: usize| {
        let mut s: Vec<usize> = (0..t).map(|i| (r + i) % k).collect();
        s.sort_unstable();
        s
    };
    let windows = (0..if k == t { 1 } else { k }).map(window);
    let is_window = move |s: &[usize]| (0..k).any(|r| window(r) == s);
    let mut next = (t <= k).then(|| (0..t).collect::<Vec<usize>>());
    let lexicographic = std::iter::from_fn(move || {
        let current = next.take()?;
        // Advance to the next combination: bump the rightmost index that can move.
        let mut following = current.clone();
        let mut i = t;
        while i > 0 {
            i -= 1;
            if following[i] < k - t + i {
                following[i] += 1;
                for j in i + 1..t {
                    following[j] = following[j - 1] + 1;
                }
                next = Some(following);
                break;
            }
        }
        Some(current)
    });
    windows.chain(lexicographic.filter(move |s| !is_window(s)))
}

#[cfg(test)]
mod tests {
    use super::{candidate_subsets, vartime_batch_invert, vartime_multi_pow};
    use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
    use crypto_bigint::{BoxedUint, Odd, Resize};

    /// Arithmetic modulo the prime `2^127 − 1`.
    fn params() -> BoxedMontyParams {
        let p = BoxedUint::one_with_precision(128).shl_vartime(127).unwrap().wrapping_sub(BoxedUint::one());
        BoxedMontyParams::new_vartime(Odd::new(p).unwrap())
    }

    fn element(x: u64, params: &BoxedMontyParams) -> BoxedMontyForm {
        BoxedMontyForm::new(BoxedUint::from(x).resize_unchecked(128), params)
    }

    #[test]
    fn a_batched_inversion_equals_one_inversion_per_value() {
        let params = params();
        let values: Vec<BoxedMontyForm> =
            [3u64, 5, 1 << 40, 12_345_678_901, 2].iter().map(|&x| element(x, &params)).collect();
        for k in 1..=values.len() {
            let refs: Vec<&BoxedMontyForm> = values[..k].iter().collect();
            let batch = vartime_batch_invert(&refs).unwrap();
            assert_eq!(batch.len(), k);
            for (v, inverse) in values.iter().zip(&batch) {
                assert_eq!(*inverse, v.invert_vartime().unwrap());
                assert_eq!(v * inverse, BoxedMontyForm::one(&params));
            }
        }
        // One value that is not invertible (0) fails the whole batch.
        let zero = element(0, &params);
        assert!(vartime_batch_invert(&[&values[0], &zero, &values[1]]).is_none());
        assert!(vartime_batch_invert(&[]).is_none());
    }

    #[test]
    fn a_multi_exponentiation_equals_the_product_of_single_powers() {
        let params = params();
        let bases: Vec<BoxedMontyForm> = [7u64, 11, 1 << 50, 99_991].iter().map(|&x| element(x, &params)).collect();
        let exponents: Vec<BoxedUint> = [0u64, 1, 65_537, 0xdead_beef_cafe]
            .iter()
            .map(|&e| BoxedUint::from(e))
            .chain([BoxedUint::one_with_precision(256).shl_vartime(200).unwrap()])
            .collect();
        for e1 in &exponents {
            for e2 in &exponents {
                let terms = [(&bases[0], e1), (&bases[1], e2), (&bases[2], e2), (&bases[3], e1)];
                let expected = terms
                    .iter()
                    .fold(BoxedMontyForm::one(&params), |acc, (b, e)| acc * b.pow_bounded_exp(e, e.bits_precision()));
                assert_eq!(vartime_multi_pow(&params, &terms), expected);
                assert_eq!(vartime_multi_pow(&params, &terms[..1]), bases[0].pow_bounded_exp(e1, e1.bits_precision()));
            }
        }
        assert_eq!(vartime_multi_pow(&params, &[]), BoxedMontyForm::one(&params));
    }

    #[test]
    fn a_windowed_power_equals_the_plain_one() {
        let params = params();
        let base = element(123_456_789, &params);
        let mut exponents: Vec<BoxedUint> = (0u64..70).map(BoxedUint::from).collect();
        exponents.extend([u64::MAX, 0x8000_0000_0000_0001, 0xf0f0_0f0f_ffff_0001].map(BoxedUint::from));
        let long = BoxedUint::one_with_precision(2304).shl_vartime(2212).unwrap();
        exponents.push(long.wrapping_add(BoxedUint::from(0x1234_5678_9abc_def1u64).resize_unchecked(2304)));
        exponents.push(long.wrapping_sub(BoxedUint::one()));
        for e in &exponents {
            assert_eq!(super::vartime_pow_window(&params, &base, e), vartime_multi_pow(&params, &[(&base, e)]), "{e}");
            assert_eq!(super::vartime_pow_window(&params, &base, e), base.pow_bounded_exp(e, e.bits_precision()));
        }
    }

    #[test]
    fn candidates_are_every_subset_once_windows_first() {
        let all: Vec<Vec<usize>> = candidate_subsets(5, 3).collect();
        assert_eq!(all.len(), 10);
        assert_eq!(all[0], vec![0, 1, 2]);
        assert_eq!(all[4], vec![0, 1, 4]);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 10);
        // Every index is left out by one of the first five (window) candidates.
        for x in 0..5 {
            assert!(all[..5].iter().any(|s| !s.contains(&x)));
        }
        assert_eq!(candidate_subsets(3, 3).collect::<Vec<_>>(), vec![vec![0, 1, 2]]);
        assert_eq!(candidate_subsets(4, 1).count(), 4);
    }
}
