//! ε-LDP k-ary randomized response for one categorical value (a star rating 1–5, a feedback kind,
//! a segment): the metric reports of `local` rounds whose answer is a histogram.
//!
//! The device reports its true category with probability `p = keep / D` and each of the other
//! `k − 1` categories with probability `q = other / D`, where `keep + (k − 1)·other = D` exactly
//! and `D` is 2^53 rounded down to a multiple of k (so that ε = 0, the uniform table, exists). `other` is the smallest integer with `p/q ≤ e^ε`, so the mechanism's exact ε — the
//! largest log-ratio in its probability table, `ln(p/q)` — never exceeds the requested ε and is as
//! accurate as the 2^53 grid allows. With k = 2 it is the binary
//! [`crate::randomized_response::RandomizedResponse`] (same table).
//!
//! In dp-accounting's terms this is `RandomizedResponseDpEvent(noise_parameter = k·q,
//! num_buckets = k)`: with probability k·q the value is replaced by a uniform one.
//!
//! Server side: with `f_j` the observed fraction of category j among N reports,
//! `π̂_j = (f_j − q) / (p − q)` is unbiased for the true proportion π_j, with
//! `Var(π̂_j) = λ_j(1 − λ_j) / (N (p − q)²)` and `Cov(π̂_i, π̂_j) = −λ_i λ_j / (N (p − q)²)`,
//! `λ_j = q + π_j (p − q)` (estimated by f_j) — enough for the variance of any linear statistic,
//! such as the mean star rating.

use rand_core::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::randomized_response::KEEP_DENOMINATOR;
use crate::sampler::uniform_below;

/// The most categories one report may have.
pub const MAX_CATEGORIES: u32 = 1 << 16;

/// k-ary randomized response with exact rational probabilities over `D` (2^53 rounded down to a
/// multiple of k).
///
/// Invariant: `2 ≤ categories ≤ MAX_CATEGORIES`, `1 ≤ other ≤ D/k ≤ keep`,
/// `keep + (categories − 1)·other = D`, and `ln(keep/other) ≤` the requested ε.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoricalResponse {
    categories: u32,
    other_numerator: u64,
}

/// Unbiased estimates of every category's true proportion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistogramEstimate {
    /// π̂_j for j = 0..k (sum to 1; each may fall outside [0, 1] by noise: clamp only for display).
    pub proportions: Vec<f64>,
    /// Estimated Var(π̂_j).
    pub variances: Vec<f64>,
    /// The estimated covariance matrix of π̂ (k × k, row-major).
    pub covariance: Vec<f64>,
    /// Reports the estimate is made from.
    pub reports: u64,
}

impl HistogramEstimate {
    /// The estimate of Σ_j w_j π_j (e.g. the mean rating with w_j = j + 1) and its variance.
    pub fn linear(&self, weights: &[f64]) -> Result<(f64, f64)> {
        let k = self.proportions.len();
        if weights.len() != k {
            return Err(invalid(
                "weights",
                weights.len(),
                "need one weight per category",
            ));
        }
        let value = weights
            .iter()
            .zip(&self.proportions)
            .map(|(w, p)| w * p)
            .sum();
        let mut variance = 0.0;
        for i in 0..k {
            for j in 0..k {
                variance += weights[i] * weights[j] * self.covariance[i * k + j];
            }
        }
        Ok((value, variance.max(0.0)))
    }
}

impl CategoricalResponse {
    /// The most accurate k-ary randomized response that is ε-LDP. `epsilon ≥ 0` and finite,
    /// `2 ≤ categories ≤ MAX_CATEGORIES`.
    pub fn new(epsilon: f64, categories: u32) -> Result<Self> {
        if !(epsilon >= 0.0 && epsilon.is_finite()) {
            return Err(invalid("epsilon", epsilon, "must be finite and >= 0"));
        }
        if !(2..=MAX_CATEGORIES).contains(&categories) {
            return Err(invalid(
                "categories",
                categories,
                "must be between 2 and MAX_CATEGORIES (65,536)",
            ));
        }
        let d = Self::denominator(categories) as f64;
        let others = u64::from(categories - 1);
        // q = 1/(e^ε + k − 1); start at the f64 value and step until the exact table is within ε
        // (larger `other`: less accurate, smaller ε) and the next smaller one is not.
        let uniform = Self::denominator(categories) / u64::from(categories);
        let mut other = ((d / (epsilon.exp() + others as f64)).ceil() as u64).clamp(1, uniform);
        while other < uniform && Self::table_epsilon(categories, other) > epsilon {
            other += 1;
        }
        while other > 1 && Self::table_epsilon(categories, other - 1) <= epsilon {
            other -= 1;
        }
        Ok(Self {
            categories,
            other_numerator: other,
        })
    }

    /// 2^53 rounded down to a multiple of k.
    fn denominator(categories: u32) -> u64 {
        KEEP_DENOMINATOR - KEEP_DENOMINATOR % u64::from(categories)
    }

