//! `/v1/helper`: the helper aggregator's API (`feedloop serve --role helper`). Its identity is
//! public; tasks, reports and releases answer only its leader (`LeaderAuth`).

use axum::extract::{Path, State};
use axum::Json;
use feedloop_core::protocol::{
    ErrorBody, HelperAggregate, HelperCollect, HelperInfo, HelperRelease, HelperTask, HelperTerms,
    HelperVerdict,
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
