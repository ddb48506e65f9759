//! The generated OpenAPI document against the real server: every documented operation is called,
//! and every answer (here and in every other test of this binary, through `Harness::raw`) must be
//! a status the document lists with a body that validates against its schema.

use crate::harness::*;

on_both_backends!(every_documented_operation_answers_as_documented);

async fn every_documented_operation_answers_as_documented(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| c.segments = vec!["en".into(), "de".into()]).await
    else {
        return;
    };
    // The document served is the generated one.
    let served = h.get("/openapi.json").await;
    assert_eq!(
        served,
        serde_json::to_value(feedloop_server::routes::document()).unwrap()
    );
    // Registration and every admin operation document the rate limit's 429 (with Retry-After);
    // every operation documents the JSON body of the errors no handler writes (4XX).
    for (path, item) in served["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let responses = &op["responses"];
            assert!(responses["4XX"].is_object(), "{method} {path}: no 4XX");
            let admin = op["security"].to_string().contains("adminKey");
            if admin || path == "/v1/clients/register" {
                assert!(
                    responses["429"]["headers"]["retry-after"].is_object(),
                    "{method} {path}: no 429 with Retry-After"
                );
            } else {
                assert!(
                    responses["429"].is_null(),
                    "{method} {path}: 429 not expected"
                );
            }
        }
    }
    for schema in [
        "TokenGrant",
        "Round",
        "ModelVersion",
        "UploadAck",
        "Stats",
        "ErrorBody",
    ] {
        assert!(
            served["components"]["schemas"][schema].is_object(),
            "{schema} is in the document"
        );
    }
    assert_eq!(h.get("/healthz").await["status"], "ok");
    let (s, _) = h.raw(Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);

    // Clients.
    let (s, _) = h
        .raw(Method::POST, "/v1/clients/register", &[], vec![])
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let token = h.register().await;
    let (s, grant) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{grant}");
    let ttl = grant["expiresAt"].as_i64().unwrap() - grant["issuedAt"].as_i64().unwrap();
    assert_eq!(
        ttl,
        h.config.token_ttl.as_millis() as i64,
        "both in unix ms"
    );

    // Rounds and an update.
    let (s, _) = h.call(Method::GET, "/v1/rounds/current", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let round = h.open_round(round_body(1, Some(5))).await;
    assert_eq!(round["status"], "open");
    assert_eq!(h.get("/v1/rounds").await["rounds"][0], round);
    assert_eq!(h.get("/v1/rounds/current").await, round);
    assert_eq!(h.get("/v1/rounds/1").await, round);
    let (s, _) = h.call(Method::GET, "/v1/rounds/999", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, changed) = h
        .call(
            Method::PATCH,
            "/v1/admin/rounds/1",
            Some(ADMIN_KEY),
            Some(json!({ "targetCount": 3 })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(changed["targetCount"], 3);
    let (s, ack) = h
        .submit(&token, &round, Some("1"), privatized(1, HEAD_D).to_bytes())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{ack}");
    assert_eq!(ack["roundClosed"], Value::Null);
    let (s, _) = h
        .submit(&token, &round, Some("1"), privatized(2, HEAD_D).to_bytes())
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "one update per client per round");
    let (s, closed) = h
        .call(
            Method::POST,
            "/v1/admin/rounds/1/close",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "published");

    // Models.
    let models = h.get("/v1/models").await;
    assert_eq!(models["current"], "2");
    let (s, bytes) = h.raw(Method::GET, "/v1/models/current", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let current: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(current["version"], "2");
    let (s, _) = h
        .raw(
            Method::GET,
            "/v1/models/current",
            &[("if-none-match", "\"model-2\"")],
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
    assert_eq!(h.get("/v1/models/2").await["parentVersion"], "1");
    let (s, onnx) = h
        .raw(Method::GET, "/v1/models/2/model.onnx", &[], vec![])
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(!onnx.is_empty());

    // Feedback and statistics.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(&token),
            Some(json!({ "modelVersion": "2", "bit": true })),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback/stars",
            Some(&token),
            Some(json!({ "modelVersion": "2", "stars": 5 })),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback/agreement",
            Some(&token),
            Some(json!({ "modelVersion": "2", "bit": true })),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback/kinds",
            Some(&token),
            Some(json!({ "modelVersion": "2", "kind": "thumbs", "bit": true })),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback/segments",
            Some(&token),
            Some(json!({ "modelVersion": "2", "segments": 2, "cell": 3 })),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let stats = h.get("/v1/stats").await;
    assert_eq!(stats["versions"][1]["segments"]["reports"], 1);
    assert_eq!(stats["versions"][1]["reports"], 1);
    // Sealed metric reports need --secure-metrics (tests/api/sealed.rs runs them): a 404 here.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/feedback/sealed",
            Some(&token),
            Some(json!({ "modelVersion": "2", "metric": "thumbs", "report": "AAAA" })),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_secure_metrics"))
    );
    assert_eq!(stats["versions"][1]["stars"]["reports"], 1);
    assert_eq!(stats["versions"][1]["agreement"]["reports"], 1);
    assert_eq!(stats["versions"][1]["kinds"][0]["reports"], 1);

    // Admin: revoking a client (its token is refused from then on).
    let revoked = h.register().await;
    let client_id = token_client_id(&h, &revoked).await;
    let (s, v) = h
        .call(
            Method::POST,
            &format!("/v1/admin/clients/{client_id}/revoke"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(
        (s, v["clientId"].as_str()),
        (StatusCode::OK, Some(client_id.as_str()))
    );
    let (s, _) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&revoked), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Admin: rollback and the audit log.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rollback",
            Some(ADMIN_KEY),
            Some(json!({ "version": "1" })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["current"], true);
    // Admin: the rollout endpoints (no rollout runs here: tests/api/rollout.rs has them running).
    for path in ["/v1/admin/rollout/promote", "/v1/admin/rollout/abort"] {
        let (s, v) = h.call(Method::POST, path, Some(ADMIN_KEY), None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("no_rollout")),
            "{path}"
        );
    }
    let (s, audit) = h
        .call(Method::GET, "/v1/admin/audit", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let actions: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for action in [
        "round.open",
        "round.update",
        "round.close",
        "model.rollback",
        "client.revoke",
    ] {
        assert!(actions.contains(&action), "{action} in {actions:?}");
    }

    let covered = h.covered.lock().unwrap().clone();
    let missing: Vec<_> = documented_operations()
        .difference(&covered)
        .cloned()
        .collect();
    assert!(missing.is_empty(), "not exercised: {missing:?}");
}
