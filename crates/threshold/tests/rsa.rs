//! Threshold RSA (Shoup) with OAEP-SHA256: dealing from OpenSSL keys, every t-subset agreeing
//! with ordinary RSA, interop with OpenSSL's OAEP, culprit naming, constant-time OAEP errors,
//! encodings.
//!
//! Fixtures (`tests/fixtures/`) are throwaway test keys made with the openssl CLI; see the
//! README there.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::{RsaKeyShare, RsaPartial, RsaPublicKey, RsaPublicPackage, combine, oaep, partial};
use hyok_threshold::{Error, NodeId, Wire};
use proptest::prelude::*;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::sync::OnceLock;

const PKCS1_PEM: &str = include_str!("fixtures/rsa2048-pkcs1.pem");
const PKCS8_PEM: &str = include_str!("fixtures/rsa2048-pkcs8.pem");
const PKCS8_3072_PEM: &str = include_str!("fixtures/rsa3072-pkcs8.pem");
const E3_PEM: &str = include_str!("fixtures/rsa2048-e3-pkcs8.pem");
const OPENSSL_MESSAGE: &[u8] = include_bytes!("fixtures/oaep-message.txt");
const OPENSSL_CIPHERTEXT_PKCS1: &[u8] = include_bytes!("fixtures/oaep-pkcs1.bin");
const OPENSSL_CIPHERTEXT_PKCS8: &[u8] = include_bytes!("fixtures/oaep-pkcs8.bin");

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn node(i: u16) -> NodeId {
    NodeId::new(i).unwrap()
}

/// A 3-of-5 split of the PKCS#8 fixture, dealt once for the whole test binary.
struct Split {
    key: PrivateKey,
    shares: Vec<RsaKeyShare>,
    package: RsaPublicPackage,
}

fn split_3_of_5() -> &'static Split {
    static SPLIT: OnceLock<Split> = OnceLock::new();
    SPLIT.get_or_init(|| {
        let key = PrivateKey::from_pem(PKCS8_PEM).unwrap();
        let (shares, package) = deal(&key, 3, 5, &mut rng(1)).unwrap();
        Split { key, shares, package }
    })
}

fn partials(split: &Split, ciphertext: &[u8]) -> Vec<RsaPartial> {
    split.shares.iter().map(|s| partial::evaluate(s, &split.package, ciphertext).unwrap()).collect()
}

/// Every `k`-element subset of `0..n`.
fn subsets(n: usize, k: usize) -> Vec<Vec<usize>> {
    if k == 0 {
        return vec![Vec::new()];
    }
    (k - 1..n)
        .flat_map(|last| {
            subsets(last, k - 1).into_iter().map(move |mut s| {
                s.push(last);
                s
            })
        })
        .collect()
}

#[test]
fn pkcs1_and_pkcs8_fixtures_both_import() {
    for pem in [PKCS1_PEM, PKCS8_PEM] {
        let key = PrivateKey::from_pem(pem).unwrap();
        assert_eq!(key.public_key().bits(), 2048);
        assert_eq!(key.public_key().size(), 256);
        assert_eq!(key.public_key().exponent_bytes(), vec![0x01, 0x00, 0x01]);
    }
    let big = PrivateKey::from_pem(PKCS8_3072_PEM).unwrap();
    assert_eq!(big.public_key().bits(), 3072);
    // Text around the PEM block is ignored.
    let framed = format!("a comment\n{PKCS1_PEM}\ntrailing text\n");
    assert_eq!(
        PrivateKey::from_pem(&framed).unwrap().public_key(),
        PrivateKey::from_pem(PKCS1_PEM).unwrap().public_key()
    );
}

