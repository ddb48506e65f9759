//! The integration tests' harness: the whole HTTP API against a real SQLite file and, when
//! `FEEDLOOP_TEST_POSTGRES_URL` is set (see tests/postgres.sh), a real PostgreSQL — the same tests
//! on both backends. Without the variable the PostgreSQL variants print SKIPPED and return.

pub use std::sync::atomic::{AtomicU64, Ordering};
pub use std::time::Duration;

pub use axum::body::Body;
pub use axum::http::{Method, Request, StatusCode};
pub use axum::Router;
pub use feedloop_core::RewardModel;
pub use feedloop_privacy::accounting::zcdp_to_approx_dp;
pub use feedloop_privacy::{privatize_with_os_rng, PrivatizedUpdate, PrivatizerConfig};
pub use feedloop_server::{App, Config, ServerOptimizer};
pub use http_body_util::BodyExt;
pub use serde_json::{json, Value};
pub use sqlx::Connection;
pub use tower::ServiceExt;

pub const DEPLOYMENT_KEY: &str = "site-key-0123456789abcdef";
pub const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
/// Parameters of the bundled model's head (contract 2: cosine, 2 × 64 embedding terms, length,
/// lexical, bias): the dimension of every update the server takes for it.
pub const HEAD_D: usize = 2 * 64 + 4;
pub const C: f64 = 0.5;
pub const GAMMA: f64 = 1e-3;
pub const SIGMA: f64 = 0.1;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct Harness {
    pub app: App,
    pub router: Router,
    pub config: Config,
    cleanup: Option<std::path::PathBuf>,
    /// The documented operations (`METHOD /template`) this harness's requests reached.
    pub covered: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(dir) = &self.cleanup {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub fn unique(prefix: &str) -> String {
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

pub fn base_config(url: String) -> Config {
    let mut c = Config::new(url);
    c.deployment_keys = vec![format!("site={DEPLOYMENT_KEY}").parse().unwrap()];
    c.admin_keys = vec![ADMIN_KEY.to_string()];
    c.deadline_poll = Duration::from_millis(50);
    c.max_body_bytes = 64 * 1024;
    c
}

/// A database URL for a fresh, empty database, or None (PostgreSQL not configured).
pub async fn fresh_database(backend: Backend) -> Option<(String, Option<std::path::PathBuf>)> {
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
    pub async fn new(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<Self> {
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
            router: feedloop_server::app(app.clone()),
            app,
            config,
            cleanup,
            covered: Default::default(),
        })
    }

    /// A second server process on the same database (state must survive).
    pub async fn restart(&mut self) {
        self.app = App::new(self.config.clone()).await.unwrap();
        self.router = feedloop_server::app(self.app.clone());
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> (StatusCode, Vec<u8>) {
        let mut req = Request::builder().method(method.clone()).uri(path);
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
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        if let Some(operation) = conforms(&method, path, status, content_type.as_deref(), &bytes) {
            self.covered.lock().unwrap().insert(operation);
        }
        (status, bytes)
    }

    pub async fn call(
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

    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    pub async fn register(&self) -> String {
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

    pub async fn open_round(&self, body: Value) -> Value {
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

    pub async fn submit(
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

    pub async fn head(&self, version: &str) -> Vec<f32> {
        serde_json::from_value(self.get(&format!("/v1/models/{version}")).await["head"].clone())
            .unwrap()
    }
}

pub fn round_body(min_cohort: i64, target: Option<i64>) -> Value {
    json!({ "clipNorm": C, "granularity": GAMMA, "noiseStddev": SIGMA, "minCohort": min_cohort,
            "targetCount": target })
}

pub fn delta(seed: u32, d: usize) -> Vec<f32> {
    (0..d)
        .map(|i| ((i as f32 * 0.37 + seed as f32 * 1.3).sin()) * 0.02)
        .collect()
}

pub fn privatized(seed: u32, d: usize) -> PrivatizedUpdate {
    let cfg = PrivatizerConfig::new(C, GAMMA, SIGMA).unwrap();
    privatize_with_os_rng(&delta(seed, d), &cfg).unwrap()
}

/// The reference: new head = old + mean(γ·v) (plain f64 loop), rounded to f32.
pub fn reference_fedavg(old: &[f32], updates: &[PrivatizedUpdate]) -> Vec<f32> {
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

pub fn assert_close(a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}");
    }
}

/// Each test `name(backend)` as `name::sqlite` and `name::postgres`.
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

pub async fn publish_one_round(
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
        let u = privatized(s, HEAD_D);
        let token = h.register().await;
        let (st, v) = h.submit(&token, &round, Some(base), u.to_bytes()).await;
        assert_eq!(st, StatusCode::ACCEPTED, "{v}");
        updates.push(u);
        last = v;
    }
    assert_eq!(last["roundClosed"]["status"], "published", "{last}");
    (last["roundClosed"].clone(), updates)
}

// ----- conformance with the generated OpenAPI document -----

/// The server's OpenAPI document as JSON, every object schema closed (`additionalProperties:
/// false`), so that a response field the document does not list fails as well as a missing one.
pub fn document() -> &'static Value {
    static DOCUMENT: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(feedloop_server::routes::document()).unwrap();
        close_objects(&mut doc["components"]["schemas"]);
        doc
    })
}

fn close_objects(v: &mut Value) {
    match v {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// The documented operation for a request: `(template, operation)`, preferring the template with
/// the most literal segments (`/v1/rounds/current` over `/v1/rounds/{roundId}`).
pub fn operation(method: &Method, path: &str) -> Option<(&'static str, &'static Value)> {
    let segments: Vec<&str> = path.split('/').collect();
    let mut best: Option<(usize, &str, &Value)> = None;
    for (template, item) in document()["paths"].as_object()? {
        let parts: Vec<&str> = template.split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literals = 0;
        let fits = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                !s.is_empty()
            } else {
                literals += 1;
                t == s
            }
        });
        let Some(op) = item.get(method.as_str().to_lowercase()) else {
            continue;
        };
        if fits && best.is_none_or(|(l, _, _)| literals > l) {
            best = Some((literals, template.as_str(), op));
        }
    }
    best.map(|(_, t, op)| (t, op))
}

/// Checks one real answer against the document: the status must be listed for the operation,
/// and a JSON body must validate against the listed schema. Returns the operation's name, or
/// `None` for requests outside the documented API (static pages, unknown routes, which answer
/// the JSON 404/405).
pub fn conforms(
    method: &Method,
    uri: &str,
    status: StatusCode,
    content_type: Option<&str>,
    body: &[u8],
) -> Option<String> {
    let path = uri.split('?').next().unwrap_or(uri);
    let (template, op) = operation(method, path)?;
    let name = format!("{method} {template}");
    // An exact status wins over its range (`4XX`), as OpenAPI says.
    let exact = &op["responses"][status.as_str()];
    let range = format!("{}XX", status.as_u16() / 100);
    let listed = if exact.is_object() {
        exact
    } else {
        &op["responses"][range.as_str()]
    };
    assert!(
        listed.is_object(),
        "{name} answered {status}, which the OpenAPI document does not list for it: {}",
        String::from_utf8_lossy(body)
    );
    let Some(content) = listed["content"].as_object() else {
        assert!(
            body.is_empty(),
            "{name} {status}: a body the document does not describe"
        );
        return Some(name);
    };
    let media = content_type.unwrap_or_default();
    let documented = content
        .keys()
        .any(|k| media.split(';').next().unwrap_or_default().trim() == k);
    assert!(
        documented,
        "{name} {status}: content type {media:?} is not among {:?}",
        content.keys().collect::<Vec<_>>()
    );
    if let Some(schema) = content.get("application/json").map(|c| &c["schema"]) {
        let instance: Value = serde_json::from_slice(body)
            .unwrap_or_else(|e| panic!("{name} {status}: the body is not JSON: {e}"));
        let mut root = schema.clone();
        root["components"] = document()["components"].clone();
        if let Err(e) = jsonschema::validate(&root, &instance) {
            panic!("{name} {status}: the body does not match the document: {e}\n{instance}");
        }
    }
    Some(name)
}

/// Every operation the document lists, as `METHOD /template`.
pub fn documented_operations() -> std::collections::BTreeSet<String> {
    let mut all = std::collections::BTreeSet::new();
    for (template, item) in document()["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if ["get", "post", "patch", "put", "delete"].contains(&method.as_str()) {
                all.insert(format!("{} {template}", method.to_uppercase()));
            }
        }
    }
    all
}

/// The client id of a token (from a refresh's grant).
pub async fn token_client_id(h: &Harness, token: &str) -> String {
    let (s, grant) = h
        .call(Method::POST, "/v1/clients/refresh", Some(token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{grant}");
    grant["clientId"].as_str().unwrap().to_string()
}
