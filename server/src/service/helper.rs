//! The helper aggregator (`feedloop serve --role helper`): a second server with its own keys,
//! database and policy, run by a party the leader's operator does not control.
//!
//! Its policy is its own ([`crate::config::HelperPolicy`]): every round it takes gets at least its
//! noise (σ ≥ z·C) and its minimum batch, whatever the leader asks, and those terms are bound into
//! every share devices seal to it (`SecureRound::for_privatizer`), so a leader cannot tell devices
//! one thing and the helper another. It verifies each report with the leader, keeps one report per
//! id and per client, and releases each batch once, with its exact discrete Gaussian noise.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_core::protocol::{
    HelperAggregate, HelperCollect, HelperInfo, HelperRelease, HelperTask, HelperTerms,
    HelperVerdict,
};
use feedloop_privacy::rng::OsCsprng;
use feedloop_privacy::sampler::DiscreteGaussian;
use feedloop_privacy::PrivatizerConfig;
use feedloop_secagg::{
    helper_verify, Batch, HelperRequest, OutputShare, ReportId, SecAggError, SecureRound, VerifyKey,
};

use super::secure::from_hex;
use super::{now_ms, App};
use crate::db::{is_unique_violation, HelperTaskRow, Store};
use crate::error::{Error, Result};
use crate::onnx::sha256_hex;

fn invalid(message: impl Into<String>) -> Error {
    Error::unprocessable("invalid_task", message)
}

impl HelperTaskRow {
    fn config(&self) -> Result<PrivatizerConfig> {
        PrivatizerConfig::new(self.clip_norm, self.granularity, self.noise_stddev)
            .map_err(|e| Error::internal(format!("stored task: {e}")))
    }

    fn secure_round(&self) -> Result<SecureRound> {
        SecureRound::for_privatizer(
            self.round_id as u64,
            self.dimension as usize,
            &self.config()?,
            self.min_reports as u64,
        )
        .map_err(|e| Error::internal(format!("stored task: {e}")))
    }

    fn verify_key(&self) -> Result<VerifyKey> {
        VerifyKey::from_bytes(&from_hex(&self.verify_key, "the stored verify key")?)
            .map_err(|e| Error::internal(e.to_string()))
    }
}

/// A collect request's report ids, parsed (a 400 for one that is not 32 hex digits).
pub(super) fn report_ids(texts: &[String]) -> Result<Vec<ReportId>> {
    texts
        .iter()
        .map(|text| {
            ReportId::from_hex(text).ok_or_else(|| {
                Error::bad_request("invalid_report_id", format!("`{text}` is not a report id"))
            })
        })
        .collect()
}

/// The digest a batch's release is kept under: its sorted report ids.
pub(super) fn ids_digest(ids: &[ReportId]) -> String {
    let mut sorted = ids.to_vec();
    sorted.sort();
    let joined: Vec<u8> = sorted.iter().flat_map(|id| id.0).collect();
    sha256_hex(&joined)
}

impl App {
    pub(super) fn require_helper_role(&self) -> Result<()> {
        match self.config().role {
            crate::config::Role::Helper => Ok(()),
            crate::config::Role::Leader => Err(Error::not_found(
                "not_a_helper",
                "this server is a leader; helper endpoints are served by `feedloop serve --role helper`",
            )),
        }
    }

    async fn task(&self, round_id: i64) -> Result<HelperTaskRow> {
        self.store().helper_task(round_id).await?.ok_or_else(|| {
            Error::not_found(
                "no_such_task",
                format!("this helper holds no round {round_id}"),
            )
        })
    }

    /// `GET /v1/helper`.
    pub fn helper_info(&self) -> Result<HelperInfo> {
        self.require_helper_role()?;
        let policy = &self.config().helper_policy;
        Ok(HelperInfo {
            helper_key: self.hpke().public().to_hex(),
            fingerprint: self.hpke().public().fingerprint(),
            noise_multiplier: policy.noise_multiplier,
            min_reports: policy.min_reports as i64,
        })
    }