#[test]
fn every_t_subset_of_a_3_of_5_split_decrypts_like_ordinary_rsa() {
    let split = split_3_of_5();
    let message = b"a DKE data key, 32 bytes long...";
    let ciphertext = oaep::encrypt(split.package.public_key(), message, &mut rng(2)).unwrap();
    let ordinary = split.key.dangerous_decrypt_raw(&ciphertext).unwrap();
    let all = partials(split, &ciphertext);
    for subset in subsets(5, 3) {
        let chosen: Vec<RsaPartial> = subset.iter().map(|&i| all[i].clone()).collect();
        let raw = combine::combine(&split.package, &ciphertext, &chosen).unwrap();
        assert_eq!(*raw.value, *ordinary, "subset {subset:?}");
        assert!(raw.culprits.is_empty());
        let opened = combine::decrypt(&split.package, &ciphertext, &chosen).unwrap();
        assert_eq!(&opened.value[..], message, "subset {subset:?}");
    }
    // Order does not matter, and extra partials beyond t are harmless.
    let reversed: Vec<RsaPartial> = all.iter().rev().cloned().collect();
    assert_eq!(&combine::decrypt(&split.package, &ciphertext, &reversed).unwrap().value[..], message);
}

#[test]
fn openssl_oaep_ciphertexts_decrypt_to_the_known_message_through_the_threshold_path() {
    for (pem, ciphertext) in [(PKCS1_PEM, OPENSSL_CIPHERTEXT_PKCS1), (PKCS8_PEM, OPENSSL_CIPHERTEXT_PKCS8)] {
        let key = PrivateKey::from_pem(pem).unwrap();
        let (shares, package) = deal(&key, 2, 3, &mut rng(3)).unwrap();
        let partials: Vec<RsaPartial> =
            shares[1..].iter().map(|s| partial::evaluate(s, &package, ciphertext).unwrap()).collect();
        let opened = combine::decrypt(&package, ciphertext, &partials).unwrap();
        assert_eq!(&opened.value[..], OPENSSL_MESSAGE);
        // The ordinary decryption agrees.
        let em = key.dangerous_decrypt_raw(ciphertext).unwrap();
        assert_eq!(&oaep::decode(key.public_key(), &em).unwrap()[..], OPENSSL_MESSAGE);
    }
}

#[test]
fn a_3072_bit_key_and_a_1_of_1_split_work() {
    let key = PrivateKey::from_pem(PKCS8_3072_PEM).unwrap();
    let mut r = rng(4);
    for (t, n) in [(2, 3), (1, 1)] {
        let (shares, package) = deal(&key, t, n, &mut r).unwrap();
        let ciphertext = oaep::encrypt(package.public_key(), b"hello", &mut r).unwrap();
        assert_eq!(ciphertext.len(), 384);
        let partials: Vec<RsaPartial> =
            shares.iter().map(|s| partial::evaluate(s, &package, &ciphertext).unwrap()).collect();
        assert_eq!(&combine::decrypt(&package, &ciphertext, &partials).unwrap().value[..], b"hello");
    }
}

#[test]
fn an_exponent_sharing_a_factor_with_4_delta_squared_is_refused_and_small_n_still_works() {
    // e = 3 divides Δ = n! for n ≥ 3, so the Euclid step a·4Δ² + b·e = 1 has no solution.
    let key = PrivateKey::from_pem(E3_PEM).unwrap();
    assert!(matches!(deal(&key, 2, 3, &mut rng(5)), Err(Error::InvalidParameters(_))));
    // For n = 2, Δ = 2 and gcd(3, 16) = 1.
    let (shares, package) = deal(&key, 2, 2, &mut rng(5)).unwrap();
    let ciphertext = oaep::encrypt(package.public_key(), b"e = 3", &mut rng(6)).unwrap();
    let partials: Vec<RsaPartial> =
        shares.iter().map(|s| partial::evaluate(s, &package, &ciphertext).unwrap()).collect();
    assert_eq!(&combine::decrypt(&package, &ciphertext, &partials).unwrap().value[..], b"e = 3");
}

#[test]
fn dealing_refuses_bad_thresholds() {
    let key = &split_3_of_5().key;
    for (t, n) in [(0, 3), (4, 3), (1, 256), (0, 0)] {
        assert!(matches!(deal(key, t, n, &mut rng(7)), Err(Error::InvalidParameters(_))), "t={t} n={n}");
    }
}

