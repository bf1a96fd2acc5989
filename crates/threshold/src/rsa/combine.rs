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

use super::keys::{RsaPartial, RsaPublicPackage};
use super::{num, oaep};
use crate::error::{Error, Result};
use crate::keys::NodeId;
use crate::partial::Opened;
use crypto_bigint::BoxedUint;
use crypto_bigint::modular::BoxedMontyForm;
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
/// partial that was malformed: wrong length, `0` or `≥ N`). Partials are not proven correct
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
    if c.invert_vartime().into_option().is_none() {
        return Err(bad_ciphertext);
    }
    let (a, b_abs) = package.bezout();
    let combiner = Combiner { package, c_to_b_abs: vartime_pow(&c, b_abs), c, a };

    let mut culprits = Vec::new();
    let mut usable = Vec::with_capacity(partials.len());
    for p in partials {
        match key.vartime_element(p.value()) {
            Some(x) => usable.push((p.node(), BoxedMontyForm::new(x, params))),
            None => culprits.push(p.node()),
        }
    }
    if usable.len() < t {
        return Err(Error::RsaCombineFailed { culprits });
    }

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
                culprits.push(usable[j].0);
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

/// `base^exponent` for a public exponent: time depends on the exponent's bit length only.
fn vartime_pow(base: &BoxedMontyForm, exponent: &BoxedUint) -> BoxedMontyForm {
    base.pow_bounded_exp(exponent, exponent.bits_vartime())
}

struct Combiner<'a> {
    package: &'a RsaPublicPackage,
    c: BoxedMontyForm,
    /// `c^|b|`, the same for every subset.
    c_to_b_abs: BoxedMontyForm,
    a: &'a BoxedUint,
}

impl Combiner<'_> {
    /// `y = w^a · c^b` over the partials `usable[i]` for `i ∈ subset`, if `y^e ≡ c (mod N)`.
    ///
    /// With `b = −|b|` and `w = P / Q`, where `P` collects the `x_i^(2λ_i)` with `λ_i > 0` and
    /// `Q` those with `λ_i < 0` (as `x_i^(2|λ_i|)`): `y = P^a / (Q^a · c^|b|)`, one inversion.
    fn try_subset(&self, usable: &[(NodeId, BoxedMontyForm)], subset: &[usize]) -> Option<BoxedMontyForm> {
        let ids: Vec<u16> = subset.iter().map(|&i| usable[i].0.get()).collect();
        let coefficients = num::vartime_lagrange_at_zero(self.package.delta(), &ids).ok()?;
        let params = self.package.public_key().params();
        let mut positive = BoxedMontyForm::one(params);
        let mut negative = BoxedMontyForm::one(params);
        for (&i, (lambda, is_negative)) in subset.iter().zip(&coefficients) {
            let two_lambda = num::vartime_mul_small(lambda, 2)?;
            let term = vartime_pow(&usable[i].1, &two_lambda);
            if *is_negative {
                negative *= term;
            } else {
                positive *= term;
            }
        }
        let denominator = vartime_pow(&negative, self.a) * &self.c_to_b_abs;
        let y = vartime_pow(&positive, self.a) * denominator.invert_vartime().into_option()?;
        let check = vartime_pow(&y, self.package.public_key().exponent().as_ref());
        (check == self.c).then_some(y)
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
    use super::candidate_subsets;

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
