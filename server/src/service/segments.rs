//! The thumbs-up rate per declared segment: segment reports (one randomized (segment, thumbs)
//! cell per client per version), de-biased with the disparity flag by
//! `feedloop_core::segments`.

use feedloop_core::protocol::SegmentStats;
use feedloop_core::segments::{mechanism, segment_stats, DisparityTest};

use super::{now_ms, App};
use crate::auth::Claims;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

impl App {
    /// Stores one segment report (one per client per version), made over the declared list.
    pub async fn report_segment(
        &self,
        claims: &Claims,
        version: i64,
        segments: u32,
        cell: u32,
    ) -> Result<()> {
        let declared = self.config().segments.len();
        if declared == 0 {
            return Err(Error::bad_request(
                "no_segments",
                "this server declares no segments",
            ));
        }
        if segments as usize != declared {
            return Err(Error::bad_request(
                "invalid_segments",
                format!("the report is over {segments} segments; this server declares {declared}"),
            ));
        }
        if cell >= 2 * segments {
            return Err(Error::bad_request(
                "invalid_cell",
                format!("cell {cell} is not below 2 × {segments}"),
            ));
        }
        self.version(version).await?;
        if !self
            .store()
            .insert_segment_report(version, &claims.client_id, segments, cell, now_ms())
            .await?
        {
            return Err(Error::conflict(
                "duplicate_report",
                format!("this client already sent a segment report on model version {version}"),
            ));
        }
        Metrics::inc(&self.metrics().segment_reports);
        Ok(())
    }

    /// A version's thumbs-up rate per declared segment and the largest disparity (`None`
    /// without segments or reports).
    pub async fn segments(&self, version: i64) -> Result<Option<SegmentStats>> {
        let names = &self.config().segments;
        if names.is_empty() {
            return Ok(None);
        }
        let counts = self
            .store()
            .segment_counts(version, names.len() as u32)
            .await?;
        if counts.iter().all(|&c| c == 0) {
            return Ok(None);
        }
        let internal = |e: feedloop_core::Error| Error::internal(e.to_string());
        let m = mechanism(self.config().rr_epsilon, names.len()).map_err(internal)?;
        let test = DisparityTest {
            margin: self.config().disparity_margin,
            ..DisparityTest::default()
        };
        segment_stats(&m, names, &counts, test)
            .map(Some)
            .map_err(internal)
    }
}
