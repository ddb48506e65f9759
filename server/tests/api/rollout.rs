//! Staged rollout: a published version goes to the canary arm only; the sequential test rolls a
//! worse one back by itself and devices return to the control version; a passing one waits for an
//! admin's approval when configured so.

use feedloop_core::rollout::in_canary;

use crate::harness::*;

on_both_backends!(
    a_worse_canary_is_rolled_back_by_the_server,
    a_passing_canary_waits_for_approval,
);

/// The version `/v1/models/current` serves this token.
async fn served(h: &Harness, token: &str) -> String {
    let (s, v) = h
        .call(Method::GET, "/v1/models/current", Some(token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["version"].as_str().unwrap().to_string()
}

async fn thumbs(h: &Harness, token: &str, version: &str, bit: bool) {
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(token),
            Some(json!({"modelVersion": version, "bit": bit})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
}

fn canary_config(c: &mut Config) {
    c.rr_epsilon = 6.0;
    c.drift.canary_fraction = 0.5;
    c.drift.min_reports = 20;
    c.drift.planned_reports = 40;
    c.drift.margin = 0.05;
}

async fn a_worse_canary_is_rolled_back_by_the_server(backend: Backend) {
    let Some(h) = Harness::new(backend, canary_config).await else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    // Version 2 is a canary: the current version stays 1, and no round opens meanwhile.
    assert_eq!(h.get("/v1/models").await["current"], "1");
    let stats = h.get("/v1/stats").await;
    assert_eq!(stats["rollouts"][0]["status"], "canary", "{stats}");
    assert_eq!(stats["rollouts"][0]["controlVersion"], "1");
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rounds",
            Some(ADMIN_KEY),
            Some(round_body(1, None)),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("rollout_in_progress"))
    );
    // Without a token: the current version.
    assert_eq!(h.get("/v1/models/current").await["version"], "1");

    // Each device is served its arm's version (by client id) and reports on it: the canary's
    // users are unhappy (thumbs down), the control's happy.
    let mut devices = vec![];
    let mut arms = [0, 0];
    for _ in 0..120 {
        let token = h.register().await;
        let id = token_client_id(&h, &token).await;
        let version = served(&h, &token).await;
        let canary = in_canary(&id, "2", 0.5);
        assert_eq!(version, if canary { "2" } else { "1" });
        arms[canary as usize] += 1;
        devices.push((token, version));
    }
    assert!(arms[0] >= 20 && arms[1] >= 20, "{arms:?}");
    for (token, version) in &devices {
        thumbs(&h, token, version, version == "1").await;
    }

    let stats = h.get("/v1/stats").await;
    let rollout = &stats["rollouts"][0];
    assert_eq!(rollout["status"], "rolled_back", "{stats}");
    assert_eq!(rollout["decidedBy"], "auto-rollout");
    assert_eq!(rollout["evidence"]["verdict"], "regression");
    let [lo, hi] = [0, 1].map(|i| rollout["evidence"]["difference"][i].as_f64().unwrap());
    assert!(lo < hi && hi < -0.05, "{rollout}");
    assert!(rollout["reason"].as_str().unwrap().contains("margin"));
    assert_eq!(stats["versions"][1]["flagged"], true);
    // The test over time ends where it decided: reports only grow, and at the last point the
    // interval lies below −margin (later reports of the same millisecond may be in it too).
    let history = rollout["history"].as_array().unwrap();
    assert!(!history.is_empty() && history.len() <= 48, "{rollout}");
    for pair in history.windows(2) {
        for arm in ["canaryReports", "controlReports"] {
            assert!(pair[0][arm].as_u64() <= pair[1][arm].as_u64(), "{rollout}");
        }
    }
    let last = history.last().unwrap();
    assert!(last["canaryReports"].as_u64() >= rollout["evidence"]["canary"]["reports"].as_u64());
    assert!(last["difference"][1].as_f64().unwrap() < -0.05, "{last}");
    // Every device runs version 1 again; the audit log has the decision with its evidence.
    for (token, _) in &devices {
        assert_eq!(served(&h, token).await, "1");
    }
    let (s, audit) = h
        .call(Method::GET, "/v1/admin/audit", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let entry = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "rollout.rollback")
        .unwrap_or_else(|| panic!("no rollout.rollback in {audit}"));
    assert_eq!(entry["adminFingerprint"], "auto-rollout", "{entry}");
    assert_eq!(entry["details"]["evidence"]["verdict"], "regression");
    let (_, metrics) = h.raw(Method::GET, "/metrics", &[], vec![]).await;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("feedloop_canaries_rolled_back_total 1"),
        "{metrics}"
    );
    // Rounds resume (on version 1), and nothing is left to promote.
    h.open_round(round_body(1, None)).await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollout/promote",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_rollout"))
    );
}

async fn a_passing_canary_waits_for_approval(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| {
        canary_config(c);
        c.drift.promotion = feedloop_server::Promotion::Approve;
    })
    .await
    else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    // Everyone is equally happy: after the planned 40 canary reports, no regression.
    let (mut canary, mut control) = (0, 0);
    while canary < 40 || control < 20 {
        let token = h.register().await;
        let version = served(&h, &token).await;
        if version == "2" {
            canary += 1;
        } else {
            control += 1;
        }
        thumbs(&h, &token, &version, true).await;
    }
    let stats = h.get("/v1/stats").await;
    let rollout = &stats["rollouts"][0];
    assert_eq!(rollout["status"], "awaiting_approval", "{stats}");
    assert_eq!(rollout["evidence"]["verdict"], "planned_reached");
    assert_eq!(stats["currentVersion"], "1");
    // Still running: the history ends now, on the same reports and interval as the evidence.
    let last = rollout["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    let e = &rollout["evidence"];
    assert_eq!(last["canaryReports"], e["canary"]["reports"], "{rollout}");
    assert_eq!(last["controlReports"], e["control"]["reports"], "{rollout}");
    assert_eq!(last["difference"], e["difference"], "{rollout}");
    assert_eq!(stats["versions"][1]["flagged"], false);

    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollout/promote",
            Some("wrong"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollout/promote",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"], "promoted");
    assert_ne!(v["decidedBy"], "auto-rollout");
    assert_eq!(h.get("/v1/models").await["current"], "2");
    let token = h.register().await;
    assert_eq!(served(&h, &token).await, "2");

    // The next published version is a canary again; an admin withdraws it.
    publish_one_round(&h, "2", 10..12).await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollout/abort",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["status"].as_str(), v["version"].as_str()),
        (Some("rolled_back"), Some("3"))
    );
    assert_eq!(h.get("/v1/models").await["current"], "2");
}
