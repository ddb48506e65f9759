//! The hostile battery: every documented operation called with hostile path ids, credentials,
//! headers and bodies. Each answer must be a documented status (the harness checks it against
//! the OpenAPI document) that is not a server error, every error must be the JSON error body, and
//! a dump of every table taken before and after must be identical — a refused request changes
//! nothing. Then the same server still takes a valid update. Plus the answers no handler writes:
//! 408, 413, 414, 431 and malformed path segments, each the JSON error body.

use crate::harness::*;

on_both_backends!(
    hostile_requests_change_nothing,
    errors_outside_the_handlers_are_json,
    the_lineage_stays_linear
);

/// Every table, each row as one text line (columns cast to text; NULL spelled out), sorted.
async fn dump(h: &Harness) -> Vec<String> {
    const TABLES: [(&str, &str); 9] = [
        ("settings", "key, value"),
        ("clients", "client_id, deployment, created_at, revoked_at"),
        (
            "model_versions",
            "version, parent_version, round_id, head, onnx_sha256, optimizer, cohort_size, \
             clip_norm, granularity, noise_stddev, rho, epsilon, delta, created_at, flagged, \
             flag_reason, flagged_at",
        ),
        (
            "rounds",
            "round_id, model_version, dimension, clip_norm, granularity, noise_stddev, \
             min_cohort, target_count, deadline, status, received, rho, epsilon, delta, \
             created_at, closed_at, close_reason, cohort_size, published_version",
        ),
        (
            "updates",
            "round_id, client_id, payload, payload_sha256, received_at",
        ),
        ("rr_reports", "model_version, client_id, bit, received_at"),
        (
            "star_reports",
            "model_version, client_id, stars, received_at",
        ),
        ("optimizer_state", "deployment, kind, state, updated_at"),
        ("audit_log", "id, at, admin_fingerprint, action, details"),
    ];
    let mut rows = Vec::new();
    for (table, columns) in TABLES {
        let line = columns
            .split(',')
            .map(|c| format!("COALESCE(CAST({} AS TEXT), 'NULL')", c.trim()))
            .collect::<Vec<_>>()
            .join(" || '|' || ");
        let lines: Vec<String> = sqlx::query_scalar(&format!("SELECT {line} FROM {table}"))
            .fetch_all(h.app.store().pool())
            .await
            .unwrap();
        rows.extend(lines.into_iter().map(|l| format!("{table}: {l}")));
    }
    rows.sort();
    rows
}

const HOSTILE_IDS: [&str; 10] = [
    "0",
    "-1",
    "9223372036854775807",
    "9223372036854775808",
    "1e3",
    "%FF",
    "%00",
    "..%2F..%2Fetc%2Fpasswd",
    "1%20OR%201%3D1",
    "%27%3B%20DROP%20TABLE%20rounds%3B--",
];

/// Bodies that are not what any operation takes (never `{}`, which is a valid empty change).
fn hostile_bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("empty", vec![]),
        ("truncated", b"{\"version\":".to_vec()),
        ("array", b"[1,2,3]".to_vec()),
        (
            "wrong types",
            br#"{"version": [], "minCohort": "x", "bit": 3}"#.to_vec(),
        ),
        (
            "nested",
            format!("{}{}", "[".repeat(5000), "]".repeat(5000)).into_bytes(),
        ),
        ("not utf-8", vec![0xff, 0xfe, 0x00, 0x81]),
        ("too large", vec![b' '; 70 * 1024]),
    ]
}

