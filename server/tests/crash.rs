//! Crash safety (issue 5): SIGKILL the real `feedloop serve` process while privatized updates are
//! being ingested, restart it on the same database, and check that every update it acknowledged
//! with `202 Accepted` is stored — read back from the database itself, counted by the round, and
//! refused as `409 duplicate_update` when its client submits again.
//!
//! The test runs the CLI binary, which this crate cannot build: `cargo build -p feedloop-cli`
//! first (`make test` and server/tests/postgres.sh do). `FEEDLOOP_BIN` overrides the path. The
//! PostgreSQL variant runs when `FEEDLOOP_TEST_POSTGRES_URL` is set (server/tests/postgres.sh) and
//! prints SKIPPED otherwise.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use feedloop_privacy::{privatize_with_os_rng, PrivatizerConfig};
use feedloop_server::onnx::sha256_hex;
use serde_json::Value;
use sqlx::Connection;

const DEPLOYMENT_KEY: &str = "site-key-0123456789abcdef";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
mod processes;

use processes::*;

/// A round that neither fills nor expires during the test.
const AUTO_ROUND: &str = r#"{"clipNorm":1,"granularity":0.01,"noiseStddev":4,"minCohort":100000,"durationSeconds":3600}"#;
const CLIENTS: usize = 3000;
const SENDERS: usize = 16;
/// The kill comes at this time after the first submission, or earlier once half the clients
/// were acknowledged (so that the remaining senders still have requests in flight).
const KILL_AFTER: Duration = Duration::from_millis(750);

mod two_replicas_one_killed_during_load {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::two_replicas_one_killed_during_load(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::two_replicas_one_killed_during_load(super::Backend::Postgres).await;
    }
}

mod sigkill_during_close {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::sigkill_during_close(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::sigkill_during_close(super::Backend::Postgres).await;
    }
}

