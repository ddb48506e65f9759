//! The reward head: a small linear scorer over features of a (context, candidate) pair.
//!
//! score = cosine·cos(e_c, e_r) + interaction·(e_c ⊙ e_r) + candidate·e_r + length·ℓ(n)
//!         [+ lexical·λ(c, r)] + bias
//!
//! where e_c, e_r are the L2-normalized embeddings, n the candidate's token count after truncation,
//! ℓ(n) = ln(1 + n) / ln(1 + max_tokens) and λ the lexical feature of contract 2 models
//! ([`crate::lexical`]; a contract 1 model has no lexical term). The ONNX graph computes the same `score` so any runtime agrees;
//! feedloop evaluates the head itself because its parameters change on the device (a built tract plan
//! cannot swap weights). The order of the f32 additions follows the graph's.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Names of a contract 1 head's parameters, in the order of [`RewardHead::to_vector`]; the ONNX
/// initializers carry the same names.
pub const HEAD_PARAMETERS: [&str; 5] = [
    "head_cosine",
    "head_interaction",
    "head_candidate",
    "head_length",
    "head_bias",
];

/// A contract 2 head's parameters: contract 1's with `head_lexical` before the bias.
pub const HEAD_PARAMETERS_LEXICAL: [&str; 6] = [
    "head_cosine",
    "head_interaction",
    "head_candidate",
    "head_length",
    "head_lexical",
    "head_bias",
];

/// The head's parameters. The default model initializes `cosine = 1` (and, being a contract 2
/// model, `lexical` to the weight chosen on retrieval tasks), everything else 0, so the
/// out-of-the-box ranking is by relevance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RewardHead {
    pub cosine: f32,
    pub interaction: Vec<f32>,
    pub candidate: Vec<f32>,
    pub length: f32,
    /// The weight of the lexical feature; `None` for a contract 1 head, which has no such term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lexical: Option<f32>,
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
    /// λ(c, r), for a model with a lexical term (contract 2); `None` otherwise.
    pub lexical: Option<f32>,
}

impl PairFeatures {
    pub fn new(context: &[f32], candidate: &[f32], token_count: usize, max_tokens: usize) -> Self {
        let product = context.iter().zip(candidate).map(|(c, r)| c * r).collect();
        Self {
            product,
            candidate: candidate.to_vec(),
            length: length_feature(token_count, max_tokens),
            lexical: None,
        }
    }

    /// The same features with the lexical feature λ (for a contract 2 model).
    pub fn with_lexical(mut self, lexical: Option<f32>) -> Self {
        self.lexical = lexical;
        self
    }

    /// φ, the vector the head's parameters multiply: [cos, e_c ⊙ e_r, e_r, ℓ(n), (λ,) 1], in
    /// [`RewardHead::to_vector`] order, so score = θ · φ.
    pub fn to_vector(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(2 * self.product.len() + 4);
        v.push(self.cosine());
        v.extend_from_slice(&self.product);
        v.extend_from_slice(&self.candidate);
        v.push(self.length);
        v.extend(self.lexical);
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
    /// The relevance-only head: score = cosine similarity (with a lexical weight of 0 when
    /// `lexical`, the layout of a contract 2 model).
    pub fn relevance(dimensions: usize, lexical: bool) -> Self {
        Self {
            cosine: 1.0,
            interaction: vec![0.0; dimensions],
            candidate: vec![0.0; dimensions],
            length: 0.0,
            lexical: lexical.then_some(0.0),
            bias: 0.0,
        }
    }

    pub fn dimensions(&self) -> usize {
        self.candidate.len()
    }

    /// Number of scalar parameters: 2·D + 3, or 2·D + 4 with a lexical term.
    pub fn parameter_count(&self) -> usize {
        parameter_count(self.dimensions(), self.lexical.is_some())
    }

    /// θ · φ. Features without λ score a lexical head as if λ were 0 (and λ is ignored by a head
    /// without the term); the model always supplies what its head needs.
    pub fn score(&self, features: &PairFeatures) -> f32 {
        let interaction = dot(&features.product, &self.interaction);
        let candidate = dot(&features.candidate, &self.candidate);
        let base = self.cosine * features.cosine()
            + interaction
            + candidate
            + self.length * features.length;
        let lexical = match (self.lexical, features.lexical) {
            (Some(w), Some(x)) => base + w * x,
            _ => base,
        };
        lexical + self.bias
    }

    /// All parameters as one vector, in [`HEAD_PARAMETERS`] (or [`HEAD_PARAMETERS_LEXICAL`]) order.
    pub fn to_vector(&self) -> Vec<f32> {
        let mut v = Vec::with_capacity(self.parameter_count());
        v.push(self.cosine);
        v.extend_from_slice(&self.interaction);
        v.extend_from_slice(&self.candidate);
        v.push(self.length);
        v.extend(self.lexical);
        v.push(self.bias);
        v
    }

    /// The inverse of [`RewardHead::to_vector`]: 2·D + 3 values are a head without a lexical term,
    /// 2·D + 4 one with it; rejects any other length or a non-finite entry.
    pub fn from_vector(dimensions: usize, v: &[f32]) -> Result<Self> {
        if v.len() != parameter_count(dimensions, false)
            && v.len() != parameter_count(dimensions, true)
        {
            return Err(Error::InvalidInput(format!(
                "a head of {dimensions} dimensions has {} parameters ({} with a lexical term), got {}",
                parameter_count(dimensions, false),
                parameter_count(dimensions, true),
                v.len()
            )));
        }
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "head parameter {i} is not finite ({})",
                v[i]
            )));
        }
        let parts = split_head_vector(v)?;
        let scalar = |name: &str| parts.iter().find(|(n, _)| *n == name).map(|(_, s)| s[0]);
        let slice = |name: &str| {
            parts
                .iter()
                .find(|(n, _)| *n == name)
                .map_or_else(Vec::new, |(_, s)| s.to_vec())
        };
        Ok(Self {
            cosine: scalar("head_cosine").unwrap_or_default(),
            interaction: slice("head_interaction"),
            candidate: slice("head_candidate"),
            length: scalar("head_length").unwrap_or_default(),
            lexical: scalar("head_lexical"),
            bias: scalar("head_bias").unwrap_or_default(),
        })
    }
}

