//! Costs of secure aggregation per report (numbers only, no assertions): the device's shard +
//! seal, each aggregator's verification, and the upload's size (printed once per dimension).
//!
//! `cargo bench -p feedloop-secagg`

use std::hint::black_box;

use chacha20::rand_core::SeedableRng;
use chacha20::ChaCha20Rng;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use feedloop_privacy::{clip_to_lattice, PrivatizerConfig};
use feedloop_secagg::{
    helper_verify, leader_finish, leader_init, seal_report, HpkeKeyPair, SecureRound, VerifyKey,
};

fn update(d: usize) -> Vec<f32> {
    (0..d)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 500.0)
        .collect()
}

fn secure_aggregation(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let config = PrivatizerConfig::new(1.0, 1e-3, 20.0).unwrap();
    let leader = HpkeKeyPair::generate(&mut rng);
    let helper = HpkeKeyPair::generate(&mut rng);
    let verify_key = VerifyKey::generate(&mut rng);
    let mut group = c.benchmark_group("secagg");
    group.sample_size(10);
    for d in [131usize, 10_000] {
        let round = SecureRound::for_privatizer(1, d, &config, 1).unwrap();
        let values = update(d);
        let report = seal_report(
            clip_to_lattice(&values, &config, &mut rng).unwrap(),
            &round,
            leader.public(),
            helper.public(),
            &mut rng,
        )
        .unwrap();
        let (pending, request) = leader_init(&round, &verify_key, &leader, &report).unwrap();
        let (_, response) = helper_verify(&round, &verify_key, &helper, &request).unwrap();
        println!(
            "d = {d}: report {} bytes, leader → helper {} bytes, helper → leader {} bytes",
            report.to_bytes().len(),
            request.to_bytes().len(),
            response.to_bytes().len()
        );
        drop(pending);
        group.bench_with_input(BenchmarkId::new("device_clip_shard_seal", d), &d, |b, _| {
            b.iter(|| {
                let lattice = clip_to_lattice(&values, &config, &mut rng).unwrap();
                black_box(
                    seal_report(lattice, &round, leader.public(), helper.public(), &mut rng)
                        .unwrap(),
                )
            })
        });
        group.bench_with_input(BenchmarkId::new("leader_init", d), &d, |b, _| {
            b.iter(|| black_box(leader_init(&round, &verify_key, &leader, &report).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("helper_verify", d), &d, |b, _| {
            b.iter(|| black_box(helper_verify(&round, &verify_key, &helper, &request).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("leader_finish", d), &d, |b, _| {
            b.iter_batched(
                || {
                    leader_init(&round, &verify_key, &leader, &report)
                        .unwrap()
                        .0
                },
                |pending| black_box(leader_finish(&round, pending, &response).unwrap()),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, secure_aggregation);
criterion_main!(benches);
