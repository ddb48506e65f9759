//! Server configuration (the CLI fills it from flags and environment variables).

use std::time::Duration;

use crate::fedavg::ServerOptimizer;

/// A site allowed to register clients: its id and its deployment key.
#[derive(Clone)]
pub struct DeploymentKey {
    pub deployment: String,
    pub key: String,
}

impl std::fmt::Debug for DeploymentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeploymentKey({}, ..)", self.deployment) // never print keys
    }
}

impl std::str::FromStr for DeploymentKey {
    type Err = String;
    /// `site=KEY`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (deployment, key) = s
            .split_once('=')
            .ok_or_else(|| format!("deployment key `{s}` is not `site=KEY`"))?;
        if deployment.is_empty() || key.len() < MIN_KEY_CHARS {
            return Err("a deployment key needs a site name and at least 16 characters".into());
        }
        Ok(Self {
            deployment: deployment.to_string(),
            key: key.to_string(),
        })
    }
}

/// How a canary that passed the sequential test becomes current.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Promotion {
    /// At once, by the server (the audit log records `auto-rollout`).
    #[default]
    Auto,
    /// After an admin approves (`POST /v1/admin/rollout/promote`; the audit log records who).
    Approve,
}

/// Monitoring new versions against their parent with the always-valid sequential test
/// (`feedloop_core::rollout`), and staged rollout. A version the test finds worse than its
/// parent by more than `margin` is flagged; a canary is also rolled back.
#[derive(Debug, Clone)]
pub struct DriftConfig {
    /// The tolerated drop in thumbs-up rate (absolute, e.g. 0.02).
    pub margin: f64,
    /// The error rate at all looks together (0.05: an equal version is rolled back with
    /// probability ≤ 2.5 %, however often it is tested).
    pub alpha: f64,
    /// Reports needed on both versions before a verdict.
    pub min_reports: u64,
    /// Canary reports the test is tightest at; a canary with no verdict by then is promoted.
    pub planned_reports: u64,
    /// The share of devices a newly published version goes to first; 0 publishes to everyone
    /// at once (no staged rollout).
    pub canary_fraction: f64,
    pub promotion: Promotion,
    /// Called with a JSON POST when a version is flagged or a rollout decided.
    pub webhook_url: Option<String>,
}

impl Default for DriftConfig {
    fn default() -> Self {
        Self {
            margin: 0.02,
            alpha: 0.05,
            min_reports: 100,
            planned_reports: 2_000,
            canary_fraction: 0.0,
            promotion: Promotion::Auto,
            webhook_url: None,
        }
    }
}

/// The part a server plays in secure aggregation (`feedloop serve --role`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Role {
    /// The API devices talk to: registration, rounds, versions, the dashboard — and, for secure
    /// rounds, the leader aggregator.
    #[default]
    Leader,
    /// The second aggregator only: its own keys, database and policy, run by a party the
    /// operator does not control. Serves `/v1/helper/…` (to its leaders) and ops endpoints.
    Helper,
}

/// The leader's helper (`--helper-url`, `--helper-token`).
#[derive(Clone)]
pub struct HelperPeer {
    /// Its base URL, e.g. `https://helper.example.org`.
    pub url: String,
    /// The bearer token the helper gave this leader.
    pub token: String,
}

impl std::fmt::Debug for HelperPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HelperPeer({}, ..)", self.url) // never print tokens
    }
}

/// A helper's own policy: what no leader can lower.
#[derive(Clone)]
pub struct HelperPolicy {
    /// Bearer tokens of the leaders it serves (`--leader-token`).
    pub leader_tokens: Vec<String>,
    /// σ on a round's sum is at least this times the round's clip norm.
    pub noise_multiplier: f64,
    /// It releases no batch of fewer valid reports.
    pub min_reports: u64,
}

impl Default for HelperPolicy {
    fn default() -> Self {
        Self {
            leader_tokens: Vec::new(),
            // z = 2 with Δ = 2C: ρ = 2/z² = 0.5 per round for each participant.
            noise_multiplier: 2.0,
            min_reports: 10,
        }
    }
}

