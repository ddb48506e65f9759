//! Integration tests: the whole HTTP API against a real SQLite file and, when
//! `FEEDLOOP_TEST_POSTGRES_URL` is set (see tests/postgres.sh), a real PostgreSQL — the same tests
//! on both backends. Without the variable the PostgreSQL variants print SKIPPED and return.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use feedloop_core::RewardModel;
use feedloop_privacy::accounting::zcdp_to_approx_dp;
use feedloop_privacy::{privatize_with_os_rng, PrivatizedUpdate, PrivatizerConfig};
use feedloop_server::{App, Config, ServerOptimizer};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sqlx::Connection;
use tower::ServiceExt;

const DEPLOYMENT_KEY: &str = "site-key-0123456789abcdef";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
const C: f64 = 0.5;
const GAMMA: f64 = 1e-3;
const SIGMA: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

struct Harness {
    app: App,
    router: Router,
    config: Config,
    cleanup: Option<std::path::PathBuf>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(dir) = &self.cleanup {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn unique(prefix: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn base_config(url: String) -> Config {
    let mut c = Config::new(url);
    c.deployment_keys = vec![format!("site={DEPLOYMENT_KEY}").parse().unwrap()];
    c.admin_keys = vec![ADMIN_KEY.to_string()];
    c.deadline_poll = Duration::from_millis(50);
    c.max_body_bytes = 64 * 1024;
    c
}

/// A database URL for a fresh, empty database, or None (PostgreSQL not configured).
async fn fresh_database(backend: Backend) -> Option<(String, Option<std::path::PathBuf>)> {
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(unique("feedloop-server-test"));
            std::fs::create_dir_all(&dir).unwrap();
            let url = format!("sqlite://{}/feedloop.db", dir.display());
            Some((url, Some(dir)))
        }
        Backend::Postgres => {
            let admin_url = std::env::var("FEEDLOOP_TEST_POSTGRES_URL").ok()?;
            let name = unique("feedloop_test");
            let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
            let (head, query) = match admin_url.split_once('?') {
                Some((h, q)) => (h.to_string(), format!("?{q}")),
                None => (admin_url.clone(), String::new()),
            };
            let base = &head[..head.rfind('/').unwrap()];
            Some((format!("{base}/{name}{query}"), None))
        }
    }
}

impl Harness {
    async fn new(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
        let Some((url, cleanup)) = fresh_database(backend).await else {
            // Written to the real stderr (not the captured `eprintln!`), so the skip is visible.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {}: PostgreSQL variant not run (FEEDLOOP_TEST_POSTGRES_URL is unset; run server/tests/postgres.sh)",
                std::thread::current().name().unwrap_or("?")
            );
            return None;
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("FEEDLOOP_TEST_LOG")
                    .unwrap_or_else(|_| "feedloop_server=warn".into()),
            )
            .with_test_writer()
            .try_init();
        let mut config = base_config(url);
        tweak(&mut config);
        let app = App::new(config.clone()).await.unwrap();
        Some(Self {
            router: feedloop_server::router(app.clone()),
            app,
            config,
            cleanup,
        })
    }

    /// A second server process on the same database (state must survive).
    async fn restart(&mut self) {
        self.app = App::new(self.config.clone()).await.unwrap();
        self.router = feedloop_server::router(self.app.clone());
    }