/// 2·D + 3 parameters, plus one for the lexical weight.
pub fn parameter_count(dimensions: usize, lexical: bool) -> usize {
    2 * dimensions + 3 + usize::from(lexical)
}

/// The parts of a head vector ([`RewardHead::to_vector`] order), each with its initializer's name:
/// the one place that knows the layout. The two layouts are told apart by length: 2·D + 3 (odd) has
/// no lexical weight, 2·D + 4 (even) has one.
pub fn split_head_vector(v: &[f32]) -> Result<Vec<(&'static str, &[f32])>> {
    let lexical = v.len().is_multiple_of(2);
    let fixed = 3 + usize::from(lexical);
    if v.len() < fixed {
        return Err(Error::InvalidInput(format!(
            "a head has 2·D + 3 or 2·D + 4 parameters, got {}",
            v.len()
        )));
    }
    let d = (v.len() - fixed) / 2;
    let mut parts = vec![
        ("head_cosine", &v[0..1]),
        ("head_interaction", &v[1..1 + d]),
        ("head_candidate", &v[1 + d..1 + 2 * d]),
        ("head_length", &v[1 + 2 * d..2 + 2 * d]),
    ];
    if lexical {
        parts.push(("head_lexical", &v[2 + 2 * d..3 + 2 * d]));
    }
    parts.push(("head_bias", &v[v.len() - 1..]));
    Ok(parts)
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
        let head = RewardHead::relevance(3, false);
        let f = PairFeatures::new(&[0.6, 0.8, 0.0], &[0.8, 0.6, 0.0], 4, 512);
        assert!((head.score(&f) - 0.96).abs() < 1e-6);
    }

    #[test]
    fn vector_round_trip_and_validation() {
        let mut head = RewardHead::relevance(2, false);
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
    fn lexical_layout_round_trips_and_scores_the_lexical_term() {
        let mut head = RewardHead::relevance(2, true);
        head.interaction = vec![0.5, -0.5];
        head.length = 0.1;
        head.lexical = Some(2.0);
        head.bias = -1.0;
        let v = head.to_vector();
        assert_eq!(v, [1.0, 0.5, -0.5, 0.0, 0.0, 0.1, 2.0, -1.0]);
        assert_eq!(RewardHead::from_vector(2, &v).unwrap(), head);
        let names: Vec<&str> = split_head_vector(&v).unwrap().iter().map(|p| p.0).collect();
        assert_eq!(names, HEAD_PARAMETERS_LEXICAL);
        let f = PairFeatures::new(&[0.6, 0.8], &[0.8, 0.6], 4, 512).with_lexical(Some(0.25));
        let x = f.to_vector();
        assert_eq!(x.len(), v.len());
        let dot: f32 = x.iter().zip(&v).map(|(a, b)| a * b).sum();
        assert!((head.score(&f) - dot).abs() < 1e-6);
        // 0.96 (cosine) + 0.5·0.48 − 0.5·0.48 + 0.1·ℓ(4) + 2·0.25 − 1
        let expected = 0.96 + 0.1 * length_feature(4, 512) + 0.5 - 1.0;
        assert!((head.score(&f) - expected).abs() < 1e-6);
    }

    #[test]
    fn length_feature_is_one_at_max_tokens() {
        assert!((length_feature(512, 512) - 1.0).abs() < 1e-6);
        assert_eq!(length_feature(0, 512), 0.0);
    }
}
