//! On-device learning: feedback examples, their logistic losses, and clipped SGD on the reward head.
//!
//! The head is linear in its parameters θ: score = θ · φ with
//! φ = [cos, e_c ⊙ e_r, e_r, ℓ(n), 1] (the order of [`RewardHead::to_vector`]). So every example
//! is one vector `x` and a label `y ∈ [0, 1]` under the logistic loss
//! `L(θ) = softplus(θ·x) − y·θ·x`:
//! - pairwise (Bradley–Terry): x = φ_winner − φ_loser, y = 1 — P(winner ≻ loser) = σ(s_w − s_l);
//! - correction: the pair (edit ≻ original);
//! - thumbs: x = φ, y = 1 or 0; stars: x = φ, y = (stars − 1)/4; flags: y = 0;
//! - implicit signals: like thumbs, with small weights (see `FeedbackWeights`).
//!
//! Two heads: the global head (shipped with the model, later from the server) and the personal head
//! = global + [`LocalLearningState::delta`], which ranks. Only the delta is learned on the device.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::head::RewardHead;

/// One training example: the logistic loss on `label` at score `θ · x`, scaled by `weight`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// Unique across tabs (used to merge replay buffers).
    pub id: u64,
    pub x: Vec<f32>,
    pub label: f32,
    pub weight: f32,
}

/// What the device learned: the personal head's offset from the global head and how many examples
/// shaped it. This is the one thing the privacy layer privatizes and the server aggregates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LocalLearningState {
    /// The global head version this delta is relative to (e.g. "bundled" or a server version).
    pub base_version: String,
    /// personal head − global head, in [`RewardHead::to_vector`] order.
    pub delta: Vec<f32>,
    /// Examples learned from (after caps and zero weights).
    pub example_count: u64,
}

impl LocalLearningState {
    pub fn new(base_version: impl Into<String>, parameter_count: usize) -> Self {
        Self {
            base_version: base_version.into(),
            delta: vec![0.0; parameter_count],
            example_count: 0,
        }
    }

    /// The personal head's parameters: global + delta.
    pub fn personal_parameters(&self, global: &[f32]) -> Vec<f32> {
        global.iter().zip(&self.delta).map(|(g, d)| g + d).collect()
    }

    pub fn personal_head(&self, global: &RewardHead) -> Result<RewardHead> {
        RewardHead::from_vector(
            global.dimensions(),
            &self.personal_parameters(&global.to_vector()),
        )
    }

    /// Checks a state restored from storage against the head it must apply to.
    pub fn check(&self, parameter_count: usize) -> Result<()> {
        if self.delta.len() != parameter_count {
            return Err(Error::InvalidInput(format!(
                "the saved learning state has {} parameters, the model's head {parameter_count}",
                self.delta.len()
            )));
        }
        if let Some(i) = self.delta.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "the saved learning state has a non-finite parameter at {i}"
            )));
        }
        Ok(())
    }
}

/// Hyper-parameters of on-device SGD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct LearningConfig {
    pub learning_rate: f32,
    /// Per-example gradient clip (L2): one example moves θ by at most
    /// `learning_rate · weight · clip_norm` (plus the small pull toward the global head).
    pub clip_norm: f32,
    /// L2 pull of the personal head toward the global head (on the delta).
    pub l2: f32,
    /// After each new example, this many SGD steps on examples drawn from the replay buffer.
    pub replay_steps: u32,
    /// Most recent examples kept for replay (and persisted).
    pub replay_capacity: u32,
    /// Seeds the replay draws: the same seed and events give the same head.
    pub seed: u64,
}

impl Default for LearningConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1.0,
            clip_norm: 1.0,
            l2: 1e-3,
            replay_steps: 32,
            replay_capacity: 256,
            seed: 0x5EED_F00D,
        }
    }
}

impl LearningConfig {
    pub fn validate(&self) -> Result<()> {
        let positive = |name: &str, v: f32, max: f32| {
            if v.is_finite() && v > 0.0 && v <= max {
                Ok(())
            } else {
                Err(Error::InvalidInput(format!(
                    "{name} must be in (0, {max}], got {v}"
                )))
            }
        };
        positive("learningRate", self.learning_rate, 10.0)?;
        positive("clipNorm", self.clip_norm, 100.0)?;
        if !(self.l2.is_finite() && (0.0..1.0).contains(&self.l2)) {
            return Err(Error::InvalidInput(format!(
                "l2 must be in [0, 1), got {}",
                self.l2
            )));
        }
        if self.replay_steps > 256 {
            return Err(Error::InvalidInput(format!(
                "replaySteps must be at most 256, got {}",
                self.replay_steps
            )));
        }
        if !(1..=100_000).contains(&self.replay_capacity) {
            return Err(Error::InvalidInput(format!(
                "replayCapacity must be between 1 and 100000, got {}",
                self.replay_capacity
            )));
        }
        Ok(())
    }
}

/// σ(z) without overflow for any finite or infinite z.
pub fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        1.0 / (1.0 + (-z).exp())
    } else {
        let e = z.exp();
        e / (1.0 + e)
    }
}

