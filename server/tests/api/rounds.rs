//! Rounds: publishing with FedAvg, the minimum cohort, refused submissions, deadlines.

use crate::harness::*;

on_both_backends!(
    round_publishes_fedavg_and_the_onnx_carries_the_new_head,
    below_minimum_cohort_nothing_is_published,
    bad_submissions_are_refused_without_state_change,
    deadline_closes_the_round,
    concurrent_submissions_are_committed_together_and_each_judged,
);

/// Many submissions at once are stored by the group commit (several per transaction), and each
/// gets the answer it would get alone: per round, one update per client and one per payload,
/// `received` counts are distinct and end at the number stored, and a round closed meanwhile
/// refuses the rest.
async fn concurrent_submissions_are_committed_together_and_each_judged(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let round = h.open_round(round_body(1, None)).await;
    let tokens: Vec<String> = {
        let mut t = Vec::new();
        for _ in 0..60 {
            t.push(h.register().await);
        }
        t
    };
    let shared = privatized(999, HEAD_D).to_bytes();
    // Each client sends two different updates; clients 40..60 also send one shared payload.
    let mut requests = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        requests.push((token.clone(), privatized(i as u32, HEAD_D).to_bytes()));
        requests.push((
            token.clone(),
            privatized(1000 + i as u32, HEAD_D).to_bytes(),
        ));
        if i >= 40 {
            requests.push((token.clone(), shared.clone()));
        }
    }
    let h = std::sync::Arc::new(h);
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|(token, payload)| {
            let (h, round) = (h.clone(), round.clone());
            tokio::spawn(async move { h.submit(&token, &round, Some("1"), payload).await })
        })
        .collect();
    let mut received = Vec::new();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for t in tasks {
        let (status, v) = t.await.unwrap();
        if status == StatusCode::ACCEPTED {
            received.push(v["received"].as_i64().unwrap());
        } else {
            assert_eq!(status, StatusCode::CONFLICT, "{v}");
            *codes
                .entry(v["error"]["code"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    // Exactly one update per client was stored; everything else was a duplicate or a replay.
    assert_eq!(received.len(), 60, "{codes:?}");
    received.sort();
    assert_eq!(received, (1..=60).collect::<Vec<_>>());
    assert_eq!(codes.values().sum::<usize>(), 60 + 20, "{codes:?}");
    assert!(
        codes
            .keys()
            .all(|c| c == "duplicate_update" || c == "replayed_update"),
        "{codes:?}"
    );
    let stored = h
        .get(&format!(
            "/v1/rounds/{}",
            round["roundId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(stored["received"], 60);
    // The writes were committed in groups (fewer transactions than writes).
    let metrics = h.app.metrics();
    let batches = metrics.ingest_batches.load(Ordering::Relaxed);
    let writes = metrics.ingest_writes.load(Ordering::Relaxed);
    eprintln!("group commit: {writes} writes in {batches} transactions");
    assert_eq!(writes, 60 + 140);
    assert!(
        batches < writes,
        "{writes} writes in {batches} transactions"
    );

    // After an admin close, concurrent late submissions are all refused as closed.
    let round_id = round["roundId"].as_str().unwrap();
    let (s, _) = h
        .call(
            Method::POST,
            &format!("/v1/admin/rounds/{round_id}/close"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let late: Vec<_> = (0..10)
        .map(|i| {
            let (h, round) = (h.clone(), round.clone());
            tokio::spawn(async move {
                let token = h.register().await;
                h.submit(
                    &token,
                    &round,
                    Some("1"),
                    privatized(5000 + i, HEAD_D).to_bytes(),
                )
                .await
            })
        })
        .collect();
    for t in late {
        let (status, v) = t.await.unwrap();
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("round_closed"))
        );
    }
}

async fn round_publishes_fedavg_and_the_onnx_carries_the_new_head(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let d = h.app.dimension();
    assert_eq!(d, HEAD_D);
    let round = h.open_round(round_body(3, Some(3))).await;
    // The client's RoundConfig parses from the server's round JSON.
    let current = h.get("/v1/rounds/current").await;
    let rc: feedloop_core::contribution::RoundConfig =
        serde_json::from_value(current.clone()).unwrap();
    assert_eq!(rc.model_version, "1");
    assert_eq!(
        (rc.clip_norm, rc.granularity, rc.noise_stddev),
        (C, GAMMA, SIGMA)
    );
    assert_eq!(current["dimension"], HEAD_D);

    let old = h.head("1").await;
    let updates: Vec<PrivatizedUpdate> = (0..3).map(|s| privatized(s, d)).collect();
    let mut last = Value::Null;
    for (i, u) in updates.iter().enumerate() {
        let token = h.register().await;
        let (s, v) = h.submit(&token, &round, Some("1"), u.to_bytes()).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["received"], i as i64 + 1);
        last = v;
    }
    // The third update reached the target count: the round closed and published version 2.
    assert_eq!(last["roundClosed"]["status"], "published");
    assert_eq!(last["roundClosed"]["publishedVersion"], "2");

    let v2 = h.get("/v1/models/current").await;
    assert_eq!(v2["version"], "2");
    assert_eq!(v2["parentVersion"], "1");
    assert_eq!(v2["cohortSize"], 3);
    assert_eq!(v2["optimizer"], "fedavg");
    let rho = PrivatizerConfig::new(C, GAMMA, SIGMA).unwrap().rho();
    assert_eq!(v2["privacy"]["rho"].as_f64().unwrap(), rho);
    assert_eq!(
        v2["privacy"]["epsilonPerParticipant"].as_f64().unwrap(),
        zcdp_to_approx_dp(rho, 1e-6).unwrap()
    );
    let new_head: Vec<f32> = serde_json::from_value(v2["head"].clone()).unwrap();
    // One f32 rounding apart at most.
    assert_close(&new_head, &reference_fedavg(&old, &updates), 1e-6);
    assert_ne!(new_head, old);

    // The published ONNX file loads as a RewardModel whose head is the aggregated head.
    let (s, onnx) = h
        .raw(Method::GET, "/v1/models/2/model.onnx", &[], vec![])
        .await;
    assert_eq!(s, StatusCode::OK);
    let model = RewardModel::from_bytes(&onnx).unwrap();
    assert_eq!(model.head().to_vector(), new_head);
    assert_eq!(feedloop_server::onnx::sha256_hex(&onnx), v2["onnxSha256"]);
    use prost::Message;
    let proto = tract_onnx::pb::ModelProto::decode(onnx.as_slice()).unwrap();
    let meta: Vec<_> = proto
        .metadata_props
        .iter()
        .filter(|e| e.key == "feedloop.model.version")
        .map(|e| e.value.as_str())
        .collect();
    assert_eq!(meta, vec!["2"]);

    // The round log records the provenance.
    let log = h.get("/v1/rounds").await;
    assert_eq!(log["rounds"][0]["publishedVersion"], "2");
    assert_eq!(log["rounds"][0]["cohortSize"], 3);
}

async fn below_minimum_cohort_nothing_is_published(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let round = h.open_round(round_body(3, None)).await;
    for s in 0..2 {
        let token = h.register().await;
        let (st, _) = h
            .submit(&token, &round, Some("1"), privatized(s, HEAD_D).to_bytes())
            .await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let (s, closed) = h
        .call(
            Method::POST,
            "/v1/admin/rounds/1/close",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "insufficient");
    assert_eq!(closed["cohortSize"], 2);
    assert!(closed["publishedVersion"].is_null());
    let models = h.get("/v1/models").await;
    assert_eq!(models["current"], "1");
    assert_eq!(models["versions"].as_array().unwrap().len(), 1);
    // Closing twice is a conflict.
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rounds/1/close",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("round_closed"))
    );
}

async fn bad_submissions_are_refused_without_state_change(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let round = h.open_round(round_body(1, None)).await;
    let token = h.register().await;
    let good = privatized(7, HEAD_D).to_bytes();
    let code = |v: &Value| v["error"]["code"].as_str().unwrap().to_string();

    // No token, a forged token.
    let (s, v) = h
        .raw(
            Method::POST,
            "/v1/rounds/1/updates",
            &[("x-feedloop-model-version", "1")],
            good.clone(),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "{}",
        String::from_utf8_lossy(&v)
    );
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (s, v) = h.submit(&forged, &round, Some("1"), good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized".into())
    );
    // Unknown deployment key.
    let (s, _) = h
        .raw(
            Method::POST,
            "/v1/clients/register",
            &[("x-feedloop-deployment-key", "nope-nope-nope-nope")],
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // Missing and stale model version.
    let (s, v) = h.submit(&token, &round, None, good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "missing_model_version".into())
    );
    let (s, v) = h.submit(&token, &round, Some("0"), good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "stale_model_version".into())
    );
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("/v1/models/current"));
    // Malformed bytes, a truncated payload, another round's parameters, a wrong dimension.
    for bad in [
        b"not an update".to_vec(),
        good[..good.len() - 8].to_vec(),
        privatize_with_os_rng(
            &delta(1, HEAD_D),
            &PrivatizerConfig::new(C, GAMMA, 0.2).unwrap(),
        )
        .unwrap()
        .to_bytes(),
        privatize_with_os_rng(
            &delta(1, 130),
            &PrivatizerConfig::new(C, GAMMA, SIGMA).unwrap(),
        )
        .unwrap()
        .to_bytes(),
    ] {
        let (s, v) = h.submit(&token, &round, Some("1"), bad).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNPROCESSABLE_ENTITY, "invalid_update".into())
        );
    }
    // An out-of-bound lattice value: patch the first value of a good payload to i64::MAX/2
    // (values are little-endian i64 after the 46-byte header in wire format v1; if the encoding
    // differs the decoder refuses it as malformed, which is the same 422).
    let mut huge = good.clone();
    huge[46..54].copy_from_slice(&(i64::MAX / 2).to_le_bytes());
    let (s, v) = h.submit(&token, &round, Some("1"), huge).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid_update".into())
    );
    // Too large.
    let (s, v) = h
        .submit(&token, &round, Some("1"), vec![0u8; 65 * 1024])
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
    );
    // No state change so far.
    assert_eq!(h.get("/v1/rounds/1").await["received"], 0);

    // Accepted once; the same client again is a duplicate; another client replaying the bytes is a replay.
    let (s, _) = h.submit(&token, &round, Some("1"), good.clone()).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, v) = h
        .submit(&token, &round, Some("1"), privatized(8, HEAD_D).to_bytes())
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "duplicate_update".into())
    );
    let other = h.register().await;
    let (s, v) = h.submit(&other, &round, Some("1"), good.clone()).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "replayed_update".into())
    );
    assert_eq!(h.get("/v1/rounds/1").await["received"], 1);
    // Unknown round, bad id.
    let (s, v) = h.call(Method::GET, "/v1/rounds/99", None, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::NOT_FOUND, "round_not_found".into())
    );
    let (s, v) = h.call(Method::GET, "/v1/rounds/abc", None, None).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_id".into())
    );
    // After closing, submissions are refused.
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/admin/rounds/1/close",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h
        .submit(&other, &round, Some("1"), privatized(9, HEAD_D).to_bytes())
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "round_closed".into()));
    let m = h.raw(Method::GET, "/metrics", &[], vec![]).await.1;
    let m = String::from_utf8(m).unwrap();
    assert!(
        m.contains("feedloop_updates_rejected_total{code=\"invalid_update\"} 5"),
        "{m}"
    );
    assert!(m.contains("feedloop_updates_accepted_total 1"), "{m}");
}

