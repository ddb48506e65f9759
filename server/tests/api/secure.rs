//! Secure rounds with two aggregators: the leader (the harness's in-process router) and a helper
//! (a second `App`, its own database and keys, served on a real loopback port), talking HTTP.
//! The device side is built here from `feedloop-secagg` exactly as a device builds it.

use feedloop_privacy::clip_to_lattice;
use feedloop_privacy::rng::OsCsprng;
use feedloop_secagg::{seal_report, HpkeKeyPair, HpkePublicKey, SecureRound};
use feedloop_server::{HelperPeer, HelperPolicy, Role};

use crate::harness::*;

on_both_backends!(
    a_secure_round_publishes_the_helper_noised_mean,
    invalid_reports_change_nothing_on_either_aggregator,
    a_report_resent_after_the_helper_was_down_counts_once,
    the_helper_keeps_its_own_terms_and_releases_once,
    the_helper_limits_only_failed_leader_calls,
);

pub(crate) const LEADER_TOKEN: &str = "leader-token-0123456789abcdef";
/// The helper's σ = z·C on the sum: small, so the published mean is checkable to 1e-3.
pub(crate) const HELPER_Z: f64 = 0.004;
pub(crate) const HELPER_MIN: u64 = 3;

pub(crate) struct Helper {
    pub(crate) harness: Harness,
    pub(crate) url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<()>>,
}

impl Helper {
    pub(crate) async fn start(backend: Backend) -> Option<Self> {
        Self::start_with(backend, |_| {}).await
    }

