//! k-ary randomized response: the exact ε of the probability table, the sampler against that
//! table (χ²), the unbiased histogram estimator with its covariance, and refusals.

// Tables and histograms are indexed by category.
#![allow(clippy::needless_range_loop)]

use chacha20::ChaCha20Rng;
use feedloop_privacy::categorical_response::{CategoricalResponse, MAX_CATEGORIES};
use proptest::prelude::*;
use rand_core::SeedableRng;

/// ε of a table: max over outputs o and values v, w of ln P(o|v) − ln P(o|w).
fn table_epsilon(c: &CategoricalResponse) -> f64 {
    let t = c.probability_table();
    let k = t.len();
    let mut eps = 0.0f64;
    for o in 0..k {
        let column: Vec<f64> = (0..k).map(|v| t[v][o]).collect();
        let max = column.iter().cloned().fold(f64::MIN, f64::max);
        let min = column.iter().cloned().fold(f64::MAX, f64::min);
        eps = eps.max(max.ln() - min.ln());
    }
    eps
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// The exact ε never exceeds the request, equals the table's, and is the most accurate table
    /// on the grid: one step less noise would exceed ε.
    #[test]
    fn exact_epsilon_never_exceeds_the_request(eps in 0.0f64..12.0, k in 2u32..300) {
        let c = CategoricalResponse::new(eps, k).unwrap();
        prop_assert!(c.epsilon() <= eps, "ε {} above {eps}", c.epsilon());
        prop_assert!((table_epsilon(&c) - c.epsilon()).abs() <= 1e-9 * eps.max(1.0));
        let (keep, other, d) = c.probabilities();
        prop_assert_eq!(keep + u64::from(k - 1) * other, d);
        prop_assert!(other >= 1 && keep >= other);
        if other > 1 {
            let less_noise = ((keep + u64::from(k - 1)) as f64 / (other - 1) as f64).ln();
            prop_assert!(less_noise > eps - 1e-12, "a more accurate table ({less_noise}) fits ε = {eps}");
        }
        let rows: f64 = c.probability_table()[0].iter().sum();
        prop_assert!((rows - 1.0).abs() < 1e-12);
    }
}

#[test]
fn reports_follow_the_probability_table() {
    // χ² of 200,000 reports of value 2 (k = 5, ε = 1) against the exact table: 4 degrees of freedom.
    let c = CategoricalResponse::new(1.0, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let n = 200_000;
    let mut counts = [0u64; 5];
    for _ in 0..n {
        counts[c.respond(2, &mut rng).unwrap() as usize] += 1;
    }
    let table = &c.probability_table()[2];
    let chi2: f64 = (0..5)
        .map(|o| {
            let expected = table[o] * n as f64;
            (counts[o] as f64 - expected).powi(2) / expected
        })
        .sum();
    // P(χ²₄ > 18.47) = 0.001.
    assert!(
        chi2 < 18.47,
        "χ² = {chi2}, counts {counts:?}, table {table:?}"
    );
}

#[test]
fn the_histogram_estimator_is_unbiased_and_its_covariance_is_right() {
    // Star ratings 1..5 with a known distribution; 300 cohorts of 2,000 devices at ε = 1.
    let truth = [0.05, 0.10, 0.20, 0.30, 0.35];
    let c = CategoricalResponse::new(1.0, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let (devices, cohorts) = (2_000usize, 300usize);
    let stars = [1.0, 2.0, 3.0, 4.0, 5.0];
    let true_mean: f64 = truth.iter().zip(&stars).map(|(p, s)| p * s).sum();
    let mut proportions = vec![Vec::new(); 5];
    let mut means = Vec::new();
    let (mut predicted_var, mut predicted_mean_var) = (vec![0.0; 5], 0.0);
    for cohort in 0..cohorts {
        let mut counts = [0u64; 5];
        for device in 0..devices {
            // Exactly truth[j]·devices devices hold rating j (a fixed population per cohort).
            let u = ((device * 7919 + cohort) % devices) as f64 / devices as f64;
            let mut acc = 0.0;
            let value = truth
                .iter()
                .position(|p| {
                    acc += p;
                    u < acc
                })
                .unwrap_or(4) as u32;
            counts[c.respond(value, &mut rng).unwrap() as usize] += 1;
        }
        let est = c.estimate(&counts).unwrap();
        assert!((est.proportions.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        for j in 0..5 {
            proportions[j].push(est.proportions[j]);
            predicted_var[j] += est.variances[j] / cohorts as f64;
        }
        let (mean, var) = est.linear(&stars).unwrap();
        means.push(mean);
        predicted_mean_var += var / cohorts as f64;
    }
    let check = |name: &str, values: &[f64], truth: f64, predicted: f64| {
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let se = (predicted / n).sqrt();
        assert!(
            (mean - truth).abs() < 5.0 * se,
            "{name}: mean {mean} vs {truth} (se {se})"
        );
        // The sample variance of 300 estimates has a relative sd of √(2/299) ≈ 8 %.
        assert!(
            (var / predicted - 1.0).abs() < 0.35,
            "{name}: var {var} vs predicted {predicted}"
        );
    };
    for j in 0..5 {
        check(
            &format!("π̂_{j}"),
            &proportions[j],
            truth[j],
            predicted_var[j],
        );
    }
    check("mean rating", &means, true_mean, predicted_mean_var);
}

#[test]
fn bad_parameters_and_inputs_are_refused() {
    assert!(CategoricalResponse::new(1.0, 1).is_err());
    assert!(CategoricalResponse::new(1.0, MAX_CATEGORIES + 1).is_err());
    assert!(CategoricalResponse::new(f64::NAN, 5).is_err());
    assert!(CategoricalResponse::new(-0.1, 5).is_err());
    assert!(CategoricalResponse::new(f64::INFINITY, 5).is_err());
    let c = CategoricalResponse::new(1.0, 5).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    assert!(c.respond(5, &mut rng).is_err());
    assert!(c.estimate(&[1, 2, 3]).is_err());
    assert!(c.estimate(&[0; 5]).is_err());
    assert!(CategoricalResponse::new(0.0, 5)
        .unwrap()
        .estimate(&[1; 5])
        .is_err());
    let est = c.estimate(&[10, 20, 30, 40, 50]).unwrap();
    assert!(est.linear(&[1.0, 2.0]).is_err());
}
