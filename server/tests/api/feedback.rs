//! Feedback: randomized-response statistics and the drift flag.

use crate::harness::*;

on_both_backends!(
    rr_statistics_and_drift_flag,
    star_ratings_are_de_biased_per_version,
    agreement_rates_are_de_biased_per_version,
    feedback_volume_is_de_biased_per_kind_version_and_day,
    segments_are_de_biased_and_a_disparity_flagged,
);

/// Segments: one randomized (segment, thumbs) cell per client per version, over the declared
/// list; de-biased per segment with a disparity flag; bad input refused with nothing stored.
async fn segments_are_de_biased_and_a_disparity_flagged(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| {
        c.rr_epsilon = 4.0;
        c.segments = vec!["en".into(), "de".into()];
    })
    .await
    else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    let post = |token: String, body: Value| {
        let h = &h;
        async move {
            h.call(
                Method::POST,
                "/v1/feedback/segments",
                Some(&token),
                Some(body),
            )
            .await
        }
    };
    // 300 reports as the devices sent them: "en" mostly up (cells 0/1), "de" mostly down (2/3).
    let mut counts = vec![0u64; 4];
    for i in 0..300u32 {
        let cell = match i % 10 {
            0..=4 => 1,     // en, up
            5 => 0,         // en, down
            6 | 7 => 2,     // de, down
            _ => 3 - i % 2, // de, up or down
        };
        counts[cell as usize] += 1;
        let token = h.register().await;
        let (s, v) = post(
            token.clone(),
            json!({"modelVersion": "2", "segments": 2, "cell": cell}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        if i == 0 {
            let (s, v) = post(
                token,
                json!({"modelVersion": "2", "segments": 2, "cell": 0}),
            )
            .await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("duplicate_report"))
            );
        }
    }
    let token = h.register().await;
    for (body, status, code) in [
        (
            json!({"modelVersion": "2", "segments": 3, "cell": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_segments",
        ),
        (
            json!({"modelVersion": "2", "segments": 2, "cell": 4}),
            StatusCode::BAD_REQUEST,
            "invalid_cell",
        ),
        (
            json!({"modelVersion": "9", "segments": 2, "cell": 1}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            json!({"modelVersion": "2", "segment": "en", "bit": true}),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
    ] {
        let (s, v) = post(token.clone(), body.clone()).await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
        if code != "not_found" && code != "invalid_body" {
            assert_eq!(v["error"]["code"], code, "{v}");
        }
    }
    let stats = h.get("/v1/stats").await;
    assert_eq!(stats["segments"], json!(["en", "de"]));
    assert!(
        stats["versions"][0]["segments"].is_null(),
        "no reports on 1"
    );
    let seg = &stats["versions"][1]["segments"];
    assert_eq!(
        seg["reports"], 300,
        "the refused ones were not stored: {seg}"
    );
    // Exactly the core estimator over the stored counts.
    let m = feedloop_core::segments::mechanism(4.0, 2).unwrap();
    let names = vec!["en".to_string(), "de".to_string()];
    let expected = feedloop_core::segments::segment_stats(
        &m,
        &names,
        &counts,
        feedloop_core::segments::DisparityTest::default(),
    )
    .unwrap();
    assert_eq!(seg, &serde_json::to_value(&expected).unwrap());
    let en = seg["segments"][0]["thumbsUpRate"].as_f64().unwrap();
    let de = seg["segments"][1]["thumbsUpRate"].as_f64().unwrap();
    assert!(en > de + 0.3, "en {en}, de {de}");
    let d = &seg["disparity"];
    assert_eq!(
        (d["higher"].as_str(), d["lower"].as_str()),
        (Some("en"), Some("de"))
    );
    assert_eq!(d["flagged"], true, "{d}");
    let (_, metrics) = h.raw(Method::GET, "/metrics", &[], vec![]).await;
    assert!(String::from_utf8(metrics)
        .unwrap()
        .contains("feedloop_segment_reports_total 300"));
}

/// A server that declares no segments refuses segment reports (and its stats list none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_declared_segments_no_segment_reports() {
    let Some(h) = Harness::new(Backend::Sqlite, |_| {}).await else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    let token = h.register().await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/feedback/segments",
            Some(&token),
            Some(json!({"modelVersion": "2", "segments": 2, "cell": 1})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("no_segments")),
        "{v}"
    );
    let stats = h.get("/v1/stats").await;
    assert_eq!(stats["segments"], json!([]));
    assert!(stats["versions"][1]["segments"].is_null());
}

/// Feedback volume: one sampled kind and its randomized bit per client per version, de-biased
/// per kind (per version and per day), with bad input refused and nothing stored.
async fn feedback_volume_is_de_biased_per_kind_version_and_day(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| c.rr_epsilon = 2.0).await else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    let post = |token: String, body: Value| {
        let h = &h;
        async move {
            h.call(Method::POST, "/v1/feedback/kinds", Some(&token), Some(body))
                .await
        }
    };
    // 30 devices drew "thumbs" (24 bits are 1), 10 drew "copy" (2 are 1).
    for i in 0..40 {
        let token = h.register().await;
        let (kind, bit) = if i < 30 {
            ("thumbs", i % 5 != 0)
        } else {
            ("copy", i % 5 == 0)
        };
        let (s, v) = post(
            token.clone(),
            json!({"modelVersion": "2", "kind": kind, "bit": bit}),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        if i == 0 {
            let (s, v) = post(
                token,
                json!({"modelVersion": "2", "kind": "copy", "bit": true}),
            )
            .await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("duplicate_report"))
            );
        }
    }
    let token = h.register().await;
    let (s, v) = post(
        token.clone(),
        json!({"modelVersion": "2", "kind": "telepathy", "bit": true}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_kind")),
        "{v}"
    );
    let (s, _) = post(
        token.clone(),
        json!({"modelVersion": "9", "kind": "copy", "bit": true}),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = post(token, json!({"modelVersion": "2", "kind": "copy"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let stats = h.get("/v1/stats").await;
    let rr = feedloop_privacy::randomized_response::RandomizedResponse::new(2.0).unwrap();
    let kinds = stats["versions"][1]["kinds"].as_array().unwrap();
    assert_eq!(kinds.len(), 2, "{kinds:?}");
    for (k, (kind, ones, reports)) in kinds.iter().zip([("thumbs", 24, 30), ("copy", 2, 10)]) {
        let e = rr.estimate_proportion(ones, reports).unwrap();
        assert_eq!(k["kind"], kind);
        assert_eq!(
            (k["reports"].as_u64(), k["reportedOnes"].as_u64()),
            (Some(reports), Some(ones))
        );
        assert_eq!(k["share"].as_f64().unwrap(), e.proportion);
    }
    assert_eq!(stats["versions"][0]["kinds"], json!([]));
    // Today's volume: the share times the 40 devices that reported today.
    let volume = stats["feedbackVolume"].as_array().unwrap();
    assert_eq!(volume.len(), 2, "{volume:?}");
    let thumbs = rr.estimate_proportion(24, 30).unwrap().proportion * 40.0;
    assert_eq!(volume[0]["kind"], "thumbs");
    assert!(
        (volume[0]["devices"].as_f64().unwrap() - thumbs).abs() < 1e-9,
        "{volume:?}"
    );
    let day = volume[0]["day"].as_str().unwrap();
    assert_eq!(day.len(), 10, "YYYY-MM-DD: {day}");
}

/// Federated evaluation: "did the model agree" bits, one per client per version, de-biased.
async fn agreement_rates_are_de_biased_per_version(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| c.rr_epsilon = 2.0).await else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    for i in 0..40 {
        let token = h.register().await;
        let (s, v) = h
            .call(
                Method::POST,
                "/v1/feedback/agreement",
                Some(&token),
                Some(json!({"modelVersion": "2", "bit": i % 4 != 0})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        if i == 0 {
            let (s, v) = h
                .call(
                    Method::POST,
                    "/v1/feedback/agreement",
                    Some(&token),
                    Some(json!({"modelVersion": "2", "bit": true})),
                )
                .await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("duplicate_report"))
            );
        }
    }
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback/agreement",
            Some(&h.register().await),
            Some(json!({"modelVersion": "9", "bit": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let stats = h.get("/v1/stats").await;
    let a = &stats["versions"][1]["agreement"];
    let e = feedloop_privacy::randomized_response::RandomizedResponse::new(2.0)
        .unwrap()
        .estimate_proportion(30, 40)
        .unwrap();
    assert_eq!(
        (a["reports"].as_u64(), a["reportedOnes"].as_u64()),
        (Some(40), Some(30))
    );
    assert_eq!(a["rate"].as_f64().unwrap(), e.proportion);
    let ci = a["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < e.proportion && e.proportion < ci[1].as_f64().unwrap());
    assert_eq!(stats["versions"][0]["agreement"], Value::Null);
    // Thumbs rates are a separate metric.
    assert_eq!(stats["versions"][1]["reports"], 0);
}

async fn rr_statistics_and_drift_flag(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| {
        c.rr_epsilon = 6.0;
        c.drift.min_reports = 30;
        // The sequential test is tightest at its planned number of reports.
        c.drift.planned_reports = 30;
        c.drift.margin = 0.05;
    })
    .await
    else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    // Version 1: everyone reports thumbs up; version 2: everyone down (RR bits as sent).
    for i in 0..30 {
        let token = h.register().await;
        let (s, v) = h
            .call(
                Method::POST,
                "/v1/feedback",
                Some(&token),
                Some(json!({"modelVersion": "1", "bit": true})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let (s, _) = h
            .call(
                Method::POST,
                "/v1/feedback",
                Some(&token),
                Some(json!({"modelVersion": "2", "bit": i % 10 == 0})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED);
        if i == 0 {
            let (s, v) = h
                .call(
                    Method::POST,
                    "/v1/feedback",
                    Some(&token),
                    Some(json!({"modelVersion": "1", "bit": false})),
                )
                .await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("duplicate_report"))
            );
        }
    }
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(&h.register().await),
            Some(json!({"modelVersion": "7", "bit": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{v}");
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(&h.register().await),
            Some(json!({"modelVersion": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let stats = h.get("/v1/stats").await;
    let rr = feedloop_privacy::randomized_response::RandomizedResponse::new(6.0).unwrap();
    let v1 = &stats["versions"][0];
    let e1 = rr.estimate_proportion(30, 30).unwrap();
    assert_eq!(v1["reports"], 30);
    assert_eq!(v1["thumbsUpRate"].as_f64().unwrap(), e1.proportion);
    let ci = v1["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= e1.proportion && e1.proportion <= ci[1].as_f64().unwrap());
    let v2 = &stats["versions"][1];
    assert_eq!(v2["reports"], 30);
    assert_eq!(
        v2["thumbsUpRate"].as_f64().unwrap(),
        rr.estimate_proportion(3, 30).unwrap().proportion
    );
    assert_eq!(v2["cohortSize"], 2);
    assert!(v2["epsilonPerParticipant"].as_f64().unwrap() > 0.0);
    assert_eq!(stats["rounds"][0]["cohortSize"], 2);
    // Version 2 dropped far more than the margin, significantly: flagged (API and metrics).
    assert_eq!(v2["flagged"], true, "{stats}");
    assert!(v2["flagReason"].as_str().unwrap().contains("margin"));
    assert_eq!(v1["flagged"], false);
    assert_eq!(h.get("/v1/models/2").await["flagged"], true);
}

async fn star_ratings_are_de_biased_per_version(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| c.rr_epsilon = 2.0).await else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    // 40 reports on version 2 as the devices sent them (randomized): 10 × 3 stars, 30 × 5 stars.
    let mut counts = [0u64; 5];
    for i in 0..40 {
        let stars = if i < 10 { 3 } else { 5 };
        counts[stars - 1] += 1;
        let token = h.register().await;
        let (s, v) = h
            .call(
                Method::POST,
                "/v1/feedback/stars",
                Some(&token),
                Some(json!({"modelVersion": "2", "stars": stars})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        if i == 0 {
            let (s, v) = h
                .call(
                    Method::POST,
                    "/v1/feedback/stars",
                    Some(&token),
                    Some(json!({"modelVersion": "2", "stars": 1})),
                )
                .await;
            assert_eq!(
                (s, v["error"]["code"].as_str()),
                (StatusCode::CONFLICT, Some("duplicate_report"))
            );
        }
    }
    let token = h.register().await;
    for (body, status) in [
        (
            json!({"modelVersion": "2", "stars": 0}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"modelVersion": "2", "stars": 6}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"modelVersion": "2", "stars": 300}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"modelVersion": "2"}), StatusCode::BAD_REQUEST),
        (
            json!({"modelVersion": "9", "stars": 4}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"modelVersion": "2", "stars": 4.5}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"modelVersion": "2", "stars": "4"}),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (s, v) = h
            .call(
                Method::POST,
                "/v1/feedback/stars",
                Some(&token),
                Some(body.clone()),
            )
            .await;
        assert_eq!(s, status, "{body}: {v}");
        assert!(v["error"]["message"].is_string(), "{v}");
    }
    let stats = h.get("/v1/stats").await;
    assert!(
        stats["versions"][0]["stars"].is_null(),
        "no ratings on version 1"
    );
    // JSON Schema's `integer` (what the document says) admits 4.0: a rating of 4.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/feedback/stars",
            Some(&token),
            Some(json!({"modelVersion": "1", "stars": 4.0})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(
        h.get("/v1/stats").await["versions"][0]["stars"]["reported"],
        json!([0, 0, 0, 1, 0])
    );
    let stars = &stats["versions"][1]["stars"];
    assert_eq!(stars["reports"], 40);
    assert_eq!(stars["reported"], json!(counts));
    let estimate = feedloop_privacy::categorical_response::CategoricalResponse::new(2.0, 5)
        .unwrap()
        .estimate(&counts)
        .unwrap();
    let (mean, variance) = estimate.linear(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
    assert_eq!(stars["mean"].as_f64().unwrap(), mean);
    assert!((stars["stdError"].as_f64().unwrap() - variance.sqrt()).abs() < 1e-12);
    let ci = stars["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() < mean && mean < ci[1].as_f64().unwrap());
    let shares: f64 = stars["distribution"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9);
    let (_, metrics) = h.raw(Method::GET, "/metrics", &[], vec![]).await;
    assert!(String::from_utf8(metrics)
        .unwrap()
        .contains("feedloop_star_reports_total 41"));
}
