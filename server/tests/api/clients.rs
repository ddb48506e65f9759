//! Clients in a browser: static pages, ETags, beacons (token in the query), JSON 404s.

use crate::harness::*;

on_both_backends!(
    browser_sync_support,
    revocation_by_client_and_by_deployment,
    refresh_never_outlives_the_session,
);

/// Tokens expire no later than `session_max_age` after registration, however often they are
/// refreshed; a token from before a shorter setting is refused at refresh (the page registers
/// again).
async fn refresh_never_outlives_the_session(backend: Backend) {
    let hour = Duration::from_secs(3600);
    let Some(mut h) = Harness::new(backend, |c| {
        c.token_ttl = 24 * hour;
        c.session_max_age = 2 * hour;
    })
    .await
    else {
        return;
    };
    let (s, bytes) = h
        .raw(
            Method::POST,
            "/v1/clients/register",
            &[("x-feedloop-deployment-key", DEPLOYMENT_KEY)],
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let grant: Value = serde_json::from_slice(&bytes).unwrap();
    let registered = grant["issuedAt"].as_i64().unwrap();
    let session_end = registered + 2 * 3_600_000;
    assert_eq!(grant["expiresAt"].as_i64().unwrap(), session_end, "{grant}");
    let token = grant["token"].as_str().unwrap().to_string();
    let (s, refreshed) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(refreshed["expiresAt"].as_i64().unwrap(), session_end);

    // The operator shortens sessions: the still-unexpired token cannot be renewed.
    h.config.session_max_age = Duration::from_millis(1);
    h.restart().await;
    let (s, v) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&token), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("register again"),
        "{v}"
    );
    // Registering again is the way back (a new client id).
    h.register().await;
}

/// A revoked client's token is refused everywhere it is taken (refresh, reports, uploads) while
/// other clients go on; revoking twice keeps the first time and logs once; an unknown client is
/// 404; removing a deployment from the configuration refuses all of its tokens.
async fn revocation_by_client_and_by_deployment(backend: Backend) {
    let Some(mut h) = Harness::new(backend, |_| {}).await else {
        return;
    };
    let (revoked, kept) = (h.register().await, h.register().await);
    let client_id = token_client_id(&h, &revoked).await;
    let path = format!("/v1/admin/clients/{client_id}/revoke");
    let (s, first) = h.call(Method::POST, &path, Some(ADMIN_KEY), None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, again) = h.call(Method::POST, &path, Some(ADMIN_KEY), None).await;
    assert_eq!(
        (s, &again["revokedAt"]),
        (StatusCode::OK, &first["revokedAt"])
    );
    let (s, v) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&revoked), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]["message"].as_str().unwrap().contains("revoked"),
        "{v}"
    );
    let (s, _) = h
        .call(
            Method::POST,
            "/v1/feedback",
            Some(&revoked),
            Some(json!({ "modelVersion": "1", "bit": true })),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&kept), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, audit) = h
        .call(Method::GET, "/v1/admin/audit", Some(ADMIN_KEY), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let revocations = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "client.revoke")
        .count();
    assert_eq!(revocations, 1);
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/clients/0123456789abcdef0123456789abcdef/revoke",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_such_client"))
    );
    let (s, v) = h
        .call(
            Method::POST,
            "/v1/admin/clients/nobody/revoke",
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_id"))
    );

    // The site's deployment removed from the configuration (another site's stays).
    h.config.deployment_keys = vec![feedloop_server::DeploymentKey {
        deployment: "other".into(),
        key: "other-site-key-0123456789".into(),
    }];
    h.restart().await;
    let (s, v) = h
        .call(Method::POST, "/v1/clients/refresh", Some(&kept), None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no longer configured"),
        "{v}"
    );
}

