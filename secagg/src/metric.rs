//! Secure metric reports: one bucket of a small histogram (a thumbs verdict, a star rating, a
//! federated-evaluation bit, a (segment, verdict) cell) sealed as a Prio3Histogram report, so that
//! in a `secure` deployment the metrics too reach no server one device at a time.
//!
//! Where a `local` metric report is one randomized-response answer, a secure one is exact and
//! hidden: the proof shows the aggregators that the report is one-hot (exactly one bucket, each
//! 0 or 1: a device cannot stuff a vote), and the only number that leaves them is a batch's
//! histogram with the helper's discrete Gaussian noise on every bucket. A metric's reports are
//! released in disjoint batches of at least the minimum (DAP's fixed-size batches: the leader
//! groups them, the helper refuses a report in two batches), so estimates grow as reports arrive.

use prio::field::Field64;
use prio::flp::gadgets::{Mul, ParallelSum};
use prio::flp::types::Histogram;
use prio::vdaf::prio3::{optimal_chunk_length, Prio3};
use prio::vdaf::xof::XofHmacSha256Aes128;
use rand_core::CryptoRng;

use crate::error::{Result, SecAggError};
use crate::keys::HpkePublicKey;
use crate::report::{seal_measurement, Report};
use crate::round::{Task, NUM_PROOFS};

/// Prio3Histogram over Field64 with three proofs and the HMAC-SHA256/AES-128 XOF: the histogram
/// twin of the rounds' Prio3SumVec variant (same field, proofs and XOF).
pub type MetricVdaf = Prio3<Histogram<Field64, ParallelSum<Field64, Mul>>, XofHmacSha256Aes128, 32>;

/// The VDAF code point (DAP's private range, next to the rounds' 0xFFFF1003).
pub const METRIC_ALGORITHM_ID: u32 = 0xFFFF_1004;
/// Most buckets one metric has (16 segments × 2 verdicts fit).
pub const MAX_BUCKETS: usize = 64;
/// Longest task name, in bytes.
pub const MAX_NAME_LEN: usize = 128;

/// One secure metric of one model version (`thumbs@42`): its buckets and the privacy terms —
/// the helper's noise σ on every bucket of a released batch and its minimum batch — bound into
/// every share, as a round's are ([`crate::SecureRound`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricTask {
    name: String,
    buckets: usize,
    noise_stddev: f64,
    min_reports: u64,
}

