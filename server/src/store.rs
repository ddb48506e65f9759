//! Storage: one SQL dialect for SQLite and PostgreSQL through sqlx's `Any` driver.
//!
//! Portability rules (see migrations/0001_init.sql): `$N` placeholders (SQLite reads `$N` as the
//! N-th argument), BIGINT/DOUBLE PRECISION/TEXT only, no auto-increment, `ON CONFLICT` upserts,
//! no `SUM` (PostgreSQL would return NUMERIC, which `Any` cannot decode). Every write path starts
//! its transaction with a write, so SQLite takes the write lock first (no deferred-upgrade
//! deadlocks) and PostgreSQL serializes submissions and round closing on the round's row lock.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::error::{Error, Result};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

/// A round as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RoundRow {
    pub round_id: i64,
    pub model_version: i64,
    pub dimension: i64,
    pub clip_norm: f64,
    pub granularity: f64,
    pub noise_stddev: f64,
    pub min_cohort: i64,
    pub target_count: Option<i64>,
    pub deadline: Option<i64>,
    pub status: String,
    pub received: i64,
    pub rho: f64,
    pub epsilon: f64,
    pub delta: f64,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub close_reason: Option<String>,
    pub cohort_size: Option<i64>,
    pub published_version: Option<i64>,
}

/// A published model version as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct VersionRow {
    pub version: i64,
    pub parent_version: Option<i64>,
    pub round_id: Option<i64>,
    /// JSON array of f32, `RewardHead::to_vector` order.
    pub head: String,
    pub onnx_sha256: String,
    pub optimizer: String,
    pub cohort_size: i64,
    pub clip_norm: Option<f64>,
    pub granularity: Option<f64>,
    pub noise_stddev: Option<f64>,
    pub rho: Option<f64>,
    pub epsilon: Option<f64>,
    pub delta: Option<f64>,
    pub created_at: i64,
    pub flagged: i64,
    pub flag_reason: Option<String>,
    pub flagged_at: Option<i64>,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuditRow {
    pub id: String,
    pub at: i64,
    pub admin_fingerprint: String,
    pub action: String,
    pub details: String,
}

pub const ROUND_COLUMNS: &str = "round_id, model_version, dimension, clip_norm, granularity, \
    noise_stddev, min_cohort, target_count, deadline, status, received, rho, epsilon, delta, \
    created_at, closed_at, close_reason, cohort_size, published_version";

pub const VERSION_COLUMNS: &str = "version, parent_version, round_id, head, onnx_sha256, \
    optimizer, cohort_size, clip_norm, granularity, noise_stddev, rho, epsilon, delta, \
    created_at, flagged, flag_reason, flagged_at";

