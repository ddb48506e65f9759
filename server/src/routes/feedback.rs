//! `/v1/feedback`, `/v1/feedback/stars`, `/agreement`, `/kinds`, `/segments`, `/sealed` and
//! `/v1/stats`: randomized-response thumbs-up, star-rating, federated-evaluation, feedback-volume
//! and per-segment reports, secure (sealed) metric reports, and the de-biased rates, ratings and
//! volumes per version the dashboard charts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use feedloop_core::protocol::{
    ErrorBody, FeedbackReport, KindsReport, ReportAck, SealedMetricReport, SegmentReport,
    StarsReport, Stats,
};
use feedloop_core::secure_metrics::SecureMetric;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::extract::{id, ApiJson, ClientAuth};
use crate::error::Result;
use crate::service::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(report))
        .routes(routes!(report_stars))
        .routes(routes!(report_agreement))
        .routes(routes!(report_kinds))
        .routes(routes!(report_segment))
        .routes(routes!(report_sealed))
        .routes(routes!(stats))
}

/// One randomized-response bit per client per version (randomized on the device).
#[utoipa::path(post, path = "/v1/feedback", tag = "feedback",
    security(("clientToken" = [])),
    request_body = FeedbackReport,
    responses(
        (status = 202, description = "Stored", body = ReportAck),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "Already reported on this version", body = ErrorBody),
    ))]
async fn report(
    State(app): State<App>,
    ClientAuth(claims): ClientAuth,
    ApiJson(r): ApiJson<FeedbackReport>,
) -> Result<(StatusCode, Json<ReportAck>)> {
    let version = id(&r.model_version, "model version")?;
    app.report(&claims, version, r.bit).await?;
    Ok((StatusCode::ACCEPTED, Json(ReportAck { accepted: true })))
}

/// Federated evaluation: one randomized-response bit per client per version, "this version's
/// global head ranked the user's A-or-B choice first" (randomized on the device, at `rrEpsilon`).
#[utoipa::path(post, path = "/v1/feedback/agreement", tag = "feedback",
    security(("clientToken" = [])),
    request_body = FeedbackReport,
    responses(
        (status = 202, description = "Stored", body = ReportAck),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "Already reported on this version", body = ErrorBody),
    ))]
async fn report_agreement(
    State(app): State<App>,
    ClientAuth(claims): ClientAuth,
    ApiJson(r): ApiJson<FeedbackReport>,
) -> Result<(StatusCode, Json<ReportAck>)> {
    let version = id(&r.model_version, "model version")?;
    app.report_agreement(&claims, version, r.bit).await?;
    Ok((StatusCode::ACCEPTED, Json(ReportAck { accepted: true })))
}

/// Feedback volume: one report per client per version, a kind of feedback the device drew
/// uniformly at random and whether its user gave it (an ε-randomized bit at `rrEpsilon`).
#[utoipa::path(post, path = "/v1/feedback/kinds", tag = "feedback",
    security(("clientToken" = [])),
    request_body = KindsReport,
    responses(
        (status = 202, description = "Stored", body = ReportAck),
        (status = 400, description = "Malformed body, or an unknown kind", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "Already reported on this version", body = ErrorBody),
    ))]
async fn report_kinds(
    State(app): State<App>,
    ClientAuth(claims): ClientAuth,
    ApiJson(r): ApiJson<KindsReport>,
) -> Result<(StatusCode, Json<ReportAck>)> {
    let version = id(&r.model_version, "model version")?;
    app.report_kind(&claims, version, &r.kind, r.bit).await?;
    Ok((StatusCode::ACCEPTED, Json(ReportAck { accepted: true })))
}

/// The thumbs-up rate per segment: one report per client per version, the (segment, thumbs)
/// pair as one cell randomized with `2 · segments`-ary randomized response at `rrEpsilon` over
/// the declared `segments` (`GET /v1/stats`).
#[utoipa::path(post, path = "/v1/feedback/segments", tag = "feedback",
    security(("clientToken" = [])),
    request_body = SegmentReport,
    responses(
        (status = 202, description = "Stored", body = ReportAck),
        (status = 400, description = "Malformed body, no segments declared, a report over another list, or a cell out of range", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "Already reported on this version", body = ErrorBody),
    ))]
