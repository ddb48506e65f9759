//! `/v1/admin`: rounds, rollback and the audit log, for holders of an admin key.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use feedloop_core::protocol::{
    AuditLog, ClientRevocation, ErrorBody, ModelVersion, NewRound, Rollback, Rollout, Round,
    RoundChange,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{id, AdminAuth, ApiJson, ApiQuery};
use super::rounds::Limit;
use crate::error::Result;
use crate::service::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(open_round))
        .routes(routes!(change_round))
        .routes(routes!(close_round))
        .routes(routes!(rollback))
        .routes(routes!(promote_canary))
        .routes(routes!(abort_canary))
        .routes(routes!(audit))
        .routes(routes!(revoke_client))
}

/// Revokes a client: its tokens are refused from now on (refresh, uploads, reports), on every
/// replica. Revoking again changes nothing.
#[utoipa::path(post, path = "/v1/admin/clients/{clientId}/revoke", tag = "admin",
    security(("adminKey" = [])),
    params(("clientId" = String, Path, description = "The client id from its token grant (32 hex digits)", pattern = r"^[0-9a-f]{32}$")),
    responses(
        (status = 200, description = "Revoked (now or before)", body = ClientRevocation),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
        (status = 400, description = "Not a client id", body = ErrorBody),
        (status = 404, description = "No such client", body = ErrorBody),
    ))]
async fn revoke_client(
    State(app): State<App>,
    Path(client_id): Path<String>,
    AdminAuth(fp): AdminAuth,
) -> Result<Json<ClientRevocation>> {
    // Ids are 32 hex digits (`App::register`); anything else never reaches the database (where
    // PostgreSQL would refuse a NUL byte with a server error).
    if client_id.len() != 32 || !client_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(crate::Error::bad_request(
            "invalid_id",
            format!("`{}` is not a client id", client_id.escape_debug()),
        ));
    }
    Ok(Json(app.revoke_client(&fp, &client_id).await?))
}

/// Opens a round on the current version.
#[utoipa::path(post, path = "/v1/admin/rounds", tag = "admin",
    security(("adminKey" = [])),
    request_body = NewRound,
    responses(
        (status = 201, description = "Opened", body = Round),
        (status = 400, description = "Invalid configuration", body = ErrorBody),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
        (status = 409, description = "A round is already open", body = ErrorBody),
        (status = 503, description = "A secure round's helper cannot be reached", body = ErrorBody),
    ))]
async fn open_round(
    State(app): State<App>,
    AdminAuth(fp): AdminAuth,
    ApiJson(req): ApiJson<NewRound>,
) -> Result<(StatusCode, Json<Round>)> {
    let round = app.open_round(&fp, req).await?;
    Ok((StatusCode::CREATED, Json(round.to_wire())))
}

/// Changes an open round's cohort or deadline (closing it if it reached a new target).
#[utoipa::path(patch, path = "/v1/admin/rounds/{roundId}", tag = "admin",
    security(("adminKey" = [])),
    params(("roundId" = String, Path, description = "An open round's id (a positive integer)", pattern = r"^[1-9][0-9]{0,17}$")),
    request_body = RoundChange,
    responses(
        (status = 200, description = "The round after the change", body = Round),
        (status = 400, description = "Invalid change or id", body = ErrorBody),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
        (status = 404, description = "No such round", body = ErrorBody),
        (status = 409, description = "The round is closed", body = ErrorBody),
    ))]
async fn change_round(
    State(app): State<App>,
    Path(round_id): Path<String>,
    AdminAuth(fp): AdminAuth,
    ApiJson(change): ApiJson<RoundChange>,
) -> Result<Json<Round>> {
    let round = app
        .change_round(&fp, id(&round_id, "round id")?, change)
        .await?;
    Ok(Json(round.to_wire()))
}

/// Closes a round now (publishing a version when the cohort is large enough).
#[utoipa::path(post, path = "/v1/admin/rounds/{roundId}/close", tag = "admin",
    security(("adminKey" = [])),
    params(("roundId" = String, Path, description = "An open round's id (a positive integer)", pattern = r"^[1-9][0-9]{0,17}$")),
    responses(
        (status = 200, description = "The closed round", body = Round),
        (status = 400, description = "Not a round id", body = ErrorBody),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
        (status = 404, description = "No such round", body = ErrorBody),
        (status = 409, description = "Already closed", body = ErrorBody),
        (status = 503, description = "A secure round's helper cannot be reached; the round stays open", body = ErrorBody),
    ))]
async fn close_round(
    State(app): State<App>,
    Path(round_id): Path<String>,
    AdminAuth(fp): AdminAuth,
) -> Result<Json<Round>> {
    let round = app
        .close_round(id(&round_id, "round id")?, "admin", Some(&fp))
        .await?;
    Ok(Json(round.to_wire()))
}

/// Promotes the running canary to everyone (the approval step of `--canary-promotion approve`,
/// or an override of the test); the audit log records who.
#[utoipa::path(post, path = "/v1/admin/rollout/promote", tag = "admin",
    security(("adminKey" = [])),
    responses(
        (status = 200, description = "The rollout, promoted", body = Rollout),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
        (status = 409, description = "No rollout is running", body = ErrorBody),
    ))]
async fn promote_canary(State(app): State<App>, AdminAuth(fp): AdminAuth) -> Result<Json<Rollout>> {
    Ok(Json(app.promote_canary(&fp).await?))
}

/// Withdraws the running canary: its devices return to the control version at their next sync.
#[utoipa::path(post, path = "/v1/admin/rollout/abort", tag = "admin",
    security(("adminKey" = [])),
    responses(
        (status = 200, description = "The rollout, rolled back", body = Rollout),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
        (status = 409, description = "No rollout is running", body = ErrorBody),
    ))]
async fn abort_canary(State(app): State<App>, AdminAuth(fp): AdminAuth) -> Result<Json<Rollout>> {
    Ok(Json(app.abort_canary(&fp).await?))
}

/// Serves an earlier version again; aborts the open round and resets the optimizer.
#[utoipa::path(post, path = "/v1/admin/rollback", tag = "admin",
    security(("adminKey" = [])),
    request_body = Rollback,
    responses(
        (status = 200, description = "The version now current", body = ModelVersion),
        (status = 400, description = "Malformed body or version", body = ErrorBody),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "Already current", body = ErrorBody),
    ))]
async fn rollback(
    State(app): State<App>,
    AdminAuth(fp): AdminAuth,
    ApiJson(r): ApiJson<Rollback>,
) -> Result<Json<ModelVersion>> {
    let version = id(&r.version, "model version")?;
    let v = app.rollback(&fp, version).await?;
    Ok(Json(v.to_wire(version, false)))
}

/// The admin audit log, newest first.
#[utoipa::path(get, path = "/v1/admin/audit", tag = "admin",
    security(("adminKey" = [])),
    params(Limit),
    responses(
        (status = 200, description = "Entries", body = AuditLog),
        (status = 400, description = "A malformed query", body = ErrorBody),
        (status = 401, description = "Invalid admin key", body = ErrorBody),
        (status = 403, description = "Admin API disabled", body = ErrorBody),
    ))]
async fn audit(
    State(app): State<App>,
    AdminAuth(_): AdminAuth,
    ApiQuery(q): ApiQuery<Limit>,
) -> Result<Json<AuditLog>> {
    let entries = app.store().audit_log(q.get()).await?;
    Ok(Json(AuditLog {
        entries: entries.iter().map(|a| a.to_wire()).collect(),
    }))
}
