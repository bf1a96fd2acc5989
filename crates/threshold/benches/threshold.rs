//! Criterion benchmarks of the hot paths: a node's partial evaluation with its proof, proof
//! verification (one, and a batch of t), and the coordinator's combine (of partials as they
//! are, and of a batch's values made with their Lagrange coefficients), for t = 3, 5, 11; a
//! node's batch of m evaluations with one proof, and the coordinator's check of it, for
//! m = 1, 8, 32.
//!
//! `cargo bench -p hyok-threshold`
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "benchmarks: a failed setup should stop the run")]

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use curve25519_dalek::Scalar;
use hyok_threshold::dealer::dangerous_deal;
use hyok_threshold::dprf::{self, DprfInput, HashedInput};
use hyok_threshold::{Coefficient, NodeId, PartialEvaluation, aead, kem};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;
use std::hint::black_box;

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let input = DprfInput::random("bench-key", 1, &mut rng).unwrap();

    let ids: Vec<NodeId> = (1..=5).map(|i| NodeId::new(i).unwrap()).collect();
    let (shares, package) = dangerous_deal(&Scalar::random(&mut rng), 3, &ids, &mut rng).unwrap();
    c.bench_function("hash_to_point", |b| b.iter(|| black_box(&input).hash_to_point()));
    c.bench_function("partial_evaluation_with_proof", |b| {
        b.iter(|| dprf::evaluate(&shares[0], black_box(&input), &mut rng))
    });
    let one = dprf::evaluate(&shares[0], &input, &mut rng);
    c.bench_function("verify_one_proof", |b| {
        b.iter(|| dprf::vartime_verify(&package, &input, black_box(&one)).unwrap())
    });

    let mut group = c.benchmark_group("by_threshold");
    for t in [3u16, 5, 11] {
        let ids: Vec<NodeId> = (1..=t).map(|i| NodeId::new(i).unwrap()).collect();
        let (shares, package) = dangerous_deal(&Scalar::random(&mut rng), t, &ids, &mut rng).unwrap();
        let partials: Vec<PartialEvaluation> = shares.iter().map(|s| dprf::evaluate(s, &input, &mut rng)).collect();
        group.bench_with_input(BenchmarkId::new("verify_batch", t), &partials, |b, p| {
            b.iter(|| assert!(dprf::vartime_find_invalid(&package, &input, p, &mut rng).unwrap().is_empty()))
        });
        group.bench_with_input(BenchmarkId::new("verify_each", t), &partials, |b, p| {
            b.iter(|| p.iter().for_each(|p| dprf::vartime_verify(&package, &input, p).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("combine", t), &partials, |b, p| {
            b.iter(|| dprf::combine_unchecked(&package, black_box(p)).unwrap())
        });
        // The same set's batch values, each node having applied its Lagrange coefficient over
        // the set: the combine is a sum.
        let hashed = HashedInput::new(input.clone());
        let scaled: Vec<PartialEvaluation> = shares
            .iter()
            .map(|s| {
                let items = [(&hashed, Coefficient::lagrange(&ids, s.node()).unwrap())];
                let (values, proof) = dprf::evaluate_batch(s, &items, &mut rng);
                dprf::vartime_verify_batch(&package, &items, &values, &proof, &mut rng).unwrap().remove(0)
            })
            .collect();
        group.bench_with_input(BenchmarkId::new("combine_with_coefficients", t), &scaled, |b, p| {
            b.iter(|| dprf::combine_unchecked(&package, black_box(p)).unwrap())
        });
        let sealed = aead::encrypt(&package, &input, &partials, b"", &[7u8; 32], &mut rng).unwrap().value;
        group.bench_with_input(BenchmarkId::new("decrypt_combine_first_32B", t), &partials, |b, p| {
            b.iter(|| aead::decrypt(&package, &input, p, b"", &sealed.ciphertext, &sealed.tag).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("encrypt_verify_then_combine_32B", t), &partials, |b, p| {
            b.iter(|| aead::encrypt(&package, &input, p, b"", &[7u8; 32], &mut rng).unwrap())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("node_batch");
    for m in [1usize, 8, 32] {
        let inputs: Vec<HashedInput> =
            (0..m).map(|_| HashedInput::new(DprfInput::random("bench-key", 1, &mut rng).unwrap())).collect();
        let refs: Vec<dprf::BatchItem<'_>> =
            inputs.iter().map(|i| (i, Coefficient::lagrange(&ids[..3], ids[0]).unwrap())).collect();
        group.bench_with_input(BenchmarkId::new("evaluate_batch", m), &refs, |b, r| {
            b.iter(|| dprf::evaluate_batch(&shares[0], black_box(r), &mut rng))
        });
        let (values, proof) = dprf::evaluate_batch(&shares[0], &refs, &mut rng);
        group.bench_with_input(BenchmarkId::new("verify_batch_proof", m), &refs, |b, r| {
            b.iter(|| dprf::vartime_verify_batch(&package, black_box(r), &values, &proof, &mut rng).unwrap())
        });
    }
    group.finish();

    let wrapped = kem::wrap(package.group_key(), &[1u8; 32], b"label", &mut rng).unwrap();
    c.bench_function("kem_wrap", |b| {
        b.iter(|| kem::wrap(package.group_key(), &[1u8; 32], b"label", &mut rng).unwrap())
    });
    c.bench_function("kem_partial_unwrap", |b| {
        b.iter(|| kem::partial_unwrap(&shares[0], package.group_key(), &wrapped, b"label", &mut rng).unwrap())
    });
}

criterion_group!(threshold, benches);
criterion_main!(threshold);
