//! Secure metric reports (`--secure-metrics`): devices seal thumbs, agreement and star reports to
//! the leader (the harness's router) and a helper (a second `App` on a loopback port); the leader
//! verifies each with the helper, releases disjoint batches of the minimum with the helper's
//! noise, and folds them into `/v1/stats` and the rollout test. The reports are sealed here with
//! `feedloop-secagg` exactly as `DevicePrivacy::release_next_metric` seals them.

use feedloop_core::protocol::SecureMetricTerms;
use feedloop_core::secure_metrics::{combined_rate, SealedBits, SecureMetric};
use feedloop_privacy::randomized_response::RandomizedResponse;
use feedloop_privacy::rng::OsCsprng;
use feedloop_secagg::{seal_metric, HpkeKeyPair, HpkePublicKey};
use feedloop_server::{HelperPeer, SecureMetricsConfig};

use crate::harness::*;
use crate::secure::{Helper, HELPER_MIN, HELPER_Z, LEADER_TOKEN};

on_both_backends!(
    sealed_thumbs_are_released_in_noisy_batches_and_estimated,
    invalid_sealed_reports_change_nothing,
    the_helper_holds_its_policy_and_releases_each_report_once,
);

/// σ per bucket of a batch: large enough to see, small enough to check counts to ±8.
const NOISE: f64 = 1.0;

async fn leader(backend: Backend, helper: &Helper, secure: bool) -> Harness {
    let url = helper.url.clone();
    Harness::new(backend, move |c| {
        c.helper = Some(HelperPeer {
            url,
            token: LEADER_TOKEN.into(),
        });
        c.secure_metrics = secure.then_some(SecureMetricsConfig {
            noise_stddev: Some(NOISE),
            batch_reports: 2,
        });
    })
    .await
    .unwrap()
}

fn terms_of(stats: &Value) -> SecureMetricTerms {
    serde_json::from_value(stats["secureMetrics"].clone()).unwrap()
}

/// A device's sealed report of `bucket` for `metric` on `version` under `terms` (base64).
fn sealed(metric: SecureMetric, version: &str, bucket: usize, terms: &SecureMetricTerms) -> String {
    use base64::Engine;
    let task = metric.task(version, terms).unwrap();
    let leader = HpkePublicKey::from_hex(&terms.leader_key).unwrap();
    let helper = HpkePublicKey::from_hex(&terms.helper_key).unwrap();
    let mut rng = OsCsprng::new().unwrap();
    let report = seal_metric(bucket, &task, &leader, &helper, &mut rng).unwrap();
    base64::engine::general_purpose::STANDARD.encode(report.to_bytes())
}

async fn post(h: &Harness, token: &str, body: Value) -> (StatusCode, Value) {
    h.call(Method::POST, "/v1/feedback/sealed", Some(token), Some(body))
        .await
}

fn body(metric: SecureMetric, version: &str, report: String) -> Value {
    json!({ "modelVersion": version, "metric": metric.name(), "report": report })
}

async fn count(h: &Harness, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(h.app.store().pool())
        .await
        .unwrap()
}

