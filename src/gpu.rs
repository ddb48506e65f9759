//! WebGPU for the wasm layer, without wasm-bindgen types: find the browser's adapter once, score
//! through it when the batch is large enough, and fall back to the CPU on any GPU error (a lost
//! device included) — the caller always gets scores, plus the name of the backend that made them.
//!
//! Not wired yet: needs `mod gpu;` in lib.rs and `feedloop-gpu = { path = "gpu" }` in the root
//! crate's `[dependencies]`.

use feedloop_core::head::RewardHead;
use feedloop_core::learning::Example;
use feedloop_core::Embeddings;
pub use feedloop_gpu::fallback::Computed;
pub use feedloop_gpu::{backend_name, use_gpu, GpuBackend, GpuError, GPU_MIN_CANDIDATES};

/// The browser's WebGPU device, or `None`: no `navigator.gpu`, `requestAdapter()` gave null, or
/// the device could not be opened. Never panics; await it once at start-up and keep the result.
pub async fn detect() -> Option<GpuBackend> {
    GpuBackend::new().await.ok().flatten()
}

/// The GPU this page scores with, dropped for good once it is lost (the page then stays on the CPU).
#[derive(Debug, Default)]
pub struct WebGpu {
    gpu: Option<GpuBackend>,
}

impl WebGpu {
    /// Detects the adapter ([`detect`]).
    pub async fn detect() -> Self {
        Self { gpu: detect().await }
    }

    /// `"webgpu"` while a device is held, else `"cpu"`.
    pub fn backend(&self) -> &'static str {
        backend_name(self.gpu.as_ref())
    }

    /// Scores on the GPU when the batch is large enough ([`use_gpu`]), else or on error on the CPU.
    pub async fn score(
        &mut self,
        context: &[f32],
        candidates: &Embeddings,
        head: &RewardHead,
        max_tokens: usize,
    ) -> Computed<Vec<f32>> {
        let scored = feedloop_gpu::fallback::score(
            self.gpu.as_ref(),
            false,
            context,
            candidates,
            head,
            max_tokens,
        )
        .await;
        self.forget_if_lost();
        scored
    }

    /// The batched learning gradient, on the GPU when there is one, else or on error on the CPU.
    pub async fn gradient(
        &mut self,
        theta: &[f32],
        examples: &[Example],
        clip_norm: f32,
    ) -> Computed<Vec<f32>> {
        let computed =
            feedloop_gpu::fallback::gradient(self.gpu.as_ref(), theta, examples, clip_norm).await;
        self.forget_if_lost();
        computed
    }

    fn forget_if_lost(&mut self) {
        if self.gpu.as_ref().is_some_and(GpuBackend::is_lost) {
            self.gpu = None;
        }
    }
}
