//! Staged rollouts: the canary version, its control and how it ended.

use feedloop_core::protocol::RolloutStatus;
use sqlx::AnyConnection;

use super::Store;
use crate::error::{Error, Result};

/// A rollout as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RolloutRow {
    pub version: i64,
    pub control_version: i64,
    pub fraction: f64,
    pub status: String,
    pub started_at: i64,
    pub decided_at: Option<i64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    pub evidence: Option<String>,
}

impl RolloutRow {
    pub fn status(&self) -> Result<RolloutStatus> {
        self.status
            .parse()
            .map_err(|e: String| Error::internal(format!("stored rollout: {e}")))
    }
}

const COLUMNS: &str = "version, control_version, fraction, status, started_at, decided_at, \
                       decided_by, reason, evidence";

impl Store {
    pub async fn rollouts(&self) -> Result<Vec<RolloutRow>> {
        Ok(sqlx::query_as::<_, RolloutRow>(&format!(
            "SELECT {COLUMNS} FROM rollouts ORDER BY version"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// The running rollout (canary or awaiting approval), if any.
    pub async fn running_rollout(&self) -> Result<Option<RolloutRow>> {
        Ok(sqlx::query_as::<_, RolloutRow>(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE status IN ('canary', 'awaiting_approval')"
        ))
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The running rollout as this transaction sees it.
    pub async fn running_rollout_in(conn: &mut AnyConnection) -> Result<Option<RolloutRow>> {
        Ok(sqlx::query_as::<_, RolloutRow>(&format!(
            "SELECT {COLUMNS} FROM rollouts WHERE status IN ('canary', 'awaiting_approval')"
        ))
        .fetch_optional(conn)
        .await?)
    }

    pub async fn insert_rollout(
        conn: &mut AnyConnection,
        version: i64,
        control_version: i64,
        fraction: f64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO rollouts (version, control_version, fraction, status, started_at) \
             VALUES ($1, $2, $3, 'canary', $4)",
        )
        .bind(version)
        .bind(control_version)
        .bind(fraction)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Moves a running rollout to `status`; false when it was no longer running (another
    /// replica decided first).
    #[allow(clippy::too_many_arguments)]
    pub async fn decide_rollout(
        conn: &mut AnyConnection,
        version: i64,
        status: RolloutStatus,
        decided_by: &str,
        reason: &str,
        evidence: Option<&str>,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE rollouts SET status = $1, decided_at = $2, decided_by = $3, reason = $4, \
             evidence = $5 WHERE version = $6 AND status IN ('canary', 'awaiting_approval')",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(decided_by)
        .bind(reason)
        .bind(evidence.unwrap_or("null"))
        .bind(version)
        .execute(conn)
        .await?;
        Ok(r.rows_affected() == 1)
    }
}