impl std::fmt::Debug for HelperPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperPolicy")
            .field("leader_tokens", &self.leader_tokens.len())
            .field("noise_multiplier", &self.noise_multiplier)
            .field("min_reports", &self.min_reports)
            .finish()
    }
}

/// Everything the server needs.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sqlite://data/feedloop.db` (default) or `postgres://...`.
    pub database_url: String,
    /// Sites allowed to register clients.
    pub deployment_keys: Vec<DeploymentKey>,
    /// Keys for the admin API (empty: admin API disabled).
    pub admin_keys: Vec<String>,
    /// HMAC key for client tokens; `None`: generated once and kept in the database.
    pub token_secret: Option<Vec<u8>>,
    /// Lifetime of a client token.
    pub token_ttl: Duration,
    /// How long a client id stays valid after it registered: refreshes renew its token up to
    /// then, never past it, so a leaked token cannot be kept alive forever; the device then
    /// registers again (a new id).
    pub session_max_age: Duration,
    /// δ for reporting ε per participant.
    pub delta: f64,
    /// The server optimizer applied to the FedAvg mean.
    pub optimizer: ServerOptimizer,
    /// ε of the clients' randomized-response thumbs-up reports.
    pub rr_epsilon: f64,
    /// Declared segments (e.g. locales; none, or 2 to 16 names): devices report their thumbs
    /// verdict per segment, the segment randomized with it (`feedloop_core::segments`).
    pub segments: Vec<String>,
    /// Gaps in thumbs-up rate between segments up to this are tolerated; a larger one (at 95 %
    /// over every pair, Bonferroni) is flagged on the dashboard.
    pub disparity_margin: f64,
    pub drift: DriftConfig,
    /// Maximum request body.
    pub max_body_bytes: usize,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// A connection that has not sent a request's whole header by then is closed (slow-header
    /// clients cannot hold connections open).
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// How often deadlines are checked.
    pub deadline_poll: Duration,
    /// The base ONNX model (version 1's head and the body of every published file).
    pub base_model: std::sync::Arc<[u8]>,
    /// Files served outside `/v1` (the dashboard and demo pages), if any.
    pub static_dir: Option<std::path::PathBuf>,
    /// Keep a round open at all times with this configuration (a new one, on the current version,
    /// whenever none is open) — for demos and deployments that want continuous rounds.
    pub auto_round: Option<feedloop_core::protocol::NewRound>,
    /// Origins whose pages may call the API (CORS), e.g. `https://shop.example.com`; empty: only
    /// pages the server itself serves (same origin).
    pub cors_origins: Vec<String>,
    /// Registrations per address (`crate::rate_limit`).
    pub register_rate: crate::rate_limit::RateLimit,
    /// Admin requests per address, counted before the key is checked.
    pub admin_rate: crate::rate_limit::RateLimit,
    /// The header a load balancer in front sets to the client's address (e.g. `x-forwarded-for`);
    /// `None`: the TCP peer is the client.
    pub client_ip_header: Option<axum::http::HeaderName>,
    /// SQLite's `synchronous` (WAL): `Full` fsyncs every commit, so an acknowledged update survives
    /// an OS crash or power loss; `Normal` survives a killed process only. Ignored on PostgreSQL.
    pub sqlite_synchronous: SqliteSynchronous,
    /// Leader (default) or helper.
    pub role: Role,
    /// A leader's helper, needed for secure rounds.
    pub helper: Option<HelperPeer>,
    /// A helper's policy (ignored by a leader).
    pub helper_policy: HelperPolicy,
    /// A leader with a helper that aggregates thumbs, agreement and star reports securely too
    /// (`--secure-metrics`), if any: devices that pin the helper seal those reports.
    pub secure_metrics: Option<SecureMetricsConfig>,
}

/// How a leader aggregates metric reports with its helper.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecureMetricsConfig {
    /// σ of the helper's noise on each bucket of a batch (counts); `None`: √2/ε of the
    /// randomized-response ε, which costs a device the same ρ = ε²/2 per report. At least what
    /// the helper's policy demands (z/√2 for its noise multiplier z).
    pub noise_stddev: Option<f64>,
    /// Reports per released batch (at least the helper's minimum).
    pub batch_reports: u64,
}

