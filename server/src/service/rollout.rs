//! Staged rollout: a newly published version goes to a canary fraction of devices
//! (`config.drift.canary_fraction`); every thumbs report on the canary or its control runs the
//! sequential test (`feedloop_core::rollout`), which rolls the canary back by itself on a
//! significant regression, or promotes it (at once or after an admin approves). Every decision
//! goes to the audit log with its evidence, the logs, `/metrics` and the webhook.

use feedloop_core::protocol::{
    Rollout, RolloutEvidence, RolloutPoint, RolloutStatus, RolloutVerdict, UnixMillis,
};
use feedloop_core::rollout::{in_canary, ArmReports};
use serde_json::json;

use super::drift::regression_reason;
use super::{now_ms, App};
use crate::auth::Claims;
use crate::config::Promotion;
use crate::db::{BitReports, RolloutRow, Store};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// Who the audit log names for the server's own decisions.
pub const AUTO: &str = "auto-rollout";

/// How many points a rollout's history has at most.
const HISTORY_POINTS: i64 = 48;

impl App {
    /// The version a client is served: the running canary's when the client is in its arm,
    /// otherwise the current one.
    pub async fn served_version(&self, claims: Option<&Claims>) -> Result<i64> {
        let current = self.store().current_version().await?;
        let (Some(claims), Some(rollout)) = (claims, self.store().running_rollout().await?) else {
            return Ok(current);
        };
        let canary = in_canary(
            &claims.client_id,
            &rollout.version.to_string(),
            rollout.fraction,
        );
        Ok(if canary { rollout.version } else { current })
    }

    /// Runs the sequential test when `version` is the running canary or its control, and acts
    /// on its verdict. Returns whether a rollout was involved.
    pub(super) async fn evaluate_rollout(&self, version: i64) -> Result<bool> {
        let Some(rollout) = self.store().running_rollout().await? else {
            return Ok(false);
        };
        if version != rollout.version && version != rollout.control_version {
            return Ok(false);
        }
        let evidence = self
            .evidence(rollout.control_version, rollout.version)
            .await?;
        let status = rollout.status()?;
        match evidence.verdict {
            RolloutVerdict::Continue => {}
            RolloutVerdict::Regression => {
                let reason = regression_reason(&evidence);
                self.end_rollout(
                    &rollout,
                    RolloutStatus::RolledBack,
                    AUTO,
                    &reason,
                    &evidence,
                )
                .await?;
            }
            RolloutVerdict::NonInferior | RolloutVerdict::PlannedReached => {
                let reason = pass_reason(&evidence);
                match self.config().drift.promotion {
                    Promotion::Auto => {
                        self.end_rollout(
                            &rollout,
                            RolloutStatus::Promoted,
                            AUTO,
                            &reason,
                            &evidence,
                        )
                        .await?;
                    }
                    // Still a canary (a later regression still rolls it back) until approved.
                    Promotion::Approve if status == RolloutStatus::Canary => {
                        self.await_approval(&rollout, &reason, &evidence).await?;
                    }
                    Promotion::Approve => {}
                }
            }
        }
        Ok(true)
    }

    async fn await_approval(
        &self,
        rollout: &RolloutRow,
        reason: &str,
        evidence: &RolloutEvidence,
    ) -> Result<()> {
        let _guard = self.lifecycle().lock().await;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let evidence_json = serde_json::to_string(evidence).expect("evidence serializes");
        // The row stays running; decided_* say what the test concluded, for the admin.
        if !Store::decide_rollout(
            &mut tx,
            rollout.version,
            RolloutStatus::AwaitingApproval,
            AUTO,
            reason,
            Some(&evidence_json),
            now,
        )
        .await?
        {
            return Ok(());
        }
        Store::audit(
            &mut tx,
            AUTO,
            "rollout.awaiting_approval",
            &json!({ "version": rollout.version, "reason": reason, "evidence": evidence }),
            now,
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version = rollout.version, %reason, "canary passed; awaiting an admin's approval");
        self.notify(json!({ "event": "feedloop.rollout.awaiting_approval",
            "version": rollout.version.to_string(), "reason": reason, "evidence": evidence }));
        Ok(())
    }

