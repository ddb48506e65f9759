//! Secure metric reports: the metrics a device seals to the two aggregators instead of
//! randomizing them, when its site runs a helper and its policy pins it, and the estimates the
//! leader makes from the helper's noisy batch sums (alone, or together with randomized-response
//! reports from devices that did not seal theirs).
//!
//! Why: at ε = 1 a randomized-response bit is flipped 27 % of the time, so each report carries
//! only (2p − 1)² ≈ 0.21 of a bit's information; a sealed report is exact, and the helper's noise
//! (σ ≈ 1.4 counts per bucket per batch at the same ρ) is added once per batch of ≥ n_min
//! reports. The thumbs-up rate's standard error falls from ≈ 1.08/√n to ≈ 0.5/√n, so a rollout
//! decides with about a quarter of the reports (BENCHMARKS.md, `feedloop simulate --evaluate
//! --secure-metrics`).
//!
//! The segment and feedback-volume metrics stay randomized responses in either mode (a segment
//! cell or a sampled kind would need the helper to hold one task per declared list; see
//! docs/PRIVACY.md §2).

use feedloop_privacy::randomized_response::{ProportionEstimate, RandomizedResponse};
use feedloop_secagg::MetricTask;

use crate::error::{Error, Result};
use crate::protocol::{SealedMetricStats, SecureMetricTerms};

/// The metrics a device may seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SecureMetric {
    /// 2 buckets: 0 thumbs down, 1 thumbs up (on the answer the version ranked first).
    Thumbs,
    /// 2 buckets: 0 the global head disagreed with the user's choice, 1 it agreed.
    Agreement,
    /// 5 buckets: rating − 1.
    Stars,
}

impl SecureMetric {
    pub const ALL: [Self; 3] = [Self::Thumbs, Self::Agreement, Self::Stars];

    pub fn name(self) -> &'static str {
        match self {
            Self::Thumbs => "thumbs",
            Self::Agreement => "agreement",
            Self::Stars => "stars",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub fn buckets(self) -> usize {
        match self {
            Self::Thumbs | Self::Agreement => 2,
            Self::Stars => 5,
        }
    }

    /// The task's name for `model_version`: the same as the report's budget key (`thumbs@3`).
    pub fn task_name(self, model_version: &str) -> String {
        format!("{}@{model_version}", self.name())
    }

    /// The Prio3Histogram task of this metric for `model_version` under `terms`.
    pub fn task(self, model_version: &str, terms: &SecureMetricTerms) -> Result<MetricTask> {
        MetricTask::new(
            &self.task_name(model_version),
            self.buckets(),
            terms.noise_stddev,
            u64::try_from(terms.min_reports).unwrap_or(0),
        )
        .map_err(|e| Error::InvalidInput(format!("secure metric: {e}")))
    }
}

/// What a device needs to release its metric reports: the ε the server de-biases randomized
/// responses for, its declared segments, and its secure-metric terms if it has a helper.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricTerms {
    pub epsilon: f64,
    pub segments: Vec<String>,
    pub secure: Option<SecureMetricTerms>,
}

impl MetricTerms {
    pub fn from_stats(stats: &crate::protocol::Stats) -> Self {
        Self {
            epsilon: stats.rr_epsilon,
            segments: stats.segments.clone(),
            secure: stats.secure_metrics.clone(),
        }
    }
}

/// Bits of a two-bucket metric's released batches: an unbiased estimate of how many reports were
/// 1, and its noise variance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SealedBits {
    pub reports: u64,
    /// `(c₁ − c₀ + n) / 2`: both buckets' noise counts, halved (noise variance B·σ²/2).
    pub ones: f64,
    pub noise_variance: f64,
    /// A bound on one report's sub-Gaussian parameter, noise included: √(1/4 + σ²/(2·n_min)),
    /// since a batch of m ≥ n_min bits adds m/4 + σ²/2 ≤ m·(1/4 + σ²/(2·n_min)).
    pub proxy: f64,
}

impl SealedBits {
    /// From a two-bucket metric's released batches; `None` for another shape or no report.
    pub fn of(stats: &SealedMetricStats, min_reports: u64) -> Option<Self> {
        let [c0, c1] = stats.noisy_counts[..] else {
            return None;
        };
        if stats.reports == 0 {
            return None;
        }
        let var = stats.noise_stddev * stats.noise_stddev;
        Some(Self {
            reports: stats.reports,
            ones: (c1 - c0) as f64 / 2.0 + stats.reports as f64 / 2.0,
            noise_variance: stats.batches as f64 * var / 2.0,
            proxy: (0.25 + var / (2.0 * min_reports.max(1) as f64)).sqrt(),
        })
    }
}

