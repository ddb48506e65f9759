//! Authentication and request parts as axum extractors: a handler that takes [`ClientAuth`] or
//! [`AdminAuth`] runs only for a valid client token or admin key; every failure is the server's
//! JSON [`Error`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use feedloop_core::protocol::{BeaconQuery, DEPLOYMENT_KEY_HEADER, MODEL_VERSION_HEADER};
use serde::de::DeserializeOwned;

use crate::auth::Claims;
use crate::error::{Error, Result};
use crate::service::App;

/// `Authorization: Bearer <token>`.
fn bearer(headers: &HeaderMap) -> Result<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::Unauthorized("missing `Authorization: Bearer <token>`".into()))
}

/// The claims of a valid client token (`Authorization: Bearer`).
pub struct ClientAuth(pub Claims);

impl FromRequestParts<App> for ClientAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self> {
        Ok(Self(app.authenticate(bearer(&parts.headers)?).await?))
    }
}

/// The claims of a client token when the request carries one (`None` without `Authorization`;
/// an invalid token is still refused).
pub struct OptionalClientAuth(pub Option<Claims>);

impl FromRequestParts<App> for OptionalClientAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self> {
        if !parts.headers.contains_key(header::AUTHORIZATION) {
            return Ok(Self(None));
        }
        Ok(Self(Some(app.authenticate(bearer(&parts.headers)?).await?)))
    }
}

/// A client token from the header or, for `navigator.sendBeacon` (which cannot set headers), the
/// `access_token` query parameter (RFC 6750 §2.3), with the model version the update was computed
/// against (header `X-Feedloop-Model-Version` or query `modelVersion`). Headers win.
pub struct UploadAuth {
    pub claims: Claims,
    pub model_version: Option<String>,
}

impl FromRequestParts<App> for UploadAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self> {
        let Query(beacon) = Query::<BeaconQuery>::from_request_parts(parts, app)
            .await
            .map_err(|e| Error::bad_request("invalid_query", e.body_text()))?;
        let token = match (bearer(&parts.headers), beacon.access_token.as_deref()) {
            (Ok(token), _) => token,
            (Err(_), Some(token)) if !token.is_empty() => token,
            (Err(e), _) => return Err(e),
        };
        let claims = app.authenticate(token).await?;
        let model_version = match parts.headers.get(MODEL_VERSION_HEADER) {
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| Error::bad_request("missing_model_version", "bad header"))?
                    .to_string(),
            ),
            None => beacon.model_version,
        };
        Ok(Self {
            claims,
            model_version,
        })
    }
}

/// The fingerprint of a valid admin key (`Authorization: Bearer`). Admin requests are rate
/// limited per address before the key is checked (`crate::rate_limit`).
pub struct AdminAuth(pub String);

impl FromRequestParts<App> for AdminAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self> {
        app.rate_limits().admin(peer_address(parts, app))?;
        Ok(Self(app.admin(bearer(&parts.headers)?)?))
    }
}

/// A helper's caller: a leader with one of the tokens the helper was given (`--leader-token`).
/// Only failed attempts count against the address's limit (`RateLimits::leader_call`).
pub struct LeaderAuth;

impl FromRequestParts<App> for LeaderAuth {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self> {
        let presented = bearer(&parts.headers);
        let tokens = &app.config().helper_policy.leader_tokens;
        let authenticated = presented
            .as_ref()
            .is_ok_and(|p| crate::auth::admin_fingerprint(tokens, p).is_some());
        app.rate_limits()
            .leader_call(peer_address(parts, app), authenticated)?;
        presented?;
        if authenticated {
            Ok(Self)
        } else {
            Err(Error::Unauthorized(
                "not a token of this helper's leader".into(),
            ))
        }
    }
}

/// The deployment key of a first contact (`X-Feedloop-Deployment-Key`). Registrations are rate
/// limited per address: the key is public (it ships in the page), so it cannot stop Sybils alone.
pub struct DeploymentKey(pub String);

impl FromRequestParts<App> for DeploymentKey {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self> {
        app.rate_limits().register(peer_address(parts, app))?;
        parts
            .headers
            .get(DEPLOYMENT_KEY_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| Self(v.to_string()))
            .ok_or_else(|| Error::Unauthorized(format!("missing {DEPLOYMENT_KEY_HEADER} header")))
    }
}

/// The caller's address for rate limits: the rightmost value of `--client-ip-header` when
/// configured and present (what the load balancer in front appended), else the TCP peer that
/// [`crate::serve`] attached — so a request that reaches the server without the balancer is still
/// limited. `None` for requests with neither (in-process calls).
fn peer_address(parts: &Parts, app: &App) -> Option<std::net::IpAddr> {
    let forwarded = app.config().client_ip_header.as_ref().and_then(|name| {
        parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
    });
    forwarded.or_else(|| {
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|info| info.0.ip())
    })
}

/// Query parameters whose failure is the server's JSON error (`invalid_query`), not axum's text.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| Error::bad_request("invalid_query", e.body_text()))
    }
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

pub fn body_error(e: BytesRejection) -> Error {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        Error::PayloadTooLarge("request body too large".into())
    } else {
        Error::bad_request("invalid_body", e.body_text())
    }
}

/// A positive integer id from a path segment.
pub fn id(raw: &str, what: &'static str) -> Result<i64> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| Error::bad_request("invalid_id", format!("`{raw}` is not a valid {what}")))
}
