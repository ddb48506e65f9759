//! `feedloop simulate --evaluate`: the staged-rollout loop with simulated users, to see what
//! private measurement can detect.
//!
//! Each run: N users, each with a random client id, are split by the server's canary rule
//! (`feedloop_core::rollout::in_canary`, fraction f) between the control version "1" and the
//! canary "2". A user's true thumbs-up probability is the version's (`--base-rate` for the
//! control, `--base-rate − drop` for the canary). Each user gives one verdict on the answer their
//! version ranked first and reports it through the real client metric path — a fresh
//! `DevicePrivacy` with the user's consent, `observe_thumbs` → `release_thumbs` (the ε-randomized
//! bit, charged to the budget and written to the ledger) → the report's JSON body, parsed back as
//! the server parses it (`FeedbackReport`). Reports arrive in random order, and after **every**
//! report the server's decision code runs (`SequentialTest::evaluate`, with the server's
//! defaults), as the server does. What the server's HTTP and SQL layers add is tested in
//! `server/tests/api/rollout.rs`; here they are left out so that 200 runs of 10,000 users take
//! minutes.
//!
//! Reported per (N, drop): the error of the de-biased rates against the truth after all reports,
//! the coverage of the dashboard's 95 % interval and of the always-valid sequence, how often the
//! canary was rolled back (for drop 0: false rollbacks, under continuous monitoring), and how
//! many reports the rollback took.
//!
//! With `--secure-metrics` every device pins a helper and seals its verdict instead
//! (`release_next_metric` under the leader's announced terms: a one-hot Prio3Histogram report,
//! HPKE-sealed); the run plays both aggregators with `feedloop-secagg` as the two servers do —
//! each report opened and its proof verified by both, batches of `--metric-batch` released with the
//! helper's exact discrete Gaussian noise σ per bucket and unsharded — and the test runs on the
//! released batches (`SealedBits`), as the server's does.

use chacha20::rand_core::SeedableRng;
use feedloop_core::contribution::DevicePrivacy;
use feedloop_core::protocol::{
    FeedbackReport, RolloutVerdict, SealedMetricReport, SealedMetricStats, SecureMetricTerms,
};
use feedloop_core::rollout::{in_canary, ArmReports, SequentialTest};
use feedloop_core::secure_metrics::{combined_rate, MetricTerms, SealedBits, SecureMetric};
use feedloop_privacy::budget::PrivacyPolicy;
use feedloop_privacy::randomized_response::RandomizedResponse;
use feedloop_privacy::sampler::DiscreteGaussian;
use feedloop_secagg::{
    helper_verify, leader_finish, leader_init, unshard, Batch, HpkeKeyPair, MetricTask, Report,
    VerifyKey,
};
use indicatif::ProgressBar;
use serde_json::{json, Value};

use crate::CliResult;

/// What `--evaluate` runs.
pub struct Evaluation {
    pub users: Vec<usize>,
    pub drops: Vec<f64>,
    pub runs: u64,
    pub base_rate: f64,
    pub canary_fraction: f64,
    pub metric_epsilon: f64,
    pub margin: f64,
    pub alpha: f64,
    pub min_reports: u64,
    pub seed: u64,
    /// Secure metrics: (reports per batch, the helper's σ per bucket).
    pub secure: Option<(u64, f64)>,
}

impl Evaluation {
    /// The server's test for N users: tightest where the canary arm ends (f·N reports), as an
    /// operator would plan it (`--canary-reports`).
    fn test(&self, users: usize) -> CliResult<SequentialTest> {
        let planned = (users as f64 * self.canary_fraction).ceil().max(1.0) as u64;
        SequentialTest::new(self.margin, self.alpha, planned, self.min_reports)
            .map_err(|x| x.to_string())
    }
}

const DAY_MS: u64 = 86_400_000;
const Z95: f64 = 1.959_963_984_540_054;

/// One run's outcome.
struct RunOutcome {
    /// (estimate, 95 % CI covers, sequence covers) per arm: control, canary.
    arms: [(f64, bool, bool); 2],
    truth: [f64; 2],
    /// Reports (both arms) when the canary was rolled back, if it was.
    rolled_back_at: Option<u64>,
    /// Reports when the test first found the canary non-inferior, if it did.
    passed_at: Option<u64>,
}

fn uniform(rng: &mut fastrand::Rng) -> f64 {
    (rng.u64(..) >> 11) as f64 / (1u64 << 53) as f64
}

