//! ε-LDP randomized response for one binary signal (e.g. "the user clicked").
//!
//! The device reports its true bit with probability `p = n / 2^53` and the
//! flipped bit otherwise. `p` is a rational chosen as the largest `n` with
//! `p/(1−p) ≤ e^ε`, so the mechanism's exact ε — the largest log-ratio in its
//! probability table, `ln(p/(1−p))` — never exceeds the requested ε.
//!
//! Server side: with `f` the observed fraction of ones among `N` reports,
//! `π̂ = (f − (1−p)) / (2p − 1)` is unbiased for the true proportion π, with
//! `Var(π̂) = λ(1−λ) / (N (2p−1)²)`, `λ = (1−p) + π(2p−1)` (estimated with f for λ).
//!
//! As zCDP, ε-DP implies (ε²/2)-zCDP (Bun–Steinke 2016, Prop. 1.4); the budget
//! charges that ρ.

use rand_core::{CryptoRng, Rng};
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::sampler::uniform_below;

/// Denominator of the keep probability: 2^53.
pub const KEEP_DENOMINATOR: u64 = 1 << 53;

/// Binary randomized response with an exact rational keep probability.
///
/// Invariant: `KEEP_DENOMINATOR/2 ≤ keep_numerator < KEEP_DENOMINATOR` and
/// `ln(keep/(1−keep)) ≤ requested ε`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RandomizedResponse {
    keep_numerator: u64,
}

impl RandomizedResponse {
    /// The most accurate randomized response that is ε-LDP. `epsilon ≥ 0`, finite.
    pub fn new(epsilon: f64) -> Result<Self> {
        if !(epsilon >= 0.0 && epsilon.is_finite()) {
            return Err(invalid("epsilon", epsilon, "must be finite and >= 0"));
        }
        let d = KEEP_DENOMINATOR as f64;
        // p = e^ε/(1+e^ε) = 1/(1+e^-ε); start there and step down until the exact table is within ε.
        let mut n = ((d / (1.0 + (-epsilon).exp())).floor() as u64)
            .clamp(KEEP_DENOMINATOR / 2, KEEP_DENOMINATOR - 1);
        while n > KEEP_DENOMINATOR / 2 && Self::table_epsilon(n) > epsilon {
            n -= 1;
        }
        Ok(Self { keep_numerator: n })
    }

    fn table_epsilon(n: u64) -> f64 {
        // ln(p/(1−p)) = ln(1 + (2n − D)/(D − n)); both integers are exact in f64 (< 2^53),
        // and ln_1p keeps ~1e-16 relative accuracy where ln n − ln(D−n) would lose ~1e-14.
        let flip = KEEP_DENOMINATOR - n;
        ((n - flip) as f64 / flip as f64).ln_1p()
    }

    /// P(report = true bit) = `keep_numerator / 2^53`.
    pub fn keep_probability(&self) -> (u64, u64) {
        (self.keep_numerator, KEEP_DENOMINATOR)
    }

    /// The probability table `[[P(0|0), P(1|0)], [P(0|1), P(1|1)]]` as f64.
    pub fn probability_table(&self) -> [[f64; 2]; 2] {
        let p = self.keep_numerator as f64 / KEEP_DENOMINATOR as f64;
        let q = (KEEP_DENOMINATOR - self.keep_numerator) as f64 / KEEP_DENOMINATOR as f64;
        [[p, q], [q, p]]
    }

    /// The exact ε of this mechanism: max over outputs of |ln P(o|0) − ln P(o|1)|.
    pub fn epsilon(&self) -> f64 {
        Self::table_epsilon(self.keep_numerator)
    }

    /// ρ = ε²/2 charged to the zCDP budget.
    pub fn rho(&self) -> f64 {
        let e = self.epsilon();
        e * e / 2.0
    }

    /// dp-accounting's `RandomizedResponseDpEvent` noise parameter: the
    /// probability of replacing the bit by a uniform one, `2(1 − p)`.
    pub fn dp_accounting_noise_parameter(&self) -> f64 {
        2.0 * (KEEP_DENOMINATOR - self.keep_numerator) as f64 / KEEP_DENOMINATOR as f64
    }

    /// The device side: the bit to report.
    pub fn respond<R: CryptoRng + ?Sized>(&self, true_bit: bool, rng: &mut R) -> bool {
        self.respond_any_rng(true_bit, rng)
    }

    pub(crate) fn respond_any_rng<R: Rng + ?Sized>(&self, true_bit: bool, rng: &mut R) -> bool {
        let keep = uniform_below(rng, KEEP_DENOMINATOR) < self.keep_numerator;
        if keep {
            true_bit
        } else {
            !true_bit
        }
    }

    /// The server side: unbiased estimate of the true proportion of ones from
    /// `ones` reported ones among `total` reports. Needs ε > 0.
    pub fn estimate_proportion(&self, ones: u64, total: u64) -> Result<ProportionEstimate> {
        if total == 0 || ones > total {
            return Err(invalid(
                "ones/total",
                format!("{ones}/{total}"),
                "need total > 0 and ones <= total",
            ));
        }
        if self.keep_numerator == KEEP_DENOMINATOR / 2 {
            return Err(invalid(
                "epsilon",
                0.0,
                "randomized response with epsilon = 0 carries no signal",
            ));
        }
        let p = self.keep_numerator as f64 / KEEP_DENOMINATOR as f64;
        let flip = (KEEP_DENOMINATOR - self.keep_numerator) as f64 / KEEP_DENOMINATOR as f64;
        let gap = 2.0 * p - 1.0;
        let f = ones as f64 / total as f64;
        let proportion = (f - flip) / gap;
        let variance = f * (1.0 - f) / (total as f64 * gap * gap);
        Ok(ProportionEstimate {
            proportion,
            variance,
            std_error: variance.sqrt(),
        })
    }
}

/// Output of [`RandomizedResponse::estimate_proportion`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ProportionEstimate {
    /// π̂: unbiased, may fall outside [0, 1] by noise (clamp only for display).
    pub proportion: f64,
    /// Estimated variance of π̂.
    pub variance: f64,
    /// √variance.
    pub std_error: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epsilon_zero_is_a_fair_coin() {
        let rr = RandomizedResponse::new(0.0).unwrap();
        assert_eq!(rr.keep_probability().0, KEEP_DENOMINATOR / 2);
        assert_eq!(rr.epsilon(), 0.0);
    }
}
