//! The two-aggregator pipeline end to end in one process: devices' reports → leader and helper
//! verification → batches → the helper's noisy release → unsharding.

#[path = "../../privacy/tests/common/mod.rs"]
mod common;

use std::sync::OnceLock;

use chacha20::rand_core::SeedableRng;
use chacha20::ChaCha20Rng;
use feedloop_privacy::sampler::DiscreteGaussian;
use feedloop_privacy::{clip_to_lattice, PrivatizerConfig};
use feedloop_secagg::{
    helper_verify, leader_finish, leader_init, seal_report, unshard, Batch, HpkeKeyPair,
    OutputShare, Report, SecAggError, SecureRound, VerifyKey,
};

/// d = 131: the default model's reward head, what a device contributes.
const DIMENSION: usize = 131;

struct Setup {
    round: SecureRound,
    config: PrivatizerConfig,
    leader: HpkeKeyPair,
    helper: HpkeKeyPair,
    verify_key: VerifyKey,
}

fn setup() -> Setup {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    // C = 1, γ = 1e-3 (the demo round's), σ_h = 4: R = 1000.
    let config = PrivatizerConfig::new(1.0, 1e-3, 4.0).unwrap();
    Setup {
        round: SecureRound::for_privatizer(42, DIMENSION, &config, 1).unwrap(),
        config,
        leader: HpkeKeyPair::generate(&mut rng),
        helper: HpkeKeyPair::generate(&mut rng),
        verify_key: VerifyKey::generate(&mut rng),
    }
}

/// A device's update: the user's learned delta, any scale (clipping brings it to ‖·‖ ≤ C).
fn update(seed: u64) -> Vec<f32> {
    let mut rng = fastrand_like(seed);
    (0..DIMENSION).map(|_| rng() * 0.2).collect()
}

fn fastrand_like(seed: u64) -> impl FnMut() -> f32 {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}

/// A device's report of `lattice` for the setup's round.
fn seal(s: &Setup, lattice: feedloop_privacy::LatticeUpdate, rng: &mut ChaCha20Rng) -> Report {
    seal_report(lattice, &s.round, s.leader.public(), s.helper.public(), rng).unwrap()
}

/// Both aggregators' output shares of one report (the leader ↔ helper exchange, through bytes).
fn verify(s: &Setup, report: &Report) -> Result<(OutputShare, OutputShare), SecAggError> {
    let report = Report::from_bytes(&report.to_bytes())?;
    let (pending, request) = leader_init(&s.round, &s.verify_key, &s.leader, &report)?;
    let request = feedloop_secagg::HelperRequest::from_bytes(&request.to_bytes())?;
    let (helper_out, response) = helper_verify(&s.round, &s.verify_key, &s.helper, &request)?;
    let response = feedloop_secagg::HelperResponse::from_bytes(&response.to_bytes())?;
    let leader_out = leader_finish(&s.round, pending, &response)?;
    Ok((leader_out, helper_out))
}

/// 1,000 devices: their exact lattice sum and both aggregators' output shares, made once.
struct Cohort {
    setup: Setup,
    lattice_sum: Vec<i64>,
    outputs: Vec<(OutputShare, OutputShare)>,
}

fn cohort() -> &'static Cohort {
    static COHORT: OnceLock<Cohort> = OnceLock::new();
    COHORT.get_or_init(|| {
        let s = setup();
        let mut rng = ChaCha20Rng::seed_from_u64(11);
        let mut lattice_sum = vec![0i64; DIMENSION];
        let mut outputs = Vec::new();
        for device in 0..1000 {
            let lattice = clip_to_lattice(&update(device), &s.config, &mut rng).unwrap();
            for (sum, z) in lattice_sum.iter_mut().zip(lattice.values()) {
                *sum += z;
            }
            let report = seal(&s, lattice, &mut rng);
            outputs.push(verify(&s, &report).expect("an honest report verifies"));
        }
        Cohort {
            setup: s,
            lattice_sum,
            outputs,
        }
    })
}

fn batches(c: &Cohort, outputs: &[(OutputShare, OutputShare)]) -> (Batch, Batch) {
    let mut leader = Batch::new(c.setup.round).unwrap();
    let mut helper = Batch::new(c.setup.round).unwrap();
    for (l, h) in outputs {
        leader.add(l.clone()).unwrap();
        helper.add(h.clone()).unwrap();
    }
    (leader, helper)
}

#[test]
fn without_noise_the_sum_is_exactly_the_integer_sum() {
    let c = cohort();
    let (leader, mut helper) = batches(c, &c.outputs);
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let released = helper.release(1000, None, &mut rng).unwrap();
    let sum = unshard(&c.setup.round, &leader.aggregate_share(), &released).unwrap();
    assert_eq!(sum, c.lattice_sum);
    assert!(c.lattice_sum.iter().any(|&v| v != 0));
}

#[test]
fn the_helper_refuses_below_the_minimum_and_a_second_release() {
    let c = cohort();
    let (_, mut helper) = batches(c, &c.outputs[..10]);
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    assert_eq!(
        helper.release(11, None, &mut rng).unwrap_err(),
        SecAggError::BelowMinimum {
            count: 10,
            minimum: 11
        }
    );
    helper.release(10, None, &mut rng).unwrap();
    assert_eq!(
        helper.release(10, None, &mut rng).unwrap_err(),
        SecAggError::AlreadyReleased
    );
    assert_eq!(
        helper.add(c.outputs[20].1.clone()).unwrap_err(),
        SecAggError::AlreadyReleased
    );
}

