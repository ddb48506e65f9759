//! `/v1/helper`: the helper aggregator's API (`feedloop serve --role helper`). Its identity is
//! public; tasks, reports and releases answer only its leader (`LeaderAuth`).

use axum::extract::{Path, State};
use axum::Json;
use feedloop_core::protocol::{
    ErrorBody, HelperAggregate, HelperCollect, HelperInfo, HelperMetricTask, HelperRelease,
    HelperTask, HelperTerms, HelperVerdict,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{id, ApiJson, LeaderAuth};
use crate::error::Result;
use crate::service::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(helper_info))
        .routes(routes!(put_task))
        .routes(routes!(verify_report))
        .routes(routes!(collect))
        .routes(routes!(put_metric_task))
        .routes(routes!(verify_metric_report))
        .routes(routes!(collect_metric))
}

/// A metric task's name: the metric and the leader's model version (`thumbs@3`).
fn metric_task(name: &str) -> Result<String> {
    let valid = name.split_once('@').is_some_and(|(metric, version)| {
        feedloop_core::secure_metrics::SecureMetric::parse(metric).is_some()
            && id(version, "model version").is_ok()
    });
    if valid {
        Ok(name.to_string())
    } else {
        Err(crate::error::Error::bad_request(
            "invalid_task",
            format!("`{name}` is not a metric task (thumbs, agreement or stars @ a version)"),
        ))
    }
}

/// Takes a secure metric task if its terms meet the helper's policy (σ ≥ z/√2, its minimum).
#[utoipa::path(put, path = "/v1/helper/metrics/{task}", tag = "helper",
    security(("leaderToken" = [])),
    params(("task" = String, Path, description = "The metric and the leader's model version", pattern = r"^(thumbs|agreement|stars)@[1-9][0-9]{0,17}$")),
    request_body = HelperMetricTask,
    responses(
        (status = 200, description = "Taken (or held alike)", body = HelperMetricTask),
        (status = 400, description = "Not a metric task name", body = ErrorBody),
        (status = 401, description = "Not this helper's leader", body = ErrorBody),
        (status = 409, description = "Held under other terms", body = ErrorBody),
        (status = 422, description = "Terms below the helper's policy", body = ErrorBody),
    ))]
async fn put_metric_task(
    State(app): State<App>,
    _leader: LeaderAuth,
    Path(task): Path<String>,
    ApiJson(body): ApiJson<HelperMetricTask>,
) -> Result<Json<HelperMetricTask>> {
    let task = metric_task(&task)?;
    Ok(Json(app.accept_metric_task(&task, body).await?))
}

/// The helper's half of verifying one sealed metric report.
#[utoipa::path(post, path = "/v1/helper/metrics/{task}/reports", tag = "helper",
    security(("leaderToken" = [])),
    params(("task" = String, Path, description = "The metric and the leader's model version", pattern = r"^(thumbs|agreement|stars)@[1-9][0-9]{0,17}$")),
    request_body = HelperAggregate,
    responses(
        (status = 200, description = "Valid and stored (or this exact request again)", body = HelperVerdict),
        (status = 400, description = "Not a metric task name, or a request that is not base64", body = ErrorBody),
        (status = 401, description = "Not this helper's leader", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "A duplicate report or client", body = ErrorBody),
        (status = 422, description = "An invalid report (share, proof or encoding)", body = ErrorBody),
    ))]
async fn verify_metric_report(
    State(app): State<App>,
    _leader: LeaderAuth,
    Path(task): Path<String>,
    ApiJson(req): ApiJson<HelperAggregate>,
) -> Result<Json<HelperVerdict>> {
    let task = metric_task(&task)?;
    Ok(Json(app.verify_helper_metric_share(&task, req).await?))
}

/// One batch of a metric task: the helper's aggregate share of exactly these reports plus its
/// noise on every bucket; each report in one batch only, none below the minimum.
#[utoipa::path(post, path = "/v1/helper/metrics/{task}/collect", tag = "helper",
    security(("leaderToken" = [])),
    params(("task" = String, Path, description = "The metric and the leader's model version", pattern = r"^(thumbs|agreement|stars)@[1-9][0-9]{0,17}$")),
    request_body = HelperCollect,
    responses(
        (status = 200, description = "The noisy aggregate share", body = HelperRelease),
        (status = 400, description = "Not a metric task name, or a malformed report id", body = ErrorBody),
        (status = 401, description = "Not this helper's leader", body = ErrorBody),
        (status = 404, description = "No such task", body = ErrorBody),
        (status = 409, description = "Below the minimum, an unknown report, or one released in another batch", body = ErrorBody),
    ))]
