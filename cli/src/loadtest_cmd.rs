//! `feedloop loadtest`: N concurrent simulated devices against running servers (one or several
//! replicas) for T seconds. Each device registers, reads the open round, privatizes an update for
//! it (the real privatizer) and submits it, then the next device takes its place. Prints
//! acknowledged updates per second, errors by status, latency percentiles, the longest gap
//! between two acknowledgements, the bare-handler ceiling measured in the same run, and — with
//! `--verify-database` — whether every acknowledged update is stored, plus the lineage
//! invariants (at most one open round, one version per published round, each parent earlier).
//!
//! A `secure` round (a leader with its helper, `feedloop serve --role helper`) is loaded the same
//! way: each device clips and rounds its update, shards it with Prio3 and seals each share to its
//! aggregator (the real `feedloop-secagg` client path, as the wasm client runs it), and the
//! leader acknowledges a report only once it and the helper verified it. The report counts its
//! uploads per aggregation mode, so a local and a secure run of the same servers compare.
//!
//! The servers must not rate-limit registrations from the generator's address (`feedloop serve
//! --register-rate-per-minute 0`): otherwise the limiter is what gets measured.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use feedloop_core::protocol::SecureAggregators;
use feedloop_core::protocol::{ModelList, Round, RoundList, RoundStatus, TokenGrant};
use feedloop_privacy::rng::OsCsprng;
use feedloop_privacy::{clip_to_lattice, privatize_with_os_rng, PrivatizerConfig};
use feedloop_secagg::{seal_report, HpkePublicKey, SecureRound};
use feedloop_server::onnx::sha256_hex;
use serde_json::{json, Value};

#[derive(Args)]
pub struct LoadtestArgs {
    /// A server's base URL; repeat for several replicas (devices are spread over them).
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// The deployment key devices register with.
    #[arg(long, env = "FEEDLOOP_DEPLOYMENT_KEY", hide_env_values = true)]
    deployment_key: String,
    /// Concurrent devices.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Seconds of the bare-handler ceiling measured first (0: skip): the same concurrency on a
    /// request that runs the whole middleware stack and a handler touching no database.
    #[arg(long, default_value_t = 5.0)]
    ceiling_seconds: f64,
    /// The servers' database: check that every acknowledged update is stored, and the lineage.
    #[arg(long)]
    verify_database: Option<String>,
    /// The update's L2 norm before clipping (the privatizer clips to the round's C).
    #[arg(long, default_value_t = 0.5)]
    update_norm: f64,
}

/// What the devices saw.
#[derive(Default)]
struct Tally {
    /// (round id, client id, payload SHA-256) of every 202.
    acknowledged: Vec<(i64, String, String)>,
    /// Unix-ish instants (since start) of every 202, for the stall check.
    acked_at: Vec<Duration>,
    submit_latency: Vec<Duration>,
    register_latency: Vec<Duration>,
    registrations: usize,
    /// Uploads answered "the round closed / moved on" (409 `round_closed`,
    /// `stale_model_version`): the device reads the new round, as the real client does.
    round_changes: usize,
    /// Reads of the current round that found none open (between a close and the next round).
    no_open_round: usize,
    /// `status code/error code` → count; `transport` for failed connections.
    errors: BTreeMap<String, usize>,
    /// Acknowledged uploads that were sealed secure-aggregation reports.
    sealed: usize,
    /// Time the generator spent privatizing or sealing uploads (its own CPU, not the servers').
    prepare_time: Duration,
}

pub fn loadtest(args: LoadtestArgs) -> Result<Value, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(run(args))
}

