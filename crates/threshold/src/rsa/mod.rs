//! Threshold RSA decryption after Shoup ("Practical Threshold Signatures", Eurocrypt 2000),
//! adapted from signing to decryption, for Microsoft DKE (RSA-OAEP-256). Pure math, like the
//! rest of this crate.
//!
//! An ordinary RSA key `(N, e, d)` (OpenSSL primes; no safe primes needed) is split once by a
//! dealer into Shamir shares `s_i` of `d` over `Z_φ(N)`; afterwards `d` exists nowhere.
//!
//! | step | who | computes |
//! |---|---|---|
//! | [`deal::deal`] | operator ceremony, once | `s_i = f(i) mod φ(N)`, `f(0) = d` |
//! | [`partial::evaluate`] | node `i` | `x_i = c^(2Δ·s_i) mod N`, constant time |
//! | [`combine::combine`] | coordinator | `y = c^d` from `t` partials, checks `y^e ≡ c` |
//! | [`oaep::decode`] | coordinator | removes OAEP-SHA256 padding, constant time |
//!
//! where `Δ = n!`. [`combine::decrypt`] does the last two steps at once.
//!
//! # Layout
//! - keys (re-exported here): [`RsaPublicKey`] `(N, e)`, [`RsaPublicPackage`] (public: `N`,
//!   `e`, `t`, `n`), [`RsaKeyShare`] (secret `s_i`), [`RsaPartial`] (`x_i`).
//! - [`deal`]: PEM import ([`deal::PrivateKey`]) and the dealer — the one place a whole RSA
//!   private key exists.
//! - [`partial`]: the node's exponentiation.
//! - [`seal`]: a dealt share sealed to its node's seal key, bound to (name, version, node,
//!   package); and [`fingerprint`], the SHA-256 of the key's `SubjectPublicKeyInfo`.
//! - [`combine`]: integer Lagrange interpolation in the exponent, the Euclid step, the check,
//!   and culprit search over other subsets.
//! - [`reshare`]: integer resharing of the shares to new holders and a new `t′`-of-`n′`, with
//!   Feldman commitments in `Z_N^*` and a public constant-term check (`M`, `K` in the package).
//! - [`oaep`]: EME-OAEP with SHA-256 — constant-time decoding, and encryption for clients.
//! - internal: `num` (big-integer helpers on crypto-bigint), `der` (PEM/PKCS#1/PKCS#8 reader and
//!   writer, and the DER `SubjectPublicKeyInfo` behind [`fingerprint`]).

pub mod combine;
pub mod deal;
mod der;
pub mod keygen;
mod keys;
mod modexp;
mod num;
pub mod oaep;
pub mod partial;
pub mod reshare;
pub mod seal;

pub use keys::{
    MAX_MODULUS_BITS, MAX_NODES, MIN_MODULUS_BITS, RsaKeyShare, RsaPartial, RsaPublicKey, RsaPublicPackage, fingerprint,
};
