//! The network layer: talking to the feedloop server (`feedloop serve`). Every body it reads is
//! a `feedloop_core::protocol` type, the same the server writes.
//!
//! Privacy boundary: the only request that carries a body is an upload, and its functions
//! ([`send`], [`beacon`]) take a [`QueuedUpload`], which is made only from a `Release` (privatized,
//! charged to the budget, written to the ledger; see `feedloop_core::outbox`). Everything else here
//! is a GET or a body-less POST (registration). No candidate text, feedback event or learning
//! state can reach this module: it has no function that accepts them.

use feedloop_core::contribution::RoundConfig;
use feedloop_core::metric_reports::MetricRelease;
use feedloop_core::outbox::{QueuedUpload, SendOutcome};
use feedloop_core::protocol::{
    paths, ErrorBody, ModelVersion, Round, RoundStatus, Stats, TokenGrant, UnixMillis,
    DEPLOYMENT_KEY_HEADER, MODEL_VERSION_HEADER, UPDATE_CONTENT_TYPE,
};
use feedloop_core::secure_metrics::MetricTerms;
use js_sys::{Promise, Reflect, Uint8Array};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Request, RequestInit, RequestMode, Response};

#[wasm_bindgen]
extern "C" {
    /// `globalThis.fetch` (a window, a worker or Node ≥ 18).
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;
}

/// Where and as which site to sync.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerConfig {
    /// The server's base URL, e.g. `https://feedback.example.com` (or "" for this page's origin).
    pub url: String,
    /// The site's deployment key (`feedloop serve --deployment-key site=KEY`).
    pub deployment_key: String,
}

impl ServerConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.deployment_key.trim().is_empty() {
            return Err("server.deploymentKey is empty".into());
        }
        let http = self.url.starts_with("http://") || self.url.starts_with("https://");
        if !(self.url.is_empty() || http) {
            return Err(format!(
                "server.url {:?} must start with http:// or https:// (or be \"\" for this origin)",
                self.url
            ));
        }
        Ok(())
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }
}

/// This device's client token (from registration), kept in IndexedDB: the server's grant and the
/// server it belongs to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientToken {
    #[serde(flatten)]
    pub grant: TokenGrant,
    pub server: String,
}

impl ClientToken {
    /// Usable for this server at `now`.
    pub fn valid_for(&self, server: &ServerConfig, now: UnixMillis) -> bool {
        self.server == server.url && self.grant.valid_at(now)
    }
}

/// A published model version, as the device uses it.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalModel {
    pub version: String,
    pub head: Vec<f32>,
    pub etag: Option<String>,
}

/// The open round: what the device needs to contribute, and progress for the page (the `round`
/// of a `SyncReport`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OpenRound {
    #[serde(flatten)]
    pub config: RoundConfig,
    pub dimension: usize,
    pub min_cohort: i64,
    pub target_count: Option<i64>,
    pub received: i64,
    pub deadline: Option<UnixMillis>,
}

impl From<Round> for OpenRound {
    fn from(round: Round) -> Self {
        Self {
            config: round.config(),
            dimension: round.dimension.max(0) as usize,
            min_cohort: round.min_cohort,
            target_count: round.target_count,
            received: round.received,
            deadline: round.deadline,
        }
    }
}

/// A failed request: `retry` when the server was unreachable or overloaded.
#[derive(Debug, Clone, PartialEq)]
pub struct NetError {
    pub status: Option<u16>,
    pub code: Option<String>,
    pub message: String,
}

impl NetError {
    fn offline(message: String) -> Self {
        Self {
            status: None,
            code: None,
            message,
        }
    }

    /// The server answered, but the browser withheld the answer: its CORS policy does not list
    /// this page's origin.
    fn cors_blocked(url: &str, page: &str) -> Self {
        Self {
            status: None,
            code: Some(CORS_BLOCKED.into()),
            message: format!(
                "{url} answered, but the server's CORS policy does not allow this page's origin \
                 {page}: start it with --cors-origin {page}"
            ),
        }
    }

    /// Blocked by CORS: a configuration to fix, not a network to wait for (queued uploads stay).
    pub fn cors(&self) -> bool {
        self.code.as_deref() == Some(CORS_BLOCKED)
    }

    pub fn retry(&self) -> bool {
        match self.status {
            None => !self.cors(),
            Some(s) => s == 408 || s == 429 || s >= 500,
        }
    }
}

/// `NetError::code` of a request the browser blocked for CORS.
const CORS_BLOCKED: &str = "cors_blocked";

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.status, &self.code) {
            (Some(s), Some(code)) => write!(f, "{s} {code}: {}", self.message),
            (Some(s), None) => write!(f, "{s}: {}", self.message),
            _ => write!(f, "{}", self.message),
        }
    }
}

