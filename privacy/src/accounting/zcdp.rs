//! Zero-concentrated differential privacy.
//!
//! A mechanism is ρ-zCDP if `D_α(M(x) ‖ M(x′)) ≤ ρα` for all α > 1 and
//! neighbours x, x′. Adding N_ℤ(0, σ²) (discrete Gaussian) to a query of L2
//! sensitivity Δ is `Δ²/(2σ²)`-zCDP (Canonne–Kamath–Steinke 2020, Thm. 14 — the
//! same ρ as the continuous Gaussian). Composition: ρ's add.

use crate::error::{invalid, Result};

/// ρ = Δ² / (2σ²) for Gaussian or discrete Gaussian noise (Δ and σ in the same units).
///
/// For a whole user contribution under local DP with clip norm C, Δ = 2C.
pub fn zcdp_rho_gaussian(sensitivity: f64, sigma: f64) -> f64 {
    let ratio = sensitivity / sigma;
    ratio * ratio / 2.0
}

/// The smallest ε such that ρ-zCDP implies (ε, δ)-DP, by the optimal-α search of
/// OpenDP's `cdp_epsilon` (CKS 2020 Prop. 12 / Cor. 13):
///
/// `ε = αρ + (ln(1/δ) + (α−1)·ln(1−1/α) − ln α) / (α−1)`, minimised over α > 1
/// by bisection on the sign of the derivative, `ρ > −ln(αδ)/(α−1)²`, with
/// α ∈ [1.01, 2^k] (every α gives a valid bound, so the search needs no
/// directed rounding). Agrees with OpenDP 0.16 to ~1e-14 relative.
pub fn zcdp_to_approx_dp(rho: f64, delta: f64) -> Result<f64> {
    if rho.is_nan() || rho < 0.0 {
        return Err(invalid("rho", rho, "must be >= 0"));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(invalid("delta", delta, "must be in (0, 1)"));
    }
    if rho == 0.0 {
        return Ok(0.0);
    }
    if rho.is_infinite() {
        return Ok(f64::INFINITY);
    }
    let derivative_positive = |a: f64| rho > -(a * delta).ln() / (a - 1.0).powi(2);
    let mut a_min = 1.01f64;
    let mut a_max = 2.0f64;
    while !derivative_positive(a_max) {
        a_max *= 2.0;
    }
    loop {
        let a_mid = a_min + (a_max - a_min) / 2.0;
        if a_mid == a_max || a_mid == a_min {
            break;
        }
        if derivative_positive(a_mid) {
            a_max = a_mid;
        } else {
            a_min = a_mid;
        }
    }
    let a_m1 = a_max - 1.0;
    let numer = (a_m1 / a_max).ln() * a_m1 - a_max.ln() + delta.recip().ln();
    Ok((a_max * rho + numer / a_m1).max(0.0))
}

/// The largest total ρ whose (ε, δ) conversion stays ≤ `epsilon` (bisection on
/// ρ; the result is rounded down so it never over-allows).
pub fn max_rho_for_epsilon(epsilon: f64, delta: f64) -> Result<f64> {
    if !(epsilon > 0.0 && epsilon.is_finite()) {
        return Err(invalid("epsilon", epsilon, "must be finite and > 0"));
    }
    zcdp_to_approx_dp(1.0, delta)?; // validates delta
                                    // ε(ρ) ≥ ρ, so ρ ≤ ε brackets the answer.
    let (mut lo, mut hi) = (0.0f64, epsilon);
    for _ in 0..200 {
        let mid = lo + (hi - lo) / 2.0;
        if mid == lo || mid == hi {
            break;
        }
        if zcdp_to_approx_dp(mid, delta)? <= epsilon {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rho_matches_closed_form() {
        assert_eq!(zcdp_rho_gaussian(2.0, 4.0), 0.125);
    }

    #[test]
    fn epsilon_is_monotone_in_rho_and_delta() {
        let mut last = 0.0;
        for rho in [1e-4, 1e-3, 0.01, 0.1, 1.0, 10.0] {
            let e = zcdp_to_approx_dp(rho, 1e-6).unwrap();
            assert!(e > last);
            last = e;
        }
        assert!(zcdp_to_approx_dp(0.1, 1e-9).unwrap() > zcdp_to_approx_dp(0.1, 1e-3).unwrap());
    }

    #[test]
    fn epsilon_never_exceeds_the_classical_bound() {
        // ε ≤ ρ + 2√(ρ ln(1/δ)) (Bun–Steinke Prop. 1.3); CKS is tighter.
        for rho in [1e-3f64, 0.05, 0.5, 3.0] {
            for delta in [1e-9f64, 1e-5] {
                let classical = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
                assert!(zcdp_to_approx_dp(rho, delta).unwrap() <= classical);
            }
        }
    }

    #[test]
    fn max_rho_inverts_the_conversion() {
        let rho = max_rho_for_epsilon(1.0, 1e-5).unwrap();
        assert!(zcdp_to_approx_dp(rho, 1e-5).unwrap() <= 1.0);
        assert!(zcdp_to_approx_dp(rho * (1.0 + 1e-9), 1e-5).unwrap() > 1.0 - 1e-9);
    }

    #[test]
    fn rejects_bad_arguments() {
        assert!(zcdp_to_approx_dp(-1.0, 1e-5).is_err());
        assert!(zcdp_to_approx_dp(f64::NAN, 1e-5).is_err());
        assert!(zcdp_to_approx_dp(1.0, 0.0).is_err());
        assert!(zcdp_to_approx_dp(1.0, 1.0).is_err());
    }
}
