//! RSA key generation for the key ceremony (`hyokctl rsa create`) and for development token
//! issuers: `N = p·q` with `p`, `q` random probable primes of `bits/2` bits each, `e = 65537`,
//! `d = e^{-1} mod φ(N)`.
//!
//! Like [`super::deal`], this is a place where a whole private key exists, briefly: the ceremony
//! generates, deals and destroys it.
//!
//! # Method (FIPS 186-5 §A.1.3, probable primes)
//! - A candidate is `bits/2` random bits with the top two bits set (so `N` has exactly `bits`
//!   bits) and the low bit set.
//! - It must not be divisible by a prime below [`TRIAL_DIVISION_BOUND`], `p − 1` must not be
//!   divisible by `e` (so `gcd(e, p − 1) = 1`, `e` being prime), and it must pass
//!   [`MILLER_RABIN_ROUNDS`] rounds of Miller–Rabin with random bases: a composite survives
//!   with probability at most `4^-64 = 2^-128` whatever the candidate distribution, more than
//!   FIPS 186-5 Table B.1 asks.
//! - `q` is drawn the same way until `|p − q| > 2^(bits/2 − 100)` (FIPS 186-5 §A.1.3 step 5.4).
//! - `d = (1 + k·φ)/e` with `k = −φ^{-1} mod e`, so `e·d ≡ 1 (mod φ)`; the CRT values are
//!   `d mod (p−1)`, `d mod (q−1)`, `q^{-1} mod p`; the key then passes the consistency checks
//!   of [`PrivateKey`] imports.
//!
//! Arithmetic on a candidate is crypto-bigint's constant-time Montgomery arithmetic. The search
//! itself is not constant time: how many candidates were rejected, and for each rejected one at
//! which test, depends on them — but they are discarded. For the primes kept, the running time
//! reveals only how many Miller–Rabin squarings the witness loop made (the 2-adic valuation of
//! `p − 1`), as in common implementations.

use super::deal::PrivateKey;
use super::der;
use super::num;
use crate::error::{Error, Result};
use crypto_bigint::modular::{BoxedMontyForm, BoxedMontyParams};
use crypto_bigint::{BoxedUint, ConcatenatingMul, Limb, NonZero, Odd, RandomBits};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

/// The public exponent of every generated key.
pub const PUBLIC_EXPONENT: u32 = 65_537;
/// The modulus sizes [`generate`] accepts.
pub const SUPPORTED_BITS: [usize; 3] = [2048, 3072, 4096];
/// Candidates divisible by a prime below this bound are rejected before Miller–Rabin.
pub const TRIAL_DIVISION_BOUND: u32 = 2000;
/// Miller–Rabin rounds per prime: worst-case error `4^-64 = 2^-128`.
pub const MILLER_RABIN_ROUNDS: usize = 64;
/// Candidates tried per prime before giving up (the expected number for a 2048-bit prime is
/// about 700; this bound is only reached with a broken RNG).
const MAX_CANDIDATES: usize = 100_000;

/// Generates an RSA key of `bits` bits (2048, 3072 or 4096) with `e = 65537`, as described in
/// the module documentation.
///
/// # Errors
/// [`Error::InvalidParameters`] for another size, or if the RNG fails or never yields a prime.
pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R, bits: usize) -> Result<PrivateKey> {
    if !SUPPORTED_BITS.contains(&bits) {
        return Err(Error::InvalidParameters("RSA key size must be 2048, 3072 or 4096 bits"));
    }
    let half = u32::try_from(bits / 2).map_err(|_| Error::InvalidParameters("RSA key size"))?;
    let small_primes = small_primes(TRIAL_DIVISION_BOUND);
    let p = Zeroizing::new(random_prime(rng, half, &small_primes)?);
    let q = loop {
        let q = Zeroizing::new(random_prime(rng, half, &small_primes)?);
        if far_apart(&p, &q, half) {
            break q;
        }
    };
    assemble(&p, &q, bits)
}

