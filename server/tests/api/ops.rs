//! Operations and admin authentication: health, metrics, the admin API's keys, a real listener.

use crate::harness::*;

on_both_backends!(service_endpoints_and_admin_auth,);

async fn service_endpoints_and_admin_auth(backend: Backend) {
    let Some(h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    assert_eq!(h.get("/healthz").await["status"], "ok");
    let (s, m) = h.raw(Method::GET, "/metrics", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    let m = String::from_utf8(m).unwrap();
    assert!(m.contains("# TYPE feedloop_updates_accepted_total counter"));
    assert!(m.contains("feedloop_current_model_version 1"));
    // Every route is in the OpenAPI document.
    let doc = h.get("/openapi.json").await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (path, method) in [
        ("/healthz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/v1/clients/register", "post"),
        ("/v1/clients/refresh", "post"),
        ("/v1/rounds", "get"),
        ("/v1/rounds/current", "get"),
        ("/v1/rounds/{roundId}", "get"),
        ("/v1/rounds/{roundId}/updates", "post"),
        ("/v1/models", "get"),
        ("/v1/models/current", "get"),
        ("/v1/models/{version}", "get"),
        ("/v1/models/{version}/model.onnx", "get"),
        ("/v1/feedback", "post"),
        ("/v1/feedback/kinds", "post"),
        ("/v1/stats", "get"),
        ("/v1/admin/rounds", "post"),
        ("/v1/admin/rounds/{roundId}", "patch"),
        ("/v1/admin/rounds/{roundId}/close", "post"),
        ("/v1/admin/rollback", "post"),
        ("/v1/admin/audit", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from OpenAPI"
        );
    }
    // Unknown route and method: JSON errors.
    let (s, _) = h.call(Method::GET, "/nope", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call(Method::DELETE, "/v1/stats", None, None).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
    // Token refresh keeps the client id.
    let token = h.register().await;
    let (s, v) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["token"].is_string());
    // Admin: bad JSON, invalid configuration, one open round at a time, round changes audited.
    let (s, v) = h
        .raw(
            Method::POST,
            "/v1/admin/rounds",
            &[("authorization", &format!("Bearer {ADMIN_KEY}"))],
            b"{".to_vec(),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&v)
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rounds",
            Some(ADMIN_KEY),
            Some(json!({"clipNorm": 1.0, "granularity": 0.5, "noiseStddev": 1.0, "minCohort": 2})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_round_config"))
    );
    let (s, _) = h
        .call(Method::POST, "/v1/admin/rounds", Some(ADMIN_KEY), Some(json!({"clipNorm": C, "granularity": GAMMA, "noiseStddev": SIGMA, "minCohort": 2, "dimension": 64})))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    h.open_round(round_body(2, None)).await;
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/rounds",
            Some(ADMIN_KEY),
            Some(round_body(2, None)),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("round_already_open"))
    );
    let (s, v) = h
        .call(
            Method::PATCH,
            "/v1/admin/rounds/1",
            Some(ADMIN_KEY),
            Some(json!({"minCohort": 5, "targetCount": 10})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (v["minCohort"].as_i64(), v["targetCount"].as_i64()),
        (Some(5), Some(10))
    );
    let (_, audit) = h
        .call(Method::GET, "/v1/admin/audit", Some(ADMIN_KEY), None)
        .await;
    let change = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "round.update")
        .unwrap()
        .clone();
    assert_eq!(change["details"]["before"]["minCohort"], 2);
    assert_eq!(change["details"]["after"]["minCohort"], 5);
    // Clients cannot use admin endpoints with their token.
    let (s, _) = h
        .call(Method::POST, "/v1/admin/rounds/1/close", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

/// A real listener on 127.0.0.1:0 with reqwest, the TCP peer as the rate limits' address, and
/// graceful shutdown (SQLite only: the transport does not depend on the backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_listener_serves_and_shuts_down_gracefully() {
    let h = Harness::new(Backend::Sqlite, |c| {
        c.register_rate = feedloop_server::rate_limit::RateLimit {
            per_minute: 1,
            burst: 2,
        };
        // Configured but not sent (a request that bypassed the balancer): the peer still counts.
        c.client_ip_header = Some(axum::http::HeaderName::from_static("x-forwarded-for"));
    })
    .await
    .unwrap();
    let (addr, tx, server) = listen(&h).await;
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("http://{addr}/v1/clients/register"))
        .header("x-feedloop-deployment-key", DEPLOYMENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    assert!(v["token"].as_str().unwrap().starts_with("v1."));
    // The peer (127.0.0.1) is the address the limit counts: the burst of 2, then 429.
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let r = client
            .post(format!("http://{addr}/v1/clients/register"))
            .header("x-feedloop-deployment-key", DEPLOYMENT_KEY)
            .send()
            .await
            .unwrap();
        statuses.push(r);
    }
    assert_eq!(statuses[0].status(), 201);
    assert_eq!(statuses[1].status(), 429);
    assert!(statuses[1].headers().contains_key("retry-after"));
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops after the shutdown signal")
        .unwrap()
        .unwrap();
    assert!(client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .is_err());
}