/// The rate from `rr_ones` of `rr_total` randomized-response bits and sealed bits together:
/// `(n_rr·π̂_rr + ones_sealed) / n`, unbiased, with its variance (the sealed part's binomial
/// variance at the combined rate, clamped to [0, 1], plus the helper's noise). `None` without
/// any report.
pub fn combined_rate(
    rr: &RandomizedResponse,
    rr_ones: u64,
    rr_total: u64,
    sealed: Option<&SealedBits>,
) -> Result<Option<ProportionEstimate>> {
    let sealed_reports = sealed.map_or(0, |s| s.reports);
    let n = (rr_total + sealed_reports) as f64;
    if n == 0.0 {
        return Ok(None);
    }
    let (rr_sum, rr_var) = if rr_total > 0 {
        let e = rr
            .estimate_proportion(rr_ones, rr_total)
            .map_err(|e| Error::InvalidInput(format!("privacy: {e}")))?;
        let m = rr_total as f64;
        (m * e.proportion, m * m * e.variance)
    } else {
        (0.0, 0.0)
    };
    let sealed_sum = sealed.map_or(0.0, |s| s.ones);
    let proportion = (rr_sum + sealed_sum) / n;
    let p = proportion.clamp(0.0, 1.0);
    let sealed_var = sealed.map_or(0.0, |s| s.reports as f64 * p * (1.0 - p) + s.noise_variance);
    let variance = (rr_var + sealed_var) / (n * n);
    Ok(Some(ProportionEstimate {
        proportion,
        variance,
        std_error: variance.sqrt(),
    }))
}

/// A star-rating distribution from de-biased randomized responses (`rr`: their count and
/// distribution, and the variance of their mean rating) and sealed batches together: the
/// combined distribution (each share unbiased), the mean rating and its variance.
pub fn combined_stars(
    rr: Option<(u64, &[f64], f64)>,
    sealed: Option<&SealedMetricStats>,
) -> Option<(Vec<f64>, f64, f64)> {
    let (rr_n, rr_dist, rr_mean_var) = rr.unwrap_or((0, &[], 0.0));
    let sealed = sealed.filter(|s| s.reports > 0 && s.noisy_counts.len() == 5);
    let sealed_n = sealed.map_or(0, |s| s.reports);
    let n = (rr_n + sealed_n) as f64;
    if n == 0.0 {
        return None;
    }
    let distribution: Vec<f64> = (0..5)
        .map(|k| {
            let from_rr = rr_dist.get(k).copied().unwrap_or(0.0) * rr_n as f64;
            let from_sealed = sealed.map_or(0.0, |s| s.noisy_counts[k] as f64);
            (from_rr + from_sealed) / n
        })
        .collect();
    let mean: f64 = distribution
        .iter()
        .enumerate()
        .map(|(k, d)| (k + 1) as f64 * d)
        .sum();
    let sealed_var = sealed.map_or(0.0, |s| {
        // The ratings' spread at the combined distribution (clamped, renormalized) per report,
        // and the helper's noise on Σ k·c_k: B·σ²·Σk² = B·σ²·55.
        let clamped: Vec<f64> = distribution.iter().map(|d| d.max(0.0)).collect();
        let total: f64 = clamped.iter().sum::<f64>().max(f64::MIN_POSITIVE);
        let m: f64 = clamped
            .iter()
            .enumerate()
            .map(|(k, d)| (k + 1) as f64 * d / total)
            .sum();
        let spread: f64 = clamped
            .iter()
            .enumerate()
            .map(|(k, d)| ((k + 1) as f64 - m).powi(2) * d / total)
            .sum();
        s.reports as f64 * spread + s.batches as f64 * s.noise_stddev.powi(2) * 55.0
    });
    let variance = (rr_n as f64 * rr_n as f64 * rr_mean_var + sealed_var) / (n * n);
    Some((distribution, mean, variance))
}

#[cfg(test)]
mod tests {
    use chacha20::rand_core::{Rng, SeedableRng};
    use feedloop_privacy::sampler::DiscreteGaussian;

    use super::*;

    fn terms() -> SecureMetricTerms {
        SecureMetricTerms {
            leader_key: String::new(),
            helper_key: String::new(),
            helper_fingerprint: String::new(),
            noise_stddev: 2.0,
            min_reports: 50,
        }
    }

