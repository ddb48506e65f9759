//! Privacy-loss-distribution (PLD) accountant for the Gaussian and the Poisson-subsampled
//! Gaussian, a port of `dp_accounting.pld.PLDAccountant` (dp-accounting 0.6, add-or-remove-one
//! neighbours) for privacy teams who account with PLDs rather than RDP: for compositions of
//! subsampled Gaussians it gives a markedly smaller ε than the RDP bound at the same δ.
//!
//! The same three steps as dp-accounting:
//! * **Discretization** — pessimistic *connect-the-dots* (Doroshenko et al. 2022) on the grid of
//!   losses `k·h` (h = 1e-4): the exact hockey-stick divergence δ(ε) of one mechanism is computed
//!   at every grid point between the losses at the ±e^-50 noise tails, and turned into the
//!   discrete PMF whose δ(ε) dominates it; the mass beyond the tails is put at +∞.
//! * **Composition** — convolution of PMFs; `count` identical steps are one FFT raised to the
//!   `count`-th power, on a window that a Chernoff bound says loses at most 1e-15 of mass (the
//!   lost mass is charged to +∞, so the estimate stays pessimistic).
//! * **Conversion** — the smallest ε with δ(ε) ≤ target; under add-or-remove the worse of the
//!   "remove" and "add" distributions (they differ once sampling is involved).
//!
//! Everything is `f64`, as in dp-accounting; `privacy/tests/reference.rs` holds this module to
//! dp-accounting's own numbers (tests/fixtures/privacy_reference.json) within 0.5 %.

use rustfft::num_complex::Complex;
use rustfft::FftPlanner;

use super::special::{log_add, log_ndtr, ndtr};
use crate::error::{invalid, Result};

/// dp-accounting's default `value_discretization_interval`.
pub const DEFAULT_PLD_DISCRETIZATION: f64 = 1e-4;
/// Mass a composition may drop from its tails (charged to +∞): dp-accounting's default.
const TAIL_MASS_TRUNCATION: f64 = 1e-15;
/// ln of the noise mass outside the discretized range (dp-accounting's `log_mass_truncation_bound`).
const LOG_MASS_TRUNCATION_BOUND: f64 = -50.0;
/// δ(ε) may rise by this much between grid points from rounding alone.
const DELTA_DIFF_TOLERANCE: f64 = 1e-12;
/// Below this many products a convolution is done directly (exact, and cheaper than an FFT).
const DIRECT_CONVOLUTION_LIMIT: usize = 1 << 16;

/// A PLD on the grid `(lower + i)·h`, plus the mass at +∞ (outcomes that identify the input).
#[derive(Debug, Clone, PartialEq)]
struct Pmf {
    lower: i64,
    probs: Vec<f64>,
    infinity_mass: f64,
}

impl Pmf {
    fn identity() -> Self {
        Self {
            lower: 0,
            probs: vec![1.0],
            infinity_mass: 0.0,
        }
    }

    fn compose(&self, other: &Pmf) -> Pmf {
        let probs = convolve(&self.probs, &other.probs);
        let (offset, probs, right_mass) = truncate_tails(probs, TAIL_MASS_TRUNCATION);
        Pmf {
            lower: self.lower + other.lower + offset as i64,
            probs,
            infinity_mass: self.infinity_mass + other.infinity_mass
                - self.infinity_mass * other.infinity_mass
                + right_mass,
        }
    }

