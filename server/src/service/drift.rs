//! Randomized-response thumbs-up reports per version, their de-biased rates, and drift flags.

use feedloop_privacy::randomized_response::{ProportionEstimate, RandomizedResponse};
use serde_json::json;

use super::{now_ms, App};
use crate::auth::Claims;
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// A de-biased thumbs-up rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateEstimate {
    pub ones: u64,
    pub total: u64,
    pub estimate: Option<ProportionEstimate>,
}

impl App {
    fn rr(&self) -> Result<RandomizedResponse> {
        RandomizedResponse::new(self.config().rr_epsilon)
            .map_err(|e| Error::internal(format!("rr epsilon: {e}")))
    }

    /// The de-biased thumbs-up rate of a version.
    pub async fn rate(&self, version: i64) -> Result<RateEstimate> {
        let (ones, total) = self.store().rr_counts(version).await?;
        let estimate = if total == 0 {
            None
        } else {
            Some(
                self.rr()?
                    .estimate_proportion(ones, total)
                    .map_err(|e| Error::internal(e.to_string()))?,
            )
        };
        Ok(RateEstimate {
            ones,
            total,
            estimate,
        })
    }

    /// Stores one randomized-response bit (one per client per version), then runs the drift test.
    pub async fn report(&self, claims: &Claims, version: i64, bit: bool) -> Result<()> {
        let v = self.version(version).await?;
        if !self
            .store()
            .insert_rr(version, &claims.client_id, bit, now_ms())
            .await?
        {
            return Err(Error::conflict(
                "duplicate_report",
                format!("this client already reported on model version {version}"),
            ));
        }
        Metrics::inc(&self.metrics().rr_reports);
        if v.flagged == 0 {
            if let Some(parent) = v.parent_version {
                self.check_drift(version, parent).await?;
            }
        }
        Ok(())
    }

    /// One-sided two-proportion z-test on the de-biased rates: flag `version` when
    /// `(p_parent − p_version − margin) / √(Var_parent + Var_version) > z_critical`.
    pub async fn check_drift(&self, version: i64, parent: i64) -> Result<Option<String>> {
        let drift = &self.config().drift;
        let (new, old) = (self.rate(version).await?, self.rate(parent).await?);
        let (Some(n), Some(o)) = (new.estimate, old.estimate) else {
            return Ok(None);
        };
        if new.total < drift.min_reports || old.total < drift.min_reports {
            return Ok(None);
        }
        let drop = o.proportion - n.proportion;
        let se = (o.variance + n.variance).sqrt();
        let significant = if se > 0.0 {
            (drop - drift.margin) / se > drift.z_critical
        } else {
            drop > drift.margin
        };
        if !significant {
            return Ok(None);
        }
        let z = if se > 0.0 {
            (drop - drift.margin) / se
        } else {
            f64::INFINITY
        };
        let reason = format!(
            "thumbs-up rate {:.4} is below version {parent}'s {:.4} by {:.4} > margin {} \
             (z = {z:.2} > {}; {} and {} reports)",
            n.proportion, o.proportion, drop, drift.margin, drift.z_critical, new.total, old.total
        );
        if self
            .store()
            .flag_version(version, &reason, now_ms())
            .await?
        {
            Metrics::inc(&self.metrics().versions_flagged);
            tracing::warn!(version, parent, %reason, "drift: model version flagged");
            if let Some(url) = drift.webhook_url.clone() {
                let body = json!({ "event": "feedloop.version.flagged", "version": version.to_string(),
                    "parentVersion": parent.to_string(), "reason": reason,
                    "thumbsUpRate": n.proportion, "parentThumbsUpRate": o.proportion, "z": z });
                let http = self.http().clone();
                tokio::spawn(async move {
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => tracing::error!(status = %r.status(), "drift webhook refused"),
                        Err(e) => tracing::error!(error = %e, "drift webhook failed"),
                    }
                });
            }
        }
        Ok(Some(reason))
    }
}