#[test]
fn a_replayed_report_is_counted_once() {
    let c = cohort();
    let (mut leader, _) = batches(c, &c.outputs[..3]);
    let err = leader.add(c.outputs[1].0.clone()).unwrap_err();
    assert!(matches!(err, SecAggError::DuplicateReport(_)), "{err}");
    assert_eq!(leader.count(), 3);
}

/// 1 honest device + 999 fake clients sending zeros: the collected sum minus the honest input is
/// the helper's noise alone, N_ℤ(0, σ_lat²) per coordinate — what a leader padding the cohort
/// with its own clients can learn about the one real device.
#[test]
fn the_helper_noise_hides_one_device_among_fake_clients() {
    let s = setup();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let honest = clip_to_lattice(&update(99), &s.config, &mut rng).unwrap();
    let honest_values = honest.values().to_vec();
    let mut outputs = vec![verify(&s, &seal(&s, honest, &mut rng)).unwrap()];
    // The fake clients: 999 real, valid reports of the zero update.
    for _ in 0..999 {
        let zero = clip_to_lattice(&vec![0.0f32; DIMENSION], &s.config, &mut rng).unwrap();
        let report = seal(&s, zero, &mut rng);
        outputs.push(verify(&s, &report).unwrap());
    }
    let (a, k) = s.config.lattice_variance();
    let noise = DiscreteGaussian::from_dyadic_variance(a, k).unwrap();
    let sigma_lat = s.config.noise_stddev() / s.config.granularity();
    let mut residuals = Vec::new();
    for _ in 0..200 {
        let mut leader = Batch::new(s.round).unwrap();
        let mut helper = Batch::new(s.round).unwrap();
        for (l, h) in &outputs {
            leader.add(l.clone()).unwrap();
            helper.add(h.clone()).unwrap();
        }
        let released = helper.release(1000, Some(&noise), &mut rng).unwrap();
        let sum = unshard(&s.round, &leader.aggregate_share(), &released).unwrap();
        residuals.extend(sum.iter().zip(&honest_values).map(|(s, h)| s - h));
    }
    let (mean, var) = common::mean_and_variance(&residuals);
    let sd = var.sqrt();
    println!(
        "helper noise over 200 trials × {DIMENSION}: mean {mean:.2}, sd {sd:.1} (σ_h/γ = {sigma_lat})"
    );
    assert!(
        (sd / sigma_lat - 1.0).abs() < 0.1,
        "sd {sd} vs σ_h/γ {sigma_lat}"
    );
    let sigma2 = sigma_lat * sigma_lat;
    let reach = (40.0 * sigma_lat + 10.0) as i64;
    let weight = |x: i64| (-(x as f64).powi(2) / (2.0 * sigma2)).exp();
    let z: f64 = (-reach..=reach).map(weight).sum();
    let fit = common::chi_square(
        &residuals,
        -(8 * sigma_lat as i64)..=(8 * sigma_lat as i64),
        |x| weight(x) / z,
        50.0,
    );
    println!("χ² of the released noise against N_ℤ(0, σ_lat²): {fit:?}");
    assert!(fit.p_value > 1e-4, "{fit:?}");
}

/// Everything the leader holds of one report after decrypting its share, for two different
/// inputs: the same (uniform) distribution. Compared on the top byte of every field element of
/// the leader's decrypted share, 40 reports per input.
#[test]
fn the_leaders_share_does_not_depend_on_the_input() {
    let s = setup();
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let mut histogram = |values: Vec<f32>| {
        let mut counts = vec![0u64; 256];
        for _ in 0..40 {
            let lattice = clip_to_lattice(&values, &s.config, &mut rng).unwrap();
            let report = seal(&s, lattice, &mut rng);
            for element in
                feedloop_secagg::verify::leader_view(&s.round, &s.leader, &report).unwrap()
            {
                counts[(element >> 56) as usize] += 1;
            }
        }
        counts
    };
    let zeros = histogram(vec![0.0; DIMENSION]);
    let mut big = vec![0.0f32; DIMENSION];
    big[0] = 1.0; // the whole norm on one coordinate: z_0 = R, the rest 0
    let extreme = histogram(big);
    // Two-sample χ² on 256 bins.
    let (n1, n2) = (
        zeros.iter().sum::<u64>() as f64,
        extreme.iter().sum::<u64>() as f64,
    );
    let statistic: f64 = zeros
        .iter()
        .zip(&extreme)
        .filter(|(a, b)| **a + **b > 0)
        .map(|(&a, &b)| {
            let (a, b) = (a as f64, b as f64);
            let e1 = (a + b) * n1 / (n1 + n2);
            let e2 = (a + b) * n2 / (n1 + n2);
            (a - e1).powi(2) / e1 + (b - e2).powi(2) / e2
        })
        .sum();
    // 255 degrees of freedom: mean 255, sd √510 ≈ 22.6; 6 sd above is p < 1e-6.
    println!(
        "leader's view, zeros vs extreme input: χ² = {statistic:.1} on 255 dof, {n1} elements each"
    );
    assert!(statistic < 255.0 + 6.0 * 510f64.sqrt(), "χ² {statistic}");
}