async fn run(args: LoadtestArgs) -> Result<Value, String> {
    if args.clients == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        return Err("--clients and --seconds must be positive".into());
    }
    let urls: Vec<String> = args
        .urls
        .iter()
        .map(|u| u.trim_end_matches('/').to_string())
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(args.clients)
        .build()
        .map_err(|e| e.to_string())?;
    for url in &urls {
        let r = http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .map_err(|e| format!("{url} does not answer: {e}"))?;
        if !r.status().is_success() {
            return Err(format!("{url}/healthz answered {}", r.status()));
        }
    }

    let ceiling = if args.ceiling_seconds > 0.0 {
        Some(ceiling(&http, &urls, args.clients, args.ceiling_seconds).await)
    } else {
        None
    };

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.seconds);
    let devices: Vec<_> = (0..args.clients)
        .map(|i| {
            let device = Device {
                http: http.clone(),
                url: urls[i % urls.len()].clone(),
                deployment_key: args.deployment_key.clone(),
                update_norm: args.update_norm,
                tally: tally.clone(),
                started,
            };
            tokio::spawn(async move { device.run(until).await })
        })
        .collect();
    for d in devices {
        d.await.map_err(|e| e.to_string())?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().expect("not poisoned"));

    let acked = tally.acknowledged.len();
    let rate = acked as f64 / elapsed;
    let mut gaps = gaps(&tally.acked_at, started.elapsed());
    gaps.sort();
    let longest = gaps.last().copied().unwrap_or_default();
    let stalls = gaps.iter().filter(|g| **g > Duration::from_secs(1)).count();
    let errors: usize = tally.errors.values().sum();
    let mut report = json!({
        "servers": urls,
        "clients": args.clients,
        "seconds": round2(elapsed),
        "acknowledged": acked,
        "acknowledgedPerSecond": round2(rate),
        "aggregation": match (tally.sealed, acked) {
            (0, _) => "local",
            (s, a) if s == a => "secure",
            _ => "mixed",
        },
        "sealedReports": tally.sealed,
        "generatorPrepareMsPerUpload": if acked == 0 {
            Value::Null
        } else {
            json!(round2(tally.prepare_time.as_secs_f64() * 1e3 / acked as f64))
        },
        "registrations": tally.registrations,
        "roundChanges": tally.round_changes,
        "noOpenRound": tally.no_open_round,
        "errors": errors,
        "errorsByStatus": tally.errors,
        "submitLatencyMs": percentiles(tally.submit_latency),
        "registerLatencyMs": percentiles(tally.register_latency),
        "longestGapWithoutAckMs": round2(longest.as_secs_f64() * 1e3),
        "stallsOver1s": stalls,
    });
    if let Some(c) = ceiling {
        report["ceilingPerSecond"] = json!(round2(c));
        report["ratioToCeiling"] = json!((rate / c * 1000.0).round() / 1000.0);
    }
    if let Some(database) = &args.verify_database {
        report["verification"] = verify(database, &tally.acknowledged, &http, &urls).await?;
    }
    Ok(report)
}

/// One simulated device slot: a fresh device (registration, round, privatized update, upload)
/// again and again until `until`.
struct Device {
    http: reqwest::Client,
    url: String,
    deployment_key: String,
    update_norm: f64,
    tally: Arc<Mutex<Tally>>,
    started: Instant,
}

