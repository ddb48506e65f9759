//! feedloop's federated averaging server.
//!
//! Clients register with a deployment key and get a signed, expiring token; they fetch the open
//! round, submit one privatized update each (validated with `feedloop_privacy::decode_update`,
//! acknowledged once committed), and the server closes the round at its target count, its
//! deadline or on an admin's request: below the minimum cohort nothing is published, otherwise the
//! integer updates are averaged exactly (FedAvg, equal weights), a server optimizer (FedAvg,
//! FedAvgM, FedAdam) moves the global head, and a new model version is published (head, ONNX
//! file with the rewritten `head_*` initializers, privacy metadata). Storage is SQLite (default)
//! or PostgreSQL through one portable schema.
//!
//! Modules: [`routes`] (HTTP, one module per resource; authentication as extractors), [`views`]
//! (stored rows as the protocol bodies of `feedloop_core::protocol`), [`service`] (behaviour:
//! rounds, publishing, versions, drift), [`db`] (every SQL statement), [`fedavg`] (aggregation and
//! server optimizers), [`onnx`] (publishing heads as ONNX), [`auth`] (tokens, keys), [`metrics`],
//! [`openapi`] (the generated document's frame), [`config`], [`error`], [`json_errors`] (the JSON
//! body of errors no handler wrote), [`rate_limit`].

pub mod auth;
pub mod config;
pub mod db;
pub mod error;
pub mod fedavg;
pub mod json_errors;
pub mod metrics;
pub mod onnx;
pub mod openapi;
pub mod rate_limit;
pub mod routes;
pub mod service;
pub mod views;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// The header-name type of `Config::client_ip_header` (re-exported so the CLI needs no axum).
pub use axum::http::HeaderName;
pub use config::{
    Config, DeploymentKey, DriftConfig, HelperPeer, HelperPolicy, Promotion, Role,
    SecureMetricsConfig, SqliteSynchronous, DEFAULT_DATABASE_URL,
};
pub use error::{Error, Result};
pub use fedavg::{aggregate, fedavg_lattice, mean_of_lattice_sum, ServerOptimizer};
pub use service::App;

/// The full HTTP stack: routes, body limit, timeout, JSON error bodies and request-head limits,
/// CORS for the configured origins, security headers, request ids, tracing, panics as 500s.
pub fn app(state: App) -> Router {
    let config = state.config().clone();
    let router = routes::router(state)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            config.request_timeout,
        ))
        // Every error answer, the layers' included, is the JSON error body.
        .layer(axum::middleware::map_response(
            json_errors::json_error_bodies,
        ))
        .layer(axum::middleware::from_fn(json_errors::limit_request_head))
        .layer(cors(&config.cors_origins));
    with_security_headers(router)
        // Every answer carries an `x-request-id` (the caller's, or a new UUID), also in the log.
        .layer(tower_http::request_id::PropagateRequestIdLayer::x_request_id())
        // The path, never the query: a beacon's `?access_token=` must not reach the logs.
        .layer(TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                let id = req
                    .headers()
                    .get("x-request-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), id)
            },
        ))
        .layer(tower_http::request_id::SetRequestIdLayer::x_request_id(
            tower_http::request_id::MakeRequestUuid,
        ))
        .layer(catch_panics())
}

/// A handler that panics answers 500 with the JSON error body and the process goes on serving.
/// This needs unwinding: build the server with `--profile release-native` (panic = "unwind"); the
/// `release` profile aborts on panic because it is the wasm package's (size).
fn catch_panics() -> tower_http::catch_panic::CatchPanicLayer<
    fn(Box<dyn std::any::Any + Send>) -> axum::response::Response,
> {
    fn answer(panic: Box<dyn std::any::Any + Send>) -> axum::response::Response {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Error::internal(format!("handler panicked: {what}")).into_response()
    }
    tower_http::catch_panic::CatchPanicLayer::custom(answer as fn(_) -> _)
}

/// Headers for every answer, the dashboard's pages included: no MIME sniffing, no framing by
/// other sites (clickjacking the admin dashboard), no referrer leaking ids to other origins.
fn with_security_headers(router: Router) -> Router {
    use axum::http::{header, HeaderValue};
    use tower_http::set_header::SetResponseHeaderLayer;
    router
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("frame-ancestors 'none'"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
}

/// CORS for pages on other origins (the package syncing from a site the server does not serve):
/// only the listed origins, only the methods and headers the client and the dashboard send, the
/// ETag readable, preflights cached for an hour. No origin listed: no CORS headers at all.
fn cors(origins: &[String]) -> CorsLayer {
    use axum::http::{header, HeaderName, HeaderValue, Method};
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST, Method::PATCH])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            HeaderName::from_static(feedloop_core::protocol::DEPLOYMENT_KEY_HEADER),
            HeaderName::from_static(feedloop_core::protocol::MODEL_VERSION_HEADER),
        ])
        .expose_headers([header::ETAG])
        .max_age(std::time::Duration::from_secs(3600))
}

/// Closes rounds whose deadline passed (and keeps an automatic round open when configured), every
/// `config.deadline_poll`, until dropped/aborted.
pub fn spawn_deadline_task(app: App) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(app.config().deadline_poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_forget = tokio::time::Instant::now();
        loop {
            tick.tick().await;
            if last_forget.elapsed() >= std::time::Duration::from_secs(60) {
                app.rate_limits().forget_idle();
                last_forget = tokio::time::Instant::now();
            }
            if let Err(e) = app.close_expired().await {
                tracing::error!(error = %e, "closing expired rounds failed");
            }
            match app.ensure_auto_round().await {
                Ok(Some(round)) => tracing::info!(round = round.round_id, "opened a round"),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "opening the automatic round failed"),
            }
        }
    })
}

/// Serves on `listener` until `shutdown` resolves, then drains in-flight requests (graceful
/// shutdown) and stops the deadline task. At most `config.max_connections` connections are
/// served at once (the rest wait in the listen backlog), and a connection that does not send a
/// whole request header within `config.header_read_timeout` is closed.
pub async fn serve(
    app: App,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::service::TowerToHyperService;

    let deadlines = spawn_deadline_task(app.clone());
    tracing::info!(addr = %listener.local_addr()?, "feedloop server listening");
    let config = app.config().clone();
    let router = self::app(app);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(config.max_connections.max(1)));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // E.g. too many open files: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = builder
            .serve_connection_with_upgrades(
                TokioIo::new(stream),
                // The peer address, for the rate limits (`rate_limit`).
                TowerToHyperService::new(tower::Layer::layer(
                    &axum::Extension(axum::extract::ConnectInfo(peer)),
                    router.clone(),
                )),
            )
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    deadlines.abort();
    tracing::info!("feedloop server stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; draining requests");
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panicking_handler_answers_500_json_and_the_router_keeps_serving() {
        let router = axum::Router::new()
            .route(
                "/boom",
                get(|| async {
                    if true {
                        panic!("bug");
                    }
                    "unreachable"
                }),
            )
            .route("/ok", get(|| async { "fine" }))
            .layer(super::catch_panics());
        let response = router
            .clone()
            .oneshot(Request::get("/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["error"]["code"], "internal");
        assert_eq!(json["error"]["message"], "internal server error");
        let response = router
            .oneshot(Request::get("/ok").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}