    /// `times`-fold composition with itself (dp-accounting `DensePLDPmf.self_compose`).
    fn self_compose(&self, times: u64) -> Result<Pmf> {
        if times == 0 {
            return Ok(Pmf::identity());
        }
        if times == 1 {
            return Ok(self.clone());
        }
        let exponent = u32::try_from(times)
            .map_err(|_| invalid("count", times, "at most 2^32 - 1 compositions"))?;
        let (low, high) = self_convolve_bounds(&self.probs, times, TAIL_MASS_TRUNCATION);
        let output_len = (high - low + 1) as usize;
        let size = next_fast_len(output_len.max(self.probs.len()));
        let mut spectrum: Vec<Complex<f64>> = self
            .probs
            .iter()
            .map(|&p| Complex::new(p, 0.0))
            .chain(std::iter::repeat(Complex::new(0.0, 0.0)))
            .take(size)
            .collect();
        let mut planner = FftPlanner::new();
        planner.plan_fft_forward(size).process(&mut spectrum);
        for c in &mut spectrum {
            *c = c.powu(exponent);
        }
        planner.plan_fft_inverse(size).process(&mut spectrum);
        let scale = 1.0 / size as f64;
        // The DFT wraps modulo `size`: read the window [low, high] of the true convolution.
        let probs = (0..output_len)
            .map(|k| spectrum[(low as usize + k) % size].re * scale)
            .collect();
        Ok(Pmf {
            lower: self.lower * times as i64 + low,
            probs,
            infinity_mass: TAIL_MASS_TRUNCATION
                - (times as f64 * (-self.infinity_mass).ln_1p()).exp_m1(),
        })
    }

    fn loss(&self, index: usize, h: f64) -> f64 {
        (self.lower + index as i64) as f64 * h
    }

    /// δ(ε) = P[∞] + Σ_{loss > ε} p·(1 − e^{ε − loss}) (dp-accounting `_get_delta_for_epsilon`).
    fn delta_for_epsilon(&self, epsilon: f64, h: f64) -> f64 {
        let mut delta = self.infinity_mass;
        for (i, &p) in self.probs.iter().enumerate() {
            let loss = self.loss(i, h);
            if loss > epsilon {
                delta += -(epsilon - loss).exp_m1() * p;
            }
        }
        delta
    }

    /// The smallest ε ≥ 0 with δ(ε) ≤ `delta` (dp-accounting `_get_epsilon_for_delta`).
    fn epsilon_for_delta(&self, delta: f64, h: f64) -> f64 {
        if self.infinity_mass > delta {
            return f64::INFINITY;
        }
        let (mut mass_upper, mut mass_lower) = (self.infinity_mass, 0.0f64);
        for i in (0..self.probs.len()).rev() {
            let (loss, prob) = (self.loss(i, h), self.probs[i]);
            if mass_upper > delta
                && mass_lower > 0.0
                && ((mass_upper - delta) / mass_lower).ln() >= loss
            {
                break;
            }
            mass_upper += prob;
            mass_lower += (-loss).exp() * prob;
            if mass_upper >= delta && mass_lower == 0.0 {
                return loss.max(0.0);
            }
        }
        if mass_upper <= mass_lower + delta {
            0.0
        } else {
            ((mass_upper - delta) / mass_lower).ln()
        }
    }
}

/// Linear convolution: direct for small inputs, FFT otherwise (scipy `fftconvolve`).
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    let n = a.len() + b.len() - 1;
    if a.len().min(b.len()) <= 1 || a.len().saturating_mul(b.len()) <= DIRECT_CONVOLUTION_LIMIT {
        let mut out = vec![0.0; n];
        for (i, &x) in a.iter().enumerate() {
            for (j, &y) in b.iter().enumerate() {
                out[i + j] += x * y;
            }
        }
        return out;
    }
    let size = next_fast_len(n);
    let padded = |v: &[f64]| -> Vec<Complex<f64>> {
        v.iter()
            .map(|&p| Complex::new(p, 0.0))
            .chain(std::iter::repeat(Complex::new(0.0, 0.0)))
            .take(size)
            .collect()
    };
    let (mut fa, mut fb) = (padded(a), padded(b));
    let mut planner = FftPlanner::new();
    let forward = planner.plan_fft_forward(size);
    forward.process(&mut fa);
    forward.process(&mut fb);
    for (x, y) in fa.iter_mut().zip(&fb) {
        *x *= y;
    }
    planner.plan_fft_inverse(size).process(&mut fa);
    let scale = 1.0 / size as f64;
    fa[..n].iter().map(|c| c.re * scale).collect()
}

