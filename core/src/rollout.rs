//! Staged rollout: which devices get a canary version, and the sequential test that decides
//! whether it rolls back or goes to everyone.
//!
//! **Arms.** A device is in a canary's arm when `SHA-256("feedloop-canary", version, client id)`,
//! read as a number in [0, 1), is below the canary fraction ([`in_canary`]): deterministic (a
//! device keeps its arm for the whole rollout, on every replica), independent across canaries (a
//! different tenth of the devices tries each one) and unrelated to anything about the device.
//!
//! **The test.** Each arm's reports are ε-randomized-response bits, so each de-biased report
//! `y = (bit − (1 − q)) / (2q − 1)` is an unbiased, bounded observation of the arm's thumbs-up rate,
//! and `y − E y` is sub-Gaussian with σ = 1 / (2(2q − 1)) (Hoeffding: a bit is ½-sub-Gaussian).
//! For each arm we keep Robbins' normal-mixture **confidence sequence** at level α/2 (Howard,
//! Ramdas, McAuliffe & Sekhon 2021, the two-sided normal mixture; parametrized as in
//! Waudby-Smith et al. 2024): with probability ≥ 1 − α/2 it contains the arm's true rate **at every
//! number of reports at once**, so the server may look after every report, and stop whenever it
//! likes, without inflating the error rate — which a z-test repeated after every report does (its
//! false-alarm rate grows towards 1 as it is looked at). The bound is exact (not asymptotic)
//! because the observations are bounded. A union bound over the two arms gives the difference
//! `p_canary − p_control` a confidence sequence at level 1 − α.
//!
//! Verdicts ([`SequentialTest::evaluate`]), with a tolerated drop `margin`:
//! - **regression** when the whole interval of the difference lies below −margin: the canary is
//!   worse by more than the margin, at confidence 1 − α under continuous monitoring → roll back;
//! - **non-inferior** when it lies above −margin → promote;
//! - **planned reached** when the canary has its planned number of reports, and both arms their
//!   minimum, with neither → promote (no significant difference: the planned sample bounds how
//!   long a canary waits);
//! - otherwise continue.
//!
//! An equal version is rolled back with probability ≤ α/2 at any time (only the upper side can
//! fire), however often it is looked at. The price of validity at every look is width: about
//! 1.4–2× a fixed-sample interval at the planned size (BENCHMARKS.md, `feedloop simulate
//! --evaluate`). A group-sequential design (O'Brien–Fleming) is narrower but needs a fixed
//! schedule of looks and a maximum sample fixed in advance; reports here arrive one at a time,
//! whenever devices sync, so the always-valid sequence fits.

use feedloop_privacy::randomized_response::RandomizedResponse;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::protocol::{ArmEstimate, RolloutEvidence, RolloutVerdict};
use crate::secure_metrics::{combined_rate, SealedBits};

