//! Special functions in log space for the RDP accountant, mirroring the scipy
//! functions dp-accounting calls (`gammaln`, `log_ndtr`).

/// ln|Γ(x)| (scipy `gammaln`).
pub(crate) fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}

/// ln |C(n, k)| via log-gamma, real n and k (dp-accounting `_log_comb`).
pub(crate) fn log_comb(n: f64, k: f64) -> f64 {
    ln_gamma(n + 1.0) - ln_gamma(k + 1.0) - ln_gamma(n - k + 1.0)
}

/// ln(e^x + e^y) (dp-accounting `_log_add`).
pub(crate) fn log_add(x: f64, y: f64) -> f64 {
    let (a, b) = if x < y { (x, y) } else { (y, x) };
    if a == f64::NEG_INFINITY {
        return b;
    }
    (a - b).exp().ln_1p() + b
}

/// Standard normal CDF (cephes `ndtr`).
pub(crate) fn ndtr(a: f64) -> f64 {
    let x = a * core::f64::consts::FRAC_1_SQRT_2;
    let z = x.abs();
    if z < core::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        let y = 0.5 * libm::erfc(z);
        if x > 0.0 {
            1.0 - y
        } else {
            y
        }
    }
}

/// ln Φ(a) (scipy/cephes `log_ndtr`): asymptotic series below −20.
pub(crate) fn log_ndtr(a: f64) -> f64 {
    if a > 6.0 {
        return -ndtr(-a); // ln(1 − x) ≈ −x
    }
    if a > -20.0 {
        return ndtr(a).ln();
    }
    let log_lhs = -0.5 * a * a - (-a).ln() - 0.5 * (2.0 * core::f64::consts::PI).ln();
    let denom_cons = 1.0 / (a * a);
    let (mut last_total, mut rhs, mut numerator, mut denom_factor, mut sign) =
        (0.0f64, 1.0f64, 1.0f64, 1.0f64, 1.0f64);
    let mut i = 0.0f64;
    while (last_total - rhs).abs() > f64::EPSILON {
        i += 1.0;
        last_total = rhs;
        sign = -sign;
        denom_factor *= denom_cons;
        numerator *= 2.0 * i - 1.0;
        rhs += sign * numerator * denom_factor;
    }
    log_lhs + rhs.ln()
}

/// ln erfc(x), accurate far into the tail (dp-accounting `_log_erfc`).
pub(crate) fn log_erfc(x: f64) -> f64 {
    core::f64::consts::LN_2 + log_ndtr(-x * core::f64::consts::SQRT_2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_erfc_matches_erfc_where_it_is_representable() {
        for x in [-3.0, -0.5, 0.0, 0.3, 1.0, 4.0, 10.0, 20.0] {
            let direct = libm::erfc(x).ln();
            assert!(
                (log_erfc(x) - direct).abs() <= 1e-12 * direct.abs().max(1.0),
                "{x}"
            );
        }
        // Deep tail: ln erfc(x) ≈ −x² − ln(x√π).
        let x = 100.0f64;
        let approx = -x * x - (x * core::f64::consts::PI.sqrt()).ln();
        assert!((log_erfc(x) - approx).abs() < 1e-3);
    }

    #[test]
    fn log_comb_matches_integers() {
        assert!((log_comb(10.0, 3.0) - 120f64.ln()).abs() < 1e-12);
        assert!((log_add(1f64.ln(), 2f64.ln()) - 3f64.ln()).abs() < 1e-15);
    }
}
