//! HTTP: one module per resource, each a `utoipa_axum` router whose handlers carry their OpenAPI
//! description, so the document (`/openapi.json`) is generated from the same routes and the same
//! protocol types the server answers with.

pub mod admin;
pub mod clients;
pub mod extract;
pub mod feedback;
pub mod models;
pub mod ops;
pub mod rounds;

use std::sync::OnceLock;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use feedloop_core::protocol::ErrorBody;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Error;
use crate::openapi::ApiDoc;
use crate::service::App;

/// Every API route with its documentation.
fn api() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(clients::routes())
        .merge(rounds::routes())
        .merge(models::routes())
        .merge(feedback::routes())
        .merge(admin::routes())
        .merge(ops::routes())
        .routes(routes!(openapi))
}

/// The OpenAPI document of [`api`].
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(|| api().split_for_parts().1)
}

/// The API router, the static pages (when configured) and JSON errors for everything else
/// (without the middleware stack; see [`crate::app`]).
pub fn router(app: App) -> Router {
    let (router, _) = api().split_for_parts();
    let router = router.method_not_allowed_fallback(method_not_allowed);
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

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi() -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document())
}

async fn not_found() -> Error {
    Error::not_found("no_such_route", "no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody::new("method_not_allowed", "method not allowed on this endpoint");
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