    async fn start_with(
        backend: Backend,
        tweak: impl FnOnce(&mut feedloop_server::Config),
    ) -> Option<Self> {
        let harness = Harness::new(backend, |c| {
            c.role = Role::Helper;
            c.deployment_keys.clear();
            c.admin_keys.clear();
            c.helper_policy = HelperPolicy {
                leader_tokens: vec![LEADER_TOKEN.into()],
                noise_multiplier: HELPER_Z,
                min_reports: HELPER_MIN,
            };
            tweak(c);
        })
        .await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mut helper = Self {
            harness,
            url,
            stop: None,
            served: None,
        };
        helper.serve(listener);
        Some(helper)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let app = self.harness.app.clone();
        self.served = Some(tokio::spawn(async move {
            feedloop_server::serve(app, listener, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        }));
        self.stop = Some(stop);
    }

    async fn down(&mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.served.take().unwrap().await.unwrap();
    }

    async fn up(&mut self) {
        let addr = self.url.trim_start_matches("http://").to_string();
        let listener = tokio::net::TcpListener::bind(&addr).await.unwrap();
        self.harness.restart().await;
        self.serve(listener);
    }

    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Value,
    ) -> (u16, Value) {
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(LEADER_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn reports(&self, round_id: &str) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM helper_reports WHERE round_id = $1")
            .bind(round_id.parse::<i64>().unwrap())
            .fetch_one(self.harness.app.store().pool())
            .await
            .unwrap()
    }
}

async fn leader(backend: Backend, helper: &Helper) -> Harness {
    let url = helper.url.clone();
    Harness::new(backend, move |c| {
        c.helper = Some(HelperPeer {
            url,
            token: LEADER_TOKEN.into(),
        });
    })
    .await
    .unwrap()
}

fn secure_body(min_cohort: i64, target: Option<i64>) -> Value {
    let mut body = round_body(min_cohort, target);
    body["aggregation"] = json!("secure");
    body
}

/// What a device does: check nothing here (the device's own checks are core's tests), round
/// under the published terms, shard and seal to the two published keys.
fn sealed(round: &Value, seed: u32) -> Vec<u8> {
    sealed_to(round, seed, None, None)
}

fn sealed_to(
    round: &Value,
    seed: u32,
    noise_told: Option<f64>,
    helper_key: Option<&HpkePublicKey>,
) -> Vec<u8> {
    let secure = &round["secure"];
    let sigma = noise_told.unwrap_or(round["noiseStddev"].as_f64().unwrap());
    let cfg = PrivatizerConfig::new(C, GAMMA, sigma).unwrap();
    let terms = SecureRound::for_privatizer(
        round["roundId"].as_str().unwrap().parse().unwrap(),
        HEAD_D,
        &cfg,
        secure["minReports"].as_u64().unwrap(),
    )
    .unwrap();
    let leader = HpkePublicKey::from_hex(secure["leaderKey"].as_str().unwrap()).unwrap();
    let helper = HpkePublicKey::from_hex(secure["helperKey"].as_str().unwrap()).unwrap();
    let mut rng = OsCsprng::new().unwrap();
    let lattice = clip_to_lattice(&delta(seed, HEAD_D), &cfg, &mut rng).unwrap();
    seal_report(
        lattice,
        &terms,
        &leader,
        helper_key.unwrap_or(&helper),
        &mut rng,
    )
    .unwrap()
    .to_bytes()
}

/// The round says how it aggregates and under whose terms; three devices' sealed reports close it
/// at its target and the published head is the base plus the FedAvg mean of their (clipped,
/// rounded) updates, give or take the helper's noise σ/n. Nothing the leader stored decodes as an
/// update.
async fn a_secure_round_publishes_the_helper_noised_mean(backend: Backend) {
    let Some(helper) = Helper::start(backend).await else {
        return;
    };
    let h = leader(backend, &helper).await;
    let info: Value = reqwest::get(format!("{}/v1/helper", helper.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Asked for a minimum of 2: the helper's own minimum (3) wins, and σ = max(asked, z·C).
    let round = h.open_round(secure_body(2, Some(3))).await;
    assert_eq!(round["aggregation"], "secure");
    assert_eq!(round["minCohort"], 3);
    assert_eq!(round["secure"]["minReports"], 3);
    assert_eq!(round["secure"]["helperFingerprint"], info["fingerprint"]);
    assert_eq!(round["secure"]["helperKey"], info["helperKey"]);
    let sigma = round["noiseStddev"].as_f64().unwrap();
    assert_eq!(sigma, SIGMA.max(HELPER_Z * C));
    let expected_rho = PrivatizerConfig::new(C, GAMMA, sigma).unwrap().rho();
    assert_eq!(round["privacy"]["rho"].as_f64().unwrap(), expected_rho);

    let base = round["modelVersion"].as_str().unwrap().to_string();
    let old = h.head(&base).await;
    let mut last = Value::Null;
    for seed in 0..3 {
        let token = h.register().await;
        let (status, ack) = h
            .submit(&token, &round, Some(&base), sealed(&round, seed))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
        last = ack;
    }
    assert_eq!(last["roundClosed"]["status"], "published", "{last}");
    let version = last["roundClosed"]["publishedVersion"].as_str().unwrap();
    let new = h.head(version).await;
    let expected: Vec<f32> = (0..HEAD_D)
        .map(|i| old[i] + (0..3).map(|s| delta(s, HEAD_D)[i]).sum::<f32>() / 3.0)
        .collect();
    // Rounding moves each coordinate by < γ, the helper's noise by σ/3 ≈ 1e-3 (6σ bound).
    assert_close(&new, &expected, (GAMMA + 6.0 * sigma / 3.0) as f32);
    assert_eq!(helper.reports(round["roundId"].as_str().unwrap()).await, 3);

    // The leader's rows: output shares, none of them an update.
    let payloads: Vec<String> = sqlx::query_scalar("SELECT payload FROM updates")
        .fetch_all(h.app.store().pool())
        .await
        .unwrap();
    assert_eq!(payloads.len(), 3);
    for p in payloads {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
        assert!(feedloop_privacy::decode_update(
            &bytes,
            &feedloop_privacy::ExpectedRound {
                config: PrivatizerConfig::new(C, GAMMA, sigma).unwrap(),
                dimension: HEAD_D,
            }
        )
        .is_err());
    }
}

/// Malformed, corrupted, misaddressed, misstated and replayed reports are 4xx with a JSON body,
/// and neither aggregator stores anything for them; a valid report after them is accepted.
async fn invalid_reports_change_nothing_on_either_aggregator(backend: Backend) {
    let Some(helper) = Helper::start(backend).await else {
        return;
    };
    let h = leader(backend, &helper).await;
    let round = h.open_round(secure_body(3, None)).await;
    let id = round["roundId"].as_str().unwrap().to_string();
    let base = round["modelVersion"].as_str().unwrap().to_string();
    let good = sealed(&round, 1);
    let mut corrupted = good.clone();
    let n = corrupted.len();
    corrupted[n - 5] ^= 0x40;
    let stranger = HpkeKeyPair::generate(&mut OsCsprng::new().unwrap());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("truncated", good[..good.len() / 2].to_vec()),
        ("corrupted ciphertext", corrupted),
        (
            "sealed to another helper",
            sealed_to(&round, 2, None, Some(stranger.public())),
        ),
        (
            "sealed under a σ the helper does not apply",
            sealed_to(&round, 3, Some(1.0), None),
        ),
        ("a local update", privatized(4, HEAD_D).to_bytes()),
    ];
    for (what, bytes) in cases {
        let token = h.register().await;
        let (status, body) = h.submit(&token, &round, Some(&base), bytes).await;
        assert!(status.is_client_error(), "{what}: {status} {body}");
        assert_eq!(h.get(&format!("/v1/rounds/{id}")).await["received"], 0);
        assert_eq!(helper.reports(&id).await, 0, "{what}");
    }
    let token = h.register().await;
    let (status, ack) = h.submit(&token, &round, Some(&base), good.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    // The same bytes again, from the same client and from another: refused, nothing changes.
    let other = h.register().await;
    for t in [&token, &other] {
        let (status, body) = h.submit(t, &round, Some(&base), good.clone()).await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
    }
    // A second report of the same client.
    let (status, _) = h
        .submit(&token, &round, Some(&base), sealed(&round, 9))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(h.get(&format!("/v1/rounds/{id}")).await["received"], 1);
    assert_eq!(helper.reports(&id).await, 1);
}

/// With the helper down a report is a 503 and nothing is stored; the device resends the same
/// bytes once it is back, and the report counts once. The helper's state survives its restart.
async fn a_report_resent_after_the_helper_was_down_counts_once(backend: Backend) {
    let Some(mut helper) = Helper::start(backend).await else {
        return;
    };
    let h = leader(backend, &helper).await;
    let round = h.open_round(secure_body(3, None)).await;
    let id = round["roundId"].as_str().unwrap().to_string();
    let base = round["modelVersion"].as_str().unwrap().to_string();
    let token = h.register().await;
    let report = sealed(&round, 5);
    helper.down().await;
    let (status, body) = h.submit(&token, &round, Some(&base), report.clone()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"]["code"], "helper_unavailable");
    assert_eq!(h.get(&format!("/v1/rounds/{id}")).await["received"], 0);
    helper.up().await;
    let (status, ack) = h.submit(&token, &round, Some(&base), report.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ack}");
    let (status, _) = h.submit(&token, &round, Some(&base), report).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(ack["received"], 1);
    assert_eq!(helper.reports(&id).await, 1);
}

/// The helper's API as a leader sees it: its policy raises what a task asks, other leaders are
/// refused, a batch below its minimum is not released, and a batch is released once — the same
/// request again gets the same bytes (no new noise), another batch of the round gets a 409.
async fn the_helper_keeps_its_own_terms_and_releases_once(backend: Backend) {
    let Some(helper) = Helper::start(backend).await else {
        return;
    };
    let h = leader(backend, &helper).await;
    let unauthorized = reqwest::Client::new()
        .put(format!("{}/v1/helper/tasks/77", helper.url))
        .bearer_auth("not-the-leader-token-0123")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthorized.status().as_u16(), 401);
    let task = json!({ "dimension": HEAD_D, "clipNorm": C, "granularity": GAMMA,
        "noiseStddev": 1e-4, "minReports": 1, "verifyKey": "ab".repeat(32) });
    let (status, terms) = helper
        .call(reqwest::Method::PUT, "/v1/helper/tasks/77", task.clone())
        .await;
    assert_eq!(status, 200, "{terms}");
    assert_eq!(terms["noiseStddev"].as_f64().unwrap(), HELPER_Z * C);
    assert_eq!(terms["minReports"], HELPER_MIN);
    let (status, again) = helper
        .call(reqwest::Method::PUT, "/v1/helper/tasks/77", task)
        .await;
    assert_eq!((status, &again), (200, &terms));
    // A leader's secure round without its helper configured is refused.
    let lone = Harness::new(backend, |_| {}).await.unwrap();
    let (status, body) = lone
        .call(
            Method::POST,
            "/v1/admin/rounds",
            Some(ADMIN_KEY),
            Some(secure_body(3, None)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"]["code"], "no_helper");

    // Through the leader: two reports, a collect below the minimum, then three and one release.
    let round = h.open_round(secure_body(3, None)).await;
    let id = round["roundId"].as_str().unwrap().to_string();
    let base = round["modelVersion"].as_str().unwrap().to_string();
    for seed in 0..2 {
        let token = h.register().await;
        let (status, _) = h
            .submit(&token, &round, Some(&base), sealed(&round, seed))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let shares: Vec<String> = sqlx::query_scalar("SELECT payload FROM updates ORDER BY client_id")
        .fetch_all(h.app.store().pool())
        .await
        .unwrap();
    let ids: Vec<String> = shares
        .iter()
        .map(|p| {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
            bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect();
    let collect = format!("/v1/helper/tasks/{id}/collect");
    let (status, body) = helper
        .call(reqwest::Method::POST, &collect, json!({ "reportIds": ids }))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "below_minimum");
    let (status, body) = helper
        .call(
            reqwest::Method::POST,
            &collect,
            json!({ "reportIds": ["00".repeat(16)] }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("unknown_report"))
    );
    let token = h.register().await;
    let (status, _) = h
        .submit(&token, &round, Some(&base), sealed(&round, 2))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, closed) = h
        .call(
            Method::POST,
            &format!("/v1/admin/rounds/{id}/close"),
            Some(ADMIN_KEY),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{closed}");
    assert_eq!(closed["status"], "published", "{closed}");
    // The leader collected all three; the same batch again is the same release, a smaller one a 409.
    let all: Vec<String> = sqlx::query_scalar("SELECT payload FROM updates ORDER BY client_id")
        .fetch_all(h.app.store().pool())
        .await
        .unwrap()
        .iter()
        .map(|p: &String| {
            use base64::Engine;
            let bytes = base64::engine::general_purpose::STANDARD.decode(p).unwrap();
            bytes[..16].iter().map(|b| format!("{b:02x}")).collect()
        })
        .collect();
    let (s1, first) = helper
        .call(reqwest::Method::POST, &collect, json!({ "reportIds": all }))
        .await;
    let mut reversed = all.clone();
    reversed.reverse();
    let (s2, second) = helper
        .call(
            reqwest::Method::POST,
            &collect,
            json!({ "reportIds": reversed }),
        )
        .await;
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(first, second);
    let (status, body) = helper
        .call(
            reqwest::Method::POST,
            &collect,
            json!({ "reportIds": all[..2].to_vec() }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("batch_released"))
    );
    // Reports after the release are refused by the helper (the round is closed on the leader).
    let (status, body) = helper
        .call(
            reqwest::Method::POST,
            &format!("/v1/helper/tasks/{id}/reports"),
            json!({ "clientId": "late", "request": "AAAA" }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (409, json!("batch_released"))
    );
}

/// A leader calls its helper once per device upload of a secure round, so its authenticated calls
/// are not limited however many there are (they were counted as admin requests and capped a
/// round's ingest at the burst, `tools/bench-loadtest.sh` found). Failed calls are limited, and
/// past the limit the address is refused everything, the right token too: a guesser cannot tell
/// a hit.
async fn the_helper_limits_only_failed_leader_calls(backend: Backend) {
    use feedloop_server::rate_limit::RateLimit;
    let Some(helper) = Helper::start_with(backend, |c| {
        c.admin_rate = RateLimit {
            per_minute: 1,
            burst: 3,
        };
    })
    .await
    else {
        return;
    };
    let call = |token: &'static str| {
        let url = helper.url.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/helper/tasks/1/collect"))
                .bearer_auth(token)
                .json(&json!({ "reportIds": [] }))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The real peer address (127.0.0.1) is what the limit counts.
    for _ in 0..20 {
        let status = call(LEADER_TOKEN).await;
        assert!(
            status != 401 && status != 429,
            "the leader was refused: {status}"
        );
    }
    for _ in 0..3 {
        assert_eq!(call("not-the-leader-token-0123").await, 401);
    }
    assert_eq!(call("not-the-leader-token-0123").await, 429);
    assert_eq!(
        call(LEADER_TOKEN).await,
        429,
        "a blocked address is refused the right token too"
    );
    assert_eq!(helper.reports("1").await, 0);
}
