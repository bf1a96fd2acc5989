//! DPRF-keyed AES-256-GCM: round trips, lengths, tampering, blobs, culprits.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers outside #[test] functions fail loudly"
)]

mod common;

use common::{deal, rng};
use hyok_threshold::aead::{self, Blob, TAG_LEN};
use hyok_threshold::dprf::{self, DprfInput};
use hyok_threshold::{Error, KeyShare, NodeId, PartialEvaluation, PublicKeyPackage};

struct Fixture {
    shares: Vec<KeyShare>,
    package: PublicKeyPackage,
}

fn fixture() -> Fixture {
    let (_, shares, package) = deal(3, 5, &mut rng(1));
    Fixture { shares, package }
}

impl Fixture {
    fn partials(&self, input: &DprfInput, nodes: &[usize]) -> Vec<PartialEvaluation> {
        let mut r = rng(2);
        nodes.iter().map(|&i| dprf::evaluate(&self.shares[i], input, &mut r)).collect()
    }
}

#[test]
fn encrypt_then_decrypt_with_another_subset_round_trips() {
    let f = fixture();
    let mut r = rng(3);
    let input = DprfInput::random("orders", 2, &mut r).unwrap();
    let plaintext = b"attack at dawn, bring snacks";
    let sealed = aead::encrypt(&f.package, &input, &f.partials(&input, &[0, 1, 2]), b"ctx", plaintext, &mut r).unwrap();
    assert_eq!(sealed.value.ciphertext.len(), plaintext.len());
    assert_ne!(&sealed.value.ciphertext[..], &plaintext[..]);
    let opened = aead::decrypt(
        &f.package,
        &input,
        &f.partials(&input, &[4, 3, 1]),
        b"ctx",
        &sealed.value.ciphertext,
        &sealed.value.tag,
    )
    .unwrap();
    assert_eq!(&opened.value[..], &plaintext[..]);
    assert!(opened.culprits.is_empty());
}

#[test]
fn ciphertext_length_equals_plaintext_length_for_every_size_up_to_4300() {
    let f = fixture();
    let mut r = rng(4);
    let input = DprfInput::random("xks", 1, &mut r).unwrap();
    let output = dprf::combine_unchecked(&f.package, &f.partials(&input, &[0, 2, 4])).unwrap();
    let plaintext: Vec<u8> = (0..=4300u32).map(|i| (i * 7) as u8).collect();
    for len in 0..=4300 {
        let mut buffer = plaintext[..len].to_vec();
        let tag = aead::seal_detached(&output, &input, b"aad", &mut buffer);
        assert_eq!(buffer.len(), len);
        aead::open_detached(&output, &input, b"aad", &mut buffer, &tag).unwrap();
        assert_eq!(&buffer[..], &plaintext[..len]);
    }
}

