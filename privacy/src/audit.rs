//! Empirical privacy auditing: a statistical *lower* bound on ε, set beside the claim.
//!
//! The auditor runs the real mechanism many times on two neighbouring inputs
//! and tries to tell them apart with a threshold test on a 1-D projection:
//! * `gaussian`: inputs `±10C·e₁` (both clipped to the same radius, maximally
//!   far apart: the Δ = 2C case), statistic = first output coordinate;
//! * `rr`: true bits 1 and 0, statistic = the reported bit.
//!
//! For a test with false-positive rate FPR and false-negative rate FNR, any
//! (ε, δ)-DP mechanism satisfies `FPR·e^ε + FNR ≥ 1 − δ` and symmetrically, so
//! `ε ≥ ln((1 − δ − FNR)/FPR)`. We use Clopper–Pearson upper bounds on FPR and
//! FNR (each one-sided at 97.5 %, jointly ≥ 95 %), giving a 95 % lower bound
//! ε_LB. For the Gaussian the threshold is chosen on the first half of the
//! trials and ε_LB is computed on the second half only, so the choice does not
//! bias the bound. A correct mechanism gives `ε_LB ≤ claimed ε` with
//! probability ≥ 95 %; a lower bound above the claim is evidence of a bug.

use rand_core::{CryptoRng, Rng};
use serde::Serialize;

use crate::accounting::zcdp_to_approx_dp;
use crate::error::{invalid, Result};
use crate::privatizer::{privatize_impl, Fault, Mechanism, PrivatizerConfig};
use crate::randomized_response::RandomizedResponse;

/// One-sided level of each Clopper–Pearson bound (two bounds → 95 % jointly).
const ONE_SIDED_ALPHA: f64 = 0.025;

/// Result of an audit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditReport {
    /// Mechanism audited.
    pub mechanism: Mechanism,
    /// Runs per neighbouring input.
    pub trials: u64,
    /// ε the mechanism claims at `delta`.
    pub claimed_epsilon: f64,
    /// δ of the claim and of the bound.
    pub delta: f64,
    /// 95 % lower confidence bound on the true ε.
    pub epsilon_lower_bound: f64,
    /// Decision threshold (statistic > threshold ⇒ "first input").
    pub threshold: f64,
    /// Clopper–Pearson upper bound on the false-positive rate at the threshold.
    pub false_positive_rate_upper: f64,
    /// Clopper–Pearson upper bound on the false-negative rate at the threshold.
    pub false_negative_rate_upper: f64,
    /// Joint confidence of the bound.
    pub confidence: f64,
}

impl AuditReport {
    /// `true` when the empirical lower bound does not contradict the claim.
    pub fn is_consistent(&self) -> bool {
        self.epsilon_lower_bound <= self.claimed_epsilon
    }
}

/// Audits the update privatizer with configuration `cfg` in `dimension`
/// dimensions: `trials` runs per neighbouring input; `progress(done, total)`
/// is called as runs complete (total = 2·trials).
pub fn audit_gaussian<R: CryptoRng + ?Sized>(
    cfg: &PrivatizerConfig,
    dimension: usize,
    delta: f64,
    trials: u64,
    rng: &mut R,
    progress: impl FnMut(u64, u64),
) -> Result<AuditReport> {
    audit_gaussian_impl(cfg, dimension, delta, trials, rng, progress, Fault::None)
}

