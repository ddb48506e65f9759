//! Exactness of the samplers: χ² goodness of fit against the exact PMFs, moments,
//! and the Bernoulli building blocks. Fixed seeds make every run identical.

mod common;

use chacha20::ChaCha20Rng;
use common::{chi_square, mean_and_variance};
use feedloop_privacy::sampler::{
    bernoulli_exp_neg, bernoulli_ratio, sample_discrete_laplace, uniform_below, DiscreteGaussian,
};
use num_bigint::BigUint;
use rand_core::SeedableRng;

/// A fit is rejected below this p-value. Seeds are fixed, so a pass is reproducible;
/// 1e-4 keeps the family of ~15 tests far from chance failures while a wrong
/// normaliser, variance or tail at 10^6 draws gives p-values of ~0.
const MIN_P_VALUE: f64 = 1e-4;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// Exact discrete Gaussian PMF, normalised by direct summation over ±(40σ + 10).
fn discrete_gaussian_pmf(sigma2: f64) -> impl Fn(i64) -> f64 {
    let reach = (40.0 * sigma2.sqrt() + 10.0) as i64;
    let weight = move |x: i64| (-(x as f64).powi(2) / (2.0 * sigma2)).exp();
    let z: f64 = (-reach..=reach).map(weight).sum();
    move |x| weight(x) / z
}

fn check_discrete_gaussian(sampler: &DiscreteGaussian, sigma2: f64, draws: usize, seed: u64) {
    let mut r = rng(seed);
    let mut samples = vec![0i64; draws];
    sampler.fill(&mut r, &mut samples);
    let sigma = sigma2.sqrt();
    let reach = (8.0 * sigma).ceil() as i64 + 2;
    let fit = chi_square(
        &samples,
        -reach..=reach,
        discrete_gaussian_pmf(sigma2),
        50.0,
    );
    let (mean, var) = mean_and_variance(&samples);
    // Exact variance of N_Z(0, σ²) (slightly below σ² for small σ).
    let pmf = discrete_gaussian_pmf(sigma2);
    let reach_all = (40.0 * sigma + 10.0) as i64;
    let exact_var: f64 = (-reach_all..=reach_all)
        .map(|x| (x as f64).powi(2) * pmf(x))
        .sum();
    println!(
        "discrete Gaussian σ²={sigma2}: n={draws} χ²={:.1} dof={} p={:.3} mean={mean:.4} var={var:.4} (exact var {exact_var:.4})",
        fit.statistic, fit.degrees_of_freedom, fit.p_value
    );
    assert!(
        fit.p_value > MIN_P_VALUE,
        "χ² rejects the discrete Gaussian σ²={sigma2}: {fit:?}"
    );
    let se_mean = (exact_var / draws as f64).sqrt();
    assert!(mean.abs() < 5.0 * se_mean, "mean {mean} for σ²={sigma2}");
    // Var of the sample variance ≈ (μ4 − σ⁴)/n ≤ 2σ⁴/n·(1.5): 5 standard errors.
    let se_var = exact_var * (3.0 / draws as f64).sqrt();
    assert!(
        (var - exact_var).abs() < 5.0 * se_var,
        "variance {var} vs exact {exact_var}"
    );
}

#[test]
fn discrete_gaussian_fits_exact_pmf_sigma_0_5() {
    check_discrete_gaussian(
        &DiscreteGaussian::from_sigma(0.5).unwrap(),
        0.25,
        1_000_000,
        1,
    );
}

#[test]
fn discrete_gaussian_fits_exact_pmf_sigma_1() {
    check_discrete_gaussian(
        &DiscreteGaussian::from_sigma(1.0).unwrap(),
        1.0,
        1_000_000,
        2,
    );
}

#[test]
fn discrete_gaussian_fits_exact_pmf_sigma_10() {
    check_discrete_gaussian(
        &DiscreteGaussian::from_sigma(10.0).unwrap(),
        100.0,
        1_000_000,
        3,
    );
}

#[test]
fn discrete_gaussian_fits_exact_pmf_sigma_1000() {
    check_discrete_gaussian(
        &DiscreteGaussian::from_sigma(1000.0).unwrap(),
        1e6,
        1_000_000,
        4,
    );
}

#[test]
fn discrete_gaussian_fits_exact_pmf_non_dyadic_sigma_big_integer_path() {
    // σ = 3.7 has a 53-bit mantissa: σ² has 106 bits and every acceptance test
    // needs more than 128 bits, so this exercises the num-bigint fallback.
    let s = 3.7f64;
    check_discrete_gaussian(&DiscreteGaussian::from_sigma(s).unwrap(), s * s, 200_000, 5);
}

#[test]
fn discrete_gaussian_fits_exact_pmf_privatizer_variance() {
    // The form the privatizer uses: σ² rounded up to a 53-bit dyadic (here (3.7/0.013)²).
    let cfg = feedloop_privacy::PrivatizerConfig::new(1.0, 0.013, 3.7).unwrap();
    let (a, k) = cfg.lattice_variance();
    let sigma2 = a as f64 * 2f64.powi(-k);
    check_discrete_gaussian(
        &DiscreteGaussian::from_dyadic_variance(a, k).unwrap(),
        sigma2,
        1_000_000,
        6,
    );
}