impl Device {
    async fn run(self, until: Instant) {
        let mut round: Option<Round> = None;
        let mut n = 0u64;
        while Instant::now() < until {
            n += 1;
            let t = Instant::now();
            let grant = match self.register().await {
                Ok(g) => g,
                Err(key) => {
                    self.error(key);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            {
                let mut tally = self.tally.lock().expect("not poisoned");
                tally.registrations += 1;
                tally.register_latency.push(t.elapsed());
            }
            if round.as_ref().is_none_or(|r| r.status != RoundStatus::Open) {
                round = match self.current_round().await {
                    Ok(Some(r)) => Some(r),
                    Ok(None) => {
                        self.tally.lock().expect("not poisoned").no_open_round += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                    Err(key) => {
                        self.error(key);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
            }
            let r = round.as_ref().expect("just read");
            let prepared_at = Instant::now();
            let payload = match self.update(r, n) {
                Ok(p) => p,
                Err(e) => {
                    self.error(format!("privatize: {e}"));
                    return;
                }
            };
            let prepare_time = prepared_at.elapsed();
            let digest = sha256_hex(&payload);
            let t = Instant::now();
            let sent = self
                .http
                .post(format!("{}/v1/rounds/{}/updates", self.url, r.round_id))
                .bearer_auth(&grant.token)
                .header("x-feedloop-model-version", &r.model_version)
                .header("content-type", "application/octet-stream")
                .body(payload)
                .send()
                .await;
            let latency = t.elapsed();
            match sent {
                Ok(resp) if resp.status().as_u16() == 202 => {
                    let ack: Value = resp.json().await.unwrap_or(Value::Null);
                    let mut tally = self.tally.lock().expect("not poisoned");
                    tally.submit_latency.push(latency);
                    tally.prepare_time += prepare_time;
                    tally.sealed += usize::from(r.secure.is_some());
                    tally.acked_at.push(self.started.elapsed());
                    tally.acknowledged.push((
                        r.round_id.parse().unwrap_or_default(),
                        grant.client_id.clone(),
                        digest,
                    ));
                    if !ack["roundClosed"].is_null() {
                        round = None;
                    }
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body: Value = resp.json().await.unwrap_or(Value::Null);
                    let code = body["error"]["code"].as_str().unwrap_or("").to_string();
                    // A round that closed or moved on is the protocol working, not an error of
                    // the server: the device reads the new round (as the real client does).
                    if ["round_closed", "stale_model_version"].contains(&code.as_str()) {
                        self.tally.lock().expect("not poisoned").round_changes += 1;
                        round = None;
                        continue;
                    }
                    self.error(format!("{status}/{code}"));
                }
                Err(e) => self.error(transport(&e)),
            }
        }
    }

    fn error(&self, key: String) {
        *self
            .tally
            .lock()
            .expect("not poisoned")
            .errors
            .entry(key)
            .or_default() += 1;
    }

    async fn register(&self) -> Result<TokenGrant, String> {
        let resp = self
            .http
            .post(format!("{}/v1/clients/register", self.url))
            .header("x-feedloop-deployment-key", &self.deployment_key)
            .send()
            .await
            .map_err(|e| transport(&e))?;
        if resp.status().as_u16() != 201 {
            return Err(format!("{}/register", resp.status().as_u16()));
        }
        resp.json()
            .await
            .map_err(|_| "register/bad-body".to_string())
    }

    async fn current_round(&self) -> Result<Option<Round>, String> {
        let resp = self
            .http
            .get(format!("{}/v1/rounds/current", self.url))
            .send()
            .await
            .map_err(|e| transport(&e))?;
        // Between a round's close and the next one's opening there is no open round.
        if resp.status().as_u16() == 404 {
            return Ok(None);
        }
        if resp.status().as_u16() != 200 {
            return Err(format!("{}/rounds-current", resp.status().as_u16()));
        }
        resp.json()
            .await
            .map_err(|_| "rounds-current/bad-body".to_string())
    }

    /// A privatized update for `round`: a different direction per device, norm `update_norm`.
    fn update(&self, round: &Round, n: u64) -> Result<Vec<u8>, String> {
        let d = round.dimension as usize;
        let seed = fastrand::u64(..) ^ n;
        let raw: Vec<f64> = (0..d)
            .map(|i| (i as f64 * 0.37 + (seed % 10_007) as f64 * 1.3).sin())
            .collect();
        let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-12);
        let delta: Vec<f32> = raw
            .iter()
            .map(|x| (x / norm * self.update_norm) as f32)
            .collect();
        let cfg = PrivatizerConfig::new(round.clip_norm, round.granularity, round.noise_stddev)
            .map_err(|e| e.to_string())?;
        match &round.secure {
            None => Ok(privatize_with_os_rng(&delta, &cfg)
                .map_err(|e| e.to_string())?
                .to_bytes()),
            Some(secure) => seal(&delta, round, secure, &cfg),
        }
    }
}

/// A secure round's sealed report for `delta`: clipped, rounded without noise (the helper adds it
/// to the sum), Prio3-sharded and HPKE-sealed to the round's two keys.
fn seal(
    delta: &[f32],
    round: &Round,
    secure: &SecureAggregators,
    cfg: &PrivatizerConfig,
) -> Result<Vec<u8>, String> {
    let mut rng = OsCsprng::new().map_err(|e| e.to_string())?;
    let key = |hex: &str| HpkePublicKey::from_hex(hex).map_err(|e| e.to_string());
    let round_id: u64 = round
        .round_id
        .parse()
        .map_err(|_| format!("secure round id {:?} is not a number", round.round_id))?;
    let min_reports = u64::try_from(secure.min_reports).unwrap_or(1);
    let terms = SecureRound::for_privatizer(round_id, delta.len(), cfg, min_reports)
        .map_err(|e| e.to_string())?;
    let lattice = clip_to_lattice(delta, cfg, &mut rng).map_err(|e| e.to_string())?;
    let report = seal_report(
        lattice,
        &terms,
        &key(&secure.leader_key)?,
        &key(&secure.helper_key)?,
        &mut rng,
    )
    .map_err(|e| e.to_string())?;
    Ok(report.to_bytes())
}

fn transport(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "transport/timeout".into()
    } else if e.is_connect() {
        "transport/connect".into()
    } else {
        "transport/other".into()
    }
}

/// Requests per second at the same concurrency on `GET /v1/ceiling` — an unknown route, so the
/// whole middleware stack runs and the handler (the JSON 404) touches no database.
async fn ceiling(http: &reqwest::Client, urls: &[String], clients: usize, seconds: f64) -> f64 {
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|i| {
            let http = http.clone();
            let url = format!("{}/v1/ceiling", urls[i % urls.len()]);
            tokio::spawn(async move {
                let mut n = 0usize;
                while Instant::now() < until {
                    if let Ok(r) = http.get(&url).send().await {
                        if r.bytes().await.is_ok() {
                            n += 1;
                        }
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total as f64 / started.elapsed().as_secs_f64()
}

/// The gaps between consecutive acknowledgements (and from the start and to the end).
fn gaps(acked_at: &[Duration], end: Duration) -> Vec<Duration> {
    let mut times = acked_at.to_vec();
    times.sort();
    let mut out = Vec::with_capacity(times.len() + 1);
    let mut last = Duration::ZERO;
    for t in times {
        out.push(t - last);
        last = t;
    }
    out.push(end.saturating_sub(last));
    out
}

fn percentiles(mut samples: Vec<Duration>) -> Value {
    if samples.is_empty() {
        return Value::Null;
    }
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        round2(samples[i].as_secs_f64() * 1e3)
    };
    json!({ "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": at(1.0) })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Every acknowledged update is stored with the acknowledged bytes' digest; at most one round is
/// open; every published round made one version; each version's parent is an earlier one.
async fn verify(
    database: &str,
    acknowledged: &[(i64, String, String)],
    http: &reqwest::Client,
    urls: &[String],
) -> Result<Value, String> {
    // The lineage through the first replica that still answers (one may have been killed).
    let mut url = None;
    for u in urls {
        if http.get(format!("{u}/healthz")).send().await.is_ok() {
            url = Some(u.as_str());
            break;
        }
    }
    let url = url.ok_or("no server answers for the verification")?;
    let store = feedloop_server::db::Store::connect(database, Default::default())
        .await
        .map_err(|e| format!("--verify-database: {e}"))?;
    let mut by_round: HashMap<i64, Vec<(&str, &str)>> = HashMap::new();
    for (round, client, digest) in acknowledged {
        by_round.entry(*round).or_default().push((client, digest));
    }
    let mut missing = 0usize;
    for (round, acked) in &by_round {
        let stored: HashSet<(String, String)> = store
            .update_digests(*round)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        missing += acked
            .iter()
            .filter(|(c, d)| !stored.contains(&(c.to_string(), d.to_string())))
            .count();
    }
    let rounds: RoundList = get(http, &format!("{url}/v1/rounds?limit=1000")).await?;
    let models: ModelList = get(http, &format!("{url}/v1/models")).await?;
    let open = rounds
        .rounds
        .iter()
        .filter(|r| r.status == RoundStatus::Open)
        .count();
    let published: Vec<&str> = rounds
        .rounds
        .iter()
        .filter_map(|r| r.published_version.as_deref())
        .collect();
    let mut seen = HashSet::new();
    let mut parents_ok = true;
    for v in &models.versions {
        if let Some(p) = &v.parent_version {
            parents_ok &= seen.contains(p.as_str());
        }
        seen.insert(v.version.as_str());
    }
    let distinct: HashSet<&str> = published.iter().copied().collect();
    Ok(json!({
        "acknowledgedMissing": missing,
        "roundsWithUpdates": by_round.len(),
        "openRounds": open,
        "publishedRounds": published.len(),
        "versions": models.versions.len(),
        "oneVersionPerPublishedRound": distinct.len() == published.len()
            && published.len() + 1 == models.versions.len(),
        "parentsEarlier": parents_ok,
        "ok": missing == 0 && open <= 1 && parents_ok && distinct.len() == published.len()
            && published.len() + 1 == models.versions.len(),
    }))
}

async fn get<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    http.get(url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .json()
        .await
        .map_err(|e| format!("{url}: {e}"))
}
