//! Segments: the thumbs-up rate per declared group of users (e.g. locale), and a disparity flag
//! between groups — the seed of a bias audit — without any report naming its segment.
//!
//! The site declares a short list of segments (the server's `segments`, published in
//! `GET /v1/stats`); the page tells its ranker which one its user is in
//! (`Ranker.create({ segment })`). Once per version, the device reports the pair (segment, last
//! thumbs verdict on the top answer) as one cell of `2·S` cells, `cell = 2·segment + up`, with
//! `2·S`-ary randomized response at the metrics' ε
//! ([`CategoricalResponse`]): the segment is only ever inside the randomized value, and the pair
//! is ε-LDP like any other metric report.
//!
//! The server de-biases the `2·S` cell proportions π̂ (unbiased, with their covariance Σ) and
//! derives per segment `s`: its share `a_s + b_s` (`a_s = π̂(s, up)`, `b_s = π̂(s, down)`, linear,
//! exact variance) and its thumbs-up rate `r_s = a_s / (a_s + b_s)`, a ratio, with the delta
//! method's variance `g_sᵀ Σ g_s` (`∂r/∂a = b/(a+b)²`, `∂r/∂b = −a/(a+b)²`). A segment's rate
//! is left unknown while its share is within two standard errors of 0 (a ratio over noise).
//!
//! Disparity: for every pair of segments with known rates, the difference `r_i − r_j` with
//! variance `(g_i − g_j)ᵀ Σ (g_i − g_j)` (the pairs share Σ, so their covariance is counted)
//! and a Bonferroni-corrected interval at level `1 − α/m` over the `m` pairs. The pair with the
//! largest gap is shown; it is flagged when its interval lies wholly beyond the tolerated
//! `margin` — so with equal rates the chance of any flag is at most α (and far less when the
//! margin is above 0), and a real gap larger than the margin is flagged as reports accrue.

use feedloop_privacy::categorical_response::CategoricalResponse;

use crate::error::{Error, Result};
use crate::protocol::{SegmentDisparity, SegmentRate, SegmentStats};

/// At most this many segments may be declared (2·16 = 32 cells keep randomized response useful
/// at ε = 1: the true cell is kept with probability e/(e + 31) ≈ 8 %).
pub const MAX_SEGMENTS: usize = 16;

/// The longest segment name.
pub const MAX_SEGMENT_NAME: usize = 32;

/// The cell of (segment index, thumbs verdict).
pub fn cell(segment: usize, up: bool) -> u32 {
    2 * segment as u32 + u32::from(up)
}

/// Checks a declared list: 2 to [`MAX_SEGMENTS`] distinct names of 1 to [`MAX_SEGMENT_NAME`]
/// characters from `A–Z a–z 0–9 _ . -` (an empty list means no segments and is fine).
pub fn validate(segments: &[String]) -> Result<()> {
    if segments.is_empty() {
        return Ok(());
    }
    if !(2..=MAX_SEGMENTS).contains(&segments.len()) {
        return Err(Error::InvalidInput(format!(
            "declare 2 to {MAX_SEGMENTS} segments (or none), got {}",
            segments.len()
        )));
    }
    for (i, name) in segments.iter().enumerate() {
        validate_name(name)?;
        if segments[..i].contains(name) {
            return Err(Error::InvalidInput(format!(
                "segment {name:?} is declared twice"
            )));
        }
    }
    Ok(())
}

/// Checks one segment name: 1 to [`MAX_SEGMENT_NAME`] characters from `A–Z a–z 0–9 _ . -`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > MAX_SEGMENT_NAME
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(Error::InvalidInput(format!(
            "segment name {name:?}: use 1 to {MAX_SEGMENT_NAME} characters from A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(())
}

/// The mechanism of a segment report over `segments` segments at `epsilon`.
pub fn mechanism(epsilon: f64, segments: usize) -> Result<CategoricalResponse> {
    CategoricalResponse::new(epsilon, 2 * segments as u32)
        .map_err(|e| Error::InvalidInput(format!("privacy: {e}")))
}

/// z for a two-sided normal interval at `confidence` (Acklam's rational approximation of the
/// normal quantile, relative error < 1.2e-9: far below the normal approximation's own error).
pub fn two_sided_z(confidence: f64) -> f64 {
    normal_quantile(0.5 + confidence / 2.0)
}

fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let tail = |q: f64| {
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    };
    if p < 0.02425 {
        tail((-2.0 * p.ln()).sqrt())
    } else if p > 1.0 - 0.02425 {
        -tail((-2.0 * (1.0 - p).ln()).sqrt())
    } else {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    }
}

/// What the disparity test tolerates and how sure it must be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisparityTest {
    /// Gaps in thumbs-up rate up to this are tolerated (absolute, e.g. 0.05).
    pub margin: f64,
    /// The chance of a flag when every segment's rate is within the margin of the others', at
    /// most (over all pairs together).
    pub alpha: f64,
}

