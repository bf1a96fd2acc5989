//! Feldman verifiable secret sharing over Ristretto255, on top of vsss-rs.
//!
//! vsss-rs splits and verifies for `t ≥ 2`; for `t = 1` the polynomial is the constant `f(x) = s`
//! (every node holds the secret, `C = [s·G]`), which vsss-rs refuses, so it is handled here.

use crate::error::{Error, Result};
use crate::keys::NodeId;
use curve25519_dalek::{RistrettoPoint, Scalar, constants::RISTRETTO_BASEPOINT_POINT};
use rand_core::CryptoRng;
use vsss_rs::{DefaultShare, FeldmanVerifierSet, IdentifierPrimeField, ValueGroup, VecFeldmanVerifierSet};
use zeroize::Zeroizing;

type ScalarShare = DefaultShare<IdentifierPrimeField<Scalar>, IdentifierPrimeField<Scalar>>;
type Verifier = ValueGroup<RistrettoPoint>;

/// Sub-shares by recipient, and the Feldman commitments `C_0 … C_{t−1}`.
pub(crate) type Dealing = (Vec<(NodeId, Zeroizing<Scalar>)>, Vec<RistrettoPoint>);

/// Shares `f(i)` for every id in `ids`, and the commitments `C_k = a_k·G` for `k = 0..t`, of a
/// random polynomial `f` of degree `t − 1` with `f(0) = secret`.
pub(crate) fn split<R: CryptoRng + ?Sized>(
    secret: &Scalar,
    threshold: u16,
    ids: &[NodeId],
    rng: &mut R,
) -> Result<Dealing> {
    let t = usize::from(threshold);
    if t == 0 || t > ids.len() {
        return Err(Error::InvalidParameters("threshold must satisfy 1 ≤ t ≤ n"));
    }
    if t == 1 {
        let shares = ids.iter().map(|id| (*id, Zeroizing::new(*secret))).collect();
        return Ok((shares, vec![RistrettoPoint::mul_base(secret)]));
    }
    let identifiers = ids.iter().map(|id| IdentifierPrimeField(id.scalar()));
    let (shares, verifiers) = vsss_rs::feldman::split_secret_with_ids::<ScalarShare, Verifier>(
        t,
        ids.len(),
        &IdentifierPrimeField(*secret),
        None,
        &mut *rng,
        identifiers,
    )
    .map_err(|_| Error::InvalidParameters("secret sharing failed"))?;
    // vsss-rs returns the generator first, then C_0 … C_{t−1}; shares in the order of `ids`.
    let commitments = verifiers.iter().skip(1).map(|v| v.0).collect();
    let shares = ids.iter().zip(shares).map(|(id, s)| (*id, Zeroizing::new(s.value.0))).collect();
    Ok((shares, commitments))
}

/// Feldman's check: `share·G == Σ_k C_k·i^k`.
pub(crate) fn verify(commitments: &[RistrettoPoint], id: NodeId, share: &Scalar) -> bool {
    match commitments {
        [] => false,
        [c0] => RistrettoPoint::mul_base(share) == *c0,
        _ => {
            let mut set = Vec::with_capacity(commitments.len() + 1);
            set.push(ValueGroup(RISTRETTO_BASEPOINT_POINT));
            set.extend(commitments.iter().map(|c| ValueGroup(*c)));
            let set = VecFeldmanVerifierSet::<ScalarShare, Verifier>::from(set);
            let share =
                ScalarShare { identifier: IdentifierPrimeField(id.scalar()), value: IdentifierPrimeField(*share) };
            set.verify_share(&share).is_ok()
        }
    }
}

/// `Σ_k C_k·x^k`, the public image of `f(x)`. Variable time: public data only.
pub(crate) fn vartime_evaluate(commitments: &[RistrettoPoint], x: Scalar) -> RistrettoPoint {
    use curve25519_dalek::traits::VartimeMultiscalarMul;
    let mut powers = Vec::with_capacity(commitments.len());
    let mut p = Scalar::ONE;
    for _ in commitments {
        powers.push(p);
        p *= x;
    }
    RistrettoPoint::vartime_multiscalar_mul(&powers, commitments)
}
