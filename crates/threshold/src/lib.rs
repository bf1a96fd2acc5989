//! Threshold cryptography for hyok, on Ristretto255. Pure math: no I/O, no clocks, no global
//! RNG — randomness comes in as `&mut impl CryptoRng`, and callers move the bytes.
//!
//! A root key `k` exists only as Shamir shares `k_i = f(i)`; every operation is combined *in the
//! exponent* from `t` partial results `Y_i = k_i·H`, so no code here rebuilds `k`.
//!
//! # Layout
//! - [`keys`]: types by role — [`NodeId`], [`KeyShare`] (secret), [`VerificationKey`] (`K_i`),
//!   [`GroupPublicKey`] (`K`), [`PublicKeyPackage`], and a node's long-term keys, one type pair
//!   per purpose (identity, DKG transport, seal, audit).
//! - [`node_keys`]: [`NodeSecrets`] (all of a node's long-term secrets) and the
//!   [`SignedKeyBundle`] that certifies its public keys under its identity key.
//! - [`dkg`]: distributed key generation, a per-node state machine (`part1` → `round1` →
//!   `round2` → [`dkg::Output`]).
//! - [`reshare`]: verifiable resharing of a key to new holders and a new threshold, same group
//!   key (`deal` → `receive` → `finish` → [`reshare::Output`]).
//! - [`dprf`]: the distributed PRF `k·H(x)`: node [`dprf::evaluate`], coordinator
//!   [`dprf::combine`] / [`dprf::combine_unchecked`], batch verification.
//! - [`aead`]: AES-256-GCM keyed by the DPRF; detached (XKS) and [`aead::Blob`] (gRPC) forms.
//! - [`kem`]: threshold ElGamal envelope wrapping, offline [`kem::wrap`] and threshold unwrap.
//! - [`partial`]: [`PartialEvaluation`] and the two combine strategies.
//! - [`rsa`]: Shoup threshold RSA decryption with OAEP-SHA256 (DKE): dealer, node partials,
//!   combine with the `y^e ≡ c` check, on crypto-bigint.
//! - [`audit_head`]: a node's audit chain head signed with its audit key.
//! - [`manifest`]: the pinned cluster [`Manifest`] (nodes, identity keys, `t`, coordinator
//!   certificate keys), pure data with a canonical encoding.
//! - [`encoding`]: the versioned wire format ([`Wire`]).
//! - internal: `vss` (the verifiable dealing, complaints and judging that the DKG and resharing
//!   share, bound to a run's transcript), `dleq` (Chaum–Pedersen proofs), `schnorr` (proofs of knowledge, signatures),
//!   `ecies` (ECDH + HKDF key for encrypting to a node's transport or seal key), `lagrange` (interpolation in
//!   the exponent), `feldman` (vsss-rs glue), `transcript`.

pub mod aead;
pub mod audit_head;
pub mod caller;
#[cfg(feature = "dangerous-testing")]
pub mod dealer;
pub mod dkg;
mod dleq;
pub mod dprf;
mod ecies;
pub mod encoding;
pub mod epoch;
mod error;
mod feldman;
pub mod kem;
pub mod keys;
mod lagrange;
pub mod manifest;
pub mod node_keys;
pub mod partial;
pub mod reshare;
pub mod rsa;
mod schnorr;
mod transcript;
mod vss;

pub use dleq::DleqProof;
pub use encoding::Wire;
pub use error::{Error, Result};
pub use keys::{
    AuditPublicKey, AuditSecret, CallerPublicKey, CallerSecret, GroupPublicKey, IdentityPublicKey, IdentitySecret,
    KeyShare, NodeId, PublicKeyPackage, SealPublicKey, SealSecret, TransportPublicKey, TransportSecret,
    VerificationKey,
};
pub use manifest::Manifest;
pub use node_keys::{KeyBundle, NodeSecrets, SignedKeyBundle};
pub use partial::{Coefficient, DeferredCheck, Opened, PartialEvaluation};
