//! HTTP: one module per resource, each a `utoipa_axum` router whose handlers carry their OpenAPI
//! description, so the document (`/openapi.json`) is generated from the same routes and the same
//! protocol types the server answers with.

pub mod admin;
pub mod clients;
pub mod extract;
pub mod feedback;
pub mod helper;
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

use crate::config::Role;
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

/// A helper's routes: its own API and the ops endpoints, nothing of the leader's.
fn helper_api() -> OpenApiRouter<App> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(helper::routes())
        .merge(ops::routes())
        .routes(routes!(openapi))
}

fn routes_of(role: Role) -> OpenApiRouter<App> {
    match role {
        Role::Leader => api(),
        Role::Helper => helper_api(),
    }
}

/// The OpenAPI document of a leader ([`api`]).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    document_of(Role::Leader)
}

/// The OpenAPI document a server of `role` serves.
pub fn document_of(role: Role) -> &'static utoipa::openapi::OpenApi {
    static LEADER: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    static HELPER: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    let cell = match role {
        Role::Leader => &LEADER,
        Role::Helper => &HELPER,
    };
    cell.get_or_init(|| {
        let mut doc = routes_of(role).split_for_parts().1;
        let helper_tag = |name: &str| matches!(name, "helper" | "ops");
        doc.tags
            .get_or_insert_with(Vec::new)
            .retain(|t| (role == Role::Helper) == helper_tag(&t.name) || t.name == "ops");
        document_rate_limits(&mut doc);
        document_other_errors(&mut doc);
        doc
    })
}

/// The 429 of `crate::rate_limit` on every operation it covers: registration and every operation
/// that takes an admin key (their extractors answer it before the handler runs).
fn document_rate_limits(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::{ObjectBuilder, Ref, Type};
    use utoipa::openapi::{Content, Header, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description("Too many requests of this kind from this address")
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .header(
            "retry-after",
            Header::new(ObjectBuilder::new().schema_type(Type::Integer)),
        )
        .build();
    for_each_operation(doc, |path, operation| {
        let admin = operation.security.as_ref().is_some_and(|requirements| {
            serde_json::to_value(requirements).is_ok_and(|v| v.to_string().contains("\"adminKey\""))
        });
        let leader = operation.security.as_ref().is_some_and(|requirements| {
            serde_json::to_value(requirements)
                .is_ok_and(|v| v.to_string().contains("\"leaderToken\""))
        });
        if admin || leader || path == feedloop_core::protocol::paths::REGISTER {
            operation
                .responses
                .responses
                .insert("429".into(), response.clone().into());
        }
    });
}

/// Every operation can also answer a client error no handler chose — a malformed path or query
/// (400), a timeout (408), a body, target or headers too large (413, 414, 431) — always with the
/// JSON error body (`crate::json_errors`): documented once per operation as `4XX`.
fn document_other_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::schema::Ref;
    use utoipa::openapi::{Content, ResponseBuilder};
    let response = ResponseBuilder::new()
        .description(
            "Any other client error (malformed path or query, timeout, body, target or headers too \
             large): the JSON error body",
        )
        .content(
            "application/json",
            Content::new(Some(Ref::from_schema_name("ErrorBody"))),
        )
        .build();
    for_each_operation(doc, |_, operation| {
        operation
            .responses
            .responses
            .entry("4XX".into())
            .or_insert_with(|| response.clone().into());
    });
}

/// Calls `f` with the path and every operation of the document.
fn for_each_operation(
    doc: &mut utoipa::openapi::OpenApi,
    mut f: impl FnMut(&str, &mut utoipa::openapi::path::Operation),
) {
    for (path, item) in doc.paths.paths.iter_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            f(path, operation);
        }
    }
}

/// The API router, the static pages (when configured) and JSON errors for everything else
/// (without the middleware stack; see [`crate::app`]).
pub fn router(app: App) -> Router {
    let (router, _) = routes_of(app.config().role).split_for_parts();
    let router = router.method_not_allowed_fallback(method_not_allowed);
    // Everything outside the API: the dashboard and demo pages when a static folder is given.
    let router = match app.config().static_dir.is_some() {
        true => router.fallback(static_file),
        false => router.fallback(not_found),
    };
    router.with_state(app)
}