    fn keep(categories: u32, other: u64) -> u64 {
        Self::denominator(categories) - u64::from(categories - 1) * other
    }

    fn table_epsilon(categories: u32, other: u64) -> f64 {
        // ln(p/q) = ln(1 + (keep − other)/other); the integers are exact in f64 (< 2^53).
        let keep = Self::keep(categories, other);
        if keep <= other {
            return 0.0;
        }
        ((keep - other) as f64 / other as f64).ln_1p()
    }

    /// k.
    pub fn categories(&self) -> u32 {
        self.categories
    }

    /// (P(report = true category), P(report = one given other category)) as numerators over
    /// the denominator, and the denominator.
    pub fn probabilities(&self) -> (u64, u64, u64) {
        (
            Self::keep(self.categories, self.other_numerator),
            self.other_numerator,
            Self::denominator(self.categories),
        )
    }

    /// The probability table `P(report = o | value = v)` as f64, row v, column o.
    pub fn probability_table(&self) -> Vec<Vec<f64>> {
        let (keep, other, d) = self.probabilities();
        let (p, q) = (keep as f64 / d as f64, other as f64 / d as f64);
        (0..self.categories)
            .map(|v| {
                (0..self.categories)
                    .map(|o| if o == v { p } else { q })
                    .collect()
            })
            .collect()
    }

    /// The exact ε of this mechanism: max over outputs of the log-ratio between two values.
    pub fn epsilon(&self) -> f64 {
        Self::table_epsilon(self.categories, self.other_numerator)
    }

    /// ρ = ε²/2 charged to the zCDP budget.
    pub fn rho(&self) -> f64 {
        let e = self.epsilon();
        e * e / 2.0
    }

    /// dp-accounting's `RandomizedResponseDpEvent` noise parameter: the probability of replacing
    /// the value by a uniform one, `k·q`.
    pub fn dp_accounting_noise_parameter(&self) -> f64 {
        f64::from(self.categories) * self.other_numerator as f64
            / Self::denominator(self.categories) as f64
    }

    /// The device side: the category to report for `value` (< k).
    pub fn respond<R: CryptoRng + ?Sized>(&self, value: u32, rng: &mut R) -> Result<u32> {
        self.respond_any_rng(value, rng)
    }

    pub(crate) fn respond_any_rng<R: Rng + ?Sized>(&self, value: u32, rng: &mut R) -> Result<u32> {
        if value >= self.categories {
            return Err(invalid(
                "value",
                value,
                "must be below the number of categories",
            ));
        }
        let (keep, other, d) = self.probabilities();
        let u = uniform_below(rng, d);
        if u < keep {
            return Ok(value);
        }
        // The rest of [0, D) splits into k − 1 equal runs of `other`, one per other category.
        let index = ((u - keep) / other) as u32;
        Ok(if index < value { index } else { index + 1 })
    }

    /// The server side: unbiased estimates of every category's proportion from the number of
    /// reports of each category. Needs ε > 0.
    pub fn estimate(&self, counts: &[u64]) -> Result<HistogramEstimate> {
        let k = self.categories as usize;
        if counts.len() != k {
            return Err(invalid(
                "counts",
                counts.len(),
                "need one count per category",
            ));
        }
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return Err(invalid("counts", 0, "need at least one report"));
        }
        let (keep, other, d) = self.probabilities();
        if keep == other {
            return Err(invalid(
                "epsilon",
                0.0,
                "randomized response with epsilon = 0 carries no signal",
            ));
        }
        let (p, q) = (keep as f64 / d as f64, other as f64 / d as f64);
        let gap = p - q;
        let n = total as f64;
        let f: Vec<f64> = counts.iter().map(|&c| c as f64 / n).collect();
        let proportions = f.iter().map(|fj| (fj - q) / gap).collect();
        let scale = n * gap * gap;
        let mut covariance = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                covariance[i * k + j] = if i == j {
                    f[i] * (1.0 - f[i]) / scale
                } else {
                    -f[i] * f[j] / scale
                };
            }
        }
        let variances = (0..k).map(|j| covariance[j * k + j]).collect();
        Ok(HistogramEstimate {
            proportions,
            variances,
            covariance,
            reports: total,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::randomized_response::RandomizedResponse;

    #[test]
    fn two_categories_are_binary_randomized_response() {
        for eps in [0.0, 0.1, 1.0, 3.0, 10.0] {
            let k2 = CategoricalResponse::new(eps, 2).unwrap();
            let rr = RandomizedResponse::new(eps).unwrap();
            assert_eq!(k2.probabilities().0, rr.keep_probability().0, "ε = {eps}");
        }
    }

    #[test]
    fn epsilon_zero_is_uniform() {
        for k in [2, 3, 5, 7, 100] {
            let c = CategoricalResponse::new(0.0, k).unwrap();
            let (keep, other, d) = c.probabilities();
            assert_eq!(keep, other, "k = {k}");
            assert_eq!(d % u64::from(k), 0);
            assert_eq!(c.epsilon(), 0.0);
        }
    }
}
