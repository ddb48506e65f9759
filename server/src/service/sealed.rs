//! Secure metric reports on the leader (`feedloop serve --secure-metrics`): thumbs, agreement
//! and star reports sealed by devices to the leader and the helper (Prio3Histogram,
//! `feedloop_secagg::MetricTask`), verified with the helper before they are acknowledged, and
//! released in disjoint batches of at least the minimum — the helper adds its discrete Gaussian
//! noise to every bucket of each batch. The leader keeps only its output shares (uniformly
//! random on their own) and the batches' noisy counts; the estimates in `/v1/stats` and the
//! rollout test combine those with the randomized-response reports of devices that do not seal.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_core::protocol::{
    paths, HelperAggregate, HelperCollect, HelperInfo, HelperMetricTask, HelperRelease,
    HelperVerdict, SealedMetricReport, SealedMetricStats, SecureMetricTerms,
};
use feedloop_core::secure_metrics::{SealedBits, SecureMetric};
use feedloop_secagg::{
    leader_finish, leader_init, unshard, Batch, HelperResponse, HpkePublicKey, MetricTask,
    NoisyAggregateShare, OutputShare, Report, SecAggError, VerifyKey,
};

use super::secure::from_hex;
use super::{now_ms, App};
use crate::auth::Claims;
use crate::db::{is_unique_violation, MetricTaskRow, SealedBatch};
use crate::error::{Error, Result};
use crate::metrics::Metrics;

fn refused(e: SecAggError) -> Error {
    match e {
        SecAggError::Internal(message) => Error::internal(message),
        other => Error::unprocessable("invalid_report", other.to_string()),
    }
}

impl MetricTaskRow {
    fn task(&self) -> Result<MetricTask> {
        MetricTask::new(
            &self.task,
            self.buckets as usize,
            self.noise_stddev,
            self.min_reports as u64,
        )
        .map_err(|e| Error::internal(format!("stored metric task: {e}")))
    }

    fn verify_key(&self) -> Result<VerifyKey> {
        VerifyKey::from_bytes(&from_hex(&self.verify_key, "a metric task's verify key")?)
            .map_err(|e| Error::internal(e.to_string()))
    }
}