#[test]
fn a_replaced_partial_among_exactly_t_is_caught_by_the_result_check() {
    let split = split_3_of_5();
    let mut r = rng(8);
    let ciphertext = oaep::encrypt(split.package.public_key(), b"m", &mut r).unwrap();
    let other = oaep::encrypt(split.package.public_key(), b"other", &mut r).unwrap();
    let mut chosen: Vec<RsaPartial> = partials(split, &ciphertext)[..3].to_vec();
    // Node 2's value replaced by its (well-formed, correctly computed) partial of another
    // ciphertext: only y^e ≡ c can tell.
    chosen[1] = partial::evaluate(&split.shares[1], &split.package, &other).unwrap();
    assert_eq!(
        combine::combine(&split.package, &ciphertext, &chosen).unwrap_err(),
        Error::RsaCombineFailed { culprits: vec![] }
    );
    assert!(combine::decrypt(&split.package, &ciphertext, &chosen).is_err());
}

#[test]
fn with_more_than_t_partials_combine_succeeds_and_names_the_culprit() {
    let split = split_3_of_5();
    let mut r = rng(9);
    let message = b"named and shamed";
    let ciphertext = oaep::encrypt(split.package.public_key(), message, &mut r).unwrap();
    let good = partials(split, &ciphertext);
    let wrong = partials(split, &oaep::encrypt(split.package.public_key(), b"x", &mut r).unwrap());
    // t + 1 = 4 partials, the bad one at each of the first t positions.
    for bad in 0..3 {
        let mut four = good[..4].to_vec();
        four[bad] = wrong[bad].clone();
        let opened = combine::decrypt(&split.package, &ciphertext, &four).unwrap();
        assert_eq!(&opened.value[..], message);
        assert_eq!(opened.culprits, vec![good[bad].node()], "bad index {bad}");
    }
    // All 5 partials, two of them bad (n − t = 2): both named.
    let mut five = good.clone();
    five[0] = wrong[0].clone();
    five[3] = wrong[3].clone();
    let opened = combine::combine(&split.package, &ciphertext, &five).unwrap();
    assert_eq!(opened.culprits, vec![node(1), node(4)]);
    assert_eq!(*opened.value, *split.key.dangerous_decrypt_raw(&ciphertext).unwrap());
    // Three bad among five: no consistent subset remains.
    five[4] = wrong[4].clone();
    assert_eq!(
        combine::combine(&split.package, &ciphertext, &five).unwrap_err(),
        Error::RsaCombineFailed { culprits: vec![] }
    );
}

#[test]
fn malformed_partials_are_named_without_combining() {
    let split = split_3_of_5();
    let ciphertext = oaep::encrypt(split.package.public_key(), b"m", &mut rng(10)).unwrap();
    let good = partials(split, &ciphertext);
    let modulus = split.package.public_key().modulus_bytes();
    for bad_value in [vec![0u8; 256], vec![0u8; 255], vec![1u8; 257], modulus.clone(), vec![0xff; 256], vec![]] {
        let mut four = good[..4].to_vec();
        four[0] = RsaPartial::new(node(1), bad_value.clone());
        let opened = combine::combine(&split.package, &ciphertext, &four).unwrap();
        assert_eq!(opened.culprits, vec![node(1)]);
        // With only t partials, one malformed leaves too few: refused, and named.
        assert_eq!(
            combine::combine(&split.package, &ciphertext, &four[..3]).unwrap_err(),
            Error::RsaCombineFailed { culprits: vec![node(1)] }
        );
    }
}

