//! The server's behaviour, independent of HTTP: rounds, submissions, aggregation and publishing,
//! rollback, randomized-response statistics and drift flags.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_core::RewardModel;
use feedloop_privacy::accounting::zcdp_to_approx_dp;
use feedloop_privacy::randomized_response::{ProportionEstimate, RandomizedResponse};
use feedloop_privacy::{decode_update, ExpectedRound, PrivatizerConfig};
use serde_json::json;

use crate::auth::{self, Claims, TokenSigner};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::fedavg::{fedavg_lattice, OptimizerState};
use crate::metrics::Metrics;
use crate::onnx::{rewrite_head, sha256_hex};
use crate::store::{is_unique_violation, RoundRow, Store, VersionRow};

/// The key optimizer state is stored under (one model lineage per server).
pub const DEPLOYMENT_STATE_KEY: &str = "default";

/// Shared state behind every handler.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    signer: TokenSigner,
    metrics: Metrics,
    /// Serializes round opening/closing, publishing and rollback within this process.
    lifecycle: tokio::sync::Mutex<()>,
    dimension: usize,
    head_dimensions: usize,
    http: reqwest::Client,
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new round's configuration (admin).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewRound {
    pub clip_norm: f64,
    pub granularity: f64,
    pub noise_stddev: f64,
    pub min_cohort: i64,
    #[serde(default)]
    pub target_count: Option<i64>,
    /// Unix ms.
    #[serde(default)]
    pub deadline: Option<i64>,
    /// Alternative to `deadline`: seconds from now.
    #[serde(default)]
    pub duration_seconds: Option<f64>,
    /// Must equal the model's parameter count when given.
    #[serde(default)]
    pub dimension: Option<i64>,
}

/// Changes to an open round (admin). C, γ, σ and the dimension cannot change once open.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoundChange {
    #[serde(default)]
    pub min_cohort: Option<i64>,
    #[serde(default)]
    pub target_count: Option<i64>,
    #[serde(default)]
    pub deadline: Option<i64>,
}

/// A de-biased thumbs-up rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateEstimate {
    pub ones: u64,
    pub total: u64,
    pub estimate: Option<ProportionEstimate>,
}

/// Outcome of an accepted submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub round_id: i64,
    pub received: i64,
    /// The round closed because it reached its target count.
    pub closed: Option<RoundRow>,
}

impl App {
    /// Connects, migrates, and bootstraps version 1 from the base model.
    pub async fn new(config: Config) -> Result<Self> {
        let store = Store::connect(&config.database_url).await?;
        let base = RewardModel::from_bytes(&config.base_model)
            .map_err(|e| Error::internal(format!("base model: {e}")))?;
        let head = base.head().to_vector();
        let head_dimensions = base.head().dimensions();
        let secret = match &config.token_secret {
            Some(s) => s.clone(),
            None => {
                let generated = crate::onnx::hex(&auth::random_bytes::<32>()?);
                store
                    .setting_or_insert("token_secret", &generated)
                    .await?
                    .into_bytes()
            }
        };
        let app = Self {
            inner: Arc::new(Inner {
                signer: TokenSigner::new(secret),
                store,
                metrics: Metrics::default(),
                lifecycle: tokio::sync::Mutex::new(()),
                dimension: head.len(),
                head_dimensions,
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .map_err(|e| Error::internal(format!("HTTP client: {e}")))?,
                config,
            }),
        };
        app.bootstrap(&head).await?;
        Ok(app)
    }

