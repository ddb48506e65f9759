//! The lexical feature of contract 2 models: how many of the context's words the candidate contains,
//! weighted by how rare each word is — BM25's term, made scale-free so the head can learn one weight
//! for it.
//!
//! λ(c, r) = Σᵢ wᵢ · tfᵢ / (tfᵢ + K),   wᵢ = idf(cᵢ) / max(Σⱼ idf(cⱼ), 1e-6),
//! K = max(k1 · ((1 − b) + b · (n / avg_tokens)), 1e-6)
//!
//! over the context's token ids c₁…c_m (a repeated context word counts each time, as BM25 with
//! linear query-term frequency does), tfᵢ the number of times cᵢ occurs among the candidate's n
//! tokens. Each term saturates below 1 and the weights sum to 1, so λ ∈ [0, 1) for every context and
//! list: a candidate with none of the words scores 0, one with every word many times approaches 1. The
//! idf table (one value per vocabulary token, stored as uint8 with one scale), k1, b and avg_tokens
//! ride in the ONNX file, whose graph computes the same λ for its `score` output; the operations here
//! follow the graph's order so the two agree to float rounding.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// The smallest total idf a context divides by (a context of zero-idf tokens has λ = 0), and the
/// smallest K (with b = 1 an empty candidate has K = 0, and its 0 / (0 + K) must be 0, not NaN).
const MIN_DIVISOR: f32 = 1e-6;

/// The lexical feature's constants, read from a contract 2 model.
#[derive(Debug, Clone, PartialEq)]
pub struct LexicalFeature {
    idf: Vec<f32>,
    k1: f32,
    b: f32,
    avg_tokens: f32,
}

impl LexicalFeature {
    /// `idf` has one finite, non-negative value per vocabulary token; k1 > 0, 0 ≤ b ≤ 1 and
    /// avg_tokens > 0.
    pub fn new(idf: Vec<f32>, k1: f32, b: f32, avg_tokens: f32) -> Result<Self> {
        if let Some(i) = idf.iter().position(|v| !v.is_finite() || *v < 0.0) {
            return Err(Error::Contract(format!(
                "lexical idf value {i} is {}, not a finite non-negative number",
                idf[i]
            )));
        }
        if !(k1.is_finite() && k1 > 0.0) {
            return Err(Error::Contract(format!("lexical k1 must be > 0, got {k1}")));
        }
        if !(0.0..=1.0).contains(&b) {
            return Err(Error::Contract(format!(
                "lexical b must be in [0, 1], got {b}"
            )));
        }
        if !(avg_tokens.is_finite() && avg_tokens > 0.0) {
            return Err(Error::Contract(format!(
                "lexical avg_tokens must be > 0, got {avg_tokens}"
            )));
        }
        Ok(Self {
            idf,
            k1,
            b,
            avg_tokens,
        })
    }

    pub fn vocab_size(&self) -> usize {
        self.idf.len()
    }

    /// idf of a token id (0 outside the table).
    pub fn idf(&self, id: u32) -> f32 {
        self.idf.get(id as usize).copied().unwrap_or(0.0)
    }

    /// Prepares a context once for scoring many candidates.
    pub fn query(&self, context: &[u32]) -> LexicalQuery<'_> {
        let weights: Vec<f32> = context.iter().map(|&id| self.idf(id)).collect();
        let total = weights.iter().sum::<f32>().max(MIN_DIVISOR);
        let weights = weights.iter().map(|w| w / total).collect();
        let mut slots: HashMap<u32, usize> = HashMap::with_capacity(context.len());
        let mut slot_of = Vec::with_capacity(context.len());
        for &id in context {
            let next = slots.len();
            slot_of.push(*slots.entry(id).or_insert(next));
        }
        LexicalQuery {
            feature: self,
            weights,
            slots,
            slot_of,
        }
    }

    /// λ(context, candidate) for one pair.
    pub fn value(&self, context: &[u32], candidate: &[u32]) -> f32 {
        self.query(context).value(candidate)
    }
}

/// A context prepared for [`LexicalQuery::value`]: its normalized weights and where each distinct
/// token is counted.
#[derive(Debug, Clone)]
pub struct LexicalQuery<'a> {
    feature: &'a LexicalFeature,
    weights: Vec<f32>,
    slots: HashMap<u32, usize>,
    slot_of: Vec<usize>,
}

