//! DPRF: evaluation, verification (single and batch) and combination in the exponent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{deal, rng, subsets};
use hyok_threshold::dealer::dangerous_evaluate_directly;
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::{Error, NodeId, PartialEvaluation, Wire};
use proptest::prelude::*;

fn partials(shares: &[hyok_threshold::KeyShare], input: &DprfInput, seed: u64) -> Vec<PartialEvaluation> {
    let mut r = rng(seed);
    shares.iter().map(|s| dprf::evaluate(s, input, &mut r)).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_t_subset_combines_to_the_value_of_the_dealt_key(n in 1u16..=12, t_frac in 0.0f64..1.0, seed: u64) {
        let t = 1 + ((f64::from(n) * t_frac) as u16).min(n - 1);
        let mut r = rng(seed);
        let (secret, shares, package) = deal(t, n, &mut r);
        let input = DprfInput::random("key-1", 3, &mut r).unwrap();
        let all = partials(&shares, &input, seed ^ 1);
        let expected = dangerous_evaluate_directly(&secret, &input).compress();
        let mut sets = subsets(usize::from(n), usize::from(t));
        sets.truncate(256);
        for set in sets {
            let chosen: Vec<PartialEvaluation> = set.iter().map(|&i| all[i].clone()).collect();
            let unchecked = dprf::combine_unchecked(&package, &chosen).unwrap();
            let verified = dprf::combine(&package, &input, &chosen, &mut r).unwrap();
            prop_assert!(verified.culprits.is_empty());
            // DprfOutput is opaque; compare through the AEAD it keys.
            let mut a = *b"same plaintext";
            let mut b = *b"same plaintext";
            let tag_a = hyok_threshold::aead::seal_detached(&unchecked, &input, b"", &mut a);
            let tag_b = hyok_threshold::aead::seal_detached(&verified.value, &input, b"", &mut b);
            prop_assert_eq!((a, tag_a), (b, tag_b));
            prop_assert_eq!(hyok_threshold::dealer::dangerous_output_point(&unchecked).compress(), expected);
        }
    }

    #[test]
    fn fewer_than_t_partials_are_refused(n in 2u16..=12, seed: u64) {
        let t = n / 2 + 1;
        let mut r = rng(seed);
        let (_, shares, package) = deal(t, n, &mut r);
        let input = DprfInput::random("k", 1, &mut r).unwrap();
        let all = partials(&shares, &input, seed);
        let short = &all[..usize::from(t) - 1];
        let needed = usize::from(t);
        let got = needed - 1;
        prop_assert_eq!(dprf::combine_unchecked(&package, short).unwrap_err(), Error::NotEnoughPartials { needed, got });
        prop_assert_eq!(dprf::combine(&package, &input, short, &mut r).unwrap_err(), Error::NotEnoughPartials { needed, got });
    }
}

#[test]
fn tampered_partials_are_rejected_and_their_node_named() {
    let mut r = rng(7);
    let (_, shares, package) = deal(3, 5, &mut r);
    let input = DprfInput::random("key", 1, &mut r).unwrap();
    let other_input = DprfInput::random("key", 1, &mut r).unwrap();
    let good = partials(&shares, &input, 1);
    let foreign = partials(&shares, &other_input, 2);
    let n2 = NodeId::new(2).unwrap();
    let n4 = NodeId::new(4).unwrap();

    let tampered: Vec<(&str, PartialEvaluation, NodeId)> = vec![
        ("wrong value", good[1].dangerous_with_value_of(&good[2]), n2),
        ("wrong proof", good[1].dangerous_with_proof_of(&foreign[1]), n2),
        ("wrong node id", good[3].dangerous_with_node(n2), n2),
        ("value for another input", foreign[3].clone(), n4),
    ];
    for (what, bad, culprit) in tampered {
        assert_eq!(dprf::vartime_verify(&package, &input, &bad), Err(Error::InvalidProof { node: culprit }), "{what}");
        let mut set: Vec<PartialEvaluation> = good.iter().filter(|p| p.node() != culprit).cloned().collect();
        set.insert(1, bad);
        assert_eq!(dprf::vartime_find_invalid(&package, &input, &set, &mut r).unwrap(), vec![culprit], "{what}");
        // The verified combine skips the culprit and still gets the right value from the rest.
        let combined = dprf::combine(&package, &input, &set, &mut r).unwrap();
        assert_eq!(combined.culprits, vec![culprit], "{what}");
        let reference = dprf::combine_unchecked(&package, &good).unwrap();
        assert_eq!(
            hyok_threshold::dealer::dangerous_output_point(&combined.value),
            hyok_threshold::dealer::dangerous_output_point(&reference),
            "{what}"
        );
    }
    for p in &good {
        assert_eq!(dprf::vartime_verify(&package, &input, p), Ok(()));
    }
    assert!(dprf::vartime_find_invalid(&package, &input, &good, &mut r).unwrap().is_empty());
}