/// `N`, `d` and the CRT values from the primes, through the checking constructor.
fn assemble(p: &BoxedUint, q: &BoxedUint, bits: usize) -> Result<PrivateKey> {
    let inconsistent = || Error::InvalidParameters("RSA key generation failed");
    let n_precision = num::precision(u32::try_from(bits).map_err(|_| inconsistent())?);
    let n = num::resized(&p.concatenating_mul(q), n_precision);
    if n.bits_vartime() as usize != bits {
        return Err(inconsistent());
    }
    let one = BoxedUint::one_with_precision(p.bits_precision());
    let p1 = Zeroizing::new(p.wrapping_sub(&one));
    let q1 = Zeroizing::new(q.wrapping_sub(&one));
    let phi = Zeroizing::new(num::resized(&p1.concatenating_mul(&*q1), n_precision));

    // d = (1 + k·φ)/e with k = e − (φ mod e)^{-1} mod e: then 1 + k·φ ≡ 1 − 1 ≡ 0 (mod e) and
    // e·d = 1 + k·φ ≡ 1 (mod φ). φ mod e ≠ 0 because e is prime and divides neither p−1 nor q−1.
    let e_limb = NonZero::new(Limb::from(PUBLIC_EXPONENT)).into_option().ok_or_else(inconsistent)?;
    let phi_mod_e = phi.rem_limb(e_limb).0;
    let k = u64::from(PUBLIC_EXPONENT) - pow_mod_u64(phi_mod_e, u64::from(PUBLIC_EXPONENT) - 2, PUBLIC_EXPONENT.into());
    let mut numerator = Zeroizing::new(phi.concatenating_mul(&BoxedUint::from(k)));
    let one_wide = BoxedUint::one_with_precision(numerator.bits_precision());
    numerator.wrapping_add_assign(&one_wide);
    let (d, remainder) = numerator.div_rem_limb(e_limb);
    let d = Zeroizing::new(num::resized(&d, n_precision));
    if remainder.0 != 0 {
        return Err(inconsistent());
    }
    let [dp, dq, qinv] = crt_values(&d, p, q)?;
    let bytes = |x: &BoxedUint| Zeroizing::new(x.to_be_bytes().into_vec());
    let (n, e) = (bytes(&n), bytes(&BoxedUint::from(u64::from(PUBLIC_EXPONENT))));
    let (d, p, q, dp, dq, qinv) = (bytes(&d), bytes(p), bytes(q), bytes(&dp), bytes(&dq), bytes(&qinv));
    PrivateKey::from_parts(der::Pkcs1 { n: &n, e: &e, d: &d, p: &p, q: &q, dp: &dp, dq: &dq, qinv: &qinv })
}

/// `[d mod (p−1), d mod (q−1), q^{-1} mod p]`, in constant time; each at the precision of `p`.
pub(crate) fn crt_values(d: &BoxedUint, p: &BoxedUint, q: &BoxedUint) -> Result<[Zeroizing<BoxedUint>; 3]> {
    let inconsistent = || Error::InvalidParameters("RSA private key is inconsistent");
    let precision = p.bits_precision().max(q.bits_precision()).max(d.bits_precision());
    let (p, q, d) = (
        Zeroizing::new(num::resized(p, precision)),
        Zeroizing::new(num::resized(q, precision)),
        num::resized(d, precision),
    );
    let d = Zeroizing::new(d);
    let one = BoxedUint::one_with_precision(precision);
    let nonzero = |x: BoxedUint| NonZero::new(x).into_option().map(Zeroizing::new).ok_or_else(inconsistent);
    let p1 = nonzero(p.wrapping_sub(&one))?;
    let q1 = nonzero(q.wrapping_sub(&one))?;
    let p_nz = nonzero((*p).clone())?;
    let dp = Zeroizing::new(d.rem(&*p1));
    let dq = Zeroizing::new(d.rem(&*q1));
    let q_mod_p = Zeroizing::new(q.rem(&*p_nz));
    let p_odd = Odd::new((*p).clone()).into_option().map(Zeroizing::new).ok_or_else(inconsistent)?;
    let qinv = q_mod_p.invert_odd_mod(&p_odd).into_option().map(Zeroizing::new).ok_or_else(inconsistent)?;
    let small = |x: &BoxedUint| Zeroizing::new(num::resized(x, num::precision(p.bits())));
    Ok([small(&dp), small(&dq), small(&qinv)])
}

/// `base^exponent mod modulus` for a public exponent and a small modulus: square-and-multiply
/// over the exponent's bits, so the time depends on the exponent only.
fn pow_mod_u64(base: u64, exponent: u64, modulus: u64) -> u64 {
    let mut result = 1u64;
    let mut power = base % modulus;
    let mut e = exponent;
    while e > 0 {
        if e & 1 == 1 {
            result = result * power % modulus;
        }
        power = power * power % modulus;
        e >>= 1;
    }
    result
}

/// `|p − q| > 2^(half − 100)`: of `p − q` and `q − p` (wrapping), the smaller one is the true
/// difference, and `bits()` is constant time.
fn far_apart(p: &BoxedUint, q: &BoxedUint, half: u32) -> bool {
    let a = Zeroizing::new(p.wrapping_sub(q));
    let b = Zeroizing::new(q.wrapping_sub(p));
    a.bits().min(b.bits()) > half - 100
}

/// The odd primes below `bound` (sieve of Eratosthenes; public).
fn small_primes(bound: u32) -> Vec<u32> {
    let size = bound as usize;
    let mut composite = vec![false; size];
    let mut primes = Vec::new();
    for i in 3..size {
        if !composite[i] && i % 2 == 1 {
            primes.push(i as u32);
            let mut j = i * i;
            while j < size {
                composite[j] = true;
                j += i;
            }
        }
    }
    primes
}

