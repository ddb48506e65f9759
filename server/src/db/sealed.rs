//! Secure metric reports: on the leader its metric tasks, its output share of each sealed report
//! and the released batches' noisy counts; on a helper its metric tasks, output shares and the
//! one release of each batch.

use sqlx::{AnyConnection, Row};

use super::{MetricTaskRow, Store};
use crate::error::Result;

const TASK_COLUMNS: &str =
    "task, model_version, metric, buckets, noise_stddev, min_reports, verify_key, created_at";

/// One released batch of a metric as the leader keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedBatch {
    pub reports: i64,
    /// JSON array of the noisy count per bucket.
    pub noisy_counts: String,
    pub noise_stddev: f64,
}

impl Store {
    // ----- the leader -----

    pub async fn metric_task(&self, task: &str) -> Result<Option<MetricTaskRow>> {
        Ok(sqlx::query_as::<_, MetricTaskRow>(&format!(
            "SELECT {TASK_COLUMNS} FROM metric_tasks WHERE task = $1"
        ))
        .bind(task)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores `t` unless a task of that name exists (two replicas racing: the first one's
    /// verification key stays); the stored task either way.
    pub async fn metric_task_or_insert(&self, t: &MetricTaskRow) -> Result<MetricTaskRow> {
        sqlx::query(&format!(
            "INSERT INTO metric_tasks ({TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (task) DO NOTHING"
        ))
        .bind(&t.task)
        .bind(t.model_version)
        .bind(&t.metric)
        .bind(t.buckets)
        .bind(t.noise_stddev)
        .bind(t.min_reports)
        .bind(&t.verify_key)
        .bind(t.created_at)
        .execute(&self.pool)
        .await?;
        Ok(self
            .metric_task(&t.task)
            .await?
            .unwrap_or_else(|| t.clone()))
    }

    pub async fn sealed_client_reported(&self, task: &str, client_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM sealed_reports WHERE task = $1 AND client_id = $2")
                .bind(task)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Stores the leader's output share of one verified report (a unique violation for a
    /// duplicate report or client).
    pub async fn insert_sealed_report(
        &self,
        task: &str,
        report_id: &str,
        client_id: &str,
        output_share: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sealed_reports (task, report_id, client_id, output_share, batch, \
             received_at) VALUES ($1, $2, $3, $4, NULL, $5)",
        )
        .bind(task)
        .bind(report_id)
        .bind(client_id)
        .bind(output_share)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Reports of `task` in no batch yet: (report id, output share), oldest first.
    pub async fn unbatched_sealed_reports(&self, task: &str) -> Result<Vec<(String, String)>> {
        Ok(sqlx::query_as(
            "SELECT report_id, output_share FROM sealed_reports WHERE task = $1 AND batch IS NULL \
             ORDER BY received_at, report_id",
        )
        .bind(task)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records a released batch of `ids` with its noisy counts, all or nothing: `false` (and
    /// nothing written) when another request batched one of them first.
    pub async fn insert_sealed_batch(
        &self,
        task: &str,
        ids: &[String],
        batch: &SealedBatch,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let number: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MAX(batch), 0) + 1 AS BIGINT) FROM sealed_batches WHERE task = $1",
        )
        .bind(task)
        .fetch_one(&mut *tx)
        .await?
        .get(0);
        sqlx::query(
            "INSERT INTO sealed_batches (task, batch, reports, noisy_counts, noise_stddev, \
             released_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(task)
        .bind(number)
        .bind(batch.reports)
        .bind(&batch.noisy_counts)
        .bind(batch.noise_stddev)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for id in ids {
            let updated = sqlx::query(
                "UPDATE sealed_reports SET batch = $3 WHERE task = $1 AND report_id = $2 \
                 AND batch IS NULL",
            )
            .bind(task)
            .bind(id)
            .bind(number)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated != 1 {
                return Ok(false); // dropped: rolled back
            }
        }
        tx.commit().await?;
        Ok(true)
    }

    /// `task`'s released batches and how many of its reports wait for one.
    pub async fn sealed_batches(&self, task: &str) -> Result<(Vec<SealedBatch>, u64)> {
        let rows = sqlx::query(
            "SELECT reports, noisy_counts, noise_stddev FROM sealed_batches WHERE task = $1 \
             ORDER BY batch",
        )
        .bind(task)
        .fetch_all(&self.pool)
        .await?;
        let batches = rows
            .iter()
            .map(|r| SealedBatch {
                reports: r.get(0),
                noisy_counts: r.get(1),
                noise_stddev: r.get(2),
            })
            .collect();
        let pending: i64 =
            sqlx::query("SELECT COUNT(*) FROM sealed_reports WHERE task = $1 AND batch IS NULL")
                .bind(task)
                .fetch_one(&self.pool)
                .await?
                .get(0);
        Ok((batches, pending as u64))
    }

    // ----- a helper -----

    /// A helper's metric task: (buckets, noise σ, minimum, verify key hex).
    pub async fn helper_metric_task(&self, task: &str) -> Result<Option<(i64, f64, i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT buckets, noise_stddev, min_reports, verify_key FROM helper_metric_tasks \
             WHERE task = $1",
        )
        .bind(task)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn insert_helper_metric_task(
        &self,
        task: &str,
        (buckets, noise_stddev, min_reports, verify_key): (i64, f64, i64, &str),
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO helper_metric_tasks (task, buckets, noise_stddev, min_reports, \
             verify_key, created_at) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (task) DO NOTHING",
        )
        .bind(task)
        .bind(buckets)
        .bind(noise_stddev)
        .bind(min_reports)
        .bind(verify_key)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The helper's stored answer for a report: (client id, request digest, response).
    pub async fn helper_metric_report(
        &self,
        task: &str,
        report_id: &str,
    ) -> Result<Option<(String, String, String)>> {
        Ok(sqlx::query_as(
            "SELECT client_id, request_sha256, response FROM helper_metric_reports \
             WHERE task = $1 AND report_id = $2",
        )
        .bind(task)
        .bind(report_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn helper_metric_client_reported(&self, task: &str, client_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM helper_metric_reports WHERE task = $1 AND client_id = $2")
                .bind(task)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn insert_helper_metric_report(
        &self,
        task: &str,
        report_id: &str,
        client_id: &str,
        request_sha256: &str,
        response: &str,
        output_share: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO helper_metric_reports (task, report_id, client_id, request_sha256, \
             response, output_share, batch_sha256, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $7)",
        )
        .bind(task)
        .bind(report_id)
        .bind(client_id)
        .bind(request_sha256)
        .bind(response)
        .bind(output_share)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The release kept for the batch whose sorted ids hash to `ids_sha256`, if any.
    pub async fn helper_metric_release(
        &self,
        task: &str,
        ids_sha256: &str,
    ) -> Result<Option<(i64, String)>> {
        Ok(sqlx::query_as(
            "SELECT reports, share FROM helper_metric_batches WHERE task = $1 AND ids_sha256 = $2",
        )
        .bind(task)
        .bind(ids_sha256)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The output share and batch digest of one report: `None` for one never verified here.
    pub async fn helper_metric_share(
        &self,
        task: &str,
        report_id: &str,
    ) -> Result<Option<(String, Option<String>)>> {
        Ok(sqlx::query_as(
            "SELECT output_share, batch_sha256 FROM helper_metric_reports \
             WHERE task = $1 AND report_id = $2",
        )
        .bind(task)
        .bind(report_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Records a release: every report of `ids` joins the batch, all or nothing. `false` (nothing
    /// written) when one of them is in another batch already (released once, in one batch).
    pub async fn insert_helper_metric_batch(
        conn: &mut AnyConnection,
        task: &str,
        ids: &[String],
        ids_sha256: &str,
        share: &str,
        now: i64,
    ) -> Result<bool> {
        for id in ids {
            let updated = sqlx::query(
                "UPDATE helper_metric_reports SET batch_sha256 = $3 WHERE task = $1 \
                 AND report_id = $2 AND batch_sha256 IS NULL",
            )
            .bind(task)
            .bind(id)
            .bind(ids_sha256)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if updated != 1 {
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO helper_metric_batches (task, ids_sha256, reports, share, released_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(task)
        .bind(ids_sha256)
        .bind(ids.len() as i64)
        .bind(share)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(true)
    }
}
