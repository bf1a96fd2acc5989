//! Lagrange interpolation in the exponent. Only public values pass through here: node ids and
//! group elements (partials, verification keys), never a share.

use crate::error::{Error, Result};
use crate::keys::NodeId;
use curve25519_dalek::{RistrettoPoint, Scalar, traits::VartimeMultiscalarMul};

/// `λ_i(x) = Π_{j∈S, j≠i} (x − x_j) / (x_i − x_j)` for every `i` in `S = ids`.
///
/// `ids` must be distinct; a repeated id is [`Error::DuplicateNode`]. The denominators are
/// products of differences of node ids, which are small integers: their inverses come from a
/// table ([`small_inverse`]), so the usual case inverts nothing (an inversion costs as much as
/// a third of a combine). Ids farther apart than the table reaches are inverted as a batch.
pub(crate) fn coefficients_at(ids: &[NodeId], x: Scalar) -> Result<Vec<Scalar>> {
    for (k, id) in ids.iter().enumerate() {
        if ids[..k].contains(id) {
            return Err(Error::DuplicateNode { node: *id });
        }
    }
    let numerator = |i: usize| {
        ids.iter().enumerate().filter(|(j, _)| *j != i).fold(Scalar::ONE, |acc, (_, xj)| acc * (x - xj.scalar()))
    };
    let from_table: Option<Vec<Scalar>> = ids
        .iter()
        .enumerate()
        .map(|(i, xi)| {
            ids.iter().enumerate().filter(|(j, _)| *j != i).try_fold(numerator(i), |acc, (_, xj)| {
                small_inverse(i32::from(xi.get()) - i32::from(xj.get())).map(|inv| acc * inv)
            })
        })
        .collect();
    if let Some(coefficients) = from_table {
        return Ok(coefficients);
    }
    Ok(inverted_in_a_batch(ids, numerator))
}

/// `1/λ_i(0) = Π_{j∈S, j≠i} (x_i − x_j)/(−x_j)` for every `i` in `S = ids` (distinct ids), from
/// the table of small inverses; `None` if an id is past the table's reach.
pub(crate) fn inverse_coefficients_at_zero(ids: &[NodeId]) -> Option<Vec<Scalar>> {
    ids.iter()
        .enumerate()
        .map(|(i, xi)| {
            ids.iter().enumerate().filter(|(j, _)| *j != i).try_fold(Scalar::ONE, |acc, (_, xj)| {
                small_inverse(-i32::from(xj.get())).map(|inv| acc * (xi.scalar() - xj.scalar()) * inv)
            })
        })
        .collect()
}

/// [`coefficients_at`] by one batch inversion of the denominators, whatever the ids.
fn inverted_in_a_batch(ids: &[NodeId], numerator: impl Fn(usize) -> Scalar) -> Vec<Scalar> {
    let mut denominators: Vec<Scalar> = ids
        .iter()
        .enumerate()
        .map(|(i, xi)| {
            ids.iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .fold(Scalar::ONE, |acc, (_, xj)| acc * (xi.scalar() - xj.scalar()))
        })
        .collect();
    Scalar::invert_batch_alloc(&mut denominators);
    denominators.iter().enumerate().map(|(i, d)| numerator(i) * d).collect()
}

/// How far apart two ids may be for [`small_inverse`] to know the inverse of their difference.
const SMALL_INVERSES: usize = 1024;

/// `1/d` mod ℓ for `0 < |d| < SMALL_INVERSES`, from a table computed once (one batch
/// inversion); `None` otherwise.
fn small_inverse(d: i32) -> Option<Scalar> {
    static TABLE: std::sync::OnceLock<Vec<Scalar>> = std::sync::OnceLock::new();
    let magnitude = usize::try_from(d.unsigned_abs()).ok().filter(|m| (1..SMALL_INVERSES).contains(m))?;
    let table = TABLE.get_or_init(|| {
        let mut inverses: Vec<Scalar> = (1..SMALL_INVERSES as u64).map(Scalar::from).collect();
        Scalar::invert_batch_alloc(&mut inverses);
        inverses
    });
    let inverse = table[magnitude - 1];
    Some(if d < 0 { -inverse } else { inverse })
}

/// `Σ λ_i · Y_i`, variable time: only for public points.
pub(crate) fn vartime_combine(coefficients: &[Scalar], points: &[RistrettoPoint]) -> RistrettoPoint {
    RistrettoPoint::vartime_multiscalar_mul(coefficients, points)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(raw: &[u16]) -> Vec<NodeId> {
        raw.iter().map(|i| NodeId::new(*i).unwrap()).collect()
    }

    #[test]
    fn inverse_coefficients_are_the_coefficients_inverses() {
        for raw in [&[1u16, 2, 3][..], &[5, 1, 3], &[2, 1000, 7, 1023], &[9], &[1, 2, 3, 4, 5, 6, 7]] {
            let set = ids(raw);
            let lambdas = coefficients_at(&set, Scalar::ZERO).unwrap();
            let inverses = inverse_coefficients_at_zero(&set).unwrap();
            for (l, inv) in lambdas.iter().zip(&inverses) {
                assert_eq!(l * inv, Scalar::ONE, "{raw:?}");
            }
        }
        assert!(inverse_coefficients_at_zero(&ids(&[1, 40_000])).is_none(), "past the table: none");
    }

    #[test]
    fn the_table_gives_what_inversion_gives() {
        for raw in [&[1u16, 2, 3][..], &[5, 1, 3], &[2, 1000, 7, 1023], &[1, 1024], &[9], &[1, 2, 3, 4, 5, 6, 7]] {
            let set = ids(raw);
            for x in [Scalar::ZERO, Scalar::from(6u64), Scalar::from(2000u64)] {
                let numerator = |i: usize| {
                    set.iter()
                        .enumerate()
                        .filter(|(j, _)| *j != i)
                        .fold(Scalar::ONE, |acc, (_, xj)| acc * (x - xj.scalar()))
                };
                assert_eq!(coefficients_at(&set, x).unwrap(), inverted_in_a_batch(&set, numerator), "{raw:?}");
            }
        }
        // Ids farther apart than the table reaches still interpolate correctly.
        let far = ids(&[1, 40_000, 65_535]);
        let (a, b) = (Scalar::from(11u64), Scalar::from(5u64));
        let at = |id: NodeId| a + b * id.scalar();
        let lambdas = coefficients_at(&far, Scalar::ZERO).unwrap();
        assert_eq!(lambdas.iter().zip(&far).map(|(l, id)| l * at(*id)).sum::<Scalar>(), a);
        assert_eq!(small_inverse(0), None);
        assert_eq!(small_inverse(-3).unwrap() * Scalar::from(3u64), -Scalar::ONE);
        assert!(matches!(coefficients_at(&ids(&[2, 2]), Scalar::ZERO), Err(Error::DuplicateNode { .. })));
    }
}
