//! Rounds and the updates stored in them.

use std::collections::HashSet;

use sqlx::{AnyConnection, Row};

use super::{RoundRow, Store, ROUND_COLUMNS};
use crate::error::Result;

impl Store {
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
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)"
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
        .bind(r.status.as_str())
        .bind(r.received)
        .bind(r.rho)
        .bind(r.epsilon)
        .bind(r.delta)
        .bind(r.created_at)
        .bind(r.closed_at)
        .bind(&r.close_reason)
        .bind(r.cohort_size)
        .bind(r.published_version)
        .bind(&r.aggregation)
        .bind(&r.secure_terms)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The round as this transaction sees it.
    pub async fn round_in(conn: &mut AnyConnection, round_id: i64) -> Result<RoundRow> {
        Ok(sqlx::query_as::<_, RoundRow>(&format!(
            "SELECT {ROUND_COLUMNS} FROM rounds WHERE round_id = $1"
        ))
        .bind(round_id)
        .fetch_one(conn)
        .await?)
    }

    /// Changes an open round's cohort and deadline settings.
    pub async fn update_round_settings(
        conn: &mut AnyConnection,
        round_id: i64,
        min_cohort: i64,
        target_count: Option<i64>,
        deadline: Option<i64>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE rounds SET min_cohort = $1, target_count = $2, deadline = $3 \
             WHERE round_id = $4 AND status = 'open'",
        )
        .bind(min_cohort)
        .bind(target_count)
        .bind(deadline)
        .bind(round_id)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Counts one more update into an open round (the submission's first write, which takes the
    /// round's lock); false when the round is no longer open.
    pub async fn bump_received(conn: &mut AnyConnection, round_id: i64) -> Result<bool> {
        let bumped = sqlx::query(
            "UPDATE rounds SET received = received + 1 WHERE round_id = $1 AND status = 'open'",
        )
        .bind(round_id)
        .execute(conn)
        .await?;
        Ok(bumped.rows_affected() == 1)
    }

    /// Counts `n` more updates into an open round (a group commit's first write to the round,
    /// which takes its lock); false when the round is no longer open.
    pub async fn bump_received_by(conn: &mut AnyConnection, round_id: i64, n: i64) -> Result<bool> {
        let bumped = sqlx::query(
            "UPDATE rounds SET received = received + $1 WHERE round_id = $2 AND status = 'open'",
        )
        .bind(n)
        .bind(round_id)
        .execute(conn)
        .await?;
        Ok(bumped.rows_affected() == 1)
    }

    /// Updates the round holds, as this transaction sees it.
    pub async fn received(conn: &mut AnyConnection, round_id: i64) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT received FROM rounds WHERE round_id = $1")
                .bind(round_id)
                .fetch_one(conn)
                .await?,
        )
    }

    /// Moves an open round to `closing` (the close transaction's first write); false when it was
    /// not open.
    pub async fn mark_closing(
        conn: &mut AnyConnection,
        round_id: i64,
        reason: &str,
        now: i64,
    ) -> Result<bool> {
        let closing = sqlx::query(
            "UPDATE rounds SET status = 'closing', closed_at = $1, close_reason = $2 \
             WHERE round_id = $3 AND status = 'open'",
        )
        .bind(now)
        .bind(reason)
        .bind(round_id)
        .execute(conn)
        .await?;
        Ok(closing.rows_affected() == 1)
    }

    /// A closed round that had fewer than its minimum cohort.
    pub async fn mark_insufficient(
        conn: &mut AnyConnection,
        round_id: i64,
        cohort_size: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE rounds SET status = 'insufficient', cohort_size = $1 WHERE round_id = $2",
        )
        .bind(cohort_size)
        .bind(round_id)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A closed round that published `version`.
    pub async fn mark_published(
        conn: &mut AnyConnection,
        round_id: i64,
        cohort_size: i64,
        version: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE rounds SET status = 'published', cohort_size = $1, published_version = $2 \
             WHERE round_id = $3",
        )
        .bind(cohort_size)
        .bind(version)
        .bind(round_id)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// A closing round that publishes nothing because its base version is no longer current.
    pub async fn mark_aborted(conn: &mut AnyConnection, round_id: i64, reason: &str) -> Result<()> {
        sqlx::query("UPDATE rounds SET status = 'aborted', close_reason = $1 WHERE round_id = $2")
            .bind(reason)
            .bind(round_id)
            .execute(conn)
            .await?;
        Ok(())
    }

    /// Aborts every open round (a rollback); how many.
    pub async fn abort_open_rounds(conn: &mut AnyConnection, now: i64) -> Result<u64> {
        Ok(sqlx::query(
            "UPDATE rounds SET status = 'aborted', closed_at = $1, close_reason = 'rollback' \
             WHERE status = 'open'",
        )
        .bind(now)
        .execute(conn)
        .await?
        .rows_affected())
    }

    // ----- updates -----

    /// Whether this client already has an update in the round.
    pub async fn client_has_update(
        conn: &mut AnyConnection,
        round_id: i64,
        client_id: &str,
    ) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM updates WHERE round_id = $1 AND client_id = $2")
                .bind(round_id)
                .bind(client_id)
                .fetch_optional(conn)
                .await?
                .is_some(),
        )
    }

    /// Whether the round holds an update of this client, and one with this digest (pooled
    /// reads: a check before work that must not be done twice, confirmed again at the insert).
    pub async fn update_held(
        &self,
        round_id: i64,
        client_id: &str,
        payload_sha256: &str,
    ) -> Result<(bool, bool)> {
        let mut conn = self.pool.acquire().await?;
        let client = Self::client_has_update(&mut conn, round_id, client_id).await?;
        let payload = Self::payload_seen(&mut conn, round_id, payload_sha256).await?;
        Ok((client, payload))
    }

    /// Whether these exact bytes (by SHA-256) are already in the round.
    pub async fn payload_seen(
        conn: &mut AnyConnection,
        round_id: i64,
        payload_sha256: &str,
    ) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM updates WHERE round_id = $1 AND payload_sha256 = $2")
                .bind(round_id)
                .bind(payload_sha256)
                .fetch_optional(conn)
                .await?
                .is_some(),
        )
    }

    /// Stores one update (`payload` base64-encoded).
    pub async fn insert_update(
        conn: &mut AnyConnection,
        round_id: i64,
        client_id: &str,
        payload_base64: &str,
        payload_sha256: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO updates (round_id, client_id, payload, payload_sha256, received_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(round_id)
        .bind(client_id)
        .bind(payload_base64)
        .bind(payload_sha256)
        .bind(now)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Of these clients and payload digests, those the round already holds (one statement for a
    /// whole group commit).
    pub async fn already_in_round(
        conn: &mut AnyConnection,
        round_id: i64,
        client_ids: &[&str],
        digests: &[&str],
    ) -> Result<(HashSet<String>, HashSet<String>)> {
        let list = |from: usize, n: usize| {
            (from..from + n)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Two index searches (the primary key, the payload index), not an OR, which SQLite
        // answers by scanning the whole round.
        let sql = format!(
            "SELECT client_id, payload_sha256 FROM updates WHERE round_id = $1 AND client_id IN ({}) \
             UNION ALL \
             SELECT client_id, payload_sha256 FROM updates WHERE round_id = $1 AND payload_sha256 IN ({})",
            list(2, client_ids.len()),
            list(2 + client_ids.len(), digests.len()),
        );
        let mut query = sqlx::query_as::<_, (String, String)>(&sql).bind(round_id);
        for c in client_ids {
            query = query.bind(*c);
        }
        for d in digests {
            query = query.bind(*d);
        }
        let rows = query.fetch_all(conn).await?;
        let clients = client_ids
            .iter()
            .map(|c| c.to_string())
            .collect::<HashSet<_>>();
        let seen_clients = rows
            .iter()
            .filter(|(c, _)| clients.contains(c))
            .map(|(c, _)| c.clone())
            .collect();
        let seen_digests = rows.into_iter().map(|(_, d)| d).collect();
        Ok((seen_clients, seen_digests))
    }

    /// Stores several updates in one statement: (client id, base64 payload, payload SHA-256).
    pub async fn insert_updates(
        conn: &mut AnyConnection,
        round_id: i64,
        rows: &[(&str, &str, &str)],
        now: i64,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let sql = format!(
            "INSERT INTO updates (round_id, client_id, payload, payload_sha256, received_at) VALUES {}",
            super::placeholders(rows.len(), 5)
        );
        let mut query = sqlx::query(&sql);
        for (client_id, payload, digest) in rows {
            query = query
                .bind(round_id)
                .bind(*client_id)
                .bind(*payload)
                .bind(*digest)
                .bind(now);
        }
        query.execute(conn).await?;
        Ok(())
    }

    /// The round's stored (base64) payloads, in client order.
    pub async fn payloads(conn: &mut AnyConnection, round_id: i64) -> Result<Vec<String>> {
        Ok(
            sqlx::query_scalar(
                "SELECT payload FROM updates WHERE round_id = $1 ORDER BY client_id",
            )
            .bind(round_id)
            .fetch_all(conn)
            .await?,
        )
    }

    /// Every stored update of a round as (client id, payload SHA-256): what a load test checks
    /// its acknowledged updates against.
    pub async fn update_digests(&self, round_id: i64) -> Result<Vec<(String, String)>> {
        Ok(
            sqlx::query_as("SELECT client_id, payload_sha256 FROM updates WHERE round_id = $1")
                .bind(round_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