fn one_run(e: &Evaluation, users: usize, drop: f64, seed: u64) -> CliResult<RunOutcome> {
    let test = e.test(users)?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut noise = chacha20::ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
    let truth = [e.base_rate, e.base_rate - drop];
    let rr = RandomizedResponse::new(e.metric_epsilon).map_err(|x| x.to_string())?;
    // A device policy that allows one report at the metric ε (ρ = ε²/2) within its budget.
    let rho = e.metric_epsilon * e.metric_epsilon / 2.0;
    let policy = PrivacyPolicy::new(8.0 + 8.0 * rho, 1e-6, 30 * DAY_MS, rho.max(1.0))
        .map_err(|x| x.to_string())?;
    let mut arms = [ArmReports::default(); 2];
    let mut aggregators = match e.secure {
        Some((batch, sigma)) => Some(Aggregators::new(batch, sigma, &mut noise)?),
        None => None,
    };
    let policy = match &aggregators {
        Some(a) => policy.with_secure(
            feedloop_privacy::budget::SecurePolicy::new(
                vec![a.terms.helper_fingerprint.clone()],
                a.batch,
            )
            .map_err(|x| x.to_string())?,
        ),
        None => policy,
    };
    let (mut rolled_back_at, mut passed_at) = (None, None);
    for i in 0..users {
        let client_id = format!("{:016x}{:016x}", rng.u64(..), rng.u64(..));
        let canary = in_canary(&client_id, "2", e.canary_fraction) as usize;
        let version = if canary == 1 { "2" } else { "1" };
        let up = uniform(&mut rng) < truth[canary];
        // The device: consent, the verdict noted, the randomized report released and recorded.
        let mut device =
            DevicePrivacy::new(policy.clone(), 3, version).map_err(|x| x.to_string())?;
        device
            .set_consent(true, 1, version)
            .map_err(|x| x.to_string())?;
        device.observe_thumbs(version, up);
        if let Some(a) = &mut aggregators {
            let terms = MetricTerms {
                epsilon: e.metric_epsilon,
                segments: vec![],
                secure: Some(a.terms.clone()),
            };
            let release = device
                .release_next_metric(&terms, 2 + i as u64, &mut noise)
                .map_err(|x| x.to_string())?
                .ok_or("the device released no report")?;
            let report: SealedMetricReport =
                serde_json::from_slice(&release.body()).map_err(|x| x.to_string())?;
            let arm = (report.model_version == "2") as usize;
            let batch = a.batch;
            if let Some(stats) = a.receive(arm, &report, &mut noise)? {
                arms[arm].sealed = SealedBits::of(stats, batch);
            }
        } else {
            let release = device
                .release_thumbs(e.metric_epsilon, 2 + i as u64, &mut noise)
                .map_err(|x| x.to_string())?
                .ok_or("the device released no report")?;
            // The server: the body as it arrives.
            let report: FeedbackReport =
                serde_json::from_slice(&release.body()).map_err(|x| x.to_string())?;
            let arm = (report.model_version == "2") as usize;
            arms[arm].total += 1;
            arms[arm].ones += report.bit as u64;
        }
        let verdict = test
            .evaluate(&rr, ("1", arms[0]), ("2", arms[1]))
            .map_err(|x| x.to_string())?
            .verdict;
        let seen = (i + 1) as u64;
        match verdict {
            // The server would roll back here; the run goes on so that the estimates are
            // judged on all N reports (stopping would bias them towards the rolled-back ones).
            RolloutVerdict::Regression if rolled_back_at.is_none() => rolled_back_at = Some(seen),
            RolloutVerdict::NonInferior if passed_at.is_none() => passed_at = Some(seen),
            _ => {}
        }
    }
    let mut out = [(f64::NAN, false, false); 2];
    for (a, reports) in arms.iter().enumerate() {
        let Some(est) = combined_rate(&rr, reports.ones, reports.total, reports.sealed.as_ref())
            .map_err(|x| x.to_string())?
        else {
            continue;
        };
        let ci = (est.proportion - truth[a]).abs() <= Z95 * est.std_error;
        let cs = test
            .arm(&rr, "", *reports)
            .map_err(|x| x.to_string())?
            .confidence_sequence
            .is_some_and(|[lo, hi]| lo <= truth[a] && truth[a] <= hi);
        out[a] = (est.proportion, ci, cs);
    }
    Ok(RunOutcome {
        arms: out,
        truth,
        rolled_back_at,
        passed_at,
    })
}

