//! Publishing a version when a round closes: decode the stored updates → exact FedAvg on the
//! lattice → the server optimizer → a checked head → the ONNX file's digest → stored, all in the
//! close transaction. [`next_head`] is the pure part.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_core::protocol::Aggregation;
use feedloop_core::RewardHead;
use feedloop_privacy::{decode_update, ExpectedRound, PrivatizerConfig};
use serde_json::json;

use super::{now_ms, App, DEPLOYMENT_STATE_KEY};
use crate::db::{RoundRow, Store, VersionRow};
use crate::error::{Error, Result};
use crate::fedavg::{fedavg_lattice, OptimizerState, ServerOptimizer};
use crate::metrics::Metrics;
use crate::onnx::{rewrite_head, sha256_hex};

/// The FedAvg mean of a closed local round: `payloads` are the stored (base64) updates,
/// validated on arrival and decoded again here.
pub fn local_mean(round: &RoundRow, payloads: &[String]) -> Result<Vec<f64>> {
    let cfg = PrivatizerConfig::new(round.clip_norm, round.granularity, round.noise_stddev)
        .map_err(|e| Error::internal(format!("stored round config: {e}")))?;
    let expected = ExpectedRound {
        config: cfg,
        dimension: round.dimension as usize,
    };
    let mut lattices = Vec::with_capacity(payloads.len());
    for p in payloads {
        let bytes = STANDARD
            .decode(p)
            .map_err(|e| Error::internal(format!("stored payload: {e}")))?;
        let update = decode_update(&bytes, &expected)
            .map_err(|e| Error::internal(format!("stored payload: {e}")))?;
        lattices.push(update.into_values());
    }
    fedavg_lattice(&lattices, round.granularity)
}

/// The new global head a round's mean update makes, and the optimizer state after the step.
///
/// `base_head` is the head of the round's model version; `state` the stored optimizer state.
pub fn next_head(
    mean: &[f64],
    base_head: &[f32],
    optimizer: ServerOptimizer,
    state: Option<OptimizerState>,
    head_dimensions: usize,
) -> Result<(Vec<f32>, OptimizerState)> {
    if mean.len() != base_head.len() {
        return Err(Error::internal(format!(
            "a mean update of {} values for a head of {}",
            mean.len(),
            base_head.len()
        )));
    }
    let head64: Vec<f64> = base_head.iter().map(|&h| h as f64).collect();
    let mut state = state.unwrap_or_else(|| OptimizerState::fresh(optimizer.name(), head64.len()));
    let new_head: Vec<f32> = optimizer
        .step(&head64, mean, &mut state)
        .into_iter()
        .map(|h| h as f32)
        .collect();
    RewardHead::from_vector(head_dimensions, &new_head)
        .map_err(|e| Error::internal(format!("aggregated head is not a valid head: {e}")))?;
    Ok((new_head, state))
}