/// softplus(z) − y·z, the logistic loss, stable for large |z|.
pub fn logistic_loss(z: f32, label: f32) -> f32 {
    z.max(0.0) + (-z.abs()).exp().ln_1p() - label * z
}

pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The gradient of one example's (unweighted) loss at θ, clipped to L2 norm `clip_norm`.
/// Returns `None` when it is not finite (it cannot be for finite θ and features; this is the guard).
pub fn clipped_gradient(theta: &[f32], example: &Example, clip_norm: f32) -> Option<Vec<f32>> {
    // θ·x in f64: products of f32s cannot overflow it, so finite inputs give a finite residual.
    let z: f64 = theta
        .iter()
        .zip(&example.x)
        .map(|(t, x)| f64::from(*t) * f64::from(*x))
        .sum();
    let residual = f64::from(sigmoid(z as f32)) - f64::from(example.label);
    let mut gradient: Vec<f32> = example
        .x
        .iter()
        .map(|x| (residual * f64::from(*x)) as f32)
        .collect();
    // The norm in f64: squares of f32 near f32::MAX would overflow.
    let norm = gradient
        .iter()
        .map(|g| f64::from(*g).powi(2))
        .sum::<f64>()
        .sqrt();
    if !norm.is_finite() {
        return None;
    }
    if norm > f64::from(clip_norm) {
        let scale = (f64::from(clip_norm) / norm) as f32;
        gradient.iter_mut().for_each(|g| *g *= scale);
    }
    Some(gradient)
}

/// One SGD step on `example`: δ ← δ − η·(w·clip(∇L) + λ·δ). Returns false (and changes nothing)
/// if the gradient is not finite.
pub fn sgd_step(
    state: &mut LocalLearningState,
    global: &[f32],
    example: &Example,
    config: &LearningConfig,
) -> bool {
    let theta = state.personal_parameters(global);
    let Some(gradient) = clipped_gradient(&theta, example, config.clip_norm) else {
        return false;
    };
    let eta = config.learning_rate;
    let weight = example.weight;
    // The last parameter is the bias: it shifts every score alike and cannot change a ranking, so
    // it is not learned (it would only soak up part of every pointwise example).
    let learned = state.delta.len().saturating_sub(1);
    for (d, g) in state.delta[..learned].iter_mut().zip(&gradient) {
        *d -= eta * (weight * g + config.l2 * *d);
    }
    true
}

/// Learns one new example at once, then replays up to `replay_steps` examples (at most one per
/// example in the buffer) drawn, deterministically from the seed and the example count, from `replay`,
/// which should already contain the new one.
pub fn learn(
    state: &mut LocalLearningState,
    global: &[f32],
    example: &Example,
    replay: &[Example],
    config: &LearningConfig,
) -> bool {
    if !sgd_step(state, global, example, config) {
        return false;
    }
    state.example_count += 1;
    if !replay.is_empty() {
        let mut rng = fastrand::Rng::with_seed(
            config
                .seed
                .wrapping_add(state.example_count.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        );
        // As many replay steps as there are examples (up to `replay_steps`): a lone example is not
        // hammered in over and over.
        for _ in 0..(config.replay_steps as usize).min(replay.len()) {
            sgd_step(state, global, &replay[rng.usize(..replay.len())], config);
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(x: Vec<f32>, label: f32) -> Example {
        Example {
            id: 0,
            x,
            label,
            weight: 1.0,
        }
    }

    #[test]
    fn sigmoid_and_loss_are_finite_at_extremes() {
        for z in [f32::MIN, -1e30, -100.0, 0.0, 100.0, 1e30, f32::MAX] {
            assert!(sigmoid(z).is_finite());
            assert!(logistic_loss(z, 1.0).is_finite() && logistic_loss(z, 1.0) >= 0.0);
            assert!(logistic_loss(z, 0.0).is_finite() && logistic_loss(z, 0.0) >= 0.0);
        }
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
    }

    #[test]
    fn a_step_lowers_the_loss() {
        let global = vec![1.0, 0.0, 0.0];
        let mut state = LocalLearningState::new("test", 3);
        let ex = example(vec![0.3, -0.5, 1.0], 0.0);
        let before = logistic_loss(dot(&global, &ex.x), 0.0);
        assert!(sgd_step(
            &mut state,
            &global,
            &ex,
            &LearningConfig::default()
        ));
        let after = logistic_loss(dot(&state.personal_parameters(&global), &ex.x), 0.0);
        assert!(after < before, "{after} !< {before}");
    }

    #[test]
    fn huge_features_are_clipped_not_nan() {
        let global = vec![0.0; 2];
        let mut state = LocalLearningState::new("test", 2);
        let ex = example(vec![3e38, -3e38], 1.0);
        let config = LearningConfig::default();
        assert!(sgd_step(&mut state, &global, &ex, &config));
        let norm = state.delta.iter().map(|d| d * d).sum::<f32>().sqrt();
        assert!(norm <= config.learning_rate * config.clip_norm * 1.0001);
    }
}
