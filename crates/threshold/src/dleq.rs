//! Chaum–Pedersen proofs of discrete-log equality: `log_G X = log_H Y`.
//!
//! A node proves that its partial `Y_i = k_i·H` uses the same `k_i` as its public verification
//! key `K_i = k_i·G`. The proof is kept in commitment form `(A, B, s)` rather than `(c, s)` so
//! that many proofs can be checked at once with one multiscalar multiplication. `A` and `B`
//! stay compressed until a proof is checked: a decryption combines first and checks proofs only
//! when the tag fails, so its usual case decompresses one point per partial, not three.

use crate::encoding::{Reader, Writer};
use crate::error::Result;
use crate::keys::Element;
use crate::schnorr::hedged_nonce;
use crate::transcript::Transcript;
use curve25519_dalek::{
    RistrettoPoint, Scalar,
    ristretto::{CompressedRistretto, VartimeRistrettoPrecomputation},
    traits::{IsIdentity, VartimeMultiscalarMul, VartimePrecomputedMultiscalarMul},
};
use rand_core::CryptoRng;
use std::sync::LazyLock;
use zeroize::Zeroizing;

/// ½ modulo the group order.
static HALF: LazyLock<Scalar> = LazyLock::new(|| Scalar::from(2u64).invert());

/// `(A, B, s)` with `A = r·G`, `B = r·H`, `c = H(context, X, H, Y, A, B)`, `s = r + c·x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DleqProof {
    /// As received: decompressed (and so checked to be a point) only by a verification.
    a: CompressedRistretto,
    b: CompressedRistretto,
    s: Scalar,
}

/// The public statement `log_G X = log_H Y` that a proof is about.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Statement<'a> {
    pub(crate) x: &'a Element,
    pub(crate) h: &'a Element,
    pub(crate) y: &'a Element,
}

impl Statement<'_> {
    fn challenge(&self, context: &Transcript, a: &CompressedRistretto, b: &CompressedRistretto) -> Scalar {
        let mut t = context.clone();
        t.append_point(b"X", &self.x.compressed);
        t.append_point(b"H", &self.h.compressed);
        t.append_point(b"Y", &self.y.compressed);
        t.append_point(b"A", a);
        t.append_point(b"B", b);
        t.challenge_scalar()
    }
}

impl DleqProof {
    /// `Y = x·H` together with the proof that it uses the `x` behind `X = x·G`.
    ///
    /// `Y`, `A` and `B` are computed at half their value (the scalars times ½) and compressed
    /// doubled, by dalek's batch compression: one field inversion serves all three, where a
    /// compression alone costs one inverse square root each. Both scalar multiplications by `H`
    /// stay dalek's constant-time ones, and the halved scalars are zeroized like the nonce.
    pub(crate) fn prove_value<R: CryptoRng + ?Sized>(
        secret: &Scalar,
        x: &Element,
        h: &Element,
        context: &Transcript,
        rng: &mut R,
    ) -> (Element, Self) {
        let mut nonce_context = context.clone();
        nonce_context.append_point(b"H", &h.compressed);
        let r = hedged_nonce(secret, &nonce_context, rng);
        let half = *HALF;
        let half_secret = Zeroizing::new(secret * half);
        let half_r = Zeroizing::new(*r * half);
        let halves = [h.point * *half_secret, RistrettoPoint::mul_base(&half_r), h.point * *half_r];
        let [y, a, b] = match RistrettoPoint::double_and_compress_batch(&halves)[..] {
            [y, a, b] => [y, a, b],
            // dalek gives one encoding per point; were it ever otherwise, one by one.
            _ => halves.map(|p| (p + p).compress()),
        };
        let y = Element { point: halves[0] + halves[0], compressed: y };
        let c = Statement { x, h, y: &y }.challenge(context, &a, &b);
        (y, DleqProof { a, b, s: *r + c * secret })
    }

    /// A proof that `log_G X = log_M Z` for the combination `M = Σ d_j·H_j`, `Z = Σ d_j·Y_j` of a
    /// batch ([`vartime_verify_combined`]). The statement is bound by `context` alone, which must
    /// already hold `X`, every `H_j`'s input and every `Y_j`: the weights `d_j` come from it, so
    /// neither `M` nor `Z` needs an encoding of its own (`Z` is never computed here). `B = r·M`
    /// is dalek's constant-time multiplication; `A` and `B` are compressed together.
    pub(crate) fn prove_combined<R: CryptoRng + ?Sized>(
        secret: &Scalar,
        m: &RistrettoPoint,
        context: &Transcript,
        rng: &mut R,
    ) -> Self {
        let r = hedged_nonce(secret, context, rng);
        let half_r = Zeroizing::new(*r * *HALF);
        let halves = [RistrettoPoint::mul_base(&half_r), m * *half_r];
        let [a, b] = match RistrettoPoint::double_and_compress_batch(&halves)[..] {
            [a, b] => [a, b],
            _ => halves.map(|p| (p + p).compress()),
        };
        let c = combined_challenge(context, &a, &b);
        DleqProof { a, b, s: *r + c * secret }
    }