    #[test]
    fn metrics_name_their_tasks() {
        for m in SecureMetric::ALL {
            assert_eq!(SecureMetric::parse(m.name()), Some(m));
            let task = m.task("7", &terms()).unwrap();
            assert_eq!(task.name(), format!("{}@7", m.name()));
            assert_eq!(task.buckets(), m.buckets());
            assert_eq!(task.rho(), 0.25);
        }
        assert_eq!(SecureMetric::parse("segments"), None);
    }

    /// Batches of `batch` sealed thumbs at true rate `p`, each released with the helper's noise.
    fn sealed_batches(
        p: f64,
        batches: u64,
        batch: u64,
        sigma: f64,
        seed: u64,
    ) -> SealedMetricStats {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(seed);
        let noise = DiscreteGaussian::from_sigma(sigma).unwrap();
        let mut counts = [0i64; 2];
        for _ in 0..batches {
            let mut c = [0i64; 2];
            for _ in 0..batch {
                let up = (rng.next_u64() as f64 / u64::MAX as f64) < p;
                c[usize::from(up)] += 1;
            }
            for (total, v) in counts.iter_mut().zip(c) {
                *total += v + noise.sample(&mut rng);
            }
        }
        SealedMetricStats {
            reports: batches * batch,
            pending: 0,
            batches,
            noisy_counts: counts.to_vec(),
            noise_stddev: sigma,
        }
    }

    #[test]
    fn sealed_rates_are_unbiased_and_their_intervals_cover() {
        let rr = RandomizedResponse::new(1.0).unwrap();
        let (p, runs) = (0.3, 2000);
        let mut covered = 0;
        let mut errors = 0.0;
        for seed in 0..runs {
            let stats = sealed_batches(p, 10, 50, 1.5, seed);
            let bits = SealedBits::of(&stats, 50).unwrap();
            let e = combined_rate(&rr, 0, 0, Some(&bits)).unwrap().unwrap();
            errors += e.proportion - p;
            if (e.proportion - p).abs() <= 1.96 * e.std_error {
                covered += 1;
            }
        }
        let coverage = covered as f64 / runs as f64;
        // 2,000 runs: the SE of the coverage is 0.005.
        assert!((0.93..=0.97).contains(&coverage), "coverage {coverage}");
        assert!(
            (errors / runs as f64).abs() < 0.005,
            "bias {}",
            errors / runs as f64
        );
    }

    #[test]
    fn sealed_bits_are_tighter_than_randomized_ones_at_the_same_rho() {
        // ε = 1 randomized response costs ρ = 1/2; σ = √2 per bucket costs the same.
        let rr = RandomizedResponse::new(1.0).unwrap();
        let stats = sealed_batches(0.5, 20, 50, std::f64::consts::SQRT_2, 3);
        let bits = SealedBits::of(&stats, 50).unwrap();
        let sealed = combined_rate(&rr, 0, 0, Some(&bits)).unwrap().unwrap();
        let local = combined_rate(&rr, 500, 1000, None).unwrap().unwrap();
        assert!(
            sealed.std_error < 0.55 * local.std_error,
            "{} vs {}",
            sealed.std_error,
            local.std_error
        );
        // Together: the counts add.
        let both = combined_rate(&rr, 500, 1000, Some(&bits)).unwrap().unwrap();
        assert!(both.std_error < local.std_error && both.std_error > sealed.std_error / 2.0);
        assert_eq!(combined_rate(&rr, 0, 0, None).unwrap(), None);
        assert!(bits.proxy < 0.52 && bits.proxy > 0.5);
    }

    #[test]
    fn stars_combine_both_sources() {
        let sealed = SealedMetricStats {
            reports: 100,
            pending: 3,
            batches: 2,
            noisy_counts: vec![0, 10, 20, 30, 40],
            noise_stddev: 1.0,
        };
        let (dist, mean, var) = combined_stars(None, Some(&sealed)).unwrap();
        assert_eq!(dist, vec![0.0, 0.1, 0.2, 0.3, 0.4]);
        assert!((mean - 4.0).abs() < 1e-12);
        // 100 reports of spread 1.0 plus 2·1·55 of noise, over 100².
        assert!((var - (100.0 + 110.0) / 1e4).abs() < 1e-12, "{var}");
        let rr_dist = [0.2, 0.2, 0.2, 0.2, 0.2];
        let (dist, mean, _) = combined_stars(Some((100, &rr_dist, 0.01)), Some(&sealed)).unwrap();
        assert!((dist[0] - 0.1).abs() < 1e-12 && (mean - 3.5).abs() < 1e-12);
        assert_eq!(combined_stars(None, None), None);
    }
}
