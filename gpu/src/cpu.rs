//! The CPU path, built from `feedloop-core` only: the reference the GPU kernels are held to, and the
//! fallback when there is no GPU or a GPU call fails. Same inputs and outputs as [`crate::GpuBackend`].

use feedloop_core::head::{PairFeatures, RewardHead};
use feedloop_core::learning::{clipped_gradient, Example};
use feedloop_core::Embeddings;

/// The head's score of every candidate for `context`, exactly as `RewardModel::score` computes it;
/// `lexical` is each candidate's λ against the context (`RewardModel::lexical_values`), for a head
/// with a lexical term.
pub fn score(
    context: &[f32],
    candidates: &Embeddings,
    lexical: Option<&[f32]>,
    head: &RewardHead,
    max_tokens: usize,
) -> Vec<f32> {
    (0..candidates.len())
        .map(|i| {
            let features = PairFeatures::new(
                context,
                candidates.row(i),
                candidates.token_counts[i],
                max_tokens,
            )
            .with_lexical(lexical.and_then(|l| l.get(i).copied()));
            head.score(&features)
        })
        .collect()
}

/// Σᵢ wᵢ·clip(∇Lᵢ(θ)): the weighted sum of the per-example clipped gradients that `sgd_step` applies
/// one at a time (`learning::clipped_gradient`; an example whose gradient is not finite adds
/// nothing, as `sgd_step` skips it). Summed in f64, so it is the accurate value.
pub fn gradient(theta: &[f32], examples: &[Example], clip_norm: f32) -> Vec<f32> {
    let mut sum = vec![0f64; theta.len()];
    for example in examples {
        if let Some(g) = clipped_gradient(theta, example, clip_norm) {
            for (s, g) in sum.iter_mut().zip(g) {
                *s += f64::from(example.weight * g);
            }
        }
    }
    sum.into_iter().map(|s| s as f32).collect()
}
