//! Sealed RSA shares: a share opens only for its node, key name, version and package; tampering
//! and hostile bytes are refused without a panic. Fingerprints match OpenSSL's.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::seal::{SealedRsaShare, ShareBinding, seal};
use hyok_threshold::rsa::{RsaKeyShare, RsaPublicPackage, fingerprint};
use hyok_threshold::{Error, NodeId, NodeSecrets, Wire};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::sync::OnceLock;

const PKCS1_PEM: &str = include_str!("fixtures/rsa2048-pkcs1.pem");
const PKCS8_PEM: &str = include_str!("fixtures/rsa2048-pkcs8.pem");
const PKCS8_3072_PEM: &str = include_str!("fixtures/rsa3072-pkcs8.pem");

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn node(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

struct Fixture {
    shares: Vec<RsaKeyShare>,
    package: RsaPublicPackage,
    identities: Vec<NodeSecrets>,
    sealed: Vec<SealedRsaShare>,
}

/// A 2-of-3 split of the PKCS#8 fixture with every share sealed to its node as ("dke", 1).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let key = PrivateKey::from_pem(PKCS8_PEM).unwrap();
        let mut r = rng(7);
        let (shares, package) = deal(&key, 2, 3, &mut r).unwrap();
        let identities: Vec<NodeSecrets> = (0..3).map(|_| NodeSecrets::generate(&mut r)).collect();
        let sealed = shares
            .iter()
            .zip(&identities)
            .map(|(s, id)| {
                let binding = ShareBinding::new("dke", 1, s.node(), &package);
                seal(s, &id.seal().public_key(), &binding, &mut r).unwrap()
            })
            .collect();
        Fixture { shares, package, identities, sealed }
    })
}

fn binding(name: &str, version: u32, i: u16) -> ShareBinding {
    ShareBinding::new(name, version, node(i), &fixture().package)
}

#[test]
fn sealed_share_round_trips_through_its_wire_encoding_and_opens_to_the_dealt_share() {
    let f = fixture();
    for (i, sealed) in f.sealed.iter().enumerate() {
        let id = i as u16 + 1;
        let decoded = SealedRsaShare::from_bytes(&sealed.to_bytes()).unwrap();
        assert_eq!(&decoded, sealed);
        let opened = decoded.open(f.identities[i].seal(), &binding("dke", 1, id), &f.package).unwrap();
        assert_eq!(opened.node(), node(id));
        assert_eq!(*opened.dangerous_secret_bytes(), *f.shares[i].dangerous_secret_bytes());
    }
}

#[test]
fn sealed_share_is_refused_by_another_node_or_under_another_binding() {
    let f = fixture();
    let sealed = &f.sealed[0];
    // Another node's identity, even with node 1's binding.
    assert_eq!(
        sealed.open(f.identities[1].seal(), &binding("dke", 1, 1), &f.package).unwrap_err(),
        Error::SealedShareRejected
    );
    // Node 1's identity, but another node id, name or version.
    for b in [binding("dke", 1, 2), binding("dkf", 1, 1), binding("dke", 2, 1), binding("", 1, 1)] {
        assert_eq!(sealed.open(f.identities[0].seal(), &b, &f.package).unwrap_err(), Error::SealedShareRejected);
    }
    // Another package (same key, other threshold; or another key).
    let other_t = RsaPublicPackage::new(f.package.public_key().clone(), 3, 3).unwrap();
    let b = ShareBinding::new("dke", 1, node(1), &other_t);
    assert_eq!(sealed.open(f.identities[0].seal(), &b, &other_t).unwrap_err(), Error::SealedShareRejected);
    // A binding made for one package but checked against another.
    assert_eq!(
        sealed.open(f.identities[0].seal(), &binding("dke", 1, 1), &other_t).unwrap_err(),
        Error::SealedShareRejected
    );
    let other_key = PrivateKey::from_pem(PKCS1_PEM).unwrap();
    let other = RsaPublicPackage::new(other_key.public_key().clone(), 2, 3).unwrap();
    let b = ShareBinding::new("dke", 1, node(1), &other);
    assert_eq!(sealed.open(f.identities[0].seal(), &b, &other).unwrap_err(), Error::SealedShareRejected);
}