#[test]
fn discrete_gaussian_big_integer_only_path_matches_the_fast_path_distribution() {
    // σ² = 4·10^40 / 10^40 = 4 exactly, but the numerator does not fit in u128.
    let ten40 = BigUint::from(10u32).pow(40);
    let sampler = DiscreteGaussian::from_variance(ten40.clone() * 4u32, ten40).unwrap();
    check_discrete_gaussian(&sampler, 4.0, 100_000, 7);
}

fn check_discrete_laplace(scale_num: u64, scale_den: u64, draws: usize, seed: u64) {
    let scale = scale_num as f64 / scale_den as f64;
    let mut r = rng(seed);
    let samples: Vec<i64> = (0..draws)
        .map(|_| sample_discrete_laplace(&mut r, scale_num, scale_den).unwrap())
        .collect();
    // P(x) = (1 − e^{−1/s}) / (1 + e^{−1/s}) · e^{−|x|/s}
    let a = (-1.0 / scale).exp();
    let pmf = move |x: i64| (1.0 - a) / (1.0 + a) * a.powi(x.unsigned_abs() as i32);
    let reach = (12.0 * scale).ceil() as i64 + 2;
    let fit = chi_square(&samples, -reach..=reach, pmf, 50.0);
    let (mean, var) = mean_and_variance(&samples);
    let exact_var = 2.0 * a / (1.0 - a).powi(2);
    println!(
        "discrete Laplace scale={scale_num}/{scale_den}: n={draws} χ²={:.1} dof={} p={:.3} mean={mean:.4} var={var:.4} (exact {exact_var:.4})",
        fit.statistic, fit.degrees_of_freedom, fit.p_value
    );
    assert!(
        fit.p_value > MIN_P_VALUE,
        "χ² rejects discrete Laplace {scale_num}/{scale_den}: {fit:?}"
    );
    assert!(mean.abs() < 5.0 * (exact_var / draws as f64).sqrt());
    assert!(
        (var - exact_var).abs() < 5.0 * exact_var * (5.0 / draws as f64).sqrt(),
        "var {var} vs {exact_var}"
    );
}

#[test]
fn discrete_laplace_fits_exact_pmf() {
    check_discrete_laplace(1, 2, 1_000_000, 21);
    check_discrete_laplace(1, 1, 1_000_000, 22);
    check_discrete_laplace(7, 3, 1_000_000, 23);
    check_discrete_laplace(100, 1, 1_000_000, 24);
}

#[test]
fn bernoulli_exp_neg_has_the_exact_rate() {
    // exp(−γ) for γ below, at, and above 1, including the u128 lazy path (den > 2^64).
    let cases: [(u128, u128); 5] = [(0, 1), (1, 3), (1, 1), (7, 2), (3 << 70, 5 << 70)];
    for (i, &(num, den)) in cases.iter().enumerate() {
        let mut r = rng(30 + i as u64);
        let n = 1_000_000;
        let hits = (0..n)
            .filter(|_| bernoulli_exp_neg(&mut r, num, den))
            .count() as f64;
        let p = (-(num as f64) / den as f64).exp();
        let z = (hits - p * n as f64) / (n as f64 * p * (1.0 - p)).sqrt().max(1e-9);
        println!(
            "Bernoulli(exp(-{num}/{den})): rate {:.5} vs {p:.5}, z = {z:.2}",
            hits / n as f64
        );
        assert!(z.abs() < 4.5, "γ = {num}/{den}: z = {z}");
    }
}

#[test]
fn bernoulli_ratio_lazy_u128_path_is_exact() {
    let den: u128 = (1u128 << 100) + 12_345;
    let num: u128 = den / 3;
    let mut r = rng(40);
    let n = 1_000_000;
    let hits = (0..n).filter(|_| bernoulli_ratio(&mut r, num, den)).count() as f64;
    let z = (hits - n as f64 / 3.0) / (n as f64 * (2.0 / 9.0)).sqrt();
    assert!(z.abs() < 4.5, "z = {z}");
}

#[test]
fn uniform_below_is_unbiased() {
    for (bound, seed) in [(3u64, 50), (7, 51), (1000, 52)] {
        let mut r = rng(seed);
        let samples: Vec<i64> = (0..600_000)
            .map(|_| uniform_below(&mut r, bound) as i64)
            .collect();
        let fit = chi_square(&samples, 0..=(bound as i64 - 1), |_| 1.0, 0.0);
        assert!(fit.p_value > MIN_P_VALUE, "uniform below {bound}: {fit:?}");
        assert!(samples.iter().all(|&s| (0..bound as i64).contains(&s)));
    }
}

#[test]
fn invalid_parameters_are_rejected() {
    assert!(DiscreteGaussian::from_sigma(0.0).is_err());
    assert!(DiscreteGaussian::from_sigma(f64::NAN).is_err());
    assert!(DiscreteGaussian::from_sigma(f64::INFINITY).is_err());
    assert!(DiscreteGaussian::from_sigma(1e13).is_err());
    assert!(sample_discrete_laplace(&mut rng(0), 0, 1).is_err());
    assert!(sample_discrete_laplace(&mut rng(0), 1, 0).is_err());
}
