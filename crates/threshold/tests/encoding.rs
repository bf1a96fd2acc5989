//! Wire encodings: round trips, canonical-only decoding, no panics on hostile bytes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{deal, rng};
use hyok_threshold::dkg::{round1, round2};
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::kem::{self, WrappedKey};
use hyok_threshold::{Error, GroupPublicKey, IdentityPublicKey, KeyShare, PartialEvaluation, PublicKeyPackage, Wire};
use proptest::prelude::*;

#[test]
fn every_wire_type_round_trips() {
    let mut r = rng(1);
    let (_, shares, package) = deal(3, 5, &mut r);
    assert_eq!(PublicKeyPackage::from_bytes(&package.to_bytes()).unwrap(), package);
    let input = DprfInput::random("key.id-1", 9, &mut r).unwrap();
    assert_eq!(DprfInput::from_bytes(&input.to_bytes()).unwrap(), input);
    let partial = dprf::evaluate(&shares[0], &input, &mut r);
    assert_eq!(PartialEvaluation::from_bytes(&partial.to_bytes()).unwrap(), partial);
    let wrapped = kem::wrap(package.group_key(), b"dk", b"l", &mut r).unwrap();
    assert_eq!(WrappedKey::from_bytes(&wrapped.to_bytes()).unwrap(), wrapped);
    let share = KeyShare::from_secret_bytes(&shares[2].to_secret_bytes()).unwrap();
    assert_eq!(share.node(), shares[2].node());
    assert_eq!(share.verification_key(), shares[2].verification_key());
}

#[test]
fn key_share_debug_is_redacted() {
    let (_, shares, _) = deal(2, 2, &mut rng(2));
    let text = format!("{:?}", shares[0]);
    assert!(text.contains("<redacted>"), "{text}");
    let secret_hex: String = shares[0].dangerous_secret().to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert!(!text.contains(&secret_hex[..8]));
    let id = hyok_threshold::IdentitySecret::generate(&mut rng(3));
    assert_eq!(format!("{id:?}"), "IdentitySecret(<redacted>)");
}

#[test]
fn non_canonical_scalars_and_points_are_rejected() {
    let (_, shares, package) = deal(2, 3, &mut rng(4));
    // ℓ itself is the smallest non-canonical scalar encoding.
    let ell: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut bytes = shares[0].to_secret_bytes().to_vec();
    bytes[4..].copy_from_slice(&ell);
    assert_eq!(KeyShare::from_secret_bytes(&bytes).unwrap_err(), Error::Malformed { what: "key share" });
    // A point encoding with the high bit set is never canonical Ristretto.
    let mut gk = *package.group_key().as_bytes();
    gk[31] |= 0x80;
    assert!(GroupPublicKey::from_slice(&gk).is_err());
    assert!(GroupPublicKey::from_slice(&[0xff; 32]).is_err());
    assert!(GroupPublicKey::from_slice(&[0; 31]).is_err());
    // The identity element is no identity key.
    assert!(IdentityPublicKey::from_slice(&[0; 32]).is_err());
}

#[test]
fn versions_tags_truncation_and_trailing_bytes_are_rejected() {
    let mut r = rng(5);
    let (_, shares, package) = deal(2, 3, &mut r);
    let input = DprfInput::random("k", 1, &mut r).unwrap();
    let bytes = dprf::evaluate(&shares[0], &input, &mut r).to_bytes();
    let mut v2 = bytes.clone();
    v2[0] = 2;
    assert_eq!(
        PartialEvaluation::from_bytes(&v2).unwrap_err(),
        Error::UnsupportedVersion { what: "partial evaluation", version: 2 }
    );
    // A partial is not a wrapped key, even with the right version byte.
    assert!(WrappedKey::from_bytes(&bytes).is_err());
    for len in 0..bytes.len() {
        assert!(PartialEvaluation::from_bytes(&bytes[..len]).is_err(), "truncated at {len}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(PartialEvaluation::from_bytes(&long).unwrap_err(), Error::Malformed { what: "partial evaluation" });
    // A package that lies about one verification key does not decode.
    let mut pkg = package.to_bytes();
    let (_, other_shares, _) = deal(2, 3, &mut r);
    let vk_at = 2 + 2 + 2 + 2; // version, tag, t, n, then node id
    pkg[vk_at..vk_at + 32].copy_from_slice(other_shares[0].verification_key().as_bytes());
    assert_eq!(PublicKeyPackage::from_bytes(&pkg).unwrap_err(), Error::InconsistentPackage);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn decoding_arbitrary_bytes_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..600), tag in 0usize..8) {
        if !bytes.is_empty() { bytes[0] = 1; }
        if bytes.len() > 1 { bytes[1] = [0x01, 0x02, 0x10, 0x20, 0x40, 0x50, 0x52, 0x53][tag]; }
        let _ = KeyShare::from_secret_bytes(&bytes);
        let _ = PublicKeyPackage::from_bytes(&bytes);
        let _ = PartialEvaluation::from_bytes(&bytes);
        let _ = DprfInput::from_bytes(&bytes);
        let _ = WrappedKey::from_bytes(&bytes);
        let _ = round1::Package::from_bytes(&bytes);
        let _ = round2::Package::from_bytes(&bytes);
        let _ = hyok_threshold::reshare::DealerPackage::from_bytes(&bytes);
        let _ = hyok_threshold::reshare::ComplaintPackage::from_bytes(&bytes);
        let _ = hyok_threshold::aead::Blob::from_bytes(&bytes);
    }
}
