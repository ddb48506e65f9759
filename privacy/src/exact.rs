//! Exact conversions from `f64` to rationals, and integer square roots.
//!
//! Every finite `f64` is a dyadic rational `m · 2^e`; these helpers turn the
//! floats that arrive in configurations into exact integers so that no sampling
//! decision ever depends on floating-point rounding.

use num_bigint::BigUint;
use num_traits::{One, ToPrimitive, Zero};

/// `x = mantissa · 2^exponent` exactly, with `mantissa` odd (or zero).
/// Panics in debug builds if `x` is not finite; callers validate first.
pub(crate) fn decompose(x: f64) -> (u64, i32) {
    debug_assert!(x.is_finite());
    let bits = x.abs().to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1u64 << 52) - 1);
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1u64 << 52), biased - 1075)
    };
    if mantissa == 0 {
        return (0, 0);
    }
    let tz = mantissa.trailing_zeros();
    (mantissa >> tz, exponent + tz as i32)
}

/// The exact value of `(a / b)^2` for positive finite `a`, `b`, as `num / den`.
pub(crate) fn ratio_squared(a: f64, b: f64) -> (BigUint, BigUint) {
    let (ma, ea) = decompose(a);
    let (mb, eb) = decompose(b);
    let mut num = BigUint::from(ma) * BigUint::from(ma);
    let mut den = BigUint::from(mb) * BigUint::from(mb);
    let shift = 2 * (i64::from(ea) - i64::from(eb));
    if shift >= 0 {
        num <<= shift as u64;
    } else {
        den <<= (-shift) as u64;
    }
    (num, den)
}

/// Smallest `a · 2^-k ≥ num/den` with `a < 2^53` (53 significant bits), `a` odd or
/// `k` minimal. Used to round a variance *up*: more noise is always privacy-safe.
pub(crate) fn round_up_dyadic(num: &BigUint, den: &BigUint) -> (u64, i32) {
    debug_assert!(!den.is_zero() && !num.is_zero());
    let mut k: i64 = 53 - (num.bits() as i64 - den.bits() as i64);
    loop {
        let a = ceil_div_shifted(num, den, k);
        let bits = a.bits();
        if bits > 53 {
            k -= 1;
        } else if bits < 53 && ceil_div_shifted(num, den, k + 1).bits() <= 53 {
            k += 1;
        } else {
            let mut a = a.to_u64().expect("a < 2^53");
            // Normalise: strip factors of two so equal values have one representation.
            while a.is_multiple_of(2) && a != 0 {
                a /= 2;
                k -= 1;
            }
            return (
                a,
                i32::try_from(k).expect("exponent of a validated variance fits i32"),
            );
        }
    }
}

/// `ceil(num · 2^k / den)`.
fn ceil_div_shifted(num: &BigUint, den: &BigUint, k: i64) -> BigUint {
    let (n, d) = if k >= 0 {
        (num << (k as u64), den.clone())
    } else {
        (num.clone(), den << ((-k) as u64))
    };
    let q = &n / &d;
    if (&q * &d) == n {
        q
    } else {
        q + BigUint::one()
    }
}

/// `floor(num / den)` as u128, saturating (callers bound the value first).
pub(crate) fn floor_div_u128(num: &BigUint, den: &BigUint) -> u128 {
    (num / den).to_u128().unwrap_or(u128::MAX)
}

/// `floor(sqrt(n))` for u128, exact.
pub(crate) fn isqrt_u128(n: u128) -> u128 {
    if n < 2 {
        return n;
    }
    // Float estimate, then exact correction in integers.
    let mut r = (n as f64).sqrt() as u128;
    while r.checked_mul(r).is_none_or(|sq| sq > n) {
        r -= 1;
    }
    while (r + 1).checked_mul(r + 1).is_some_and(|sq| sq <= n) {
        r += 1;
    }
    r
}

/// The exact value of the dyadic `a · 2^-k` as a `(num, den)` pair of big integers.
pub(crate) fn dyadic_to_ratio(a: u64, k: i32) -> (BigUint, BigUint) {
    if k >= 0 {
        (BigUint::from(a), BigUint::one() << (k as u64))
    } else {
        (BigUint::from(a) << ((-k) as u64), BigUint::one())
    }
}

/// `a · 2^-k` as f64 (for display and accounting only, never for sampling).
pub(crate) fn dyadic_to_f64(a: u64, k: i32) -> f64 {
    (a as f64) * 2f64.powi(-k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompose_is_exact() {
        for x in [1.0, 0.5, 3.7, 1e-300, 5e-324, 1e300, 1000.0, 0.1] {
            let (m, e) = decompose(x);
            assert_eq!(m % 2, 1);
            // Two power-of-two steps: 2^e alone underflows for subnormal x.
            assert_eq!(
                (m as f64) * 2f64.powi(e / 2) * 2f64.powi(e - e / 2),
                x,
                "{x}"
            );
        }
    }

    #[test]
    fn round_up_dyadic_is_an_upper_bound_within_2_pow_minus_52() {
        for (s, g) in [
            (1.0, 0.01),
            (3.7, 0.013),
            (1.0, 1.0),
            (1e-3, 1e-6),
            (2.5, 0.5),
        ] {
            let (num, den) = ratio_squared(s, g);
            let (a, k) = round_up_dyadic(&num, &den);
            let (an, ad) = dyadic_to_ratio(a, k);
            // an/ad >= num/den  <=>  an*den >= num*ad
            assert!(&an * &den >= &num * &ad, "not rounded up for {s}/{g}");
            // and within a relative 2^-52: (an/ad - num/den) * 2^52 <= num/den
            let lhs = (&an * &den - &num * &ad) << 52u32;
            assert!(lhs <= &num * &ad, "too coarse for {s}/{g}");
        }
    }

    #[test]
    fn isqrt_matches_definition() {
        for n in [
            0u128,
            1,
            2,
            3,
            4,
            15,
            16,
            17,
            u64::MAX as u128,
            u128::MAX,
            (1u128 << 100) + 12345,
        ] {
            let r = isqrt_u128(n);
            assert!(r * r <= n);
            assert!((r + 1).checked_mul(r + 1).is_none_or(|sq| sq > n));
        }
    }
}