pub(crate) fn audit_gaussian_impl<R: Rng + ?Sized>(
    cfg: &PrivatizerConfig,
    dimension: usize,
    delta: f64,
    trials: u64,
    rng: &mut R,
    mut progress: impl FnMut(u64, u64),
    fault: Fault,
) -> Result<AuditReport> {
    check_args(delta, trials)?;
    if dimension == 0 {
        return Err(invalid("dimension", dimension, "must be >= 1"));
    }
    let claimed_rho = claimed_rho(cfg, fault);
    let claimed_epsilon = zcdp_to_approx_dp(claimed_rho, delta)?;
    let total = 2 * trials;
    let mut inputs = [vec![0.0f64; dimension], vec![0.0f64; dimension]];
    inputs[0][0] = 10.0 * cfg.clip_norm();
    inputs[1][0] = -10.0 * cfg.clip_norm();
    let mut samples: [Vec<i64>; 2] = [
        Vec::with_capacity(trials as usize),
        Vec::with_capacity(trials as usize),
    ];
    let mut done = 0u64;
    for _ in 0..trials {
        for (which, input) in inputs.iter().enumerate() {
            let out = privatize_impl(input, cfg, rng, fault)?;
            samples[which].push(out.values()[0]);
            done += 1;
        }
        if done.is_multiple_of(4096) {
            progress(done, total);
        }
    }
    progress(total, total);

    // Threshold selection on the first half, bound on the second half.
    let half = (trials / 2) as usize;
    let (mut pos_sel, pos_eval) = (samples[0][..half].to_vec(), &samples[0][half..]);
    let (mut neg_sel, neg_eval) = (samples[1][..half].to_vec(), &samples[1][half..]);
    pos_sel.sort_unstable();
    neg_sel.sort_unstable();
    let mut candidates: Vec<i64> = pos_sel.iter().chain(&neg_sel).copied().collect();
    candidates.sort_unstable();
    candidates.dedup();
    let mut best = (f64::NEG_INFINITY, 0i64);
    for &tau in &candidates {
        // FP: first input declared for the second (y > τ); FN: y ≤ τ under the first.
        let fp = (neg_sel.len() - neg_sel.partition_point(|&y| y <= tau)) as u64;
        let fn_ = pos_sel.partition_point(|&y| y <= tau) as u64;
        let e = epsilon_bound(fp, fn_, half as u64, half as u64, delta).0;
        if e > best.0 {
            best = (e, tau);
        }
    }
    let tau = best.1;
    let fp = neg_eval.iter().filter(|&&y| y > tau).count() as u64;
    let fn_ = pos_eval.iter().filter(|&&y| y <= tau).count() as u64;
    let (eps_lb, fpr_u, fnr_u) =
        epsilon_bound(fp, fn_, neg_eval.len() as u64, pos_eval.len() as u64, delta);
    Ok(AuditReport {
        mechanism: Mechanism::DiscreteGaussian,
        trials,
        claimed_epsilon,
        delta,
        epsilon_lower_bound: eps_lb,
        threshold: tau as f64,
        false_positive_rate_upper: fpr_u,
        false_negative_rate_upper: fnr_u,
        confidence: 1.0 - 2.0 * ONE_SIDED_ALPHA,
    })
}

fn claimed_rho(cfg: &PrivatizerConfig, fault: Fault) -> f64 {
    #[cfg(test)]
    if fault == Fault::SensitivityC {
        // The bug under test: accounting with Δ = C although a whole update is replaced.
        return crate::accounting::zcdp_rho_gaussian(cfg.clip_norm(), cfg.noise_stddev());
    }
    let _ = fault;
    cfg.rho()
}

/// Audits randomized response: `trials` responses for each true bit.
pub fn audit_randomized_response<R: CryptoRng + ?Sized>(
    rr: &RandomizedResponse,
    trials: u64,
    rng: &mut R,
    progress: impl FnMut(u64, u64),
) -> Result<AuditReport> {
    audit_rr_impl(rr, rr.epsilon(), trials, rng, progress)
}

pub(crate) fn audit_rr_impl<R: Rng + ?Sized>(
    rr: &RandomizedResponse,
    claimed_epsilon: f64,
    trials: u64,
    rng: &mut R,
    mut progress: impl FnMut(u64, u64),
) -> Result<AuditReport> {
    check_args(0.5, trials)?;
    let total = 2 * trials;
    let (mut false_pos, mut false_neg) = (0u64, 0u64);
    for i in 0..trials {
        false_neg += u64::from(!rr.respond_any_rng(true, rng));
        false_pos += u64::from(rr.respond_any_rng(false, rng));
        if (i + 1) % 4096 == 0 {
            progress(2 * (i + 1), total);
        }
    }
    progress(total, total);
    let (eps_lb, fpr_u, fnr_u) = epsilon_bound(false_pos, false_neg, trials, trials, 0.0);
    Ok(AuditReport {
        mechanism: Mechanism::RandomizedResponse,
        trials,
        claimed_epsilon,
        delta: 0.0,
        epsilon_lower_bound: eps_lb,
        threshold: 0.5,
        false_positive_rate_upper: fpr_u,
        false_negative_rate_upper: fnr_u,
        confidence: 1.0 - 2.0 * ONE_SIDED_ALPHA,
    })
}

fn check_args(delta: f64, trials: u64) -> Result<()> {
    if !(0.0..1.0).contains(&delta) {
        return Err(invalid("delta", delta, "must be in [0, 1)"));
    }
    if trials < 100 {
        return Err(invalid(
            "trials",
            trials,
            "need at least 100 trials per input",
        ));
    }
    Ok(())
}

/// (ε_LB, FPR_upper, FNR_upper) from `fp` of `n_neg` and `fn_` of `n_pos`.
fn epsilon_bound(fp: u64, fn_: u64, n_neg: u64, n_pos: u64, delta: f64) -> (f64, f64, f64) {
    let fpr_u = clopper_pearson_upper(fp, n_neg, ONE_SIDED_ALPHA);
    let fnr_u = clopper_pearson_upper(fn_, n_pos, ONE_SIDED_ALPHA);
    let ln_ratio = |num: f64, den: f64| {
        if num > 0.0 {
            (num / den).ln()
        } else {
            f64::NEG_INFINITY
        }
    };
    let eps = ln_ratio(1.0 - delta - fnr_u, fpr_u)
        .max(ln_ratio(1.0 - delta - fpr_u, fnr_u))
        .max(0.0);
    (eps, fpr_u, fnr_u)
}

