//! feedloop's WebGPU compute path (wgpu): the batched reward head, the embedding bag and the batched
//! learning gradient as WGSL kernels, giving the same numbers as the CPU path in `feedloop-core`
//! (to 1e-5 relative, `|gpu − cpu| ≤ 1e-5·max(1, |cpu|)`; the tests hold it to that).
//!
//! The CPU path stays the reference and the fallback: [`GpuBackend::new`] returns `Ok(None)` when
//! there is no adapter (a browser may expose `navigator.gpu` and still have none), and every GPU
//! call returns a [`GpuError`] instead of panicking — on a lost device too — so the caller can run
//! the same computation with [`cpu`]. [`use_gpu`] decides by batch size whether the GPU is worth it.
//!
//! Natively this runs on Vulkan (lavapipe in CI); on wasm32 on the browser's WebGPU.
//!
//! ```no_run
//! # async fn demo(model: &feedloop_core::RewardModel) -> Result<(), feedloop_gpu::GpuError> {
//! let context = model.embed(&["how do I reset my password?"]).unwrap();
//! let candidates = model.embed(&["Open Settings › Security.", "Bananas are yellow."]).unwrap();
//! let max_tokens = model.info().max_tokens;
//! let scores = match feedloop_gpu::GpuBackend::new().await? {
//!     Some(gpu) => gpu.score(context.row(0), &candidates, model.head(), max_tokens).await?,
//!     None => feedloop_gpu::cpu::score(context.row(0), &candidates, model.head(), max_tokens),
//! };
//! # let _ = scores; Ok(()) }
//! ```

pub mod cpu;
mod device;
pub mod fallback;
mod kernels;

pub use device::{GpuBackend, GpuTokenTable, ResidentCandidates};

/// Why a GPU call gave no result. Every variant means "run it on the CPU instead".
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    #[error("no GPU device could be opened: {0}")]
    RequestDevice(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("the GPU rejected the work: {0}")]
    Rejected(String),
    #[error("reading the results back from the GPU failed: {0}")]
    Readback(String),
    #[error("the batch is too large for this GPU: {0}")]
    TooLarge(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

pub type Result<T, E = GpuError> = std::result::Result<T, E>;

/// Below this many candidates one scoring call is faster on the CPU even on a hardware GPU: the
/// GPU's fixed cost per call (upload, submit, readback; ~105 µs for one candidate on lavapipe)
/// outweighs the CPU's ~0.17 µs per candidate (native, D = 64) below ~620 candidates, rounded up
/// to leave room for the per-candidate cost a GPU still has. Measured with `benches/scoring.rs`
/// (numbers in gpu/README.md); no hardware GPU was available to refine it.
pub const GPU_MIN_CANDIDATES: usize = 1024;

/// Whether to score `candidates` candidates on the GPU. Never on a software adapter (lavapipe,
/// llvmpipe: it runs on the same CPU cores and measured ~5× slower than the CPU path at every batch
/// size); on hardware from [`GPU_MIN_CANDIDATES`] on. Pure, so tests and the wasm layer share it.
pub fn use_gpu(candidates: usize, software_adapter: bool) -> bool {
    !software_adapter && candidates >= GPU_MIN_CANDIDATES
}

/// The name of the backend that computes a result: `"webgpu"` (browser), `"vulkan"` (native) or
/// `"cpu"` (no GPU, or the fallback).
pub fn backend_name(gpu: Option<&GpuBackend>) -> &'static str {
    gpu.map_or("cpu", GpuBackend::backend_name)
}

/// `|a − b| ≤ tolerance·max(1, |b|)`: how GPU results are compared with the CPU reference `b`.
pub fn close_to(a: f32, b: f32, tolerance: f32) -> bool {
    (a - b).abs() <= tolerance * b.abs().max(1.0)
}