async fn report_segment(
    State(app): State<App>,
    ClientAuth(claims): ClientAuth,
    ApiJson(r): ApiJson<SegmentReport>,
) -> Result<(StatusCode, Json<ReportAck>)> {
    let version = id(&r.model_version, "model version")?;
    app.report_segment(&claims, version, r.segments, r.cell)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ReportAck { accepted: true })))
}

/// One sealed metric report per client per metric and version (`--secure-metrics`): a thumbs,
/// agreement or star report Prio3-sharded and HPKE-sealed to this leader and its helper, verified
/// with the helper before it is acknowledged. Neither aggregator can read it.
#[utoipa::path(post, path = "/v1/feedback/sealed", tag = "feedback",
    security(("clientToken" = [])),
    request_body = SealedMetricReport,
    responses(
        (status = 202, description = "Verified by both aggregators and stored", body = ReportAck),
        (status = 400, description = "Malformed body, an unknown metric, or a report that is not base64", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such version, or this server aggregates no metrics securely", body = ErrorBody),
        (status = 409, description = "Already reported on this metric and version", body = ErrorBody),
        (status = 422, description = "A report that does not open or fails its proof", body = ErrorBody),
        (status = 503, description = "The helper cannot be reached; retry later", body = ErrorBody),
    ))]
async fn report_sealed(
    State(app): State<App>,
    ClientAuth(claims): ClientAuth,
    ApiJson(r): ApiJson<SealedMetricReport>,
) -> Result<(StatusCode, Json<ReportAck>)> {
    let version = id(&r.model_version, "model version")?;
    app.report_sealed(&claims, version, &r).await?;
    Ok((StatusCode::ACCEPTED, Json(ReportAck { accepted: true })))
}

/// One randomized star rating (1 to 5) per client per version (5-ary randomized response on the
/// device, at `rrEpsilon`).
#[utoipa::path(post, path = "/v1/feedback/stars", tag = "feedback",
    security(("clientToken" = [])),
    request_body = StarsReport,
    responses(
        (status = 202, description = "Stored", body = ReportAck),
        (status = 400, description = "Malformed body, or stars not 1 to 5", body = ErrorBody),
        (status = 401, description = "Missing, invalid or expired token", body = ErrorBody),
        (status = 404, description = "No such version", body = ErrorBody),
        (status = 409, description = "Already reported a rating on this version", body = ErrorBody),
    ))]
async fn report_stars(
    State(app): State<App>,
    ClientAuth(claims): ClientAuth,
    ApiJson(r): ApiJson<StarsReport>,
) -> Result<(StatusCode, Json<ReportAck>)> {
    let version = id(&r.model_version, "model version")?;
    app.report_stars(&claims, version, r.stars).await?;
    Ok((StatusCode::ACCEPTED, Json(ReportAck { accepted: true })))
}

/// De-biased thumbs-up rates and star ratings per version, a summary of every round, and the
/// staged rollouts with their sequential tests.
#[utoipa::path(get, path = "/v1/stats", tag = "feedback",
    responses((status = 200, description = "Statistics", body = Stats)))]
async fn stats(State(app): State<App>) -> Result<Json<Stats>> {
    let current = app.store().current_version().await?;
    let mut versions = Vec::new();
    for v in app.store().versions().await? {
        let mut stats = v.to_stats(&app.rate(v.version).await?);
        stats.stars = app.stars(v.version).await?;
        stats.agreement = app.agreement(v.version).await?;
        stats.kinds = app.kinds(v.version).await?;
        stats.segments = app.segments(v.version).await?;
        for metric in SecureMetric::ALL {
            if let Some(sealed) = app.sealed_stats(metric, v.version).await? {
                stats.sealed.insert(metric.name().to_string(), sealed);
            }
        }
        versions.push(stats);
    }
    let rounds = app.store().rounds(1000).await?;
    Ok(Json(Stats {
        current_version: current.to_string(),
        rr_epsilon: app.config().rr_epsilon,
        versions,
        rounds: rounds.iter().map(|r| r.to_stats()).collect(),
        rollouts: app.rollouts().await?,
        feedback_volume: app.feedback_volume().await?,
        segments: app.config().segments.clone(),
        device_budget: feedloop_core::protocol::DeviceBudget::default_policy(),
        secure_metrics: app.secure_metric_terms().await,
    }))
}
