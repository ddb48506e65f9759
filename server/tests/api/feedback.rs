//! Feedback: randomized-response statistics and the drift flag.

use crate::harness::*;

on_both_backends!(rr_statistics_and_drift_flag,);

async fn rr_statistics_and_drift_flag(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| {
        c.rr_epsilon = 6.0;
        c.drift.min_reports = 30;
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
