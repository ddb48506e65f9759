//! HTTP: routes, thin handlers, and the JSON shapes of requests and responses.

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::service::{App, NewRound, RateEstimate, RoundChange};
use crate::store::{AuditRow, RoundRow, VersionRow};

/// Header naming the deployment key on first contact.
pub const DEPLOYMENT_KEY_HEADER: &str = "x-feedloop-deployment-key";
/// Header naming the model version an update was computed against.
pub const MODEL_VERSION_HEADER: &str = "x-feedloop-model-version";

/// The API router (without the middleware stack; see [`crate::router`]).
pub fn routes(app: App) -> Router {
    let router = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/v1/clients/register", post(register))
        .route("/v1/clients/refresh", post(refresh))
        .route("/v1/rounds", get(list_rounds))
        .route("/v1/rounds/current", get(current_round))
        .route("/v1/rounds/{round_id}", get(get_round))
        .route("/v1/rounds/{round_id}/updates", post(submit_update))
        .route("/v1/models", get(list_models))
        .route("/v1/models/current", get(current_model))
        .route("/v1/models/{version}", get(get_model))
        .route("/v1/models/{version}/model.onnx", get(get_onnx))
        .route("/v1/feedback", post(report))
        .route("/v1/stats", get(stats))
        .route("/v1/admin/rounds", post(admin_open_round))
        .route(
            "/v1/admin/rounds/{round_id}",
            axum::routing::patch(admin_change_round),
        )
        .route("/v1/admin/rounds/{round_id}/close", post(admin_close_round))
        .route("/v1/admin/rollback", post(admin_rollback))
        .route("/v1/admin/audit", get(admin_audit))
        .method_not_allowed_fallback(method_not_allowed);
    // Everything outside the API: the dashboard and demo pages when a static folder is given.
    let router = match app.config().static_dir.clone() {
        Some(dir) => router.fallback_service(
            tower_http::services::ServeDir::new(dir)
                .append_index_html_on_directories(true)
                .not_found_service(axum::handler::HandlerWithoutStateExt::into_service(
                    not_found,
                )),
        ),
        None => router.fallback(not_found),
    };
    router.with_state(app)
}

/// A JSON body whose every failure (size, syntax, shape) is the server's JSON error.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self> {
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        serde_json::from_slice(&bytes)
            .map(ApiJson)
            .map_err(|e| Error::bad_request("invalid_json", e.to_string()))
    }
}

fn body_error(e: BytesRejection) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge("request body too large".into())
    } else {
        Error::bad_request("invalid_body", e.body_text())
    }
}

fn id(raw: &str, what: &'static str) -> Result<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::bad_request("invalid_id", format!("`{raw}` is not a valid {what}")))
}