    async fn bootstrap(&self, head: &[f32]) -> Result<()> {
        let _guard = self.inner.lifecycle.lock().await;
        if self.store().version(1).await?.is_some() {
            return Ok(());
        }
        let onnx = rewrite_head(&self.inner.config.base_model, head, "1")?;
        let mut tx = self.store().begin().await?;
        Store::insert_version(
            &mut tx,
            &VersionRow {
                version: 1,
                parent_version: None,
                round_id: None,
                head: serde_json::to_string(head).expect("floats serialize"),
                onnx_sha256: sha256_hex(&onnx),
                optimizer: "base".into(),
                cohort_size: 0,
                clip_norm: None,
                granularity: None,
                noise_stddev: None,
                rho: None,
                epsilon: None,
                delta: None,
                created_at: now_ms(),
                flagged: 0,
                flag_reason: None,
                flagged_at: None,
            },
        )
        .await?;
        Store::set_current_version(&mut tx, 1).await?;
        tx.commit().await?;
        tracing::info!("bootstrapped model version 1 from the base model");
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
    /// The update dimension (head parameter count).
    pub fn dimension(&self) -> usize {
        self.inner.dimension
    }

    // ----- clients -----

    /// First contact: a new client id and its token.
    pub async fn register(&self, deployment_key: &str) -> Result<(Claims, String)> {
        let deployment = auth::deployment_for(&self.config().deployment_keys, deployment_key)
            .ok_or_else(|| Error::Unauthorized("unknown deployment key".into()))?
            .to_string();
        let client_id = crate::onnx::hex(&auth::random_bytes::<16>()?);
        let now = now_ms();
        self.store()
            .insert_client(&client_id, &deployment, now)
            .await?;
        Metrics::inc(&self.metrics().clients_registered);
        let claims = Claims {
            client_id,
            deployment,
            expires_at: now + self.config().token_ttl.as_millis() as i64,
        };
        let token = self.inner.signer.issue(&claims);
        Ok((claims, token))
    }

    /// A fresh token for the holder of a valid one.
    pub fn refresh(&self, claims: &Claims) -> (Claims, String) {
        let claims = Claims {
            expires_at: now_ms() + self.config().token_ttl.as_millis() as i64,
            ..claims.clone()
        };
        let token = self.inner.signer.issue(&claims);
        (claims, token)
    }

    pub fn verify_token(&self, token: &str) -> Result<Claims> {
        self.inner.signer.verify(token, now_ms())
    }

    /// The admin key's fingerprint, or 401/403.
    pub fn admin(&self, presented: &str) -> Result<String> {
        if self.config().admin_keys.is_empty() {
            return Err(Error::Forbidden(
                "the admin API is disabled (no admin key configured)".into(),
            ));
        }
        auth::admin_fingerprint(&self.config().admin_keys, presented)
            .ok_or_else(|| Error::Unauthorized("invalid admin key".into()))
    }

    // ----- rounds -----

    pub async fn round(&self, round_id: i64) -> Result<RoundRow> {
        self.store()
            .round(round_id)
            .await?
            .ok_or_else(|| Error::not_found("round_not_found", format!("no round {round_id}")))
    }

    /// The open round (closing it first if its deadline passed).
    pub async fn current_round(&self) -> Result<RoundRow> {
        if let Some(r) = self.store().open_round().await? {
            if r.deadline.is_some_and(|d| d <= now_ms()) {
                self.close_round(r.round_id, "deadline", None).await?;
            } else {
                return Ok(r);
            }
        }
        Err(Error::not_found("no_open_round", "no round is open"))
    }

    /// Opens a round on the current version.
    pub async fn open_round(&self, admin_fp: &str, req: NewRound) -> Result<RoundRow> {
        let cfg = PrivatizerConfig::new(req.clip_norm, req.granularity, req.noise_stddev)
            .map_err(|e| Error::bad_request("invalid_round_config", e.to_string()))?;
        let dimension = self.dimension();
        if let Some(d) = req.dimension {
            if d != dimension as i64 {
                return Err(Error::bad_request(
                    "invalid_round_config",
                    format!("dimension {d} differs from the model's {dimension} head parameters"),
                ));
            }
        }
        cfg.prerounding_radius(dimension)
            .map_err(|e| Error::bad_request("invalid_round_config", e.to_string()))?;
        if req.min_cohort < 1 {
            return Err(Error::bad_request(
                "invalid_round_config",
                "minCohort must be at least 1",
            ));
        }
        if req.target_count.is_some_and(|t| t < req.min_cohort) {
            return Err(Error::bad_request(
                "invalid_round_config",
                "targetCount must be at least minCohort",
            ));
        }
        let now = now_ms();
        let deadline = match (req.deadline, req.duration_seconds) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_request(
                    "invalid_round_config",
                    "give deadline or durationSeconds, not both",
                ))
            }
            (Some(d), None) => Some(d),
            (None, Some(s)) if s.is_finite() && s > 0.0 => Some(now + (s * 1000.0) as i64),
            (None, Some(_)) => {
                return Err(Error::bad_request(
                    "invalid_round_config",
                    "durationSeconds must be positive",
                ))
            }
            (None, None) => None,
        };
        if deadline.is_some_and(|d| d <= now) {
            return Err(Error::bad_request(
                "invalid_round_config",
                "the deadline is in the past",
            ));
        }
        let rho = cfg.rho();
        let epsilon = zcdp_to_approx_dp(rho, self.config().delta)
            .map_err(|e| Error::bad_request("invalid_round_config", e.to_string()))?;

        let _guard = self.inner.lifecycle.lock().await;
        if let Some(open) = self.store().open_round().await? {
            return Err(Error::conflict(
                "round_already_open",
                format!("round {} is still open; close it first", open.round_id),
            ));
        }
        let model_version = self.store().current_version().await?;
        let mut tx = self.store().begin().await?;
        // A write first (see store.rs).
        Store::audit(
            &mut tx,
            admin_fp,
            "round.open",
            &json!({ "request": {
                "clipNorm": req.clip_norm, "granularity": req.granularity,
                "noiseStddev": req.noise_stddev, "minCohort": req.min_cohort,
                "targetCount": req.target_count, "deadline": deadline,
            }, "modelVersion": model_version }),
            now,
        )
        .await?;
        let round = RoundRow {
            round_id: Store::next_round_id(&mut tx).await?,
            model_version,
            dimension: dimension as i64,
            clip_norm: req.clip_norm,
            granularity: req.granularity,
            noise_stddev: req.noise_stddev,
            min_cohort: req.min_cohort,
            target_count: req.target_count,
            deadline,
            status: "open".into(),
            received: 0,
            rho,
            epsilon,
            delta: self.config().delta,
            created_at: now,
            closed_at: None,
            close_reason: None,
            cohort_size: None,
            published_version: None,
        };
        Store::insert_round(&mut tx, &round).await?;
        tx.commit().await?;
        tracing::info!(
            round = round.round_id,
            model_version,
            epsilon,
            "round opened"
        );
        Ok(round)
    }

    /// Changes the cohort/deadline settings of an open round.
    pub async fn change_round(
        &self,
        admin_fp: &str,
        round_id: i64,
        change: RoundChange,
    ) -> Result<RoundRow> {
        let _guard = self.inner.lifecycle.lock().await;
        let before = self.round(round_id).await?;
        if before.status != "open" {
            return Err(Error::conflict(
                "round_closed",
                format!("round {round_id} is {}", before.status),
            ));
        }
        let min_cohort = change.min_cohort.unwrap_or(before.min_cohort);
        let target_count = change.target_count.or(before.target_count);
        let deadline = change.deadline.or(before.deadline);
        if min_cohort < 1 || target_count.is_some_and(|t| t < min_cohort) {
            return Err(Error::bad_request(
                "invalid_round_config",
                "need minCohort >= 1 and targetCount >= minCohort",
            ));
        }
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        sqlx::query(
            "UPDATE rounds SET min_cohort = $1, target_count = $2, deadline = $3 \
             WHERE round_id = $4 AND status = 'open'",
        )
        .bind(min_cohort)
        .bind(target_count)
        .bind(deadline)
        .bind(round_id)
        .execute(&mut *tx)
        .await?;
        Store::audit(
            &mut tx,
            admin_fp,
            "round.update",
            &json!({ "roundId": round_id,
                "before": { "minCohort": before.min_cohort, "targetCount": before.target_count, "deadline": before.deadline },
                "after": { "minCohort": min_cohort, "targetCount": target_count, "deadline": deadline } }),
            now,
        )
        .await?;
        tx.commit().await?;
        drop(_guard);
        let after = self.round(round_id).await?;
        if target_count.is_some_and(|t| after.received >= t) {
            return self.close_round(round_id, "target_count", None).await;
        }
        Ok(after)
    }

    /// Validates and durably stores one update; acknowledges only after commit.
    pub async fn submit_update(
        &self,
        claims: &Claims,
        round_id: i64,
        model_version: Option<&str>,
        payload: &[u8],
    ) -> Result<Accepted> {
        let result = self
            .submit_inner(claims, round_id, model_version, payload)
            .await;
        match &result {
            Ok(_) => Metrics::inc(&self.metrics().updates_accepted),
            Err(e) => self.metrics().reject(e.code()),
        }
        let accepted = result?;
        // Closing at the target count happens after the update is committed and acknowledged
        // in the log; a failure to close leaves the round open (closed later by admin/deadline).
        let round = self.round(round_id).await?;
        if round.status == "open" && round.target_count.is_some_and(|t| round.received >= t) {
            match self.close_round(round_id, "target_count", None).await {
                Ok(closed) => {
                    return Ok(Accepted {
                        closed: Some(closed),
                        ..accepted
                    })
                }
                Err(e) => tracing::error!(round = round_id, error = %e, "closing at target failed"),
            }
        }
        Ok(accepted)
    }

    async fn submit_inner(
        &self,
        claims: &Claims,
        round_id: i64,
        model_version: Option<&str>,
        payload: &[u8],
    ) -> Result<Accepted> {
        let round = self.round(round_id).await?;
        if round.status != "open" {
            return Err(Error::conflict(
                "round_closed",
                format!(
                    "round {round_id} is {} and takes no more updates",
                    round.status
                ),
            ));
        }
        if round.deadline.is_some_and(|d| d <= now_ms()) {
            // Close it now; the late update is refused either way.
            if let Err(e) = self.close_round(round_id, "deadline", None).await {
                tracing::error!(round = round_id, error = %e, "closing past deadline failed");
            }
            return Err(Error::conflict(
                "round_closed",
                format!("round {round_id} passed its deadline"),
            ));
        }
        let Some(model_version) = model_version else {
            return Err(Error::bad_request(
                "missing_model_version",
                "send the model version the update was computed against in X-Feedloop-Model-Version",
            ));
        };
        if model_version != round.model_version.to_string() {
            return Err(Error::conflict(
                "stale_model_version",
                format!(
                    "the update was computed against model version {model_version}, but round {round_id} \
                     aggregates updates to version {}; fetch GET /v1/models/current, retrain and resubmit",
                    round.model_version
                ),
            ));
        }
        let cfg = PrivatizerConfig::new(round.clip_norm, round.granularity, round.noise_stddev)
            .map_err(|e| Error::internal(format!("stored round config: {e}")))?;
        decode_update(
            payload,
            &ExpectedRound {
                config: cfg,
                dimension: round.dimension as usize,
            },
        )
        .map_err(|e| Error::unprocessable("invalid_update", e.to_string()))?;

        let digest = sha256_hex(payload);
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let bumped = sqlx::query(
            "UPDATE rounds SET received = received + 1 WHERE round_id = $1 AND status = 'open'",
        )
        .bind(round_id)
        .execute(&mut *tx)
        .await?;
        if bumped.rows_affected() != 1 {
            return Err(Error::conflict(
                "round_closed",
                format!("round {round_id} closed before the update arrived"),
            ));
        }
        let mine = sqlx::query("SELECT 1 FROM updates WHERE round_id = $1 AND client_id = $2")
            .bind(round_id)
            .bind(&claims.client_id)
            .fetch_optional(&mut *tx)
            .await?;
        if mine.is_some() {
            return Err(Error::conflict(
                "duplicate_update",
                format!("this client already submitted an update to round {round_id}"),
            ));
        }
        let replay =
            sqlx::query("SELECT 1 FROM updates WHERE round_id = $1 AND payload_sha256 = $2")
                .bind(round_id)
                .bind(&digest)
                .fetch_optional(&mut *tx)
                .await?;
        if replay.is_some() {
            return Err(replayed());
        }
        let inserted = sqlx::query(
            "INSERT INTO updates (round_id, client_id, payload, payload_sha256, received_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(round_id)
        .bind(&claims.client_id)
        .bind(STANDARD.encode(payload))
        .bind(&digest)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(Error::from);
        if let Err(e) = inserted {
            return Err(if is_unique_violation(&e) {
                Error::conflict(
                    "duplicate_update",
                    "a concurrent submission with this client or payload won",
                )
            } else {
                e
            });
        }
        let received: i64 = sqlx::query_scalar("SELECT received FROM rounds WHERE round_id = $1")
            .bind(round_id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::debug!(round = round_id, received, "update stored");
        Ok(Accepted {
            round_id,
            received,
            closed: None,
        })
    }

    /// Closes a round: below the minimum cohort nothing is published; otherwise FedAvg, the
    /// server optimizer, and a new version (head, ONNX digest, privacy metadata) in one transaction.
    pub async fn close_round(
        &self,
        round_id: i64,
        reason: &str,
        admin_fp: Option<&str>,
    ) -> Result<RoundRow> {
        let round = self.close_round_locked(round_id, reason, admin_fp).await?;
        self.reopen_auto_round().await;
        Ok(round)
    }

    /// With an automatic round configured, the next one opens at once (not at the next poll).
    async fn reopen_auto_round(&self) {
        if let Err(e) = self.ensure_auto_round().await {
            tracing::error!(error = %e, "opening the automatic round failed");
        }
    }

    async fn close_round_locked(
        &self,
        round_id: i64,
        reason: &str,
        admin_fp: Option<&str>,
    ) -> Result<RoundRow> {
        let _guard = self.inner.lifecycle.lock().await;
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let closing = sqlx::query(
            "UPDATE rounds SET status = 'closing', closed_at = $1, close_reason = $2 \
             WHERE round_id = $3 AND status = 'open'",
        )
        .bind(now)
        .bind(reason)
        .bind(round_id)
        .execute(&mut *tx)
        .await?;
        if closing.rows_affected() != 1 {
            drop(tx);
            let round = self.round(round_id).await?;
            return if admin_fp.is_some() {
                Err(Error::conflict(
                    "round_closed",
                    format!("round {round_id} is already {}", round.status),
                ))
            } else {
                Ok(round)
            };
        }
        if let Some(fp) = admin_fp {
            Store::audit(
                &mut tx,
                fp,
                "round.close",
                &json!({ "roundId": round_id }),
                now,
            )
            .await?;
        }
        let round: RoundRow = sqlx::query_as(&format!(
            "SELECT {} FROM rounds WHERE round_id = $1",
            crate::store::ROUND_COLUMNS
        ))
        .bind(round_id)
        .fetch_one(&mut *tx)
        .await?;
        let payloads: Vec<String> = sqlx::query_scalar(
            "SELECT payload FROM updates WHERE round_id = $1 ORDER BY client_id",
        )
        .bind(round_id)
        .fetch_all(&mut *tx)
        .await?;
        let n = payloads.len() as i64;
        if n < round.min_cohort {
            sqlx::query(
                "UPDATE rounds SET status = 'insufficient', cohort_size = $1 WHERE round_id = $2",
            )
            .bind(n)
            .bind(round_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Metrics::inc(&self.metrics().rounds_insufficient);
            tracing::warn!(
                round = round_id,
                cohort = n,
                min_cohort = round.min_cohort,
                "round closed below the minimum cohort; nothing published"
            );
            return self.round(round_id).await;
        }

        // Decode again (stored payloads were validated on arrival) and average exactly.
        let cfg = PrivatizerConfig::new(round.clip_norm, round.granularity, round.noise_stddev)
            .map_err(|e| Error::internal(format!("stored round config: {e}")))?;
        let expected = ExpectedRound {
            config: cfg,
            dimension: round.dimension as usize,
        };
        let mut lattices = Vec::with_capacity(payloads.len());
        for p in &payloads {
            let bytes = STANDARD
                .decode(p)
                .map_err(|e| Error::internal(format!("stored payload: {e}")))?;
            let update = decode_update(&bytes, &expected)
                .map_err(|e| Error::internal(format!("stored payload: {e}")))?;
            lattices.push(update.into_values());
        }
        let mean = fedavg_lattice(&lattices, round.granularity)?;

        let base = self
            .store()
            .version(round.model_version)
            .await?
            .ok_or_else(|| Error::internal("the round's base version vanished"))?;
        let head: Vec<f32> = serde_json::from_str(&base.head)
            .map_err(|e| Error::internal(format!("stored head: {e}")))?;
        let head64: Vec<f64> = head.iter().map(|&h| h as f64).collect();
        let optimizer = self.config().optimizer;
        let mut state = match Store::optimizer_state(&mut tx, DEPLOYMENT_STATE_KEY).await? {
            Some(s) => serde_json::from_str(&s)
                .map_err(|e| Error::internal(format!("stored optimizer state: {e}")))?,
            None => OptimizerState::fresh(optimizer.name(), head64.len()),
        };
        let new_head: Vec<f32> = optimizer
            .step(&head64, &mean, &mut state)
            .into_iter()
            .map(|h| h as f32)
            .collect();
        feedloop_core::RewardHead::from_vector(self.inner.head_dimensions, &new_head)
            .map_err(|e| Error::internal(format!("aggregated head is not a valid head: {e}")))?;
        let version: i64 =
            sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions")
                .fetch_one(&mut *tx)
                .await?;
        let onnx = rewrite_head(&self.config().base_model, &new_head, &version.to_string())?;
        Store::insert_version(
            &mut tx,
            &VersionRow {
                version,
                parent_version: Some(round.model_version),
                round_id: Some(round_id),
                head: serde_json::to_string(&new_head).expect("floats serialize"),
                onnx_sha256: sha256_hex(&onnx),
                optimizer: optimizer.name().into(),
                cohort_size: n,
                clip_norm: Some(round.clip_norm),
                granularity: Some(round.granularity),
                noise_stddev: Some(round.noise_stddev),
                rho: Some(round.rho),
                epsilon: Some(round.epsilon),
                delta: Some(round.delta),
                created_at: now,
                flagged: 0,
                flag_reason: None,
                flagged_at: None,
            },
        )
        .await?;
        Store::set_current_version(&mut tx, version).await?;
        Store::save_optimizer_state(
            &mut tx,
            DEPLOYMENT_STATE_KEY,
            optimizer.name(),
            &serde_json::to_string(&state).expect("state serializes"),
            now,
        )
        .await?;
        sqlx::query(
            "UPDATE rounds SET status = 'published', cohort_size = $1, published_version = $2 \
             WHERE round_id = $3",
        )
        .bind(n)
        .bind(version)
        .bind(round_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Metrics::inc(&self.metrics().rounds_published);
        tracing::info!(
            round = round_id,
            version,
            cohort = n,
            epsilon = round.epsilon,
            optimizer = optimizer.name(),
            "published model version"
        );
        self.round(round_id).await
    }

    /// With `config.auto_round`: opens a round on the current version when none is open.
    pub async fn ensure_auto_round(&self) -> Result<Option<RoundRow>> {
        let Some(template) = self.config().auto_round.clone() else {
            return Ok(None);
        };
        if self.store().open_round().await?.is_some() {
            return Ok(None);
        }
        match self.open_round("auto-round", template).await {
            Ok(round) => Ok(Some(round)),
            // Another process (or request) opened one meanwhile.
            Err(Error::Conflict { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Closes every open round whose deadline passed (the background task).
    pub async fn close_expired(&self) -> Result<()> {
        for round_id in self.store().expired_rounds(now_ms()).await? {
            self.close_round(round_id, "deadline", None).await?;
        }
        Ok(())
    }

    /// Points "current" at an earlier version; aborts an open round (its updates were computed
    /// against the abandoned version) and resets the optimizer state.
    pub async fn rollback(&self, admin_fp: &str, version: i64) -> Result<VersionRow> {
        let row = self.rollback_locked(admin_fp, version).await?;
        self.reopen_auto_round().await;
        Ok(row)
    }

    async fn rollback_locked(&self, admin_fp: &str, version: i64) -> Result<VersionRow> {
        let _guard = self.inner.lifecycle.lock().await;
        let target = self.store().version(version).await?.ok_or_else(|| {
            Error::not_found("version_not_found", format!("no model version {version}"))
        })?;
        let current = self.store().current_version().await?;
        if version == current {
            return Err(Error::conflict(
                "already_current",
                format!("version {version} is already current"),
            ));
        }
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        Store::set_current_version(&mut tx, version).await?;
        let aborted = sqlx::query(
            "UPDATE rounds SET status = 'aborted', closed_at = $1, close_reason = 'rollback' \
             WHERE status = 'open'",
        )
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        Store::clear_optimizer_state(&mut tx).await?;
        Store::audit(
            &mut tx,
            admin_fp,
            "model.rollback",
            &json!({ "from": current, "to": version, "abortedRounds": aborted }),
            now,
        )
        .await?;
        tx.commit().await?;
        Metrics::inc(&self.metrics().rollbacks);
        tracing::warn!(
            from = current,
            to = version,
            "rolled back the current model version"
        );
        Ok(target)
    }

    // ----- versions -----

    pub async fn version(&self, version: i64) -> Result<VersionRow> {
        self.store().version(version).await?.ok_or_else(|| {
            Error::not_found("version_not_found", format!("no model version {version}"))
        })
    }

    /// The ONNX file of a version (rebuilt from the base model; checked against the digest
    /// recorded at publication).
    pub async fn onnx(&self, version: i64) -> Result<Vec<u8>> {
        let v = self.version(version).await?;
        let head: Vec<f32> = serde_json::from_str(&v.head)
            .map_err(|e| Error::internal(format!("stored head: {e}")))?;
        let bytes = rewrite_head(&self.config().base_model, &head, &version.to_string())?;
        if sha256_hex(&bytes) != v.onnx_sha256 {
            return Err(Error::internal(format!(
                "the ONNX file of version {version} no longer matches its recorded digest: \
                 the server was started with a different base model"
            )));
        }
        Ok(bytes)
    }

    // ----- randomized response, drift -----

    fn rr(&self) -> Result<RandomizedResponse> {
        RandomizedResponse::new(self.config().rr_epsilon)
            .map_err(|e| Error::internal(format!("rr epsilon: {e}")))
    }

    /// The de-biased thumbs-up rate of a version.
    pub async fn rate(&self, version: i64) -> Result<RateEstimate> {
        let (ones, total) = self.store().rr_counts(version).await?;
        let estimate = if total == 0 {
            None
        } else {
            Some(
                self.rr()?
                    .estimate_proportion(ones, total)
                    .map_err(|e| Error::internal(e.to_string()))?,
            )
        };
        Ok(RateEstimate {
            ones,
            total,
            estimate,
        })
    }

    /// Stores one randomized-response bit (one per client per version), then runs the drift test.
    pub async fn report(&self, claims: &Claims, version: i64, bit: bool) -> Result<()> {
        let v = self.version(version).await?;
        if !self
            .store()
            .insert_rr(version, &claims.client_id, bit, now_ms())
            .await?
        {
            return Err(Error::conflict(
                "duplicate_report",
                format!("this client already reported on model version {version}"),
            ));
        }
        Metrics::inc(&self.metrics().rr_reports);
        if v.flagged == 0 {
            if let Some(parent) = v.parent_version {
                self.check_drift(version, parent).await?;
            }
        }
        Ok(())
    }

    /// One-sided two-proportion z-test on the de-biased rates: flag `version` when
    /// `(p_parent − p_version − margin) / √(Var_parent + Var_version) > z_critical`.
    pub async fn check_drift(&self, version: i64, parent: i64) -> Result<Option<String>> {
        let drift = &self.config().drift;
        let (new, old) = (self.rate(version).await?, self.rate(parent).await?);
        let (Some(n), Some(o)) = (new.estimate, old.estimate) else {
            return Ok(None);
        };
        if new.total < drift.min_reports || old.total < drift.min_reports {
            return Ok(None);
        }
        let drop = o.proportion - n.proportion;
        let se = (o.variance + n.variance).sqrt();
        let significant = if se > 0.0 {
            (drop - drift.margin) / se > drift.z_critical
        } else {
            drop > drift.margin
        };
        if !significant {
            return Ok(None);
        }
        let z = if se > 0.0 {
            (drop - drift.margin) / se
        } else {
            f64::INFINITY
        };
        let reason = format!(
            "thumbs-up rate {:.4} is below version {parent}'s {:.4} by {:.4} > margin {} \
             (z = {z:.2} > {}; {} and {} reports)",
            n.proportion, o.proportion, drop, drift.margin, drift.z_critical, new.total, old.total
        );
        if self
            .store()
            .flag_version(version, &reason, now_ms())
            .await?
        {
            Metrics::inc(&self.metrics().versions_flagged);
            tracing::warn!(version, parent, %reason, "drift: model version flagged");
            if let Some(url) = drift.webhook_url.clone() {
                let body = json!({ "event": "feedloop.version.flagged", "version": version.to_string(),
                    "parentVersion": parent.to_string(), "reason": reason,
                    "thumbsUpRate": n.proportion, "parentThumbsUpRate": o.proportion, "z": z });
                let http = self.inner.http.clone();
                tokio::spawn(async move {
                    match http.post(&url).json(&body).send().await {
                        Ok(r) if r.status().is_success() => {}
                        Ok(r) => tracing::error!(status = %r.status(), "drift webhook refused"),
                        Err(e) => tracing::error!(error = %e, "drift webhook failed"),
                    }
                });
            }
        }
        Ok(Some(reason))
    }
}

fn replayed() -> Error {
    Error::conflict(
        "replayed_update",
        "this exact payload was already submitted to this round",
    )
}