fn describe(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

/// One request; `Ok` for any HTTP answer (the caller reads the status).
async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Response, NetError> {
    let init = RequestInit::new();
    init.set_method(method);
    let h = web_sys::Headers::new().map_err(|e| NetError::offline(describe(&e)))?;
    for (k, v) in headers {
        h.set(k, v).map_err(|e| NetError::offline(describe(&e)))?;
    }
    init.set_headers(&h);
    if let Some(body) = body {
        init.set_body(&Uint8Array::from(body));
    }
    let req = Request::new_with_str_and_init(url, &init)
        .map_err(|e| NetError::offline(format!("bad request to {url}: {}", describe(&e))))?;
    let resp = match JsFuture::from(global_fetch(&req)).await {
        Ok(resp) => resp,
        Err(e) => {
            let unreachable = NetError::offline(format!("{url} unreachable: {}", describe(&e)));
            return Err(match page_origin() {
                Some(page) if cross_origin(url, &page) && answers_without_cors(url).await => {
                    NetError::cors_blocked(url, &page)
                }
                _ => unreachable,
            });
        }
    };
    resp.dyn_into::<Response>()
        .map_err(|_| NetError::offline("fetch did not return a Response".into()))
}

/// This page's origin (`location.origin`), if it has one.
fn page_origin() -> Option<String> {
    let location = Reflect::get(&js_sys::global(), &"location".into()).ok()?;
    Reflect::get(&location, &"origin".into()).ok()?.as_string()
}

/// Whether `url` is absolute and on another origin than `page`.
fn cross_origin(url: &str, page: &str) -> bool {
    (url.starts_with("http://") || url.starts_with("https://"))
        && !(url == page || url.starts_with(&format!("{page}/")))
}

/// Whether the server answers `url` at all when the answer need not be readable (`no-cors`: the
/// browser hands back an opaque response instead of failing): then a failed request was blocked by
/// the server's CORS policy, not by the network.
async fn answers_without_cors(url: &str) -> bool {
    let init = RequestInit::new();
    init.set_method("GET");
    init.set_mode(RequestMode::NoCors);
    let Ok(req) = Request::new_with_str_and_init(url, &init) else {
        return false;
    };
    JsFuture::from(global_fetch(&req)).await.is_ok()
}

async fn text(resp: &Response) -> Result<String, NetError> {
    let promise = resp.text().map_err(|e| NetError::offline(describe(&e)))?;
    Ok(JsFuture::from(promise)
        .await
        .map_err(|e| NetError::offline(describe(&e)))?
        .as_string()
        .unwrap_or_default())
}

/// A 2xx answer's body as the protocol type `T`.
async fn body<T: DeserializeOwned>(resp: &Response) -> Result<T, NetError> {
    let text = text(resp).await?;
    serde_json::from_str(&text).map_err(|e| NetError {
        status: Some(resp.status()),
        code: None,
        message: format!("unexpected answer from the server: {e}"),
    })
}

/// A non-2xx answer as an error, with the server's `ErrorBody` when present.
async fn failure(resp: &Response) -> NetError {
    let status = resp.status();
    let error = text(resp)
        .await
        .ok()
        .and_then(|t| serde_json::from_str::<ErrorBody>(&t).ok());
    match error {
        Some(ErrorBody { error }) => NetError {
            status: Some(status),
            code: Some(error.code),
            message: error.message,
        },
        None => NetError {
            status: Some(status),
            code: None,
            message: resp.status_text(),
        },
    }
}

async fn checked<T: DeserializeOwned>(resp: Response) -> Result<T, NetError> {
    if resp.ok() {
        body(&resp).await
    } else {
        Err(failure(&resp).await)
    }
}

async fn token(resp: Response, server: &ServerConfig) -> Result<ClientToken, NetError> {
    Ok(ClientToken {
        grant: checked(resp).await?,
        server: server.url.clone(),
    })
}

/// First contact: a new client id and token for this site.
pub async fn register(server: &ServerConfig) -> Result<ClientToken, NetError> {
    let resp = request(
        "POST",
        &server.endpoint(paths::REGISTER),
        &[(DEPLOYMENT_KEY_HEADER, &server.deployment_key)],
        None,
    )
    .await?;
    token(resp, server).await
}

/// A fresh expiry for a still-valid token.
pub async fn refresh(server: &ServerConfig, token: &ClientToken) -> Result<ClientToken, NetError> {
    let bearer = format!("Bearer {}", token.grant.token);
    let resp = request(
        "POST",
        &server.endpoint(paths::REFRESH),
        &[("authorization", &bearer)],
        None,
    )
    .await?;
    self::token(resp, server).await
}

/// The model this device should run (the current one, or a canary when the server's staged
/// rollout put this client in its arm); `None` when it is still the one tagged `etag` (304).
pub async fn current_model(
    server: &ServerConfig,
    token: &ClientToken,
    etag: Option<&str>,
) -> Result<Option<GlobalModel>, NetError> {
    let bearer = format!("Bearer {}", token.grant.token);
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(tag) = etag {
        headers.push(("if-none-match", tag));
    }
    let resp = request(
        "GET",
        &server.endpoint(paths::CURRENT_MODEL),
        &headers,
        None,
    )
    .await?;
    if resp.status() == 304 {
        return Ok(None);
    }
    let etag = resp.headers().get("etag").ok().flatten();
    let model: ModelVersion = checked(resp).await?;
    let Some(head) = model.head else {
        return Err(NetError::offline(
            "the server's current model has no head".into(),
        ));
    };
    Ok(Some(GlobalModel {
        version: model.version,
        head,
        etag,
    }))
}

/// The open round, or `None` when no round is open.
pub async fn open_round(server: &ServerConfig) -> Result<Option<OpenRound>, NetError> {
    let resp = request("GET", &server.endpoint(paths::CURRENT_ROUND), &[], None).await?;
    if resp.status() == 404 {
        return Ok(None);
    }
    let round: Round = checked(resp).await?;
    Ok((round.status == RoundStatus::Open).then(|| round.into()))
}

/// The ε the server de-biases metric reports for, the segments it declares and its secure-metric
/// terms, if it aggregates metrics with a helper (`GET /v1/stats`).
pub async fn metric_terms(server: &ServerConfig) -> Result<MetricTerms, NetError> {
    let resp = request("GET", &server.endpoint(paths::STATS), &[], None).await?;
    let stats: Stats = checked(resp).await?;
    Ok(MetricTerms::from_stats(&stats))
}

/// Sends one metric report. Only a [`MetricRelease`] can be sent: randomized, charged to the
/// budget and in the ledger (`feedloop_core::metric_reports`). A report the server already holds
/// (`409 duplicate_report`, e.g. sent before a lost answer) counts as delivered.
pub async fn send_metric(
    server: &ServerConfig,
    token: &ClientToken,
    release: &MetricRelease,
) -> Result<(), NetError> {
    let bearer = format!("Bearer {}", token.grant.token);
    let body = release.body();
    let resp = request(
        "POST",
        &server.endpoint(release.path()),
        &[
            ("authorization", &bearer),
            ("content-type", "application/json"),
        ],
        Some(&body),
    )
    .await?;
    if resp.ok() {
        return Ok(());
    }
    let error = failure(&resp).await;
    if error.code.as_deref() == Some("duplicate_report") {
        return Ok(());
    }
    Err(error)
}

fn upload_path(upload: &QueuedUpload) -> String {
    paths::updates(upload.round_id())
}

/// Sends one queued (privatized) upload and says what became of it.
pub async fn send(
    server: &ServerConfig,
    token: &ClientToken,
    upload: &QueuedUpload,
) -> SendOutcome {
    let bearer = format!("Bearer {}", token.grant.token);
    let result = request(
        "POST",
        &server.endpoint(&upload_path(upload)),
        &[
            ("authorization", &bearer),
            (MODEL_VERSION_HEADER, upload.model_version()),
            ("content-type", UPDATE_CONTENT_TYPE),
        ],
        Some(upload.bytes()),
    )
    .await;
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => return SendOutcome::RetryLater(e.to_string()),
    };
    if resp.ok() {
        return SendOutcome::Delivered;
    }
    let error = failure(&resp).await;
    match (error.status, error.code.as_deref()) {
        // Stored earlier (e.g. by a beacon whose answer nobody saw).
        (_, Some("duplicate_update")) => SendOutcome::Delivered,
        // The token expired or the server's secret changed: re-register, then retry.
        (Some(401), _) => SendOutcome::RetryLater(error.to_string()),
        _ if error.retry() => SendOutcome::RetryLater(error.to_string()),
        _ => SendOutcome::Refused(error.to_string()),
    }
}

/// Hands one queued upload to `navigator.sendBeacon` (the page is being hidden or closed, so a
/// `fetch` might not finish). `sendBeacon` cannot set headers, so the token and model version go
/// in the query (`access_token`, RFC 6750 §2.3). Returns whether the browser accepted it.
pub fn beacon(server: &ServerConfig, token: &ClientToken, upload: &QueuedUpload) -> bool {
    let Some(window) = web_sys::window() else {
        return false;
    };
    let url = format!(
        "{}?access_token={}&modelVersion={}",
        server.endpoint(&upload_path(upload)),
        String::from(js_sys::encode_uri_component(&token.grant.token)),
        String::from(js_sys::encode_uri_component(upload.model_version())),
    );
    // A plain byte body has no Content-Type, so a cross-origin beacon needs no preflight.
    let body = Uint8Array::from(upload.bytes());
    window
        .navigator()
        .send_beacon_with_opt_js_u8_array(&url, Some(&body))
        .unwrap_or(false)
}

/// Whether `navigator.onLine` says the browser is offline (then syncing is skipped quietly).
pub fn offline() -> bool {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default();
    Reflect::get(&navigator, &"onLine".into())
        .ok()
        .and_then(|v| v.as_bool())
        .is_some_and(|online| !online)
}