#[test]
fn batch_verification_names_every_culprit_when_several_cheat() {
    let mut r = rng(8);
    let (_, shares, package) = deal(2, 5, &mut r);
    let input = DprfInput::random("key", 1, &mut r).unwrap();
    let mut set = partials(&shares, &input, 3);
    set[0] = set[0].dangerous_with_value_of(&set[1]);
    set[4] = set[4].dangerous_with_value_of(&set[3]);
    let culprits = dprf::vartime_find_invalid(&package, &input, &set, &mut r).unwrap();
    assert_eq!(culprits, vec![NodeId::new(1).unwrap(), NodeId::new(5).unwrap()]);
}

#[test]
fn duplicate_and_unknown_partials_are_refused() {
    let mut r = rng(9);
    let (_, shares, package) = deal(2, 3, &mut r);
    let (_, foreign_shares, _) = deal(2, 4, &mut r);
    let input = DprfInput::random("key", 1, &mut r).unwrap();
    let p = partials(&shares, &input, 4);
    let dup = vec![p[0].clone(), p[0].clone(), p[1].clone()];
    assert_eq!(dprf::combine_unchecked(&package, &dup).unwrap_err(), Error::DuplicateNode { node: p[0].node() });
    let stranger = dprf::evaluate(&foreign_shares[3], &input, &mut r);
    assert_eq!(dprf::vartime_verify(&package, &input, &stranger), Err(Error::UnknownNode { node: 4 }));
    assert_eq!(
        dprf::combine(&package, &input, &[p[0].clone(), stranger], &mut r).unwrap_err(),
        Error::UnknownNode { node: 4 }
    );
}

#[test]
fn combine_agrees_with_vsss_rs_group_share_combine() {
    use vsss_rs::{GroupShare, IdentifierPrimeField, ReadableShareSet, ValueGroup};
    let mut r = rng(10);
    let (_, shares, package) = deal(3, 5, &mut r);
    let input = DprfInput::random("key", 1, &mut r).unwrap();
    let p = partials(&shares[1..4], &input, 5);
    let ours = hyok_threshold::dealer::dangerous_output_point(&dprf::combine_unchecked(&package, &p).unwrap());
    let theirs: Vec<GroupShare<curve25519_dalek::RistrettoPoint>> = p
        .iter()
        .map(|pe| GroupShare {
            identifier: IdentifierPrimeField(curve25519_dalek::Scalar::from(u64::from(pe.node().get()))),
            value: ValueGroup(hyok_threshold::dealer::dangerous_partial_point(pe)),
        })
        .collect();
    let theirs = theirs.combine().unwrap();
    assert_eq!(ours, theirs.0);
}

#[test]
fn input_validation() {
    assert!(DprfInput::new("", 1, [0; 16]).is_err());
    assert!(DprfInput::new(&"k".repeat(256), 1, [0; 16]).is_err());
    assert!(DprfInput::new(&"k".repeat(255), 1, [0; 16]).is_ok());
}

#[test]
fn encryption_seeds_are_bound_to_key_version_and_nonce_and_pinned() {
    let nonce = [7u8; 16];
    let seed = dprf::encryption_seed("demo", 1, &nonce);
    // Known answer: a change of derivation is a visible, deliberate diff.
    assert_eq!(hex::encode(seed), "002a127bb0c8056f1856f22bb44da6b4");
    assert_ne!(seed, nonce, "the nonce is never the seed");
    assert_ne!(seed, dprf::encryption_seed("demo", 2, &nonce));
    assert_ne!(seed, dprf::encryption_seed("demo2", 1, &nonce));
    assert_ne!(seed, dprf::encryption_seed("demo", 1, &[8u8; 16]));
}

#[test]
fn a_proof_commitment_that_is_no_point_decodes_and_fails_its_proof_naming_the_node() {
    let mut r = rng(10);
    let (_, shares, package) = deal(3, 5, &mut r);
    let input = DprfInput::random("key", 1, &mut r).unwrap();
    let good = partials(&shares, &input, 5);
    let n3 = NodeId::new(3).unwrap();
    // The last 96 bytes are (A, B, s); 0xff… is no Ristretto encoding.
    for at in [96, 64] {
        let mut bytes = good[2].to_bytes();
        let start = bytes.len() - at;
        bytes[start..start + 32].fill(0xff);
        // Proof points are decompressed only when the proof is checked.
        let bad = PartialEvaluation::from_bytes(&bytes).unwrap();
        assert_eq!(dprf::vartime_verify(&package, &input, &bad), Err(Error::InvalidProof { node: n3 }));
        let set = vec![good[0].clone(), bad.clone(), good[3].clone(), good[4].clone()];
        assert_eq!(dprf::vartime_find_invalid(&package, &input, &set, &mut r).unwrap(), vec![n3]);
        assert_eq!(dprf::combine(&package, &input, &set, &mut r).unwrap().culprits, vec![n3]);
        // Its value is intact: a combine that checks the result another way (a decryption's tag)
        // still uses it.
        let unchecked = dprf::combine_unchecked(&package, &[good[0].clone(), bad, good[3].clone()]).unwrap();
        let reference = dprf::combine_unchecked(&package, &good).unwrap();
        assert_eq!(
            hyok_threshold::dealer::dangerous_output_point(&unchecked),
            hyok_threshold::dealer::dangerous_output_point(&reference)
        );
    }
}
