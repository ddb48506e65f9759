//! The helper's side of secure metric reports: metric tasks its leader opens (one per metric and
//! model version), its half of verifying each report, and batch releases — each report in at
//! most one batch, no batch below the minimum, every bucket with the helper's own discrete
//! Gaussian noise, and the same bytes again (no new noise) for a batch asked for twice.
//!
//! Its policy holds here as for rounds: a task whose σ is below z/√2 (the ρ per report of a
//! round at the helper's noise multiplier z) or whose batch is below the helper's minimum is
//! refused outright — not raised, since devices sealed under the terms the leader announced.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_core::protocol::{
    HelperAggregate, HelperCollect, HelperMetricTask, HelperRelease, HelperVerdict,
};
use feedloop_privacy::rng::OsCsprng;
use feedloop_privacy::sampler::DiscreteGaussian;
use feedloop_secagg::{
    helper_verify, Batch, HelperRequest, MetricTask, OutputShare, SecAggError, VerifyKey,
};

use super::secure::from_hex;
use super::{now_ms, App};
use crate::db::{is_unique_violation, Store};
use crate::error::{Error, Result};
use crate::onnx::sha256_hex;

fn invalid(message: impl Into<String>) -> Error {
    Error::unprocessable("invalid_task", message)
}

impl App {
    /// The task `name` and its verification key, or a 404.
    async fn metric_task_at_helper(&self, name: &str) -> Result<(MetricTask, VerifyKey)> {
        let (buckets, noise, min, key) =
            self.store()
                .helper_metric_task(name)
                .await?
                .ok_or_else(|| {
                    Error::not_found(
                        "no_such_task",
                        format!("this helper holds no metric task {name}"),
                    )
                })?;
        let task = MetricTask::new(name, buckets as usize, noise, min as u64)
            .map_err(|e| Error::internal(format!("stored metric task: {e}")))?;
        let key = VerifyKey::from_bytes(&from_hex(&key, "a stored verify key")?)
            .map_err(|e| Error::internal(e.to_string()))?;
        Ok((task, key))
    }

    /// `PUT /v1/helper/metrics/{task}`: takes a metric task if its terms meet this helper's
    /// policy. The same task again is answered alike; other terms under a held name are a 409.
    pub async fn accept_metric_task(
        &self,
        name: &str,
        task: HelperMetricTask,
    ) -> Result<HelperMetricTask> {
        self.require_helper_role()?;
        let policy = &self.config().helper_policy;
        let verify_key = feedloop_secagg::unhex(&task.verify_key)
            .and_then(|b| VerifyKey::from_bytes(&b).ok())
            .ok_or_else(|| invalid("verifyKey must be 64 hex digits"))?;
        let least = policy.noise_multiplier / std::f64::consts::SQRT_2;
        if task.noise_stddev.is_nan() || task.noise_stddev < least {
            return Err(invalid(format!(
                "σ = {} is below this helper's least noise for a metric, {least:.4} \
                 (its noise multiplier {} / √2)",
                task.noise_stddev, policy.noise_multiplier
            )));
        }
        if task.min_reports < policy.min_reports as i64 {
            return Err(invalid(format!(
                "batches of {} are below this helper's minimum of {}",
                task.min_reports, policy.min_reports
            )));
        }
        MetricTask::new(
            name,
            usize::try_from(task.buckets).unwrap_or(0),
            task.noise_stddev,
            task.min_reports as u64,
        )
        .map_err(|e| invalid(e.to_string()))?;
        let key_hex = crate::onnx::hex(verify_key.as_bytes());
        let terms = (
            task.buckets,
            task.noise_stddev,
            task.min_reports,
            key_hex.as_str(),
        );
        self.store()
            .insert_helper_metric_task(name, terms, now_ms())
            .await?;
        let held = self.store().helper_metric_task(name).await?;
        let same = held.as_ref().is_some_and(|(b, n, m, k)| {
            (*b, *n, *m, k.as_str())
                == (
                    task.buckets,
                    task.noise_stddev,
                    task.min_reports,
                    key_hex.as_str(),
                )
        });
        if !same {
            return Err(Error::conflict(
                "task_exists",
                format!("metric task {name} is held under other terms"),
            ));
        }
        tracing::info!(
            task = name,
            noise_stddev = task.noise_stddev,
            "helper: took a metric task"
        );
        Ok(task)
    }