    async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .router
            .clone()
            .oneshot(req.body(Body::from(body)).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        (status, bytes)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let bearer = auth.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(b) = &bearer {
            headers.push(("authorization", b.as_str()));
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, bytes) = self.raw(method, path, &headers, body).await;
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            // Every failure carries the JSON error body.
            assert!(
                value["error"]["code"].is_string() && value["error"]["message"].is_string(),
                "{status} without a JSON error body: {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        (status, value)
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    async fn register(&self) -> String {
        let (s, bytes) = self
            .raw(
                Method::POST,
                "/v1/clients/register",
                &[("x-feedloop-deployment-key", DEPLOYMENT_KEY)],
                vec![],
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        v["token"].as_str().unwrap().to_string()
    }

    async fn open_round(&self, body: Value) -> Value {
        let (s, v) = self
            .call(
                Method::POST,
                "/v1/admin/rounds",
                Some(ADMIN_KEY),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v
    }

    async fn submit(
        &self,
        token: &str,
        round: &Value,
        model_version: Option<&str>,
        payload: Vec<u8>,
    ) -> (StatusCode, Value) {
        let bearer = format!("Bearer {token}");
        let mut headers = vec![
            ("authorization", bearer.as_str()),
            ("content-type", "application/octet-stream"),
        ];
        if let Some(v) = model_version {
            headers.push(("x-feedloop-model-version", v));
        }
        let path = format!("/v1/rounds/{}/updates", round["roundId"].as_str().unwrap());
        let (status, bytes) = self.raw(Method::POST, &path, &headers, payload).await;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !status.is_success() {
            assert!(
                v["error"]["code"].is_string(),
                "{status}: no JSON error body"
            );
        }
        (status, v)
    }

    async fn head(&self, version: &str) -> Vec<f32> {
        serde_json::from_value(self.get(&format!("/v1/models/{version}")).await["head"].clone())
            .unwrap()
    }
}

fn round_body(min_cohort: i64, target: Option<i64>) -> Value {
    json!({ "clipNorm": C, "granularity": GAMMA, "noiseStddev": SIGMA, "minCohort": min_cohort,
            "targetCount": target })
}

fn delta(seed: u32, d: usize) -> Vec<f32> {
    (0..d)
        .map(|i| ((i as f32 * 0.37 + seed as f32 * 1.3).sin()) * 0.02)
        .collect()
}

fn privatized(seed: u32, d: usize) -> PrivatizedUpdate {
    let cfg = PrivatizerConfig::new(C, GAMMA, SIGMA).unwrap();
    privatize_with_os_rng(&delta(seed, d), &cfg).unwrap()
}

/// The reference: new head = old + mean(γ·v) (plain f64 loop), rounded to f32.
fn reference_fedavg(old: &[f32], updates: &[PrivatizedUpdate]) -> Vec<f32> {
    (0..old.len())
        .map(|i| {
            let mean: f64 = updates
                .iter()
                .map(|u| u.values()[i] as f64 * GAMMA)
                .sum::<f64>()
                / updates.len() as f64;
            (old[i] as f64 + mean) as f32
        })
        .collect()
}

fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    )*};
}

on_both_backends!(
    round_publishes_fedavg_and_the_onnx_carries_the_new_head,
    below_minimum_cohort_nothing_is_published,
    bad_submissions_are_refused_without_state_change,
    rollback_is_audited_and_new_rounds_build_on_it,
    fedadam_state_persists_across_restarts,
    fedavgm_uses_momentum,
    rr_statistics_and_drift_flag,
    deadline_closes_the_round,
    service_endpoints_and_admin_auth,
    browser_sync_support,
);

async fn round_publishes_fedavg_and_the_onnx_carries_the_new_head(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let d = h.app.dimension();
    assert_eq!(d, 131);
    let round = h.open_round(round_body(3, Some(3))).await;
    // The client's RoundConfig parses from the server's round JSON.
    let current = h.get("/v1/rounds/current").await;
    let rc: feedloop_core::contribution::RoundConfig =
        serde_json::from_value(current.clone()).unwrap();
    assert_eq!(rc.model_version, "1");
    assert_eq!(
        (rc.clip_norm, rc.granularity, rc.noise_stddev),
        (C, GAMMA, SIGMA)
    );
    assert_eq!(current["dimension"], 131);

    let old = h.head("1").await;
    let updates: Vec<PrivatizedUpdate> = (0..3).map(|s| privatized(s, d)).collect();
    let mut last = Value::Null;
    for (i, u) in updates.iter().enumerate() {
        let token = h.register().await;
        let (s, v) = h.submit(&token, &round, Some("1"), u.to_bytes()).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["received"], i as i64 + 1);
        last = v;
    }
    // The third update reached the target count: the round closed and published version 2.
    assert_eq!(last["roundClosed"]["status"], "published");
    assert_eq!(last["roundClosed"]["publishedVersion"], "2");

