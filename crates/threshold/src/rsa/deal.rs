//! The dealer: splits an existing RSA private key into Shamir shares of `d`.
//!
//! **This is the one place in hyok where a whole RSA private key exists.** It is used only by
//! the operator's import ceremony (`hyokctl rsa import`), which reads a PEM, deals, hands each
//! node its sealed share and then destroys the key; no node, coordinator or front-end ever
//! holds more than one share. [`PrivateKey`] is zeroized on drop and never printed.
//!
//! The math (Shoup 2000, §2, adapted to decryption): let `m = φ(N) = (p−1)(q−1)`; any `c`
//! coprime to `N` has `c^m ≡ 1 (mod N)`, so exponents only matter modulo `m` (ordinary
//! OpenSSL primes work; safe primes are not needed). The dealer picks
//! `f(X) = d + a_1·X + … + a_{t−1}·X^{t−1}` with `a_k` uniform in `[0, m)` and gives node `i`
//! the share `s_i = f(i) mod m`. For any set `S` of `t` ids and `Δ = n!`, the integers
//! `λ_{0,i}^S = Δ·Π_{j∈S∖{i}} j/(j−i)` satisfy `Σ_{i∈S} λ_{0,i}^S·s_i ≡ Δ·d (mod m)`, which
//! is what [`super::combine`] uses.

use super::der::{self, PemKind};
use super::keys::{RsaKeyShare, RsaPublicKey, RsaPublicPackage};
use super::num;
use crate::error::{Error, Result};
use crate::keys::NodeId;
use crypto_bigint::modular::BoxedMontyForm;
use crypto_bigint::{BoxedUint, ConcatenatingMul, NonZero, RandomBits};
use rand_core::CryptoRng;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Extra random bits drawn per coefficient before reducing modulo `m`, so that the reduction
/// is statistically uniform (bias `< 2^-128`) without rejection sampling (whose running time
/// would depend on the secret `m`).
const EXTRA_BITS: u32 = 128;

/// A whole RSA private key `(N, e, d, p, q)`, imported from a PEM for dealing.
///
/// Zeroized on drop; not `Clone`; `Debug` prints only the public half.
pub struct PrivateKey {
    public: RsaPublicKey,
    d: BoxedUint,
    p: BoxedUint,
    q: BoxedUint,
}

impl PrivateKey {
    /// Imports a PEM: PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`, as written by
    /// `openssl genrsa -traditional`) or unencrypted PKCS#8 (`-----BEGIN PRIVATE KEY-----`,
    /// as written by `openssl genpkey`). Other text around the block is ignored.
    ///
    /// # Errors
    /// [`Error::Malformed`] for anything that is not such a key, [`Error::InvalidParameters`]
    /// for an encrypted, multi-prime or non-`rsaEncryption` key, or one that fails the checks
    /// of [`PrivateKey::from_pkcs1_der`].
    pub fn from_pem(pem: &str) -> Result<Self> {
        let (kind, der) = der::pem_decode(pem)?;
        match kind {
            PemKind::Pkcs1 => Self::from_pkcs1_der(&der),
            PemKind::Pkcs8 => Self::from_pkcs8_der(&der),
        }
    }

    /// Imports a DER PKCS#8 `PrivateKeyInfo` holding an `rsaEncryption` key.
    ///
    /// # Errors
    /// As [`PrivateKey::from_pem`].
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self> {
        Self::from_parts(der::parse_pkcs8(der)?)
    }

    /// Imports a DER PKCS#1 `RSAPrivateKey` (two primes).
    ///
    /// Beyond parsing, checks that the key is consistent, so that a corrupt file cannot be
    /// dealt: `N = p·q`, `2^((p−1)(q−1)) ≡ 1` and `2^(e·d) ≡ 2 (mod N)`.
    ///
    /// # Errors
    /// As [`PrivateKey::from_pem`].
    pub fn from_pkcs1_der(der: &[u8]) -> Result<Self> {
        Self::from_parts(der::parse_pkcs1(der)?)
    }

    /// The key from its PKCS#1 components, checked as [`PrivateKey::from_pkcs1_der`] checks
    /// them. Dealer-only: for [`super::keygen`], which builds a key from fresh primes.
    pub(crate) fn from_parts(parts: der::Pkcs1<'_>) -> Result<Self> {
        let public = RsaPublicKey::from_components(parts.n, parts.e)?;
        let precision = public.precision();
        let secret = |bytes: &[u8]| {
            num::from_be(bytes, precision).map(Zeroizing::new).ok_or(Error::Malformed { what: "RSA private key" })
        };
        let (mut d, mut p, mut q) = (secret(parts.d)?, secret(parts.p)?, secret(parts.q)?);
        let crt = [secret(parts.dp)?, secret(parts.dq)?, secret(parts.qinv)?];
        let (d, p, q) = (std::mem::take(&mut *d), std::mem::take(&mut *p), std::mem::take(&mut *q));
        let key = PrivateKey { d, p, q, public };
        key.check(&crt)?;
        Ok(key)
    }

