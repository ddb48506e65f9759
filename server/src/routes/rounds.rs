//! `/v1/rounds`: the rounds and the privatized updates devices submit to them.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use feedloop_core::protocol::{BeaconQuery, ErrorBody, Round, RoundList, UploadAck};
use serde::Deserialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{body_error, id, ApiQuery, UploadAuth};
use crate::error::Result;
use crate::service::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_rounds))
        .routes(routes!(current_round))
        .routes(routes!(get_round))
        .routes(routes!(submit_update))
}

/// `?limit=` of the list endpoints (1–1000, default 100).
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    pub limit: Option<i64>,
}

impl Limit {
    pub fn get(&self) -> i64 {
        self.limit.unwrap_or(100).clamp(1, 1000)
    }
}

/// Every round, newest first.
#[utoipa::path(get, path = "/v1/rounds", tag = "rounds", params(Limit),
    responses(
        (status = 200, description = "Rounds", body = RoundList),
        (status = 400, description = "A malformed query", body = ErrorBody),
    ))]
async fn list_rounds(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<Limit>,
) -> Result<Json<RoundList>> {
    let rounds = app.store().rounds(q.get()).await?;
    Ok(Json(RoundList {
        rounds: rounds.iter().map(|r| r.to_wire()).collect(),
    }))
}

/// The open round (closed first if its deadline passed).
#[utoipa::path(get, path = "/v1/rounds/current", tag = "rounds",
    responses(
        (status = 200, description = "The open round", body = Round),
        (status = 404, description = "No round is open", body = ErrorBody),
    ))]
async fn current_round(State(app): State<App>) -> Result<Json<Round>> {
    Ok(Json(app.current_round().await?.to_wire()))
}

/// One round.
#[utoipa::path(get, path = "/v1/rounds/{roundId}", tag = "rounds",
    params(("roundId" = String, Path, description = "A round id (a positive integer)", pattern = r"^[1-9][0-9]{0,17}$")),
    responses(
        (status = 200, description = "The round", body = Round),
        (status = 400, description = "Not a round id", body = ErrorBody),
        (status = 404, description = "No such round", body = ErrorBody),
    ))]
async fn get_round(State(app): State<App>, Path(round_id): Path<String>) -> Result<Json<Round>> {
    Ok(Json(app.round(id(&round_id, "round id")?).await?.to_wire()))
}

/// Submits one privatized update (the `FLDP` wire format) computed against the round's model
/// version — in a `secure` round, one sealed Prio3 report (`feedloop-secagg`), verified with the
/// helper before it is stored; acknowledged once stored. The token and model version may come in
/// the query for `navigator.sendBeacon`.
#[utoipa::path(post, path = "/v1/rounds/{roundId}/updates", tag = "rounds",
    security(("clientToken" = [])),
    params(
        ("roundId" = String, Path, description = "The open round's id (a positive integer)", pattern = r"^[1-9][0-9]{0,17}$"),
        ("x-feedloop-model-version" = Option<String>, Header, description = "The model version the update was computed against"),
        BeaconQuery,
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream",
        description = "A privatized update (feedloop-privacy wire format), or a sealed report in a secure round"),
    responses(
        (status = 202, description = "Stored", body = UploadAck),
        (status = 400, description = "Missing model version, bad id or query", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such round", body = ErrorBody),
        (status = 409, description = "Round closed, stale model version, duplicate or replay", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 422, description = "Not a valid update or report for this round", body = ErrorBody),
        (status = 503, description = "A secure round's helper cannot be reached; resend the same bytes later", body = ErrorBody),
    ))]
async fn submit_update(
    State(app): State<App>,
    Path(round_id): Path<String>,
    auth: UploadAuth,
    body: std::result::Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<UploadAck>)> {
    let round_id = id(&round_id, "round id")?;
    let body = body.map_err(body_error)?;
    let accepted = app
        .submit_update(&auth.claims, round_id, auth.model_version.as_deref(), &body)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(UploadAck {
            accepted: true,
            round_id: accepted.round_id.to_string(),
            received: accepted.received,
            round_closed: accepted.closed.as_ref().map(|r| r.to_wire()),
        }),
    ))
}