/// A random `bits`-bit probable prime `w` with the top two bits set, `e ∤ w − 1`.
fn random_prime<R: CryptoRng + ?Sized>(rng: &mut R, bits: u32, small_primes: &[u32]) -> Result<BoxedUint> {
    let precision = num::precision(bits);
    let rng_failed = || Error::InvalidParameters("random sampling failed");
    let one = BoxedUint::one_with_precision(precision);
    let mask = one.shl(bits - 1).bitor(&one.shl(bits - 2)).bitor(&one);
    let e_limb = NonZero::new(Limb::from(PUBLIC_EXPONENT)).into_option().ok_or_else(rng_failed)?;
    for _ in 0..MAX_CANDIDATES {
        let raw =
            Zeroizing::new(BoxedUint::try_random_bits_with_precision(rng, bits, precision).map_err(|_| rng_failed())?);
        let candidate = Zeroizing::new(raw.bitor(&mask));
        let divisible = small_primes
            .iter()
            .any(|&s| NonZero::new(Limb::from(s)).into_option().is_some_and(|s| candidate.rem_limb(s).0 == 0));
        if divisible {
            continue;
        }
        let minus_one = Zeroizing::new(candidate.wrapping_sub(&one));
        if minus_one.rem_limb(e_limb).0 == 0 {
            continue;
        }
        if miller_rabin(&candidate, rng)? {
            return Ok((*candidate).clone());
        }
    }
    Err(Error::InvalidParameters("no prime found; is the RNG broken?"))
}

/// [`MILLER_RABIN_ROUNDS`] rounds of Miller–Rabin on the odd `w > 3` with random bases in
/// `[2, 2^(bits(w)−1))`: write `w − 1 = 2^s·m` with `m` odd; `w` passes a round with base `b`
/// if `b^m ≡ ±1` or `b^(2^j·m) ≡ −1` for some `0 < j < s`.
fn miller_rabin<R: CryptoRng + ?Sized>(w: &BoxedUint, rng: &mut R) -> Result<bool> {
    let precision = w.bits_precision();
    let bits = w.bits();
    let Some(odd) = Odd::new(w.clone()).into_option() else {
        return Ok(false);
    };
    let params = BoxedMontyParams::new(odd);
    let w1 = Zeroizing::new(w.wrapping_sub(BoxedUint::one_with_precision(precision)));
    let s = w1.trailing_zeros();
    let m = Zeroizing::new(w1.shr(s));
    let one = BoxedMontyForm::one(&params);
    let minus_one = BoxedMontyForm::new((*w1).clone(), &params);
    let two = BoxedUint::from(2u64);
    'rounds: for _ in 0..MILLER_RABIN_ROUNDS {
        let base = loop {
            let b = BoxedUint::try_random_bits_with_precision(rng, bits - 1, precision)
                .map_err(|_| Error::InvalidParameters("random sampling failed"))?;
            if b.cmp_vartime(num::resized(&two, precision)).is_ge() {
                break b;
            }
        };
        let mut z = BoxedMontyForm::new(base, &params).pow(&m);
        if z == one || z == minus_one {
            continue;
        }
        for _ in 1..s {
            z = z.square();
            if z == minus_one {
                continue 'rounds;
            }
            if z == one {
                return Ok(false);
            }
        }
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::SeedableRng;

    #[test]
    fn small_primes_are_the_odd_primes() {
        let primes = small_primes(30);
        assert_eq!(primes, vec![3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert_eq!(small_primes(TRIAL_DIVISION_BOUND).len(), 302);
    }

    #[test]
    fn pow_mod_u64_inverts_modulo_a_prime() {
        for x in [1u64, 2, 3, 65_536, 12_345] {
            let inverse = pow_mod_u64(x, 65_535, 65_537);
            assert_eq!(x * inverse % 65_537, 1, "{x}");
        }
    }

    #[test]
    fn miller_rabin_tells_primes_from_composites() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(7);
        // Mersenne primes 2^127 − 1 and 2^61 − 1; Carmichael numbers, a product, a Fermat number.
        let m127 = BoxedUint::from_be_slice(&(u128::MAX >> 1).to_be_bytes(), 128).unwrap();
        assert!(miller_rabin(&m127, &mut rng).unwrap());
        assert!(miller_rabin(&BoxedUint::from((1u64 << 61) - 1), &mut rng).unwrap());
        for composite in [561u64, 41_041, 825_265, 321_197_185, 1_000_000_007 * 3, 4_294_967_297] {
            assert!(!miller_rabin(&BoxedUint::from(composite), &mut rng).unwrap(), "{composite}");
        }
    }

    #[test]
    fn unsupported_sizes_are_refused() {
        for bits in [0, 1024, 2047, 2049, 8192] {
            assert!(generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(1), bits).is_err(), "{bits}");
        }
    }
}