    let v2 = h.get("/v1/models/current").await;
    assert_eq!(v2["version"], "2");
    assert_eq!(v2["parentVersion"], "1");
    assert_eq!(v2["cohortSize"], 3);
    assert_eq!(v2["optimizer"], "fedavg");
    let rho = PrivatizerConfig::new(C, GAMMA, SIGMA).unwrap().rho();
    assert_eq!(v2["privacy"]["rho"].as_f64().unwrap(), rho);
    assert_eq!(
        v2["privacy"]["epsilonPerParticipant"].as_f64().unwrap(),
        zcdp_to_approx_dp(rho, 1e-6).unwrap()
    );
    let new_head: Vec<f32> = serde_json::from_value(v2["head"].clone()).unwrap();
    // One f32 rounding apart at most.
    assert_close(&new_head, &reference_fedavg(&old, &updates), 1e-6);
    assert_ne!(new_head, old);

    // The published ONNX file loads as a RewardModel whose head is the aggregated head.
    let (s, onnx) = h
        .raw(Method::GET, "/v1/models/2/model.onnx", &[], vec![])
        .await;
    assert_eq!(s, StatusCode::OK);
    let model = RewardModel::from_bytes(&onnx).unwrap();
    assert_eq!(model.head().to_vector(), new_head);
    assert_eq!(feedloop_server::onnx::sha256_hex(&onnx), v2["onnxSha256"]);
    use prost::Message;
    let proto = tract_onnx::pb::ModelProto::decode(onnx.as_slice()).unwrap();
    let meta: Vec<_> = proto
        .metadata_props
        .iter()
        .filter(|e| e.key == "feedloop.model.version")
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(meta, vec!["2"]);

    // The round log records the provenance.
    let log = h.get("/v1/rounds").await;
    assert_eq!(log["rounds"][0]["publishedVersion"], "2");
    assert_eq!(log["rounds"][0]["cohortSize"], 3);
}

async fn below_minimum_cohort_nothing_is_published(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let round = h.open_round(round_body(3, None)).await;
    for s in 0..2 {
        let token = h.register().await;
        let (st, _) = h
            .submit(&token, &round, Some("1"), privatized(s, 131).to_bytes())
            .await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let (s, closed) = h
        .call(
            Method::POST,
            "/v1/admin/rounds/1/close",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "insufficient");
    assert_eq!(closed["cohortSize"], 2);
    assert!(closed["publishedVersion"].is_null());
    let models = h.get("/v1/models").await;
    assert_eq!(models["current"], "1");
    assert_eq!(models["versions"].as_array().unwrap().len(), 1);
    // Closing twice is a conflict.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rounds/1/close",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("round_closed"))
    );
}

async fn bad_submissions_are_refused_without_state_change(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let round = h.open_round(round_body(1, None)).await;
    let token = h.register().await;
    let good = privatized(7, 131).to_bytes();
    let code = |v: &Value| v["error"]["code"].as_str().unwrap().to_string();

    // No token, a forged token.
    let (s, v) = h
        .raw(
            Method::POST,
            "/v1/rounds/1/updates",
            &[("x-feedloop-model-version", "1")],
            good.clone(),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&v)
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (s, v) = h.submit(&forged, &round, Some("1"), good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    // Unknown deployment key.
    let (s, _) = h
        .raw(
            Method::POST,
            "/v1/clients/register",
            &[("x-feedloop-deployment-key", "nope-nope-nope-nope")],
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Missing and stale model version.
    let (s, v) = h.submit(&token, &round, None, good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "missing_model_version".into())
    );
    let (s, v) = h.submit(&token, &round, Some("0"), good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "stale_model_version".into())
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/models/current"));
    // Malformed bytes, a truncated payload, another round's parameters, a wrong dimension.
    for bad in [
        b"not an update".to_vec(),
        good[..good.len() - 8].to_vec(),
        privatize_with_os_rng(
            &delta(1, 131),
            &PrivatizerConfig::new(C, GAMMA, 0.2).unwrap(),
        )
        .unwrap()
        .to_bytes(),
        privatize_with_os_rng(
            &delta(1, 130),
            &PrivatizerConfig::new(C, GAMMA, SIGMA).unwrap(),
        )
        .unwrap()
        .to_bytes(),
    ] {
        let (s, v) = h.submit(&token, &round, Some("1"), bad).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_update".into())
        );
    }
    // An out-of-bound lattice value: patch the first value of a good payload to i64::MAX/2
    // (values are little-endian i64 after the 46-byte header in wire format v1; if the encoding
    // differs the decoder refuses it as malformed, which is the same 422).
    let mut huge = good.clone();
    huge[46..54].copy_from_slice(&(i64::MAX / 2).to_le_bytes());
    let (s, v) = h.submit(&token, &round, Some("1"), huge).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_update".into())
    );
    // Too large.
    let (s, v) = h
        .submit(&token, &round, Some("1"), vec![0u8; 65 * 1024])
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    // No state change so far.
    assert_eq!(h.get("/v1/rounds/1").await["received"], 0);

    // Accepted once; the same client again is a duplicate; another client replaying the bytes is a replay.
    let (s, _) = h.submit(&token, &round, Some("1"), good.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = h
        .submit(&token, &round, Some("1"), privatized(8, 131).to_bytes())
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "duplicate_update".into())
    );
    let other = h.register().await;
    let (s, v) = h.submit(&other, &round, Some("1"), good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "replayed_update".into())
    );
    assert_eq!(h.get("/v1/rounds/1").await["received"], 1);
    // Unknown round, bad id.
    let (s, v) = h.call(Method::GET, "/v1/rounds/99", None, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "round_not_found".into())
    );
    let (s, v) = h.call(Method::GET, "/v1/rounds/abc", None, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_id".into())
    );
    // After closing, submissions are refused.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/admin/rounds/1/close",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .submit(&other, &round, Some("1"), privatized(9, 131).to_bytes())
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "round_closed".into()));
    let m = h.raw(Method::GET, "/metrics", &[], vec![]).await.1;
    let m = String::from_utf8(m).unwrap();
    assert!(
        m.contains("feedloop_updates_rejected_total{code=\"invalid_update\"} 5"),
        "{m}"
    );
    assert!(m.contains("feedloop_updates_accepted_total 1"), "{m}");
}

