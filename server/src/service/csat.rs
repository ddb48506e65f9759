//! Star ratings (CSAT) per version: 5-ary randomized-response reports, de-biased into the
//! distribution of ratings and the mean rating with its 95 % interval.

use feedloop_core::protocol::StarsStats;
use feedloop_core::secure_metrics::{combined_stars, SecureMetric};
use feedloop_privacy::categorical_response::CategoricalResponse;

use super::{now_ms, App};
use crate::auth::Claims;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// z for a two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

impl App {
    fn stars_mechanism(&self) -> Result<CategoricalResponse> {
        CategoricalResponse::new(self.config().rr_epsilon, 5)
            .map_err(|e| Error::internal(format!("rr epsilon: {e}")))
    }

    /// Stores one randomized rating (one per client per version).
    pub async fn report_stars(&self, claims: &Claims, version: i64, stars: u8) -> Result<()> {
        if !(1..=5).contains(&stars) {
            return Err(Error::bad_request(
                "invalid_stars",
                format!("stars must be 1 to 5, got {stars}"),
            ));
        }
        self.version(version).await?;
        if !self
            .store()
            .insert_stars(version, &claims.client_id, stars, now_ms())
            .await?
        {
            return Err(Error::conflict(
                "duplicate_report",
                format!("this client already reported a rating on model version {version}"),
            ));
        }
        Metrics::inc(&self.metrics().star_reports);
        Ok(())
    }

    /// The de-biased ratings of a version (randomized ratings and sealed batches together);
    /// `None` without reports.
    pub async fn stars(&self, version: i64) -> Result<Option<StarsStats>> {
        let reported = self.store().star_counts(version).await?;
        let rr_reports: u64 = reported.iter().sum();
        let sealed = self
            .sealed_stats(SecureMetric::Stars, version)
            .await?
            .filter(|s| s.reports > 0);
        let internal = |e: feedloop_privacy::PrivacyError| Error::internal(e.to_string());
        let randomized = if rr_reports == 0 {
            None
        } else {
            let estimate = self
                .stars_mechanism()?
                .estimate(&reported)
                .map_err(internal)?;
            let (_, variance) = estimate
                .linear(&[1.0, 2.0, 3.0, 4.0, 5.0])
                .map_err(internal)?;
            Some((estimate.proportions, variance))
        };
        let Some((distribution, mean, variance)) = combined_stars(
            randomized
                .as_ref()
                .map(|(d, var)| (rr_reports, d.as_slice(), *var)),
            sealed.as_ref(),
        ) else {
            return Ok(None);
        };
        let std_error = variance.sqrt();
        Ok(Some(StarsStats {
            reports: rr_reports + sealed.map_or(0, |s| s.reports),
            reported: reported.to_vec(),
            distribution,
            mean,
            std_error,
            ci95: [mean - Z95 * std_error, mean + Z95 * std_error],
        }))
    }
}
