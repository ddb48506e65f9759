//! Rounds: opening, changing, closing at a deadline or target, and storing submissions.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_core::protocol::{Aggregation, NewRound, RoundChange, RoundStatus};
use feedloop_privacy::accounting::zcdp_to_approx_dp;
use feedloop_privacy::{decode_update, ExpectedRound, PrivatizerConfig};
use serde_json::json;

use super::{now_ms, App};
use crate::auth::Claims;
use crate::db::{is_unique_violation, RoundRow, Store};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::onnx::sha256_hex;

/// Outcome of an accepted submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub round_id: i64,
    pub received: i64,
    /// The round closed because it reached its target count.
    pub closed: Option<RoundRow>,
}

fn invalid(message: impl Into<String>) -> Error {
    Error::bad_request("invalid_round_config", message)
}

/// `now + seconds` in unix ms, or an error when that is not a representable time.
fn deadline_in(now: i64, seconds: f64) -> Result<i64> {
    let ms = seconds * 1000.0;
    // f64 → i64 saturates; compare before converting so the sum cannot overflow.
    if ms >= (i64::MAX - now) as f64 {
        return Err(invalid(format!("durationSeconds {seconds} is too large")));
    }
    Ok(now + ms as i64)
}

impl App {
    pub async fn round(&self, round_id: i64) -> Result<RoundRow> {
        self.store()
            .round(round_id)
            .await?
            .ok_or_else(|| Error::not_found("round_not_found", format!("no round {round_id}")))
    }

    /// The open round (closing it first if its deadline passed).
    pub async fn current_round(&self) -> Result<RoundRow> {
        if let Some(r) = self.store().open_round().await? {
            if r.deadline.is_some_and(|d| d <= now_ms()) {
                self.close_round(r.round_id, "deadline", None).await?;
            } else {
                return Ok(r);
            }
        }
        Err(Error::not_found("no_open_round", "no round is open"))
    }

    /// Opens a round on the current version.
    pub async fn open_round(&self, admin_fp: &str, req: NewRound) -> Result<RoundRow> {
        let cfg = PrivatizerConfig::new(req.clip_norm, req.granularity, req.noise_stddev)
            .map_err(|e| invalid(e.to_string()))?;
        let dimension = self.dimension();
        if let Some(d) = req.dimension {
            if d != dimension as i64 {
                return Err(invalid(format!(
                    "dimension {d} differs from the model's {dimension} head parameters"
                )));
            }
        }
        cfg.prerounding_radius(dimension)
            .map_err(|e| invalid(e.to_string()))?;
        if req.min_cohort < 1 {
            return Err(invalid("minCohort must be at least 1"));
        }
        if req.target_count.is_some_and(|t| t < req.min_cohort) {
            return Err(invalid("targetCount must be at least minCohort"));
        }
        let now = now_ms();
        let deadline = match (req.deadline, req.duration_seconds) {
            (Some(_), Some(_)) => {
                return Err(invalid("give deadline or durationSeconds, not both"))
            }
            (Some(d), None) => Some(d.as_millis()),
            (None, Some(s)) if s.is_finite() && s > 0.0 => Some(deadline_in(now, s)?),
            (None, Some(_)) => return Err(invalid("durationSeconds must be positive")),
            (None, None) => None,
        };
        if deadline.is_some_and(|d| d <= now) {
            return Err(invalid("the deadline is in the past"));
        }
        let secure = req.aggregation == Aggregation::Secure;
        if secure {
            self.helper_peer()?;
        }

        let _guard = self.lifecycle().lock().await;
        if let Some(open) = self.store().open_round().await? {
            return Err(Error::conflict(
                "round_already_open",
                format!("round {} is still open; close it first", open.round_id),
            ));
        }
        // Updates during a canary would be computed against two versions; the next round opens
        // when the rollout is decided.
        if let Some(r) = self.store().running_rollout().await? {
            return Err(Error::conflict(
                "rollout_in_progress",
                format!(
                    "version {} is being rolled out to {:.0} % of devices; rounds resume when \
                     it is promoted or rolled back",
                    r.version,
                    100.0 * r.fraction
                ),
            ));
        }
        let model_version = self.store().current_version().await?;
        let mut tx = self.store().begin().await?;
        // A write first (see db.rs).
        Store::audit(
            &mut tx,
            admin_fp,
            "round.open",
            &json!({ "request": {
                "clipNorm": req.clip_norm, "granularity": req.granularity,
                "noiseStddev": req.noise_stddev, "minCohort": req.min_cohort,
                "targetCount": req.target_count, "deadline": deadline,
                "aggregation": req.aggregation.as_str(),
            }, "modelVersion": model_version }),
            now,
        )
        .await?;
        let round_id = Store::next_round_id(&mut tx).await?;
        // A secure round takes the helper's terms: its σ on the sum and its minimum batch (at
        // least what was asked), which bound every device's ε and the round's minimum cohort.
        let (noise_stddev, min_cohort, secure_terms) = match secure {
            false => (req.noise_stddev, req.min_cohort, None),
            true => {
                let (terms, stored) = self
                    .open_at_helper(
                        round_id,
                        dimension,
                        req.clip_norm,
                        req.granularity,
                        req.noise_stddev,
                        req.min_cohort,
                    )
                    .await?;
                if req.target_count.is_some_and(|t| t < terms.min_reports) {
                    return Err(invalid(format!(
                        "targetCount must be at least the helper's minimum batch of {}",
                        terms.min_reports
                    )));
                }
                let stored = serde_json::to_string(&stored).expect("terms serialize");
                (terms.noise_stddev, terms.min_reports, Some(stored))
            }
        };
        let cfg = PrivatizerConfig::new(req.clip_norm, req.granularity, noise_stddev)
            .map_err(|e| invalid(e.to_string()))?;
        let rho = cfg.rho();
        let epsilon =
            zcdp_to_approx_dp(rho, self.config().delta).map_err(|e| invalid(e.to_string()))?;
        let round = RoundRow {
            round_id,
            model_version,
            dimension: dimension as i64,
            clip_norm: req.clip_norm,
            granularity: req.granularity,
            noise_stddev,
            min_cohort,
            target_count: req.target_count,
            deadline,
            status: RoundStatus::Open,
            received: 0,
            rho,
            epsilon,
            delta: self.config().delta,
            created_at: now,
            closed_at: None,
            close_reason: None,
            cohort_size: None,
            published_version: None,
            aggregation: req.aggregation.as_str().into(),
            secure_terms,
        };
        match Store::insert_round(&mut tx, &round).await {
            // Another server process opened one meanwhile (the database allows one open round).
            Err(e) if is_unique_violation(&e) => {
                return Err(Error::conflict(
                    "round_already_open",
                    "another round was opened meanwhile; close it first",
                ))
            }
            other => other?,
        }
        tx.commit().await?;
        tracing::info!(
            round = round.round_id,
            model_version,
            epsilon,
            "round opened"
        );
        Ok(round)
    }