impl Default for SecureMetricsConfig {
    fn default() -> Self {
        Self {
            noise_stddev: None,
            batch_reports: 100,
        }
    }
}

/// SQLite's durability per commit (`PRAGMA synchronous`, in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSynchronous {
    /// Every commit is fsynced before it returns (the default: an acknowledgement means stored).
    #[default]
    Full,
    /// Commits are fsynced at checkpoints: faster, but the last commits can be lost on power loss.
    Normal,
}

impl SqliteSynchronous {
    pub fn pragma(self) -> &'static str {
        match self {
            Self::Full => "PRAGMA synchronous = FULL",
            Self::Normal => "PRAGMA synchronous = NORMAL",
        }
    }
}

impl Config {
    /// Defaults for everything but keys: SQLite under `./data`, FedAvg, the bundled model.
    pub fn new(database_url: impl Into<String>) -> Self {
        Self {
            database_url: database_url.into(),
            deployment_keys: Vec::new(),
            admin_keys: Vec::new(),
            token_secret: None,
            token_ttl: Duration::from_secs(7 * 24 * 3600),
            session_max_age: Duration::from_secs(90 * 24 * 3600),
            delta: 1e-6,
            optimizer: ServerOptimizer::default(),
            rr_epsilon: 1.0,
            segments: Vec::new(),
            disparity_margin: 0.05,
            drift: DriftConfig::default(),
            max_body_bytes: 256 * 1024,
            request_timeout: Duration::from_secs(30),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            deadline_poll: Duration::from_secs(1),
            base_model: feedloop_core::BUNDLED_MODEL.into(),
            static_dir: None,
            auto_round: None,
            cors_origins: Vec::new(),
            // A burst of 30 then one a second: a page registers once per device; an office behind
            // one NAT still gets hundreds an hour.
            register_rate: crate::rate_limit::RateLimit {
                per_minute: 60,
                burst: 30,
            },
            // The dashboard makes ~1 request a second; key guesses get 5 a second at most.
            admin_rate: crate::rate_limit::RateLimit {
                per_minute: 300,
                burst: 100,
            },
            client_ip_header: None,
            sqlite_synchronous: SqliteSynchronous::Full,
            role: Role::Leader,
            helper: None,
            helper_policy: HelperPolicy::default(),
            secure_metrics: None,
        }
    }
}

/// The shortest admin key accepted (deployment keys have the same floor).
pub const MIN_KEY_CHARS: usize = 16;
/// The shortest HMAC secret for client tokens accepted, in bytes.
pub const MIN_TOKEN_SECRET_BYTES: usize = 32;

impl Config {
    /// Refuses secrets too short to resist guessing: admin keys under [`MIN_KEY_CHARS`]
    /// characters and a token secret under [`MIN_TOKEN_SECRET_BYTES`] bytes.
    pub fn check_secrets(&self) -> Result<(), String> {
        if let Some(short) = self
            .admin_keys
            .iter()
            .find(|k| k.chars().count() < MIN_KEY_CHARS)
        {
            return Err(format!(
                "an admin key must have at least {MIN_KEY_CHARS} characters (one has {})",
                short.chars().count()
            ));
        }
        let short_token = |t: &String| t.chars().count() < MIN_KEY_CHARS;
        if self.helper.as_ref().is_some_and(|h| short_token(&h.token))
            || self.helper_policy.leader_tokens.iter().any(short_token)
        {
            return Err(format!(
                "a token between leader and helper must have at least {MIN_KEY_CHARS} characters"
            ));
        }
        let policy = &self.helper_policy;
        if !(policy.noise_multiplier.is_finite() && policy.noise_multiplier > 0.0)
            || policy.min_reports == 0
        {
            return Err("a helper needs a positive noise multiplier and minimum batch".into());
        }
        if let Some(secret) = &self.token_secret {
            if secret.len() < MIN_TOKEN_SECRET_BYTES {
                return Err(format!(
                    "the token secret must have at least {MIN_TOKEN_SECRET_BYTES} bytes, got {} \
                     (or leave it unset: one is generated and kept in the database)",
                    secret.len()
                ));
            }
        }
        Ok(())
    }
}

/// The default database: a SQLite file under `./data`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/feedloop.db";