impl MetricTask {
    pub fn new(name: &str, buckets: usize, noise_stddev: f64, min_reports: u64) -> Result<Self> {
        let invalid = |m: String| Err(SecAggError::InvalidRound(m));
        if name.is_empty()
            || name.len() > MAX_NAME_LEN
            || !name.bytes().all(|b| b.is_ascii_graphic())
        {
            return invalid(format!(
                "a metric task's name is 1 to {MAX_NAME_LEN} printable ASCII characters, not {name:?}"
            ));
        }
        if !(2..=MAX_BUCKETS).contains(&buckets) {
            return invalid(format!(
                "a metric has 2 to {MAX_BUCKETS} buckets, not {buckets}"
            ));
        }
        if !(noise_stddev.is_finite() && noise_stddev >= 0.0) {
            return invalid(format!(
                "the noise σ must be finite and ≥ 0, not {noise_stddev}"
            ));
        }
        Ok(Self {
            name: name.to_string(),
            buckets,
            noise_stddev,
            min_reports: min_reports.max(1),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// σ of the helper's discrete Gaussian noise on each bucket of a batch (counts).
    pub fn noise_stddev(&self) -> f64 {
        self.noise_stddev
    }

    pub fn min_reports(&self) -> u64 {
        self.min_reports
    }

    /// The zCDP cost of one report to its device: ρ = Δ²/(2σ²) with Δ² = 2 (replacing one
    /// device's report moves one count from one bucket to another), so ρ = 1/σ²; infinite
    /// without noise. It holds as long as the helper adds the noise it agreed to
    /// (docs/PRIVACY.md §10).
    pub fn rho(&self) -> f64 {
        if self.noise_stddev == 0.0 {
            f64::INFINITY
        } else {
            1.0 / (self.noise_stddev * self.noise_stddev)
        }
    }

    fn terms_digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(b"feedloop-secagg metric terms v1");
        hash.update(self.noise_stddev.to_bits().to_be_bytes());
        hash.update(self.min_reports.to_be_bytes());
        hash.finalize().into()
    }
}

impl Task for MetricTask {
    type Circuit = Histogram<Field64, ParallelSum<Field64, Mul>>;

    fn vdaf(&self) -> Result<MetricVdaf> {
        let typ = Histogram::new(self.buckets, optimal_chunk_length(self.buckets))
            .map_err(|e| SecAggError::InvalidRound(e.to_string()))?;
        Prio3::new(2, NUM_PROOFS, METRIC_ALGORITHM_ID, typ)
            .map_err(|e| SecAggError::InvalidRound(e.to_string()))
    }

    fn context(&self) -> Vec<u8> {
        let mut ctx = b"feedloop-secagg-metric-v1".to_vec();
        ctx.extend_from_slice(&(self.name.len() as u16).to_be_bytes());
        ctx.extend_from_slice(self.name.as_bytes());
        ctx.extend_from_slice(&(self.buckets as u64).to_be_bytes());
        ctx.extend_from_slice(&self.terms_digest());
        ctx
    }

    fn output_len(&self) -> usize {
        self.buckets
    }

    fn offset(&self) -> u64 {
        0
    }
}

/// The device's side: `bucket` of `task` sharded and sealed to the two aggregators.
pub fn seal_metric<R: CryptoRng>(
    bucket: usize,
    task: &MetricTask,
    leader: &HpkePublicKey,
    helper: &HpkePublicKey,
    rng: &mut R,
) -> Result<Report> {
    if bucket >= task.buckets {
        return Err(SecAggError::Measurement(format!(
            "bucket {bucket} is outside the metric's {} buckets",
            task.buckets
        )));
    }
    seal_measurement(task, &bucket, leader, helper, rng)
}

#[cfg(test)]
mod tests {
    use chacha20::rand_core::SeedableRng;
    use chacha20::ChaCha20Rng;
    use feedloop_privacy::sampler::DiscreteGaussian;
    use prio::codec::{Encode, ParameterizedDecode};
    use prio::field::FieldElement;
    use prio::vdaf::prio3::Prio3InputShare;

    use super::*;
    use crate::keys::{open, seal, HpkeKeyPair};
    use crate::report::{share_aad, share_info, Role};
    use crate::{helper_verify, leader_finish, leader_init, unshard, Batch, VerifyKey};

    struct Fixture {
        task: MetricTask,
        leader: HpkeKeyPair,
        helper: HpkeKeyPair,
        verify_key: VerifyKey,
        rng: ChaCha20Rng,
    }

    fn fixture(noise: f64, min: u64) -> Fixture {
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        Fixture {
            task: MetricTask::new("stars@3", 5, noise, min).unwrap(),
            leader: HpkeKeyPair::generate(&mut rng),
            helper: HpkeKeyPair::generate(&mut rng),
            verify_key: VerifyKey::generate(&mut rng),
            rng,
        }
    }

    fn sealed(f: &mut Fixture, bucket: usize) -> Report {
        seal_metric(
            bucket,
            &f.task,
            f.leader.public(),
            f.helper.public(),
            &mut f.rng,
        )
        .unwrap()
    }

    /// Both aggregators' output shares of one report, or why it was refused.
    fn verify(
        f: &Fixture,
        task: &MetricTask,
        report: &Report,
    ) -> Result<(crate::OutputShare, crate::OutputShare)> {
        let (pending, request) = leader_init(task, &f.verify_key, &f.leader, report)?;
        let (helper, response) = helper_verify(task, &f.verify_key, &f.helper, &request)?;
        Ok((leader_finish(task, pending, &response)?, helper))
    }

    #[test]
    fn honest_reports_sum_to_the_histogram() {
        let mut f = fixture(0.0, 1);
        let buckets = [0usize, 4, 4, 2, 4, 1, 0];
        let mut leader = Batch::new(f.task.clone()).unwrap();
        let mut helper = Batch::new(f.task.clone()).unwrap();
        for &b in &buckets {
            let r = sealed(&mut f, b);
            let bytes = r.to_bytes();
            let (l, h) = verify(&f, &f.task, &Report::from_bytes(&bytes).unwrap()).unwrap();
            leader.add(l).unwrap();
            helper.add(h).unwrap();
        }
        let released = helper.release(1, None, &mut f.rng).unwrap();
        let sum = unshard(&f.task, &leader.aggregate_share(), &released).unwrap();
        assert_eq!(sum, vec![2, 1, 1, 0, 3]);
    }

    #[test]
    fn a_report_that_is_not_one_hot_fails_the_proof() {
        // A device that ignores the protocol adds a second vote to its leader share: the
        // measurement is then two buckets, and the proof (sum = 1, every bucket 0 or 1) fails.
        let mut f = fixture(1.0, 1);
        for extra in [0usize, 3] {
            let r = sealed(&mut f, 1);
            let vdaf = f.task.vdaf().unwrap();
            let aad = share_aad(&f.task, &r.id, &r.public_share);
            let info = share_info(Role::Leader);
            let plain = open(&f.leader, &info, &aad, &r.leader_share, "leader").unwrap();
            let Prio3InputShare::Leader {
                mut measurement_share,
                proofs_share,
                joint_rand_blind,
            } = Prio3InputShare::<Field64, 32>::get_decoded_with_param(&(&vdaf, 0), &plain)
                .unwrap()
            else {
                unreachable!()
            };
            measurement_share[extra] += Field64::one();
            let share = Prio3InputShare::Leader {
                measurement_share,
                proofs_share,
                joint_rand_blind,
            };
            let mut bad = r.clone();
            bad.leader_share = seal(
                f.leader.public(),
                &info,
                &aad,
                &share.get_encoded().unwrap(),
                &mut f.rng,
            )
            .unwrap();
            let err = verify(&f, &f.task, &bad).unwrap_err();
            assert!(matches!(err, SecAggError::InvalidProof(_)), "{err}");
        }
    }

    #[test]
    fn terms_and_names_are_bound_into_the_shares() {
        let mut f = fixture(2.0, 10);
        let r = sealed(&mut f, 2);
        assert!(verify(&f, &f.task, &r).is_ok());
        for other in [
            MetricTask::new("stars@3", 5, 1.0, 10).unwrap(),
            MetricTask::new("stars@3", 5, 2.0, 9).unwrap(),
            MetricTask::new("stars@4", 5, 2.0, 10).unwrap(),
        ] {
            assert_eq!(
                verify(&f, &other, &r).unwrap_err(),
                SecAggError::Decrypt { role: "leader" }
            );
        }
        // Another bucket count is another circuit: the shares do not even decode.
        let six = MetricTask::new("stars@3", 6, 2.0, 10).unwrap();
        assert!(verify(&f, &six, &r).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        assert!(MetricTask::new("", 2, 1.0, 1).is_err());
        assert!(MetricTask::new("a b", 2, 1.0, 1).is_err());
        assert!(MetricTask::new(&"x".repeat(129), 2, 1.0, 1).is_err());
        assert!(MetricTask::new("t", 1, 1.0, 1).is_err());
        assert!(MetricTask::new("t", 65, 1.0, 1).is_err());
        assert!(MetricTask::new("t", 2, f64::NAN, 1).is_err());
        assert!(MetricTask::new("t", 2, -1.0, 1).is_err());
        let t = MetricTask::new("t", 2, 2.0, 0).unwrap();
        assert_eq!(t.min_reports(), 1);
        assert_eq!(t.rho(), 0.25);
        let mut f = fixture(1.0, 1);
        let err =
            seal_metric(5, &f.task, f.leader.public(), f.helper.public(), &mut f.rng).unwrap_err();
        assert!(matches!(err, SecAggError::Measurement(_)), "{err}");
    }

    #[test]
    fn the_helpers_noise_has_its_variance_and_the_minimum_holds() {
        let mut f = fixture(3.0, 4);
        let noise = DiscreteGaussian::from_sigma(3.0).unwrap();
        let mut errors = Vec::new();
        for trial in 0..200 {
            let mut leader = Batch::new(f.task.clone()).unwrap();
            let mut helper = Batch::new(f.task.clone()).unwrap();
            for i in 0..4 {
                let r = sealed(&mut f, (trial + i) % 5);
                let (l, h) = verify(&f, &f.task, &r).unwrap();
                leader.add(l).unwrap();
                helper.add(h).unwrap();
                if i < 3 {
                    assert!(matches!(
                        helper.clone().release(4, Some(&noise), &mut f.rng),
                        Err(SecAggError::BelowMinimum { .. })
                    ));
                }
            }
            let released = helper.release(4, Some(&noise), &mut f.rng).unwrap();
            let sum = unshard(&f.task, &leader.aggregate_share(), &released).unwrap();
            let mut truth = [0i64; 5];
            for i in 0..4 {
                truth[(trial + i) % 5] += 1;
            }
            errors.extend(sum.iter().zip(truth).map(|(s, t)| (s - t) as f64));
        }
        let n = errors.len() as f64;
        let mean = errors.iter().sum::<f64>() / n;
        let var = errors.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // 1,000 draws: the mean within 5 SE of 0, the variance within 20 % of σ² = 9.
        assert!(mean.abs() < 5.0 * 3.0 / n.sqrt(), "mean {mean}");
        assert!((var - 9.0).abs() < 1.8, "variance {var}");
    }
}