/// One-sided Clopper–Pearson upper bound: the p with P(Bin(n, p) ≤ k) = α,
/// i.e. the (1−α) quantile of Beta(k+1, n−k); 1 when k = n.
pub fn clopper_pearson_upper(k: u64, n: u64, alpha: f64) -> f64 {
    if k >= n {
        return 1.0;
    }
    let (a, b) = ((k + 1) as f64, (n - k) as f64);
    // I_p(a, b) is increasing in p: bisect for I_p = 1 − α.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    for _ in 0..100 {
        let mid = 0.5 * (lo + hi);
        if regularized_incomplete_beta(mid, a, b) < 1.0 - alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// I_x(a, b) by the continued fraction (Numerical Recipes `betai`/`betacf`).
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front =
        libm::lgamma(a + b) - libm::lgamma(a) - libm::lgamma(b) + a * x.ln() + b * (-x).ln_1p();
    if x < (a + 1.0) / (a + b + 2.0) {
        (ln_front.exp() * beta_continued_fraction(x, a, b)) / a
    } else {
        1.0 - (ln_front.exp() * beta_continued_fraction(1.0 - x, b, a)) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..10_000 {
        let m = f64::from(m);
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        d = if d.abs() < TINY { TINY } else { d };
        c = 1.0 + aa / c;
        c = if c.abs() < TINY { TINY } else { c };
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < 1e-15 {
            break;
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::ChaCha20Rng;
    use rand_core::SeedableRng;

    // σ = 2C: μ = 2C/σ ≈ 1 in the 1-D test; claim ε(δ = 1e-3) ≈ 3.5. Expected
    // lower bounds at 30k trials (from the Gaussian trade-off curve): correct ≈ 2.2,
    // σ/2 ≈ 4.6 (> 3.5), sensitivity-C claim ≈ 1.55 (< 2.2).
    const TRIALS: u64 = 30_000;
    const DELTA: f64 = 1e-3;

    fn cfg() -> PrivatizerConfig {
        PrivatizerConfig::new(1.0, 0.05, 2.0).unwrap()
    }

    fn run(fault: Fault, seed: u64) -> AuditReport {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let r = audit_gaussian_impl(&cfg(), 1, DELTA, TRIALS, &mut rng, |_, _| {}, fault).unwrap();
        println!(
            "{fault:?}: ε_LB = {:.3}, claimed ε = {:.3}",
            r.epsilon_lower_bound, r.claimed_epsilon
        );
        r
    }

    #[test]
    fn correct_gaussian_is_consistent_with_its_claim() {
        let mut calls = 0;
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let r = audit_gaussian(&cfg(), 1, DELTA, TRIALS, &mut rng, |done, total| {
            assert!(done <= total);
            calls += 1;
        })
        .unwrap();
        assert!(calls > 1);
        println!(
            "correct: ε_LB = {:.3}, claimed ε = {:.3}",
            r.epsilon_lower_bound, r.claimed_epsilon
        );
        assert!(
            r.epsilon_lower_bound > 1.0,
            "the test must have power: {r:?}"
        );
        assert!(r.is_consistent(), "{r:?}");
    }

    #[test]
    fn halved_sigma_is_caught() {
        let r = run(Fault::HalfSigma, 12);
        assert!(!r.is_consistent(), "{r:?}");
    }

    #[test]
    fn skipped_clipping_is_caught() {
        let r = run(Fault::SkipClipping, 13);
        assert!(!r.is_consistent(), "{r:?}");
    }

    #[test]
    fn sensitivity_c_instead_of_2c_is_caught() {
        let r = run(Fault::SensitivityC, 14);
        assert!(!r.is_consistent(), "{r:?}");
    }

    #[test]
    fn correct_randomized_response_is_consistent() {
        let rr = RandomizedResponse::new(1.0).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(15);
        let r = audit_randomized_response(&rr, 200_000, &mut rng, |_, _| {}).unwrap();
        assert!(r.is_consistent() && r.epsilon_lower_bound > 0.9, "{r:?}");
    }

    #[test]
    fn randomized_response_claiming_half_its_epsilon_is_caught() {
        let rr = RandomizedResponse::new(2.0).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(16);
        let r = audit_rr_impl(&rr, 1.0, 200_000, &mut rng, |_, _| {}).unwrap();
        assert!(!r.is_consistent(), "{r:?}");
    }

    #[test]
    fn clopper_pearson_matches_known_values() {
        // scipy.stats.beta.ppf(0.975, 1, 100) = 0.0362167..., beta.ppf(0.975, 11, 90) = 0.1762...
        assert!((clopper_pearson_upper(0, 100, 0.025) - 0.036_216_8).abs() < 1e-5);
        assert!((clopper_pearson_upper(10, 100, 0.025) - 0.176_223).abs() < 1e-4);
    }
}