/// The leader and the helper of a secure-metrics run: their keys, the announced terms, and per
/// arm the batch being filled and the released batches' noisy counts.
struct Aggregators {
    batch: u64,
    terms: SecureMetricTerms,
    leader: HpkeKeyPair,
    helper: HpkeKeyPair,
    noise: DiscreteGaussian,
    /// Per arm: the task, its verify key, both aggregators' open batches, the released counts.
    arms: Vec<ArmAggregation>,
}

struct ArmAggregation {
    task: MetricTask,
    verify_key: VerifyKey,
    leader: Batch<MetricTask>,
    helper: Batch<MetricTask>,
    released: SealedMetricStats,
}

impl Aggregators {
    fn new(batch: u64, sigma: f64, rng: &mut chacha20::ChaCha20Rng) -> CliResult<Self> {
        let leader = HpkeKeyPair::generate(rng);
        let helper = HpkeKeyPair::generate(rng);
        let terms = SecureMetricTerms {
            leader_key: leader.public().to_hex(),
            helper_key: helper.public().to_hex(),
            helper_fingerprint: helper.public().fingerprint(),
            noise_stddev: sigma,
            min_reports: batch as i64,
        };
        let mut arms = vec![];
        for version in ["1", "2"] {
            let task = SecureMetric::Thumbs
                .task(version, &terms)
                .map_err(|x| x.to_string())?;
            let open = || Batch::new(task.clone()).map_err(|x| x.to_string());
            arms.push(ArmAggregation {
                verify_key: VerifyKey::generate(rng),
                leader: open()?,
                helper: open()?,
                released: SealedMetricStats {
                    reports: 0,
                    pending: 0,
                    batches: 0,
                    noisy_counts: vec![0, 0],
                    noise_stddev: sigma,
                },
                task,
            });
        }
        Ok(Self {
            batch,
            noise: DiscreteGaussian::from_sigma(sigma).map_err(|x| x.to_string())?,
            terms,
            leader,
            helper,
            arms,
        })
    }

    /// Both aggregators open and verify one report; when the arm's batch is full the helper
    /// releases it with its noise and the leader unshards it: the arm's released counts so far.
    fn receive(
        &mut self,
        arm: usize,
        report: &SealedMetricReport,
        rng: &mut chacha20::ChaCha20Rng,
    ) -> CliResult<Option<&SealedMetricStats>> {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&report.report)
            .map_err(|x| x.to_string())?;
        let sealed = Report::from_bytes(&bytes).map_err(|x| x.to_string())?;
        let a = &mut self.arms[arm];
        let err = |x: feedloop_secagg::SecAggError| x.to_string();
        let (pending, request) =
            leader_init(&a.task, &a.verify_key, &self.leader, &sealed).map_err(err)?;
        let (helper_share, response) =
            helper_verify(&a.task, &a.verify_key, &self.helper, &request).map_err(err)?;
        a.leader
            .add(leader_finish(&a.task, pending, &response).map_err(err)?)
            .map_err(err)?;
        a.helper.add(helper_share).map_err(err)?;
        if a.leader.count() < self.batch {
            return Ok(None);
        }
        let fresh = || Batch::new(a.task.clone()).map_err(err);
        let mut helper = std::mem::replace(&mut a.helper, fresh()?);
        let leader = std::mem::replace(&mut a.leader, fresh()?);
        let released = helper
            .release(self.batch, Some(&self.noise), rng)
            .map_err(err)?;
        let counts = unshard(&a.task, &leader.aggregate_share(), &released).map_err(err)?;
        for (total, c) in a.released.noisy_counts.iter_mut().zip(counts) {
            *total += c;
        }
        a.released.reports += self.batch;
        a.released.batches += 1;
        Ok(Some(&a.released))
    }
}

fn median(mut v: Vec<u64>) -> Option<u64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[v.len() / 2])
}