    /// What a partial proven with its batch writes where its own proof would go: zero
    /// commitments and response, which never verify (`−c·X` is no identity for a verification
    /// key), so such a partial sent on fails closed.
    pub(crate) const NONE: DleqProof =
        DleqProof { a: CompressedRistretto([0; 32]), b: CompressedRistretto([0; 32]), s: Scalar::ZERO };

    /// `A` and `B` as points; `None` if either is no valid encoding (the proof is then false).
    fn commitments(&self) -> Option<(RistrettoPoint, RistrettoPoint)> {
        Some((self.a.decompress()?, self.b.decompress()?))
    }

    /// `s·G − c·X == A` and `s·H − c·Y == B`. Variable time: public data only.
    pub(crate) fn vartime_verify(&self, statement: Statement<'_>, context: &Transcript) -> bool {
        let Some((a, b)) = self.commitments() else { return false };
        let c = statement.challenge(context, &self.a, &self.b);
        let lhs_g = RistrettoPoint::vartime_double_scalar_mul_basepoint(&(-c), &statement.x.point, &self.s);
        if lhs_g != a {
            return false;
        }
        let lhs_h = RistrettoPoint::vartime_multiscalar_mul([self.s, -c], [statement.h.point, statement.y.point]);
        lhs_h == b
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.point(&self.a);
        w.point(&self.b);
        w.scalar(&self.s);
    }

    /// This proof with its commitment `A` replaced by 32 bytes that are no point (a field
    /// element above p), for tests of a complaint whose evidence does not decompress.
    #[cfg(feature = "dangerous-testing")]
    pub(crate) fn dangerous_with_unreadable_commitment(self) -> Self {
        DleqProof { a: CompressedRistretto([0xff; 32]), ..self }
    }

    /// Reads `(A, B, s)`: `s` must be canonical; `A` and `B` are checked when the proof is.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self> {
        Ok(DleqProof { a: r.compressed_point()?, b: r.compressed_point()?, s: r.scalar()? })
    }
}

/// `(x·μ_j)·H_j` for every `H_j` and its public factor `μ_j`, each with its canonical encoding:
/// dalek's constant-time multiplications by `x·μ_j/2` (zeroized), compressed doubled in one
/// batch (one field inversion for all). `hs` and `factors` have one entry per value.
pub(crate) fn multiply_all(secret: &Scalar, hs: &[RistrettoPoint], factors: &[Scalar]) -> Vec<Element> {
    let half_secret = Zeroizing::new(secret * *HALF);
    let halves: Vec<RistrettoPoint> = hs
        .iter()
        .zip(factors)
        .map(|(h, mu)| {
            let scaled = Zeroizing::new(*half_secret * mu);
            h * *scaled
        })
        .collect();
    let compressed = RistrettoPoint::double_and_compress_batch(&halves);
    if compressed.len() != halves.len() {
        return halves.iter().map(|p| Element::new(p + p)).collect();
    }
    halves.iter().zip(compressed).map(|(p, compressed)| Element { point: p + p, compressed }).collect()
}

/// A complaint's evidence: the ECDH value `dh = tr·E` of one channel (`tr` the complainer's
/// transport secret, `E` the sender's ephemeral), with a proof that `log_G T = log_E dh`. Shared
/// by the DKG and the RSA reshare, so that both reveal exactly the same kind of value.
pub(crate) fn reveal_dh<R: CryptoRng + ?Sized>(
    transport: &crate::keys::TransportSecret,
    ephemeral: &Element,
    context: &Transcript,
    rng: &mut R,
) -> (Element, DleqProof) {
    let my_key = transport.public_key();
    DleqProof::prove_value(transport.scalar(), &my_key.0, ephemeral, context, rng)
}

/// Checks [`reveal_dh`]'s proof that `dh = tr·E` for the complainer's transport key `T`.
pub(crate) fn vartime_verify_revealed_dh(
    transport: &crate::keys::TransportPublicKey,
    ephemeral: &Element,
    dh: &Element,
    proof: &DleqProof,
    context: &Transcript,
) -> bool {
    proof.vartime_verify(Statement { x: &transport.0, h: ephemeral, y: dh }, context)
}

