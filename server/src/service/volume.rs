//! Feedback volume: "kinds" reports (one sampled kind of feedback and its ε-randomized bit per
//! client per version), de-biased per version and per day by `feedloop_core::feedback_volume`.

use feedloop_core::feedback::KINDS;
use feedloop_core::feedback_volume::{daily_volume, kind_shares};
use feedloop_core::protocol::{KindShare, KindVolume};

use super::{now_ms, App};
use crate::auth::Claims;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// How many days of feedback volume `/v1/stats` shows.
const VOLUME_DAYS: i64 = 60;

impl App {
    /// Stores one kinds report (one per client per version).
    pub async fn report_kind(
        &self,
        claims: &Claims,
        version: i64,
        kind: &str,
        bit: bool,
    ) -> Result<()> {
        if !KINDS.contains(&kind) {
            return Err(Error::bad_request(
                "invalid_kind",
                format!(
                    "unknown feedback kind {kind:?}; expected one of {}",
                    KINDS.join(", ")
                ),
            ));
        }
        self.version(version).await?;
        if !self
            .store()
            .insert_kinds_report(version, &claims.client_id, kind, bit, now_ms())
            .await?
        {
            return Err(Error::conflict(
                "duplicate_report",
                format!("this client already reported feedback kinds on model version {version}"),
            ));
        }
        Metrics::inc(&self.metrics().kinds_reports);
        Ok(())
    }

    /// The de-biased share of a version's reporting devices per kind of feedback.
    pub async fn kinds(&self, version: i64) -> Result<Vec<KindShare>> {
        let counts = self.store().kind_counts(version).await?;
        kind_shares(&self.rr()?, &counts).map_err(|e| Error::internal(e.to_string()))
    }

    /// Feedback volume per day by kind over the last [`VOLUME_DAYS`] days.
    pub async fn feedback_volume(&self) -> Result<Vec<KindVolume>> {
        let since = now_ms() / 86_400_000 - (VOLUME_DAYS - 1);
        let by_day = self.store().kind_counts_by_day(since).await?;
        daily_volume(&self.rr()?, &by_day).map_err(|e| Error::internal(e.to_string()))
    }
}
