//! A helper's tasks (the secure rounds its leader opened there) and the reports it verified.

use sqlx::AnyConnection;

use super::{HelperReportRow, HelperTaskRow, Store};
use crate::error::Result;

const TASK_COLUMNS: &str = "round_id, dimension, clip_norm, granularity, noise_stddev, \
    min_reports, verify_key, created_at, released_ids_sha256, released_share, released_at";

impl Store {
    pub async fn helper_task(&self, round_id: i64) -> Result<Option<HelperTaskRow>> {
        Ok(sqlx::query_as::<_, HelperTaskRow>(&format!(
            "SELECT {TASK_COLUMNS} FROM helper_tasks WHERE round_id = $1"
        ))
        .bind(round_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Stores a task, replacing one of the same round that holds no report yet (a leader whose
    /// own commit failed opens the round again, maybe with other terms).
    pub async fn put_helper_task(conn: &mut AnyConnection, t: &HelperTaskRow) -> Result<()> {
        sqlx::query("DELETE FROM helper_tasks WHERE round_id = $1")
            .bind(t.round_id)
            .execute(&mut *conn)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO helper_tasks ({TASK_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, NULL)"
        ))
        .bind(t.round_id)
        .bind(t.dimension)
        .bind(t.clip_norm)
        .bind(t.granularity)
        .bind(t.noise_stddev)
        .bind(t.min_reports)
        .bind(&t.verify_key)
        .bind(t.created_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn helper_report_count(&self, round_id: i64) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COUNT(*) FROM helper_reports WHERE round_id = $1")
                .bind(round_id)
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn helper_report(
        &self,
        round_id: i64,
        report_id: &str,
    ) -> Result<Option<HelperReportRow>> {
        Ok(sqlx::query_as::<_, HelperReportRow>(
            "SELECT client_id, request_sha256, response FROM helper_reports \
             WHERE round_id = $1 AND report_id = $2",
        )
        .bind(round_id)
        .bind(report_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn helper_client_reported(&self, round_id: i64, client_id: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM helper_reports WHERE round_id = $1 AND client_id = $2")
                .bind(round_id)
                .bind(client_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Stores one verified report, unless the task was released meanwhile (then `false`).
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_helper_report(
        conn: &mut AnyConnection,
        round_id: i64,
        report_id: &str,
        client_id: &str,
        request_sha256: &str,
        response: &str,
        output_share: &str,
        now: i64,
    ) -> Result<bool> {
        // A write first (see the module doc of `db`), conditioned on the batch being unreleased.
        let inserted = sqlx::query(
            "INSERT INTO helper_reports (round_id, report_id, client_id, request_sha256, \
             response, output_share, received_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7 FROM helper_tasks \
             WHERE round_id = $1 AND released_at IS NULL",
        )
        .bind(round_id)
        .bind(report_id)
        .bind(client_id)
        .bind(request_sha256)
        .bind(response)
        .bind(output_share)
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }

    /// The round's output shares (report id, base64). No report joins a released batch, and
    /// one is released once, so a read outside the release's transaction is consistent.
    pub async fn helper_output_shares(&self, round_id: i64) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as(
                "SELECT report_id, output_share FROM helper_reports WHERE round_id = $1",
            )
            .bind(round_id)
            .fetch_all(&self.pool)
            .await?,
        )
    }

    /// Records the batch's one release; `false` if it was released already.
    pub async fn mark_helper_released(
        conn: &mut AnyConnection,
        round_id: i64,
        ids_sha256: &str,
        share_base64: &str,
        now: i64,
    ) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE helper_tasks SET released_ids_sha256 = $2, released_share = $3, \
             released_at = $4 WHERE round_id = $1 AND released_at IS NULL",
        )
        .bind(round_id)
        .bind(ids_sha256)
        .bind(share_base64)
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected()
            == 1)
    }
}
