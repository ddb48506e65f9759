//! CPU vs GPU: scoring N candidates (the GPU time includes uploading the candidates and reading the
//! scores back; "gpu_resident" keeps the candidates on the GPU and sends only context and head), and
//! the batched learning gradient. Embeddings are random unit vectors (D = 64), so only the head is
//! timed. `cargo bench -p feedloop-gpu --bench scoring`; numbers go in gpu/README.md, never into
//! assertions. Without an adapter only the CPU rows run.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use feedloop_core::head::{PairFeatures, RewardHead};
use feedloop_core::learning::Example;
use feedloop_core::Embeddings;
use feedloop_gpu::{cpu, GpuBackend};
use pollster::block_on;

const D: usize = 64;
const MAX_TOKENS: usize = 512;

/// Deterministic pseudo-random numbers in [-1, 1) (SplitMix64), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn signed(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn unit_vector(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..D).map(|_| self.signed()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / norm).collect()
    }

    fn embeddings(&mut self, n: usize) -> Embeddings {
        Embeddings {
            dimensions: D,
            values: (0..n).flat_map(|_| self.unit_vector()).collect(),
            token_counts: (0..n).map(|i| 1 + i % MAX_TOKENS).collect(),
            token_ids: Vec::new(),
        }
    }

    fn head(&mut self) -> RewardHead {
        let v: Vec<f32> = (0..2 * D + 3).map(|_| self.signed()).collect();
        RewardHead::from_vector(D, &v).unwrap()
    }

    fn examples(&mut self, n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                id: i as u64,
                x: PairFeatures::new(
                    &self.unit_vector(),
                    &self.unit_vector(),
                    i % 100,
                    MAX_TOKENS,
                )
                .to_vector(),
                label: (i % 2) as f32,
                weight: 1.0,
            })
            .collect()
    }
}

fn gpu() -> Option<GpuBackend> {
    let gpu = block_on(GpuBackend::new()).expect("GPU backend");
    match &gpu {
        Some(gpu) => eprintln!(
            "GPU: {} via {}",
            gpu.adapter_info().name,
            gpu.backend_name()
        ),
        None => eprintln!("no GPU adapter: CPU rows only"),
    }
    gpu
}

fn scoring(c: &mut Criterion) {
    let gpu = gpu();
    let mut rng = Rng(42);
    let context = rng.unit_vector();
    let head = rng.head();
    let mut group = c.benchmark_group("score");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [1usize, 100, 10_000, 100_000] {
        let candidates = rng.embeddings(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("cpu", n), &candidates, |b, cands| {
            b.iter(|| cpu::score(&context, cands, None, &head, MAX_TOKENS))
        });
        let Some(gpu) = &gpu else { continue };
        group.bench_with_input(
            BenchmarkId::new("gpu_upload", n),
            &candidates,
            |b, cands| {
                b.iter(|| block_on(gpu.score(&context, cands, None, &head, MAX_TOKENS)).unwrap())
            },
        );
        let resident = block_on(gpu.upload_candidates(&candidates, MAX_TOKENS)).unwrap();
        group.bench_with_input(BenchmarkId::new("gpu_resident", n), &resident, |b, res| {
            b.iter(|| block_on(gpu.score_resident(res, &context, None, &head)).unwrap())
        });
    }
    group.finish();
}

fn gradient(c: &mut Criterion) {
    let gpu = gpu();
    let mut rng = Rng(7);
    let theta: Vec<f32> = rng.head().to_vector();
    let mut group = c.benchmark_group("gradient");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for n in [32usize, 256, 4_096, 32_768] {
        let examples = rng.examples(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("cpu", n), &examples, |b, ex| {
            b.iter(|| cpu::gradient(&theta, ex, 1.0))
        });
        let Some(gpu) = &gpu else { continue };
        group.bench_with_input(BenchmarkId::new("gpu", n), &examples, |b, ex| {
            b.iter(|| block_on(gpu.gradient(&theta, ex, 1.0)).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, scoring, gradient);
criterion_main!(benches);
