//! Throughput of the exact sampler and the privatizer (numbers only, no assertions).
//!
//! `CARGO_TARGET_DIR=/tmp/privacy-target cargo bench -p feedloop-privacy`

use std::hint::black_box;

use chacha20::ChaCha20Rng;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use feedloop_privacy::rng::OsCsprng;
use feedloop_privacy::sampler::DiscreteGaussian;
use feedloop_privacy::{privatize, PrivatizerConfig};
use rand_core::SeedableRng;

const BATCH: usize = 10_000;

fn discrete_gaussian(c: &mut Criterion) {
    let mut group = c.benchmark_group("discrete_gaussian");
    group.throughput(Throughput::Elements(BATCH as u64));
    for sigma in [1.0f64, 10.0, 1000.0] {
        let sampler = DiscreteGaussian::from_sigma(sigma).unwrap();
        let mut out = vec![0i64; BATCH];
        let mut rng = OsCsprng::new().unwrap();
        group.bench_with_input(BenchmarkId::new("os_chacha20", sigma), &sigma, |b, _| {
            b.iter(|| {
                sampler.fill(&mut rng, &mut out);
                black_box(&out);
            })
        });
    }
    // A non-dyadic σ as the privatizer produces it (σ_lat² rounded up to 53 bits), and
    // the exact square of σ = 3.7 (106-bit numerator: big-integer acceptance tests).
    let cfg = PrivatizerConfig::new(1.0, 0.013, 3.7).unwrap();
    let (a, k) = cfg.lattice_variance();
    for (name, sampler) in [
        (
            "privatizer_sigma_284.6",
            DiscreteGaussian::from_dyadic_variance(a, k).unwrap(),
        ),
        (
            "exact_f64_sigma_3.7_bigint",
            DiscreteGaussian::from_sigma(3.7).unwrap(),
        ),
    ] {
        let mut out = vec![0i64; BATCH];
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        group.bench_function(name, |b| {
            b.iter(|| {
                sampler.fill(&mut rng, &mut out);
                black_box(&out);
            })
        });
    }
    group.finish();
}

fn privatizer(c: &mut Criterion) {
    let mut group = c.benchmark_group("privatize");
    group.sample_size(20);
    for d in [1_000usize, 100_000] {
        // C = 1, γ = C/(4√d), σ = 1: σ_lat = 4√d (126 at 1k, 1265 at 100k).
        let cfg = PrivatizerConfig::new(1.0, 1.0 / (4.0 * (d as f64).sqrt()), 1.0).unwrap();
        let update: Vec<f32> = (0..d).map(|i| ((i as f32) * 0.731).sin()).collect();
        let mut rng = OsCsprng::new().unwrap();
        group.throughput(Throughput::Elements(d as u64));
        group.bench_with_input(BenchmarkId::from_parameter(d), &d, |b, _| {
            b.iter(|| black_box(privatize(&update, &cfg, &mut rng).unwrap()))
        });
    }
    group.finish();
}

criterion_group!(benches, discrete_gaussian, privatizer);
criterion_main!(benches);