/// Runs every (N, drop) `runs` times; one JSON row each.
pub fn evaluate(e: &Evaluation, bar: &ProgressBar) -> CliResult<Value> {
    let mut rows = vec![];
    for &users in &e.users {
        for &drop in &e.drops {
            bar.set_message(format!("N = {users}, drop {drop}"));
            let mut outcomes = vec![];
            for r in 0..e.runs {
                let seed = e.seed.wrapping_add(r).wrapping_mul(0x9e37_79b9) ^ users as u64;
                outcomes.push(one_run(e, users, drop, seed)?);
                bar.inc(users as u64);
            }
            let complete: Vec<&RunOutcome> = outcomes.iter().collect();
            let mut errors = vec![];
            let (mut ci, mut cs, mut intervals) = (0u64, 0u64, 0u64);
            for o in &complete {
                for a in 0..2 {
                    let (estimate, in_ci, in_cs) = o.arms[a];
                    if estimate.is_nan() {
                        continue;
                    }
                    errors.push(estimate - o.truth[a]);
                    intervals += 1;
                    ci += in_ci as u64;
                    cs += in_cs as u64;
                }
            }
            let rmse =
                (errors.iter().map(|x| x * x).sum::<f64>() / errors.len().max(1) as f64).sqrt();
            let mean_abs = errors.iter().map(|x| x.abs()).sum::<f64>() / errors.len().max(1) as f64;
            let rollbacks: Vec<u64> = outcomes.iter().filter_map(|o| o.rolled_back_at).collect();
            let passes: Vec<u64> = outcomes.iter().filter_map(|o| o.passed_at).collect();
            let runs = e.runs as f64;
            rows.push(json!({
                "users": users,
                "plannedReports": e.test(users)?.planned_reports,
                "drop": drop,
                "runs": e.runs,
                "rmse": rmse,
                "meanAbsError": mean_abs,
                "ci95Coverage": ci as f64 / intervals.max(1) as f64,
                "sequenceCoverage": cs as f64 / intervals.max(1) as f64,
                "rollbackRate": rollbacks.len() as f64 / runs,
                "medianReportsToRollback": median(rollbacks.clone()),
                "nonInferiorRate": passes.len() as f64 / runs,
            }));
        }
    }
    Ok(json!({
        "evaluate": {
            "baseRate": e.base_rate,
            "canaryFraction": e.canary_fraction,
            "metricEpsilon": e.metric_epsilon,
            "margin": e.margin,
            "alpha": e.alpha,
            "minReports": e.min_reports,
            "secureMetrics": e.secure.map(|(batch, sigma)| json!({ "batch": batch, "noiseStddev": sigma })),
            "plannedReports": "f·N per row",
            "runs": e.runs,
            "seed": e.seed,
            "rows": rows,
        }
    }))
}

/// The Markdown table of [`evaluate`]'s result.
pub fn markdown(result: &Value) -> String {
    let e = &result["evaluate"];
    let mut out = format!(
        "Staged rollout, `feedloop simulate --evaluate`: true thumbs-up rate {} for the control, \
         canary fraction {}, metric ε = {}, margin {}, α = {}, {} runs per row; the sequential \
         test runs after every report, tightest at each row's f·N canary reports, no verdict \
         before {} reports per arm. Common random numbers: a run's users and noise are the same \
         for every drop.\n\n\
         | N users | canary drop | RMSE of rates | 95 % CI coverage | sequence coverage | \
         rolled back | median reports to rollback | shown non-inferior |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|\n",
        e["baseRate"],
        e["canaryFraction"],
        e["metricEpsilon"],
        e["margin"],
        e["alpha"],
        e["runs"],
        e["minReports"]
    );
    if let Some(s) = e["secureMetrics"].as_object() {
        out.insert_str(
            0,
            &format!(
                "**Secure metrics** (`--secure-metrics`): every report sealed (Prio3Histogram), \
                 verified by both aggregators, released in batches of {} with the helper's \
                 σ = {:.4} per bucket (ρ = 1/σ² per report).\n\n",
                s["batch"],
                s["noiseStddev"].as_f64().unwrap_or(f64::NAN)
            ),
        );
    }
    for r in e["rows"].as_array().into_iter().flatten() {
        let pct = |k: &str| format!("{:.1} %", 100.0 * r[k].as_f64().unwrap_or(f64::NAN));
        out.push_str(&format!(
            "| {} | {:.2} | {:.4} | {} | {} | {} | {} | {} |\n",
            r["users"],
            r["drop"].as_f64().unwrap_or(f64::NAN),
            r["rmse"].as_f64().unwrap_or(f64::NAN),
            pct("ci95Coverage"),
            pct("sequenceCoverage"),
            pct("rollbackRate"),
            r["medianReportsToRollback"]
                .as_u64()
                .map_or("–".to_string(), |n| n.to_string()),
            pct("nonInferiorRate"),
        ));
    }
    out
}
