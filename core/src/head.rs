//! The reward head: a small linear scorer over features of a (context, candidate) pair.
//!
//! score = cosine·cos(e_c, e_r) + interaction·(e_c ⊙ e_r) + candidate·e_r + length·ℓ(n) + bias
//!
//! where e_c, e_r are the L2-normalized embeddings, n the candidate's token count after truncation and
//! ℓ(n) = ln(1 + n) / ln(1 + max_tokens). The ONNX graph computes the same `score` so any runtime agrees;
//! feedloop evaluates the head itself because its parameters change on the device (a built tract plan
//! cannot swap weights). The order of the f32 additions follows the graph's.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names of the head's parameters, in the order of [`RewardHead::to_vector`]; the ONNX initializers
/// carry the same names.
pub const HEAD_PARAMETERS: [&str; 5] = [
    "head_cosine",
    "head_interaction",
    "head_candidate",
    "head_length",
    "head_bias",
];

/// The head's parameters. Initialized (by the default model) to `cosine = 1`, everything else 0, so the
/// out-of-the-box ranking is by relevance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardHead {
    pub cosine: f32,
    pub interaction: Vec<f32>,
    pub candidate: Vec<f32>,
    pub length: f32,
    pub bias: f32,
}

/// The features of one (context, candidate) pair that the head scores.
#[derive(Debug, Clone, PartialEq)]
pub struct PairFeatures {
    /// e_c ⊙ e_r
    pub product: Vec<f32>,
    /// e_r
    pub candidate: Vec<f32>,
    /// ℓ(n)
    pub length: f32,
}

impl PairFeatures {
    pub fn new(context: &[f32], candidate: &[f32], token_count: usize, max_tokens: usize) -> Self {
        let product = context.iter().zip(candidate).map(|(c, r)| c * r).collect();
        Self {
            product,
            candidate: candidate.to_vec(),
            length: length_feature(token_count, max_tokens),
        }
    }

    /// φ, the vector the head's parameters multiply: [cos, e_c ⊙ e_r, e_r, ℓ(n), 1], in
    /// [`RewardHead::to_vector`] order, so score = θ · φ.
    pub fn to_vector(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(2 * self.product.len() + 3);
        v.push(self.cosine());
        v.extend_from_slice(&self.product);
        v.extend_from_slice(&self.candidate);
        v.push(self.length);
        v.push(1.0);
        v
    }

    /// cos(e_c, e_r) — the embeddings are unit vectors, so this is the sum of the product.
    pub fn cosine(&self) -> f32 {
        self.product.iter().sum()
    }
}

/// ℓ(n) = ln(1 + n) / ln(1 + max_tokens), computed as the graph does: ln(1 + n) · (1 / ln(1 + max)).
pub fn length_feature(token_count: usize, max_tokens: usize) -> f32 {
    let norm = (1.0 / (1.0 + max_tokens as f64).ln()) as f32;
    (token_count as f32 + 1.0).ln() * norm
}

impl RewardHead {
    /// The relevance-only head: score = cosine similarity.
    pub fn relevance(dimensions: usize) -> Self {
        Self {
            cosine: 1.0,
            interaction: vec![0.0; dimensions],
            candidate: vec![0.0; dimensions],
            length: 0.0,
            bias: 0.0,
        }
    }

    pub fn dimensions(&self) -> usize {
        self.candidate.len()
    }

    /// Number of scalar parameters: 2·D + 3.
    pub fn parameter_count(&self) -> usize {
        2 * self.dimensions() + 3
    }

    pub fn score(&self, features: &PairFeatures) -> f32 {
        let interaction = dot(&features.product, &self.interaction);
        let candidate = dot(&features.candidate, &self.candidate);
        self.cosine * features.cosine()
            + interaction
            + candidate
            + self.length * features.length
            + self.bias
    }

    /// All parameters as one vector, in [`HEAD_PARAMETERS`] order.
    pub fn to_vector(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.parameter_count());
        v.push(self.cosine);
        v.extend_from_slice(&self.interaction);
        v.extend_from_slice(&self.candidate);
        v.push(self.length);
        v.push(self.bias);
        v
    }

    /// The inverse of [`RewardHead::to_vector`]; rejects a vector of the wrong length or with a
    /// non-finite entry.
    pub fn from_vector(dimensions: usize, v: &[f32]) -> Result<Self> {
        if v.len() != 2 * dimensions + 3 {
            return Err(Error::InvalidInput(format!(
                "a head of {dimensions} dimensions has {} parameters, got {}",
                2 * dimensions + 3,
                v.len()
            )));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "head parameter {i} is not finite ({})",
                v[i]
            )));
        }
        let [cosine, interaction, candidate, length, bias] = split_head_vector(v)?;
        Ok(Self {
            cosine: cosine[0],
            interaction: interaction.to_vec(),
            candidate: candidate.to_vec(),
            length: length[0],
            bias: bias[0],
        })
    }
}

/// The parts of a head vector (2·D + 3 values, [`RewardHead::to_vector`] order), one slice per
/// name in [`HEAD_PARAMETERS`]: the one place that knows the layout.
pub fn split_head_vector(v: &[f32]) -> Result<[&[f32]; 5]> {
    if v.len() < 3 || !(v.len() - 3).is_multiple_of(2) {
        return Err(Error::InvalidInput(format!(
            "a head has 2·D + 3 parameters, got {}",
            v.len()
        )));
    }
    let d = (v.len() - 3) / 2;
    Ok([
        &v[0..1],
        &v[1..1 + d],
        &v[1 + d..1 + 2 * d],
        &v[1 + 2 * d..2 + 2 * d],
        &v[2 + 2 * d..3 + 2 * d],
    ])
}

/// Sequential f32 dot product (the order matches a plain reduction; tolerances are 1e-5).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relevance_head_scores_cosine() {
        let head = RewardHead::relevance(3);
        let f = PairFeatures::new(&[0.6, 0.8, 0.0], &[0.8, 0.6, 0.0], 4, 512);
        assert!((head.score(&f) - 0.96).abs() < 1e-6);
    }

    #[test]
    fn vector_round_trip_and_validation() {
        let mut head = RewardHead::relevance(2);
        head.interaction = vec![0.5, -0.5];
        head.candidate = vec![0.25, 0.0];
        head.length = 0.1;
        head.bias = -1.0;
        let v = head.to_vector();
        assert_eq!(v.len(), 7);
        assert_eq!(RewardHead::from_vector(2, &v).unwrap(), head);
        assert!(RewardHead::from_vector(2, &v[..6]).is_err());
        let mut bad = v.clone();
        bad[3] = f32::NAN;
        assert!(RewardHead::from_vector(2, &bad).is_err());
    }

    #[test]
    fn length_feature_is_one_at_max_tokens() {
        assert!((length_feature(512, 512) - 1.0).abs() < 1e-6);
        assert_eq!(length_feature(0, 512), 0.0);
    }
}