    /// The key is consistent, in constant time in the secrets: `N = p·q`, `2^φ ≡ 1` and
    /// `2^(e·d) ≡ 2 (mod N)` with `φ = (p−1)(q−1)`, and the CRT values (unused, but a wrong
    /// one means a damaged file) are `d mod (p−1)`, `d mod (q−1)` and `q^{-1} mod p`.
    fn check(&self, [dp, dq, qinv]: &[Zeroizing<BoxedUint>; 3]) -> Result<()> {
        let inconsistent = Error::InvalidParameters("RSA private key is inconsistent");
        let precision = self.public.precision();
        let product = Zeroizing::new(self.p.concatenating_mul(&self.q));
        if !num::ct_eq(&product, self.public.modulus().as_ref()) {
            return Err(inconsistent);
        }
        let nonzero = |x: BoxedUint| NonZero::new(x).into_option().map(Zeroizing::new);
        let one = num::resized(&BoxedUint::one(), precision);
        let (Some(p1), Some(q1), Some(p)) = (
            nonzero(self.p.wrapping_sub(&one)),
            nonzero(self.q.wrapping_sub(&one)),
            nonzero(num::resized(&self.p, 2 * precision)),
        ) else {
            return Err(inconsistent);
        };
        let d_mod_p1 = Zeroizing::new(BoxedUint::rem(&self.d, &*p1));
        let d_mod_q1 = Zeroizing::new(BoxedUint::rem(&self.d, &*q1));
        let q_qinv = Zeroizing::new(self.q.concatenating_mul(&**qinv));
        let q_qinv_mod_p = Zeroizing::new(BoxedUint::rem(&q_qinv, &*p));
        let crt_ok = num::ct_eq(&d_mod_p1, dp) & num::ct_eq(&d_mod_q1, dq) & num::ct_eq(&q_qinv_mod_p, &one);

        let params = self.public.params();
        let two = BoxedMontyForm::new(num::resized(&BoxedUint::from(2u64), precision), params);
        let m = self.phi()?;
        let ed = Zeroizing::new(self.d.concatenating_mul(self.public.exponent().as_ref()));
        let fermat = two.pow(&m) == BoxedMontyForm::one(params);
        let inverse = two.pow(&ed) == two;
        if fermat & inverse & crt_ok { Ok(()) } else { Err(inconsistent) }
    }

    /// `m = φ(N) = (p−1)(q−1)`, at the precision of `N` (it is smaller than `N`).
    fn phi(&self) -> Result<Zeroizing<BoxedUint>> {
        let one = num::resized(&BoxedUint::one(), self.public.precision());
        let p1 = Zeroizing::new(self.p.wrapping_sub(&one));
        let q1 = Zeroizing::new(self.q.wrapping_sub(&one));
        let wide = Zeroizing::new(p1.concatenating_mul(&*q1));
        let m = Zeroizing::new(num::resized(&wide, self.public.precision()));
        if bool::from(m.is_zero()) { Err(Error::InvalidParameters("RSA private key is inconsistent")) } else { Ok(m) }
    }

    /// The key as an unencrypted PKCS#8 `PrivateKeyInfo` (DER), with the PKCS#1 CRT values
    /// recomputed. Zeroized on drop.
    ///
    /// For keys that are never dealt — a development token issuer's signing key, which `ring`
    /// loads with `RsaKeyPair::from_pkcs8` — and for tests. A dealt key must not be exported.
    ///
    /// # Errors
    /// [`Error::InvalidParameters`] if the key is inconsistent (it cannot be: it was checked).
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>> {
        let [dp, dq, qinv] = super::keygen::crt_values(&self.d, &self.p, &self.q)?;
        let bytes = |x: &BoxedUint| Zeroizing::new(x.to_be_bytes().into_vec());
        let (n, e) = (self.public.modulus_bytes(), self.public.exponent_bytes());
        let (d, p, q, dp, dq, qinv) =
            (bytes(&self.d), bytes(&self.p), bytes(&self.q), bytes(&dp), bytes(&dq), bytes(&qinv));
        Ok(der::write_pkcs8(&der::Pkcs1 { n: &n, e: &e, d: &d, p: &p, q: &q, dp: &dp, dq: &dq, qinv: &qinv }))
    }