#[test]
fn a_partial_sharing_a_factor_with_n_is_named_and_such_a_ciphertext_refused() {
    let split = split_3_of_5();
    let ciphertext = oaep::encrypt(split.package.public_key(), b"m", &mut rng(16)).unwrap();
    let good = partials(split, &ciphertext);
    // p, a prime factor of N: 0 < p < N, well-formed, but not invertible modulo N.
    let p =
        openssl::rsa::Rsa::private_key_from_pem(PKCS8_PEM.as_bytes()).unwrap().p().unwrap().to_vec_padded(256).unwrap();
    for bad in 0..4 {
        let mut four = good[..4].to_vec();
        four[bad] = RsaPartial::new(good[bad].node(), p.clone());
        let opened = combine::decrypt(&split.package, &ciphertext, &four).unwrap();
        assert_eq!(&opened.value[..], b"m");
        assert_eq!(opened.culprits, vec![good[bad].node()], "bad index {bad}");
        if bad < 3 {
            assert_eq!(
                combine::combine(&split.package, &ciphertext, &four[..3]).unwrap_err(),
                Error::RsaCombineFailed { culprits: vec![good[bad].node()] }
            );
        }
    }
    // A ciphertext c = p (gcd(c, N) ≠ 1) is refused as malformed, whatever the partials.
    let theirs = partials(split, &p);
    assert_eq!(
        combine::combine(&split.package, &p, &theirs[..3]).unwrap_err(),
        Error::Malformed { what: "RSA ciphertext" }
    );
}

#[test]
fn fewer_than_t_partials_are_refused() {
    let split = split_3_of_5();
    let ciphertext = oaep::encrypt(split.package.public_key(), b"m", &mut rng(11)).unwrap();
    let two = partials(split, &ciphertext)[..2].to_vec();
    assert_eq!(
        combine::combine(&split.package, &ciphertext, &two).unwrap_err(),
        Error::NotEnoughPartials { needed: 3, got: 2 }
    );
    assert!(matches!(combine::decrypt(&split.package, &ciphertext, &[]), Err(Error::NotEnoughPartials { .. })));
}

#[test]
fn unknown_and_duplicate_nodes_are_refused() {
    let split = split_3_of_5();
    let ciphertext = oaep::encrypt(split.package.public_key(), b"m", &mut rng(12)).unwrap();
    let all = partials(split, &ciphertext);
    let mut dup = all[..3].to_vec();
    dup[2] = all[0].clone();
    assert_eq!(
        combine::combine(&split.package, &ciphertext, &dup).unwrap_err(),
        Error::DuplicateNode { node: node(1) }
    );
    let mut stranger = all[..3].to_vec();
    stranger[0] = RsaPartial::new(node(6), all[0].value().to_vec());
    assert_eq!(combine::combine(&split.package, &ciphertext, &stranger).unwrap_err(), Error::UnknownNode { node: 6 });
    // A share for node 6 does not evaluate under a 5-node package.
    let (shares6, _) = deal(&split.key, 3, 6, &mut rng(13)).unwrap();
    assert_eq!(
        partial::evaluate(&shares6[5], &split.package, &ciphertext).unwrap_err(),
        Error::UnknownNode { node: 6 }
    );
}

#[test]
fn wrong_length_and_out_of_range_ciphertexts_are_refused() {
    let split = split_3_of_5();
    let good_ct = oaep::encrypt(split.package.public_key(), b"m", &mut rng(14)).unwrap();
    let good = partials(split, &good_ct);
    let modulus = split.package.public_key().modulus_bytes();
    let mut above = modulus.clone();
    above[255] += 2; // N is odd, so N + 2 has no carry out of the last byte.
    let mut short = good_ct.clone();
    short.pop();
    let mut long = vec![0u8];
    long.extend_from_slice(&good_ct);
    let refused = Error::Malformed { what: "RSA ciphertext" };
    for ciphertext in [vec![], short, long, vec![0u8; 256], modulus, above, vec![0xff; 256]] {
        assert_eq!(partial::evaluate(&split.shares[0], &split.package, &ciphertext).unwrap_err(), refused);
        assert_eq!(combine::combine(&split.package, &ciphertext, &good[..3]).unwrap_err(), refused);
    }
}