    /// Ends the running rollout: promoted (the canary becomes current) or rolled back (its
    /// devices return to the control version at their next sync).
    async fn end_rollout(
        &self,
        rollout: &RolloutRow,
        status: RolloutStatus,
        by: &str,
        reason: &str,
        evidence: &RolloutEvidence,
    ) -> Result<()> {
        {
            let _guard = self.lifecycle().lock().await;
            let now = now_ms();
            let mut tx = self.store().begin().await?;
            let evidence_json = serde_json::to_string(evidence).expect("evidence serializes");
            if !Store::decide_rollout(
                &mut tx,
                rollout.version,
                status,
                by,
                reason,
                Some(&evidence_json),
                now,
            )
            .await?
            {
                // Another request or replica decided first.
                return Ok(());
            }
            match status {
                RolloutStatus::Promoted => {
                    Store::set_current_version(&mut tx, rollout.version).await?
                }
                // The optimizer's state includes the withdrawn step (as an admin rollback).
                _ => Store::clear_optimizer_state(&mut tx).await?,
            }
            let action = match status {
                RolloutStatus::Promoted => "rollout.promote",
                _ => "rollout.rollback",
            };
            Store::audit(
                &mut tx,
                by,
                action,
                &json!({ "version": rollout.version, "controlVersion": rollout.control_version,
                    "reason": reason, "evidence": evidence }),
                now,
            )
            .await?;
            tx.commit().await?;
        }
        match status {
            RolloutStatus::Promoted => {
                Metrics::inc(&self.metrics().canaries_promoted);
                tracing::info!(version = rollout.version, by, %reason, "canary promoted");
            }
            _ => {
                Metrics::inc(&self.metrics().canaries_rolled_back);
                if by == AUTO
                    && self
                        .store()
                        .flag_version(rollout.version, reason, now_ms())
                        .await?
                {
                    Metrics::inc(&self.metrics().versions_flagged);
                }
                tracing::warn!(version = rollout.version, control = rollout.control_version, by,
                    %reason, "canary rolled back");
            }
        }
        self.notify(
            json!({ "event": format!("feedloop.rollout.{}", status.as_str()),
            "version": rollout.version.to_string(),
            "controlVersion": rollout.control_version.to_string(),
            "decidedBy": by, "reason": reason, "evidence": evidence }),
        );
        self.reopen_auto_round().await;
        Ok(())
    }

    async fn running_or_conflict(&self) -> Result<RolloutRow> {
        self.store()
            .running_rollout()
            .await?
            .ok_or_else(|| Error::conflict("no_rollout", "no rollout is running"))
    }

    /// An admin promotes the running canary (with or without the test's verdict).
    pub async fn promote_canary(&self, admin_fp: &str) -> Result<Rollout> {
        let rollout = self.running_or_conflict().await?;
        let evidence = self
            .evidence(rollout.control_version, rollout.version)
            .await?;
        let reason = format!("promoted by an admin ({})", pass_reason(&evidence));
        self.end_rollout(
            &rollout,
            RolloutStatus::Promoted,
            admin_fp,
            &reason,
            &evidence,
        )
        .await?;
        self.rollout(rollout.version).await
    }

    /// An admin withdraws the running canary.
    pub async fn abort_canary(&self, admin_fp: &str) -> Result<Rollout> {
        let rollout = self.running_or_conflict().await?;
        let evidence = self
            .evidence(rollout.control_version, rollout.version)
            .await?;
        self.end_rollout(
            &rollout,
            RolloutStatus::RolledBack,
            admin_fp,
            "rolled back by an admin",
            &evidence,
        )
        .await?;
        self.rollout(rollout.version).await
    }

    async fn rollout(&self, version: i64) -> Result<Rollout> {
        self.rollouts()
            .await?
            .into_iter()
            .find(|r| r.version == version.to_string())
            .ok_or_else(|| Error::internal("the rollout vanished"))
    }

