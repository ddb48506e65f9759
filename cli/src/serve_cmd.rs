//! `feedloop serve`: the federated averaging server (feedloop-server) with its configuration
//! from flags and environment variables.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use feedloop_server::rate_limit::RateLimit;
use feedloop_server::{Config, DeploymentKey, ServerOptimizer, DEFAULT_DATABASE_URL};
use serde_json::{json, Value};

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "FEEDLOOP_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// sqlite://path (a file, created in WAL mode) or postgres://user@host/db.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    database: String,
    /// A site allowed to register clients, as `site=KEY` (repeat, or comma-separate in the env).
    #[arg(
        long = "deployment-key",
        env = "FEEDLOOP_DEPLOYMENT_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    deployment_keys: Vec<DeploymentKey>,
    /// Admin key(s) for rollback and round configuration; without one the admin API is disabled.
    #[arg(
        long = "admin-key",
        env = "FEEDLOOP_ADMIN_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    admin_keys: Vec<String>,
    /// HMAC secret for client tokens (default: generated once and kept in the database).
    #[arg(long, env = "FEEDLOOP_TOKEN_SECRET", hide_env_values = true)]
    token_secret: Option<String>,
    /// Client token lifetime in hours.
    #[arg(long, env = "FEEDLOOP_TOKEN_TTL_HOURS", default_value_t = 168)]
    token_ttl_hours: u64,
    /// Client token lifetime in seconds (overrides --token-ttl-hours; short lifetimes are for tests).
    #[arg(long, env = "FEEDLOOP_TOKEN_TTL_SECONDS")]
    token_ttl_seconds: Option<u64>,
    /// Days a client id stays valid after registering: refreshes never extend a token past it
    /// (a leaked token cannot be renewed forever); the device then registers again.
    #[arg(long, env = "FEEDLOOP_SESSION_MAX_AGE_DAYS", default_value_t = 90)]
    session_max_age_days: u64,
    /// δ for the reported ε per participant.
    #[arg(long, env = "FEEDLOOP_DELTA", default_value_t = 1e-6)]
    delta: f64,
    /// Server optimizer: fedavg, fedavgm or fedadam.
    #[arg(long, env = "FEEDLOOP_OPTIMIZER", default_value = "fedavg")]
    optimizer: String,
    /// Server learning rate (default: the optimizer's: 1 for fedavg/fedavgm, 0.1 for fedadam).
    #[arg(long, env = "FEEDLOOP_SERVER_LR")]
    server_lr: Option<f64>,
    /// ε of the clients' randomized-response reports (thumbs-up bits and star ratings).
    #[arg(long, env = "FEEDLOOP_RR_EPSILON", default_value_t = 1.0)]
    rr_epsilon: f64,
    /// A segment devices may declare (e.g. a locale), repeated for each: 2 to 16 names. Devices
    /// then also report their thumbs-up verdict per segment, the segment randomized with it.
    #[arg(long = "segment", env = "FEEDLOOP_SEGMENTS", value_delimiter = ',')]
    segments: Vec<String>,
    /// Segments: the tolerated gap in thumbs-up rate between two segments before a disparity is
    /// flagged.
    #[arg(long, env = "FEEDLOOP_DISPARITY_MARGIN", default_value_t = 0.05)]
    disparity_margin: f64,
    /// Drift: the tolerated drop in thumbs-up rate.
    #[arg(long, env = "FEEDLOOP_DRIFT_MARGIN", default_value_t = 0.02)]
    drift_margin: f64,
    /// Drift and canaries: the sequential test's error rate at all looks together (an equal
    /// version is rolled back with probability ≤ α/2, however often it is tested).
    #[arg(long, env = "FEEDLOOP_DRIFT_ALPHA", default_value_t = 0.05)]
    drift_alpha: f64,
    /// Drift: reports needed on both versions before testing.
    #[arg(long, env = "FEEDLOOP_DRIFT_MIN_REPORTS", default_value_t = 100)]
    drift_min_reports: u64,
    /// Drift: URL POSTed a JSON event when a version is flagged.
    #[arg(long, env = "FEEDLOOP_DRIFT_WEBHOOK")]
    drift_webhook: Option<String>,
    /// Staged rollout: the share of devices (by client id) a newly published version goes to
    /// first; 0 publishes to everyone at once.
    #[arg(long, env = "FEEDLOOP_CANARY_FRACTION", default_value_t = 0.0)]
    canary_fraction: f64,
    /// Staged rollout: canary thumbs reports the test is tightest at; a canary with no
    /// regression by then is promoted.
    #[arg(long, env = "FEEDLOOP_CANARY_REPORTS", default_value_t = 2000)]
    canary_reports: u64,
    /// Staged rollout: `auto` promotes a canary that passed; `approve` waits for
    /// `POST /v1/admin/rollout/promote`.
    #[arg(long, env = "FEEDLOOP_CANARY_PROMOTION", default_value = "auto", value_parser = ["auto", "approve"])]
    canary_promotion: String,
    /// Maximum request body in bytes.
    #[arg(long, env = "FEEDLOOP_MAX_BODY_BYTES", default_value_t = 256 * 1024)]
    max_body_bytes: usize,
    /// Per-request timeout in seconds.
    #[arg(long, env = "FEEDLOOP_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    request_timeout_secs: u64,
    /// Seconds a connection may take to send a request's header before it is closed.
    #[arg(long, env = "FEEDLOOP_HEADER_READ_TIMEOUT_SECS", default_value_t = 10)]
    header_read_timeout_secs: u64,
    /// Connections served at once (more wait in the listen backlog).
    #[arg(long, env = "FEEDLOOP_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// The base ONNX model (default: the bundled model).
    #[arg(long, env = "FEEDLOOP_MODEL")]
    model: Option<PathBuf>,
    /// Serve these files outside /v1 (e.g. the built dashboard and demo: www/dist).
    #[arg(long, env = "FEEDLOOP_STATIC_DIR")]
    static_dir: Option<PathBuf>,
    /// Keep a round open at all times, as JSON like the admin API's round, e.g.
    /// '{"clipNorm":1,"granularity":0.001,"noiseStddev":4,"minCohort":2,"targetCount":2,"durationSeconds":120}'.
    #[arg(long, env = "FEEDLOOP_AUTO_ROUND")]
    auto_round: Option<String>,
    /// An origin whose pages may sync with this server (CORS), e.g. https://shop.example.com
    /// (repeat, or comma-separate in the env); pages the server serves itself need none.
    #[arg(
        long = "cors-origin",
        env = "FEEDLOOP_CORS_ORIGINS",
        value_delimiter = ','
    )]
    cors_origins: Vec<String>,
    /// Registrations allowed per client address per minute, after a burst of --register-burst
    /// (0: no limit). Beyond it: 429 with Retry-After.
    #[arg(long, env = "FEEDLOOP_REGISTER_RATE", default_value_t = 60)]
    register_rate_per_minute: u32,
    /// Registrations one address may make at once before the per-minute rate applies.
    #[arg(long, env = "FEEDLOOP_REGISTER_BURST", default_value_t = 30)]
    register_burst: u32,
    /// Admin requests allowed per client address per minute (counted before the key is checked),
    /// after a burst of --admin-burst (0: no limit).
    #[arg(long, env = "FEEDLOOP_ADMIN_RATE", default_value_t = 300)]
    admin_rate_per_minute: u32,
    /// Admin requests one address may make at once before the per-minute rate applies.
    #[arg(long, env = "FEEDLOOP_ADMIN_BURST", default_value_t = 100)]
    admin_burst: u32,
    /// Behind a load balancer: the header it sets to the client's address (e.g.
    /// x-forwarded-for; its rightmost value is used). Without it the TCP peer is the client.
    #[arg(long, env = "FEEDLOOP_CLIENT_IP_HEADER")]
    client_ip_header: Option<String>,
    /// SQLite durability per commit: `full` (default) fsyncs before an update is acknowledged, so
    /// it survives power loss; `normal` survives a killed process only (faster; BENCHMARKS.md).
    #[arg(long, env = "FEEDLOOP_SQLITE_SYNCHRONOUS", default_value = "full", value_parser = ["full", "normal"])]
    sqlite_synchronous: String,
    /// `leader` (default): the API devices use, and the leader aggregator of secure rounds.
    /// `helper`: the second aggregator of secure rounds only, with its own database and keys,
    /// run by a party the leader's operator does not control.
    #[arg(long, env = "FEEDLOOP_ROLE", default_value = "leader", value_parser = ["leader", "helper"])]
    role: String,
    /// A leader's helper aggregator, e.g. https://helper.example.org (needed for secure rounds).
    #[arg(long, env = "FEEDLOOP_HELPER_URL", requires = "helper_token")]
    helper_url: Option<String>,
    /// The bearer token the helper gave this leader (at least 16 characters).
    #[arg(long, env = "FEEDLOOP_HELPER_TOKEN", hide_env_values = true)]
    helper_token: Option<String>,
    /// A leader with a helper: aggregate thumbs, agreement and star reports with it too. Devices
    /// whose policy pins the helper seal those reports (Prio3Histogram); only noisy batch sums
    /// are released. Others keep sending randomized responses.
    #[arg(long, env = "FEEDLOOP_SECURE_METRICS", requires = "helper_url")]
    secure_metrics: bool,
    /// --secure-metrics: σ of the helper's noise on each bucket of a batch (counts). Default:
    /// √2/ε of --rr-epsilon, the same ρ per report as randomized response.
    #[arg(long, env = "FEEDLOOP_METRIC_NOISE")]
    metric_noise: Option<f64>,
    /// --secure-metrics: reports per released batch (at least the helper's minimum).
    #[arg(long, env = "FEEDLOOP_METRIC_BATCH", default_value_t = 100)]
    metric_batch: u64,
    /// A helper: the token(s) its leader presents (repeat, or comma-separate in the env).
    #[arg(
        long = "leader-token",
        env = "FEEDLOOP_LEADER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    leader_tokens: Vec<String>,
    /// A helper: σ on every round's sum is at least this times the round's clip norm (ρ = 2/z²
    /// per participant and round).
    #[arg(long, env = "FEEDLOOP_HELPER_NOISE_MULTIPLIER", default_value_t = 2.0)]
    helper_noise_multiplier: f64,
    /// A helper: the least number of valid reports it releases a batch for.
    #[arg(long, env = "FEEDLOOP_HELPER_MIN_REPORTS", default_value_t = 10)]
    helper_min_reports: u64,
    /// Log filter (tracing EnvFilter syntax).
    #[arg(long, env = "RUST_LOG", default_value = "info,sqlx=warn")]
    log: String,
}