mod sigkill_during_ingest {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sqlite() {
        super::sigkill_during_ingest(super::Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn postgres() {
        super::sigkill_during_ingest(super::Backend::Postgres).await;
    }
}

/// A registered client with the privatized update it will send.
struct Client {
    id: String,
    token: String,
    payload: Vec<u8>,
    sha256: String,
}

async fn register(http: &reqwest::Client, base: &str) -> (String, String) {
    let r = http
        .post(format!("{base}/v1/clients/register"))
        .header("x-feedloop-deployment-key", DEPLOYMENT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["clientId"].as_str().unwrap().to_string(),
        v["token"].as_str().unwrap().to_string(),
    )
}

async fn submit(
    http: &reqwest::Client,
    base: &str,
    round_id: &str,
    client: &Client,
) -> reqwest::Result<(u16, Value)> {
    let r = http
        .post(format!("{base}/v1/rounds/{round_id}/updates"))
        .bearer_auth(&client.token)
        .header("x-feedloop-model-version", "1")
        .header("content-type", "application/octet-stream")
        .body(client.payload.clone())
        .send()
        .await?;
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(Value::Null);
    Ok((status, body))
}

async fn get_json(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let r = http.get(format!("{base}{path}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET {path}");
    r.json().await.unwrap()
}

/// Runs `f` on every item with `SENDERS` concurrent tasks.
async fn for_each_concurrently<T, F, Fut>(items: Vec<T>, f: F)
where
    T: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let queue = Arc::new(Mutex::new(items));
    let f = Arc::new(f);
    let tasks: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (queue, f) = (queue.clone(), f.clone());
            tokio::spawn(async move {
                loop {
                    let Some(item) = queue.lock().unwrap().pop() else {
                        break;
                    };
                    f(item).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn sigkill_during_ingest(backend: Backend) {
    let Some((database, dir)) = fresh_database(backend).await else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED sigkill_during_ingest::postgres: FEEDLOOP_TEST_POSTGRES_URL is unset \
             (run server/tests/postgres.sh)"
        );
        return;
    };
    let _dir = TempDir(dir);
    let bin = feedloop_bin();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(SENDERS)
        .build()
        .unwrap();

    let server = start(&bin, &database).await;
    let base = server.base_url();
    let round = get_json(&http, &base, "/v1/rounds/current").await;
    let round_id = round["roundId"].as_str().unwrap().to_string();
    assert_eq!(round["status"], "open");
    let dimension = round["dimension"].as_u64().unwrap() as usize;

    // Clients and their privatized updates, all prepared before the load starts. The last one
    // never submits before the crash: it checks that the restarted server still ingests.
    let registered = Arc::new(Mutex::new(Vec::with_capacity(CLIENTS + 1)));
    {
        let (http, base, registered) = (http.clone(), base.clone(), registered.clone());
        for_each_concurrently((0..=CLIENTS).collect(), move |_: usize| {
            let (http, base, registered) = (http.clone(), base.clone(), registered.clone());
            async move {
                let ids = register(&http, &base).await;
                registered.lock().unwrap().push(ids);
            }
        })
        .await;
    }
    let cfg = PrivatizerConfig::new(1.0, 0.01, 4.0).unwrap();
    let mut clients: Vec<Client> = std::mem::take(&mut *registered.lock().unwrap())
        .into_iter()
        .enumerate()
        .map(|(seed, (id, token))| {
            let delta: Vec<f32> = (0..dimension)
                .map(|i| ((i as f32 * 0.37 + seed as f32 * 1.3).sin()) * 0.05)
                .collect();
            let payload = privatize_with_os_rng(&delta, &cfg).unwrap().to_bytes();
            let sha256 = sha256_hex(&payload);
            Client {
                id,
                token,
                payload,
                sha256,
            }
        })
        .collect();
    let spare = clients.pop().unwrap();
    let clients = Arc::new(clients);

    // Ingest as fast as possible from SENDERS tasks; SIGKILL the server mid-stream.
    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(Mutex::new(Vec::<usize>::new()));
    let refused = Arc::new(Mutex::new(Vec::<(usize, u16, Value)>::new()));
    let lost_in_flight = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (http, base, round_id) = (http.clone(), base.clone(), round_id.clone());
            let (clients, next) = (clients.clone(), next.clone());
            let (acked, refused, lost) = (acked.clone(), refused.clone(), lost_in_flight.clone());
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(client) = clients.get(i) else { break };
                    match submit(&http, &base, &round_id, client).await {
                        Ok((202, _)) => acked.lock().unwrap().push(i),
                        Ok((status, body)) => refused.lock().unwrap().push((i, status, body)),
                        // Connection reset/closed: the request was in flight when the server
                        // died; its outcome is unknown and either outcome is allowed. This
                        // sender stops (the server is gone).
                        Err(_) => {
                            lost.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    while started.elapsed() < KILL_AFTER && acked.lock().unwrap().len() < clients.len() / 2 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let acked_at_kill = acked.lock().unwrap().len();
    let killed_after = started.elapsed();
    server.kill();
    for s in senders {
        s.await.unwrap();
    }
    let acked: Vec<usize> = std::mem::take(&mut *acked.lock().unwrap());
    let refused = std::mem::take(&mut *refused.lock().unwrap());
    let lost = lost_in_flight.load(Ordering::Relaxed);
    let _ = writeln!(
        std::io::stderr(),
        "sigkill_during_ingest ({backend:?}): SIGKILL after {killed_after:.0?} with \
         {acked_at_kill} updates acknowledged; {} acknowledged in all, {lost} requests in flight",
        acked.len()
    );
    assert!(
        refused.is_empty(),
        "valid updates were refused before the crash: {:?}",
        &refused[..refused.len().min(5)]
    );
    assert!(
        !acked.is_empty(),
        "nothing was acknowledged before the kill"
    );
    assert!(
        lost > 0,
        "no request was in flight at the kill: the test did not crash the server mid-ingest"
    );

    // Restart on the same database.
    let server = start(&bin, &database).await;
    let base = server.base_url();
    let round = get_json(&http, &base, &format!("/v1/rounds/{round_id}")).await;
    assert_eq!(round["status"], "open", "{round}");
    let received = round["received"].as_u64().unwrap() as usize;
    assert!(
        received >= acked.len(),
        "the round counts {received} updates, but {} were acknowledged",
        acked.len()
    );
    assert!(
        received <= acked.len() + lost,
        "the round counts {received} updates, more than the {} acknowledged + {lost} in flight",
        acked.len()
    );

    // The rows themselves, read straight from the database (SQLite: read-only).
    sqlx::any::install_default_drivers();
    let read_url = match backend {
        Backend::Sqlite => format!("{database}?mode=ro"),
        Backend::Postgres => database.clone(),
    };
    let mut db = sqlx::AnyConnection::connect(&read_url).await.unwrap();
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT client_id, payload_sha256, payload FROM updates WHERE round_id = $1",
    )
    .bind(round_id.parse::<i64>().unwrap())
    .fetch_all(&mut db)
    .await
    .unwrap();
    db.close().await.unwrap();
    assert_eq!(
        rows.len(),
        received,
        "the round's count and its rows differ"
    );
    let stored: HashMap<&str, (&str, &str)> = rows
        .iter()
        .map(|(c, s, p)| (c.as_str(), (s.as_str(), p.as_str())))
        .collect();
    for &i in &acked {
        let c = &clients[i];
        let (sha, payload) = stored.get(c.id.as_str()).unwrap_or_else(|| {
            panic!(
                "the acknowledged update of client {} is missing after the crash",
                c.id
            )
        });
        assert_eq!(*sha, c.sha256, "client {}: another digest stored", c.id);
        assert_eq!(
            STANDARD.decode(payload).unwrap(),
            c.payload,
            "client {}: other payload bytes stored",
            c.id
        );
    }

    // Through the API: every acknowledged client submitting again is a duplicate.
    let duplicates = Arc::new(AtomicUsize::new(0));
    {
        let (http, base, round_id) = (http.clone(), base.clone(), round_id.clone());
        let (clients, duplicates) = (clients.clone(), duplicates.clone());
        for_each_concurrently(acked.clone(), move |i| {
            let (http, base, round_id) = (http.clone(), base.clone(), round_id.clone());
            let (clients, duplicates) = (clients.clone(), duplicates.clone());
            async move {
                let (status, body) = submit(&http, &base, &round_id, &clients[i]).await.unwrap();
                assert_eq!(
                    (status, body["error"]["code"].as_str()),
                    (409, Some("duplicate_update")),
                    "acknowledged client {} resubmitting: {body}",
                    clients[i].id
                );
                duplicates.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    }
    assert_eq!(duplicates.load(Ordering::Relaxed), acked.len());

    // The restarted server still ingests, and nothing else went in meanwhile.
    let (status, body) = submit(&http, &base, &round_id, &spare).await.unwrap();
    assert_eq!(status, 202, "{body}; server log:\n{}", server.log_text());
    assert_eq!(body["received"].as_u64(), Some(received as u64 + 1));
}

impl Server {
    fn start(bin: &Path, database: &str) -> Self {
        Self::start_with(bin, database, AUTO_ROUND)
    }

    fn start_with(bin: &Path, database: &str, auto_round: &str) -> Self {
        let args = [
            "--database",
            database,
            "--deployment-key",
            &format!("site={DEPLOYMENT_KEY}"),
            "--admin-key",
            ADMIN_KEY,
            "--auto-round",
            auto_round,
            "--log",
            "info,sqlx=warn",
            // 3,000 clients from one address: a load test, not the Sybils the limit is for.
            "--register-rate-per-minute",
            "0",
        ];
        Self::spawn(bin, &args.map(String::from))
    }
}

async fn start(bin: &Path, database: &str) -> Server {
    let (bin, database) = (bin.to_path_buf(), database.to_string());
    tokio::task::spawn_blocking(move || Server::start(&bin, &database))
        .await
        .unwrap()
}

/// Rounds that close every few dozen updates, so closes happen on both replicas during the load.
const BUSY_ROUND: &str =
    r#"{"clipNorm":1,"granularity":0.01,"noiseStddev":4,"minCohort":5,"targetCount":40}"#;

/// Two replicas started together on one fresh database (one bootstrap), `feedloop loadtest`
/// driving both with rounds closing all the time, one replica SIGKILLed mid-load: the load
/// generator then verifies against the database that every acknowledged update is stored, that at
/// most one round is open, that every published round made one version and that every version's
/// parent is an earlier one; no answer is a server error; the killed replica restarts on the same
/// database and the invariants still hold.
async fn two_replicas_one_killed_during_load(backend: Backend) {
    let Some((database, dir)) = fresh_database(backend).await else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED two_replicas_one_killed_during_load::postgres: FEEDLOOP_TEST_POSTGRES_URL is \
             unset (run server/tests/postgres.sh)"
        );
        return;
    };
    let _dir = TempDir(dir);
    let bin = feedloop_bin();
    let (a, b) = {
        let (bin_a, db_a) = (bin.clone(), database.clone());
        let (bin_b, db_b) = (bin.clone(), database.clone());
        let a = tokio::task::spawn_blocking(move || Server::start_with(&bin_a, &db_a, BUSY_ROUND));
        let b = tokio::task::spawn_blocking(move || Server::start_with(&bin_b, &db_b, BUSY_ROUND));
        (a.await.unwrap(), b.await.unwrap())
    };
    let load = Command::new(&bin)
        .args(["loadtest", "--url", &a.base_url(), "--url", &b.base_url()])
        .args([
            "--clients",
            "16",
            "--seconds",
            "6",
            "--ceiling-seconds",
            "0",
        ])
        .args(["--verify-database", &database])
        .env("FEEDLOOP_DEPLOYMENT_KEY", DEPLOYMENT_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let killed_log = a.log_text();
    a.kill();
    let output = tokio::task::spawn_blocking(move || load.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "feedloop loadtest failed: {}\n{stdout}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let _ = writeln!(std::io::stderr(), "two replicas ({backend:?}): {report}");
    let verification = &report["verification"];
    assert_eq!(verification["acknowledgedMissing"], 0, "{report}");
    assert_eq!(verification["ok"], true, "{report}");
    assert!(
        verification["publishedRounds"].as_u64().unwrap() >= 2,
        "{report}"
    );
    assert!(report["acknowledged"].as_u64().unwrap() > 100, "{report}");
    // The only failures are the devices of the killed replica losing their connection.
    for key in report["errorsByStatus"].as_object().unwrap().keys() {
        assert!(
            key.starts_with("transport/"),
            "{key}: {report}\nreplica B's log:\n{}\nreplica A's log before the kill:\n{killed_log}",
            b.log_text()
        );
    }

    // The killed replica comes back on the same database; the lineage is still linear.
    let a = start(&bin, &database).await;
    let http = reqwest::Client::new();
    let models = get_json(&http, &a.base_url(), "/v1/models").await;
    assert_eq!(
        models["versions"].as_array().unwrap().len() as u64,
        verification["versions"].as_u64().unwrap(),
        "{models}"
    );
    let rounds = get_json(&http, &a.base_url(), "/v1/rounds?limit=1000").await;
    let open = rounds["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "open")
        .count();
    assert!(open <= 1, "{rounds}");
    drop(b);
}

/// A round any admin close publishes (minimum cohort 1, no target).
const CLOSABLE_ROUND: &str =
    r#"{"clipNorm":1,"granularity":0.01,"noiseStddev":4,"minCohort":1,"durationSeconds":3600}"#;

/// SIGKILL while an admin close is publishing a round of 1,500 updates: after a restart the close
/// either happened entirely (the round published, one new version, current) or not at all (the
/// round open with every update, version 1 current) — never `closing`, never a version without
/// its round; closing again then publishes all 1,500.
async fn sigkill_during_close(backend: Backend) {
    const N: usize = 1500;
    let Some((database, dir)) = fresh_database(backend).await else {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED sigkill_during_close::postgres: FEEDLOOP_TEST_POSTGRES_URL is unset \
             (run server/tests/postgres.sh)"
        );
        return;
    };
    let _dir = TempDir(dir);
    let bin = feedloop_bin();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let server = {
        let (bin, database) = (bin.clone(), database.clone());
        tokio::task::spawn_blocking(move || Server::start_with(&bin, &database, CLOSABLE_ROUND))
            .await
            .unwrap()
    };
    let base = server.base_url();
    let round = get_json(&http, &base, "/v1/rounds/current").await;
    let round_id = round["roundId"].as_str().unwrap().to_string();
    let dimension = round["dimension"].as_u64().unwrap() as usize;
    let cfg = PrivatizerConfig::new(1.0, 0.01, 4.0).unwrap();
    let stored = Arc::new(AtomicUsize::new(0));
    {
        let (http, base, round_id, stored) =
            (http.clone(), base.clone(), round_id.clone(), stored.clone());
        for_each_concurrently((0..N).collect(), move |seed: usize| {
            let (http, base, round_id, stored) =
                (http.clone(), base.clone(), round_id.clone(), stored.clone());
            let cfg = cfg.clone();
            async move {
                let (id, token) = register(&http, &base).await;
                let delta: Vec<f32> = (0..dimension)
                    .map(|i| ((i as f32 * 0.37 + seed as f32 * 1.3).sin()) * 0.05)
                    .collect();
                let payload = privatize_with_os_rng(&delta, &cfg).unwrap().to_bytes();
                let sha256 = sha256_hex(&payload);
                let client = Client {
                    id,
                    token,
                    payload,
                    sha256,
                };
                let (status, body) = submit(&http, &base, &round_id, &client).await.unwrap();
                assert_eq!(status, 202, "{body}");
                stored.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    }
    assert_eq!(stored.load(Ordering::Relaxed), N);

    // The close, and the kill while it runs.
    let close = {
        let (http, url) = (
            http.clone(),
            format!("{base}/v1/admin/rounds/{round_id}/close"),
        );
        tokio::spawn(async move { http.post(url).bearer_auth(ADMIN_KEY).send().await })
    };
    let kill_after = Duration::from_millis(8);
    tokio::time::sleep(kill_after).await;
    server.kill();
    let answered = close.await.unwrap().is_ok();

    let server = {
        let (bin, database) = (bin.clone(), database.clone());
        tokio::task::spawn_blocking(move || Server::start_with(&bin, &database, CLOSABLE_ROUND))
            .await
            .unwrap()
    };
    let base = server.base_url();
    let round = get_json(&http, &base, &format!("/v1/rounds/{round_id}")).await;
    let models = get_json(&http, &base, "/v1/models").await;
    let versions = models["versions"].as_array().unwrap().len();
    let outcome = round["status"].as_str().unwrap().to_string();
    let _ = writeln!(
        std::io::stderr(),
        "sigkill_during_close ({backend:?}): after the kill the round is {outcome}, {versions} \
         versions, the close was {}answered",
        if answered { "" } else { "not " }
    );
    match outcome.as_str() {
        "open" => {
            assert_eq!(
                (versions, models["current"].as_str()),
                (1, Some("1")),
                "{models}"
            );
            assert_eq!(round["received"].as_u64(), Some(N as u64), "{round}");
            let started = Instant::now();
            let r = http
                .post(format!("{base}/v1/admin/rounds/{round_id}/close"))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let closed: Value = r.json().await.unwrap();
            assert_eq!(closed["status"], "published", "{closed}");
            assert_eq!(closed["cohortSize"].as_u64(), Some(N as u64), "{closed}");
            // The close takes longer than the delay before the kill, so the kill fell inside it
            // (the request reaches the server in well under a millisecond on loopback).
            let took = started.elapsed();
            let _ = writeln!(
                std::io::stderr(),
                "sigkill_during_close: a close takes {took:?}"
            );
            assert!(
                took > kill_after,
                "the close took {took:?}: the kill came after it"
            );
        }
        "published" => {
            assert!(!answered || versions == 2);
            assert_eq!(
                (versions, models["current"].as_str()),
                (2, Some("2")),
                "{models}"
            );
            assert_eq!(round["publishedVersion"], "2", "{round}");
            assert_eq!(round["cohortSize"].as_u64(), Some(N as u64), "{round}");
        }
        other => panic!("after a kill during its close the round is {other}: {round}"),
    }
    let models = get_json(&http, &base, "/v1/models").await;
    assert_eq!(models["versions"].as_array().unwrap().len(), 2, "{models}");
    assert_eq!(models["versions"][1]["parentVersion"], "1", "{models}");
}