#[test]
fn a_flipped_bit_in_ciphertext_tag_seed_aad_or_version_fails_to_decrypt() {
    let f = fixture();
    let mut r = rng(5);
    let input = DprfInput::random("k", 7, &mut r).unwrap();
    let aad = b"additional data".to_vec();
    let sealed =
        aead::encrypt(&f.package, &input, &f.partials(&input, &[0, 1, 2]), &aad, b"0123456789", &mut r).unwrap().value;
    let decrypt = |input: &DprfInput, aad: &[u8], ct: &[u8], tag: &[u8; TAG_LEN]| {
        aead::decrypt(&f.package, input, &f.partials(input, &[0, 1, 2]), aad, ct, tag)
    };
    assert!(decrypt(&input, &aad, &sealed.ciphertext, &sealed.tag).is_ok());
    let failed = Err(Error::DecryptionFailed { culprits: vec![] });

    for bit in [0, 9, 79] {
        let mut ct = sealed.ciphertext.clone();
        ct[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(decrypt(&input, &aad, &ct, &sealed.tag).map(|o| o.value.to_vec()), failed, "ciphertext bit {bit}");
    }
    for bit in [0, 127] {
        let mut tag = sealed.tag;
        tag[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(decrypt(&input, &aad, &sealed.ciphertext, &tag).map(|o| o.value.to_vec()), failed, "tag bit {bit}");
    }
    for bit in [0, 127] {
        let mut seed = *input.seed();
        seed[bit / 8] ^= 1 << (bit % 8);
        let other = DprfInput::new(input.key_id(), input.version(), seed).unwrap();
        assert_eq!(
            decrypt(&other, &aad, &sealed.ciphertext, &sealed.tag).map(|o| o.value.to_vec()),
            failed,
            "seed bit {bit}"
        );
    }
    let mut bad_aad = aad.clone();
    bad_aad[3] ^= 0x10;
    assert_eq!(decrypt(&input, &bad_aad, &sealed.ciphertext, &sealed.tag).map(|o| o.value.to_vec()), failed, "aad");
    let other_version = DprfInput::new(input.key_id(), input.version() ^ 1, *input.seed()).unwrap();
    assert_eq!(
        decrypt(&other_version, &aad, &sealed.ciphertext, &sealed.tag).map(|o| o.value.to_vec()),
        failed,
        "version"
    );
    let other_key = DprfInput::new("K", input.version(), *input.seed()).unwrap();
    assert_eq!(decrypt(&other_key, &aad, &sealed.ciphertext, &sealed.tag).map(|o| o.value.to_vec()), failed, "key id");
}

#[test]
fn decrypt_with_a_bad_partial_among_the_first_t_names_it_and_still_succeeds() {
    let f = fixture();
    let mut r = rng(6);
    let input = DprfInput::random("k", 1, &mut r).unwrap();
    let sealed =
        aead::encrypt(&f.package, &input, &f.partials(&input, &[0, 1, 2]), b"", b"secret", &mut r).unwrap().value;
    let mut partials = f.partials(&input, &[0, 1, 2, 3, 4]);
    partials[1] = partials[1].dangerous_with_value_of(&partials[3]);
    let opened = aead::decrypt(&f.package, &input, &partials, b"", &sealed.ciphertext, &sealed.tag).unwrap();
    assert_eq!(&opened.value[..], b"secret");
    assert_eq!(opened.culprits, vec![NodeId::new(2).unwrap()]);

    // With only t partials and one of them bad, it fails, and still names the culprit.
    let err = aead::decrypt(&f.package, &input, &partials[..3], b"", &sealed.ciphertext, &sealed.tag).unwrap_err();
    assert_eq!(err, Error::DecryptionFailed { culprits: vec![NodeId::new(2).unwrap()] });
}

#[test]
fn encrypt_skips_a_bad_partial_and_the_result_decrypts() {
    let f = fixture();
    let mut r = rng(7);
    let input = DprfInput::random("k", 1, &mut r).unwrap();
    let mut partials = f.partials(&input, &[0, 1, 2, 3]);
    partials[0] = partials[0].dangerous_with_value_of(&partials[1]);
    let sealed = aead::encrypt(&f.package, &input, &partials, b"a", b"payload", &mut r).unwrap();
    assert_eq!(sealed.culprits, vec![NodeId::new(1).unwrap()]);
    let opened = aead::decrypt(
        &f.package,
        &input,
        &f.partials(&input, &[2, 3, 4]),
        b"a",
        &sealed.value.ciphertext,
        &sealed.value.tag,
    )
    .unwrap();
    assert_eq!(&opened.value[..], b"payload");
}

#[test]
fn blob_round_trips_and_rejects_bad_encodings() {
    let blob = Blob { version: 0x0102_0304, seed: [9; 16], ciphertext: b"abc".to_vec(), tag: [7; 16] };
    let bytes = blob.to_bytes();
    assert_eq!(bytes.len(), Blob::OVERHEAD + 3);
    assert_eq!(bytes[0], Blob::FORMAT);
    assert_eq!(&bytes[1..5], &[1, 2, 3, 4]);
    assert_eq!(Blob::from_bytes(&bytes).unwrap(), blob);
    let empty = Blob { ciphertext: vec![], ..blob.clone() };
    assert_eq!(Blob::from_bytes(&empty.to_bytes()).unwrap(), empty);
    let mut wrong_format = bytes.clone();
    wrong_format[0] = 2;
    assert_eq!(Blob::from_bytes(&wrong_format), Err(Error::UnsupportedVersion { what: "ciphertext blob", version: 2 }));
    for len in 0..Blob::OVERHEAD {
        assert!(matches!(
            Blob::from_bytes(&bytes[..len]),
            Err(Error::Malformed { .. }) | Err(Error::UnsupportedVersion { .. })
        ));
    }
    assert_eq!(blob.input("key").unwrap().version(), 0x0102_0304);
}

#[test]
fn an_opened_result_never_prints_its_value() {
    let opened = hyok_threshold::Opened { value: b"plaintext!".to_vec(), culprits: vec![] };
    let printed = format!("{opened:?}");
    assert!(printed.contains("<redacted>") && !printed.contains("112, 108"), "{printed}");
}