#[test]
fn oaep_with_any_flipped_byte_fails_with_the_one_generic_error() {
    let split = split_3_of_5();
    let key = split.package.public_key();
    let ciphertext = oaep::encrypt(key, b"sixteen byte msg", &mut rng(15)).unwrap();
    let em = split.key.dangerous_decrypt_raw(&ciphertext).unwrap();
    assert_eq!(&oaep::decode(key, &em).unwrap()[..], b"sixteen byte msg");
    // Y, maskedSeed, maskedDB (lHash, PS, the 0x01, M): a flip anywhere is the same error.
    for i in 0..em.len() {
        for bit in [0x01u8, 0x80] {
            let mut tampered = em.to_vec();
            tampered[i] ^= bit;
            assert_eq!(oaep::decode(key, &tampered).unwrap_err(), Error::OaepDecodingFailed, "byte {i}");
        }
    }
    assert_eq!(oaep::decode(key, &em[1..]).unwrap_err(), Error::OaepDecodingFailed);
    assert_eq!(oaep::decode(key, &[0u8; 256]).unwrap_err(), Error::OaepDecodingFailed);
    // Through the threshold path: a tampered ciphertext opens to garbage, which OAEP refuses.
    for i in [0usize, 1, 100, 255] {
        let mut tampered = ciphertext.clone();
        tampered[i] ^= 0x01;
        let partials = partials(split, &tampered);
        assert_eq!(
            combine::decrypt(&split.package, &tampered, &partials[..3]).unwrap_err(),
            Error::OaepDecodingFailed,
            "ciphertext byte {i}"
        );
    }
}

#[test]
fn oaep_handles_empty_and_maximum_length_messages_and_refuses_longer_ones() {
    let split = split_3_of_5();
    let key = split.package.public_key();
    assert_eq!(oaep::max_message_len(key), 256 - 66);
    let mut r = rng(16);
    for message in [vec![], vec![0x01], vec![0u8; 190], vec![0xab; 190]] {
        let ciphertext = oaep::encrypt(key, &message, &mut r).unwrap();
        let em = split.key.dangerous_decrypt_raw(&ciphertext).unwrap();
        assert_eq!(&oaep::decode(key, &em).unwrap()[..], &message[..]);
    }
    assert!(matches!(oaep::encrypt(key, &[0u8; 191], &mut r), Err(Error::InvalidParameters(_))));
    // Randomized: the same message encrypts differently each time.
    assert_ne!(oaep::encrypt(key, b"m", &mut r).unwrap(), oaep::encrypt(key, b"m", &mut r).unwrap());
}

#[test]
fn share_package_and_partial_encodings_round_trip() {
    let split = split_3_of_5();
    let bytes = split.package.to_bytes();
    assert_eq!(&bytes[..2], &[1, 0x60]);
    let package = RsaPublicPackage::from_bytes(&bytes).unwrap();
    assert_eq!(package, split.package);
    assert_eq!((package.threshold(), package.nodes()), (3, 5));

    let ciphertext = oaep::encrypt(package.public_key(), b"round trip", &mut rng(17)).unwrap();
    let share = RsaKeyShare::from_secret_bytes(&split.shares[2].to_secret_bytes()).unwrap();
    assert_eq!(share.node(), node(3));
    assert_eq!(*share.dangerous_secret_bytes(), *split.shares[2].dangerous_secret_bytes());
    let partial = partial::evaluate(&share, &package, &ciphertext).unwrap();
    assert_eq!(partial, partial::evaluate(&split.shares[2], &split.package, &ciphertext).unwrap());
    assert_eq!(RsaPartial::from_bytes(&partial.to_bytes()).unwrap(), partial);

    // Known answers for the layouts: version, tag, u16be node, u32be length, value.
    assert_eq!(RsaPartial::new(node(2), vec![0xab; 3]).to_bytes(), vec![1, 0x62, 0, 2, 0, 0, 0, 3, 0xab, 0xab, 0xab]);
    let secret = split.shares[2].to_secret_bytes();
    assert_eq!(&secret[..8], &[1, 0x61, 0, 3, 0, 0, 1, 0]);
    assert_eq!(secret.len(), 8 + 256);
    assert_eq!(&bytes[2..10], &[0, 3, 0, 5, 0, 0, 1, 0]);
    assert_eq!(&bytes[bytes.len() - 7..], &[0, 0, 0, 3, 1, 0, 1]);

    let public = package.public_key();
    let rebuilt = RsaPublicKey::from_components(&public.modulus_bytes(), &public.exponent_bytes()).unwrap();
    assert_eq!(&rebuilt, public);
}