    /// `PUT /v1/helper/tasks/{roundId}`: takes a round under the helper's terms (at least its own
    /// policy's). The same task again answers the same terms; a different one replaces the round
    /// only while it holds no report.
    pub async fn accept_task(&self, round_id: i64, task: HelperTask) -> Result<HelperTerms> {
        self.require_helper_role()?;
        let policy = &self.config().helper_policy;
        let verify_key = feedloop_secagg::unhex(&task.verify_key)
            .and_then(|b| VerifyKey::from_bytes(&b).ok())
            .ok_or_else(|| invalid("verifyKey must be 64 hex digits"))?;
        if task.dimension < 1 {
            return Err(invalid("dimension must be at least 1"));
        }
        let noise_stddev = task
            .noise_stddev
            .max(policy.noise_multiplier * task.clip_norm);
        let min_reports = task.min_reports.max(policy.min_reports as i64);
        let cfg = PrivatizerConfig::new(task.clip_norm, task.granularity, noise_stddev)
            .map_err(|e| invalid(e.to_string()))?;
        let round = SecureRound::for_privatizer(
            round_id as u64,
            task.dimension as usize,
            &cfg,
            min_reports as u64,
        )
        .map_err(|e| invalid(e.to_string()))?;
        let row = HelperTaskRow {
            round_id,
            dimension: task.dimension,
            clip_norm: task.clip_norm,
            granularity: task.granularity,
            noise_stddev,
            min_reports,
            verify_key: crate::onnx::hex(verify_key.as_bytes()),
            created_at: now_ms(),
            released_ids_sha256: None,
            released_share: None,
            released_at: None,
        };
        match self.store().helper_task(round_id).await? {
            Some(held) if same_terms(&held, &row) => {}
            Some(_) if self.store().helper_report_count(round_id).await? > 0 => {
                return Err(Error::conflict(
                    "task_exists",
                    format!("round {round_id} already holds reports under other terms"),
                ))
            }
            _ => {
                let mut tx = self.store().begin().await?;
                Store::put_helper_task(&mut tx, &row).await?;
                tx.commit().await?;
            }
        }
        tracing::info!(
            round = round_id,
            noise_stddev,
            min_reports,
            "helper: took a secure round"
        );
        Ok(HelperTerms {
            helper_key: self.hpke().public().to_hex(),
            noise_stddev,
            min_reports,
            value_radius: round.value_radius() as i64,
        })
    }