    /// Changes the cohort/deadline settings of an open round.
    pub async fn change_round(
        &self,
        admin_fp: &str,
        round_id: i64,
        change: RoundChange,
    ) -> Result<RoundRow> {
        let guard = self.lifecycle().lock().await;
        let before = self.round(round_id).await?;
        if before.status != RoundStatus::Open {
            return Err(Error::conflict(
                "round_closed",
                format!("round {round_id} is {}", before.status),
            ));
        }
        let min_cohort = change.min_cohort.unwrap_or(before.min_cohort);
        let target_count = change.target_count.or(before.target_count);
        if change.deadline.is_some_and(|d| d.as_millis() <= now_ms()) {
            return Err(invalid("the deadline is in the past"));
        }
        let deadline = change.deadline.map(|d| d.as_millis()).or(before.deadline);
        if min_cohort < 1 || target_count.is_some_and(|t| t < min_cohort) {
            return Err(invalid("need minCohort >= 1 and targetCount >= minCohort"));
        }
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        Store::update_round_settings(&mut tx, round_id, min_cohort, target_count, deadline).await?;
        Store::audit(
            &mut tx,
            admin_fp,
            "round.update",
            &json!({ "roundId": round_id,
                "before": { "minCohort": before.min_cohort, "targetCount": before.target_count, "deadline": before.deadline },
                "after": { "minCohort": min_cohort, "targetCount": target_count, "deadline": deadline } }),
            now,
        )
        .await?;
        tx.commit().await?;
        drop(guard);
        let after = self.round(round_id).await?;
        if target_count.is_some_and(|t| after.received >= t) {
            return self.close_round(round_id, "target_count", None).await;
        }
        Ok(after)
    }

    /// Validates and durably stores one update; acknowledges only after commit.
    pub async fn submit_update(
        &self,
        claims: &Claims,
        round_id: i64,
        model_version: Option<&str>,
        payload: &[u8],
    ) -> Result<Accepted> {
        let result = self
            .submit_inner(claims, round_id, model_version, payload)
            .await;
        match &result {
            Ok(_) => Metrics::inc(&self.metrics().updates_accepted),
            Err(e) => self.metrics().reject(e.code()),
        }
        let (accepted, target_count) = result?;
        // Closing at the target count happens after the update is committed and acknowledged
        // in the log; a failure to close leaves the round open (closed later by admin/deadline).
        // (The target read before the commit may be stale: confirm it on the round as stored.)
        if target_count.is_some_and(|t| accepted.received >= t)
            && self.reached_target(round_id).await
        {
            match self.close_round(round_id, "target_count", None).await {
                Ok(closed) if closed.status != RoundStatus::Open => {
                    return Ok(Accepted {
                        closed: Some(closed),
                        ..accepted
                    })
                }
                Ok(_) => {}
                Err(e) => tracing::error!(round = round_id, error = %e, "closing at target failed"),
            }
        }
        Ok(accepted)
    }

