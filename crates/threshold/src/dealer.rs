//! A trusted dealer, for tests and benchmarks only: it holds the whole secret, which production
//! code never does (keys there come from [`crate::dkg`]).

use crate::error::Result;
use crate::feldman;
use crate::keys::{Element, GroupPublicKey, KeyShare, NodeId, PublicKeyPackage};
use curve25519_dalek::{RistrettoPoint, Scalar};
use rand_core::CryptoRng;

/// Splits `secret` into `t`-of-`n` shares for `ids` and builds the matching public package.
pub fn dangerous_deal<R: CryptoRng + ?Sized>(
    secret: &Scalar,
    threshold: u16,
    ids: &[NodeId],
    rng: &mut R,
) -> Result<(Vec<KeyShare>, PublicKeyPackage)> {
    let (shares, _commitments) = feldman::split(secret, threshold, ids, rng)?;
    let shares: Vec<KeyShare> = shares.into_iter().map(|(id, s)| KeyShare::new(id, *s)).collect();
    let vks = shares.iter().map(|s| (s.node(), s.verification_key())).collect();
    let group_key = GroupPublicKey(Element::new(RistrettoPoint::mul_base(secret)));
    let package = PublicKeyPackage::new(threshold, vks, group_key)?;
    Ok((shares, package))
}

/// `k·P` for a dealt secret `k`: what every `t`-subset of partials must combine to.
pub fn dangerous_evaluate_directly(secret: &Scalar, input: &crate::dprf::DprfInput) -> RistrettoPoint {
    input.hash_to_point() * secret
}

/// The point inside a combined DPRF output, to compare against [`dangerous_evaluate_directly`].
pub fn dangerous_output_point(output: &crate::dprf::DprfOutput) -> RistrettoPoint {
    output.0
}

/// The point `Y_i` inside a partial.
pub fn dangerous_partial_point(partial: &crate::PartialEvaluation) -> RistrettoPoint {
    partial.value_point()
}