async fn hostile_requests_change_nothing(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    // State worth protecting: a published version, an open round holding an update, a report.
    let (_, _) = publish_one_round(&h, "1", 0..2).await;
    let round = h.open_round(round_body(5, None)).await;
    let token = h.register().await;
    let (s, v) = h
        .submit(&token, &round, Some("2"), privatized(7, HEAD_D).to_bytes())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
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
            Some(json!({ "modelVersion": "2", "stars": 4 })),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let before = dump(&h).await;

    let admin = format!("Bearer {ADMIN_KEY}");
    let client = format!("Bearer {token}");
    let forged = format!("Bearer {}x", &token[..token.len() - 1]);
    let credentials: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("authorization", "Bearer ")],
        vec![("authorization", forged.as_str())],
        vec![("authorization", "Basic YWRtaW46YWRtaW4=")],
        vec![("authorization", client.as_str())],
        vec![("authorization", admin.as_str())],
        vec![("x-feedloop-deployment-key", "site-key-guess-0000000000")],
    ];
    let mut answered = 0;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    for operation in documented_operations() {
        let (method, template) = operation.split_once(' ').unwrap();
        let method: Method = method.parse().unwrap();
        let mut paths = Vec::new();
        if template.contains('{') {
            for id in HOSTILE_IDS {
                let mut path = String::new();
                for segment in template.split('/').filter(|s| !s.is_empty()) {
                    path.push('/');
                    path.push_str(if segment.starts_with('{') {
                        id
                    } else {
                        segment
                    });
                }
                paths.push(path);
            }
        } else {
            paths.push(template.to_string());
            paths.push(format!(
                "{template}?limit=-1&access_token=x&modelVersion=%FF"
            ));
        }
        for path in &paths {
            for headers in &credentials {
                for (what, body) in hostile_bodies() {
                    let mut headers = headers.clone();
                    headers.push(("content-type", "application/json"));
                    let (status, bytes) = h.raw(method.clone(), path, &headers, body).await;
                    answered += 1;
                    *statuses.entry(status.as_u16()).or_default() += 1;
                    assert!(
                        !status.is_server_error(),
                        "{method} {path} ({what} body, {headers:?}): {status} {}",
                        String::from_utf8_lossy(&bytes)
                    );
                    if !status.is_success() && status != StatusCode::NOT_MODIFIED {
                        let v: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                            panic!("{method} {path} ({what}): {status} is not JSON")
                        });
                        assert!(v["error"]["code"].is_string(), "{method} {path}: {v}");
                    }
                }
            }
        }
    }
    let after = dump(&h).await;
    if before != after {
        let gone: Vec<_> = before.iter().filter(|r| !after.contains(r)).collect();
        let new: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
        panic!("hostile requests changed the database:\n- {gone:?}\n+ {new:?}");
    }
    eprintln!("hostile battery ({backend:?}): {answered} requests, statuses {statuses:?}");
    assert!(answered > 1000);

    // The server is still fine: a new client's valid update is stored.
    let other = h.register().await;
    let (s, v) = h
        .submit(&other, &round, Some("2"), privatized(8, HEAD_D).to_bytes())
        .await;
    assert_eq!((s, v["received"].as_i64()), (StatusCode::ACCEPTED, Some(2)));
}

async fn errors_outside_the_handlers_are_json(backend: Backend) {
    let Some(h) = Harness::new(backend, |c| {
        c.request_timeout = Duration::from_millis(300);
    })
    .await
    else {
        return;
    };
    let expect = |status: StatusCode, bytes: &[u8], want: StatusCode, code: &str| {
        let v: Value = serde_json::from_slice(bytes)
            .unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(bytes)));
        assert_eq!(
            (status, v["error"]["code"].as_str()),
            (want, Some(code)),
            "{v}"
        );
    };

    // A path segment that is not UTF-8 (axum's Path rejection).
    let (s, b) = h.raw(Method::GET, "/v1/rounds/%FF", &[], vec![]).await;
    expect(s, &b, StatusCode::BAD_REQUEST, "bad_request");

    // A request target longer than the API takes.
    let long = format!("/v1/rounds?limit=1&x={}", "a".repeat(9000));
    let (s, b) = h.raw(Method::GET, &long, &[], vec![]).await;
    expect(s, &b, StatusCode::URI_TOO_LONG, "uri_too_long");

    // Too many header bytes.
    let value = "v".repeat(1000);
    let names: Vec<String> = (0..40).map(|i| format!("x-junk-{i}")).collect();
    let headers: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), value.as_str())).collect();
    let (s, b) = h.raw(Method::GET, "/healthz", &headers, vec![]).await;
    expect(
        s,
        &b,
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
    );

    // A body over the limit.
    let token = h.register().await;
    let bearer = format!("Bearer {token}");
    let (s, b) = h
        .raw(
            Method::POST,
            "/v1/feedback",
            &[
                ("authorization", bearer.as_str()),
                ("content-type", "application/json"),
            ],
            vec![b' '; 80 * 1024],
        )
        .await;
    expect(s, &b, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    // A body that never finishes: the request timeout answers 408 (tower-http's, now JSON).
    let (_sender, stalled) =
        http_body_util::channel::Channel::<axum::body::Bytes, std::io::Error>::new(1);
    let request = Request::builder()
        .method(Method::POST)
        .uri("/v1/feedback")
        .header("authorization", bearer.as_str())
        .header("content-type", "application/json")
        .body(Body::new(stalled))
        .unwrap();
    let response = h.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    expect(
        status,
        &bytes,
        StatusCode::REQUEST_TIMEOUT,
        "request_timeout",
    );
}

