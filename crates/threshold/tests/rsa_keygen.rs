//! RSA key generation: generated keys pass the import checks, survive a PKCS#8 round trip,
//! deal and decrypt through the threshold path, and differ from one another.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::{combine, keygen, oaep, partial};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

#[test]
fn a_generated_key_passes_the_import_checks_after_a_pkcs8_round_trip() {
    let key = keygen::generate(&mut rng(1), 2048).unwrap();
    assert_eq!(key.public_key().bits(), 2048);
    assert_eq!(key.public_key().exponent_bytes(), vec![0x01, 0x00, 0x01]);
    let pem = key.to_pkcs8_pem().unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    // from_pem checks N = p·q, 2^φ ≡ 1, 2^(ed) ≡ 2 and the CRT values.
    let again = PrivateKey::from_pem(&pem).unwrap();
    assert_eq!(again.public_key(), key.public_key());
    assert_eq!(*again.to_pkcs8_der().unwrap(), *key.to_pkcs8_der().unwrap());
}

#[test]
fn a_generated_key_decrypts_oaep_through_deal_partials_and_combine() {
    let key = keygen::generate(&mut rng(2), 2048).unwrap();
    let (shares, package) = deal(&key, 2, 3, &mut rng(3)).unwrap();
    let message = b"a 44-byte DKE key blob, more or less........";
    let ciphertext = oaep::encrypt(key.public_key(), message, &mut rng(4)).unwrap();
    let partials: Vec<_> = shares[1..].iter().map(|s| partial::evaluate(s, &package, &ciphertext).unwrap()).collect();
    let opened = combine::decrypt(&package, &ciphertext, &partials).unwrap();
    assert_eq!(opened.value.as_slice(), message);
    assert!(opened.culprits.is_empty());
}

#[test]
fn two_generated_keys_differ() {
    let a = keygen::generate(&mut rng(5), 2048).unwrap();
    let b = keygen::generate(&mut rng(6), 2048).unwrap();
    assert_ne!(a.public_key(), b.public_key());
    assert_ne!(a.public_key().modulus_bytes()[..128], b.public_key().modulus_bytes()[..128]);
}