/// Drops at most `truncation`/2 of mass from each end: the left part is moved onto the first
/// kept loss and the right part returned, to be charged to +∞ (pessimistic; dp-accounting
/// `_truncate_tails`). Returns (offset of the first kept index, kept probabilities, right mass).
fn truncate_tails(probs: Vec<f64>, truncation: f64) -> (usize, Vec<f64>, f64) {
    let prefix = |iter: &mut dyn Iterator<Item = f64>| -> usize {
        let mut sum = 0.0;
        let mut count = 0;
        for p in iter {
            sum += p;
            if sum > truncation / 2.0 {
                return count;
            }
            count += 1;
        }
        count
    };
    let len = probs.len();
    let left = prefix(&mut probs.iter().copied()).min(len - 1);
    let right = (len - prefix(&mut probs.iter().rev().copied())).max(left + 1);
    let left_mass: f64 = probs[..left].iter().sum();
    let right_mass: f64 = probs[right..].iter().sum();
    let mut kept = probs[left..right].to_vec();
    kept[0] += left_mass;
    (left, kept, right_mass)
}

/// The index window of a `times`-fold self-convolution outside which at most `truncation` of
/// the mass lies, by Chernoff bounds at orders ±1..20 / len (dp-accounting
/// `compute_self_convolve_bounds`).
fn self_convolve_bounds(probs: &[f64], times: u64, truncation: f64) -> (i64, i64) {
    let len = probs.len();
    let mut upper = (len as i64 - 1) * times as i64;
    let mut lower = 0i64;
    let orders = (-20..0).chain(1..=20).map(|k| f64::from(k) / len as f64);
    for order in orders {
        // ln E[e^{order·i}], a weighted log-sum-exp.
        let max = (0..len)
            .filter(|&i| probs[i] != 0.0)
            .map(|i| i as f64 * order)
            .fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = probs
            .iter()
            .enumerate()
            .map(|(i, &p)| p * (i as f64 * order - max).exp())
            .sum();
        let log_mgf = sum.ln() + max;
        let bound = (times as f64 * log_mgf + (2.0 / truncation).ln()) / order;
        if !bound.is_finite() {
            continue;
        }
        if order > 0.0 {
            upper = upper.min(bound.ceil() as i64);
        } else {
            lower = lower.max(bound.floor() as i64);
        }
    }
    (lower, upper.max(lower))
}

/// The smallest 2^a·3^b·5^c ≥ n: sizes rustfft transforms fastest.
fn next_fast_len(n: usize) -> usize {
    let mut best = usize::MAX;
    let mut p5 = 1usize;
    while p5 < 2 * n.max(1) {
        let mut p35 = p5;
        while p35 < 2 * n.max(1) {
            let mut candidate = p35;
            while candidate < n {
                candidate *= 2;
            }
            best = best.min(candidate);
            p35 *= 3;
        }
        p5 *= 5;
    }
    best
}

/// ln(a·e^b + c) (dp-accounting `common.log_a_times_exp_b_plus_c`).
fn log_a_times_exp_b_plus_c(a: f64, b: f64, c: f64) -> f64 {
    let log_sub = |x: f64, y: f64| x + (-(y - x).exp()).ln_1p();
    if a == 0.0 {
        return c.ln();
    }
    if a < 0.0 {
        return log_sub(c.ln(), (-a).ln() + b);
    }
    if b == 0.0 {
        return (a + c).ln();
    }
    let d = b + a.ln();
    if c == 0.0 {
        d
    } else if c < 0.0 {
        log_sub(d, (-c).ln())
    } else {
        log_add(d, c.ln())
    }
}

/// math.isclose with its default relative tolerance.
fn is_close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs())
}

