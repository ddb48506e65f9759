//! ε of the distributed discrete Gaussian mechanism (Kairouz, Liu, Steinke, "The Distributed
//! Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation", ICML 2021), a
//! port of google-research/federated `distributed_dp/accounting_utils.py` `ddgauss_epsilon`.
//!
//! Each of n clients scales its clipped update by 1/γ, rounds it to the integer lattice
//! (conditional randomized rounding with parameter β) and adds its own discrete Gaussian share
//! of variance (σ/γ)². The sum of n such shares is *not* a discrete Gaussian; Theorem 1 of the
//! paper bounds how far it is from one by τ = 10·Σ_{k=1}^{n−1} exp(−2π²(σ/γ)²·k/(k+1)), and
//! Proposition 14 turns that into RDP at every integer order α:
//! `min(α/2·s₂² + τd, α/2·(s₂² + 2s₁τ + τ²d), α/2·(s₂ + √d·τ)²)` with s₁, s₂ the L1 and L2
//! sensitivities over the total noise std √n·σ. Poisson sampling uses the subsampled-RDP upper
//! bound of Zhu–Wang 2019 (Theorem 5), and RDP → (ε, δ) the conversion of [`super::rdp`].
//!
//! This is the guarantee a device's own noise share gives when the leader and the helper
//! *collude* (they see the exact sum of all shares), so the ledger records it beside the
//! two-aggregator one.

use super::rdp::rdp_to_epsilon;
use super::special::log_comb;
use crate::error::{invalid, Result};

/// The reference's `DIV_EPSILON`, added to γ before inverting it.
const DIV_EPSILON: f64 = 1e-22;

/// The reference's `RDP_ORDERS`: 2, 3, …, 128, 256.
pub fn ddgauss_orders() -> Vec<f64> {
    (2..=128).map(f64::from).chain([256.0]).collect()
}

/// The parameters of `ddgauss_epsilon`, named as `feedloop privacy ddg` takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistributedDiscreteGaussian {
    /// Clients whose shares are summed (the reference's `num_clients`).
    pub clients: u64,
    /// Each client's noise standard deviation, in model units (`local_stddev`).
    pub client_stddev: f64,
    /// Lattice granularity γ (`gamma`).
    pub granularity: f64,
    /// Dimensions of the update (`dim`).
    pub dimension: u64,
    /// L2 sensitivity of the sum, in model units, before rounding (`l2_sens`).
    pub l2_sensitivity: f64,
    /// Conditional randomized rounding's β in [0, 1) (`beta`).
    pub beta: f64,
    /// Poisson sampling rate q in (0, 1] (`q`).
    pub sampling_rate: f64,
    /// Composed rounds (`steps`).
    pub steps: u64,
}

impl DistributedDiscreteGaussian {
    fn check(&self) -> Result<()> {
        let positive = |name, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(invalid(name, v, "must be finite and > 0"))
            }
        };
        if self.clients == 0 {
            return Err(invalid("clients", self.clients, "need at least one client"));
        }
        if self.dimension == 0 {
            return Err(invalid("dimension", self.dimension, "must be >= 1"));
        }
        positive("client_stddev", self.client_stddev)?;
        positive("granularity", self.granularity)?;
        positive("l2_sensitivity", self.l2_sensitivity)?;
        if !(0.0..1.0).contains(&self.beta) {
            return Err(invalid("beta", self.beta, "must be in [0, 1)"));
        }
        if !(self.sampling_rate > 0.0 && self.sampling_rate <= 1.0) {
            return Err(invalid(
                "sampling_rate",
                self.sampling_rate,
                "must be in (0, 1]",
            ));
        }
        Ok(())
    }

    /// τ of Theorem 1: how far a sum of `clients` discrete Gaussians is from one.
    pub fn tau(&self) -> f64 {
        let scale = 1.0 / (self.granularity + DIV_EPSILON);
        let s = std::f64::consts::PI * self.client_stddev * scale;
        let sum: f64 = (1..self.clients)
            .map(|k| {
                let k = k as f64;
                (-2.0 * s * s * (k / (k + 1.0))).exp()
            })
            .sum();
        10.0 * sum
    }

    /// (L1, L2) sensitivities in model units after rounding to the lattice (Theorem 1 of
    /// Kairouz et al. 2021 with β; the reference's `rounded_l{1,2}_norm_bound`).
    pub fn rounded_sensitivities(&self) -> (f64, f64) {
        let scale = 1.0 / (self.granularity + DIV_EPSILON);
        let d = self.dimension as f64;
        let l2 = rounded_l2_norm_bound(self.l2_sensitivity * scale, self.beta, d) / scale;
        let scaled = l2 * scale;
        let l1 = scaled * d.sqrt().min(scaled) / scale;
        (l1, l2)
    }

    /// RDP of all `steps` at each of [`ddgauss_orders`].
    pub fn rdp(&self) -> Result<Vec<f64>> {
        self.check()?;
        let (l1, l2) = self.rounded_sensitivities();
        let tau = self.tau();
        let d = self.dimension as f64;
        let total_std = (self.clients as f64).sqrt() * self.client_stddev;
        let (s1, s2) = (l1 / total_std, l2 / total_std);
        let eps = |alpha: u64| {
            let a = alpha as f64;
            let term_1 = a / 2.0 * s2 * s2 + tau * d;
            let term_2 = a / 2.0 * (s2 * s2 + 2.0 * s1 * tau + tau * tau * d);
            let term_3 = a / 2.0 * (s2 + d.sqrt() * tau).powi(2);
            term_1.min(term_2).min(term_3)
        };
        let q = self.sampling_rate;
        Ok(ddgauss_orders()
            .iter()
            .map(|&alpha| {
                let alpha = alpha as u64;
                let plain = eps(alpha);
                let r = if q == 1.0 {
                    plain
                } else {
                    subsampled_rdp(alpha, q, &eps).min(plain)
                };
                r * self.steps as f64
            })
            .collect())
    }
}