async fn not_found() -> Error {
    Error::not_found("no_such_route", "no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> Response {
    let body = json!({ "error": { "code": "method_not_allowed", "message": "method not allowed on this endpoint" } });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

// ----- JSON shapes -----

fn opt_str(v: Option<i64>) -> Value {
    v.map_or(Value::Null, |v| Value::String(v.to_string()))
}

/// A round; the first five fields are the client's `RoundConfig` (feedloop-core).
pub fn round_json(r: &RoundRow) -> Value {
    json!({
        "roundId": r.round_id.to_string(),
        "modelVersion": r.model_version.to_string(),
        "clipNorm": r.clip_norm,
        "granularity": r.granularity,
        "noiseStddev": r.noise_stddev,
        "dimension": r.dimension,
        "minCohort": r.min_cohort,
        "targetCount": r.target_count,
        "deadline": r.deadline,
        "status": r.status,
        "received": r.received,
        "createdAt": r.created_at,
        "closedAt": r.closed_at,
        "closeReason": r.close_reason,
        "cohortSize": r.cohort_size,
        "publishedVersion": opt_str(r.published_version),
        "privacy": { "rho": r.rho, "epsilonPerParticipant": r.epsilon, "delta": r.delta },
    })
}

/// A model version (with its head when `with_head`).
pub fn version_json(v: &VersionRow, current: i64, with_head: bool) -> Value {
    let mut out = json!({
        "version": v.version.to_string(),
        "parentVersion": opt_str(v.parent_version),
        "roundId": opt_str(v.round_id),
        "current": v.version == current,
        "cohortSize": v.cohort_size,
        "optimizer": v.optimizer,
        "noise": { "clipNorm": v.clip_norm, "granularity": v.granularity, "noiseStddev": v.noise_stddev },
        "privacy": { "rho": v.rho, "epsilonPerParticipant": v.epsilon, "delta": v.delta },
        "onnxSha256": v.onnx_sha256,
        "onnxUrl": format!("/v1/models/{}/model.onnx", v.version),
        "createdAt": v.created_at,
        "flagged": v.flagged != 0,
        "flagReason": v.flag_reason,
        "flaggedAt": v.flagged_at,
    });
    if with_head {
        let head: Value = serde_json::from_str(&v.head).unwrap_or(Value::Null);
        out["head"] = head;
    }
    out
}

fn rate_json(version: i64, r: &RateEstimate) -> Value {
    let (rate, se, ci) = match r.estimate {
        Some(e) => (
            json!(e.proportion),
            json!(e.std_error),
            json!([
                e.proportion - 1.96 * e.std_error,
                e.proportion + 1.96 * e.std_error
            ]),
        ),
        None => (Value::Null, Value::Null, Value::Null),
    };
    json!({ "version": version.to_string(), "reports": r.total, "reportedOnes": r.ones,
            "thumbsUpRate": rate, "stdError": se, "ci95": ci })
}

fn audit_json(a: &AuditRow) -> Value {
    json!({ "id": a.id, "at": a.at, "adminFingerprint": a.admin_fingerprint, "action": a.action,
            "details": serde_json::from_str::<Value>(&a.details).unwrap_or(Value::Null) })
}

/// `expiresAt` and `issuedAt` are unix milliseconds.
fn token_json(app: &App, claims: &crate::auth::Claims, token: String) -> Value {
    let issued_at = claims.expires_at - app.config().token_ttl.as_millis() as i64;
    json!({ "clientId": claims.client_id, "deployment": claims.deployment, "token": token,
            "expiresAt": claims.expires_at, "issuedAt": issued_at })
}

// ----- handlers -----

async fn healthz(State(app): State<App>) -> Result<Json<Value>> {
    app.store().ping().await?;
    Ok(Json(json!({ "status": "ok" })))
}

async fn metrics(State(app): State<App>) -> Result<Response> {
    let current = app.store().current_version().await? as f64;
    let open = app.store().open_round().await?;
    let text = app.metrics().render(&[
        (
            "feedloop_current_model_version",
            "The model version clients are served.",
            current,
        ),
        (
            "feedloop_open_round_received",
            "Updates stored in the open round (0 when none is open).",
            open.map_or(0.0, |r| r.received as f64),
        ),
    ]);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

async fn register(State(app): State<App>, headers: HeaderMap) -> Result<(StatusCode, Json<Value>)> {
    let key = headers
        .get(DEPLOYMENT_KEY_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::Unauthorized(format!("missing {DEPLOYMENT_KEY_HEADER} header")))?;
    let (claims, token) = app.register(key).await?;
    Ok((StatusCode::CREATED, Json(token_json(&app, &claims, token))))
}

async fn refresh(State(app): State<App>, headers: HeaderMap) -> Result<Json<Value>> {
    let claims = app.verify_token(crate::auth::bearer(&headers)?)?;
    let (claims, token) = app.refresh(&claims);
    Ok(Json(token_json(&app, &claims, token)))
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<i64>,
}

async fn list_rounds(State(app): State<App>, Query(q): Query<Limit>) -> Result<Json<Value>> {
    let rounds = app
        .store()
        .rounds(q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(
        json!({ "rounds": rounds.iter().map(round_json).collect::<Vec<_>>() }),
    ))
}

async fn current_round(State(app): State<App>) -> Result<Json<Value>> {
    Ok(Json(round_json(&app.current_round().await?)))
}

async fn get_round(State(app): State<App>, Path(round_id): Path<String>) -> Result<Json<Value>> {
    Ok(Json(round_json(
        &app.round(id(&round_id, "round id")?).await?,
    )))
}

/// `navigator.sendBeacon` cannot set headers: it sends the token and model version as query
/// parameters (RFC 6750 §2.3). Headers win when both are present.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BeaconParams {
    #[serde(rename = "access_token")]
    access_token: Option<String>,
    model_version: Option<String>,
}

async fn submit_update(
    State(app): State<App>,
    Path(round_id): Path<String>,
    query: Result<Query<BeaconParams>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>)> {
    let Query(beacon) = query.map_err(|e| Error::bad_request("invalid_query", e.body_text()))?;
    let token = match (
        crate::auth::bearer(&headers),
        beacon.access_token.as_deref(),
    ) {
        (Ok(token), _) => token,
        (Err(_), Some(token)) if !token.is_empty() => token,
        (Err(e), _) => return Err(e),
    };
    let claims = app.verify_token(token)?;
    let round_id = id(&round_id, "round id")?;
    let body = body.map_err(body_error)?;
    let model_version = headers
        .get(MODEL_VERSION_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::bad_request("missing_model_version", "bad header"))
        })
        .transpose()?
        .or(beacon.model_version.as_deref());
    let accepted = app
        .submit_update(&claims, round_id, model_version, &body)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({
            "accepted": true,
            "roundId": accepted.round_id.to_string(),
            "received": accepted.received,
            "roundClosed": accepted.closed.as_ref().map(round_json),
        })),
    ))
}