/// Ids are assigned inside the transactions, one round is open at a time, a rollback and a close
/// order their locks the same way, a round never publishes on a parent that stopped being current,
/// and starting twice on one database bootstraps once.
async fn the_lineage_stays_linear(backend: Backend) {
    let Some(mut h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    // A second process on the same database, started at the same time as a third.
    let (a, b) = tokio::join!(App::new(h.config.clone()), App::new(h.config.clone()));
    a.unwrap();
    b.unwrap();
    h.restart().await;
    assert_eq!(
        h.get("/v1/models").await["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Two admins open a round at once: one wins, the other is told (409, not a 500).
    let body = round_body(1, None).to_string();
    let bearer = format!("Bearer {ADMIN_KEY}");
    let other = App::new(h.config.clone()).await.unwrap();
    let other_router = feedloop_server::app(other);
    let request = |router: Router| {
        let body = body.clone();
        let bearer = bearer.clone();
        async move {
            let req = Request::builder()
                .method(Method::POST)
                .uri("/v1/admin/rounds")
                .header("authorization", bearer)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            router.oneshot(req).await.unwrap().status()
        }
    };
    let (x, y) = tokio::join!(request(h.router.clone()), request(other_router));
    let mut got = [x, y];
    got.sort();
    assert_eq!(got, [StatusCode::CREATED, StatusCode::CONFLICT]);

    // A round whose base version stopped being current publishes nothing.
    let round = h.get("/v1/rounds/current").await;
    let token = h.register().await;
    let (s, v) = h
        .submit(&token, &round, Some("1"), privatized(1, HEAD_D).to_bytes())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let mut tx = h.app.store().begin().await.unwrap();
    sqlx::query("UPDATE settings SET value = '7' WHERE key = 'current_version'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let round_id = round["roundId"].as_str().unwrap();
    let (s, closed) = h
        .call(
            Method::POST,
            &format!("/v1/admin/rounds/{round_id}/close"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "aborted", "{closed}");
    assert_eq!(
        h.get("/v1/models").await["versions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let mut tx = h.app.store().begin().await.unwrap();
    sqlx::query("UPDATE settings SET value = '1' WHERE key = 'current_version'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    // A close and a rollback racing on two processes: no deadlock, no error, one linear lineage.
    publish_one_round(&h, "1", 0..1).await;
    for attempt in 0..5 {
        let current = h.get("/v1/models").await["current"]
            .as_str()
            .unwrap()
            .to_string();
        let round = h.open_round(round_body(1, None)).await;
        let token = h.register().await;
        let (s, v) = h
            .submit(
                &token,
                &round,
                Some(&current),
                privatized(attempt, HEAD_D).to_bytes(),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let round_id = round["roundId"].as_str().unwrap().to_string();
        let replica = feedloop_server::app(App::new(h.config.clone()).await.unwrap());
        let close = {
            let bearer = bearer.clone();
            let router = h.router.clone();
            async move {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri(format!("/v1/admin/rounds/{round_id}/close"))
                    .header("authorization", bearer)
                    .body(Body::empty())
                    .unwrap();
                router.oneshot(req).await.unwrap().status()
            }
        };
        let rollback = {
            let bearer = bearer.clone();
            async move {
                let req = Request::builder()
                    .method(Method::POST)
                    .uri("/v1/admin/rollback")
                    .header("authorization", bearer)
                    .header("content-type", "application/json")
                    .body(Body::from(json!({ "version": "1" }).to_string()))
                    .unwrap();
                replica.oneshot(req).await.unwrap().status()
            }
        };
        // Whichever runs second sees the other's result: a close after the rollback finds the
        // round aborted (409), a rollback to the version that is current is refused (409).
        let (closed, rolled) = tokio::join!(close, rollback);
        let fine = [StatusCode::OK, StatusCode::CONFLICT];
        assert!(
            fine.contains(&closed) && fine.contains(&rolled),
            "attempt {attempt}: close {closed}, rollback {rolled}"
        );
    }
    // Every version's parent is an earlier version, each published round made exactly one.
    let versions = h.get("/v1/models").await["versions"].clone();
    let mut seen = std::collections::BTreeSet::new();
    for v in versions.as_array().unwrap() {
        let id: i64 = v["version"].as_str().unwrap().parse().unwrap();
        if let Some(parent) = v["parentVersion"].as_str() {
            assert!(seen.contains(&parent.parse::<i64>().unwrap()), "{v}");
        }
        seen.insert(id);
    }
    let rounds = h.get("/v1/rounds?limit=100").await;
    let published: Vec<_> = rounds["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["publishedVersion"].as_str())
        .collect();
    let unique: std::collections::BTreeSet<_> = published.iter().collect();
    assert_eq!(unique.len(), published.len(), "{rounds}");
    assert_eq!(
        published.len() + 1,
        seen.len(),
        "one version per published round, plus v1"
    );
}