#[test]
fn package_decoding_rejects_non_canonical_and_invalid_keys() {
    let split = split_3_of_5();
    let good = split.package.to_bytes();
    let malformed = Error::Malformed { what: "RSA public package" };
    // Layout: version, tag, t (2), n (2), len (4), N (256), len (4), e (3).
    let with = |edit: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        edit(&mut b);
        RsaPublicPackage::from_bytes(&b)
    };
    assert_eq!(with(&|b| b[0] = 2).unwrap_err(), Error::UnsupportedVersion { what: "RSA public package", version: 2 });
    assert_eq!(with(&|b| b[1] = 0x61).unwrap_err(), malformed);
    assert_eq!(with(&|b| b[2..4].copy_from_slice(&[0, 0])).unwrap_err(), malformed); // t = 0
    assert_eq!(with(&|b| b[2..4].copy_from_slice(&[0, 6])).unwrap_err(), malformed); // t > n
    assert_eq!(with(&|b| b[4..6].copy_from_slice(&[1, 0])).unwrap_err(), malformed); // n = 256
    assert_eq!(with(&|b| b[265] ^= 1).unwrap_err(), malformed); // N even
    assert_eq!(with(&|b| b.push(0)).unwrap_err(), malformed); // trailing byte
    assert_eq!(with(&|b| b.truncate(b.len() - 1)).unwrap_err(), malformed);
    assert_eq!(with(&|b| *b.last_mut().unwrap() = 0x00).unwrap_err(), malformed); // e even
    assert_eq!(with(&|b| b[10] = 0x01).unwrap_err(), malformed); // N of 2041 bits
    // Hand-built bodies: a leading zero before N, and e = 3 with n = 5 (3 divides Δ = 120).
    let modulus = split.package.public_key().modulus_bytes();
    let build = |n_field: &[u8], e_field: &[u8]| {
        let mut b = vec![1, 0x60, 0, 3, 0, 5];
        for field in [n_field, e_field] {
            b.extend_from_slice(&(field.len() as u32).to_be_bytes());
            b.extend_from_slice(field);
        }
        RsaPublicPackage::from_bytes(&b)
    };
    assert!(build(&modulus, &[1, 0, 1]).is_ok());
    assert_eq!(build(&[&[0][..], &modulus].concat(), &[1, 0, 1]).unwrap_err(), malformed);
    assert_eq!(build(&modulus, &[0, 1, 0, 1]).unwrap_err(), malformed);
    assert_eq!(build(&modulus, &[3]).unwrap_err(), malformed);
    assert_eq!(build(&modulus, &modulus).unwrap_err(), malformed); // e ≥ N
}

#[test]
fn debug_output_never_contains_secret_bytes() {
    let split = split_3_of_5();
    let share = &split.shares[0];
    let text = format!("{share:?}");
    assert!(text.contains("<redacted>"), "{text}");
    let secret = share.dangerous_secret_bytes();
    let hex_lower: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let hex_upper = hex_lower.to_uppercase();
    let significant = hex_lower.trim_start_matches('0');
    for needle in [&hex_lower[hex_lower.len() - 16..], &hex_upper[hex_upper.len() - 16..], &significant[..16]] {
        assert!(!text.contains(needle), "{text}");
    }
    let key_text = format!("{:?}", split.key);
    assert!(key_text.contains("<redacted>"), "{key_text}");
    assert!(!key_text.to_lowercase().contains(&significant[..16]));
}

