//! Lagrange interpolation in the exponent. Only public values pass through here: node ids and
//! group elements (partials, verification keys), never a share.

use crate::error::{Error, Result};
use crate::keys::NodeId;
use curve25519_dalek::{RistrettoPoint, Scalar, traits::VartimeMultiscalarMul};

/// `λ_i(x) = Π_{j∈S, j≠i} (x − x_j) / (x_i − x_j)` for every `i` in `S = ids`.
///
/// `ids` must be distinct; a repeated id is [`Error::DuplicateNode`].
pub(crate) fn coefficients_at(ids: &[NodeId], x: Scalar) -> Result<Vec<Scalar>> {
    for (k, id) in ids.iter().enumerate() {
        if ids[..k].contains(id) {
            return Err(Error::DuplicateNode { node: *id });
        }
    }
    let xs: Vec<Scalar> = ids.iter().map(|id| id.scalar()).collect();
    let mut numerators = Vec::with_capacity(xs.len());
    let mut denominators = Vec::with_capacity(xs.len());
    for (i, xi) in xs.iter().enumerate() {
        let mut num = Scalar::ONE;
        let mut den = Scalar::ONE;
        for (j, xj) in xs.iter().enumerate() {
            if i != j {
                num *= x - xj;
                den *= xi - xj;
            }
        }
        numerators.push(num);
        denominators.push(den);
    }
    Scalar::invert_batch_alloc(&mut denominators);
    Ok(numerators.iter().zip(&denominators).map(|(n, d)| n * d).collect())
}

/// `Σ λ_i · Y_i`, variable time: only for public points.
pub(crate) fn vartime_combine(coefficients: &[Scalar], points: &[RistrettoPoint]) -> RistrettoPoint {
    RistrettoPoint::vartime_multiscalar_mul(coefficients, points)
}

/// `Y = Σ_{i∈S} λ_i(0) · Y_i` over the set `S` of the given partials.
pub(crate) fn vartime_interpolate_at_zero(partials: &[(NodeId, RistrettoPoint)]) -> Result<RistrettoPoint> {
    let ids: Vec<NodeId> = partials.iter().map(|(id, _)| *id).collect();
    let points: Vec<RistrettoPoint> = partials.iter().map(|(_, p)| *p).collect();
    Ok(vartime_combine(&coefficients_at(&ids, Scalar::ZERO)?, &points))
}