impl Default for DisparityTest {
    fn default() -> Self {
        Self {
            margin: 0.05,
            alpha: 0.05,
        }
    }
}

/// Per-segment shares and thumbs-up rates, and the largest disparity, from the number of
/// reports of each of the `2 · names.len()` cells.
pub fn segment_stats(
    mechanism: &CategoricalResponse,
    names: &[String],
    counts: &[u64],
    test: DisparityTest,
) -> Result<SegmentStats> {
    let k = 2 * names.len();
    if mechanism.categories() as usize != k || counts.len() != k {
        return Err(Error::InvalidInput(format!(
            "{} segments need {k} cells, got {} counts for a {}-cell mechanism",
            names.len(),
            counts.len(),
            mechanism.categories()
        )));
    }
    let estimate = mechanism
        .estimate(counts)
        .map_err(|e| Error::InvalidInput(format!("privacy: {e}")))?;
    // gᵀ Σ g: the variance of the linear statistic g · π̂ (the vectors have k entries).
    let quadratic = |g: &[f64]| -> f64 { estimate.linear(g).map_or(0.0, |(_, v)| v) };
    let z95 = two_sided_z(0.95);
    let mut rates = Vec::with_capacity(names.len());
    // The delta method's gradient of each known rate, over all cells.
    let mut gradients: Vec<Option<Vec<f64>>> = Vec::with_capacity(names.len());
    for (s, name) in names.iter().enumerate() {
        let (down, up) = (estimate.proportions[2 * s], estimate.proportions[2 * s + 1]);
        let share = up + down;
        let mut indicator = vec![0.0; k];
        indicator[2 * s] = 1.0;
        indicator[2 * s + 1] = 1.0;
        let share_se = quadratic(&indicator).max(0.0).sqrt();
        let known = share > 2.0 * share_se && share > 0.0;
        let (rate, se, gradient) = if known {
            let mut g = vec![0.0; k];
            g[2 * s + 1] = down / (share * share);
            g[2 * s] = -up / (share * share);
            let se = quadratic(&g).max(0.0).sqrt();
            (Some(up / share), Some(se), Some(g))
        } else {
            (None, None, None)
        };
        rates.push(SegmentRate {
            segment: name.clone(),
            share,
            thumbs_up_rate: rate,
            std_error: se,
            ci95: rate.zip(se).map(|(r, se)| [r - z95 * se, r + z95 * se]),
        });
        gradients.push(gradient);
    }
    let known: Vec<usize> = (0..names.len())
        .filter(|&s| gradients[s].is_some())
        .collect();
    let pairs = known.len() * known.len().saturating_sub(1) / 2;
    let disparity = (pairs > 0).then(|| {
        let confidence = 1.0 - test.alpha / pairs as f64;
        let z = two_sided_z(confidence);
        let mut best: Option<SegmentDisparity> = None;
        for (a, &i) in known.iter().enumerate() {
            for &j in &known[a + 1..] {
                let (ri, rj) = (
                    rates[i].thumbs_up_rate.unwrap_or(0.0),
                    rates[j].thumbs_up_rate.unwrap_or(0.0),
                );
                let (hi, lo) = if ri >= rj { (i, j) } else { (j, i) };
                let (gi, gj) = (
                    gradients[hi].as_deref().unwrap_or(&[]),
                    gradients[lo].as_deref().unwrap_or(&[]),
                );
                let diff_g: Vec<f64> = gi.iter().zip(gj).map(|(x, y)| x - y).collect();
                let se = quadratic(&diff_g).max(0.0).sqrt();
                let difference = (ri - rj).abs();
                let interval = [difference - z * se, difference + z * se];
                let candidate = SegmentDisparity {
                    higher: names[hi].clone(),
                    lower: names[lo].clone(),
                    difference,
                    interval,
                    confidence,
                    margin: test.margin,
                    flagged: interval[0] > test.margin,
                };
                // A flagged pair first, then the larger gap.
                let better = match &best {
                    None => true,
                    Some(b) => {
                        (candidate.flagged, candidate.difference) > (b.flagged, b.difference)
                    }
                };
                if better {
                    best = Some(candidate);
                }
            }
        }
        best
    });
    Ok(SegmentStats {
        reports: estimate.reports,
        segments: rates,
        disparity: disparity.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chacha20::rand_core::SeedableRng;
    use rand_core::Rng;

    fn names(n: usize) -> Vec<String> {
        ["en", "de", "fr", "ja", "pt"][..n]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    /// Counts of `n` devices' randomized cells, through the real mechanism: device i is in
    /// segment `i % shares.len()`-weighted by `shares`, up with probability `rates[s]`.
    fn simulate(
        mechanism: &CategoricalResponse,
        shares: &[f64],
        rates: &[f64],
        n: usize,
        rng: &mut chacha20::ChaCha20Rng,
    ) -> Vec<u64> {
        let mut counts = vec![0u64; 2 * shares.len()];
        for _ in 0..n {
            let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
            let mut acc = 0.0;
            let mut s = shares.len() - 1;
            for (i, w) in shares.iter().enumerate() {
                acc += w;
                if u < acc {
                    s = i;
                    break;
                }
            }
            let up = ((rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < rates[s];
            let reported = mechanism.respond(cell(s, up), rng).unwrap();
            counts[reported as usize] += 1;
        }
        counts
    }

    #[test]
    fn lists_are_checked() {
        assert!(validate(&[]).is_ok());
        assert!(validate(&names(3)).is_ok());
        assert!(validate(&names(1)).is_err());
        assert!(validate(&["en".into(), "en".into()]).is_err());
        assert!(validate(&["en".into(), "a b".into()]).is_err());
        assert!(validate(&(0..17).map(|i| format!("s{i}")).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn the_quantile_matches_known_values() {
        assert!((two_sided_z(0.95) - 1.959_963_985).abs() < 1e-8);
        assert!((two_sided_z(0.99) - 2.575_829_304).abs() < 1e-8);
        assert!((two_sided_z(1.0 - 0.05 / 3.0) - 2.393_979_800).abs() < 1e-8);
    }

    #[test]
    fn per_segment_rates_are_close_and_their_intervals_cover() {
        // ε = 1, 3 segments (6 cells), 20,000 devices: 200 runs, coverage of each segment's 95 %
        // interval near 95 %.
        let m = mechanism(1.0, 3).unwrap();
        let (shares, rates) = ([0.5, 0.3, 0.2], [0.7, 0.5, 0.6]);
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(5);
        let runs = 200;
        let mut covered = [0usize; 3];
        let mut errors = [0.0f64; 3];
        for _ in 0..runs {
            let counts = simulate(&m, &shares, &rates, 20_000, &mut rng);
            let stats = segment_stats(&m, &names(3), &counts, DisparityTest::default()).unwrap();
            for s in 0..3 {
                let r = &stats.segments[s];
                let [lo, hi] = r.ci95.expect("known at this size");
                covered[s] += usize::from(lo <= rates[s] && rates[s] <= hi);
                errors[s] += (r.thumbs_up_rate.unwrap() - rates[s]).abs();
                assert!((r.share - shares[s]).abs() < 0.1, "share {}", r.share);
            }
        }
        for s in 0..3 {
            let coverage = covered[s] as f64 / runs as f64;
            // ±3 sd of a binomial(200, 0.95) proportion: 0.904..0.996.
            assert!((0.90..=1.0).contains(&coverage), "segment {s}: {coverage}");
            assert!(errors[s] / (runs as f64) < 0.1, "segment {s}");
        }
    }

    #[test]
    fn equal_segments_are_rarely_flagged_and_a_real_gap_is() {
        let m = mechanism(1.0, 2).unwrap();
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(9);
        let test = DisparityTest {
            margin: 0.0,
            alpha: 0.05,
        };
        // With no margin the flag is a plain Bonferroni test: at most ~5 % false flags.
        let runs = 200;
        let false_flags = (0..runs)
            .filter(|_| {
                let counts = simulate(&m, &[0.5, 0.5], &[0.6, 0.6], 5_000, &mut rng);
                segment_stats(&m, &names(2), &counts, test)
                    .unwrap()
                    .disparity
                    .is_some_and(|d| d.flagged)
            })
            .count();
        // ≤ 5 % + 3 sd of binomial(200, 0.05) ≈ 9.6 %.
        assert!(false_flags <= 19, "{false_flags} of {runs} flagged");
        // A 30-point gap at 20,000 devices is flagged beyond a 5-point margin.
        let counts = simulate(&m, &[0.5, 0.5], &[0.8, 0.5], 20_000, &mut rng);
        let d = segment_stats(&m, &names(2), &counts, DisparityTest::default())
            .unwrap()
            .disparity
            .unwrap();
        assert!(d.flagged, "{d:?}");
        assert_eq!((d.higher.as_str(), d.lower.as_str()), ("en", "de"));
        assert!(d.interval[0] > 0.05 && d.interval[0] < d.difference);
    }

    #[test]
    fn an_absent_segment_has_no_rate_and_counts_are_checked() {
        let m = mechanism(1.0, 3).unwrap();
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(2);
        let counts = simulate(&m, &[0.5, 0.5, 0.0], &[0.6, 0.6, 0.6], 5_000, &mut rng);
        let stats = segment_stats(&m, &names(3), &counts, DisparityTest::default()).unwrap();
        // The empty segment's share is noise around 0: no rate is made of it (a chance of a few
        // percent that noise passes two standard errors is allowed by the seed-fixed run).
        assert!(stats.segments[2].thumbs_up_rate.is_none());
        assert!(stats.segments[0].thumbs_up_rate.is_some());
        assert!(segment_stats(&m, &names(2), &counts, DisparityTest::default()).is_err());
        assert!(segment_stats(&m, &names(3), &counts[..4], DisparityTest::default()).is_err());
    }
}
