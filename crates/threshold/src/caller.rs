//! Request signatures of the cluster's gRPC callers (applications, `hyokctl`, a front-end's own
//! health check): a caller holds a [`CallerSecret`], every node's operator lists the matching
//! [`CallerPublicKey`] in the node's policy for the keys it may use, and every node checks the
//! signature itself before it computes anything for the request. The coordinator only carries
//! it.
//!
//! The signature is a Schnorr signature over `H("hyok/v1/caller-request", statement)` where the
//! statement is a [`CallerRequest`]: the operation, the key, the version, a subject that binds
//! the request's data (a DPRF seed, or a digest), the time and a fresh nonce.

use crate::encoding::{Reader, Wire, Writer};
use crate::error::{Error, Result};
use crate::keys::{CallerPublicKey, CallerSecret};
use crate::schnorr;
use crate::transcript::Transcript;
use rand_core::CryptoRng;

/// What a caller signs for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerRequest<'a> {
    /// The operation: `encrypt`, `decrypt`, `unwrap` or `rsa-decrypt`.
    pub operation: &'a str,
    /// The key (EC or RSA key name).
    pub key: &'a str,
    /// The key version; 0 means "the primary version" (encryptions only).
    pub version: u32,
    /// What the request is about: the DPRF seed of a decryption, the digest of an encryption's
    /// plaintext and AAD, of a wrapped key and label, or of an RSA ciphertext.
    pub subject: &'a [u8],
    /// When the caller signed, Unix milliseconds.
    pub time_ms: u64,
    /// 16 fresh random bytes.
    pub nonce: &'a [u8; 16],
}

/// A caller's signature over one [`CallerRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallerSignature(schnorr::Proof);

fn context(public: &CallerPublicKey, request: &CallerRequest<'_>) -> Transcript {
    let mut t = Transcript::new(b"hyok/v1/caller-request");
    t.append(b"caller", public.as_bytes());
    t.append(b"operation", request.operation.as_bytes());
    t.append(b"key", request.key.as_bytes());
    t.append_u64(b"version", u64::from(request.version));
    t.append(b"subject", request.subject);
    t.append_u64(b"time", request.time_ms);
    t.append(b"nonce", request.nonce);
    t
}

/// Caller side: signs `request`.
pub fn sign<R: CryptoRng + ?Sized>(secret: &CallerSecret, request: &CallerRequest<'_>, rng: &mut R) -> CallerSignature {
    let public = secret.public_key();
    CallerSignature(schnorr::Proof::prove(secret.scalar(), &public.0, &context(&public, request), rng))
}

/// Node side: checks that `public` signed `request`.
///
/// # Errors
/// [`Error::InvalidCallerSignature`].
pub fn vartime_verify(
    public: &CallerPublicKey,
    request: &CallerRequest<'_>,
    signature: &CallerSignature,
) -> Result<()> {
    if signature.0.vartime_verify(&public.0, &context(public, request)) {
        Ok(())
    } else {
        Err(Error::InvalidCallerSignature)
    }
}

/// `version ‖ 0x08 ‖ signature (64)`.
impl Wire for CallerSignature {
    const NAME: &'static str = "caller signature";
    const TAG: u8 = 0x08;
    fn encode_body(&self, w: &mut Writer) {
        self.0.write(w);
    }
    fn decode_body(r: &mut Reader<'_>) -> Result<Self> {
        Ok(CallerSignature(schnorr::Proof::read(r)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn request<'a>(subject: &'a [u8], nonce: &'a [u8; 16]) -> CallerRequest<'a> {
        CallerRequest { operation: "decrypt", key: "k", version: 2, subject, time_ms: 1_000, nonce }
    }

    #[test]
    fn a_signature_verifies_only_for_its_own_request_and_key() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let secret = CallerSecret::generate(&mut rng);
        let other = CallerSecret::generate(&mut rng);
        let nonce = [7u8; 16];
        let seed = [1u8; 16];
        let sig = sign(&secret, &request(&seed, &nonce), &mut rng);
        assert_eq!(vartime_verify(&secret.public_key(), &request(&seed, &nonce), &sig), Ok(()));
        let decoded = CallerSignature::from_bytes(&sig.to_bytes()).unwrap();
        assert_eq!(vartime_verify(&secret.public_key(), &request(&seed, &nonce), &decoded), Ok(()));
        assert!(vartime_verify(&other.public_key(), &request(&seed, &nonce), &sig).is_err());
        let changes: [CallerRequest<'_>; 6] = [
            CallerRequest { operation: "encrypt", ..request(&seed, &nonce) },
            CallerRequest { key: "k2", ..request(&seed, &nonce) },
            CallerRequest { version: 3, ..request(&seed, &nonce) },
            CallerRequest { subject: &[2u8; 16], ..request(&seed, &nonce) },
            CallerRequest { time_ms: 1_001, ..request(&seed, &nonce) },
            CallerRequest { nonce: &[8u8; 16], ..request(&seed, &nonce) },
        ];
        for changed in &changes {
            assert_eq!(
                vartime_verify(&secret.public_key(), changed, &sig),
                Err(Error::InvalidCallerSignature),
                "{changed:?}"
            );
        }
    }
}