/// A file of `--static-dir`, never a dotfile (`.env`, `.git/…`) and never one a symlink leads to
/// outside the folder; anything else is the JSON 404.
async fn static_file(
    axum::extract::State(app): axum::extract::State<App>,
    request: axum::extract::Request,
) -> Response {
    use tower::ServiceExt;
    let Some(dir) = app.config().static_dir.clone() else {
        return not_found().await.into_response();
    };
    if !static_path_allowed(&dir, request.uri().path()) {
        return not_found().await.into_response();
    }
    let immutable = hashed_name(request.uri().path());
    // A `name.ext.br` / `.gz` beside a file is sent instead when the browser accepts it (the wasm
    // and the model are most of a first visit's bytes).
    let served = tower_http::services::ServeDir::new(dir)
        .append_index_html_on_directories(true)
        .precompressed_br()
        .precompressed_gzip()
        .oneshot(request)
        .await;
    match served {
        Ok(response) if response.status() != StatusCode::NOT_FOUND => {
            let mut response = response.into_response();
            if response.status().is_success() || response.status() == StatusCode::NOT_MODIFIED {
                response.headers_mut().insert(
                    axum::http::header::CACHE_CONTROL,
                    axum::http::HeaderValue::from_static(match immutable {
                        true => "public, max-age=31536000, immutable",
                        // revalidated every time (ServeDir answers 304 to If-Modified-Since)
                        false => "no-cache",
                    }),
                );
            }
            response
        }
        _ => not_found().await.into_response(),
    }
}

/// Whether a file's name carries a content hash, so that it never changes and a browser may keep it
/// for a year without asking again: webpack's `name.[contenthash:8].ext` (a dot-separated segment of
/// ≥ 8 hex digits) or Vite's `name-[hash].ext` (a last dash-separated segment of 8 base64url
/// characters with a digit and an upper-case letter, which words do not have). A hashed name taken
/// for a plain one only costs a revalidation; the other way round would serve stale files, hence the
/// narrow rules.
fn hashed_name(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or_default();
    let Some((stem, _extension)) = name.rsplit_once('.') else {
        return false;
    };
    let webpack = stem
        .split('.')
        .skip(1)
        .any(|p| p.len() >= 8 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    let vite = stem.rsplit_once('-').is_some_and(|(_, hash)| {
        hash.len() == 8
            && hash
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && hash.bytes().any(|b| b.is_ascii_digit())
            && hash.bytes().any(|b| b.is_ascii_uppercase())
    });
    webpack || vite
}

fn static_path_allowed(root: &std::path::Path, path: &str) -> bool {
    let Ok(decoded) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return false;
    };
    let segments: Vec<&str> = decoded
        .split(['/', '\\'])
        .filter(|s| !s.is_empty())
        .collect();
    if segments.iter().any(|s| s.starts_with('.')) {
        return false;
    }
    let candidate = segments.iter().fold(root.to_path_buf(), |p, s| p.join(s));
    match (candidate.canonicalize(), root.canonicalize()) {
        (Ok(real), Ok(root)) => real.starts_with(root),
        // Missing: ServeDir answers 404 (the JSON one, above).
        (Err(_), _) => true,
        (_, Err(_)) => false,
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops",
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json", body = Object)))]
async fn openapi(
    axum::extract::State(app): axum::extract::State<App>,
) -> Json<&'static utoipa::openapi::OpenApi> {
    Json(document_of(app.config().role))
}

async fn not_found() -> Error {
    Error::not_found("no_such_route", "no such endpoint; see /openapi.json")
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody::new("method_not_allowed", "method not allowed on this endpoint");
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashed_names_are_webpacks_and_vites() {
        for hashed in [
            "/index.3f2a9c1d.js",
            "/assets/feedloop-default.0a1b2c3d.onnx",
            "/assets/feedloop_bg.deadbeef01.wasm",
            "/assets/index-BRcU3kVs.js",
            "/assets/feedloop_wasm_bg-D4x9aQ2b.wasm",
        ] {
            assert!(super::hashed_name(hashed), "{hashed}");
        }
        for plain in [
            "/",
            "/index.html",
            "/dashboard/",
            "/feedloop_bg.wasm",
            "/deadbeef.js",
            "/a.b.c.js",
            "/release.1234567.js",
            "/notes.2026-12-02.txt",
            "/my-template.js",
            "/site-overview.html",
            "/index-abcdefgh.js",
        ] {
            assert!(!super::hashed_name(plain), "{plain}");
        }
    }
}
