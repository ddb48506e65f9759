//! Randomized response: exact ε from the probability table, unbiased estimator, variance.

use chacha20::ChaCha20Rng;
use feedloop_privacy::randomized_response::{RandomizedResponse, KEEP_DENOMINATOR};

use rand_core::SeedableRng;

#[test]
fn exact_epsilon_from_the_probability_table_never_exceeds_the_request() {
    for eps in [0.0, 0.01, 0.5, 1.0, std::f64::consts::LN_2, 3.0, 10.0, 30.0] {
        let rr = RandomizedResponse::new(eps).unwrap();
        let t = rr.probability_table();
        // ε of a table: max over outputs o of |ln P(o|0) − ln P(o|1)|.
        let table_eps = (0..2)
            .map(|o| (t[0][o].ln() - t[1][o].ln()).abs())
            .fold(0.0, f64::max);
        assert!(
            (table_eps - rr.epsilon()).abs() <= 1e-12 * eps.max(1.0),
            "{eps}: {table_eps} vs {}",
            rr.epsilon()
        );
        assert!(
            rr.epsilon() <= eps,
            "{eps}: exact ε {} above request",
            rr.epsilon()
        );
        // Nearly the most accurate: p is e^ε/(1+e^ε) up to f64 resolution.
        let (n, d) = rr.keep_probability();
        let ideal = 1.0 / (1.0 + (-eps).exp());
        assert!(
            ideal - n as f64 / d as f64 <= 1e-12,
            "{eps}: keep probability {} well below {ideal}",
            n as f64 / d as f64
        );
        assert!((t[0][0] + t[0][1] - 1.0).abs() < 1e-15);
    }
    // ε = ln 3 ⇒ p = 3/4, which is representable: the table is exact up to f64 evaluation of ln 3.
    let p = RandomizedResponse::new(3f64.ln())
        .unwrap()
        .keep_probability()
        .0 as f64
        / KEEP_DENOMINATOR as f64;
    assert!((p - 0.75).abs() <= 2.0 / KEEP_DENOMINATOR as f64, "{p}");
    assert!(RandomizedResponse::new(-1.0).is_err());
    assert!(RandomizedResponse::new(f64::NAN).is_err());
}

#[test]
fn estimator_is_unbiased_and_its_variance_is_right() {
    let rr = RandomizedResponse::new(1.0).unwrap();
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let (true_p, users, repeats) = (0.3, 2_000u64, 400);
    let mut estimates = Vec::new();
    let mut predicted_var = 0.0;
    for r in 0..repeats {
        let ones = (0..users)
            .filter(|&u| rr.respond((u * 7919 + r) % 1000 < (true_p * 1000.0) as u64, &mut rng))
            .count() as u64;
        let est = rr.estimate_proportion(ones, users).unwrap();
        estimates.push(est.proportion);
        predicted_var += est.variance / repeats as f64;
    }
    let mean = estimates.iter().sum::<f64>() / repeats as f64;
    let var = estimates.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / (repeats as f64 - 1.0);
    let se_mean = (predicted_var / repeats as f64).sqrt();
    assert!(
        (mean - true_p).abs() < 5.0 * se_mean,
        "mean {mean} vs {true_p}"
    );
    // Sample variance of 400 estimates: relative sd ≈ √(2/399) ≈ 7 %.
    assert!(
        (var / predicted_var - 1.0).abs() < 0.35,
        "var {var} vs predicted {predicted_var}"
    );
    assert!(RandomizedResponse::new(0.0)
        .unwrap()
        .estimate_proportion(1, 2)
        .is_err());
}