fn log_phi(x: f64) -> f64 {
    if x == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else {
        log_ndtr(x)
    }
}

/// Φ⁻¹(p) for a tiny p, by bisection on ln Φ (only the discretization range depends on it).
fn normal_quantile_of_log(log_p: f64) -> f64 {
    let (mut lo, mut hi) = (-60.0f64, 0.0f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if log_ndtr(mid) < log_p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Which neighbour is the "upper" distribution (dp-accounting `AdjacencyType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Adjacency {
    /// μ_upper = (1 − q)·N(0, σ²) + q·N(−1, σ²), μ_lower = N(0, σ²).
    Remove,
    /// μ_upper = N(0, σ²), μ_lower = (1 − q)·N(0, σ²) + q·N(1, σ²).
    Add,
}

/// The privacy loss of the (subsampled) Gaussian with sensitivity 1, standard deviation σ
/// (dp-accounting `GaussianPrivacyLoss`).
struct GaussianLoss {
    sigma: f64,
    q: f64,
    adjacency: Adjacency,
}

impl GaussianLoss {
    fn loss_without_sampling_remove(&self, x: f64) -> f64 {
        (-0.5 - x) / (self.sigma * self.sigma)
    }

    fn inverse_without_sampling_remove(&self, loss: f64) -> f64 {
        -0.5 - loss * self.sigma * self.sigma
    }

    fn loss_remove(&self, x: f64) -> f64 {
        let plain = self.loss_without_sampling_remove(x);
        if self.q == 1.0 {
            plain
        } else {
            log_a_times_exp_b_plus_c(self.q, plain, 1.0 - self.q)
        }
    }

    fn loss(&self, x: f64) -> f64 {
        match self.adjacency {
            Adjacency::Remove => self.loss_remove(x),
            Adjacency::Add => -self.loss_remove(-x),
        }
    }

    fn inverse_loss(&self, loss: f64) -> f64 {
        let q = self.q;
        match self.adjacency {
            Adjacency::Remove => {
                if q == 1.0 {
                    return self.inverse_without_sampling_remove(loss);
                }
                if is_close(loss, (-q).ln_1p()) {
                    return f64::INFINITY;
                }
                let plain = log_a_times_exp_b_plus_c(1.0 / q, loss, 1.0 - 1.0 / q);
                self.inverse_without_sampling_remove(plain)
            }
            Adjacency::Add => {
                if q == 1.0 {
                    return 1.0 + self.inverse_without_sampling_remove(loss);
                }
                if is_close(loss, -(-q).ln_1p()) {
                    return f64::NEG_INFINITY;
                }
                let plain = -log_a_times_exp_b_plus_c(1.0 / q, -loss, 1.0 - 1.0 / q);
                1.0 + self.inverse_without_sampling_remove(plain)
            }
        }
    }

    fn mu_upper_cdf(&self, x: f64) -> f64 {
        let phi = |t: f64| ndtr(t / self.sigma);
        match self.adjacency {
            Adjacency::Add => phi(x),
            Adjacency::Remove if self.q == 1.0 => phi(x + 1.0),
            Adjacency::Remove => (1.0 - self.q) * phi(x) + self.q * phi(x + 1.0),
        }
    }

    fn mu_lower_log_cdf(&self, x: f64) -> f64 {
        let log_cdf = |t: f64| log_phi(t / self.sigma);
        match self.adjacency {
            Adjacency::Remove => log_cdf(x),
            Adjacency::Add if self.q == 1.0 => log_cdf(x - 1.0),
            Adjacency::Add => log_add(
                (-self.q).ln_1p() + log_cdf(x),
                self.q.ln() + log_cdf(x - 1.0),
            ),
        }
    }

    /// The exact hockey-stick divergence at ε (dp-accounting `get_delta_for_epsilon`).
    fn delta_for_epsilon(&self, epsilon: f64) -> f64 {
        let q = self.q;
        if q < 1.0 {
            match self.adjacency {
                Adjacency::Add if epsilon >= -(-q).ln_1p() => return 0.0,
                Adjacency::Remove if epsilon <= (-q).ln_1p() => {
                    return (-epsilon.exp_m1()).clamp(0.0, 1.0)
                }
                _ => {}
            }
        }
        let x = self.inverse_loss(epsilon);
        (self.mu_upper_cdf(x) - (epsilon + self.mu_lower_log_cdf(x)).exp()).clamp(0.0, 1.0)
    }

    /// The x range outside which the noise has at most e^-50 of its mass.
    fn truncation(&self) -> (f64, f64) {
        let lower = self.sigma * normal_quantile_of_log(0.5f64.ln() + LOG_MASS_TRUNCATION_BOUND);
        let upper = -lower;
        match self.adjacency {
            Adjacency::Add => (lower, upper + 1.0),
            Adjacency::Remove => (lower - 1.0, upper),
        }
    }

    /// Pessimistic connect-the-dots on the grid `k·h` (dp-accounting
    /// `create_pmf_pessimistic_connect_dots_fixed_gap`).
    fn connect_the_dots(&self, h: f64) -> Result<Pmf> {
        let (lower_x, upper_x) = self.truncation();
        let (epsilon_upper, epsilon_lower) = (self.loss(lower_x), self.loss(upper_x));
        let (k_lower, k_upper) = (
            (epsilon_lower / h).floor() as i64,
            (epsilon_upper / h).ceil() as i64,
        );
        let mut deltas: Vec<f64> = (k_lower..=k_upper)
            .map(|k| self.delta_for_epsilon(k as f64 * h))
            .collect();
        if deltas.len() == 1 {
            return Ok(Pmf {
                lower: k_lower,
                probs: vec![1.0 - deltas[0]],
                infinity_mass: deltas[0],
            });
        }
        if deltas
            .windows(2)
            .any(|w| w[1] - w[0] > DELTA_DIFF_TOLERANCE)
        {
            return Err(invalid(
                "noise_multiplier",
                self.sigma,
                "the hockey-stick divergence is not monotone at this precision",
            ));
        }
        for i in 1..deltas.len() {
            deltas[i] = deltas[i].min(deltas[i - 1]);
        }
        let n = deltas.len();
        let diffs: Vec<f64> = deltas.windows(2).map(|w| w[1] - w[0]).collect();
        let mut probs = vec![0.0; n];
        probs[0] = 1.0 - deltas[0] + diffs[0] / h.exp_m1();
        for i in 1..n - 1 {
            probs[i] = (diffs[i] - diffs[i - 1] * h.exp()) / h.exp_m1();
        }
        probs[n - 1] = diffs[n - 2] / (-h).exp_m1();
        for p in &mut probs {
            *p = p.max(0.0);
        }
        Ok(Pmf {
            lower: k_lower,
            probs,
            infinity_mass: deltas[n - 1],
        })
    }
}

/// A PLD accountant for add-or-remove-one neighbours: the "remove" and "add" distributions,
/// equal (and kept once) until a subsampled event makes them differ.
#[derive(Debug, Clone, PartialEq)]
pub struct PldAccountant {
    discretization: f64,
    remove: Pmf,
    add: Option<Pmf>,
    non_private: bool,
}

impl Default for PldAccountant {
    fn default() -> Self {
        Self::new()
    }
}

impl PldAccountant {
    /// Empty accountant on dp-accounting's default grid (h = 1e-4).
    pub fn new() -> Self {
        Self {
            discretization: DEFAULT_PLD_DISCRETIZATION,
            remove: Pmf::identity(),
            add: None,
            non_private: false,
        }
    }

    /// Empty accountant on the grid `k·h`: a coarser grid is faster and more pessimistic.
    pub fn with_discretization(h: f64) -> Result<Self> {
        if !(h.is_finite() && h > 0.0 && h <= 1.0) {
            return Err(invalid("discretization", h, "must be in (0, 1]"));
        }
        Ok(Self {
            discretization: h,
            ..Self::new()
        })
    }

    /// Composes `count` Gaussian releases with noise multiplier σ/Δ (dp-accounting
    /// `GaussianDpEvent`; `count` of them are one Gaussian with multiplier z/√count).
    pub fn compose_gaussian(&mut self, noise_multiplier: f64, count: u64) -> Result<()> {
        check_noise_multiplier(noise_multiplier)?;
        if count == 0 {
            return Ok(());
        }
        if noise_multiplier == 0.0 {
            self.non_private = true;
            return Ok(());
        }
        let single = GaussianLoss {
            sigma: noise_multiplier / (count as f64).sqrt(),
            q: 1.0,
            adjacency: Adjacency::Remove,
        }
        .connect_the_dots(self.discretization)?;
        self.compose_pmfs(&single, None);
        Ok(())
    }

    /// Composes `count` Poisson-subsampled Gaussian steps (dp-accounting
    /// `PoissonSampledDpEvent(q, GaussianDpEvent(z))` composed `count` times).
    pub fn compose_poisson_subsampled_gaussian(
        &mut self,
        noise_multiplier: f64,
        sampling_probability: f64,
        count: u64,
    ) -> Result<()> {
        check_noise_multiplier(noise_multiplier)?;
        if !(0.0..=1.0).contains(&sampling_probability) {
            return Err(invalid(
                "sampling_probability",
                sampling_probability,
                "must be in [0, 1]",
            ));
        }
        if count == 0 || sampling_probability == 0.0 {
            return Ok(());
        }
        if noise_multiplier == 0.0 {
            self.non_private = true;
            return Ok(());
        }
        let loss = |adjacency| GaussianLoss {
            sigma: noise_multiplier,
            q: sampling_probability,
            adjacency,
        };
        let remove = loss(Adjacency::Remove)
            .connect_the_dots(self.discretization)?
            .self_compose(count)?;
        let add = if sampling_probability < 1.0 {
            Some(
                loss(Adjacency::Add)
                    .connect_the_dots(self.discretization)?
                    .self_compose(count)?,
            )
        } else {
            None
        };
        self.compose_pmfs(&remove, add.as_ref());
        Ok(())
    }

    fn compose_pmfs(&mut self, remove: &Pmf, add: Option<&Pmf>) {
        if self.add.is_some() || add.is_some() {
            let mine = self.add.as_ref().unwrap_or(&self.remove);
            self.add = Some(mine.compose(add.unwrap_or(remove)));
        }
        self.remove = self.remove.compose(remove);
    }

    /// The smallest ε with δ(ε) ≤ `delta` over both neighbour directions.
    pub fn epsilon(&self, delta: f64) -> Result<f64> {
        if !(0.0..=1.0).contains(&delta) {
            return Err(invalid("delta", delta, "must be in [0, 1]"));
        }
        if self.non_private {
            return Ok(f64::INFINITY);
        }
        let h = self.discretization;
        let remove = self.remove.epsilon_for_delta(delta, h);
        Ok(match &self.add {
            Some(add) => remove.max(add.epsilon_for_delta(delta, h)),
            None => remove,
        })
    }

    /// δ at `epsilon` over both neighbour directions.
    pub fn delta(&self, epsilon: f64) -> Result<f64> {
        if epsilon.is_nan() || epsilon < 0.0 {
            return Err(invalid("epsilon", epsilon, "must be >= 0"));
        }
        if self.non_private {
            return Ok(1.0);
        }
        let h = self.discretization;
        let remove = self.remove.delta_for_epsilon(epsilon, h);
        Ok(match &self.add {
            Some(add) => remove.max(add.delta_for_epsilon(epsilon, h)),
            None => remove,
        })
    }
}

fn check_noise_multiplier(z: f64) -> Result<()> {
    if z.is_finite() && z >= 0.0 {
        Ok(())
    } else {
        Err(invalid("noise_multiplier", z, "must be finite and >= 0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_lengths_are_5_smooth_and_minimal() {
        assert_eq!(next_fast_len(1), 1);
        assert_eq!(next_fast_len(7), 8);
        assert_eq!(next_fast_len(11), 12);
        assert_eq!(next_fast_len(1001), 1024);
        assert_eq!(next_fast_len(1025), 1080);
    }

    #[test]
    fn fft_self_composition_equals_repeated_direct_convolution() {
        let pmf = Pmf {
            lower: -3,
            probs: vec![0.1, 0.2, 0.3, 0.25, 0.15],
            infinity_mass: 0.01,
        };
        let fft = pmf.self_compose(6).unwrap();
        let mut direct = vec![1.0];
        for _ in 0..6 {
            direct = convolve(&direct, &pmf.probs);
        }
        for (i, &p) in fft.probs.iter().enumerate() {
            let j = (fft.lower - pmf.lower * 6) as usize + i;
            assert!((p - direct[j]).abs() < 1e-14, "{i}: {p} vs {}", direct[j]);
        }
        let want_inf = 1.0 - 0.99f64.powi(6);
        assert!((fft.infinity_mass - want_inf - TAIL_MASS_TRUNCATION).abs() < 1e-15);
    }

    #[test]
    fn a_single_gaussian_matches_the_analytic_hockey_stick_divergence() {
        // δ(ε) of N(0,σ²) vs N(1,σ²): Φ(1/(2σ) − εσ) − e^ε Φ(−1/(2σ) − εσ) (Balle–Wang).
        let sigma = 1.5;
        let mut acc = PldAccountant::new();
        acc.compose_gaussian(sigma, 1).unwrap();
        for epsilon in [0.1, 0.5, 1.0, 2.0] {
            let exact = ndtr(0.5 / sigma - epsilon * sigma)
                - epsilon.exp() * ndtr(-0.5 / sigma - epsilon * sigma);
            let got = acc.delta(epsilon).unwrap();
            // Pessimistic, and tight to the grid.
            assert!(got >= exact - 1e-12, "ε={epsilon}: {got} < exact {exact}");
            assert!(
                got <= exact * 1.001 + 1e-12,
                "ε={epsilon}: {got} vs exact {exact}"
            );
        }
    }

    #[test]
    fn subsampling_only_lowers_epsilon_and_composition_only_raises_it() {
        let eps = |q: f64, steps: u64| {
            let mut acc = PldAccountant::new();
            acc.compose_poisson_subsampled_gaussian(1.0, q, steps)
                .unwrap();
            acc.epsilon(1e-5).unwrap()
        };
        assert!(eps(0.01, 10) < eps(0.1, 10));
        assert!(eps(0.1, 10) < eps(1.0, 10));
        assert!(eps(0.1, 10) < eps(0.1, 100));
    }

    #[test]
    fn no_noise_is_infinite_epsilon_and_bad_parameters_are_errors() {
        let mut acc = PldAccountant::new();
        acc.compose_gaussian(0.0, 3).unwrap();
        assert_eq!(acc.epsilon(1e-5).unwrap(), f64::INFINITY);
        assert_eq!(acc.delta(10.0).unwrap(), 1.0);
        let mut acc = PldAccountant::new();
        assert!(acc.compose_gaussian(f64::NAN, 1).is_err());
        assert!(acc
            .compose_poisson_subsampled_gaussian(1.0, 1.5, 1)
            .is_err());
        assert!(acc.epsilon(-0.1).is_err());
        assert!(PldAccountant::with_discretization(0.0).is_err());
        // Nothing composed: no privacy spent.
        assert_eq!(acc.epsilon(1e-5).unwrap(), 0.0);
    }
}
