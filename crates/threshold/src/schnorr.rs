//! Schnorr proofs of knowledge of a discrete logarithm `x` with `X = x·G`, bound to a context
//! (Fiat–Shamir). Used as the DKG dealer's proof for its constant term, as the signature on
//! DKG messages (the context is the message), and as the KEM's proof of knowledge of `r`.

use crate::encoding::{Reader, Writer};
use crate::error::Result;
use crate::keys::Element;
use crate::transcript::Transcript;
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;
use zeroize::Zeroizing;

/// `(A, z)` with `A = a·G`, `c = H(context, X, A)`, `z = a + c·x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Proof {
    a: Element,
    z: Scalar,
}

fn challenge(context: &Transcript, x: &Element, a: &Element) -> Scalar {
    let mut t = context.clone();
    t.append_point(b"X", &x.compressed);
    t.append_point(b"A", &a.compressed);
    t.challenge_scalar()
}

/// A hedged nonce: hash of the secret, the context and fresh randomness, so that neither a
/// broken RNG nor a repeated context alone can repeat a nonce.
pub(crate) fn hedged_nonce<R: CryptoRng + ?Sized>(
    secret: &Scalar,
    context: &Transcript,
    rng: &mut R,
) -> Zeroizing<Scalar> {
    let mut random = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(random.as_mut());
    let mut t = context.clone();
    t.append(b"nonce-secret", secret.as_bytes());
    t.append(b"nonce-random", random.as_ref());
    Zeroizing::new(t.challenge_scalar())
}

impl Proof {
    pub(crate) fn prove<R: CryptoRng + ?Sized>(
        secret: &Scalar,
        public: &Element,
        context: &Transcript,
        rng: &mut R,
    ) -> Self {
        let nonce = hedged_nonce(secret, context, rng);
        let a = Element::new(RistrettoPoint::mul_base(&nonce));
        let c = challenge(context, public, &a);
        Proof { a, z: *nonce + c * secret }
    }

    /// `z·G − c·X == A`.
    pub(crate) fn vartime_verify(&self, public: &Element, context: &Transcript) -> bool {
        let c = challenge(context, public, &self.a);
        RistrettoPoint::vartime_double_scalar_mul_basepoint(&(-c), &public.point, &self.z) == self.a.point
    }

    /// A proof that verifies for nothing: what someone replaying a point whose logarithm they
    /// do not know can send.
    #[cfg(feature = "dangerous-testing")]
    pub(crate) fn dangerous_forged(public: &Element) -> Self {
        Proof { a: *public, z: Scalar::ONE }
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        self.a.write(w);
        w.scalar(&self.z);
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(Proof { a: Element::read(r)?, z: r.scalar()? })
    }
}
