//! Criterion benchmarks of threshold RSA-2048 (3-of-5): a node's constant-time partial
//! exponentiation `c^(2Δ·s_i) mod N`, the coordinator's combine of `t = 3` partials (with the
//! `y^e ≡ c` check), combine plus OAEP decoding, and the combine when the first `t` partials
//! include a bad one (subset search and culprit naming over 4 partials).
//!
//! `cargo bench -p hyok-threshold --bench rsa`
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmarks: a failed setup should stop the run")]

use criterion::{Criterion, criterion_group, criterion_main};
use hyok_threshold::rsa::deal::{PrivateKey, deal};
use hyok_threshold::rsa::{RsaPartial, combine, oaep, partial};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;

const PEM: &str = include_str!("../tests/fixtures/rsa2048-pkcs8.pem");

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let key = PrivateKey::from_pem(PEM).unwrap();
    let (shares, package) = deal(&key, 3, 5, &mut rng).unwrap();
    let ciphertext = oaep::encrypt(package.public_key(), &[7u8; 32], &mut rng).unwrap();
    let partials: Vec<RsaPartial> =
        shares.iter().map(|s| partial::evaluate(s, &package, &ciphertext).unwrap()).collect();

    c.bench_function("rsa2048_node_partial_n5", |b| {
        b.iter(|| partial::evaluate(&shares[0], &package, black_box(&ciphertext)).unwrap())
    });
    c.bench_function("rsa2048_combine_t3", |b| {
        b.iter(|| combine::combine(&package, &ciphertext, black_box(&partials[..3])).unwrap())
    });
    c.bench_function("rsa2048_combine_and_oaep_decode_t3", |b| {
        b.iter(|| combine::decrypt(&package, &ciphertext, black_box(&partials[..3])).unwrap())
    });
    let mut with_bad = partials[..4].to_vec();
    with_bad[0] = RsaPartial::new(with_bad[0].node(), partials[4].value().to_vec());
    c.bench_function("rsa2048_combine_t3_of_4_one_bad", |b| {
        b.iter(|| {
            let opened = combine::combine(&package, &ciphertext, black_box(&with_bad)).unwrap();
            assert_eq!(opened.culprits.len(), 1);
        })
    });
    c.bench_function("rsa2048_oaep_encrypt", |b| {
        b.iter(|| oaep::encrypt(package.public_key(), black_box(&[7u8; 32]), &mut rng).unwrap())
    });
    c.bench_function("rsa2048_deal_3_of_5", |b| b.iter(|| deal(&key, 3, 5, &mut rng).unwrap()));
}

criterion_group!(rsa, benches);
criterion_main!(rsa);
