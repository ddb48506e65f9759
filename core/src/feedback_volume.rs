//! The server side of the feedback-volume metric (`crate::metric_reports`, "kinds" reports):
//! each device drew one of the [`KINDS`](crate::feedback::KINDS) uniformly and sent whether its user gave that
//! kind under a version, as an ε-randomized bit. Per kind the bits of the devices that drew it
//! de-bias to the share of devices that gave it ([`kind_shares`]); times the devices reporting
//! on a day, to an estimated number of devices per kind and day ([`daily_volume`]).
//!
//! The draw is independent of the data, so the devices that drew a kind are a uniform random
//! sample of all reporting devices: the share among them is unbiased for the share among all,
//! and [`RandomizedResponse::estimate_proportion`]'s variance (of the observed bits) covers both
//! the sampling and the randomization.

use feedloop_privacy::randomized_response::RandomizedResponse;

use crate::error::{Error, Result};
use crate::feedback::KINDS;
use crate::protocol::{KindShare, KindVolume};

/// z for a two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

/// Reports of one kind: how many drew it and how many of their randomized bits were 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindCounts {
    pub kind: String,
    pub ones: u64,
    pub reports: u64,
}

/// The de-biased share of devices that gave each kind, in [`KINDS`](crate::feedback::KINDS) order; kinds
/// without reports are left out. Unknown kinds are an error (the server stores known ones only).
pub fn kind_shares(rr: &RandomizedResponse, counts: &[KindCounts]) -> Result<Vec<KindShare>> {
    let mut out = Vec::new();
    for kind in KINDS {
        let (ones, reports) = counts
            .iter()
            .filter(|c| c.kind == kind)
            .fold((0, 0), |(o, n), c| (o + c.ones, n + c.reports));
        if reports == 0 {
            continue;
        }
        let e = rr
            .estimate_proportion(ones, reports)
            .map_err(|e| Error::InvalidInput(format!("privacy: {e}")))?;
        out.push(KindShare {
            kind: kind.to_string(),
            reports,
            reported_ones: ones,
            share: e.proportion,
            ci95: [
                e.proportion - Z95 * e.std_error,
                e.proportion + Z95 * e.std_error,
            ],
        });
    }
    if let Some(c) = counts.iter().find(|c| !KINDS.contains(&c.kind.as_str())) {
        return Err(Error::InvalidInput(format!(
            "unknown feedback kind {:?}",
            c.kind
        )));
    }
    Ok(out)
}

/// Per day (days since the Unix epoch, UTC) the kinds reports received: the estimated number
/// of devices that gave each kind, `share × reports that day` (each device reports once per
/// version, so a device that used two versions that day counts twice), oldest day first.
pub fn daily_volume(
    rr: &RandomizedResponse,
    by_day: &[(i64, Vec<KindCounts>)],
) -> Result<Vec<KindVolume>> {
    let mut out = Vec::new();
    for (day, counts) in by_day {
        let devices: u64 = counts.iter().map(|c| c.reports).sum();
        for share in kind_shares(rr, counts)? {
            let n = devices as f64;
            out.push(KindVolume {
                day: utc_date(*day),
                kind: share.kind,
                reports: share.reports,
                devices: share.share * n,
                ci95: [share.ci95[0] * n, share.ci95[1] * n],
            });
        }
    }
    Ok(out)
}

/// `YYYY-MM-DD` of a day counted from 1970-01-01 (the proleptic Gregorian calendar: Howard
/// Hinnant's `civil_from_days`).
pub fn utc_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(kind: &str, ones: u64, reports: u64) -> KindCounts {
        KindCounts {
            kind: kind.into(),
            ones,
            reports,
        }
    }

    #[test]
    fn dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        assert_eq!(utc_date(11_016), "2000-02-29");
        assert_eq!(utc_date(20_789), "2026-12-02");
        assert_eq!(utc_date(1_800_000_000_000 / 86_400_000), "2027-01-15");
    }

    #[test]
    fn the_estimates_recover_the_true_shares_of_simulated_devices() {
        use chacha20::rand_core::SeedableRng;
        // 20,000 devices; kind i was given by a share (i+1)/12 of them. Each draws a kind and
        // sends its randomized bit, as a device does.
        let rr = RandomizedResponse::new(1.0).unwrap();
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(9);
        let mut tally = vec![(0u64, 0u64); 10];
        for device in 0..20_000u64 {
            let i = feedloop_privacy::sampler::uniform_below(&mut rng, 10) as usize;
            let gave = (device % 12) < i as u64 + 1;
            let bit = rr.respond(gave, &mut rng);
            tally[i].0 += u64::from(bit);
            tally[i].1 += 1;
        }
        let rows: Vec<_> = KINDS
            .iter()
            .zip(&tally)
            .map(|(k, (o, n))| counts(k, *o, *n))
            .collect();
        let shares = kind_shares(&rr, &rows).unwrap();
        assert_eq!(shares.len(), 10);
        let mut covered = 0;
        for (i, s) in shares.iter().enumerate() {
            let truth = (i + 1) as f64 / 12.0;
            assert_eq!(s.kind, KINDS[i]);
            // Each share from ~2,000 reports: se ≈ 0.024; 5 se.
            assert!((s.share - truth).abs() < 0.12, "{s:?} vs {truth}");
            covered += usize::from(s.ci95[0] <= truth && truth <= s.ci95[1]);
        }
        assert!(covered >= 8, "95 % intervals covered {covered} of 10");
        let volume = daily_volume(&rr, &[(20_789, rows)]).unwrap();
        let thumbs = &volume[0];
        assert_eq!(
            (thumbs.day.as_str(), thumbs.kind.as_str()),
            ("2026-12-02", "thumbs")
        );
        assert!((thumbs.devices - 20_000.0 / 12.0).abs() < 0.12 * 20_000.0);
        assert!((thumbs.devices - shares[0].share * 20_000.0).abs() < 1e-6);
    }

    #[test]
    fn unknown_kinds_and_empty_kinds() {
        let rr = RandomizedResponse::new(1.0).unwrap();
        assert!(kind_shares(&rr, &[counts("telepathy", 1, 2)]).is_err());
        let shares = kind_shares(&rr, &[counts("copy", 3, 4)]).unwrap();
        assert_eq!(shares.len(), 1);
        assert_eq!(shares[0].kind, "copy");
    }
}