    async fn reached_target(&self, round_id: i64) -> bool {
        self.round(round_id).await.is_ok_and(|r| {
            r.status == RoundStatus::Open && r.target_count.is_some_and(|t| r.received >= t)
        })
    }

    async fn submit_inner(
        &self,
        claims: &Claims,
        round_id: i64,
        model_version: Option<&str>,
        payload: &[u8],
    ) -> Result<(Accepted, Option<i64>)> {
        let round = self.round(round_id).await?;
        if round.status != RoundStatus::Open {
            return Err(Error::conflict(
                "round_closed",
                format!(
                    "round {round_id} is {} and takes no more updates",
                    round.status
                ),
            ));
        }
        if round.deadline.is_some_and(|d| d <= now_ms()) {
            // Close it now; the late update is refused either way.
            if let Err(e) = self.close_round(round_id, "deadline", None).await {
                tracing::error!(round = round_id, error = %e, "closing past deadline failed");
            }
            return Err(Error::conflict(
                "round_closed",
                format!("round {round_id} passed its deadline"),
            ));
        }
        let Some(model_version) = model_version else {
            return Err(Error::bad_request(
                "missing_model_version",
                "send the model version the update was computed against in X-Feedloop-Model-Version",
            ));
        };
        if model_version != round.model_version.to_string() {
            return Err(Error::conflict(
                "stale_model_version",
                format!(
                    "the update was computed against model version {model_version}, but round {round_id} \
                     aggregates updates to version {}; fetch GET /v1/models/current, retrain and resubmit",
                    round.model_version
                ),
            ));
        }
        let digest = sha256_hex(payload);
        let stored = match round.aggregation() {
            Aggregation::Local => {
                let cfg =
                    PrivatizerConfig::new(round.clip_norm, round.granularity, round.noise_stddev)
                        .map_err(|e| Error::internal(format!("stored round config: {e}")))?;
                decode_update(
                    payload,
                    &ExpectedRound {
                        config: cfg,
                        dimension: round.dimension as usize,
                    },
                )
                .map_err(|e| Error::unprocessable("invalid_update", e.to_string()))?;
                STANDARD.encode(payload)
            }
            // Refuse what the round already holds before involving the helper, then verify the
            // report with it; the leader stores only its output share.
            Aggregation::Secure => {
                let (client_held, payload_held) = self
                    .store()
                    .update_held(round_id, &claims.client_id, &digest)
                    .await?;
                if client_held {
                    return Err(super::ingest::duplicate(round_id));
                }
                if payload_held {
                    return Err(super::ingest::replayed());
                }
                self.verify_report(&round, &claims.client_id, payload)
                    .await?
            }
        };
        let received = self
            .ingest()
            .update(round_id, claims.client_id.clone(), stored, digest, now_ms())
            .await?;
        tracing::debug!(round = round_id, received, "update stored");
        Ok((
            Accepted {
                round_id,
                received,
                closed: None,
            },
            round.target_count,
        ))
    }

    /// Closes a round: below the minimum cohort nothing is published; otherwise a new version is
    /// published ([`super::publish`]).
    pub async fn close_round(
        &self,
        round_id: i64,
        reason: &str,
        admin_fp: Option<&str>,
    ) -> Result<RoundRow> {
        let round = self.close_round_locked(round_id, reason, admin_fp).await?;
        self.reopen_auto_round().await;
        Ok(round)
    }

    /// With an automatic round configured, the next one opens at once (not at the next poll).
    pub(super) async fn reopen_auto_round(&self) {
        if let Err(e) = self.ensure_auto_round().await {
            tracing::error!(error = %e, "opening the automatic round failed");
        }
    }

    /// With `config.auto_round`: opens a round on the current version when none is open.
    pub async fn ensure_auto_round(&self) -> Result<Option<RoundRow>> {
        let Some(template) = self.config().auto_round.clone() else {
            return Ok(None);
        };
        if self.store().open_round().await?.is_some() {
            return Ok(None);
        }
        match self.open_round("auto-round", template).await {
            Ok(round) => Ok(Some(round)),
            // Another process (or request) opened one meanwhile.
            Err(Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Closes every open round whose deadline passed (the background task).
    pub async fn close_expired(&self) -> Result<()> {
        for round_id in self.store().expired_rounds(now_ms()).await? {
            self.close_round(round_id, "deadline", None).await?;
        }
        Ok(())
    }
}