/// What the browser client relies on: an automatic round that reopens on the new version, the
/// model's ETag, `sendBeacon`'s query-parameter token, and the dashboard's static files.
async fn browser_sync_support(backend: Backend) {
    let site = std::env::temp_dir().join(unique("feedloop-static"));
    std::fs::create_dir_all(site.join("dashboard")).unwrap();
    std::fs::write(site.join("dashboard/index.html"), "<h1>dash</h1>").unwrap();
    let dir = site.clone();
    let Some(h) = Harness::new(backend, move |c| {
        c.static_dir = Some(dir);
        c.auto_round = Some(serde_json::from_value(round_body(2, Some(2))).unwrap());
    })
    .await
    else {
        return;
    };
    // Dotfiles, and files a symlink leads to outside the folder, are never served.
    std::fs::write(site.join(".env"), "SECRET=1").unwrap();
    std::fs::create_dir_all(site.join(".git")).unwrap();
    std::fs::write(site.join(".git/config"), "[core]").unwrap();
    let outside = std::env::temp_dir().join(unique("feedloop-outside"));
    std::fs::write(&outside, "outside the static folder").unwrap();
    #[cfg(unix)]
    std::os::unix::fs::symlink(&outside, site.join("linked.txt")).unwrap();
    for path in [
        "/.env",
        "/.git/config",
        "/%2eenv",
        "/dashboard/../.env",
        "/linked.txt",
    ] {
        let (s, body) = h.raw(Method::GET, path, &[], vec![]).await;
        assert_eq!(
            s,
            StatusCode::NOT_FOUND,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(!String::from_utf8_lossy(&body).contains("SECRET"));
    }
    let _ = std::fs::remove_file(&outside);
    // Every answer: security headers and a request id (the caller's, or a new one).
    let response = h
        .router
        .clone()
        .oneshot(
            Request::get("/dashboard/")
                .header("x-request-id", "trace-me-42")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let headers = response.headers();
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert_eq!(headers["content-security-policy"], "frame-ancestors 'none'");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["x-request-id"], "trace-me-42");
    let response = h
        .router
        .clone()
        .oneshot(Request::get("/healthz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"].len(), 36, "a UUID");

    // The ONNX file: an ETag of its recorded digest, cached for good, 304 on a match.
    let response = h
        .router
        .clone()
        .oneshot(
            Request::get("/v1/models/1/model.onnx")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.starts_with("\"sha256-"), "{etag}");
    assert!(response.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let (s, body) = h
        .raw(
            Method::GET,
            "/v1/models/1/model.onnx",
            &[("if-none-match", &etag)],
            vec![],
        )
        .await;
    assert_eq!((s, body.len()), (StatusCode::NOT_MODIFIED, 0));

    // Static files outside /v1; unknown paths stay JSON 404s.
    let (s, page) = h.raw(Method::GET, "/dashboard/", &[], vec![]).await;
    assert_eq!(
        (s, page.as_slice()),
        (StatusCode::OK, &b"<h1>dash</h1>"[..])
    );
    let (s, v) = h.call(Method::GET, "/nothing-here", None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("no_such_route"))
    );
    // What a first ranking downloads: the wasm and the model with their types; a content-hashed
    // name cached for good, anything else revalidated; a precompressed `.br` beside a file sent
    // to a browser that accepts brotli.
    std::fs::create_dir_all(site.join("assets")).unwrap();
    std::fs::write(site.join("assets/feedloop_bg.0123abcd.wasm"), b"\0asm wasm").unwrap();
    std::fs::write(
        site.join("assets/feedloop_bg.0123abcd.wasm.br"),
        b"brotli bytes",
    )
    .unwrap();
    std::fs::write(site.join("assets/feedloop-default.89abcdef.onnx"), b"onnx").unwrap();
    let get = |path: &'static str, encoding: Option<&'static str>| {
        let router = h.router.clone();
        async move {
            let mut request = Request::get(path);
            if let Some(encoding) = encoding {
                request = request.header("accept-encoding", encoding);
            }
            let response = router
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let (parts, body) = response.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
            let header = |name: &str| {
                parts
                    .headers
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            (
                parts.status,
                header("content-type"),
                header("cache-control"),
                header("content-encoding"),
                body.to_vec(),
            )
        }
    };
    let (s, kind, cache, encoding, body) = get("/assets/feedloop_bg.0123abcd.wasm", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(kind.as_deref(), Some("application/wasm"));
    assert_eq!(
        cache.as_deref(),
        Some("public, max-age=31536000, immutable")
    );
    assert_eq!((encoding, body.as_slice()), (None, &b"\0asm wasm"[..]));
    let (s, kind, _, encoding, body) =
        get("/assets/feedloop_bg.0123abcd.wasm", Some("gzip, br")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(kind.as_deref(), Some("application/wasm"));
    assert_eq!(
        (encoding.as_deref(), body.as_slice()),
        (Some("br"), &b"brotli bytes"[..])
    );
    let (s, kind, cache, _, _) = get("/assets/feedloop-default.89abcdef.onnx", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(kind.as_deref(), Some("application/octet-stream"));
    assert!(cache.unwrap().contains("immutable"));
    let (s, _, cache, _, _) = get("/dashboard/", None).await;
    assert_eq!((s, cache.as_deref()), (StatusCode::OK, Some("no-cache")));

    let round = h.app.ensure_auto_round().await.unwrap().expect("opened");
    assert!(
        h.app.ensure_auto_round().await.unwrap().is_none(),
        "one at a time"
    );
    let round = json!({ "roundId": round.round_id.to_string() });

    // The model's ETag: unchanged → 304 with no body.
    let (s, etag_body) = h.raw(Method::GET, "/v1/models/current", &[], vec![]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        serde_json::from_slice::<Value>(&etag_body).unwrap()["version"],
        "1"
    );
    let (s, body) = h
        .raw(
            Method::GET,
            "/v1/models/current",
            &[("if-none-match", "\"model-1\"")],
            vec![],
        )
        .await;
    assert_eq!((s, body.len()), (StatusCode::NOT_MODIFIED, 0));

    // A beacon: token and model version in the query, no headers.
    let token = h.register().await;
    let path = format!("/v1/rounds/{}/updates", round["roundId"].as_str().unwrap());
    let beacon = format!("{path}?access_token={token}&modelVersion=1");
    let (s, _) = h
        .raw(Method::POST, &beacon, &[], privatized(1, HEAD_D).to_bytes())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // The same beacon again is a duplicate; a bad query is a JSON 400; no token is a 401.
    let (s, body) = h
        .raw(Method::POST, &beacon, &[], privatized(1, HEAD_D).to_bytes())
        .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate_update"))
    );
    let (s, body) = h
        .raw(
            Method::POST,
            &format!("{path}?nonsense=1"),
            &[],
            privatized(2, HEAD_D).to_bytes(),
        )
        .await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (s, _) = h
        .raw(Method::POST, &path, &[], privatized(2, HEAD_D).to_bytes())
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h.get(&path.replace("/updates", "")).await["received"], 1);

    // The second update reaches the target: version 2 is published and the next round opens on it.
    let token = h.register().await;
    let (s, v) = h
        .submit(&token, &round, Some("1"), privatized(3, HEAD_D).to_bytes())
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["roundClosed"]["status"], "published");
    // Reopened at once by the close itself, not at the next deadline poll.
    let next = h.get("/v1/rounds/current").await;
    assert_eq!(
        (next["roundId"].as_str(), next["modelVersion"].as_str()),
        (Some("2"), Some("2"))
    );
    let (s, _) = h
        .raw(
            Method::GET,
            "/v1/models/current",
            &[("if-none-match", "\"model-1\"")],
            vec![],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "a new version invalidates the ETag");
    let _ = std::fs::remove_dir_all(site);
}

/// A page on another origin may sync only when its origin is configured (`--cors-origin`): the
/// preflight for registration is answered with that origin and the headers the client sends, the
/// ETag is readable; any other origin gets no CORS headers (the browser blocks it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_allows_the_configured_origins_only() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    const SHOP: &str = "https://shop.example.com";
    let h = Harness::new(Backend::Sqlite, |c| c.cors_origins = vec![SHOP.into()])
        .await
        .unwrap();
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri("/v1/clients/register")
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "x-feedloop-deployment-key",
            )
            .body(Body::empty())
            .unwrap()
    };
    let ok = h.router.clone().oneshot(preflight(SHOP)).await.unwrap();
    assert!(ok.status().is_success(), "{}", ok.status());
    let headers = ok.headers();
    assert_eq!(headers["access-control-allow-origin"], SHOP);
    let allowed = headers["access-control-allow-headers"].to_str().unwrap();
    assert!(allowed.contains("x-feedloop-deployment-key"), "{allowed}");
    assert!(allowed.contains("authorization") && allowed.contains("x-feedloop-model-version"));
    assert_eq!(headers["access-control-max-age"], "3600");
    let other = h
        .router
        .clone()
        .oneshot(preflight("https://evil.example.com"))
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let get = Request::builder()
        .uri("/v1/models/current")
        .header("origin", SHOP)
        .body(Body::empty())
        .unwrap();
    let answer = h.router.clone().oneshot(get).await.unwrap();
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.headers()["access-control-allow-origin"], SHOP);
    assert!(answer.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("etag"));

    // Without a configured origin, no CORS headers at all (same-origin pages need none).
    let plain = Harness::new(Backend::Sqlite, |_| {}).await.unwrap();
    let none = plain.router.clone().oneshot(preflight(SHOP)).await.unwrap();
    assert!(none.headers().get("access-control-allow-origin").is_none());
}

/// Token answers are not cached; a malformed query is a JSON 400 like every other refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_not_cached_and_bad_queries_answer_json() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let h = Harness::new(Backend::Sqlite, |_| {}).await.unwrap();
    let register = Request::builder()
        .method(Method::POST)
        .uri("/v1/clients/register")
        .header("x-feedloop-deployment-key", DEPLOYMENT_KEY)
        .body(Body::empty())
        .unwrap();
    let answer = h.router.clone().oneshot(register).await.unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    assert_eq!(answer.headers()["cache-control"], "no-store");
    for path in ["/v1/rounds?limit=abc", "/v1/admin/audit?limit=-x"] {
        let (s, v) = h.call(Method::GET, path, Some(ADMIN_KEY), None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {v}");
        assert_eq!(v["error"]["code"], "invalid_query", "{path}: {v}");
    }
}