#[test]
fn corrupted_encrypted_or_foreign_pems_are_refused() {
    assert!(PrivateKey::from_pem("").is_err());
    assert!(PrivateKey::from_pem("-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n").is_err());
    // Truncated: no END line.
    assert!(PrivateKey::from_pem(&PKCS1_PEM[..PKCS1_PEM.len() / 2]).is_err());
    // A changed base64 character inside the key: either no longer DER, or an inconsistent key.
    for at in [40, 200, 700, 1200, 1600] {
        let mut pem = PKCS1_PEM.as_bytes().to_vec();
        if pem[at] == b'\n' {
            continue;
        }
        pem[at] = if pem[at] == b'A' { b'B' } else { b'A' };
        let pem = String::from_utf8(pem).unwrap();
        assert!(PrivateKey::from_pem(&pem).is_err(), "position {at}");
    }
    let encrypted = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    assert!(matches!(PrivateKey::from_pem(encrypted), Err(Error::InvalidParameters(_))));
    let legacy = PKCS1_PEM.replacen("-----\n", "-----\nProc-Type: 4,ENCRYPTED\n", 1);
    assert!(matches!(PrivateKey::from_pem(&legacy), Err(Error::InvalidParameters(_))));
    let ec = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    assert!(PrivateKey::from_pem(ec).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Arbitrary bytes, and valid encodings with one byte changed or cut short, never panic
    /// any decoder; the ones that decode are what they claim.
    #[test]
    fn hostile_bytes_never_panic(
        junk in proptest::collection::vec(any::<u8>(), 0..600),
        which in 0usize..3,
        at in any::<prop::sample::Index>(),
        xor in 1u8..=255,
        cut in any::<prop::sample::Index>(),
    ) {
        let split = split_3_of_5();
        let valid = match which {
            0 => split.package.to_bytes(),
            1 => split.shares[0].to_secret_bytes().to_vec(),
            _ => RsaPartial::new(node(1), vec![7; 256]).to_bytes(),
        };
        let mut flipped = valid.clone();
        let i = at.index(flipped.len());
        flipped[i] ^= xor;
        let short = &valid[..cut.index(valid.len())];
        for bytes in [&junk[..], &flipped[..], short] {
            let _ = RsaPublicPackage::from_bytes(bytes);
            let _ = RsaKeyShare::from_secret_bytes(bytes);
            let _ = RsaPartial::from_bytes(bytes);
            let _ = PrivateKey::from_pkcs1_der(bytes);
            let _ = PrivateKey::from_pkcs8_der(bytes);
            let _ = oaep::decode(split.package.public_key(), bytes);
            let _ = RsaPublicKey::from_components(bytes, &[1, 0, 1]);
            if let Ok(text) = std::str::from_utf8(bytes) {
                let _ = PrivateKey::from_pem(text);
            }
        }
        // Decoding a partial with any value never panics the combiner either.
        if let Ok(p) = RsaPartial::from_bytes(&flipped) {
            let ciphertext = vec![2u8; 256];
            let mut set = vec![p];
            set.extend((2..=3).map(|i| RsaPartial::new(node(i), vec![3; 256])));
            let _ = combine::combine(&split.package, &ciphertext, &set);
        }
    }

    /// Hostile DER inside a well-formed PEM armour never panics the importer.
    #[test]
    fn hostile_pem_bodies_never_panic(der in proptest::collection::vec(any::<u8>(), 0..300)) {
        let body: String = base64_encode(&der);
        for label in ["RSA PRIVATE KEY", "PRIVATE KEY"] {
            let pem = format!("-----BEGIN {label}-----\n{body}\n-----END {label}-----\n");
            prop_assert!(PrivateKey::from_pem(&pem).is_err());
        }
    }
}

/// Standard base64 with padding, for building hostile PEMs.
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
