//! Rényi-DP accountant for the Gaussian and the Poisson-subsampled Gaussian,
//! a line-by-line port of `dp_accounting.rdp.RdpAccountant` (dp-accounting 0.6,
//! add-or-remove-one neighbours).
//!
//! RDP of the sampled Gaussian at order α: `ln A_α / (α − 1)` with
//! * integer α: `A_α = Σ_{i=0}^{α} C(α,i) q^i (1−q)^{α−i} exp((i²−i)/(2σ²))`;
//! * fractional α: the two-sided series of Mironov–Talwar–Zhang 2019 §3.3
//!   with erfc tails, stopped when both terms decrease and are e^-30 below
//!   the total (at most 1000 terms; non-convergent orders are +∞);
//! * q = 1: `α / (2σ²)`.
//!
//! Conversion (CKS 2020 Prop. 12; Asoodeh et al. 2020):
//! `ε = min_α  r_α + ln(1 − 1/α) − ln(δα)/(α − 1)` over α > 1.01, with ε = 0
//! where `δ² + expm1(−r_α) > 0` (the KL bound).

use super::special::{log_add, log_comb, log_erfc};
use crate::error::{invalid, Result};

/// Number of orders in [`default_orders`].
pub const DEFAULT_RDP_ORDERS_LEN: usize = 99 + 53 + 4;

/// dp-accounting's `DEFAULT_RDP_ORDERS`: 1.1, 1.2, …, 10.9, 11, 12, …, 63, 128, 256, 512, 1024.
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + f64::from(x) / 10.0).collect();
    orders.extend((11..64).map(f64::from));
    orders.extend([128.0, 256.0, 512.0, 1024.0]);
    orders
}

/// Accumulates RDP over a fixed list of orders.
#[derive(Debug, Clone, PartialEq)]
pub struct RdpAccountant {
    orders: Vec<f64>,
    rdp: Vec<f64>,
}

impl Default for RdpAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl RdpAccountant {
    /// Empty accountant over [`default_orders`].
    pub fn new() -> Self {
        let orders = default_orders();
        let rdp = vec![0.0; orders.len()];
        Self { orders, rdp }
    }

    /// Empty accountant over custom orders (each ≥ 1).
    pub fn with_orders(orders: Vec<f64>) -> Result<Self> {
        if orders.is_empty() || orders.iter().any(|&a| a.is_nan() || a < 1.0) {
            return Err(invalid(
                "orders",
                format!("{orders:?}"),
                "need at least one order, each >= 1",
            ));
        }
        let rdp = vec![0.0; orders.len()];
        Ok(Self { orders, rdp })
    }

    /// Composes `count` Gaussian releases with noise multiplier σ/Δ
    /// (dp-accounting `GaussianDpEvent`).
    pub fn compose_gaussian(&mut self, noise_multiplier: f64, count: u64) -> Result<()> {
        self.compose_poisson_subsampled_gaussian(noise_multiplier, 1.0, count)
    }

    /// Composes `count` Poisson-subsampled Gaussian steps (dp-accounting
    /// `PoissonSampledDpEvent(q, GaussianDpEvent(z))`).
    pub fn compose_poisson_subsampled_gaussian(
        &mut self,
        noise_multiplier: f64,
        sampling_probability: f64,
        count: u64,
    ) -> Result<()> {
        let step =
            poisson_subsampled_gaussian_rdp(sampling_probability, noise_multiplier, &self.orders)?;
        for (total, r) in self.rdp.iter_mut().zip(step) {
            *total += count as f64 * r;
        }
        Ok(())
    }

    /// Composes `count` ρ-zCDP releases (dp-accounting `ZCDpEvent(rho, xi=0)`): RDP ρα.
    pub fn compose_zcdp(&mut self, rho: f64, count: u64) -> Result<()> {
        if rho.is_nan() || rho < 0.0 {
            return Err(invalid("rho", rho, "must be >= 0"));
        }
        for (total, &a) in self.rdp.iter_mut().zip(&self.orders) {
            *total += count as f64 * (rho * a);
        }
        Ok(())
    }

    /// (ε, optimal order) at `delta` (dp-accounting `get_epsilon_and_optimal_order`).
    pub fn epsilon_and_optimal_order(&self, delta: f64) -> Result<(f64, f64)> {
        rdp_to_epsilon(&self.orders, &self.rdp, delta)
    }