/// The terms name the helper and take its minimum (3, above the leader's 2); seven devices'
/// thumbs make two batches of 3 (one waits); the counts are the true ones give or take σ, and
/// the rate in `/v1/stats` is exactly the core estimator's over them. Randomized bits from
/// devices that do not seal join the same estimate.
async fn sealed_thumbs_are_released_in_noisy_batches_and_estimated(backend: Backend) {
    let Some(helper) = Helper::start(backend).await else {
        return;
    };
    let h = leader(backend, &helper, true).await;
    let info: Value = reqwest::get(format!("{}/v1/helper", helper.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stats = h.get("/v1/stats").await;
    let terms = terms_of(&stats);
    assert_eq!(
        terms.helper_fingerprint,
        info["fingerprint"].as_str().unwrap()
    );
    assert_eq!(terms.min_reports, HELPER_MIN as i64);
    assert_eq!(
        terms.noise_stddev,
        NOISE.max(HELPER_Z / std::f64::consts::SQRT_2)
    );
    assert_eq!(
        terms.leader_key,
        h.app
            .config()
            .secure_metrics
            .map(|_| terms.leader_key.clone())
            .unwrap()
    );

    let verdicts = [1usize, 1, 0, 1, 1, 0, 1];
    for (i, &up) in verdicts.iter().enumerate() {
        let token = h.register().await;
        let (s, v) = post(
            &h,
            &token,
            body(
                SecureMetric::Thumbs,
                "1",
                sealed(SecureMetric::Thumbs, "1", up, &terms),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let batched = count(&h, "SELECT COUNT(*) FROM sealed_batches").await;
        assert_eq!(batched, ((i + 1) / 3) as i64, "after {} reports", i + 1);
    }
    // The leader holds output shares only; the helper holds its own, in the same two batches.
    assert_eq!(count(&h, "SELECT COUNT(*) FROM sealed_reports").await, 7);
    assert_eq!(
        count(
            &helper.harness,
            "SELECT COUNT(*) FROM helper_metric_batches"
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &helper.harness,
            "SELECT COUNT(*) FROM helper_metric_reports WHERE batch_sha256 IS NULL"
        )
        .await,
        1
    );
    let stats = h.get("/v1/stats").await;
    let v1 = &stats["versions"][0];
    let sealed_stats = &v1["sealed"]["thumbs"];
    assert_eq!(sealed_stats["reports"], 6);
    assert_eq!(sealed_stats["pending"], 1);
    assert_eq!(sealed_stats["batches"], 2);
    let counts: Vec<i64> = serde_json::from_value(sealed_stats["noisyCounts"].clone()).unwrap();
    // Truly 2 down and 4 up in the first six; noise σ = 1 per bucket per batch (√2 over two).
    assert!(
        (counts[0] - 2).abs() <= 8 && (counts[1] - 4).abs() <= 8,
        "{counts:?}"
    );
    let parsed = serde_json::from_value(sealed_stats.clone()).unwrap();
    let bits = SealedBits::of(&parsed, HELPER_MIN).unwrap();
    let rr = RandomizedResponse::new(h.app.config().rr_epsilon).unwrap();
    let expected = combined_rate(&rr, 0, 0, Some(&bits)).unwrap().unwrap();
    assert_eq!(v1["thumbsUpRate"].as_f64().unwrap(), expected.proportion);
    assert_eq!(v1["stdError"].as_f64().unwrap(), expected.std_error);
    assert_eq!(v1["reports"], 0);

    // A device that does not pin the helper sends a randomized bit: both count.
    let token = h.register().await;
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(&token),
            Some(json!({ "modelVersion": "1", "bit": true })),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let v1 = h.get("/v1/stats").await["versions"][0].clone();
    let both = combined_rate(&rr, 1, 1, Some(&bits)).unwrap().unwrap();
    assert_eq!(v1["thumbsUpRate"].as_f64().unwrap(), both.proportion);
    assert_eq!(v1["reports"], 1);

    // Stars and agreement go the same way, in their own tasks.
    for (i, stars) in [5usize, 4, 5].into_iter().enumerate() {
        let token = h.register().await;
        let (s, v) = post(
            &h,
            &token,
            body(
                SecureMetric::Stars,
                "1",
                sealed(SecureMetric::Stars, "1", stars - 1, &terms),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{i}: {v}");
    }
    let v1 = h.get("/v1/stats").await["versions"][0].clone();
    assert_eq!(v1["sealed"]["stars"]["batches"], 1);
    assert_eq!(v1["stars"]["reports"], 3);
    assert!((v1["stars"]["mean"].as_f64().unwrap() - 14.0 / 3.0).abs() < 8.0);
    let metrics = h.raw(Method::GET, "/metrics", &[], vec![]).await.1;
    let text = String::from_utf8(metrics).unwrap();
    assert!(
        text.contains("feedloop_sealed_metric_reports_total 10"),
        "{text}"
    );
    assert!(
        text.contains("feedloop_sealed_metric_batches_total 3"),
        "{text}"
    );
}

/// Refusals: each a 4xx with a JSON body, and nothing stored on either aggregator.
async fn invalid_sealed_reports_change_nothing(backend: Backend) {
    let Some(helper) = Helper::start(backend).await else {
        return;
    };
    let h = leader(backend, &helper, true).await;
    let terms = terms_of(&h.get("/v1/stats").await);
    let token = h.register().await;
    let good = || sealed(SecureMetric::Thumbs, "1", 1, &terms);
    let mut told = terms.clone();
    told.noise_stddev *= 2.0; // a device told another σ than the helper applies
    let mut stranger = terms.clone();
    stranger.helper_key = HpkeKeyPair::generate(&mut OsCsprng::new().unwrap())
        .public()
        .to_hex();
    let cases = [
        (
            json!({ "modelVersion": "1", "metric": "segments", "report": good() }),
            400,
            "invalid_metric",
        ),
        (
            json!({ "modelVersion": "1", "metric": "thumbs", "report": "%%%" }),
            400,
            "invalid_report",
        ),
        (
            json!({ "modelVersion": "1", "metric": "thumbs", "report": "AAAA" }),
            422,
            "invalid_report",
        ),
        (
            json!({ "modelVersion": "9", "metric": "thumbs", "report": good() }),
            404,
            "version_not_found",
        ),
        (
            body(
                SecureMetric::Thumbs,
                "1",
                sealed(SecureMetric::Thumbs, "1", 1, &told),
            ),
            422,
            "invalid_report",
        ),
        (
            body(
                SecureMetric::Thumbs,
                "1",
                sealed(SecureMetric::Thumbs, "1", 1, &stranger),
            ),
            422,
            "invalid_report",
        ),
        // Sealed as a 5-bucket star report, posted as thumbs.
        (
            body(
                SecureMetric::Thumbs,
                "1",
                sealed(SecureMetric::Stars, "1", 1, &terms),
            ),
            422,
            "invalid_report",
        ),
    ];
    for (b, status, code) in cases {
        let (s, v) = post(&h, &token, b.clone()).await;
        assert_eq!(
            (s.as_u16(), v["error"]["code"].as_str().unwrap()),
            (status, code),
            "{b}: {v}"
        );
    }
    assert_eq!(count(&h, "SELECT COUNT(*) FROM sealed_reports").await, 0);
    assert_eq!(
        count(
            &helper.harness,
            "SELECT COUNT(*) FROM helper_metric_reports"
        )
        .await,
        0
    );
    // One per client per metric and version.
    let (s, _) = post(&h, &token, body(SecureMetric::Thumbs, "1", good())).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = post(&h, &token, body(SecureMetric::Thumbs, "1", good())).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate_report"))
    );
    assert_eq!(count(&h, "SELECT COUNT(*) FROM sealed_reports").await, 1);
    // A leader without --secure-metrics announces nothing and takes no sealed report.
    let plain = leader(backend, &helper, false).await;
    assert!(plain.get("/v1/stats").await.get("secureMetrics").is_none());
    let token = plain.register().await;
    let (s, v) = post(&plain, &token, body(SecureMetric::Thumbs, "1", good())).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_secure_metrics"))
    );
}

/// The helper's own endpoints: a task below its noise or minimum is refused; a batch below the
/// minimum, of an unknown report, or with a report already released is refused; the same batch
/// again gets the same bytes.
async fn the_helper_holds_its_policy_and_releases_each_report_once(backend: Backend) {
    let Some(helper) = Helper::start(backend).await else {
        return;
    };
    let h = leader(backend, &helper, true).await;
    let terms = terms_of(&h.get("/v1/stats").await);
    let key = "ab".repeat(32);
    let put = |noise: f64, min: i64| json!({ "buckets": 2, "noiseStddev": noise, "minReports": min, "verifyKey": key });
    let (s, v) = helper
        .call(
            reqwest::Method::PUT,
            "/v1/helper/metrics/thumbs@7",
            put(HELPER_Z / 2.0, 3),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (422, Some("invalid_task")),
        "{v}"
    );
    let (s, _) = helper
        .call(
            reqwest::Method::PUT,
            "/v1/helper/metrics/thumbs@7",
            put(1.0, 2),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = helper
        .call(
            reqwest::Method::PUT,
            "/v1/helper/metrics/kinds@7",
            put(1.0, 3),
        )
        .await;
    assert_eq!(s, 400);
    let (s, _) = helper
        .call(
            reqwest::Method::PUT,
            "/v1/helper/metrics/thumbs@7",
            put(1.0, 3),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _) = helper
        .call(
            reqwest::Method::PUT,
            "/v1/helper/metrics/thumbs@7",
            put(1.0, 3),
        )
        .await;
    assert_eq!(s, 200, "the same task again");
    let (s, v) = helper
        .call(
            reqwest::Method::PUT,
            "/v1/helper/metrics/thumbs@7",
            put(2.0, 3),
        )
        .await;
    assert_eq!((s, v["error"]["code"].as_str()), (409, Some("task_exists")));

    // Three reports through the leader: one batch; its ids again replay the same share.
    for _ in 0..3 {
        let token = h.register().await;
        let (s, v) = post(
            &h,
            &token,
            body(
                SecureMetric::Agreement,
                "1",
                sealed(SecureMetric::Agreement, "1", 1, &terms),
            ),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    }
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT report_id FROM sealed_reports ORDER BY report_id")
            .fetch_all(h.app.store().pool())
            .await
            .unwrap();
    let collect = |ids: &[String]| json!({ "reportIds": ids });
    let path = "/v1/helper/metrics/agreement@1/collect";
    let stored: String = sqlx::query_scalar("SELECT share FROM helper_metric_batches")
        .fetch_one(helper.harness.app.store().pool())
        .await
        .unwrap();
    let (s, v) = helper
        .call(reqwest::Method::POST, path, collect(&ids))
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        v["aggregateShare"].as_str().unwrap(),
        stored,
        "no new noise"
    );
    let (s, v) = helper
        .call(reqwest::Method::POST, path, collect(&ids[..2]))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("below_minimum"))
    );
    let mut more = ids.clone();
    more.push("00".repeat(16));
    let (s, v) = helper
        .call(reqwest::Method::POST, path, collect(&more))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("unknown_report"))
    );
    // A fourth report and two released ones: refused, the fourth stays unreleased.
    let token = h.register().await;
    let (s, _) = post(
        &h,
        &token,
        body(
            SecureMetric::Agreement,
            "1",
            sealed(SecureMetric::Agreement, "1", 0, &terms),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let fourth: String =
        sqlx::query_scalar("SELECT report_id FROM sealed_reports WHERE batch IS NULL")
            .fetch_one(h.app.store().pool())
            .await
            .unwrap();
    let (s, v) = helper
        .call(
            reqwest::Method::POST,
            path,
            collect(&[ids[0].clone(), ids[1].clone(), fourth]),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("batch_released"))
    );
    assert_eq!(
        count(
            &helper.harness,
            "SELECT COUNT(*) FROM helper_metric_reports WHERE batch_sha256 IS NULL"
        )
        .await,
        1
    );
    // The leader's view: one batch of 3, one report waiting; the rate is the core estimator's.
    let v1 = h.get("/v1/stats").await["versions"][0].clone();
    assert_eq!(v1["sealed"]["agreement"]["reports"], 3);
    assert_eq!(v1["sealed"]["agreement"]["pending"], 1);
    assert_eq!(v1["agreement"]["reports"], 3);
}
