//! `/v1/clients`: registration and token refresh.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::Json;
use feedloop_core::protocol::{ErrorBody, TokenGrant};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{ClientAuth, DeploymentKey};
use crate::error::Result;
use crate::service::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(refresh))
}

/// Token answers are never cached (by the browser, a proxy or a service worker).
type NoStore = [(header::HeaderName, &'static str); 1];
const NO_STORE: NoStore = [(header::CACHE_CONTROL, "no-store")];

/// First contact: a new client id and a signed, expiring token for the site.
#[utoipa::path(post, path = "/v1/clients/register", tag = "clients",
    params(("x-feedloop-deployment-key" = String, Header, description = "The site's deployment key")),
    responses(
        (status = 201, description = "Registered", body = TokenGrant,
            headers(("cache-control" = String, description = "`no-store`"))),
        (status = 401, description = "Missing or unknown deployment key", body = ErrorBody),
    ))]
async fn register(
    State(app): State<App>,
    DeploymentKey(key): DeploymentKey,
) -> Result<(StatusCode, NoStore, Json<TokenGrant>)> {
    let issued = app.register(&key).await?;
    Ok((StatusCode::CREATED, NO_STORE, Json(issued.grant())))
}

/// A later expiry for the holder of a valid token (same client id), never past the end of the
/// client's session (`--session-max-age-days` after it registered).
#[utoipa::path(post, path = "/v1/clients/refresh", tag = "clients",
    security(("clientToken" = [])),
    responses(
        (status = 200, description = "A fresh token", body = TokenGrant,
            headers(("cache-control" = String, description = "`no-store`"))),
        (status = 401, description = "Missing, invalid, expired or revoked token, or the session ended", body = ErrorBody),
    ))]
async fn refresh(
    State(app): State<App>,
    ClientAuth(claims): ClientAuth,
) -> Result<(NoStore, Json<TokenGrant>)> {
    let issued = app.refresh(&claims).await?;
    Ok((NO_STORE, Json(issued.grant())))
}