    /// (δ, optimal order) at `epsilon` (dp-accounting `get_delta_and_optimal_order`).
    pub fn delta_and_optimal_order(&self, epsilon: f64) -> Result<(f64, f64)> {
        rdp_to_delta(&self.orders, &self.rdp, epsilon)
    }

    /// The orders.
    pub fn orders(&self) -> &[f64] {
        &self.orders
    }

    /// Accumulated RDP per order.
    pub fn rdp(&self) -> &[f64] {
        &self.rdp
    }
}

/// RDP of one Poisson-subsampled Gaussian step at each order
/// (dp-accounting `_compute_rdp_poisson_subsampled_gaussian`).
pub fn poisson_subsampled_gaussian_rdp(
    q: f64,
    noise_multiplier: f64,
    orders: &[f64],
) -> Result<Vec<f64>> {
    if !(0.0..=1.0).contains(&q) {
        return Err(invalid("sampling_probability", q, "must be in [0, 1]"));
    }
    if noise_multiplier.is_nan() || noise_multiplier < 0.0 {
        return Err(invalid(
            "noise_multiplier",
            noise_multiplier,
            "must be >= 0",
        ));
    }
    Ok(orders
        .iter()
        .map(|&alpha| {
            if q == 0.0 {
                0.0
            } else if alpha.is_infinite() || noise_multiplier == 0.0 {
                f64::INFINITY
            } else if q == 1.0 {
                alpha / (2.0 * noise_multiplier * noise_multiplier)
            } else {
                log_a(q, noise_multiplier, alpha) / (alpha - 1.0)
            }
        })
        .collect())
}

fn log_a(q: f64, sigma: f64, alpha: f64) -> f64 {
    if alpha.fract() == 0.0 {
        log_a_int(q, sigma, alpha as u64)
    } else {
        log_a_frac(q, sigma, alpha)
    }
}

/// `_compute_log_a_int`.
fn log_a_int(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut log_a = f64::NEG_INFINITY;
    let log1mq = (-q).ln_1p();
    let two_sigma_sq = 2.0 * (sigma * sigma);
    for i in 0..=alpha {
        let (fi, fa) = (i as f64, alpha as f64);
        let log_coef_i = log_comb(fa, fi) + fi * q.ln() + (alpha - i) as f64 * log1mq;
        let s = log_coef_i + (i * i - i) as f64 / two_sigma_sq;
        log_a = log_add(log_a, s);
    }
    log_a
}

const MAX_STEPS_LOG_A_FRAC: u32 = 1000;

