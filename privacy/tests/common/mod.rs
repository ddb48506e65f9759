//! Statistics helpers shared by the integration tests.
#![allow(dead_code)]

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; ~1e-15 relative).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// Upper regularized incomplete gamma Q(s, x).
pub fn gamma_q(s: f64, x: f64) -> f64 {
    if x < s + 1.0 {
        // series for P
        let (mut sum, mut term, mut n) = (1.0 / s, 1.0 / s, s);
        for _ in 0..100_000 {
            n += 1.0;
            term *= x / n;
            sum += term;
            if term < sum * 1e-16 {
                break;
            }
        }
        1.0 - sum * (-x + s * x.ln() - ln_gamma(s)).exp()
    } else {
        // continued fraction for Q (Lentz)
        let tiny = 1e-300;
        let mut b = x + 1.0 - s;
        let mut c = 1.0 / tiny;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - s);
            b += 2.0;
            d = an * d + b;
            if d.abs() < tiny {
                d = tiny;
            }
            c = b + an / c;
            if c.abs() < tiny {
                c = tiny;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-x + s * x.ln() - ln_gamma(s)).exp() * h
    }
}

/// Result of a χ² goodness-of-fit test.
#[derive(Debug)]
pub struct ChiSquare {
    pub statistic: f64,
    pub degrees_of_freedom: usize,
    pub p_value: f64,
}

/// χ² test of integer samples against a PMF given on `support` (values outside
/// `support` fall into the outermost bins). Consecutive values are merged into
/// bins with expected count ≥ `min_expected`.
pub fn chi_square(
    samples: &[i64],
    support: std::ops::RangeInclusive<i64>,
    pmf: impl Fn(i64) -> f64,
    min_expected: f64,
) -> ChiSquare {
    let n = samples.len() as f64;
    let (lo, hi) = (*support.start(), *support.end());
    let mut counts = vec![0u64; (hi - lo + 1) as usize];
    for &s in samples {
        counts[(s.clamp(lo, hi) - lo) as usize] += 1;
    }
    let probs: Vec<f64> = (lo..=hi).map(&pmf).collect();
    let total_p: f64 = probs.iter().sum();
    // Tail mass beyond the support goes to the outer bins.
    let mut bins: Vec<(f64, f64)> = Vec::new(); // (expected, observed)
    let (mut e, mut o) = (0.0, 0.0);
    for (i, (&p, &c)) in probs.iter().zip(&counts).enumerate() {
        e += p / total_p * n;
        o += c as f64;
        if e >= min_expected || i + 1 == probs.len() {
            bins.push((e, o));
            e = 0.0;
            o = 0.0;
        }
    }
    if bins.len() > 1 && bins.last().unwrap().0 < min_expected {
        let (e, o) = bins.pop().unwrap();
        let last = bins.last_mut().unwrap();
        last.0 += e;
        last.1 += o;
    }
    let statistic: f64 = bins.iter().map(|(e, o)| (o - e) * (o - e) / e).sum();
    let dof = bins.len() - 1;
    ChiSquare {
        statistic,
        degrees_of_freedom: dof,
        p_value: if dof == 0 {
            1.0
        } else {
            gamma_q(dof as f64 / 2.0, statistic / 2.0)
        },
    }
}

pub fn mean_and_variance(samples: &[i64]) -> (f64, f64) {
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / (n - 1.0);
    (mean, var)
}
