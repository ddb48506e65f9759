//! The WebGPU path in real headless Chromium (wasm-bindgen-test): the same scores and gradients as
//! the CPU path to 1e-5 (`|gpu − cpu| ≤ 1e-5·max(1, |cpu|)`) for 1, 100 and 10,000 candidates, and
//! the fallback to the CPU when the browser has no adapter.
//!
//! What runs depends on `FEEDLOOP_WEBGPU` at compile time:
//! - `required`: an adapter must be found (Chromium with `--enable-unsafe-webgpu
//!   --use-webgpu-adapter=swiftshader`); no adapter fails.
//! - `absent`: there must be none (Chromium without those flags: `navigator.gpu` exists but
//!   `requestAdapter()` gives null); the CPU fallback is checked.
//! - unset: whichever the browser gives is checked and reported on the console.
#![cfg(target_arch = "wasm32")]

use feedloop_core::head::{PairFeatures, RewardHead};
use feedloop_core::learning::Example;
use feedloop_core::Embeddings;
use feedloop_gpu::{close_to, cpu, fallback, GpuBackend};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const D: usize = 64;
const MAX_TOKENS: usize = 512;
const TOLERANCE: f32 = 1e-5;

/// SplitMix64 in [-1, 1): seeded inputs without a dependency.
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
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.into_iter().map(|x| x / norm).collect()
    }

    fn embeddings(&mut self, n: usize) -> Embeddings {
        Embeddings {
            dimensions: D,
            values: (0..n).flat_map(|_| self.unit_vector()).collect(),
            token_counts: (0..n).map(|i| (i * 37) % (MAX_TOKENS + 1)).collect(),
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
                x: PairFeatures::new(&self.unit_vector(), &self.unit_vector(), i % 50, MAX_TOKENS)
                    .to_vector(),
                label: [0.0, 1.0, 0.5][i % 3],
                weight: [1.0, 0.25][i % 2],
            })
            .collect()
    }
}

fn expectation() -> Option<&'static str> {
    option_env!("FEEDLOOP_WEBGPU")
}

/// The browser's adapter, checked against `FEEDLOOP_WEBGPU`.
async fn adapter() -> Option<GpuBackend> {
    let gpu = GpuBackend::new().await.expect("requesting a WebGPU device");
    match (&gpu, expectation()) {
        (Some(gpu), Some("absent")) => panic!(
            "FEEDLOOP_WEBGPU=absent but the browser gave an adapter ({})",
            gpu.adapter_info().name
        ),
        (None, Some("required")) => panic!(
            "FEEDLOOP_WEBGPU=required but requestAdapter() gave none (Chromium needs \
             --enable-unsafe-webgpu --use-webgpu-adapter=swiftshader)"
        ),
        (Some(gpu), _) => console_log!(
            "WebGPU adapter: {:?} via {}",
            gpu.adapter_info(),
            gpu.backend_name()
        ),
        (None, _) => console_log!("no WebGPU adapter: checking the CPU fallback"),
    }
    gpu
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            close_to(*a, *b, TOLERANCE),
            "{what}[{i}]: GPU {a} vs CPU {b}"
        );
    }
}

#[wasm_bindgen_test]
async fn webgpu_scores_equal_cpu_scores_for_1_100_and_10000_candidates() {
    let gpu = adapter().await;
    let mut rng = Rng(11);
    for n in [1, 100, 10_000] {
        let context = rng.unit_vector();
        let candidates = rng.embeddings(n);
        let head = rng.head();
        let reference = cpu::score(&context, &candidates, &head, MAX_TOKENS);
        // Forced onto the GPU whatever the batch size; the CPU when there is no adapter.
        let scored =
            fallback::score(gpu.as_ref(), true, &context, &candidates, &head, MAX_TOKENS).await;
        assert_eq!(scored.gpu_error, None, "N = {n}");
        match &gpu {
            Some(_) => {
                assert_eq!(scored.backend, "webgpu");
                assert_close(&format!("scores (N = {n})"), &scored.value, &reference);
            }
            None => {
                assert_eq!(scored.backend, "cpu");
                assert_eq!(scored.value, reference);
            }
        }
        console_log!("N = {n}: scored on {}", scored.backend);
    }
}

#[wasm_bindgen_test]
async fn webgpu_gradient_equals_cpu_gradient() {
    let gpu = adapter().await;
    let mut rng = Rng(12);
    let theta = rng.head().to_vector();
    let examples = rng.examples(1_000);
    let reference = cpu::gradient(&theta, &examples, 0.1);
    let computed = fallback::gradient(gpu.as_ref(), &theta, &examples, 0.1).await;
    assert_eq!(computed.gpu_error, None);
    assert_eq!(
        computed.backend,
        if gpu.is_some() { "webgpu" } else { "cpu" }
    );
    assert_close("gradient", &computed.value, &reference);
}

#[wasm_bindgen_test]
async fn a_lost_webgpu_device_falls_back_to_the_cpu() {
    let Some(gpu) = adapter().await else {
        return;
    };
    let mut rng = Rng(13);
    let (context, candidates, head) = (rng.unit_vector(), rng.embeddings(100), rng.head());
    gpu.destroy();
    let scored = fallback::score(Some(&gpu), true, &context, &candidates, &head, MAX_TOKENS).await;
    assert_eq!(scored.backend, "cpu");
    assert_eq!(
        scored.value,
        cpu::score(&context, &candidates, &head, MAX_TOKENS)
    );
    console_log!("after destroy(): {:?}", scored.gpu_error);
}