async fn deadline_closes_the_round(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let task = feedloop_server::spawn_deadline_task(h.app.clone());
    let mut body = round_body(2, None);
    body["durationSeconds"] = json!(0.5);
    let round = h.open_round(body).await;
    for s in 0..2 {
        let token = h.register().await;
        let (st, _) = h
            .submit(&token, &round, Some("1"), privatized(s, HEAD_D).to_bytes())
            .await;
        assert_eq!(st, StatusCode::ACCEPTED);
    }
    let mut status = String::new();
    for _ in 0..200 {
        status = h.get("/v1/rounds/1").await["status"]
            .as_str()
            .unwrap()
            .to_string();
        if status != "open" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert_eq!(status, "published");
    assert_eq!(h.get("/v1/rounds/1").await["closeReason"], "deadline");
    let (s, v) = h.call(Method::GET, "/v1/rounds/current", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_open_round"))
    );
}

/// Times that cannot be: a duration whose deadline overflows, a changed deadline in the past.
/// Each is a 400 with the JSON body, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_deadlines_are_refused() {
    let h = Harness::new(Backend::Sqlite, |_| {}).await.unwrap();
    for seconds in [9.3e15, 1e300] {
        let mut body = round_body(1, None);
        body["durationSeconds"] = json!(seconds);
        let (s, v) = h
            .call(
                Method::POST,
                "/v1/admin/rounds",
                Some(ADMIN_KEY),
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["code"], "invalid_round_config");
        assert!(v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"));
    }
    assert_eq!(h.get("/v1/rounds").await["rounds"], json!([]));
    let round = h.open_round(round_body(1, None)).await;
    let (s, v) = h
        .call(
            Method::PATCH,
            "/v1/admin/rounds/1",
            Some(ADMIN_KEY),
            Some(json!({ "deadline": 1000 })),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("in the past"));
    assert_eq!(h.get("/v1/rounds/1").await, round, "unchanged");
}
