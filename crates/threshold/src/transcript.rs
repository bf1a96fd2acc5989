//! Domain-separated hashing into scalars and group elements (SHA-512, wide reduction).

use curve25519_dalek::{RistrettoPoint, Scalar, ristretto::CompressedRistretto};
use sha2::{Digest, Sha512};

/// A running SHA-512 hash over length-prefixed, labelled fields.
///
/// Every field is written as `u32be(len label) || label || u32be(len data) || data`, so no two
/// different sequences of fields hash the same.
#[derive(Clone)]
pub(crate) struct Transcript(Sha512);

impl Transcript {
    pub(crate) fn new(domain: &[u8]) -> Self {
        let mut t = Transcript(Sha512::new());
        t.append(b"domain", domain);
        t
    }

    pub(crate) fn append(&mut self, label: &[u8], data: &[u8]) {
        for part in [label, data] {
            self.0.update((part.len() as u32).to_be_bytes());
            self.0.update(part);
        }
    }

    pub(crate) fn append_point(&mut self, label: &[u8], point: &CompressedRistretto) {
        self.append(label, point.as_bytes());
    }

    pub(crate) fn append_u64(&mut self, label: &[u8], value: u64) {
        self.append(label, &value.to_be_bytes());
    }

    /// The 64-byte hash of everything appended.
    pub(crate) fn digest(self) -> [u8; 64] {
        self.finish()
    }

    fn finish(self) -> [u8; 64] {
        let mut out = [0u8; 64];
        out.copy_from_slice(&self.0.finalize());
        out
    }

    /// A scalar uniformly distributed mod ℓ (64 bytes reduced).
    pub(crate) fn challenge_scalar(self) -> Scalar {
        Scalar::from_bytes_mod_order_wide(&self.finish())
    }

    /// A group element with unknown discrete logarithm (Ristretto one-way map on 64 bytes).
    pub(crate) fn hash_to_point(self) -> RistrettoPoint {
        RistrettoPoint::from_uniform_bytes(&self.finish())
    }
}
