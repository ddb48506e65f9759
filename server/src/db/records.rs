//! Settings, clients, randomized-response reports and the admin audit log.

use feedloop_core::feedback_volume::KindCounts;
use sqlx::{AnyConnection, Row};

use super::{placeholders, AuditRow, ClientStanding, Store};
use crate::error::{Error, Result};

/// The tables of one-bit randomized-response reports (one bit per client per version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitReports {
    /// The thumbs-up rate of the answer a version ranked first (`/v1/feedback`).
    Thumbs,
    /// Federated evaluation: did the version's model agree (`/v1/feedback/agreement`).
    Agreement,
}

impl BitReports {
    /// A fixed table name (never user input: it is spliced into the SQL).
    fn table(self) -> &'static str {
        match self {
            Self::Thumbs => "rr_reports",
            Self::Agreement => "agreement_reports",
        }
    }
}

impl Store {
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

    /// Registers one client on the group-commit writer's connection.
    pub async fn insert_client_on_ingest(
        &self,
        client_id: &str,
        deployment: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO clients (client_id, deployment, created_at) VALUES ($1, $2, $3)")
            .bind(client_id)
            .bind(deployment)
            .bind(now)
            .execute(&self.ingest)
            .await?;
        Ok(())
    }

    /// Registers several clients in one statement (the group commit of `service::ingest`).
    pub async fn insert_clients(
        conn: &mut AnyConnection,
        clients: &[(&str, &str)],
        now: i64,
    ) -> Result<()> {
        if clients.is_empty() {
            return Ok(());
        }
        let values = placeholders(clients.len(), 3);
        let sql =
            format!("INSERT INTO clients (client_id, deployment, created_at) VALUES {values}");
        let mut query = sqlx::query(&sql);
        for (client_id, deployment) in clients {
            query = query.bind(*client_id).bind(*deployment).bind(now);
        }
        query.execute(conn).await?;
        Ok(())
    }