/// `_compute_log_a_frac` (Mironov, Talwar, Zhang 2019, §3.3).
fn log_a_frac(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut log_a0, mut log_a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let sigma_sq = sigma * sigma;
    let z0 = sigma_sq * (1.0 / q - 1.0).ln() + 0.5;
    let log1mq = (-q).ln_1p();
    let (mut last_s0, mut last_s1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let sqrt2_sigma = core::f64::consts::SQRT_2 * sigma;
    for step in 0..MAX_STEPS_LOG_A_FRAC {
        let i = f64::from(step);
        let log_coef = log_comb(alpha, i);
        let j = alpha - i;
        let log_t0 = log_coef + i * q.ln() + j * log1mq;
        let log_t1 = log_coef + j * q.ln() + i * log1mq;
        let log_e0 = 0.5f64.ln() + log_erfc((i - z0) / sqrt2_sigma);
        let log_e1 = 0.5f64.ln() + log_erfc((z0 - j) / sqrt2_sigma);
        let log_s0 = log_t0 + (i * i - i) / (2.0 * sigma_sq) + log_e0;
        let log_s1 = log_t1 + (j * j - j) / (2.0 * sigma_sq) + log_e1;
        log_a0 = log_add(log_a0, log_s0);
        log_a1 = log_add(log_a1, log_s1);
        let total = log_add(log_a0, log_a1);
        if log_s0 < last_s0 && log_s1 < last_s1 && log_s0.max(log_s1) < total - 30.0 {
            return total;
        }
        last_s0 = log_s0;
        last_s1 = log_s1;
    }
    f64::INFINITY // dp-accounting excludes non-convergent orders the same way
}

/// dp-accounting `compute_epsilon`: (ε, optimal order); the first minimum wins ties.
pub fn rdp_to_epsilon(orders: &[f64], rdp: &[f64], delta: f64) -> Result<(f64, f64)> {
    if delta.is_nan() || delta < 0.0 {
        return Err(invalid("delta", delta, "must be >= 0"));
    }
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(invalid(
            "orders",
            orders.len(),
            "orders and rdp must have the same, non-zero length",
        ));
    }
    if delta == 0.0 {
        return Ok(if rdp.iter().all(|&r| r == 0.0) {
            (0.0, 0.0)
        } else {
            (f64::INFINITY, 0.0)
        });
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (i, (&a, &r)) in orders.iter().zip(rdp).enumerate() {
        if a < 1.0 {
            return Err(invalid("orders", a, "Renyi orders must be >= 1"));
        }
        let epsilon = if r < 0.0 || delta * delta + (-r).exp_m1() > 0.0 {
            0.0
        } else if a > 1.01 {
            r + (-1.0 / a).ln_1p() - (delta * a).ln() / (a - 1.0)
        } else {
            f64::INFINITY
        };
        if i == 0 || epsilon < best.0 {
            best = (epsilon, a);
        }
    }
    Ok((best.0.max(0.0), best.1))
}

/// dp-accounting `compute_delta`: (δ, optimal order).
pub fn rdp_to_delta(orders: &[f64], rdp: &[f64], epsilon: f64) -> Result<(f64, f64)> {
    if epsilon.is_nan() || epsilon < 0.0 {
        return Err(invalid("epsilon", epsilon, "must be >= 0"));
    }
    if orders.len() != rdp.len() || orders.is_empty() {
        return Err(invalid(
            "orders",
            orders.len(),
            "orders and rdp must have the same, non-zero length",
        ));
    }
    let mut best = (f64::INFINITY, orders[0]);
    for (i, (&a, &r)) in orders.iter().zip(rdp).enumerate() {
        if a < 1.0 {
            return Err(invalid("orders", a, "Renyi orders must be >= 1"));
        }
        let mut log_delta = if r <= 0.0 {
            f64::NEG_INFINITY
        } else {
            0.5 * (-(-r).exp()).ln_1p()
        };
        if a > 1.01 {
            let rdp_bound = (a - 1.0) * (r - epsilon + (-1.0 / a).ln_1p()) - a.ln();
            log_delta = log_delta.min(rdp_bound);
        }
        if i == 0 || log_delta < best.0 {
            best = (log_delta, a);
        }
    }
    Ok((best.0.exp().min(1.0), best.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_orders_match_dp_accounting_layout() {
        let o = default_orders();
        assert_eq!(o.len(), DEFAULT_RDP_ORDERS_LEN);
        assert_eq!(
            (o[0], o[98], o[99], o[151], o[155]),
            (1.1, 10.9, 11.0, 63.0, 1024.0)
        );
    }

    #[test]
    fn full_batch_gaussian_is_alpha_over_two_sigma_squared() {
        let mut acc = RdpAccountant::new();
        acc.compose_gaussian(2.0, 3).unwrap();
        for (a, r) in acc.orders().iter().zip(acc.rdp()) {
            assert!((r - 3.0 * a / 8.0).abs() < 1e-12);
        }
    }

    #[test]
    fn subsampling_amplifies() {
        let full = poisson_subsampled_gaussian_rdp(1.0, 1.0, &[2.0, 2.5, 8.0]).unwrap();
        let sub = poisson_subsampled_gaussian_rdp(0.01, 1.0, &[2.0, 2.5, 8.0]).unwrap();
        for (f, s) in full.iter().zip(&sub) {
            assert!(s < f && *s > 0.0);
        }
    }

    #[test]
    fn integer_and_fractional_series_agree_near_each_other() {
        // RDP is continuous in α: α = 3 (integer series) vs 3 ± 1e-6 (fractional series).
        for &(q, s) in &[(0.01, 1.0), (0.1, 2.0), (0.5, 0.8)] {
            let r = poisson_subsampled_gaussian_rdp(q, s, &[3.0 - 1e-6, 3.0, 3.0 + 1e-6]).unwrap();
            assert!(
                (r[0] - r[1]).abs() < 1e-4 * r[1] && (r[2] - r[1]).abs() < 1e-4 * r[1],
                "{r:?}"
            );
        }
    }
}