/// Where a client falls in [0, 1) for the canary `version`.
pub fn canary_position(client_id: &str, version: &str) -> f64 {
    let mut h = Sha256::new();
    // Length-prefixed, so ("1", "23") and ("12", "3") differ.
    for part in [
        b"feedloop-canary".as_slice(),
        version.as_bytes(),
        client_id.as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let digest = h.finalize();
    let top = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (top >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether `client_id` gets the canary `version` served to a `fraction` of devices.
pub fn in_canary(client_id: &str, version: &str, fraction: f64) -> bool {
    canary_position(client_id, version) < fraction
}

/// The reports one arm holds: how many randomized bits, how many of them 1, and the sealed
/// reports in the helper's released batches (secure metrics), if any.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ArmReports {
    pub ones: u64,
    pub total: u64,
    pub sealed: Option<SealedBits>,
}

impl ArmReports {
    /// `ones` of `total` randomized-response bits, nothing sealed.
    pub fn randomized(ones: u64, total: u64) -> Self {
        Self {
            ones,
            total,
            sealed: None,
        }
    }

    /// Randomized and sealed reports together.
    pub fn count(&self) -> u64 {
        self.total + self.sealed.map_or(0, |s| s.reports)
    }
}

/// The sequential test's parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SequentialTest {
    /// The tolerated drop in thumbs-up rate (absolute, e.g. 0.02).
    pub margin: f64,
    /// The error rate at all looks together (e.g. 0.05).
    pub alpha: f64,
    /// Reports per arm the sequence is tightest at; also when a canary with no verdict is
    /// promoted.
    pub planned_reports: u64,
    /// Reports per arm before any verdict (a guard against tiny samples; validity needs none).
    pub min_reports: u64,
}

impl SequentialTest {
    pub fn new(margin: f64, alpha: f64, planned_reports: u64, min_reports: u64) -> Result<Self> {
        if !(0.0..1.0).contains(&margin) {
            return Err(Error::InvalidInput(format!(
                "the margin must be in [0, 1), got {margin}"
            )));
        }
        if !(alpha > 0.0 && alpha < 1.0) {
            return Err(Error::InvalidInput(format!(
                "alpha must be in (0, 1), got {alpha}"
            )));
        }
        if planned_reports == 0 {
            return Err(Error::InvalidInput(
                "the planned number of reports must be at least 1".into(),
            ));
        }
        Ok(Self {
            margin,
            alpha,
            planned_reports,
            min_reports,
        })
    }

    /// Half-width of the level-(1 − `alpha`) confidence sequence for the mean of `n` observations,
    /// each σ-sub-Gaussian, valid at every n at once:
    /// `σ · √( 2(nr² + 1) / (n²r²) · ln(√(nr² + 1) / α) )`, with `r²` chosen to make it tightest
    /// at the planned number of reports (Waudby-Smith et al. 2024, eq. (9) and their choice of r).
    pub fn half_width(&self, sigma: f64, n: u64, alpha: f64) -> f64 {
        if n == 0 {
            return f64::INFINITY;
        }
        let la = -2.0 * alpha.ln();
        let r2 = (la + (la + 1.0).ln()) / self.planned_reports as f64;
        let n = n as f64;
        let v = n * r2 + 1.0;
        sigma * (2.0 * v / (n * n * r2) * (v.sqrt() / alpha).ln()).sqrt()
    }

    /// One arm's de-biased rate and its confidence sequence at level 1 − α/2. Each de-biased
    /// randomized bit is (0.5/(2p − 1))-sub-Gaussian, each sealed one at most
    /// [`SealedBits::proxy`] with the helper's noise included; an arm with both uses the larger,
    /// which bounds every report (the bound depends on which kinds arrived, not on their values).
    pub fn arm(
        &self,
        rr: &RandomizedResponse,
        version: &str,
        reports: ArmReports,
    ) -> Result<ArmEstimate> {
        let Some(estimate) =
            combined_rate(rr, reports.ones, reports.total, reports.sealed.as_ref())?
        else {
            return Ok(ArmEstimate {
                version: version.to_string(),
                reports: 0,
                reported_ones: 0,
                thumbs_up_rate: None,
                confidence_sequence: None,
            });
        };
        let (keep, denominator) = rr.keep_probability();
        let gap = 2.0 * keep as f64 / denominator as f64 - 1.0;
        let proxy = match reports.sealed {
            Some(s) if reports.total > 0 => s.proxy.max(0.5 / gap),
            Some(s) => s.proxy,
            None => 0.5 / gap,
        };
        let w = self.half_width(proxy, reports.count(), self.alpha / 2.0);
        Ok(ArmEstimate {
            version: version.to_string(),
            reports: reports.count(),
            reported_ones: reports.ones,
            thumbs_up_rate: Some(estimate.proportion),
            confidence_sequence: Some([estimate.proportion - w, estimate.proportion + w]),
        })
    }

    /// The verdict on `canary` against `control` with the evidence behind it.
    pub fn evaluate(
        &self,
        rr: &RandomizedResponse,
        control: (&str, ArmReports),
        canary: (&str, ArmReports),
    ) -> Result<RolloutEvidence> {
        let control_arm = self.arm(rr, control.0, control.1)?;
        let canary_arm = self.arm(rr, canary.0, canary.1)?;
        let difference = match (
            canary_arm.confidence_sequence,
            control_arm.confidence_sequence,
        ) {
            (Some([cl, cu]), Some([sl, su])) => Some([cl - su, cu - sl]),
            _ => None,
        };
        let enough = control.1.count() >= self.min_reports.max(1)
            && canary.1.count() >= self.min_reports.max(1);
        let verdict = match difference {
            Some([_, upper]) if enough && upper < -self.margin => RolloutVerdict::Regression,
            Some([lower, _]) if enough && lower > -self.margin => RolloutVerdict::NonInferior,
            // Only with the control's minimum too: a canary whose control has few reports was
            // not compared at all (an e2e run once promoted one that way, 20 against 7).
            _ if enough && canary.1.count() >= self.planned_reports => {
                RolloutVerdict::PlannedReached
            }
            _ => RolloutVerdict::Continue,
        };
        Ok(RolloutEvidence {
            control: control_arm,
            canary: canary_arm,
            difference,
            margin: self.margin,
            alpha: self.alpha,
            planned_reports: self.planned_reports,
            verdict,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{Rng, SeedableRng};

    fn test() -> SequentialTest {
        SequentialTest::new(0.02, 0.05, 2_000, 50).unwrap()
    }

    #[test]
    fn arms_are_deterministic_and_take_the_fraction() {
        assert_eq!(
            canary_position("abc", "7"),
            canary_position("abc", "7"),
            "deterministic"
        );
        assert_ne!(canary_position("abc", "7"), canary_position("abc", "8"));
        assert_ne!(canary_position("1", "23"), canary_position("12", "3"));
        let n = 20_000;
        let inside = (0..n)
            .filter(|i| in_canary(&format!("{i:032x}"), "5", 0.1))
            .count();
        // Binomial(20000, 0.1): sd 42; 5 sd either way.
        assert!((1_790..=2_210).contains(&inside), "{inside}");
        assert!(!in_canary("x", "5", 0.0));
        assert!(in_canary("x", "5", 1.0));
    }

    #[test]
    fn the_width_shrinks_and_is_tightest_near_the_plan() {
        let t = test();
        let w = |n| t.half_width(1.0, n, 0.025);
        assert!(w(0).is_infinite());
        assert!(w(10) > w(100) && w(100) > w(1_000) && w(1_000) > w(10_000));
        // Wider than the fixed-n interval at the plan (z = 2.24 for α/2 two-sided) but not by 2×.
        let fixed = 2.241 / (2_000f64).sqrt();
        assert!(w(2_000) > fixed && w(2_000) < 2.0 * fixed, "{}", w(2_000));
    }

    #[test]
    fn parameters_are_checked() {
        assert!(SequentialTest::new(-0.1, 0.05, 10, 1).is_err());
        assert!(SequentialTest::new(0.02, 0.0, 10, 1).is_err());
        assert!(SequentialTest::new(0.02, 1.0, 10, 1).is_err());
        assert!(SequentialTest::new(0.02, 0.05, 0, 1).is_err());
    }

    /// Simulated reports: each arm's true rate, randomized as devices do, looked at after every
    /// report. Returns the first non-continue verdict and the reports it took.
    fn run(
        t: &SequentialTest,
        rr: &RandomizedResponse,
        control_rate: f64,
        canary_rate: f64,
        seed: u64,
    ) -> (RolloutVerdict, u64) {
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(seed);
        let (mut s, mut c) = (ArmReports::default(), ArmReports::default());
        for i in 0..(4 * t.planned_reports) {
            let canary = i % 2 == 1;
            let rate = if canary { canary_rate } else { control_rate };
            let truth = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= rate;
            let bit = rr.respond(truth, &mut rng);
            let arm = if canary { &mut c } else { &mut s };
            arm.total += 1;
            arm.ones += bit as u64;
            let e = t.evaluate(rr, ("1", s), ("2", c)).unwrap();
            if e.verdict != RolloutVerdict::Continue {
                return (e.verdict, c.total);
            }
        }
        (RolloutVerdict::Continue, c.total)
    }

    #[test]
    fn an_equal_version_is_rarely_rolled_back_under_continuous_monitoring() {
        // 100 runs looked at after every report: the guarantee is ≤ α/2 = 2.5 % false rollbacks.
        let t = SequentialTest::new(0.02, 0.05, 400, 20).unwrap();
        let rr = RandomizedResponse::new(1.0).unwrap();
        let rollbacks = (0..100)
            .filter(|&seed| run(&t, &rr, 0.6, 0.6, seed).0 == RolloutVerdict::Regression)
            .count();
        assert!(
            rollbacks <= 5,
            "{rollbacks} of 100 equal versions rolled back"
        );
    }

    #[test]
    fn a_much_worse_version_is_rolled_back_and_an_equal_one_promoted() {
        let t = SequentialTest::new(0.02, 0.05, 400, 20).unwrap();
        let rr = RandomizedResponse::new(2.0).unwrap();
        let (verdict, _) = run(&t, &rr, 0.7, 0.3, 1);
        assert_eq!(verdict, RolloutVerdict::Regression);
        let (verdict, n) = run(&t, &rr, 0.6, 0.6, 2);
        assert!(
            matches!(
                verdict,
                RolloutVerdict::PlannedReached | RolloutVerdict::NonInferior
            ),
            "{verdict:?} after {n}"
        );
    }

    #[test]
    fn no_verdict_before_the_minimum_or_without_reports() {
        let t = test();
        let rr = RandomizedResponse::new(6.0).unwrap();
        let none = t
            .evaluate(
                &rr,
                ("1", ArmReports::default()),
                ("2", ArmReports::default()),
            )
            .unwrap();
        assert_eq!(none.verdict, RolloutVerdict::Continue);
        assert!(none.difference.is_none() && none.canary.thumbs_up_rate.is_none());
        let few = t
            .evaluate(
                &rr,
                ("1", ArmReports::randomized(49, 49)),
                ("2", ArmReports::randomized(0, 49)),
            )
            .unwrap();
        assert_eq!(few.verdict, RolloutVerdict::Continue);
        // The canary past its plan, the control short of its minimum: not compared, no verdict.
        let unbalanced = SequentialTest::new(0.02, 0.05, 40, 50)
            .unwrap()
            .evaluate(
                &rr,
                ("1", ArmReports::randomized(7, 7)),
                ("2", ArmReports::randomized(40, 400)),
            )
            .unwrap();
        assert_eq!(unbalanced.verdict, RolloutVerdict::Continue);
        let enough = t
            .evaluate(
                &rr,
                ("1", ArmReports::randomized(50, 50)),
                ("2", ArmReports::randomized(0, 50)),
            )
            .unwrap();
        assert_eq!(enough.verdict, RolloutVerdict::Regression);
        let [lo, hi] = enough.difference.unwrap();
        assert!(lo < hi && hi < -0.02);
    }

    /// As [`run`], with sealed reports released in batches of `batch` with the helper's noise σ:
    /// the test looks after every batch. Returns the verdict and the canary's reports.
    fn run_sealed(
        t: &SequentialTest,
        rr: &RandomizedResponse,
        (control_rate, canary_rate): (f64, f64),
        (batch, sigma): (u64, f64),
        seed: u64,
    ) -> (RolloutVerdict, u64) {
        use crate::protocol::SealedMetricStats;
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(seed);
        let noise = feedloop_privacy::sampler::DiscreteGaussian::from_sigma(sigma).unwrap();
        let empty = || SealedMetricStats {
            reports: 0,
            pending: 0,
            batches: 0,
            noisy_counts: vec![0, 0],
            noise_stddev: sigma,
        };
        let (mut s, mut c) = (empty(), empty());
        for i in 0..(8 * t.planned_reports / batch) {
            let canary = i % 2 == 1;
            let rate = if canary { canary_rate } else { control_rate };
            let arm = if canary { &mut c } else { &mut s };
            for _ in 0..batch {
                let up = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= rate;
                arm.noisy_counts[usize::from(up)] += 1;
            }
            for count in &mut arm.noisy_counts {
                *count += noise.sample(&mut rng);
            }
            arm.reports += batch;
            arm.batches += 1;
            let reports = |stats: &SealedMetricStats| ArmReports {
                sealed: SealedBits::of(stats, batch),
                ..ArmReports::default()
            };
            let e = t
                .evaluate(rr, ("1", reports(&s)), ("2", reports(&c)))
                .unwrap();
            if e.verdict != RolloutVerdict::Continue {
                return (e.verdict, c.reports);
            }
        }
        (RolloutVerdict::Continue, c.reports)
    }

    #[test]
    fn sealed_reports_keep_the_error_rate_and_decide_sooner() {
        // σ = √2 per bucket costs each device ρ = 1/2, as ε = 1 randomized response does.
        let t = SequentialTest::new(0.02, 0.05, 1000, 20).unwrap();
        let rr = RandomizedResponse::new(1.0).unwrap();
        let noise = (20, std::f64::consts::SQRT_2);
        let rollbacks = (0..100)
            .filter(|&seed| {
                run_sealed(&t, &rr, (0.6, 0.6), noise, seed).0 == RolloutVerdict::Regression
            })
            .count();
        assert!(
            rollbacks <= 5,
            "{rollbacks} of 100 equal versions rolled back"
        );
        // A version 20 points worse: sealed reports catch it before the plan almost every time;
        // randomized bits at the same ρ, looked at after every report, far less often.
        let (mut sealed, mut local) = (0, 0);
        for seed in 0..20 {
            let (verdict, n) = run_sealed(&t, &rr, (0.6, 0.4), noise, seed);
            assert!(n <= t.planned_reports);
            if verdict == RolloutVerdict::Regression {
                sealed += 1;
            }
            if run(&t, &rr, 0.6, 0.4, seed).0 == RolloutVerdict::Regression {
                local += 1;
            }
        }
        assert!(sealed >= 18, "sealed reports caught {sealed} of 20");
        assert!(local < sealed, "randomized bits caught {local} of {sealed}");
    }
}