/// Checks many proofs that share the base `H` at once: with random 128-bit weights `z_j, w_j`,
///
/// `(Σ z_j s_j)·G + (Σ w_j s_j)·H − Σ z_j c_j·X_j − Σ z_j·A_j − Σ w_j c_j·Y_j − Σ w_j·B_j = 0`.
///
/// `G` and every `X_j` are fixed points prepared in `bases` (`G` at index 0, `X_j` at `items[j].0`,
/// which must hold that statement's `X`): a package's verification keys. Only `H`, the `Y_j`
/// and the commitments are multiplied from scratch.
///
/// True iff (except with probability ≈ 2⁻¹²⁸) every proof verifies. On `false`, verify one by one
/// to find the culprits. Variable time: public data only.
pub(crate) fn vartime_verify_batch<R: CryptoRng + ?Sized>(
    bases: &VartimeRistrettoPrecomputation,
    h: &Element,
    items: &[(usize, Statement<'_>, &DleqProof, Transcript)],
    rng: &mut R,
) -> bool {
    let mut fixed = vec![Scalar::ZERO; bases.len()];
    let mut scalars = Vec::with_capacity(1 + 3 * items.len());
    let mut points = Vec::with_capacity(1 + 3 * items.len());
    let mut h_coef = Scalar::ZERO;
    for (x_at, statement, proof, context) in items {
        if statement.h != h || *x_at == 0 || *x_at >= fixed.len() {
            return false;
        }
        let Some((a, b)) = proof.commitments() else { return false };
        let c = statement.challenge(context, &proof.a, &proof.b);
        let z = random_weight(rng);
        let w = random_weight(rng);
        fixed[0] += z * proof.s;
        fixed[*x_at] -= z * c;
        h_coef += w * proof.s;
        scalars.extend([-z, -(w * c), -w]);
        points.extend([a, statement.y.point, b]);
    }
    scalars.push(h_coef);
    points.push(h.point);
    bases.vartime_mixed_multiscalar_mul(&fixed, &scalars, &points).is_identity()
}

fn combined_challenge(context: &Transcript, a: &CompressedRistretto, b: &CompressedRistretto) -> Scalar {
    let mut t = context.clone();
    t.append_point(b"A", a);
    t.append_point(b"B", b);
    t.challenge_scalar()
}

/// Checks a [`DleqProof::prove_combined`] proof for `M = Σ m_j·H_j` and `Z = Σ d_j·Y_j` (`hs`
/// and `ys` give each point with its weight): `s·G − c·X = A` and `s·M − c·Z = B`, as one
/// multiscalar multiplication with a random 128-bit weight `w` on the second,
///
/// `s·G − c·X − A − w·B + Σ (w·s·m_j)·H_j − Σ (w·c·d_j)·Y_j = 0`.
///
/// `G` and `X` come from the prepared `bases` (`X` at `x_at`, never 0). True iff (except with
/// probability ≈ 2⁻¹²⁸) the proof holds. Variable time: public data only.
pub(crate) fn vartime_verify_combined<R: CryptoRng + ?Sized>(
    bases: &VartimeRistrettoPrecomputation,
    x_at: usize,
    hs: &[(RistrettoPoint, Scalar)],
    ys: &[(RistrettoPoint, Scalar)],
    proof: &DleqProof,
    context: &Transcript,
    rng: &mut R,
) -> bool {
    if x_at == 0 || x_at >= bases.len() || hs.len() != ys.len() || hs.is_empty() {
        return false;
    }
    let Some((a, b)) = proof.commitments() else { return false };
    let c = combined_challenge(context, &proof.a, &proof.b);
    let w = random_weight(rng);
    let mut fixed = vec![Scalar::ZERO; bases.len()];
    fixed[0] = proof.s;
    fixed[x_at] = -c;
    let (ws, wc) = (w * proof.s, w * c);
    let mut scalars = Vec::with_capacity(2 + 2 * hs.len());
    let mut points = Vec::with_capacity(2 + 2 * hs.len());
    scalars.extend([-Scalar::ONE, -w]);
    points.extend([a, b]);
    for ((h, m), (y, d)) in hs.iter().zip(ys) {
        scalars.extend([ws * m, -(wc * d)]);
        points.extend([*h, *y]);
    }
    bases.vartime_mixed_multiscalar_mul(&fixed, &scalars, &points).is_identity()
}

/// A 128-bit weight taken from a transcript: public and reproducible, for combining a batch.
pub(crate) fn derived_weight(t: Transcript) -> Scalar {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&t.digest()[..16]);
    Scalar::from_bytes_mod_order(bytes)
}

fn random_weight<R: CryptoRng + ?Sized>(rng: &mut R) -> Scalar {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes[..16]);
    Scalar::from_bytes_mod_order(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The halved-then-doubled computation gives `Y = x·H` with its canonical encoding, and a
    /// proof that verifies for `Y` and for no other value.
    #[test]
    fn a_value_and_its_proof_computed_at_half_are_the_value_and_a_valid_proof() {
        let mut rng = rand::rng();
        let context = Transcript::new(b"hyok/test/dleq");
        for _ in 0..8 {
            let secret = Scalar::random(&mut rng);
            let x = Element::new(RistrettoPoint::mul_base(&secret));
            let h = Element::new(RistrettoPoint::random(&mut rng));
            let (y, proof) = DleqProof::prove_value(&secret, &x, &h, &context, &mut rng);
            assert!(y == Element::new(h.point * secret), "Y is x·H, canonically encoded");
            assert!(proof.vartime_verify(Statement { x: &x, h: &h, y: &y }, &context));
            let other = Element::new(y.point + RistrettoPoint::mul_base(&Scalar::ONE));
            assert!(!proof.vartime_verify(Statement { x: &x, h: &h, y: &other }, &context));
            let elsewhere = Transcript::new(b"hyok/test/other");
            assert!(!proof.vartime_verify(Statement { x: &x, h: &h, y: &y }, &elsewhere));
        }
    }
}