    /// Every rollout, oldest first; a running one with the test as of now.
    pub async fn rollouts(&self) -> Result<Vec<Rollout>> {
        let mut out = vec![];
        for row in self.store().rollouts().await? {
            let status = row.status()?;
            let evidence = if status.running() {
                Some(self.evidence(row.control_version, row.version).await?)
            } else {
                match row.evidence.as_deref() {
                    None | Some("null") => None,
                    Some(json) => Some(
                        serde_json::from_str(json)
                            .map_err(|e| Error::internal(format!("stored evidence: {e}")))?,
                    ),
                }
            };
            let history = self.history(&row, status).await?;
            out.push(Rollout {
                version: row.version.to_string(),
                control_version: row.control_version.to_string(),
                fraction: row.fraction,
                status,
                started_at: UnixMillis::new(row.started_at),
                decided_at: row.decided_at.map(UnixMillis::new),
                decided_by: row.decided_by,
                history,
                reason: row.reason,
                evidence,
            });
        }
        Ok(out)
    }

    /// The sequential test replayed on the reports received by evenly spaced moments from the
    /// rollout's start to its decision (or now): the same test the server decided with, so the
    /// last point of a running rollout is its current evidence.
    async fn history(&self, row: &RolloutRow, status: RolloutStatus) -> Result<Vec<RolloutPoint>> {
        let start = row.started_at;
        // A canary awaiting approval has a decided_at (the test's) but is still running.
        let end = match row.decided_at {
            Some(at) if !status.running() => at,
            _ => now_ms(),
        }
        .max(start + 1);
        let width = (end - start + HISTORY_POINTS - 1) / HISTORY_POINTS;
        let buckets = (end - start + width - 1) / width;
        let window = (start, end, width);
        let increments = |counts: Vec<(i64, u64, u64)>| {
            let mut by_bucket = vec![ArmReports::default(); buckets as usize + 1];
            for (b, ones, total) in counts {
                // Bucket -1 (before the start) goes to slot 0; a report at `end` exactly lands
                // one past the last bucket and is counted in it.
                let slot = ((b + 1).min(buckets)) as usize;
                by_bucket[slot].ones += ones;
                by_bucket[slot].total += total;
            }
            by_bucket
        };
        let store = self.store();
        let control = increments(
            store
                .bit_counts_over_time(BitReports::Thumbs, row.control_version, window)
                .await?,
        );
        let canary = increments(
            store
                .bit_counts_over_time(BitReports::Thumbs, row.version, window)
                .await?,
        );
        let (test, rr) = (self.sequential_test()?, self.rr()?);
        let (control_name, canary_name) =
            (row.control_version.to_string(), row.version.to_string());
        let (mut so_far_control, mut so_far_canary) = (control[0], canary[0]);
        let mut points = Vec::with_capacity(buckets as usize);
        for b in 1..=buckets as usize {
            for (sum, add) in [
                (&mut so_far_control, control[b]),
                (&mut so_far_canary, canary[b]),
            ] {
                sum.ones += add.ones;
                sum.total += add.total;
            }
            let e = test
                .evaluate(
                    &rr,
                    (&control_name, so_far_control),
                    (&canary_name, so_far_canary),
                )
                .map_err(|e| Error::internal(e.to_string()))?;
            points.push(RolloutPoint {
                at: UnixMillis::new((start + b as i64 * width).min(end)),
                canary_reports: e.canary.reports,
                control_reports: e.control.reports,
                canary_rate: e.canary.thumbs_up_rate,
                control_rate: e.control.thumbs_up_rate,
                difference: e.difference,
            });
        }
        Ok(points)
    }
}

/// A passing verdict in words.
fn pass_reason(e: &RolloutEvidence) -> String {
    let [lo, hi] = e.difference.unwrap_or([f64::NAN; 2]);
    match e.verdict {
        RolloutVerdict::NonInferior => format!(
            "not worse than version {} by the margin {}: the difference lies in [{lo:.4}, {hi:.4}] \
             ({} and {} reports)",
            e.control.version, e.margin, e.canary.reports, e.control.reports
        ),
        RolloutVerdict::PlannedReached => format!(
            "no significant regression after the planned {} reports: the difference lies in \
             [{lo:.4}, {hi:.4}] ({} and {} reports)",
            e.planned_reports, e.canary.reports, e.control.reports
        ),
        _ => format!(
            "the difference lies in [{lo:.4}, {hi:.4}] ({} and {} reports)",
            e.canary.reports, e.control.reports
        ),
    }
}
