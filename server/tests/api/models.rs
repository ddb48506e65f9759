//! Models: rollback, and the server optimizers' state across versions and restarts.

use crate::harness::*;

on_both_backends!(
    rollback_is_audited_and_new_rounds_build_on_it,
    fedadam_state_persists_across_restarts,
    fedavgm_uses_momentum,
);

async fn rollback_is_audited_and_new_rounds_build_on_it(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    publish_one_round(&h, "1", 0..2).await;
    assert_eq!(h.get("/v1/models/current").await["version"], "2");
    // Admin only.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            Some("not-the-admin-key"),
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            None,
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            Some(ADMIN_KEY),
            Some(json!({"version": "9"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("version_not_found"))
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            Some(ADMIN_KEY),
            Some(json!({"version": "1"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(h.get("/v1/models/current").await["version"], "1");
    // The next round builds on version 1 and publishes version 3 with parent 1.
    publish_one_round(&h, "1", 10..12).await;
    let v3 = h.get("/v1/models/3").await;
    assert_eq!(
        (v3["parentVersion"].as_str(), v3["current"].as_bool()),
        (Some("1"), Some(true))
    );
    // The audit log: who (fingerprint, never the key), when, what.
    let (s, audit) = h
        .call(Method::GET, "/v1/admin/audit", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let entries = audit["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.iter().filter(|a| **a == "round.open").count(), 2);
    let rb = entries
        .iter()
        .find(|e| e["action"] == "model.rollback")
        .unwrap();
    assert_eq!(rb["details"]["from"], 2);
    assert_eq!(rb["details"]["to"], 1);
    assert_eq!(
        rb["adminFingerprint"],
        feedloop_server::auth::fingerprint(ADMIN_KEY)
    );
    assert!(rb["at"].as_i64().unwrap() > 0);
    assert!(!audit.to_string().contains(ADMIN_KEY));
    // The rolled-back-from version stays available.
    assert_eq!(h.get("/v1/models/2").await["current"], false);
}

async fn fedadam_state_persists_across_restarts(backend: Backend) {
    let opt = ServerOptimizer::FedAdam {
        lr: 0.05,
        beta1: 0.9,
        beta2: 0.99,
        tau: 1e-3,
    };
    let Some(mut h) = Harness::new(backend, |c| c.optimizer = opt).await else {
        return;
    };
    let h1 = h.head("1").await;
    let (_, u1) = publish_one_round(&h, "1", 0..2).await;
    h.restart().await; // optimizer state must come from the database
    let (_, u2) = publish_one_round(&h, "2", 2..5).await;
    // Reference: two FedAdam steps in plain f64 on the same decoded updates.
    let mean = |us: &[PrivatizedUpdate], i: usize| {
        us.iter().map(|u| u.values()[i] as f64 * GAMMA).sum::<f64>() / us.len() as f64
    };
    let mut expected = Vec::new();
    let mut after_first = Vec::new();
    for (i, &h1i) in h1.iter().enumerate() {
        let (g1, g2) = (mean(&u1, i), mean(&u2, i));
        let (m1, v1) = (0.1 * g1, 0.01 * g1 * g1);
        let x1 = (h1i as f64 + 0.05 * m1 / (v1.sqrt() + 1e-3)) as f32;
        let (m2, v2) = (0.9 * m1 + 0.1 * g2, 0.99 * v1 + 0.01 * g2 * g2);
        after_first.push(x1);
        expected.push((x1 as f64 + 0.05 * m2 / (v2.sqrt() + 1e-3)) as f32);
    }
    assert_close(&h.head("2").await, &after_first, 1e-6);
    assert_close(&h.head("3").await, &expected, 1e-5);
    assert_eq!(h.get("/v1/models/3").await["optimizer"], "fedadam");
}

async fn fedavgm_uses_momentum(backend: Backend) {
    let opt = ServerOptimizer::FedAvgM {
        lr: 1.0,
        momentum: 0.5,
    };
    let Some(h) = Harness::new(backend, |c| c.optimizer = opt).await else {
        return;
    };
    let h1 = h.head("1").await;
    let (_, u1) = publish_one_round(&h, "1", 0..2).await;
    let (_, u2) = publish_one_round(&h, "2", 2..4).await;
    let mean = |us: &[PrivatizedUpdate], i: usize| {
        us.iter().map(|u| u.values()[i] as f64 * GAMMA).sum::<f64>() / us.len() as f64
    };
    let h2 = h.head("2").await;
    let expected: Vec<f32> = (0..HEAD_D)
        .map(|i| {
            let m = 0.5 * mean(&u1, i) + mean(&u2, i);
            (h2[i] as f64 + m) as f32
        })
        .collect();
    assert_close(&h2, &reference_fedavg(&h1, &u1), 1e-6);
    assert_close(&h.head("3").await, &expected, 1e-6);
}