async fn collect_metric(
    State(app): State<App>,
    _leader: LeaderAuth,
    Path(task): Path<String>,
    ApiJson(req): ApiJson<HelperCollect>,
) -> Result<Json<HelperRelease>> {
    let task = metric_task(&task)?;
    Ok(Json(app.release_metric_batch_at_helper(&task, req).await?))
}

/// The helper's HPKE key, its fingerprint (what privacy teams pin) and its policy.
#[utoipa::path(get, path = "/v1/helper", tag = "helper",
    responses((status = 200, description = "The helper", body = HelperInfo)))]
async fn helper_info(State(app): State<App>) -> Result<Json<HelperInfo>> {
    Ok(Json(app.helper_info()?))
}

/// Takes a secure round under the helper's terms (at least its policy's noise and minimum).
#[utoipa::path(put, path = "/v1/helper/tasks/{roundId}", tag = "helper",
    security(("leaderToken" = [])),
    params(("roundId" = String, Path, description = "The leader's round id", pattern = r"^[1-9][0-9]{0,17}$")),
    request_body = HelperTask,
    responses(
        (status = 200, description = "The terms the helper applies", body = HelperTerms),
        (status = 401, description = "Not this helper's leader", body = ErrorBody),
        (status = 409, description = "The round holds reports under other terms", body = ErrorBody),
        (status = 422, description = "Invalid terms", body = ErrorBody),
    ))]
async fn put_task(
    State(app): State<App>,
    _leader: LeaderAuth,
    Path(round_id): Path<String>,
    ApiJson(task): ApiJson<HelperTask>,
) -> Result<Json<HelperTerms>> {
    let round_id = id(&round_id, "round id")?;
    Ok(Json(app.accept_task(round_id, task).await?))
}

/// The helper's half of verifying one report: opens its share, checks the proof with the
/// leader's verifier share, stores its output share and answers the verifier message.
#[utoipa::path(post, path = "/v1/helper/tasks/{roundId}/reports", tag = "helper",
    security(("leaderToken" = [])),
    params(("roundId" = String, Path, description = "The leader's round id", pattern = r"^[1-9][0-9]{0,17}$")),
    request_body = HelperAggregate,
    responses(
        (status = 200, description = "Valid and stored (or this exact request again)", body = HelperVerdict),
        (status = 401, description = "Not this helper's leader", body = ErrorBody),
        (status = 404, description = "No such round", body = ErrorBody),
        (status = 409, description = "A duplicate report or client, or a released batch", body = ErrorBody),
        (status = 422, description = "An invalid report (share, proof or encoding)", body = ErrorBody),
    ))]
async fn verify_report(
    State(app): State<App>,
    _leader: LeaderAuth,
    Path(round_id): Path<String>,
    ApiJson(req): ApiJson<HelperAggregate>,
) -> Result<Json<HelperVerdict>> {
    let round_id = id(&round_id, "round id")?;
    Ok(Json(app.verify_helper_share(round_id, req).await?))
}

/// The one release of a round's batch: the helper's aggregate share of exactly these reports
/// plus its exact discrete Gaussian noise; refused below its minimum or for a second batch.
#[utoipa::path(post, path = "/v1/helper/tasks/{roundId}/collect", tag = "helper",
    security(("leaderToken" = [])),
    params(("roundId" = String, Path, description = "The leader's round id", pattern = r"^[1-9][0-9]{0,17}$")),
    request_body = HelperCollect,
    responses(
        (status = 200, description = "The noisy aggregate share", body = HelperRelease),
        (status = 401, description = "Not this helper's leader", body = ErrorBody),
        (status = 404, description = "No such round", body = ErrorBody),
        (status = 409, description = "Below the minimum, an unknown report, or already released for another batch", body = ErrorBody),
    ))]
async fn collect(
    State(app): State<App>,
    _leader: LeaderAuth,
    Path(round_id): Path<String>,
    ApiJson(req): ApiJson<HelperCollect>,
) -> Result<Json<HelperRelease>> {
    let round_id = id(&round_id, "round id")?;
    Ok(Json(app.release_batch(round_id, req).await?))
}