async fn publish_one_round(
    h: &Harness,
    base: &str,
    seeds: std::ops::Range<u32>,
) -> (Value, Vec<PrivatizedUpdate>) {
    let n = seeds.len() as i64;
    let round = h.open_round(round_body(n, Some(n))).await;
    assert_eq!(round["modelVersion"], base);
    let mut updates = Vec::new();
    let mut last = Value::Null;
    for s in seeds {
        let u = privatized(s, 131);
        let token = h.register().await;
        let (st, v) = h.submit(&token, &round, Some(base), u.to_bytes()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        updates.push(u);
        last = v;
    }
    assert_eq!(last["roundClosed"]["status"], "published", "{last}");
    (last["roundClosed"].clone(), updates)
}

async fn rollback_is_audited_and_new_rounds_build_on_it(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    assert_eq!(h.get("/v1/models/current").await["version"], "2");
    // Admin only.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            Some("not-the-admin-key"),
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            None,
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            Some(ADMIN_KEY),
            Some(json!({"version": "9"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("version_not_found"))
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            Some(ADMIN_KEY),
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h.get("/v1/models/current").await["version"], "1");
    // The next round builds on version 1 and publishes version 3 with parent 1.
    publish_one_round(&h, "1", 10..12).await;
    let v3 = h.get("/v1/models/3").await;
    assert_eq!(
        (v3["parentVersion"].as_str(), v3["current"].as_bool()),
        (Some("1"), Some(true))
    );
    // The audit log: who (fingerprint, never the key), when, what.
    let (s, audit) = h
        .call(Method::GET, "/v1/admin/audit", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "round.open").count(), 2);
    let rb = entries
        .iter()
        .find(|e| e["action"] == "model.rollback")
        .unwrap();
    assert_eq!(rb["details"]["from"], 2);
    assert_eq!(rb["details"]["to"], 1);
    assert_eq!(
        rb["adminFingerprint"],
        feedloop_server::auth::fingerprint(ADMIN_KEY)
    );
    assert!(rb["at"].as_i64().unwrap() > 0);
    assert!(!audit.to_string().contains(ADMIN_KEY));
    // The rolled-back-from version stays available.
    assert_eq!(h.get("/v1/models/2").await["current"], false);
}

async fn fedadam_state_persists_across_restarts(backend: Backend) {
    let opt = ServerOptimizer::FedAdam {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-3,
    };
    let Some(mut h) = Harness::new(backend, |c| c.optimizer = opt).await else {
        return;
    };
    let h1 = h.head("1").await;
    let (_, u1) = publish_one_round(&h, "1", 0..2).await;
    h.restart().await; // optimizer state must come from the database
    let (_, u2) = publish_one_round(&h, "2", 2..5).await;
    // Reference: two FedAdam steps in plain f64 on the same decoded updates.
    let mean = |us: &[PrivatizedUpdate], i: usize| {
        us.iter().map(|u| u.values()[i] as f64 * GAMMA).sum::<f64>() / us.len() as f64
    };
    let mut expected = Vec::new();
    let mut after_first = Vec::new();
    for (i, &h1i) in h1.iter().enumerate() {
        let (g1, g2) = (mean(&u1, i), mean(&u2, i));
        let (m1, v1) = (0.1 * g1, 0.01 * g1 * g1);
        let x1 = (h1i as f64 + 0.05 * m1 / (v1.sqrt() + 1e-3)) as f32;
        let (m2, v2) = (0.9 * m1 + 0.1 * g2, 0.99 * v1 + 0.01 * g2 * g2);
        after_first.push(x1);
        expected.push((x1 as f64 + 0.05 * m2 / (v2.sqrt() + 1e-3)) as f32);
    }
    assert_close(&h.head("2").await, &after_first, 1e-6);
    assert_close(&h.head("3").await, &expected, 1e-5);
    assert_eq!(h.get("/v1/models/3").await["optimizer"], "fedadam");
}

async fn fedavgm_uses_momentum(backend: Backend) {
    let opt = ServerOptimizer::FedAvgM {
        lr: 1.0,
        momentum: 0.5,
    };
    let Some(h) = Harness::new(backend, |c| c.optimizer = opt).await else {
        return;
    };
    let h1 = h.head("1").await;
    let (_, u1) = publish_one_round(&h, "1", 0..2).await;
    let (_, u2) = publish_one_round(&h, "2", 2..4).await;
    let mean = |us: &[PrivatizedUpdate], i: usize| {
        us.iter().map(|u| u.values()[i] as f64 * GAMMA).sum::<f64>() / us.len() as f64
    };
    let h2 = h.head("2").await;
    let expected: Vec<f32> = (0..131)
        .map(|i| {
            let m = 0.5 * mean(&u1, i) + mean(&u2, i);
            (h2[i] as f64 + m) as f32
        })
        .collect();
    assert_close(&h2, &reference_fedavg(&h1, &u1), 1e-6);
    assert_close(&h.head("3").await, &expected, 1e-6);
}

async fn rr_statistics_and_drift_flag(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| {
        c.rr_epsilon = 6.0;
        c.drift.min_reports = 30;
        c.drift.margin = 0.05;
    })
    .await
    else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    // Version 1: everyone reports thumbs up; version 2: everyone down (RR bits as sent).
    for i in 0..30 {
        let token = h.register().await;
        let (s, v) = h
            .call(
                Method::POST,
                "/v1/feedback",
                Some(&token),
                Some(json!({"modelVersion": "1", "bit": true})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let (s, _) = h
            .call(
                Method::POST,
                "/v1/feedback",
                Some(&token),
                Some(json!({"modelVersion": "2", "bit": i % 10 == 0})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        if i == 0 {
            let (s, v) = h
                .call(
                    Method::POST,
                    "/v1/feedback",
                    Some(&token),
                    Some(json!({"modelVersion": "1", "bit": false})),
                )
                .await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("duplicate_report"))
            );
        }
    }
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(&h.register().await),
            Some(json!({"modelVersion": "7", "bit": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(&h.register().await),
            Some(json!({"modelVersion": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let stats = h.get("/v1/stats").await;
    let rr = feedloop_privacy::randomized_response::RandomizedResponse::new(6.0).unwrap();
    let v1 = &stats["versions"][0];
    let e1 = rr.estimate_proportion(30, 30).unwrap();
    assert_eq!(v1["reports"], 30);
    assert_eq!(v1["thumbsUpRate"].as_f64().unwrap(), e1.proportion);
    let ci = v1["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= e1.proportion && e1.proportion <= ci[1].as_f64().unwrap());
    let v2 = &stats["versions"][1];
    assert_eq!(v2["reports"], 30);
    assert_eq!(
        v2["thumbsUpRate"].as_f64().unwrap(),
        rr.estimate_proportion(3, 30).unwrap().proportion
    );
    assert_eq!(v2["cohortSize"], 2);
    assert!(v2["epsilonPerParticipant"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["rounds"][0]["cohortSize"], 2);
    // Version 2 dropped far more than the margin, significantly: flagged (API and metrics).
    assert_eq!(v2["flagged"], true, "{stats}");
    assert!(v2["flagReason"].as_str().unwrap().contains("margin"));
    assert_eq!(v1["flagged"], false);
    assert_eq!(h.get("/v1/models/2").await["flagged"], true);
}

async fn deadline_closes_the_round(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let task = feedloop_server::spawn_deadline_task(h.app.clone());
    let mut body = round_body(2, None);
    body["durationSeconds"] = json!(0.5);
    let round = h.open_round(body).await;
    for s in 0..2 {
        let token = h.register().await;
        let (st, _) = h
            .submit(&token, &round, Some("1"), privatized(s, 131).to_bytes())
            .await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let mut status = String::new();
    for _ in 0..200 {
        status = h.get("/v1/rounds/1").await["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status != "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert_eq!(status, "published");
    assert_eq!(h.get("/v1/rounds/1").await["closeReason"], "deadline");
    let (s, v) = h.call(Method::GET, "/v1/rounds/current", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_open_round"))
    );
}

/// What the browser client relies on: an automatic round that reopens on the new version, the
/// model's ETag, `sendBeacon`'s query-parameter token, and the dashboard's static files.
async fn browser_sync_support(backend: Backend) {
    let site = std::env::temp_dir().join(unique("feedloop-static"));
    std::fs::create_dir_all(site.join("dashboard")).unwrap();
    std::fs::write(site.join("dashboard/index.html"), "<h1>dash</h1>").unwrap();
    let dir = site.clone();
    let Some(h) = Harness::new(backend, move |c| {
        c.static_dir = Some(dir);
        c.auto_round = Some(serde_json::from_value(round_body(2, Some(2))).unwrap());
    })
    .await
    else {
        return;
    };
    // Static files outside /v1; unknown paths stay JSON 404s.
    let (s, page) = h.raw(Method::GET, "/dashboard/", &[], vec![]).await;
    assert_eq!(
        (s, page.as_slice()),
        (StatusCode::OK, &b"<h1>dash</h1>"[..])
    );
    let (s, v) = h.call(Method::GET, "/nothing-here", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_such_route"))
    );

    let round = h.app.ensure_auto_round().await.unwrap().expect("opened");
    assert!(
        h.app.ensure_auto_round().await.unwrap().is_none(),
        "one at a time"
    );
    let round = json!({ "roundId": round.round_id.to_string() });

    // The model's ETag: unchanged → 304 with no body.
    let (s, etag_body) = h.raw(Method::GET, "/v1/models/current", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&etag_body).unwrap()["version"],
        "1"
    );
    let (s, body) = h
        .raw(
            Method::GET,
            "/v1/models/current",
            &[("if-none-match", "\"model-1\"")],
            vec![],
        )
        .await;
    assert_eq!((s, body.len()), (StatusCode::NOT_MODIFIED, 0));

    // A beacon: token and model version in the query, no headers.
    let token = h.register().await;
    let path = format!("/v1/rounds/{}/updates", round["roundId"].as_str().unwrap());
    let beacon = format!("{path}?access_token={token}&modelVersion=1");
    let (s, _) = h
        .raw(Method::POST, &beacon, &[], privatized(1, 131).to_bytes())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // The same beacon again is a duplicate; a bad query is a JSON 400; no token is a 401.
    let (s, body) = h
        .raw(Method::POST, &beacon, &[], privatized(1, 131).to_bytes())
        .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate_update"))
    );
    let (s, body) = h
        .raw(
            Method::POST,
            &format!("{path}?nonsense=1"),
            &[],
            privatized(2, 131).to_bytes(),
        )
        .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (s, _) = h
        .raw(Method::POST, &path, &[], privatized(2, 131).to_bytes())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get(&path.replace("/updates", "")).await["received"], 1);

    // The second update reaches the target: version 2 is published and the next round opens on it.
    let token = h.register().await;
    let (s, v) = h
        .submit(&token, &round, Some("1"), privatized(3, 131).to_bytes())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["roundClosed"]["status"], "published");
    // Reopened at once by the close itself, not at the next deadline poll.
    let next = h.get("/v1/rounds/current").await;
    assert_eq!(
        (next["roundId"].as_str(), next["modelVersion"].as_str()),
        (Some("2"), Some("2"))
    );
    let (s, _) = h
        .raw(
            Method::GET,
            "/v1/models/current",
            &[("if-none-match", "\"model-1\"")],
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "a new version invalidates the ETag");
    let _ = std::fs::remove_dir_all(site);
}

async fn service_endpoints_and_admin_auth(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    assert_eq!(h.get("/healthz").await["status"], "ok");
    let (s, m) = h.raw(Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("# TYPE feedloop_updates_accepted_total counter"));
    assert!(m.contains("feedloop_current_model_version 1"));
    // Every route is in the OpenAPI document.
    let doc = h.get("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/clients/register", "post"),
        ("/v1/clients/refresh", "post"),
        ("/v1/rounds", "get"),
        ("/v1/rounds/current", "get"),
        ("/v1/rounds/{roundId}", "get"),
        ("/v1/rounds/{roundId}/updates", "post"),
        ("/v1/models", "get"),
        ("/v1/models/current", "get"),
        ("/v1/models/{version}", "get"),
        ("/v1/models/{version}/model.onnx", "get"),
        ("/v1/feedback", "post"),
        ("/v1/stats", "get"),
        ("/v1/admin/rounds", "post"),
        ("/v1/admin/rounds/{roundId}", "patch"),
        ("/v1/admin/rounds/{roundId}/close", "post"),
        ("/v1/admin/rollback", "post"),
        ("/v1/admin/audit", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    // Unknown route and method: JSON errors.
    let (s, _) = h.call(Method::GET, "/nope", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call(Method::DELETE, "/v1/stats", None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    // Token refresh keeps the client id.
    let token = h.register().await;
    let (s, v) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["token"].is_string());
    // Admin: bad JSON, invalid configuration, one open round at a time, round changes audited.
    let (s, v) = h
        .raw(
            Method::POST,
            "/v1/admin/rounds",
            &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            b"{".to_vec(),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&v)
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rounds",
            Some(ADMIN_KEY),
            Some(json!({"clipNorm": 1.0, "granularity": 0.5, "noiseStddev": 1.0, "minCohort": 2})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_round_config"))
    );
    let (s, _) = h
        .call(Method::POST, "/v1/admin/rounds", Some(ADMIN_KEY), Some(json!({"clipNorm": C, "granularity": GAMMA, "noiseStddev": SIGMA, "minCohort": 2, "dimension": 64})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    h.open_round(round_body(2, None)).await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rounds",
            Some(ADMIN_KEY),
            Some(round_body(2, None)),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("round_already_open"))
    );
    let (s, v) = h
        .call(
            Method::PATCH,
            "/v1/admin/rounds/1",
            Some(ADMIN_KEY),
            Some(json!({"minCohort": 5, "targetCount": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["minCohort"].as_i64(), v["targetCount"].as_i64()),
        (Some(5), Some(10))
    );
    let (_, audit) = h
        .call(Method::GET, "/v1/admin/audit", Some(ADMIN_KEY), None)
        .await;
    let change = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "round.update")
        .unwrap()
        .clone();
    assert_eq!(change["details"]["before"]["minCohort"], 2);
    assert_eq!(change["details"]["after"]["minCohort"], 5);
    // Clients cannot use admin endpoints with their token.
    let (s, _) = h
        .call(Method::POST, "/v1/admin/rounds/1/close", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// A real listener on 127.0.0.1:0 with reqwest, and graceful shutdown (SQLite only: the
/// transport does not depend on the backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_listener_serves_and_shuts_down_gracefully() {
    let h = Harness::new(Backend::Sqlite, |_| {}).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(feedloop_server::serve(h.app.clone(), listener, async {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("http://{addr}/v1/clients/register"))
        .header("x-feedloop-deployment-key", DEPLOYMENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert!(v["token"].as_str().unwrap().starts_with("v1."));
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops after the shutdown signal")
        .unwrap()
        .unwrap();
    assert!(client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err());
}