/// The L2 norm bound after conditional randomized rounding to the integer lattice (the
/// reference's `rounded_l2_norm_bound`, Theorem 1 of arXiv:2102.06387).
pub fn rounded_l2_norm_bound(l2: f64, beta: f64, dimension: f64) -> f64 {
    let bound_1 = l2 + dimension.sqrt();
    if beta == 0.0 {
        return bound_1;
    }
    let squared_bound_2 = l2 * l2
        + 0.25 * dimension
        + (2.0 * (1.0 / beta).ln()).sqrt() * (l2 + 0.5 * dimension.sqrt());
    bound_1.min(squared_bound_2.sqrt())
}

/// RDP at integer order α of the Poisson-subsampled mechanism whose RDP is `eps` (Zhu & Wang
/// 2019, Theorem 5: the reference's `_compute_rdp_subsampled(upper_bound=True)`).
fn subsampled_rdp(alpha: u64, q: f64, eps: &dyn Fn(u64) -> f64) -> f64 {
    let a = alpha as f64;
    let (log_q, log_1mq) = (q.ln(), (-q).ln_1p());
    let mut terms: Vec<(f64, f64)> = vec![
        (0.0, (1.0 - q).powf(a - 1.0) * (a * q - q + 1.0)),
        (
            eps(2),
            a * (a - 1.0) / 2.0 * q * q * (1.0 - q).powf(a - 2.0),
        ),
    ];
    for l in 3..=alpha {
        let lf = l as f64;
        terms.push((
            (lf - 1.0) * eps(l) + log_comb(a, lf) + (a - lf) * log_1mq + lf * log_q,
            3.0,
        ));
    }
    // scipy.special.logsumexp(a, b): ln Σ b·e^a.
    let max = terms
        .iter()
        .map(|&(x, _)| x)
        .fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.iter().map(|&(x, b)| b * (x - max).exp()).sum();
    (sum.ln() + max) / (a - 1.0)
}

/// (ε, optimal order) of the distributed discrete Gaussian at `delta` (the reference's
/// `ddgauss_epsilon` with `rounding=True` and its default orders).
pub fn ddgauss_epsilon(params: &DistributedDiscreteGaussian, delta: f64) -> Result<(f64, f64)> {
    if !(delta > 0.0 && delta < 1.0) {
        return Err(invalid("delta", delta, "must be in (0, 1)"));
    }
    let rdp = params.rdp()?;
    rdp_to_epsilon(&ddgauss_orders(), &rdp, delta)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> DistributedDiscreteGaussian {
        DistributedDiscreteGaussian {
            clients: 100,
            client_stddev: 0.1,
            granularity: 1e-3,
            dimension: 131,
            l2_sensitivity: 2.0,
            beta: (-0.5f64).exp(),
            sampling_rate: 1.0,
            steps: 1,
        }
    }

    #[test]
    fn tau_vanishes_for_wide_shares_and_grows_for_narrow_ones() {
        assert!(params().tau() < 1e-300);
        let narrow = DistributedDiscreteGaussian {
            client_stddev: 1e-4,
            ..params()
        };
        // σ/γ = 0.1: each term is close to e^{-2π²·0.01·k/(k+1)} ≈ 0.82–0.90.
        assert!(narrow.tau() > 10.0 * 99.0 * 0.8);
    }

    #[test]
    fn with_wide_shares_it_is_the_gaussian_bound_on_the_rounded_sensitivity() {
        // τ = 0: RDP is α·s₂²/2, the continuous Gaussian's, on the rounding-inflated sensitivity.
        let p = params();
        let (_, l2) = p.rounded_sensitivities();
        assert!(l2 > 2.0 && l2 < 2.0 * 1.01);
        let rdp = p.rdp().unwrap();
        let s2 = l2 / (10.0 * 0.1);
        assert!((rdp[0] - s2 * s2).abs() < 1e-12); // α = 2
    }

    #[test]
    fn more_clients_sampling_and_noise_lower_epsilon() {
        let eps = |p: DistributedDiscreteGaussian| ddgauss_epsilon(&p, 1e-6).unwrap().0;
        let base = eps(params());
        assert!(
            eps(DistributedDiscreteGaussian {
                clients: 400,
                ..params()
            }) < base
        );
        assert!(
            eps(DistributedDiscreteGaussian {
                sampling_rate: 0.1,
                ..params()
            }) < base
        );
        assert!(
            eps(DistributedDiscreteGaussian {
                steps: 10,
                ..params()
            }) > base
        );
    }

    #[test]
    fn bad_parameters_are_errors() {
        let bad = [
            DistributedDiscreteGaussian {
                clients: 0,
                ..params()
            },
            DistributedDiscreteGaussian {
                beta: 1.0,
                ..params()
            },
            DistributedDiscreteGaussian {
                granularity: 0.0,
                ..params()
            },
            DistributedDiscreteGaussian {
                sampling_rate: 0.0,
                ..params()
            },
            DistributedDiscreteGaussian {
                client_stddev: f64::NAN,
                ..params()
            },
        ];
        for p in bad {
            assert!(ddgauss_epsilon(&p, 1e-6).is_err(), "{p:?}");
        }
        assert!(ddgauss_epsilon(&params(), 0.0).is_err());
    }
}