impl LexicalQuery<'_> {
    /// λ for a candidate given as its token ids (after truncation).
    pub fn value(&self, candidate: &[u32]) -> f32 {
        if self.weights.is_empty() {
            return 0.0;
        }
        let mut counts = vec![0u32; self.slots.len()];
        for id in candidate {
            if let Some(&slot) = self.slots.get(id) {
                counts[slot] += 1;
            }
        }
        let LexicalFeature {
            k1, b, avg_tokens, ..
        } = *self.feature;
        let n = candidate.len() as f32;
        let k = (k1 * ((1.0 - b) + b * (n / avg_tokens))).max(MIN_DIVISOR);
        let mut sum = 0.0f32;
        for (w, &slot) in self.weights.iter().zip(&self.slot_of) {
            let tf = counts[slot] as f32;
            sum += tf / (tf + k) * w;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feature() -> LexicalFeature {
        // ids 0..5: 0 is [PAD]-like (idf 0), 1 common, 2..4 rarer
        LexicalFeature::new(vec![0.0, 0.5, 2.0, 3.0, 4.0], 1.2, 0.75, 4.0).unwrap()
    }

    #[test]
    fn empty_texts_score_zero() {
        let f = feature();
        assert_eq!(f.value(&[], &[1, 2, 3]), 0.0);
        assert_eq!(f.value(&[1, 2], &[]), 0.0);
        assert_eq!(
            f.value(&[0, 0], &[0, 0]),
            0.0,
            "zero-idf tokens carry no weight"
        );
        let b1 = LexicalFeature::new(vec![1.0; 5], 0.9, 1.0, 128.0).unwrap();
        assert_eq!(
            b1.value(&[1, 2], &[]),
            0.0,
            "with b = 1 an empty candidate is 0, not NaN"
        );
    }

    #[test]
    fn value_follows_the_formula_and_stays_below_one() {
        let f = feature();
        // context [2, 3], candidate [2, 2, 1, 4]: tf = (2, 0), n = 4, K = 1.2
        let k = 1.2f32 * ((1.0 - 0.75) + 0.75 * (4.0 / 4.0));
        let expected = 2.0 / (2.0 + k) * (2.0 / 5.0);
        assert!((f.value(&[2, 3], &[2, 2, 1, 4]) - expected).abs() < 1e-7);
        // every context word 500 times in 1,000 tokens: both terms are 500 / (500 + K)
        let many: Vec<u32> = [2; 500].iter().chain(&[3; 500]).copied().collect();
        let k = 1.2f32 * ((1.0 - 0.75) + 0.75 * (1000.0 / 4.0));
        let saturated = f.value(&[2, 3], &many);
        assert!(
            (saturated - 500.0 / (500.0 + k)).abs() < 1e-6,
            "{saturated}"
        );
        assert!(saturated < 1.0);
    }

    #[test]
    fn a_repeated_context_word_counts_each_time() {
        let f = feature();
        let once = f.value(&[2, 3], &[3]);
        let twice = f.value(&[2, 3, 3], &[3]);
        assert!(twice > once, "{twice} vs {once}");
        // weights: 3/5 vs 6/8 of the same saturated term
        assert!((twice / once - (6.0 / 8.0) / (3.0 / 5.0)).abs() < 1e-6);
    }

    #[test]
    fn repeated_candidate_words_saturate_and_length_dilutes() {
        let f = feature();
        let one = f.value(&[4], &[4, 1, 1, 1]);
        let three = f.value(&[4], &[4, 4, 4, 1]);
        assert!(three > one && three < 1.0);
        let long: Vec<u32> = std::iter::once(4)
            .chain(std::iter::repeat_n(1, 99))
            .collect();
        assert!(
            f.value(&[4], &long) < one,
            "a longer candidate with one match scores less"
        );
    }

    #[test]
    fn an_unknown_token_scores_by_its_own_idf_and_outside_ids_are_zero() {
        let f = feature();
        assert_eq!(f.idf(99), 0.0);
        assert_eq!(f.value(&[99], &[99, 99]), 0.0);
    }

    #[test]
    fn bad_constants_are_refused() {
        assert!(LexicalFeature::new(vec![f32::NAN], 1.2, 0.75, 4.0).is_err());
        assert!(LexicalFeature::new(vec![-1.0], 1.2, 0.75, 4.0).is_err());
        assert!(LexicalFeature::new(vec![1.0], 0.0, 0.75, 4.0).is_err());
        assert!(LexicalFeature::new(vec![1.0], 1.2, 1.5, 4.0).is_err());
        assert!(LexicalFeature::new(vec![1.0], 1.2, 0.75, 0.0).is_err());
    }
}