impl App {
    /// The terms devices seal metric reports under: `None` unless this leader runs with
    /// `--secure-metrics`, or while its helper cannot be reached (devices then randomize, as in
    /// a local deployment). σ and the batch are at least what the helper's policy demands; the
    /// helper is asked once per process.
    pub async fn secure_metric_terms(&self) -> Option<SecureMetricTerms> {
        let cfg = self.config().secure_metrics?;
        let terms = self
            .inner
            .secure_metric_terms
            .get_or_try_init(|| async {
                let peer = self.helper_peer()?;
                let url = format!("{}{}", peer.url.trim_end_matches('/'), paths::HELPER);
                let info: HelperInfo = self
                    .http()
                    .get(&url)
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| Error::internal(e.to_string()))?
                    .json()
                    .await
                    .map_err(|e| Error::internal(e.to_string()))?;
                HpkePublicKey::from_hex(&info.helper_key)
                    .map_err(|e| Error::internal(format!("the helper's key: {e}")))?;
                let requested = cfg
                    .noise_stddev
                    .unwrap_or(std::f64::consts::SQRT_2 / self.config().rr_epsilon);
                // The helper's z bounds a round's σ/C; a metric report's Δ is √2 where an update's
                // is 2C, so z/√2 keeps its ρ per report (2/z²).
                let noise_stddev = requested.max(info.noise_multiplier / std::f64::consts::SQRT_2);
                let min_reports = (cfg.batch_reports as i64).max(info.min_reports);
                Ok::<_, Error>(SecureMetricTerms {
                    leader_key: self.hpke().public().to_hex(),
                    helper_key: info.helper_key,
                    helper_fingerprint: info.fingerprint,
                    noise_stddev,
                    min_reports,
                })
            })
            .await;
        match terms {
            Ok(t) => Some(t.clone()),
            Err(e) => {
                tracing::warn!(error = %e, "secure metrics: the helper did not answer; devices randomize for now");
                None
            }
        }
    }

    async fn required_terms(&self) -> Result<SecureMetricTerms> {
        if self.config().secure_metrics.is_none() {
            return Err(Error::not_found(
                "no_secure_metrics",
                "this server does not aggregate metric reports with a helper \
                 (start it with --secure-metrics and --helper-url)",
            ));
        }
        self.secure_metric_terms().await.ok_or_else(|| {
            Error::unavailable(
                "helper_unavailable",
                "the helper aggregator cannot be reached; retry later",
            )
        })
    }

    /// The metric task of `metric` on `version` under `terms`, opened at the helper (once per
    /// process; the helper answers the same task again alike).
    async fn open_metric_task(
        &self,
        metric: SecureMetric,
        version: i64,
        terms: &SecureMetricTerms,
    ) -> Result<MetricTaskRow> {
        let name = metric.task_name(&version.to_string());
        let fresh = MetricTaskRow {
            task: name.clone(),
            model_version: version,
            metric: metric.name().to_string(),
            buckets: metric.buckets() as i64,
            noise_stddev: terms.noise_stddev,
            min_reports: terms.min_reports,
            verify_key: crate::onnx::hex(&crate::auth::random_bytes::<32>()?),
            created_at: now_ms(),
        };
        let row = self.store().metric_task_or_insert(&fresh).await?;
        if row.noise_stddev != terms.noise_stddev || row.min_reports != terms.min_reports {
            return Err(Error::conflict(
                "metric_terms_changed",
                format!(
                    "{name} was opened under other terms (σ = {}, batches of {}) than this server \
                     announces now; reports on this version cannot be aggregated",
                    row.noise_stddev, row.min_reports
                ),
            ));
        }
        let opened = self
            .inner
            .opened_metric_tasks
            .lock()
            .map(|set| set.contains(&name))
            .unwrap_or(false);
        if !opened {
            let _: HelperMetricTask = self
                .call_helper(
                    reqwest::Method::PUT,
                    &paths::helper_metric(&name),
                    &HelperMetricTask {
                        buckets: row.buckets,
                        noise_stddev: row.noise_stddev,
                        min_reports: row.min_reports,
                        verify_key: row.verify_key.clone(),
                    },
                )
                .await?;
            if let Ok(mut set) = self.inner.opened_metric_tasks.lock() {
                set.insert(name);
            }
        }
        Ok(row)
    }

    /// `POST /v1/feedback/sealed`: verifies one sealed report with the helper and stores the
    /// leader's output share (one per client per metric and version); then releases a batch if
    /// enough reports wait, and a thumbs report runs the rollout and drift tests.
    pub async fn report_sealed(
        &self,
        claims: &Claims,
        version: i64,
        report: &SealedMetricReport,
    ) -> Result<()> {
        let terms = self.required_terms().await?;
        let metric = SecureMetric::parse(&report.metric).ok_or_else(|| {
            Error::bad_request(
                "invalid_metric",
                format!(
                    "metric must be thumbs, agreement or stars, not {:?}",
                    report.metric
                ),
            )
        })?;
        let v = self.version(version).await?;
        let bytes = STANDARD
            .decode(&report.report)
            .map_err(|_| Error::bad_request("invalid_report", "report is not base64"))?;
        let sealed = Report::from_bytes(&bytes).map_err(refused)?;
        let name = metric.task_name(&version.to_string());
        let duplicate = || {
            Error::conflict(
                "duplicate_report",
                format!(
                    "this client already reported {} on model version {version}",
                    metric.name()
                ),
            )
        };
        if self
            .store()
            .sealed_client_reported(&name, &claims.client_id)
            .await?
        {
            return Err(duplicate());
        }
        let row = self.open_metric_task(metric, version, &terms).await?;
        let task = row.task()?;
        let (pending, request) =
            leader_init(&task, &row.verify_key()?, self.hpke(), &sealed).map_err(refused)?;
        let verdict: HelperVerdict = self
            .call_helper(
                reqwest::Method::POST,
                &paths::helper_metric_reports(&name),
                &HelperAggregate {
                    client_id: claims.client_id.clone(),
                    request: STANDARD.encode(request.to_bytes()),
                },
            )
            .await
            .map_err(|e| match e {
                Error::Conflict { .. } => duplicate(),
                other => other,
            })?;
        let response = STANDARD
            .decode(&verdict.response)
            .ok()
            .and_then(|b| HelperResponse::from_bytes(&b).ok())
            .ok_or_else(|| Error::internal("the helper's answer is not a verifier message"))?;
        let share = leader_finish(&task, pending, &response).map_err(refused)?;
        match self
            .store()
            .insert_sealed_report(
                &name,
                &share.report_id().to_string(),
                &claims.client_id,
                &STANDARD.encode(share.to_bytes()),
                now_ms(),
            )
            .await
        {
            Err(e) if is_unique_violation(&e) => return Err(duplicate()),
            other => other?,
        }
        Metrics::inc(&self.metrics().sealed_reports);
        if let Err(e) = self.release_metric_batch(&row, &task).await {
            // The report is stored; the next one tries again.
            tracing::warn!(task = %name, error = %e, "secure metrics: no batch released");
        }
        if metric == SecureMetric::Thumbs {
            self.after_thumbs_report(&v).await?;
        }
        Ok(())
    }

    /// Once at least the minimum of `row`'s reports wait, asks the helper for its noisy share of
    /// exactly those and stores the batch's noisy counts.
    async fn release_metric_batch(&self, row: &MetricTaskRow, task: &MetricTask) -> Result<()> {
        let waiting = self.store().unbatched_sealed_reports(&row.task).await?;
        if (waiting.len() as i64) < row.min_reports {
            return Ok(());
        }
        let mut batch = Batch::new(task.clone()).map_err(|e| Error::internal(e.to_string()))?;
        let mut ids = Vec::with_capacity(waiting.len());
        for (id, stored) in &waiting {
            let bytes = STANDARD
                .decode(stored)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            let share = OutputShare::from_bytes(task, &bytes)
                .map_err(|e| Error::internal(format!("stored output share: {e}")))?;
            batch
                .add(share)
                .map_err(|e| Error::internal(e.to_string()))?;
            ids.push(id.clone());
        }
        let release: HelperRelease = self
            .call_helper(
                reqwest::Method::POST,
                &paths::helper_metric_collect(&row.task),
                &HelperCollect {
                    report_ids: ids.clone(),
                },
            )
            .await?;
        let helper = STANDARD
            .decode(&release.aggregate_share)
            .ok()
            .and_then(|b| NoisyAggregateShare::from_bytes(task, &b).ok())
            .ok_or_else(|| Error::internal("the helper's share does not decode"))?;
        let counts = unshard(task, &batch.aggregate_share(), &helper)
            .map_err(|e| Error::internal(e.to_string()))?;
        let stored = SealedBatch {
            reports: ids.len() as i64,
            noisy_counts: serde_json::to_string(&counts)
                .map_err(|e| Error::internal(e.to_string()))?,
            noise_stddev: row.noise_stddev,
        };
        if self
            .store()
            .insert_sealed_batch(&row.task, &ids, &stored, now_ms())
            .await?
        {
            Metrics::inc(&self.metrics().sealed_batches);
            tracing::info!(task = %row.task, reports = ids.len(), "secure metrics: batch released");
        }
        Ok(())
    }

    /// The released batches of `metric` on `version`, summed; `None` without any report.
    pub async fn sealed_stats(
        &self,
        metric: SecureMetric,
        version: i64,
    ) -> Result<Option<SealedMetricStats>> {
        let name = metric.task_name(&version.to_string());
        let (batches, pending) = self.store().sealed_batches(&name).await?;
        if batches.is_empty() && pending == 0 {
            return Ok(None);
        }
        let mut counts = vec![0i64; metric.buckets()];
        let mut reports = 0u64;
        let mut noise_stddev = 0.0;
        for b in &batches {
            let batch: Vec<i64> = serde_json::from_str(&b.noisy_counts)
                .map_err(|e| Error::internal(format!("stored batch: {e}")))?;
            if batch.len() != counts.len() {
                return Err(Error::internal("a stored batch has another bucket count"));
            }
            counts.iter_mut().zip(batch).for_each(|(c, v)| *c += v);
            reports += b.reports as u64;
            noise_stddev = b.noise_stddev;
        }
        Ok(Some(SealedMetricStats {
            reports,
            pending,
            batches: batches.len() as u64,
            noisy_counts: counts,
            noise_stddev,
        }))
    }

    /// The sealed bits of a two-bucket metric on `version`, as the estimators take them.
    pub(super) async fn sealed_bits(
        &self,
        metric: SecureMetric,
        version: i64,
    ) -> Result<Option<SealedBits>> {
        let Some(stats) = self.sealed_stats(metric, version).await? else {
            return Ok(None);
        };
        let name = metric.task_name(&version.to_string());
        let min = match self.store().metric_task(&name).await? {
            Some(row) => row.min_reports as u64,
            None => return Ok(None),
        };
        Ok(SealedBits::of(&stats, min))
    }
}