/// Weak secrets are refused at start: an admin key under 16 characters, a token secret under
/// 32 bytes (an unset secret is generated).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weak_secrets_are_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("feedloop-weak-{}", std::process::id()));
    let url = format!("sqlite://{}/feedloop.db", dir.display());
    let mut config = Config::new(url.clone());
    config.admin_keys = vec!["x".into()];
    let err = App::new(config)
        .await
        .err()
        .expect("a 1-character admin key is refused");
    assert!(err.to_string().contains("at least 16 characters"), "{err}");
    let mut config = Config::new(url.clone());
    config.token_secret = Some(b"a".to_vec());
    let err = App::new(config)
        .await
        .err()
        .expect("a 1-byte token secret is refused");
    assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    let mut config = Config::new(url);
    config.admin_keys = vec!["admin-key-0123456789".into()];
    config.token_secret = Some([7u8; 32].to_vec());
    assert!(App::new(config).await.is_ok());
    let _ = std::fs::remove_dir_all(dir);
}

/// A client that sends its request header one byte at a time, slower than the header-read
/// timeout, is disconnected (it cannot hold a connection, and with it one of the connection
/// slots, forever); an honest request on another connection is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::new(Backend::Sqlite, |c| {
        c.header_read_timeout = Duration::from_millis(500);
        c.max_connections = 4;
    })
    .await
    .unwrap();
    let (addr, tx, server) = listen(&h).await;
    let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut closed = false;
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        .iter()
        .cycle()
        .take(64)
    {
        if slow.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut buf = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(
        closed,
        "a 6.4 s trickle of header bytes outlived a 0.5 s header timeout"
    );
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();
}

on_both_backends!(rate_limits_answer_429_per_address,);

/// Registrations and admin requests are limited per address (here taken from `x-forwarded-for`,
/// as behind a load balancer): past the burst a 429 with `Retry-After` and the JSON error body,
/// before any handler runs; other addresses are unaffected.
async fn rate_limits_answer_429_per_address(backend: Backend) {
    use feedloop_server::rate_limit::RateLimit;
    let Some(h) = Harness::new(backend, |c| {
        c.register_rate = RateLimit {
            per_minute: 1,
            burst: 3,
        };
        c.admin_rate = RateLimit {
            per_minute: 1,
            burst: 4,
        };
        c.client_ip_header = Some(axum::http::HeaderName::from_static("x-forwarded-for"));
    })
    .await
    else {
        return;
    };
    let register = |from: &'static str| {
        let h = &h;
        async move {
            h.raw(
                Method::POST,
                "/v1/clients/register",
                &[
                    ("x-feedloop-deployment-key", DEPLOYMENT_KEY),
                    ("x-forwarded-for", from),
                ],
                vec![],
            )
            .await
        }
    };
    for _ in 0..3 {
        assert_eq!(register("203.0.113.7").await.0, StatusCode::CREATED);
    }
    // The balancer appends the real peer last: a client cannot dodge the limit with its own entry.
    let (s, body) = register("198.51.100.1, 203.0.113.7").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    assert_eq!(register("198.51.100.2").await.0, StatusCode::CREATED);
    let limited = h
        .router
        .clone()
        .oneshot(
            Request::post("/v1/clients/register")
                .header("x-feedloop-deployment-key", DEPLOYMENT_KEY)
                .header("x-forwarded-for", "203.0.113.7")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");

    // Admin: every request counts before the key is checked, so once an address is blocked even
    // the right key gets 429 — a guesser cannot tell a hit.
    let admin = |key: &'static str, from: &'static str| {
        let h = &h;
        async move {
            let bearer = format!("Bearer {key}");
            h.raw(
                Method::GET,
                "/v1/admin/audit",
                &[("authorization", &bearer), ("x-forwarded-for", from)],
                vec![],
            )
            .await
            .0
        }
    };
    for _ in 0..4 {
        assert_eq!(
            admin("wrong-key-0123456789", "192.0.2.9").await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        admin(ADMIN_KEY, "192.0.2.9").await,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(admin(ADMIN_KEY, "192.0.2.10").await, StatusCode::OK);
}

/// `serve` on 127.0.0.1:0: its address, the shutdown trigger and the server task.
async fn listen(
    h: &Harness,
) -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(feedloop_server::serve(h.app.clone(), listener, async {
        let _ = rx.await;
    }));
    (addr, tx, server)
}
