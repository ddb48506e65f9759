//! Randomized-response thumbs-up reports per version, their de-biased rates, and drift flags
//! (the sequential test of a version against its parent).

use feedloop_core::protocol::{RateStats, RolloutEvidence, RolloutVerdict};
use feedloop_core::rollout::{ArmReports, SequentialTest};
use feedloop_core::secure_metrics::{combined_rate, SecureMetric};
use feedloop_privacy::randomized_response::{ProportionEstimate, RandomizedResponse};
use serde_json::json;

use super::{now_ms, App};
use crate::auth::Claims;
use crate::db::BitReports;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// z for a two-sided 95 % normal interval.
const Z95: f64 = 1.959_963_984_540_054;

/// A de-biased thumbs-up rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateEstimate {
    pub ones: u64,
    pub total: u64,
    pub estimate: Option<ProportionEstimate>,
}

impl App {
    pub(super) fn rr(&self) -> Result<RandomizedResponse> {
        RandomizedResponse::new(self.config().rr_epsilon)
            .map_err(|e| Error::internal(format!("rr epsilon: {e}")))
    }

    /// The de-biased thumbs-up rate of a version: its randomized-response bits and its sealed
    /// reports' released batches together.
    pub async fn rate(&self, version: i64) -> Result<RateEstimate> {
        let (ones, total) = self.store().bit_counts(BitReports::Thumbs, version).await?;
        let sealed = self.sealed_bits(SecureMetric::Thumbs, version).await?;
        let estimate = combined_rate(&self.rr()?, ones, total, sealed.as_ref())
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok(RateEstimate {
            ones,
            total,
            estimate,
        })
    }

    /// Stores one bit of `table` from this client on `version` (one per client per version).
    async fn store_bit(
        &self,
        table: BitReports,
        claims: &Claims,
        version: i64,
        bit: bool,
    ) -> Result<crate::db::VersionRow> {
        let v = self.version(version).await?;
        if !self
            .store()
            .insert_bit(table, version, &claims.client_id, bit, now_ms())
            .await?
        {
            return Err(Error::conflict(
                "duplicate_report",
                format!("this client already reported on model version {version}"),
            ));
        }
        Ok(v)
    }

    /// Stores one randomized-response bit (one per client per version), then runs the drift test.
    pub async fn report(&self, claims: &Claims, version: i64, bit: bool) -> Result<()> {
        let v = self
            .store_bit(BitReports::Thumbs, claims, version, bit)
            .await?;
        Metrics::inc(&self.metrics().rr_reports);
        self.after_thumbs_report(&v).await
    }

    /// A new thumbs report on `v` (randomized or in a released sealed batch): the rollout test,
    /// or else the drift test against its parent.
    pub(super) async fn after_thumbs_report(&self, v: &crate::db::VersionRow) -> Result<()> {
        if self.evaluate_rollout(v.version).await? {
            return Ok(());
        }
        if v.flagged == 0 {
            if let Some(parent) = v.parent_version {
                self.check_drift(v.version, parent).await?;
            }
        }
        Ok(())
    }

    /// Stores one federated-evaluation bit (one per client per version).
    pub async fn report_agreement(&self, claims: &Claims, version: i64, bit: bool) -> Result<()> {
        self.store_bit(BitReports::Agreement, claims, version, bit)
            .await?;
        Metrics::inc(&self.metrics().agreement_reports);
        Ok(())
    }

    /// The de-biased agreement rate of a version (randomized bits and sealed batches together);
    /// `None` without reports.
    pub async fn agreement(&self, version: i64) -> Result<Option<RateStats>> {
        let (ones, total) = self
            .store()
            .bit_counts(BitReports::Agreement, version)
            .await?;
        let sealed = self.sealed_bits(SecureMetric::Agreement, version).await?;
        let Some(e) = combined_rate(&self.rr()?, ones, total, sealed.as_ref())
            .map_err(|e| Error::internal(e.to_string()))?
        else {
            return Ok(None);
        };
        Ok(Some(RateStats {
            reports: total + sealed.map_or(0, |s| s.reports),
            reported_ones: ones,
            rate: e.proportion,
            std_error: e.std_error,
            ci95: [
                e.proportion - Z95 * e.std_error,
                e.proportion + Z95 * e.std_error,
            ],
        }))
    }

    /// The sequential test's parameters from the configuration.
    pub(super) fn sequential_test(&self) -> Result<SequentialTest> {
        let d = &self.config().drift;
        SequentialTest::new(d.margin, d.alpha, d.planned_reports, d.min_reports)
            .map_err(|e| Error::internal(format!("drift configuration: {e}")))
    }

    /// The sequential test of `version` against `control` on their reports so far.
    pub(super) async fn evidence(&self, control: i64, version: i64) -> Result<RolloutEvidence> {
        let (ones, total) = self.store().bit_counts(BitReports::Thumbs, control).await?;
        let control_reports = ArmReports {
            sealed: self.sealed_bits(SecureMetric::Thumbs, control).await?,
            ..ArmReports::randomized(ones, total)
        };
        let (ones, total) = self.store().bit_counts(BitReports::Thumbs, version).await?;
        let version_reports = ArmReports {
            sealed: self.sealed_bits(SecureMetric::Thumbs, version).await?,
            ..ArmReports::randomized(ones, total)
        };
        self.sequential_test()?
            .evaluate(
                &self.rr()?,
                (&control.to_string(), control_reports),
                (&version.to_string(), version_reports),
            )
            .map_err(|e| Error::internal(e.to_string()))
    }

    /// Flags `version` when the always-valid sequential test (`feedloop_core::rollout`) finds it
    /// worse than `parent` by more than the margin. Valid however often it runs: after every
    /// report.
    pub async fn check_drift(&self, version: i64, parent: i64) -> Result<Option<String>> {
        let e = self.evidence(parent, version).await?;
        if e.verdict != RolloutVerdict::Regression {
            return Ok(None);
        }
        let reason = regression_reason(&e);
        if self
            .store()
            .flag_version(version, &reason, now_ms())
            .await?
        {
            Metrics::inc(&self.metrics().versions_flagged);
            tracing::warn!(version, parent, %reason, "drift: model version flagged");
            self.notify(
                json!({ "event": "feedloop.version.flagged", "version": version.to_string(),
                "parentVersion": parent.to_string(), "reason": reason, "evidence": e }),
            );
        }
        Ok(Some(reason))
    }

    /// POSTs `body` to the configured webhook, in the background.
    pub(super) fn notify(&self, body: serde_json::Value) {
        let Some(url) = self.config().drift.webhook_url.clone() else {
            return;
        };
        let http = self.http().clone();
        tokio::spawn(async move {
            match http.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => tracing::error!(status = %r.status(), "webhook refused"),
                Err(e) => tracing::error!(error = %e, "webhook failed"),
            }
        });
    }
}

/// A regression verdict in words.
pub(super) fn regression_reason(e: &RolloutEvidence) -> String {
    let rate = |a: &feedloop_core::protocol::ArmEstimate| a.thumbs_up_rate.unwrap_or(f64::NAN);
    let [lo, hi] = e.difference.unwrap_or([f64::NAN; 2]);
    format!(
        "thumbs-up rate {:.4} is below version {}'s {:.4} by more than the margin {}: the \
         difference lies in [{lo:.4}, {hi:.4}] (always-valid {:.0} % confidence sequence; {} and \
         {} reports)",
        rate(&e.canary),
        e.control.version,
        rate(&e.control),
        e.margin,
        100.0 * (1.0 - e.alpha),
        e.canary.reports,
        e.control.reports
    )
}
