//! Operations: `/healthz` and `/metrics` (Prometheus text); `/openapi.json` is in `routes`.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use feedloop_core::protocol::{ErrorBody, Health};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::Result;
use crate::service::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(metrics))
}

/// The server and its database answer.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 500, description = "The database does not answer", body = ErrorBody),
    ))]
async fn healthz(State(app): State<App>) -> Result<Json<Health>> {
    app.store().ping().await?;
    Ok(Json(Health {
        status: "ok".into(),
    }))
}

/// Counters and gauges in the Prometheus text format.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
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
