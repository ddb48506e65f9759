//! Secure aggregation with two real processes: `feedloop serve --role helper` and a leader
//! `feedloop serve --helper-url …`, each with its own database (two SQLite files, or two
//! PostgreSQL databases when `FEEDLOOP_TEST_POSTGRES_URL` is set). Devices, built here from
//! `feedloop-secagg` as a device builds its report, register with the leader, seal their updates to
//! the two published keys and post them to the leader only; the round closes at its target and a
//! version is published from the helper-noised sum. The same devices seal a thumbs report each
//! (`--secure-metrics`): the two processes verify them and release one noisy batch.
//!
//! Runs the CLI binary (see tests/crash.rs: `cargo build -p feedloop-cli` first, or FEEDLOOP_BIN).

mod processes;

use std::io::Write;

use feedloop_core::protocol::SecureMetricTerms;
use feedloop_core::secure_metrics::SecureMetric;
use feedloop_privacy::clip_to_lattice;
use feedloop_privacy::rng::OsCsprng;
use feedloop_privacy::PrivatizerConfig;
use feedloop_secagg::{seal_metric, seal_report, HpkePublicKey, SecureRound};
use processes::*;
use serde_json::{json, Value};

const DEPLOYMENT_KEY: &str = "site-key-0123456789abcdef";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
/// The bundled model's head parameters (contract 2: 2 × 64 + 4).
const HEAD_D: usize = 2 * 64 + 4;
const LEADER_TOKEN: &str = "leader-token-0123456789abcdef";

mod a_leader_and_a_helper_publish_a_version {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_leader_and_a_helper_publish_a_version(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_leader_and_a_helper_publish_a_version(super::Backend::Postgres).await;
    }
}

