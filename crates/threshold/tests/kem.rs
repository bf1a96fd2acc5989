//! Threshold KEM: offline wrap, node-side proof check, threshold unwrap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{deal, rng};
use hyok_threshold::kem::{self, WrappedKey};
use hyok_threshold::{Error, NodeId, PartialEvaluation, Wire};

#[test]
fn offline_wrap_then_threshold_unwrap_round_trips() {
    let mut r = rng(1);
    let (_, shares, package) = deal(3, 5, &mut r);
    let data_key = [0x5au8; 32];
    // Wrapping needs only the group key.
    let wrapped = kem::wrap(package.group_key(), &data_key, b"label:db-7", &mut r).unwrap();
    let wrapped = WrappedKey::from_bytes(&wrapped.to_bytes()).unwrap();
    for subset in [[0usize, 1, 2], [2, 3, 4], [0, 2, 4]] {
        let partials: Vec<PartialEvaluation> = subset
            .iter()
            .map(|&i| kem::partial_unwrap(&shares[i], package.group_key(), &wrapped, b"label:db-7", &mut r).unwrap())
            .collect();
        let opened = kem::combine_unwrap(&package, &wrapped, b"label:db-7", &partials).unwrap();
        assert_eq!(&opened.value[..], &data_key[..]);
    }
}

#[test]
fn partial_unwrap_refuses_a_wrapped_key_whose_proof_fails() {
    let mut r = rng(2);
    let (_, shares, package) = deal(2, 3, &mut r);
    let (_, _, other_package) = deal(2, 3, &mut r);
    let gk = package.group_key();
    let wrapped = kem::wrap(gk, b"data key", b"L", &mut r).unwrap();
    let other = kem::wrap(gk, b"data key", b"L", &mut r).unwrap();

    // A wrap for another label, or made for another key, is refused.
    assert_eq!(kem::partial_unwrap(&shares[0], gk, &wrapped, b"M", &mut r).unwrap_err(), Error::InvalidWrapProof);
    let foreign = kem::wrap(other_package.group_key(), b"data key", b"L", &mut r).unwrap();
    assert_eq!(kem::partial_unwrap(&shares[0], gk, &foreign, b"L", &mut r).unwrap_err(), Error::InvalidWrapProof);

    // A forged proof: R from one wrap, proof and ciphertext from another.
    let a = wrapped.to_bytes();
    let b = other.to_bytes();
    let mut spliced = a[..2 + 32].to_vec();
    spliced.extend_from_slice(&b[2 + 32..]);
    let spliced = WrappedKey::from_bytes(&spliced).unwrap();
    assert_eq!(kem::partial_unwrap(&shares[0], gk, &spliced, b"L", &mut r).unwrap_err(), Error::InvalidWrapProof);

    // A point with no proof of knowledge at all (a zero proof) is refused too.
    let mut no_proof = a.clone();
    for byte in &mut no_proof[2 + 32..2 + 32 + 64] {
        *byte = 0;
    }
    let no_proof = WrappedKey::from_bytes(&no_proof).unwrap();
    assert_eq!(kem::partial_unwrap(&shares[0], gk, &no_proof, b"L", &mut r).unwrap_err(), Error::InvalidWrapProof);

    // A modified ciphertext breaks the proof (it is bound to the ciphertext).
    let mut flipped = a.clone();
    let last = flipped.len() - 20;
    flipped[last] ^= 1;
    let flipped = WrappedKey::from_bytes(&flipped).unwrap();
    assert_eq!(kem::partial_unwrap(&shares[0], gk, &flipped, b"L", &mut r).unwrap_err(), Error::InvalidWrapProof);
    assert_eq!(kem::combine_unwrap(&package, &flipped, b"L", &[]).unwrap_err(), Error::InvalidWrapProof);
}

#[test]
fn a_bad_unwrap_partial_is_named_and_skipped() {
    let mut r = rng(3);
    let (_, shares, package) = deal(3, 5, &mut r);
    let wrapped = kem::wrap(package.group_key(), b"0123456789abcdef", b"", &mut r).unwrap();
    let mut partials: Vec<PartialEvaluation> =
        shares.iter().map(|s| kem::partial_unwrap(s, package.group_key(), &wrapped, b"", &mut r).unwrap()).collect();
    partials[0] = partials[0].dangerous_with_value_of(&partials[4]);
    let opened = kem::combine_unwrap(&package, &wrapped, b"", &partials).unwrap();
    assert_eq!(&opened.value[..], b"0123456789abcdef");
    assert_eq!(opened.culprits, vec![NodeId::new(1).unwrap()]);
}

#[test]
fn dprf_partials_do_not_verify_as_unwrap_partials() {
    let mut r = rng(4);
    let (_, shares, package) = deal(2, 3, &mut r);
    let wrapped = kem::wrap(package.group_key(), b"k", b"", &mut r).unwrap();
    let input = hyok_threshold::dprf::DprfInput::random("k", 1, &mut r).unwrap();
    let dprf_partials: Vec<PartialEvaluation> =
        shares.iter().map(|s| hyok_threshold::dprf::evaluate(s, &input, &mut r)).collect();
    let err = kem::combine_unwrap(&package, &wrapped, b"", &dprf_partials).unwrap_err();
    assert_eq!(err, Error::DecryptionFailed { culprits: package.nodes().collect() });
}

#[test]
fn wrap_validates_sizes() {
    let mut r = rng(5);
    let (_, _, package) = deal(1, 1, &mut r);
    assert!(kem::wrap(package.group_key(), b"", b"", &mut r).is_err());
    assert!(kem::wrap(package.group_key(), &[0; 1025], b"", &mut r).is_err());
    assert!(kem::wrap(package.group_key(), &[0; 1024], &[0; 4096], &mut r).is_ok());
    assert!(kem::wrap(package.group_key(), &[0; 1], &[0; 4097], &mut r).is_err());
}