pub fn serve(args: ServeArgs) -> Result<Value, String> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
        .with_writer(std::io::stderr)
        .init();
    let mut config = Config::new(args.database.clone());
    config.deployment_keys = args.deployment_keys;
    config.admin_keys = args.admin_keys;
    config.token_secret = args.token_secret.map(String::into_bytes);
    config.token_ttl = Duration::from_secs(
        args.token_ttl_seconds
            .unwrap_or(args.token_ttl_hours * 3600)
            .max(1),
    );
    config.session_max_age = Duration::from_secs(args.session_max_age_days.max(1) * 86_400);
    config.delta = args.delta;
    let optimizer = ServerOptimizer::from_name(&args.optimizer)?;
    config.optimizer = match args.server_lr {
        Some(lr) => optimizer.with_lr(lr),
        None => optimizer,
    };
    config.rr_epsilon = args.rr_epsilon;
    feedloop_core::segments::validate(&args.segments).map_err(|e| format!("--segment: {e}"))?;
    config.segments = args.segments.clone();
    if !(0.0..1.0).contains(&args.disparity_margin) {
        return Err(format!(
            "--disparity-margin must be in [0, 1), got {}",
            args.disparity_margin
        ));
    }
    config.disparity_margin = args.disparity_margin;
    config.drift.margin = args.drift_margin;
    config.drift.alpha = args.drift_alpha;
    config.drift.planned_reports = args.canary_reports;
    config.drift.canary_fraction = args.canary_fraction;
    config.drift.promotion = match args.canary_promotion.as_str() {
        "approve" => feedloop_server::Promotion::Approve,
        _ => feedloop_server::Promotion::Auto,
    };
    config.drift.min_reports = args.drift_min_reports;
    config.drift.webhook_url = args.drift_webhook;
    config.max_body_bytes = args.max_body_bytes;
    config.request_timeout = Duration::from_secs(args.request_timeout_secs);
    config.header_read_timeout = Duration::from_secs(args.header_read_timeout_secs.max(1));
    config.max_connections = args.max_connections.max(1);
    if let Some(path) = &args.model {
        config.base_model = std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .into();
    }
    if let Some(dir) = &args.static_dir {
        if !dir.is_dir() {
            return Err(format!("--static-dir {} is not a folder", dir.display()));
        }
        config.static_dir = Some(dir.clone());
    }
    if let Some(round) = &args.auto_round {
        config.auto_round = Some(
            serde_json::from_str(round).map_err(|e| format!("--auto-round is not a round: {e}"))?,
        );
    }
    config.cors_origins = args
        .cors_origins
        .iter()
        .map(|o| check_origin(o))
        .collect::<Result<_, _>>()?;
    config.register_rate = RateLimit {
        per_minute: args.register_rate_per_minute,
        burst: args.register_burst,
    };
    config.admin_rate = RateLimit {
        per_minute: args.admin_rate_per_minute,
        burst: args.admin_burst,
    };
    config.client_ip_header = args
        .client_ip_header
        .as_deref()
        .map(|name| {
            axum_header_name(name)
                .ok_or_else(|| format!("--client-ip-header {name:?} is not a header name"))
        })
        .transpose()?;
    config.sqlite_synchronous = match args.sqlite_synchronous.as_str() {
        "normal" => feedloop_server::SqliteSynchronous::Normal,
        _ => feedloop_server::SqliteSynchronous::Full,
    };
    config.role = match args.role.as_str() {
        "helper" => feedloop_server::Role::Helper,
        _ => feedloop_server::Role::Leader,
    };
    config.helper = match (args.helper_url, args.helper_token) {
        (Some(url), Some(token)) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "--helper-url {url:?} must start with http:// or https://"
                ));
            }
            Some(feedloop_server::HelperPeer { url, token })
        }
        _ => None,
    };
    if args
        .metric_noise
        .is_some_and(|s| !(s.is_finite() && s > 0.0))
        || args.metric_batch == 0
    {
        return Err("--metric-noise must be > 0 and --metric-batch at least 1".into());
    }
    config.secure_metrics = args
        .secure_metrics
        .then_some(feedloop_server::SecureMetricsConfig {
            noise_stddev: args.metric_noise,
            batch_reports: args.metric_batch,
        });
    config.helper_policy = feedloop_server::HelperPolicy {
        leader_tokens: args.leader_tokens,
        noise_multiplier: args.helper_noise_multiplier,
        min_reports: args.helper_min_reports,
    };
    let helper = config.role == feedloop_server::Role::Helper;
    if helper && config.helper_policy.leader_tokens.is_empty() {
        return Err("a helper needs its leader's token (--leader-token)".into());
    }
    if helper && config.helper.is_some() {
        return Err("a helper has no helper of its own (drop --helper-url)".into());
    }
    if !helper && config.deployment_keys.is_empty() {
        tracing::warn!(
            "no deployment key configured: no client can register (--deployment-key site=KEY)"
        );
    }
    if !helper && config.admin_keys.is_empty() {
        tracing::warn!("no admin key configured: the admin API is disabled (--admin-key)");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let app = feedloop_server::App::new(config)
            .await
            .map_err(|e| format!("server setup: {e}"))?;
        if !helper {
            match app.ensure_auto_round().await {
                // A secure round waits for its helper: the deadline task opens it once it answers.
                Err(e @ feedloop_server::Error::Unavailable { .. }) => {
                    tracing::warn!(error = %e, "--auto-round: the helper does not answer yet")
                }
                other => {
                    other.map_err(|e| format!("--auto-round: {e}"))?;
                }
            }
        }
        let listener = tokio::net::TcpListener::bind(args.addr)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.addr))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        feedloop_server::serve(app, listener, feedloop_server::shutdown_signal())
            .await
            .map_err(|e| format!("server: {e}"))?;
        Ok(json!({ "stopped": true, "addr": addr.to_string() }))
    })
}

fn axum_header_name(name: &str) -> Option<feedloop_server::HeaderName> {
    feedloop_server::HeaderName::from_bytes(name.trim().as_bytes()).ok()
}

/// An origin as browsers send it: `scheme://host[:port]`, no path, no trailing slash.
fn check_origin(origin: &str) -> Result<String, String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("--cors-origin {origin:?} must start with http:// or https://"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(format!(
            "--cors-origin {origin:?} must be scheme://host[:port], without a path or a trailing slash"
        ));
    }
    Ok(origin.to_string())
}
