//! A node's keys per purpose: secrets encode, decode and stay redacted; key bundles verify only
//! for their node under its identity key, and every tampered or foreign bundle is refused.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::rng;
use hyok_threshold::{Error, IdentitySecret, NodeId, NodeSecrets, SignedKeyBundle, Wire};
use proptest::prelude::*;

fn node(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

#[test]
fn every_purpose_has_its_own_key() {
    let s = NodeSecrets::generate(&mut rng(1));
    let keys = [
        *s.identity().public_key().as_bytes(),
        *s.transport().public_key().as_bytes(),
        *s.seal().public_key().as_bytes(),
        *s.audit().public_key().as_bytes(),
    ];
    for i in 0..keys.len() {
        for j in i + 1..keys.len() {
            assert_ne!(keys[i], keys[j], "keys {i} and {j} coincide");
        }
    }
}

#[test]
fn node_secrets_round_trip_and_reject_bad_encodings() {
    let s = NodeSecrets::generate(&mut rng(2));
    let bytes = s.to_secret_bytes();
    assert_eq!(bytes.len(), 2 + 4 * 32);
    let back = NodeSecrets::from_secret_bytes(&bytes).unwrap();
    assert_eq!(back.identity().public_key(), s.identity().public_key());
    assert_eq!(back.transport().public_key(), s.transport().public_key());
    assert_eq!(back.seal().public_key(), s.seal().public_key());
    assert_eq!(back.audit().public_key(), s.audit().public_key());
    // A legacy 32-byte identity is not a NodeSecrets encoding; truncations and a zero key fail.
    assert!(NodeSecrets::from_secret_bytes(&bytes[..32]).is_err());
    for len in 0..bytes.len() {
        assert!(NodeSecrets::from_secret_bytes(&bytes[..len]).is_err(), "length {len}");
    }
    let mut zero_seal = bytes.to_vec();
    zero_seal[2 + 64..2 + 96].fill(0);
    assert!(NodeSecrets::from_secret_bytes(&zero_seal).is_err());
}

#[test]
fn a_legacy_identity_is_kept_and_the_other_keys_are_new() {
    let mut r = rng(3);
    let legacy = IdentitySecret::generate(&mut r);
    let public = legacy.public_key();
    let legacy_bytes = legacy.to_secret_bytes();
    let upgraded = NodeSecrets::from_identity(legacy, &mut r);
    assert_eq!(upgraded.identity().public_key(), public);
    assert_ne!(upgraded.transport().public_key().as_bytes(), public.as_bytes());
    assert_ne!(upgraded.seal().public_key().as_bytes(), public.as_bytes());
    assert_eq!(upgraded.identity().to_secret_bytes(), legacy_bytes);
}

#[test]
fn secrets_never_show_in_debug() {
    let s = NodeSecrets::generate(&mut rng(4));
    assert_eq!(format!("{s:?}"), "NodeSecrets(<redacted>)");
    assert_eq!(format!("{:?}", s.transport()), "TransportSecret(<redacted>)");
    assert_eq!(format!("{:?}", s.seal()), "SealSecret(<redacted>)");
    assert_eq!(format!("{:?}", s.audit()), "AuditSecret(<redacted>)");
}

#[test]
fn a_bundle_verifies_for_its_node_under_its_identity_key_and_round_trips() {
    let mut r = rng(5);
    let s = NodeSecrets::generate(&mut r);
    let signed = s.key_bundle(node(3), &mut r);
    let decoded = SignedKeyBundle::from_bytes(&signed.to_bytes()).unwrap();
    assert_eq!(decoded, signed);
    assert_eq!(decoded.claimed_node(), node(3));
    let keys = decoded.verify(node(3), &s.identity().public_key()).unwrap();
    assert_eq!(keys.node(), node(3));
    assert_eq!(keys.identity(), &s.identity().public_key());
    assert_eq!(keys.transport(), &s.transport().public_key());
    assert_eq!(keys.seal(), &s.seal().public_key());
    assert_eq!(keys.audit(), &s.audit().public_key());
}

#[test]
fn a_bundle_for_another_node_or_under_another_identity_is_refused() {
    let mut r = rng(6);
    let s = NodeSecrets::generate(&mut r);
    let other = NodeSecrets::generate(&mut r);
    let signed = s.key_bundle(node(1), &mut r);
    assert_eq!(
        signed.verify(node(2), &s.identity().public_key()).unwrap_err(),
        Error::InvalidKeyBundle { node: node(2) }
    );
    assert_eq!(
        signed.verify(node(1), &other.identity().public_key()).unwrap_err(),
        Error::InvalidKeyBundle { node: node(1) }
    );
}

#[test]
fn a_bundle_with_any_bit_flipped_is_refused() {
    let mut r = rng(7);
    let s = NodeSecrets::generate(&mut r);
    let identity = s.identity().public_key();
    let bytes = s.key_bundle(node(4), &mut r).to_bytes();
    assert_eq!(bytes.len(), 2 + 2 + 4 * 32 + 64);
    for i in 0..bytes.len() {
        for bit in [0x01u8, 0x80] {
            let mut tampered = bytes.clone();
            tampered[i] ^= bit;
            if let Ok(b) = SignedKeyBundle::from_bytes(&tampered) {
                assert!(b.verify(node(4), &identity).is_err(), "byte {i} bit {bit:#x}");
            }
        }
    }
    for len in 0..bytes.len() {
        assert!(SignedKeyBundle::from_bytes(&bytes[..len]).is_err(), "length {len}");
    }
}

#[test]
fn a_bundle_with_swapped_keys_is_refused() {
    // A relay that swaps the transport and seal keys (both valid points) breaks the signature.
    let mut r = rng(8);
    let s = NodeSecrets::generate(&mut r);
    let mut bytes = s.key_bundle(node(1), &mut r).to_bytes();
    let (transport, seal) = (4 + 32..4 + 64, 4 + 64..4 + 96);
    let t: Vec<u8> = bytes[transport.clone()].to_vec();
    let sl: Vec<u8> = bytes[seal.clone()].to_vec();
    bytes[transport].copy_from_slice(&sl);
    bytes[seal].copy_from_slice(&t);
    let swapped = SignedKeyBundle::from_bytes(&bytes).unwrap();
    assert_eq!(
        swapped.verify(node(1), &s.identity().public_key()).unwrap_err(),
        Error::InvalidKeyBundle { node: node(1) }
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn hostile_bundle_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let s = NodeSecrets::generate(&mut rng(9));
        let mut framed = vec![1u8, 0x06];
        framed.extend_from_slice(&bytes);
        for b in [&bytes[..], &framed[..]] {
            if let Ok(bundle) = SignedKeyBundle::from_bytes(b) {
                prop_assert!(bundle.verify(node(1), &s.identity().public_key()).is_err());
            }
            prop_assert!(NodeSecrets::from_secret_bytes(b).is_err() || b.len() == 130);
        }
    }
}

#[test]
fn stored_secrets_decode_and_a_legacy_identity_is_upgraded() {
    let mut r = rng(10);
    let s = NodeSecrets::generate(&mut r);
    let (back, upgraded) = NodeSecrets::from_stored(&s.to_secret_bytes(), &mut r).unwrap();
    assert!(!upgraded);
    assert_eq!(back.seal().public_key(), s.seal().public_key());
    let legacy = IdentitySecret::generate(&mut r);
    let (up, upgraded) = NodeSecrets::from_stored(&legacy.to_secret_bytes()[..], &mut r).unwrap();
    assert!(upgraded);
    assert_eq!(up.identity().public_key(), legacy.public_key());
    assert!(NodeSecrets::from_stored(&[0u8; 32], &mut r).is_err(), "a zero identity is refused");
    assert!(NodeSecrets::from_stored(&[1u8; 31], &mut r).is_err());
}

#[test]
fn an_audit_head_verifies_only_for_its_node_sequence_hash_and_audit_key() {
    use hyok_threshold::audit_head::{HeadSignature, sign_head, vartime_verify_head};
    let mut rng = rand::rng();
    let secrets = NodeSecrets::generate(&mut rng);
    let other = NodeSecrets::generate(&mut rng);
    let node = NodeId::new(2).unwrap();
    let hash = [9u8; 32];
    let signature = sign_head(secrets.audit(), node, 41, &hash, &mut rng);
    let public = secrets.audit().public_key();
    assert!(vartime_verify_head(&public, node, 41, &hash, &signature).is_ok());
    let decoded = HeadSignature::from_bytes(&signature.to_bytes()).unwrap();
    assert!(vartime_verify_head(&public, node, 41, &hash, &decoded).is_ok());
    // Another node, a truncated or extended chain, another hash, another key: refused.
    assert!(vartime_verify_head(&public, NodeId::new(3).unwrap(), 41, &hash, &signature).is_err());
    assert!(vartime_verify_head(&public, node, 40, &hash, &signature).is_err());
    assert!(vartime_verify_head(&public, node, 42, &hash, &signature).is_err());
    assert!(vartime_verify_head(&public, node, 41, &[8u8; 32], &signature).is_err());
    assert!(vartime_verify_head(&other.audit().public_key(), node, 41, &hash, &signature).is_err());
    // The identity key cannot stand in for the audit key.
    assert!(
        vartime_verify_head(
            &hyok_threshold::AuditPublicKey::from_slice(secrets.identity().public_key().as_bytes()).unwrap(),
            node,
            41,
            &hash,
            &signature
        )
        .is_err()
    );
}
