//! Model versions, the current-version setting and the server optimizer's state.

use sqlx::{AnyConnection, Row};

use super::{Store, VersionRow, VERSION_COLUMNS};
use crate::error::{Error, Result};

impl Store {
    // ----- versions -----

    pub async fn version(&self, version: i64) -> Result<Option<VersionRow>> {
        Ok(sqlx::query_as::<_, VersionRow>(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// The version as this transaction sees it.
    pub async fn version_in(conn: &mut AnyConnection, version: i64) -> Result<Option<VersionRow>> {
        Ok(sqlx::query_as::<_, VersionRow>(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(conn)
        .await?)
    }

    /// The number the next published version gets.
    pub async fn next_version(conn: &mut AnyConnection) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions")
                .fetch_one(conn)
                .await?,
        )
    }

    pub async fn versions(&self) -> Result<Vec<VersionRow>> {
        Ok(sqlx::query_as::<_, VersionRow>(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions ORDER BY version"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn current_version(&self) -> Result<i64> {
        let v = self
            .setting("current_version")
            .await?
            .ok_or_else(|| Error::internal("no current version"))?;
        v.parse()
            .map_err(|_| Error::internal("corrupt current_version setting"))
    }

    /// The current version as this transaction sees it.
    pub async fn current_version_in(conn: &mut AnyConnection) -> Result<i64> {
        let v: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = 'current_version'")
                .fetch_optional(conn)
                .await?;
        v.ok_or_else(|| Error::internal("no current version"))?
            .parse()
            .map_err(|_| Error::internal("corrupt current_version setting"))
    }

    pub async fn insert_version(conn: &mut AnyConnection, v: &VersionRow) -> Result<()> {
        if v.clip_norm.is_none() {
            // The base version has no noise parameters. sqlx 0.8.6's Any driver encodes a NULL
            // f64 as a PostgreSQL float4, which poisons the cached prepared statement for later
            // f64 values ("incorrect binary data format"), so NULL floats are never bound: this
            // statement leaves those columns out (they default to NULL).
            sqlx::query(
                "INSERT INTO model_versions (version, parent_version, round_id, head, onnx_sha256, \
                 optimizer, cohort_size, created_at, flagged, flag_reason, flagged_at) VALUES \
                 ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(v.version)
            .bind(v.parent_version)
            .bind(v.round_id)
            .bind(&v.head)
            .bind(&v.onnx_sha256)
            .bind(&v.optimizer)
            .bind(v.cohort_size)
            .bind(v.created_at)
            .bind(v.flagged)
            .bind(&v.flag_reason)
            .bind(v.flagged_at)
            .execute(conn)
            .await?;
            return Ok(());
        }
        sqlx::query(&format!(
            "INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
        ))
        .bind(v.version)
        .bind(v.parent_version)
        .bind(v.round_id)
        .bind(&v.head)
        .bind(&v.onnx_sha256)
        .bind(&v.optimizer)
        .bind(v.cohort_size)
        .bind(v.clip_norm)
        .bind(v.granularity)
        .bind(v.noise_stddev)
        .bind(v.rho)
        .bind(v.epsilon)
        .bind(v.delta)
        .bind(v.created_at)
        .bind(v.flagged)
        .bind(&v.flag_reason)
        .bind(v.flagged_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn set_current_version(conn: &mut AnyConnection, version: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ('current_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(version.to_string())
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Flags a version once; true when this call flagged it.
    pub async fn flag_version(&self, version: i64, reason: &str, now: i64) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE model_versions SET flagged = 1, flag_reason = $1, flagged_at = $2 \
             WHERE version = $3 AND flagged = 0",
        )
        .bind(reason)
        .bind(now)
        .bind(version)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ----- optimizer state -----

    pub async fn optimizer_state(
        conn: &mut AnyConnection,
        deployment: &str,
    ) -> Result<Option<String>> {
        Ok(
            sqlx::query("SELECT state FROM optimizer_state WHERE deployment = $1")
                .bind(deployment)
                .fetch_optional(conn)
                .await?
                .map(|r| r.get::<String, _>(0)),
        )
    }

    pub async fn save_optimizer_state(
        conn: &mut AnyConnection,
        deployment: &str,
        kind: &str,
        state: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO optimizer_state (deployment, kind, state, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (deployment) DO UPDATE SET kind = excluded.kind, state = excluded.state, \
             updated_at = excluded.updated_at",
        )
        .bind(deployment)
        .bind(kind)
        .bind(state)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn clear_optimizer_state(conn: &mut AnyConnection) -> Result<()> {
        sqlx::query("DELETE FROM optimizer_state")
            .execute(conn)
            .await?;
        Ok(())
    }
}
