//! What the GPU tests share: one backend per test binary, seeded random inputs, the tolerance.

#![allow(dead_code)]

use std::sync::OnceLock;

use feedloop_core::head::{PairFeatures, RewardHead};
use feedloop_core::Embeddings;
use feedloop_gpu::GpuBackend;

/// `|gpu − cpu| ≤ 1e-5·max(1, |cpu|)`.
pub const TOLERANCE: f32 = 1e-5;

/// The shared backend, or `None` (the test returns early) when there is no adapter and
/// `FEEDLOOP_GPU_OPTIONAL=1`. Without that variable a missing adapter fails the test, so CI notices
/// a missing lavapipe (`apt-get install mesa-vulkan-drivers`).
pub fn backend() -> Option<&'static GpuBackend> {
    static BACKEND: OnceLock<Option<GpuBackend>> = OnceLock::new();
    BACKEND.get_or_init(|| open_backend("shared")).as_ref()
}

/// A backend of the test's own (for tests that break it).
pub fn own_backend() -> Option<GpuBackend> {
    open_backend("own")
}

fn open_backend(which: &str) -> Option<GpuBackend> {
    match pollster::block_on(GpuBackend::new()) {
        Ok(Some(gpu)) => {
            let info = gpu.adapter_info();
            eprintln!(
                "GPU ({which}): {} via {} ({:?}, driver {} {})",
                info.name,
                gpu.backend_name(),
                info.device_type,
                info.driver,
                info.driver_info
            );
            Some(gpu)
        }
        Ok(None) if optional() => {
            eprintln!("no GPU adapter; skipped because FEEDLOOP_GPU_OPTIONAL=1");
            None
        }
        Ok(None) => panic!(
            "no GPU adapter found (natively: install lavapipe, `apt-get install -y \
             mesa-vulkan-drivers`); set FEEDLOOP_GPU_OPTIONAL=1 to skip the GPU tests"
        ),
        Err(e) if optional() => {
            eprintln!("GPU unusable ({e}); skipped because FEEDLOOP_GPU_OPTIONAL=1");
            None
        }
        Err(e) => panic!("the GPU adapter could not be used: {e}"),
    }
}

fn optional() -> bool {
    std::env::var("FEEDLOOP_GPU_OPTIONAL").is_ok_and(|v| v == "1")
}

/// The largest |a − b| / max(1, |b|), and fails if it exceeds [`TOLERANCE`].
pub fn assert_close(what: &str, gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    let mut worst = 0f32;
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        let error = (a - b).abs() / b.abs().max(1.0);
        assert!(
            feedloop_gpu::close_to(*a, *b, TOLERANCE),
            "{what}[{i}]: GPU {a} vs CPU {b} (relative error {error:e})"
        );
        worst = worst.max(error);
    }
    worst
}

/// SplitMix64: seeded, dependency-free random numbers.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn signed(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// A random L2-normalized vector (as the model's embeddings are).
    pub fn unit_vector(&mut self, dimensions: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dimensions).map(|_| self.signed()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.into_iter().map(|x| x / norm).collect()
    }

    /// `count` random unit embeddings with random token counts up to `max_tokens`.
    pub fn embeddings(&mut self, count: usize, dimensions: usize, max_tokens: usize) -> Embeddings {
        let mut values = Vec::with_capacity(count * dimensions);
        for _ in 0..count {
            values.extend(self.unit_vector(dimensions));
        }
        Embeddings {
            dimensions,
            values,
            token_counts: (0..count).map(|_| self.below(max_tokens + 1)).collect(),
            token_ids: Vec::new(),
        }
    }

    /// A head with every parameter random in [-1, 1).
    pub fn head(&mut self, dimensions: usize) -> RewardHead {
        let v: Vec<f32> = (0..2 * dimensions + 3).map(|_| self.signed()).collect();
        RewardHead::from_vector(dimensions, &v).unwrap()
    }

    /// A head with a lexical term (contract 2 layout), every parameter random in [-1, 1).
    pub fn lexical_head(&mut self, dimensions: usize) -> RewardHead {
        let v: Vec<f32> = (0..2 * dimensions + 4).map(|_| self.signed()).collect();
        let head = RewardHead::from_vector(dimensions, &v).unwrap();
        assert!(head.lexical.is_some());
        head
    }

    /// `count` random λ values in [0, 1).
    pub fn lexical_values(&mut self, count: usize) -> Vec<f32> {
        (0..count).map(|_| 0.5 * (self.signed() + 1.0)).collect()
    }

    /// φ of a random (context, candidate) pair, as learning builds its examples.
    pub fn features(&mut self, dimensions: usize, max_tokens: usize) -> Vec<f32> {
        let context = self.unit_vector(dimensions);
        let candidate = self.unit_vector(dimensions);
        PairFeatures::new(&context, &candidate, self.below(max_tokens + 1), max_tokens).to_vector()
    }
}