async fn spawn(args: Vec<String>) -> Server {
    let bin = feedloop_bin();
    tokio::task::spawn_blocking(move || Server::spawn(&bin, &args))
        .await
        .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

async fn a_leader_and_a_helper_publish_a_version(backend: Backend) {
    let (Some((helper_db, helper_dir)), Some((leader_db, leader_dir))) =
        (fresh_database(backend).await, fresh_database(backend).await)
    else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED a_leader_and_a_helper_publish_a_version::postgres: FEEDLOOP_TEST_POSTGRES_URL \
             is unset (run server/tests/postgres.sh)"
        );
        return;
    };
    let (_a, _b) = (TempDir(helper_dir), TempDir(leader_dir));
    let helper = spawn(args(&[
        "--role",
        "helper",
        "--database",
        &helper_db,
        "--leader-token",
        LEADER_TOKEN,
        "--helper-noise-multiplier",
        "0.004",
        "--helper-min-reports",
        "3",
    ]))
    .await;
    let leader = spawn(args(&[
        "--database",
        &leader_db,
        "--deployment-key",
        &format!("site={DEPLOYMENT_KEY}"),
        "--admin-key",
        ADMIN_KEY,
        "--helper-url",
        &helper.base_url(),
        "--helper-token",
        LEADER_TOKEN,
        "--secure-metrics",
        "--metric-batch",
        "3",
        "--metric-noise",
        "1.0",
    ]))
    .await;
    let http = reqwest::Client::new();
    let base = leader.base_url();
    let helper_info: Value = http
        .get(format!("{}/v1/helper", helper.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // The leader serves no helper endpoint and the helper no device endpoint.
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(http.get(format!("{base}/v1/helper")).send().await.unwrap()),
        404
    );
    assert_eq!(
        status(
            http.get(format!("{}/v1/rounds", helper.base_url()))
                .send()
                .await
                .unwrap()
        ),
        404
    );

    let opened = http
        .post(format!("{base}/v1/admin/rounds"))
        .bearer_auth(ADMIN_KEY)
        .json(
            &json!({ "clipNorm": 0.5, "granularity": 1e-3, "noiseStddev": 1e-3,
            "minCohort": 3, "targetCount": 3, "aggregation": "secure" }),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(opened.status().as_u16(), 201, "{}", leader.log_text());
    let round: Value = opened.json().await.unwrap();
    assert_eq!(
        round["secure"]["helperFingerprint"],
        helper_info["fingerprint"]
    );
    let round_id = round["roundId"].as_str().unwrap().to_string();
    let sigma = round["noiseStddev"].as_f64().unwrap();
    assert_eq!(sigma, 0.004 * 0.5);

    let stats: Value = http
        .get(format!("{base}/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let metric_terms: SecureMetricTerms =
        serde_json::from_value(stats["secureMetrics"].clone()).unwrap();
    assert_eq!(
        metric_terms.helper_fingerprint,
        helper_info["fingerprint"].as_str().unwrap()
    );
    let mut last = Value::Null;
    for seed in 0..3u32 {
        let register = http
            .post(format!("{base}/v1/clients/register"))
            .header("x-feedloop-deployment-key", DEPLOYMENT_KEY)
            .send()
            .await
            .unwrap();
        let token: Value = register.json().await.unwrap();
        let update: Vec<f32> = (0..HEAD_D)
            .map(|i| ((i as f32 * 0.37 + seed as f32).sin()) * 0.02)
            .collect();
        let cfg = PrivatizerConfig::new(0.5, 1e-3, sigma).unwrap();
        let terms = SecureRound::for_privatizer(
            round_id.parse().unwrap(),
            HEAD_D,
            &cfg,
            round["secure"]["minReports"].as_u64().unwrap(),
        )
        .unwrap();
        let key = |name: &str| HpkePublicKey::from_hex(round["secure"][name].as_str().unwrap());
        let mut rng = OsCsprng::new().unwrap();
        let report = seal_report(
            clip_to_lattice(&update, &cfg, &mut rng).unwrap(),
            &terms,
            &key("leaderKey").unwrap(),
            &key("helperKey").unwrap(),
            &mut rng,
        )
        .unwrap();
        let answer = http
            .post(format!("{base}/v1/rounds/{round_id}/updates"))
            .bearer_auth(token["token"].as_str().unwrap())
            .header("x-feedloop-model-version", "1")
            .header("content-type", "application/octet-stream")
            .body(report.to_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(
            answer.status().as_u16(),
            202,
            "leader:\n{}\nhelper:\n{}",
            leader.log_text(),
            helper.log_text()
        );
        last = answer.json().await.unwrap();
        // The device's thumbs on version 1, sealed as `DevicePrivacy::release_next_metric` does.
        use base64::Engine;
        let task = SecureMetric::Thumbs.task("1", &metric_terms).unwrap();
        let metric_key = |hex: &str| HpkePublicKey::from_hex(hex).unwrap();
        let sealed = seal_metric(
            (seed % 2) as usize,
            &task,
            &metric_key(&metric_terms.leader_key),
            &metric_key(&metric_terms.helper_key),
            &mut rng,
        )
        .unwrap();
        let answer = http
            .post(format!("{base}/v1/feedback/sealed"))
            .bearer_auth(token["token"].as_str().unwrap())
            .json(&json!({ "modelVersion": "1", "metric": "thumbs",
                "report": base64::engine::general_purpose::STANDARD.encode(sealed.to_bytes()) }))
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status().as_u16(), 202, "{}", leader.log_text());
    }
    assert_eq!(last["roundClosed"]["status"], "published", "{last}");
    let current: Value = http
        .get(format!("{base}/v1/models/current"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current["version"], "2");
    assert!(helper.log_text().contains("helper: released a batch"));
    assert!(helper
        .log_text()
        .contains("helper: released a metric batch"));
    let stats: Value = http
        .get(format!("{base}/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v1 = stats["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == "1")
        .unwrap();
    assert_eq!(v1["sealed"]["thumbs"]["reports"], 3, "{v1}");
    assert_eq!(v1["sealed"]["thumbs"]["batches"], 1);
    assert!(v1["thumbsUpRate"].is_number());
}
