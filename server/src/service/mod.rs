//! The server's behaviour, independent of HTTP: clients, rounds and submissions ([`rounds`]),
//! the group commit that stores registrations and updates ([`ingest`]), publishing a version
//! ([`publish`]), versions and rollback ([`versions`]), randomized-response statistics and drift
//! flags ([`drift`]). Storage goes through [`crate::db`].

pub mod csat;
pub mod drift;
pub mod helper;
pub mod helper_metrics;
pub mod ingest;
pub mod publish;
pub mod rollout;
pub mod rounds;
pub mod sealed;
pub mod secure;
pub mod segments;
pub mod versions;
pub mod volume;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use feedloop_core::RewardModel;

use crate::auth::{self, Claims, TokenSigner};
use crate::config::Config;
use crate::db::{is_unique_violation, Store, VersionRow};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::onnx::{rewrite_head, sha256_hex};

/// The key optimizer state is stored under (one model lineage per server).
pub const DEPLOYMENT_STATE_KEY: &str = "default";

/// Shared state behind every handler.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

/// The last ONNX file served: (version, bytes).
type OnnxCache = std::sync::Mutex<Option<(i64, Arc<[u8]>)>>;

struct Inner {
    config: Config,
    store: Store,
    signer: TokenSigner,
    metrics: Arc<Metrics>,
    /// Serializes round opening/closing, publishing and rollback within this process.
    lifecycle: tokio::sync::Mutex<()>,
    dimension: usize,
    head_dimensions: usize,
    http: reqwest::Client,
    rate_limits: crate::rate_limit::RateLimits,
    onnx_cache: OnnxCache,
    /// The group-commit writer of registrations and updates.
    ingest: ingest::Ingest,
    /// This aggregator's HPKE key pair (secure rounds): generated once, kept in the database.
    hpke: feedloop_secagg::HpkeKeyPair,
    /// The secure-metric terms, once the helper answered (`sealed`).
    secure_metric_terms: tokio::sync::OnceCell<feedloop_core::protocol::SecureMetricTerms>,
    /// Metric tasks this process opened at the helper.
    opened_metric_tasks: std::sync::Mutex<std::collections::HashSet<String>>,
}

/// A signed token with its claims and when it was issued (unix ms).
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub claims: Claims,
    pub token: String,
    pub issued_at: i64,
}

/// Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl App {
    /// Connects, migrates, and bootstraps version 1 from the base model.
    pub async fn new(config: Config) -> Result<Self> {
        config.check_secrets().map_err(Error::internal)?;
        let d = &config.drift;
        feedloop_core::rollout::SequentialTest::new(
            d.margin,
            d.alpha,
            d.planned_reports,
            d.min_reports,
        )
        .map_err(|e| Error::internal(format!("drift configuration: {e}")))?;
        if !(0.0..1.0).contains(&d.canary_fraction) {
            return Err(Error::internal(format!(
                "the canary fraction must be in [0, 1), got {}",
                d.canary_fraction
            )));
        }
        let store = Store::connect(&config.database_url, config.sqlite_synchronous).await?;
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
        let hpke = {
            let generated = crate::onnx::hex(&auth::random_bytes::<32>()?);
            let stored = store
                .setting_or_insert("hpke_private_key", &generated)
                .await?;
            let bytes = secure::from_hex(&stored, "the stored HPKE key")?;
            feedloop_secagg::HpkeKeyPair::from_private_bytes(&bytes)
                .map_err(|e| Error::internal(format!("the stored HPKE key: {e}")))?
        };
        let metrics = Arc::new(Metrics::default());
        let app = Self {
            inner: Arc::new(Inner {
                signer: TokenSigner::new(secret),
                ingest: ingest::Ingest::start(store.clone(), metrics.clone()),
                store,
                metrics,
                lifecycle: tokio::sync::Mutex::new(()),
                dimension: head.len(),
                head_dimensions,
                http: reqwest::Client::builder()
                    .timeout(std::time::Duration::from_secs(10))
                    .build()
                    .map_err(|e| Error::internal(format!("HTTP client: {e}")))?,
                onnx_cache: std::sync::Mutex::new(None),
                rate_limits: crate::rate_limit::RateLimits::new(
                    config.register_rate,
                    config.admin_rate,
                ),
                hpke,
                secure_metric_terms: tokio::sync::OnceCell::new(),
                opened_metric_tasks: std::sync::Mutex::new(Default::default()),
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
        let inserted = Store::insert_version(
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
        .await;
        match inserted {
            // Another replica started on the same fresh database and bootstrapped first.
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                tracing::info!("model version 1 was bootstrapped by another server process");
                return Ok(());
            }
            other => other?,
        }
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
    pub fn rate_limits(&self) -> &crate::rate_limit::RateLimits {
        &self.inner.rate_limits
    }
    fn onnx_cache(&self) -> &OnnxCache {
        &self.inner.onnx_cache
    }
    /// The update dimension (head parameter count).
    pub fn dimension(&self) -> usize {
        self.inner.dimension
    }
    /// The embedding dimension of the head (for `RewardHead::from_vector`).
    fn head_dimensions(&self) -> usize {
        self.inner.head_dimensions
    }
    fn ingest(&self) -> &ingest::Ingest {
        &self.inner.ingest
    }
    fn lifecycle(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.lifecycle
    }
    fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }
    /// This aggregator's HPKE keys: the leader's or the helper's, by `Config::role`.
    fn hpke(&self) -> &feedloop_secagg::HpkeKeyPair {
        &self.inner.hpke
    }

    // ----- clients -----

    /// First contact: a new client id and its token.
    pub async fn register(&self, deployment_key: &str) -> Result<IssuedToken> {
        let deployment = auth::deployment_for(&self.config().deployment_keys, deployment_key)
            .ok_or_else(|| Error::Unauthorized("unknown deployment key".into()))?
            .to_string();
        let client_id = crate::onnx::hex(&auth::random_bytes::<16>()?);
        let now = now_ms();
        self.inner
            .ingest
            .register(client_id.clone(), deployment.clone(), now)
            .await?;
        Metrics::inc(&self.metrics().clients_registered);
        let claims = Claims {
            client_id,
            deployment,
            expires_at: self.token_expiry(now, now),
        };
        Ok(self.issue(claims, now))
    }

    /// A fresh token for the holder of a valid one, expiring no later than the client's session
    /// (`Config::session_max_age` after it registered); refused once the session is over.
    pub async fn refresh(&self, claims: &Claims) -> Result<IssuedToken> {
        let standing = self
            .store()
            .client_standing(&claims.client_id)
            .await?
            .ok_or_else(|| Error::Unauthorized("unknown client".into()))?;
        let now = now_ms();
        let expires_at = self.token_expiry(standing.created_at, now);
        if expires_at <= now {
            return Err(Error::Unauthorized(format!(
                "this client's session ended {} days after it registered; register again",
                self.config().session_max_age.as_secs() / 86_400
            )));
        }
        let claims = Claims {
            expires_at,
            ..claims.clone()
        };
        Ok(self.issue(claims, now))
    }

    fn issue(&self, claims: Claims, issued_at: i64) -> IssuedToken {
        IssuedToken {
            token: self.inner.signer.issue(&claims),
            claims,
            issued_at,
        }
    }

    /// A token issued at `now` to a client registered at `registered`: one lifetime, cut at the
    /// end of the session.
    fn token_expiry(&self, registered: i64, now: i64) -> i64 {
        let session_end =
            registered.saturating_add(self.config().session_max_age.as_millis() as i64);
        now.saturating_add(self.token_ttl_ms()).min(session_end)
    }

    /// The token lifetime in milliseconds (the unit of `Claims::expires_at`).
    pub fn token_ttl_ms(&self) -> i64 {
        self.config().token_ttl.as_millis() as i64
    }

    /// The MAC and expiry of a token only (no storage): see [`App::authenticate`].
    pub fn verify_token(&self, token: &str) -> Result<Claims> {
        self.inner.signer.verify(token, now_ms())
    }

    /// A token's claims if it is valid *and still honoured*: its deployment is still configured
    /// (removing a deployment key revokes all its clients) and its client exists and was not
    /// revoked (`POST /v1/admin/clients/{id}/revoke`). One primary-key read per request, so a
    /// revocation holds at once on every replica.
    pub async fn authenticate(&self, token: &str) -> Result<Claims> {
        let claims = self.verify_token(token)?;
        if !self
            .config()
            .deployment_keys
            .iter()
            .any(|d| d.deployment == claims.deployment)
        {
            return Err(Error::Unauthorized(
                "this token's deployment is no longer configured".into(),
            ));
        }
        match self.store().client_standing(&claims.client_id).await? {
            Some(c) if c.revoked_at.is_none() => Ok(claims),
            Some(_) => Err(Error::Unauthorized("this client was revoked".into())),
            None => Err(Error::Unauthorized("unknown client".into())),
        }
    }

    /// Revokes a client's tokens (idempotent) and records it in the audit log.
    pub async fn revoke_client(
        &self,
        admin_fingerprint: &str,
        client_id: &str,
    ) -> Result<feedloop_core::protocol::ClientRevocation> {
        let now = now_ms();
        let mut tx = self.store().begin().await?;
        let revoked_at = Store::revoke_client(&mut tx, client_id, now)
            .await?
            .ok_or_else(|| Error::not_found("no_such_client", "no such client"))?;
        if revoked_at == now {
            Store::audit(
                &mut tx,
                admin_fingerprint,
                "client.revoke",
                &serde_json::json!({ "clientId": client_id }),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(feedloop_core::protocol::ClientRevocation {
            client_id: client_id.to_string(),
            revoked_at: feedloop_core::protocol::UnixMillis::new(revoked_at),
        })
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
}