impl Store {
    /// Connects and runs the migrations. SQLite files (and their directory) are created, in WAL
    /// mode.
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::internal(format!(
                "unsupported database URL `{}` (sqlite:// or postgres://)",
                redact(url)
            )));
        };
        let mut url = url.to_string();
        if backend == Backend::Sqlite {
            prepare_sqlite_path(&url)?;
            if !url.contains("mode=") && !url.contains(":memory:") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 10 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool, backend })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.pool.begin().await?)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    // ----- settings -----

    pub async fn setting(&self, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| r.get::<String, _>(0)))
    }

    /// Inserts unless present; returns the stored value.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> Result<String> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .bind(key)
        .bind(value)
        .execute(&self.pool)
        .await?;
        self.setting(key)
            .await?
            .ok_or_else(|| Error::internal(format!("setting {key} vanished")))
    }

    // ----- clients -----

    pub async fn insert_client(&self, client_id: &str, deployment: &str, now: i64) -> Result<()> {
        sqlx::query("INSERT INTO clients (client_id, deployment, created_at) VALUES ($1, $2, $3)")
            .bind(client_id)
            .bind(deployment)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn client_exists(&self, client_id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    // ----- rounds -----

    pub async fn round(&self, round_id: i64) -> Result<Option<RoundRow>> {
        Ok(sqlx::query_as::<_, RoundRow>(&format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE round_id = $1"
        ))
        .bind(round_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn open_round(&self) -> Result<Option<RoundRow>> {
        Ok(sqlx::query_as::<_, RoundRow>(&format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE status = 'open' ORDER BY round_id DESC"
        ))
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn rounds(&self, limit: i64) -> Result<Vec<RoundRow>> {
        Ok(sqlx::query_as::<_, RoundRow>(&format!(
            "SELECT {ROUND_COLUMNS} FROM rounds ORDER BY round_id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Open rounds whose deadline has passed.
    pub async fn expired_rounds(&self, now: i64) -> Result<Vec<i64>> {
        Ok(sqlx::query(
            "SELECT round_id FROM rounds WHERE status = 'open' AND deadline IS NOT NULL AND deadline <= $1",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.get::<i64, _>(0))
        .collect())
    }

    pub async fn next_round_id(conn: &mut AnyConnection) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COALESCE(MAX(round_id), 0) + 1 FROM rounds")
                .fetch_one(conn)
                .await?
                .get::<i64, _>(0),
        )
    }

    pub async fn insert_round(conn: &mut AnyConnection, r: &RoundRow) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO rounds ({ROUND_COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        ))
        .bind(r.round_id)
        .bind(r.model_version)
        .bind(r.dimension)
        .bind(r.clip_norm)
        .bind(r.granularity)
        .bind(r.noise_stddev)
        .bind(r.min_cohort)
        .bind(r.target_count)
        .bind(r.deadline)
        .bind(&r.status)
        .bind(r.received)
        .bind(r.rho)
        .bind(r.epsilon)
        .bind(r.delta)
        .bind(r.created_at)
        .bind(r.closed_at)
        .bind(&r.close_reason)
        .bind(r.cohort_size)
        .bind(r.published_version)
        .execute(conn)
        .await?;
        Ok(())
    }

    // ----- versions -----

    pub async fn version(&self, version: i64) -> Result<Option<VersionRow>> {
        Ok(sqlx::query_as::<_, VersionRow>(&format!(
            "SELECT {VERSION_COLUMNS} FROM model_versions WHERE version = $1"
        ))
        .bind(version)
        .fetch_optional(&self.pool)
        .await?)
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

    // ----- RR reports -----

    /// (ones, total) for a version.
    pub async fn rr_counts(&self, version: i64) -> Result<(u64, u64)> {
        let row = sqlx::query("SELECT COUNT(*) FROM rr_reports WHERE model_version = $1")
            .bind(version)
            .fetch_one(&self.pool)
            .await?;
        let total: i64 = row.get(0);
        let ones: i64 =
            sqlx::query("SELECT COUNT(*) FROM rr_reports WHERE model_version = $1 AND bit = 1")
                .bind(version)
                .fetch_one(&self.pool)
                .await?
                .get(0);
        Ok((ones as u64, total as u64))
    }

    /// Inserts a report; false if this client already reported on this version.
    pub async fn insert_rr(
        &self,
        version: i64,
        client_id: &str,
        bit: bool,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO rr_reports (model_version, client_id, bit, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model_version, client_id) DO NOTHING",
        )
        .bind(version)
        .bind(client_id)
        .bind(bit as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    // ----- audit -----

    pub async fn audit(
        conn: &mut AnyConnection,
        admin_fingerprint: &str,
        action: &str,
        details: &serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let id = crate::onnx::hex(&crate::auth::random_bytes::<16>()?);
        sqlx::query(
            "INSERT INTO audit_log (id, at, admin_fingerprint, action, details) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(now)
        .bind(admin_fingerprint)
        .bind(action)
        .bind(details.to_string())
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn audit_log(&self, limit: i64) -> Result<Vec<AuditRow>> {
        Ok(sqlx::query_as::<_, AuditRow>(
            "SELECT id, at, admin_fingerprint, action, details FROM audit_log ORDER BY at DESC, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// True for a unique-constraint violation (a concurrent duplicate that slipped past the checks).
pub fn is_unique_violation(e: &Error) -> bool {
    matches!(e, Error::Database(sqlx::Error::Database(d)) if d.is_unique_violation())
}

fn prepare_sqlite_path(url: &str) -> Result<()> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return Ok(());
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    Ok(())
}

/// The URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