    /// `POST /v1/helper/tasks/{roundId}/reports`: the helper's half of verifying one report. A
    /// retry of the same request replays the stored answer; anything else already seen is a 409.
    pub async fn verify_helper_share(
        &self,
        round_id: i64,
        req: HelperAggregate,
    ) -> Result<HelperVerdict> {
        self.require_helper_role()?;
        let task = self.task(round_id).await?;
        if task.released_at.is_some() {
            return Err(Error::conflict(
                "batch_released",
                format!("round {round_id} was released and takes no more reports"),
            ));
        }
        let bytes = STANDARD
            .decode(&req.request)
            .map_err(|_| Error::bad_request("invalid_request", "request is not base64"))?;
        let request = HelperRequest::from_bytes(&bytes)
            .map_err(|e| Error::unprocessable("invalid_report", e.to_string()))?;
        let digest = sha256_hex(&bytes);
        let report_id = request.report_id().to_string();
        if let Some(verdict) = self
            .replayed(round_id, &report_id, &req.client_id, &digest)
            .await?
        {
            return Ok(verdict);
        }
        if self
            .store()
            .helper_client_reported(round_id, &req.client_id)
            .await?
        {
            return Err(Error::conflict(
                "duplicate_client",
                format!("this client already has a report in round {round_id}"),
            ));
        }
        let round = task.secure_round()?;
        let (share, response) = helper_verify(&round, &task.verify_key()?, self.hpke(), &request)
            .map_err(|e| match e {
            SecAggError::Internal(m) => Error::internal(m),
            other => Error::unprocessable("invalid_report", other.to_string()),
        })?;
        let response = STANDARD.encode(response.to_bytes());
        let mut tx = self.store().begin().await?;
        let stored = Store::insert_helper_report(
            &mut tx,
            round_id,
            &report_id,
            &req.client_id,
            &digest,
            &response,
            &STANDARD.encode(share.to_bytes()),
            now_ms(),
        )
        .await;
        match stored {
            Ok(true) => tx.commit().await?,
            Ok(false) => {
                return Err(Error::conflict(
                    "batch_released",
                    format!("round {round_id} was released and takes no more reports"),
                ))
            }
            // The same report or client raced in.
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return match self
                    .replayed(round_id, &report_id, &req.client_id, &digest)
                    .await?
                {
                    Some(verdict) => Ok(verdict),
                    None => Err(Error::conflict(
                        "duplicate_report",
                        "this report or client is already in the round",
                    )),
                };
            }
            Err(e) => return Err(e),
        }
        Ok(HelperVerdict { response })
    }

    /// The stored answer for this exact request from this client; a 409 for the same report id
    /// under anything else.
    async fn replayed(
        &self,
        round_id: i64,
        report_id: &str,
        client_id: &str,
        digest: &str,
    ) -> Result<Option<HelperVerdict>> {
        match self.store().helper_report(round_id, report_id).await? {
            None => Ok(None),
            Some(r) if r.client_id == client_id && r.request_sha256 == digest => {
                Ok(Some(HelperVerdict {
                    response: r.response,
                }))
            }
            Some(_) => Err(Error::conflict(
                "duplicate_report",
                format!("report {report_id} is already in round {round_id}"),
            )),
        }
    }

    /// `POST /v1/helper/tasks/{roundId}/collect`: the helper's one release of a batch — its
    /// aggregate share of exactly these reports plus its noise — refused below its minimum. The
    /// same request again gets the same bytes (no new noise); another batch of the round is a 409.
    pub async fn release_batch(&self, round_id: i64, req: HelperCollect) -> Result<HelperRelease> {
        self.require_helper_role()?;
        let task = self.task(round_id).await?;
        let ids = report_ids(&req.report_ids)?;
        let digest = ids_digest(&ids);
        if let (Some(released), Some(share)) = (&task.released_ids_sha256, &task.released_share) {
            return if *released == digest {
                Ok(HelperRelease {
                    count: ids.len() as i64,
                    aggregate_share: share.clone(),
                })
            } else {
                Err(Error::conflict(
                    "batch_released",
                    format!("round {round_id} was already released for another batch"),
                ))
            };
        }
        let round = task.secure_round()?;
        let held: std::collections::HashMap<String, String> = self
            .store()
            .helper_output_shares(round_id)
            .await?
            .into_iter()
            .collect();
        let mut batch = Batch::new(round).map_err(|e| Error::internal(e.to_string()))?;
        for id in &ids {
            let stored = held.get(&id.to_string()).ok_or_else(|| {
                Error::conflict(
                    "unknown_report",
                    format!("report {id} was not verified by this helper"),
                )
            })?;
            let bytes = STANDARD
                .decode(stored)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            let share = OutputShare::from_bytes(&round, &bytes)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            batch.add(share).map_err(|e| match e {
                SecAggError::DuplicateReport(_) => {
                    Error::bad_request("duplicate_report_id", e.to_string())
                }
                other => Error::internal(other.to_string()),
            })?;
        }
        if (batch.count() as i64) < task.min_reports {
            return Err(Error::conflict(
                "below_minimum",
                format!(
                    "the batch has {} valid reports; this helper releases none below {}",
                    batch.count(),
                    task.min_reports
                ),
            ));
        }
        let (mantissa, exponent) = task.config()?.lattice_variance();
        let noise = DiscreteGaussian::from_dyadic_variance(mantissa, exponent)
            .map_err(|e| Error::internal(format!("the helper's noise: {e}")))?;
        let mut rng = OsCsprng::new().map_err(|e| Error::internal(e.to_string()))?;
        let released = batch
            .release(task.min_reports as u64, Some(&noise), &mut rng)
            .map_err(|e| match e {
                SecAggError::BelowMinimum { .. } => Error::conflict("below_minimum", e.to_string()),
                other => Error::internal(other.to_string()),
            })?;
        let share = STANDARD.encode(released.to_bytes());
        let mut tx = self.store().begin().await?;
        if !Store::mark_helper_released(&mut tx, round_id, &digest, &share, now_ms()).await? {
            return Err(Error::conflict(
                "batch_released",
                format!("round {round_id} was released meanwhile"),
            ));
        }
        tx.commit().await?;
        tracing::info!(
            round = round_id,
            reports = ids.len(),
            "helper: released a batch"
        );
        Ok(HelperRelease {
            count: ids.len() as i64,
            aggregate_share: share,
        })
    }
}

fn same_terms(a: &HelperTaskRow, b: &HelperTaskRow) -> bool {
    (a.dimension, a.min_reports, &a.verify_key) == (b.dimension, b.min_reports, &b.verify_key)
        && a.clip_norm.to_bits() == b.clip_norm.to_bits()
        && a.granularity.to_bits() == b.granularity.to_bits()
        && a.noise_stddev.to_bits() == b.noise_stddev.to_bits()
}