    /// `POST /v1/helper/metrics/{task}/reports`: the helper's half of verifying one sealed
    /// metric report (one per report id and per client; the same request again replays).
    pub async fn verify_helper_metric_share(
        &self,
        name: &str,
        req: HelperAggregate,
    ) -> Result<HelperVerdict> {
        self.require_helper_role()?;
        let (task, verify_key) = self.metric_task_at_helper(name).await?;
        let bytes = STANDARD
            .decode(&req.request)
            .map_err(|_| Error::bad_request("invalid_request", "request is not base64"))?;
        let request = HelperRequest::from_bytes(&bytes)
            .map_err(|e| Error::unprocessable("invalid_report", e.to_string()))?;
        let digest = sha256_hex(&bytes);
        let report_id = request.report_id().to_string();
        let replay = |stored: Option<(String, String, String)>| match stored {
            None => Ok(None),
            Some((client, sha, response)) if client == req.client_id && sha == digest => {
                Ok(Some(HelperVerdict { response }))
            }
            Some(_) => Err(Error::conflict(
                "duplicate_report",
                format!("report {report_id} is already in {name}"),
            )),
        };
        if let Some(v) = replay(self.store().helper_metric_report(name, &report_id).await?)? {
            return Ok(v);
        }
        if self
            .store()
            .helper_metric_client_reported(name, &req.client_id)
            .await?
        {
            return Err(Error::conflict(
                "duplicate_client",
                format!("this client already has a report in {name}"),
            ));
        }
        let (share, response) =
            helper_verify(&task, &verify_key, self.hpke(), &request).map_err(|e| match e {
                SecAggError::Internal(m) => Error::internal(m),
                other => Error::unprocessable("invalid_report", other.to_string()),
            })?;
        let response = STANDARD.encode(response.to_bytes());
        match self
            .store()
            .insert_helper_metric_report(
                name,
                &report_id,
                &req.client_id,
                &digest,
                &response,
                &STANDARD.encode(share.to_bytes()),
                now_ms(),
            )
            .await
        {
            Err(e) if is_unique_violation(&e) => {
                return replay(self.store().helper_metric_report(name, &report_id).await?)?
                    .ok_or_else(|| {
                        Error::conflict(
                            "duplicate_report",
                            "this report or client is already in the task",
                        )
                    });
            }
            other => other?,
        }
        Ok(HelperVerdict { response })
    }

    /// `POST /v1/helper/metrics/{task}/collect`: the helper's noisy share of exactly these
    /// reports, once: refused below the minimum and for any report in another batch; the same
    /// batch again gets the same bytes.
    pub async fn release_metric_batch_at_helper(
        &self,
        name: &str,
        req: HelperCollect,
    ) -> Result<HelperRelease> {
        self.require_helper_role()?;
        let (task, _) = self.metric_task_at_helper(name).await?;
        let mut ids = super::helper::report_ids(&req.report_ids)?;
        ids.sort();
        let digest = super::helper::ids_digest(&ids);
        if let Some((count, share)) = self.store().helper_metric_release(name, &digest).await? {
            return Ok(HelperRelease {
                count,
                aggregate_share: share,
            });
        }
        if (ids.len() as u64) < task.min_reports() {
            return Err(Error::conflict(
                "below_minimum",
                format!(
                    "a batch of {name} needs at least {} reports, got {}",
                    task.min_reports(),
                    ids.len()
                ),
            ));
        }
        let mut batch = Batch::new(task.clone()).map_err(|e| Error::internal(e.to_string()))?;
        for id in &ids {
            let (stored, released) = self
                .store()
                .helper_metric_share(name, &id.to_string())
                .await?
                .ok_or_else(|| {
                    Error::conflict(
                        "unknown_report",
                        format!("report {id} was not verified by this helper"),
                    )
                })?;
            if released.is_some() {
                return Err(Error::conflict(
                    "batch_released",
                    format!("report {id} was released in another batch"),
                ));
            }
            let bytes = STANDARD
                .decode(&stored)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            let share = OutputShare::from_bytes(&task, &bytes)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            batch.add(share).map_err(|e| match e {
                SecAggError::DuplicateReport(_) => {
                    Error::bad_request("duplicate_report_id", e.to_string())
                }
                other => Error::internal(other.to_string()),
            })?;
        }
        let noise = DiscreteGaussian::from_sigma(task.noise_stddev())
            .map_err(|e| Error::internal(format!("the helper's noise: {e}")))?;
        let mut rng = OsCsprng::new().map_err(|e| Error::internal(e.to_string()))?;
        let released = batch
            .release(task.min_reports(), Some(&noise), &mut rng)
            .map_err(|e| Error::internal(e.to_string()))?;
        let share = STANDARD.encode(released.to_bytes());
        let id_texts: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let mut tx = self.store().begin().await?;
        if !Store::insert_helper_metric_batch(&mut tx, name, &id_texts, &digest, &share, now_ms())
            .await?
        {
            return Err(Error::conflict(
                "batch_released",
                "a report of this batch was released in another one meanwhile",
            ));
        }
        tx.commit().await?;
        tracing::info!(
            task = name,
            reports = ids.len(),
            "helper: released a metric batch"
        );
        Ok(HelperRelease {
            count: ids.len() as i64,
            aggregate_share: share,
        })
    }
}