impl App {
    /// Closes `round_id` under the lifecycle lock, in one transaction: `insufficient` below the
    /// minimum cohort, otherwise a new published version.
    pub(super) async fn close_round_locked(
        &self,
        round_id: i64,
        reason: &str,
        admin_fp: Option<&str>,
    ) -> Result<RoundRow> {
        let _guard = self.lifecycle().lock().await;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        if !Store::mark_closing(&mut tx, round_id, reason, now).await? {
            drop(tx);
            let round = self.round(round_id).await?;
            return if admin_fp.is_some() {
                Err(Error::conflict(
                    "round_closed",
                    format!("round {round_id} is already {}", round.status),
                ))
            } else {
                Ok(round)
            };
        }
        if let Some(fp) = admin_fp {
            Store::audit(
                &mut tx,
                fp,
                "round.close",
                &json!({ "roundId": round_id }),
                now,
            )
            .await?;
        }
        let round = Store::round_in(&mut tx, round_id).await?;
        // Never publish on a parent that is no longer current (a rollback, or another replica,
        // moved it): the lineage stays linear, and the round says why it published nothing.
        let current = Store::current_version_in(&mut tx).await?;
        if current != round.model_version {
            Store::mark_aborted(&mut tx, round_id, "stale_parent").await?;
            tx.commit().await?;
            tracing::warn!(
                round = round_id,
                base = round.model_version,
                current,
                "round closed on a version that is no longer current; nothing published"
            );
            return self.round(round_id).await;
        }
        let payloads = Store::payloads(&mut tx, round_id).await?;
        let n = payloads.len() as i64;
        if n < round.min_cohort {
            Store::mark_insufficient(&mut tx, round_id, n).await?;
            tx.commit().await?;
            Metrics::inc(&self.metrics().rounds_insufficient);
            tracing::warn!(
                round = round_id,
                cohort = n,
                min_cohort = round.min_cohort,
                "round closed below the minimum cohort; nothing published"
            );
            return self.round(round_id).await;
        }

        // Read through the transaction: on SQLite a pooled read here would wait on this
        // transaction's own write lock.
        let base = Store::version_in(&mut tx, round.model_version)
            .await?
            .ok_or_else(|| Error::internal("the round's base version vanished"))?;
        let head: Vec<f32> = serde_json::from_str(&base.head)
            .map_err(|e| Error::internal(format!("stored head: {e}")))?;
        let optimizer = self.config().optimizer;
        let state = match Store::optimizer_state(&mut tx, DEPLOYMENT_STATE_KEY).await? {
            Some(s) => Some(
                serde_json::from_str(&s)
                    .map_err(|e| Error::internal(format!("stored optimizer state: {e}")))?,
            ),
            None => None,
        };
        let mean = match round.aggregation() {
            Aggregation::Local => local_mean(&round, &payloads)?,
            // The helper's release: a failure leaves the round open (this transaction rolls
            // back), and the next close retries with the same batch.
            Aggregation::Secure => self.secure_mean(&round, &payloads).await?,
        };
        let (new_head, state) = next_head(&mean, &head, optimizer, state, self.head_dimensions())?;
        let version = Store::next_version(&mut tx).await?;
        let onnx = rewrite_head(&self.config().base_model, &new_head, &version.to_string())?;
        Store::insert_version(
            &mut tx,
            &VersionRow {
                version,
                parent_version: Some(round.model_version),
                round_id: Some(round_id),
                head: serde_json::to_string(&new_head).expect("floats serialize"),
                onnx_sha256: sha256_hex(&onnx),
                optimizer: optimizer.name().into(),
                cohort_size: n,
                clip_norm: Some(round.clip_norm),
                granularity: Some(round.granularity),
                noise_stddev: Some(round.noise_stddev),
                rho: Some(round.rho),
                epsilon: Some(round.epsilon),
                delta: Some(round.delta),
                created_at: now,
                flagged: 0,
                flag_reason: None,
                flagged_at: None,
            },
        )
        .await?;
        // With staged rollout the new version is a canary first; the current one stays.
        let canary_fraction = self.config().drift.canary_fraction;
        if canary_fraction > 0.0 {
            Store::insert_rollout(&mut tx, version, round.model_version, canary_fraction, now)
                .await?;
        } else {
            Store::set_current_version(&mut tx, version).await?;
        }
        Store::save_optimizer_state(
            &mut tx,
            DEPLOYMENT_STATE_KEY,
            optimizer.name(),
            &serde_json::to_string(&state).expect("state serializes"),
            now,
        )
        .await?;
        Store::mark_published(&mut tx, round_id, n, version).await?;
        tx.commit().await?;
        Metrics::inc(&self.metrics().rounds_published);
        tracing::info!(
            round = round_id,
            version,
            cohort = n,
            epsilon = round.epsilon,
            optimizer = optimizer.name(),
            canary_fraction,
            "published model version"
        );
        self.round(round_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use feedloop_core::protocol::RoundStatus;
    use feedloop_privacy::privatize_with_os_rng;

    fn round(dimension: usize) -> RoundRow {
        RoundRow {
            round_id: 1,
            model_version: 1,
            dimension: dimension as i64,
            clip_norm: 1.0,
            granularity: 0.001,
            noise_stddev: 0.01,
            min_cohort: 1,
            target_count: None,
            deadline: None,
            status: RoundStatus::Closing,
            received: 0,
            rho: 0.0,
            epsilon: 0.0,
            delta: 1e-6,
            created_at: 0,
            closed_at: None,
            close_reason: None,
            cohort_size: None,
            published_version: None,
            aggregation: "local".into(),
            secure_terms: None,
        }
    }

    fn stored(update: &[f32], r: &RoundRow) -> String {
        let cfg = PrivatizerConfig::new(r.clip_norm, r.granularity, r.noise_stddev).unwrap();
        STANDARD.encode(privatize_with_os_rng(update, &cfg).unwrap().to_bytes())
    }

    #[test]
    fn fedavg_moves_the_head_by_the_mean_update() {
        // A head with 2 embedding dimensions has 2·2 + 3 = 7 parameters.
        let dims = 2;
        let d = 2 * dims + 3;
        let r = round(d);
        let base = vec![0.5_f32; d];
        let a: Vec<f32> = (0..d).map(|i| 0.1 * (i as f32 % 3.0) - 0.1).collect();
        let b: Vec<f32> = (0..d).map(|i| 0.05 * i as f32 / d as f32).collect();
        let payloads = vec![stored(&a, &r), stored(&b, &r)];
        let mean = local_mean(&r, &payloads).unwrap();
        let (head, state) =
            next_head(&mean, &base, ServerOptimizer::default(), None, dims).unwrap();
        assert_eq!(head.len(), d);
        for i in 0..d {
            let expected = base[i] + (a[i] + b[i]) / 2.0;
            // σ = 0.01 per device, averaged over 2, plus the lattice rounding: well inside 0.05.
            assert!(
                (head[i] - expected).abs() < 0.05,
                "coordinate {i}: {} vs {expected}",
                head[i]
            );
        }
        assert_eq!(state.kind, ServerOptimizer::default().name());
    }

    #[test]
    fn a_payload_for_another_dimension_is_refused() {
        let r = round(7);
        let other = round(9);
        let payloads = vec![stored(&[0.1; 9], &other)];
        assert!(local_mean(&r, &payloads).is_err());
        assert!(next_head(&[0.0; 9], &[0.0; 7], ServerOptimizer::default(), None, 2).is_err());
    }
}