#[test]
fn sealing_a_share_under_another_nodes_binding_is_refused() {
    let f = fixture();
    let err = seal(&f.shares[0], &f.identities[1].seal().public_key(), &binding("dke", 1, 2), &mut rng(1)).unwrap_err();
    assert!(matches!(err, Error::InvalidParameters(_)), "{err:?}");
}

#[test]
fn every_flipped_bit_of_a_sealed_share_is_refused() {
    let f = fixture();
    let bytes = f.sealed[2].to_bytes();
    // Every byte after the header, one bit each (the header bytes are checked by decoding).
    for i in 0..bytes.len() {
        let mut tampered = bytes.clone();
        tampered[i] ^= 0x01;
        if let Ok(s) = SealedRsaShare::from_bytes(&tampered) {
            assert!(s.open(f.identities[2].seal(), &binding("dke", 1, 3), &f.package).is_err(), "byte {i}");
        }
    }
    // Truncated at every length.
    for len in 0..bytes.len() {
        assert!(SealedRsaShare::from_bytes(&bytes[..len]).is_err(), "length {len}");
    }
}

#[test]
fn sealed_share_debug_shows_no_ciphertext() {
    let dbg = format!("{:?}", fixture().sealed[0]);
    assert!(dbg.contains("SealedRsaShare") && dbg.contains("len"), "{dbg}");
    assert!(dbg.len() < 120, "{dbg}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let f = fixture();
        if let Ok(s) = SealedRsaShare::from_bytes(&bytes) {
            prop_assert!(s.open(f.identities[0].seal(), &binding("dke", 1, 1), &f.package).is_err());
        }
        let mut framed = vec![1u8, 0x63];
        framed.extend_from_slice(&bytes);
        if let Ok(s) = SealedRsaShare::from_bytes(&framed) {
            prop_assert!(s.open(f.identities[0].seal(), &binding("dke", 1, 1), &f.package).is_err());
        }
    }
}

/// `openssl rsa -in F -pubout -outform DER | sha256sum` of the fixtures.
#[test]
fn fingerprint_matches_openssl_spki_sha256() {
    for (pem, expected) in [
        (PKCS1_PEM, "c29e9396970497170a65114a0a62e3df874acd0c3801eafd8501ae2c5b02d0c9"),
        (PKCS8_PEM, "52fb43dbc2c411a46e5baa553ca714433b2bebba9e872fe552cced0b04d72c6d"),
        (PKCS8_3072_PEM, "100d6d6234bdb5e6f2cdd089ddeb3932a6a0e00323dca3540f4db4624a328e6f"),
    ] {
        let key = PrivateKey::from_pem(pem).unwrap();
        assert_eq!(fingerprint(key.public_key()), expected);
    }
}

#[test]
fn a_share_sealed_to_the_nodes_identity_or_transport_key_is_refused_by_its_seal_key() {
    let f = fixture();
    let keys = &f.identities[0];
    let b = binding("dke", 1, 1);
    for wrong in [keys.identity().public_key().as_bytes(), keys.transport().public_key().as_bytes()] {
        // A hostile dealer can present any point as a "seal key"; the node opens only with its seal secret.
        let as_seal = hyok_threshold::SealPublicKey::from_slice(wrong).unwrap();
        let sealed = seal(&f.shares[0], &as_seal, &b, &mut rng(3)).unwrap();
        assert_eq!(sealed.open(keys.seal(), &b, &f.package).unwrap_err(), Error::SealedShareRejected);
    }
    // The control: the same share sealed to the seal key opens.
    let sealed = seal(&f.shares[0], &keys.seal().public_key(), &b, &mut rng(3)).unwrap();
    assert!(sealed.open(keys.seal(), &b, &f.package).is_ok());
}
