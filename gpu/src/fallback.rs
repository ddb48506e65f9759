//! GPU when it pays, the CPU otherwise — and the CPU whenever the GPU fails, so a caller always
//! gets the result (and learns which backend produced it).

use feedloop_core::head::RewardHead;
use feedloop_core::learning::Example;
use feedloop_core::Embeddings;

use crate::{cpu, use_gpu, GpuBackend, GpuError};

/// A result and where it was computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Computed<T> {
    pub value: T,
    /// `"webgpu"`, `"vulkan"` or `"cpu"`.
    pub backend: &'static str,
    /// Why the GPU was tried and not used (the CPU result is in `value`).
    pub gpu_error: Option<GpuError>,
}

impl<T> Computed<T> {
    fn cpu(value: T, gpu_error: Option<GpuError>) -> Self {
        Self {
            value,
            backend: "cpu",
            gpu_error,
        }
    }
}

/// Scores on the GPU when there is one, it is not lost and the batch is large enough
/// ([`use_gpu`]), or when `force_gpu`; on the CPU otherwise or if the GPU call fails.
pub async fn score(
    gpu: Option<&GpuBackend>,
    force_gpu: bool,
    context: &[f32],
    candidates: &Embeddings,
    lexical: Option<&[f32]>,
    head: &RewardHead,
    max_tokens: usize,
) -> Computed<Vec<f32>> {
    let chosen =
        gpu.filter(|g| !g.is_lost() && (force_gpu || use_gpu(candidates.len(), g.is_software())));
    let mut gpu_error = None;
    if let Some(gpu) = chosen {
        match gpu
            .score(context, candidates, lexical, head, max_tokens)
            .await
        {
            Ok(value) => {
                return Computed {
                    value,
                    backend: gpu.backend_name(),
                    gpu_error: None,
                }
            }
            Err(e) => gpu_error = Some(e),
        }
    }
    Computed::cpu(
        cpu::score(context, candidates, lexical, head, max_tokens),
        gpu_error,
    )
}

/// Σᵢ wᵢ·clip(∇Lᵢ(θ)) on the GPU when there is one and it is not lost, else (or on failure) on the CPU.
pub async fn gradient(
    gpu: Option<&GpuBackend>,
    theta: &[f32],
    examples: &[Example],
    clip_norm: f32,
) -> Computed<Vec<f32>> {
    let mut gpu_error = None;
    if let Some(gpu) = gpu.filter(|g| !g.is_lost()) {
        match gpu.gradient(theta, examples, clip_norm).await {
            Ok(value) => {
                return Computed {
                    value,
                    backend: gpu.backend_name(),
                    gpu_error: None,
                }
            }
            Err(e) => gpu_error = Some(e),
        }
    }
    Computed::cpu(cpu::gradient(theta, examples, clip_norm), gpu_error)
}