    /// When the client registered and whether it was revoked; `None`: no such client.
    pub async fn client_standing(&self, client_id: &str) -> Result<Option<ClientStanding>> {
        Ok(sqlx::query_as::<_, ClientStanding>(
            "SELECT created_at, revoked_at FROM clients WHERE client_id = $1",
        )
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Revokes a client (keeping the first revocation time); `None` if there is no such client.
    pub async fn revoke_client(
        conn: &mut AnyConnection,
        client_id: &str,
        now: i64,
    ) -> Result<Option<i64>> {
        sqlx::query(
            "UPDATE clients SET revoked_at = COALESCE(revoked_at, $2) WHERE client_id = $1",
        )
        .bind(client_id)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let row = sqlx::query("SELECT revoked_at FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&mut *conn)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<i64>, _>("revoked_at"))
            .transpose()?
            .flatten())
    }

    pub async fn client_exists(&self, client_id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM clients WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    // ----- one-bit randomized-response reports -----

    /// (reported ones, reports) of a version's bits in `table`.
    pub async fn bit_counts(&self, table: BitReports, version: i64) -> Result<(u64, u64)> {
        let t = table.table();
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM {t} WHERE model_version = $1"
        ))
        .bind(version)
        .fetch_one(&self.pool)
        .await?
        .get(0);
        let ones: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) FROM {t} WHERE model_version = $1 AND bit = 1"
        ))
        .bind(version)
        .fetch_one(&self.pool)
        .await?
        .get(0);
        Ok((ones as u64, total as u64))
    }

    /// A version's bits in `table` by time bucket: `(bucket, ones, reports)` where bucket `b ≥ 0`
    /// holds the reports received in `[start + b·width, start + (b+1)·width)` and bucket `-1`
    /// those before `start`; reports after `end` are left out. Empty buckets are absent.
    pub async fn bit_counts_over_time(
        &self,
        table: BitReports,
        version: i64,
        (start, end, width): (i64, i64, i64),
    ) -> Result<Vec<(i64, u64, u64)>> {
        let t = table.table();
        // Both backends divide BIGINTs as integers; SUM is cast back from PostgreSQL's NUMERIC.
        let rows = sqlx::query(&format!(
            "SELECT b, CAST(SUM(bit) AS BIGINT), COUNT(*) FROM (SELECT bit, CASE WHEN \
             received_at < $2 THEN -1 ELSE (received_at - $2) / $3 END AS b FROM {t} \
             WHERE model_version = $1 AND received_at <= $4) AS bucketed GROUP BY b ORDER BY b"
        ))
        .bind(version)
        .bind(start)
        .bind(width.max(1))
        .bind(end)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let (b, ones, total): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                (b, ones as u64, total as u64)
            })
            .collect())
    }

    // ----- feedback-kinds reports -----

    /// Stores one kinds report; false when this client already reported on the version.
    pub async fn insert_kinds_report(
        &self,
        version: i64,
        client_id: &str,
        kind: &str,
        bit: bool,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO kinds_reports (model_version, client_id, kind, bit, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model_version, client_id) DO NOTHING",
        )
        .bind(version)
        .bind(client_id)
        .bind(kind)
        .bind(bit as i64)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// A version's kinds reports per kind.
    pub async fn kind_counts(&self, version: i64) -> Result<Vec<KindCounts>> {
        let rows = sqlx::query(
            "SELECT kind, CAST(SUM(bit) AS BIGINT), COUNT(*) FROM kinds_reports \
             WHERE model_version = $1 GROUP BY kind",
        )
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(|row| kind_counts(&row, 0)).collect())
    }

    /// The kinds reports received from day `since` on (days since the epoch, UTC), per day and
    /// kind, oldest day first.
    pub async fn kind_counts_by_day(&self, since: i64) -> Result<Vec<(i64, Vec<KindCounts>)>> {
        let rows = sqlx::query(
            "SELECT received_at / 86400000 AS day, kind, CAST(SUM(bit) AS BIGINT), COUNT(*) \
             FROM kinds_reports WHERE received_at >= $1 GROUP BY day, kind ORDER BY day, kind",
        )
        .bind(since * 86_400_000)
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<(i64, Vec<KindCounts>)> = Vec::new();
        for row in rows {
            let day: i64 = row.get(0);
            let counts = kind_counts(&row, 1);
            match out.last_mut() {
                Some((d, list)) if *d == day => list.push(counts),
                _ => out.push((day, vec![counts])),
            }
        }
        Ok(out)
    }

    // ----- segment reports -----

    /// Stores one segment report; false when this client already reported on the version.
    pub async fn insert_segment_report(
        &self,
        version: i64,
        client_id: &str,
        segments: u32,
        cell: u32,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO segment_reports (model_version, client_id, segments, cell, received_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (model_version, client_id) DO NOTHING",
        )
        .bind(version)
        .bind(client_id)
        .bind(i64::from(segments))
        .bind(i64::from(cell))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Reports of each cell of a version's segment reports made over `segments` segments.
    pub async fn segment_counts(&self, version: i64, segments: u32) -> Result<Vec<u64>> {
        let rows = sqlx::query(
            "SELECT cell, COUNT(*) FROM segment_reports WHERE model_version = $1 AND segments = $2 \
             GROUP BY cell",
        )
        .bind(version)
        .bind(i64::from(segments))
        .fetch_all(&self.pool)
        .await?;
        let mut counts = vec![0u64; 2 * segments as usize];
        for row in rows {
            let (cell, count): (i64, i64) = (row.get(0), row.get(1));
            if let Some(slot) = usize::try_from(cell).ok().and_then(|i| counts.get_mut(i)) {
                *slot = count as u64;
            }
        }
        Ok(counts)
    }

    // ----- star-rating reports -----

    /// Reports of each rating (1 to 5 stars, as reported) for a version.
    pub async fn star_counts(&self, version: i64) -> Result<[u64; 5]> {
        let rows = sqlx::query(
            "SELECT stars, COUNT(*) FROM star_reports WHERE model_version = $1 GROUP BY stars",
        )
        .bind(version)
        .fetch_all(&self.pool)
        .await?;
        let mut counts = [0u64; 5];
        for row in rows {
            let (stars, count): (i64, i64) = (row.get(0), row.get(1));
            if let Some(slot) = usize::try_from(stars - 1)
                .ok()
                .and_then(|i| counts.get_mut(i))
            {
                *slot = count as u64;
            }
        }
        Ok(counts)
    }

    /// Inserts a star-rating report; false if this client already reported on this version.
    pub async fn insert_stars(
        &self,
        version: i64,
        client_id: &str,
        stars: u8,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(
            "INSERT INTO star_reports (model_version, client_id, stars, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model_version, client_id) DO NOTHING",
        )
        .bind(version)
        .bind(client_id)
        .bind(i64::from(stars))
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Inserts a report; false if this client already reported on this version.
    /// Stores one bit in `table`; false when this client already reported on the version.
    pub async fn insert_bit(
        &self,
        table: BitReports,
        version: i64,
        client_id: &str,
        bit: bool,
        now: i64,
    ) -> Result<bool> {
        let r = sqlx::query(&format!(
            "INSERT INTO {} (model_version, client_id, bit, received_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (model_version, client_id) DO NOTHING",
            table.table()
        ))
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

/// `(kind, ones, reports)` from columns `at`, `at + 1`, `at + 2`.
fn kind_counts(row: &sqlx::any::AnyRow, at: usize) -> KindCounts {
    let (ones, reports): (i64, i64) = (row.get(at + 1), row.get(at + 2));
    KindCounts {
        kind: row.get(at),
        ones: ones as u64,
        reports: reports as u64,
    }
}
