//! Storage: every SQL statement of the server, in one SQL dialect for SQLite and PostgreSQL
//! through sqlx's `Any` driver. Reads that must see a transaction's own writes take the
//! transaction's connection (`conn`); the rest read through the pool.
//!
//! Portability rules (see migrations/0001_init.sql): `$N` placeholders (SQLite reads `$N` as the
//! N-th argument), BIGINT/DOUBLE PRECISION/TEXT only, no auto-increment, `ON CONFLICT` upserts,
//! no `SUM` (PostgreSQL would return NUMERIC, which `Any` cannot decode). Every write path starts
//! its transaction with a write, so SQLite takes the write lock first (no deferred-upgrade
//! deadlocks) and PostgreSQL serializes submissions and round closing on the round's row lock.

mod helper;
mod records;
mod rollouts;
mod rounds;
mod sealed;
mod versions;

pub use records::BitReports;
pub use rollouts::RolloutRow;
pub use sealed::SealedBatch;

use std::str::FromStr;

use feedloop_core::protocol::RoundStatus;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::AnyPool;

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
    /// One connection of its own for the group-commit writer (`service::ingest`), so that its
    /// transactions never queue behind the readers for a pooled connection.
    ingest: AnyPool,
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
    #[sqlx(try_from = "String")]
    pub status: RoundStatus,
    pub received: i64,
    pub rho: f64,
    pub epsilon: f64,
    pub delta: f64,
    pub created_at: i64,
    pub closed_at: Option<i64>,
    pub close_reason: Option<String>,
    pub cohort_size: Option<i64>,
    pub published_version: Option<i64>,
    /// `local` or `secure` (`feedloop_core::protocol::Aggregation`).
    pub aggregation: String,
    /// A secure round's terms (JSON, `crate::service::secure::SecureTerms`).
    pub secure_terms: Option<String>,
}

/// A secure round as a helper holds it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HelperTaskRow {
    pub round_id: i64,
    pub dimension: i64,
    pub clip_norm: f64,
    pub granularity: f64,
    pub noise_stddev: f64,
    pub min_reports: i64,
    pub verify_key: String,
    pub created_at: i64,
    pub released_ids_sha256: Option<String>,
    pub released_share: Option<String>,
    pub released_at: Option<i64>,
}

/// A secure metric task as the leader holds it (`thumbs@3`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MetricTaskRow {
    pub task: String,
    pub model_version: i64,
    pub metric: String,
    pub buckets: i64,
    pub noise_stddev: f64,
    pub min_reports: i64,
    pub verify_key: String,
    pub created_at: i64,
}

/// A report a helper verified: who sent it (per the leader), the request's digest and the answer.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct HelperReportRow {
    pub client_id: String,
    pub request_sha256: String,
    pub response: String,
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

/// A registered client: when it registered, and when it was revoked (if it was).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ClientStanding {
    pub created_at: i64,
    pub revoked_at: Option<i64>,
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
    created_at, closed_at, close_reason, cohort_size, published_version, aggregation, secure_terms";

pub const VERSION_COLUMNS: &str = "version, parent_version, round_id, head, onnx_sha256, \
    optimizer, cohort_size, clip_norm, granularity, noise_stddev, rho, epsilon, delta, \
    created_at, flagged, flag_reason, flagged_at";

impl Store {
    /// Connects and runs the migrations. SQLite files (and their directory) are created, in WAL
    /// mode.
    pub async fn connect(url: &str, synchronous: crate::config::SqliteSynchronous) -> Result<Self> {
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
        let mut sqlite_file = None;
        if backend == Backend::Sqlite {
            sqlite_file = prepare_sqlite_path(&url)?;
            if !url.contains("mode=") && !url.contains(":memory:") {
                url.push_str(if url.contains('?') {
                    "&mode=rwc"
                } else {
                    "?mode=rwc"
                });
            }
        }
        let options = AnyConnectOptions::from_str(&url)?;
        let pool_of = |size: u32| {
            AnyPoolOptions::new()
                .max_connections(size)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            sqlx::query("PRAGMA busy_timeout = 10000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query(synchronous.pragma())
                                .execute(&mut *conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
        };
        let pool = pool_of(if backend == Backend::Sqlite { 4 } else { 10 })
            .connect_with(options.clone())
            .await?;
        // sqlx locks migrations on PostgreSQL (an advisory lock) but not on SQLite: replicas
        // started together on one SQLite file take a file lock next to it instead. The switch to
        // WAL is under the same lock: it needs an exclusive lock that SQLite does not wait for
        // (no busy handler), so a replica switching while the other migrates failed with
        // "database is locked".
        let _migrating = match &sqlite_file {
            Some(path) => Some(lock_migrations(path).await?),
            None => None,
        };
        if backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
        }
        MIGRATOR.run(&pool).await?;
        // No ping before each use: the writer uses its connection all the time, and a broken
        // one fails its batch, which is retried on a fresh connection.
        let ingest = pool_of(1)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            ingest,
            backend,
        })
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

    /// A transaction on the group-commit writer's own connection.
    pub async fn begin_ingest(&self) -> Result<sqlx::Transaction<'static, sqlx::Any>> {
        Ok(self.ingest.begin().await?)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// `($1, $2, …), (…)`: `rows` tuples of `columns` numbered placeholders, for multi-row inserts.
pub(crate) fn placeholders(rows: usize, columns: usize) -> String {
    (0..rows)
        .map(|r| {
            let row: Vec<String> = (1..=columns)
                .map(|c| format!("${}", r * columns + c))
                .collect();
            format!("({})", row.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// True for a unique-constraint violation (a concurrent duplicate that slipped past the checks).
pub fn is_unique_violation(e: &Error) -> bool {
    matches!(e, Error::Database(sqlx::Error::Database(d)) if d.is_unique_violation())
}

/// Creates the folder of a SQLite file; the file's path (`None` for in-memory databases).
fn prepare_sqlite_path(url: &str) -> Result<Option<std::path::PathBuf>> {
    let path = url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    let path = path.split('?').next().unwrap_or_default();
    if path.is_empty() || path.contains(":memory:") {
        return Ok(None);
    }
    if let Some(dir) = std::path::Path::new(path).parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
        }
    }
    Ok(Some(path.into()))
}

/// An exclusive lock on `<database>-migrate.lock`, held until dropped (waits for another
/// process's migrations to finish).
async fn lock_migrations(database: &std::path::Path) -> Result<std::fs::File> {
    let mut name = database.as_os_str().to_owned();
    name.push("-migrate.lock");
    let path = std::path::PathBuf::from(name);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::internal(format!("cannot open {}: {e}", path.display())))?;
        file.lock()
            .map_err(|e| Error::internal(format!("cannot lock {}: {e}", path.display())))?;
        Ok(file)
    })
    .await
    .map_err(|e| Error::internal(format!("migration lock: {e}")))?
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