async fn list_models(State(app): State<App>) -> Result<Json<Value>> {
    let current = app.store().current_version().await?;
    let versions = app.store().versions().await?;
    Ok(Json(json!({
        "current": current.to_string(),
        "versions": versions.iter().map(|v| version_json(v, current, false)).collect::<Vec<_>>(),
    })))
}

/// The current model, with an ETag: a client polling for a new version gets `304 Not Modified`
/// (no body) until one is published or rolled back to.
async fn current_model(State(app): State<App>, headers: HeaderMap) -> Result<Response> {
    let current = app.store().current_version().await?;
    let etag = format!("\"model-{current}\"");
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let cache = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, "no-cache".to_string()),
    ];
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let body = version_json(&app.version(current).await?, current, true);
    Ok((cache, Json(body)).into_response())
}

async fn get_model(State(app): State<App>, Path(version): Path<String>) -> Result<Json<Value>> {
    let current = app.store().current_version().await?;
    let v = app.version(id(&version, "model version")?).await?;
    Ok(Json(version_json(&v, current, true)))
}

async fn get_onnx(State(app): State<App>, Path(version): Path<String>) -> Result<Response> {
    let version = id(&version, "model version")?;
    let bytes = app.onnx(version).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"feedloop-v{version}.onnx\""),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Report {
    model_version: String,
    /// The randomized-response bit (already randomized on the device).
    bit: bool,
}

async fn report(
    State(app): State<App>,
    headers: HeaderMap,
    ApiJson(r): ApiJson<Report>,
) -> Result<(StatusCode, Json<Value>)> {
    let claims = app.verify_token(crate::auth::bearer(&headers)?)?;
    let version = id(&r.model_version, "model version")?;
    app.report(&claims, version, r.bit).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({ "accepted": true }))))
}

async fn stats(State(app): State<App>) -> Result<Json<Value>> {
    let current = app.store().current_version().await?;
    let mut versions = Vec::new();
    for v in app.store().versions().await? {
        let mut j = rate_json(v.version, &app.rate(v.version).await?);
        j["cohortSize"] = json!(v.cohort_size);
        j["epsilonPerParticipant"] = json!(v.epsilon);
        j["flagged"] = json!(v.flagged != 0);
        j["flagReason"] = json!(v.flag_reason);
        versions.push(j);
    }
    let rounds: Vec<Value> = app
        .store()
        .rounds(1000)
        .await?
        .iter()
        .map(|r| {
            json!({ "roundId": r.round_id.to_string(), "status": r.status, "cohortSize": r.cohort_size,
                    "received": r.received, "epsilonPerParticipant": r.epsilon, "delta": r.delta,
                    "publishedVersion": opt_str(r.published_version) })
        })
        .collect();
    Ok(Json(json!({
        "currentVersion": current.to_string(),
        "rrEpsilon": app.config().rr_epsilon,
        "versions": versions,
        "rounds": rounds,
    })))
}

fn admin(app: &App, headers: &HeaderMap) -> Result<String> {
    app.admin(crate::auth::bearer(headers)?)
}

async fn admin_open_round(
    State(app): State<App>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewRound>,
) -> Result<(StatusCode, Json<Value>)> {
    let fp = admin(&app, &headers)?;
    let round = app.open_round(&fp, req).await?;
    Ok((StatusCode::CREATED, Json(round_json(&round))))
}

async fn admin_change_round(
    State(app): State<App>,
    Path(round_id): Path<String>,
    headers: HeaderMap,
    ApiJson(change): ApiJson<RoundChange>,
) -> Result<Json<Value>> {
    let fp = admin(&app, &headers)?;
    let round = app
        .change_round(&fp, id(&round_id, "round id")?, change)
        .await?;
    Ok(Json(round_json(&round)))
}

async fn admin_close_round(
    State(app): State<App>,
    Path(round_id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>> {
    let fp = admin(&app, &headers)?;
    let round = app
        .close_round(id(&round_id, "round id")?, "admin", Some(&fp))
        .await?;
    Ok(Json(round_json(&round)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Rollback {
    version: String,
}

async fn admin_rollback(
    State(app): State<App>,
    headers: HeaderMap,
    ApiJson(r): ApiJson<Rollback>,
) -> Result<Json<Value>> {
    let fp = admin(&app, &headers)?;
    let version = id(&r.version, "model version")?;
    let v = app.rollback(&fp, version).await?;
    Ok(Json(version_json(&v, version, false)))
}

async fn admin_audit(
    State(app): State<App>,
    headers: HeaderMap,
    Query(q): Query<Limit>,
) -> Result<Json<Value>> {
    admin(&app, &headers)?;
    let entries = app
        .store()
        .audit_log(q.limit.unwrap_or(100).clamp(1, 1000))
        .await?;
    Ok(Json(
        json!({ "entries": entries.iter().map(audit_json).collect::<Vec<_>>() }),
    ))
}
