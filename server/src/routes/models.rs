//! `/v1/models`: the published versions, the current one (with an ETag), and their ONNX files.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use feedloop_core::protocol::{ErrorBody, ModelList, ModelVersion};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{id, OptionalClientAuth};
use crate::error::Result;
use crate::service::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_models))
        .routes(routes!(current_model))
        .routes(routes!(get_model))
        .routes(routes!(get_onnx))
}

/// Every version, oldest first, without heads.
#[utoipa::path(get, path = "/v1/models", tag = "models",
    responses((status = 200, description = "Versions", body = ModelList)))]
async fn list_models(State(app): State<App>) -> Result<Json<ModelList>> {
    let current = app.store().current_version().await?;
    let versions = app.store().versions().await?;
    Ok(Json(ModelList {
        current: current.to_string(),
        versions: versions.iter().map(|v| v.to_wire(current, false)).collect(),
    }))
}

/// The version this client should run, with its head and an ETag: a client polling for a new
/// version gets `304 Not Modified` (no body) until one is published or rolled back to. During a
/// staged rollout a client in the canary's arm (by its token's client id) gets the canary.
#[utoipa::path(get, path = "/v1/models/current", tag = "models",
    security((), ("clientToken" = [])),
    params(("if-none-match" = Option<String>, Header, description = "The ETag of the version the client has")),
    responses(
        (status = 200, description = "The version to run, with its head", body = ModelVersion,
            headers(("etag" = String, description = "`\"model-<version>\"`"))),
        (status = 304, description = "Still the version named in If-None-Match"),
        (status = 401, description = "An invalid client token", body = ErrorBody),
    ))]
async fn current_model(
    State(app): State<App>,
    OptionalClientAuth(claims): OptionalClientAuth,
    headers: HeaderMap,
) -> Result<Response> {
    let current = app.store().current_version().await?;
    let served = app.served_version(claims.as_ref()).await?;
    let etag = format!("\"model-{served}\"");
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let cache = [
        (header::ETAG, etag),
        (header::CACHE_CONTROL, "no-cache".to_string()),
        // The canary's arm depends on the token.
        (header::VARY, "authorization".to_string()),
    ];
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let body = app.version(served).await?.to_wire(current, true);
    Ok((cache, Json(body)).into_response())
}

/// One version, with its head.
#[utoipa::path(get, path = "/v1/models/{version}", tag = "models",
    params(("version" = String, Path, description = "A model version (a positive integer)", pattern = r"^[1-9][0-9]{0,17}$")),
    responses(
        (status = 200, description = "The version", body = ModelVersion),
        (status = 400, description = "Not a version", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
    ))]
async fn get_model(
    State(app): State<App>,
    Path(version): Path<String>,
) -> Result<Json<ModelVersion>> {
    let current = app.store().current_version().await?;
    let v = app.version(id(&version, "model version")?).await?;
    Ok(Json(v.to_wire(current, true)))
}

/// The version's ONNX file (the base model with this version's head). Its ETag is the file's
/// recorded SHA-256; a version's file never changes, so it may be cached for good.
#[utoipa::path(get, path = "/v1/models/{version}/model.onnx", tag = "models",
    params(
        ("version" = String, Path, description = "A model version (a positive integer)", pattern = r"^[1-9][0-9]{0,17}$"),
        ("if-none-match" = Option<String>, Header, description = "The ETag of a copy the client has"),
    ),
    responses(
        (status = 200, description = "The ONNX file", content_type = "application/octet-stream", body = Vec<u8>,
            headers(("etag" = String, description = "`\"sha256-<hex>\"` of the file"))),
        (status = 304, description = "The copy named in If-None-Match is this file"),
        (status = 400, description = "Not a version", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
    ))]
async fn get_onnx(
    State(app): State<App>,
    Path(version): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let version = id(&version, "model version")?;
    let row = app.version(version).await?;
    let etag = format!("\"sha256-{}\"", row.onnx_sha256);
    let cache = [
        (header::ETAG, etag.clone()),
        (
            header::CACHE_CONTROL,
            "public, max-age=31536000, immutable".to_string(),
        ),
    ];
    let unchanged = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if unchanged {
        return Ok((StatusCode::NOT_MODIFIED, cache).into_response());
    }
    let bytes = app.onnx(&row, version)?;
    Ok((
        cache,
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"feedloop-v{version}.onnx\""),
            ),
        ],
        axum::body::Bytes::from_owner(bytes),
    )
        .into_response())
}