    /// [`PrivateKey::to_pkcs8_der`] in PEM armour (`-----BEGIN PRIVATE KEY-----`), which
    /// [`PrivateKey::from_pem`] reads back. Zeroized on drop; same caveats.
    ///
    /// # Errors
    /// As [`PrivateKey::to_pkcs8_der`].
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>> {
        Ok(der::pem_encode_pkcs8(&self.to_pkcs8_der()?))
    }

    /// The public half `(N, e)`.
    pub fn public_key(&self) -> &RsaPublicKey {
        &self.public
    }

    /// The ordinary, non-threshold RSA decryption primitive `y = c^d mod N` (RSADP), as `k`
    /// bytes: what every `t`-subset of partials must combine to. Only for tests.
    ///
    /// # Errors
    /// [`Error::Malformed`] unless `ciphertext` is `k` bytes encoding `0 < c < N`.
    #[cfg(feature = "dangerous-testing")]
    pub fn dangerous_decrypt_raw(&self, ciphertext: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        let c = self.public.vartime_element(ciphertext).ok_or(Error::Malformed { what: "RSA ciphertext" })?;
        let y = BoxedMontyForm::new(c, self.public.params()).pow(&self.d).retrieve();
        Ok(num::to_be_fixed(&y, self.public.size()))
    }
}

impl Drop for PrivateKey {
    fn drop(&mut self) {
        self.d.zeroize();
        self.p.zeroize();
        self.q.zeroize();
    }
}
impl ZeroizeOnDrop for PrivateKey {}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("public", &self.public).field("secret", &"<redacted>").finish()
    }
}

/// Splits `key` `threshold`-of-`nodes` among the node ids `1..=nodes`: shares
/// `s_i = f(i) mod m` of the polynomial `f` over `Z_m`, `m = φ(N)`, with `f(0) = d` and the
/// other `t − 1` coefficients uniform in `[0, m)` (see the module documentation), and the
/// public package every party holds.
///
/// Constant time in the key and the coefficients. Returns shares in node order.
///
/// # Errors
/// [`Error::InvalidParameters`] unless `1 ≤ t ≤ n ≤ 255` and `gcd(e, 4·(n!)²) = 1`.
pub fn deal<R: CryptoRng + ?Sized>(
    key: &PrivateKey,
    threshold: u16,
    nodes: u16,
    rng: &mut R,
) -> Result<(Vec<RsaKeyShare>, RsaPublicPackage)> {
    let package = RsaPublicPackage::new(key.public.clone(), threshold, nodes)?;
    let precision = key.public.precision();
    let m = key.phi()?;
    let modulus_at = |bits: u32| -> Result<Zeroizing<NonZero<BoxedUint>>> {
        NonZero::new(num::resized(&m, bits))
            .into_option()
            .map(Zeroizing::new)
            .ok_or(Error::InvalidParameters("RSA private key is inconsistent"))
    };

    // f(X) = Σ a_k X^k with a_0 = d mod m and a_k uniform in [0, m): a_k is drawn with 128
    // more bits than m and reduced (constant time, statistically uniform).
    let mut coefficients: Vec<Zeroizing<BoxedUint>> = Vec::with_capacity(usize::from(threshold));
    coefficients.push(Zeroizing::new(key.d.rem(&*modulus_at(precision)?)));
    let sample_bits = precision + EXTRA_BITS;
    let m_sample = modulus_at(sample_bits)?;
    for _ in 1..threshold {
        let sample = Zeroizing::new(
            BoxedUint::try_random_bits_with_precision(rng, sample_bits, sample_bits)
                .map_err(|_| Error::InvalidParameters("random sampling failed"))?,
        );
        let reduced = Zeroizing::new(sample.rem(&*m_sample));
        coefficients.push(Zeroizing::new(num::resized(&reduced, precision)));
    }

    // Horner at every i: acc ← acc·i + a_k mod m, from the top coefficient down. One extra
    // limb holds acc·i + a_k < 256·m + m.
    let wide = precision + 64;
    let m_wide = modulus_at(wide)?;
    let mut shares = Vec::with_capacity(usize::from(nodes));
    for i in 1..=nodes {
        let mut acc = Zeroizing::new(BoxedUint::zero_with_precision(wide));
        for a in coefficients.iter().rev() {
            let mut next = Zeroizing::new(acc.wrapping_mul(BoxedUint::from(u64::from(i))));
            next.wrapping_add_assign(&**a);
            *acc = next.rem(&*m_wide);
        }
        shares.push(RsaKeyShare::new(NodeId::new(i)?, num::resized(&acc, precision)));
    }
    Ok((shares, package))
}
