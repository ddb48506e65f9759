//! Ingest throughput and aggregation time of feedloop-server (numbers, not assertions).
//!
//!     cargo bench -p feedloop-server --bench ingest
//!
//! 1. **Ingest**: updates/s over loopback HTTP with 32 concurrent connections (reqwest), each update
//!    a real privatized payload from its own registered client, answered `202` only after its
//!    transaction committed — next to a bare axum handler on the same machine in the same run
//!    (reads the body, answers `202`, no database). The server runs on its own tokio runtime, the
//!    load generator on another, in this one process. d = 132 (the bundled model's head) and
//!    d = 10,000 (a model built here: the bundled model's body widened to D = 4,998 over its first
//!    2,000 vocabulary tokens, so that its head has 2·D + 4 = 10,000 parameters).
//! 2. **Aggregation**: the time of `App::close_round` (read the round's payloads, decode,
//!    exact integer FedAvg, server optimizer step, rewrite the ONNX file, publish) against the
//!    cohort size, in-process.
//!
//! SQLite (a temp file, WAL) twice: `synchronous = FULL`, the default (every commit fsynced, so an
//! acknowledged update survives power loss), and `NORMAL` (survives a killed process, which
//! server/tests/crash.rs checks, not an OS crash): the cost of that durability; PostgreSQL too when
//! `FEEDLOOP_TEST_POSTGRES_URL` is set. Without `--bench` (e.g. `cargo test --benches`) it runs
//! once with tiny sizes as a smoke test.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;
use axum::Router;
use feedloop_core::protocol::NewRound;
use feedloop_privacy::{privatize_with_os_rng, PrivatizerConfig};
use feedloop_server::auth::Claims;
use feedloop_server::{App, Config};
use prost::Message;
use sqlx::Connection;
use tract_onnx::pb::{tensor_proto, tensor_shape_proto, type_proto, ModelProto, TensorProto};

const DEPLOYMENT_KEY: &str = "site-key-0123456789abcdef";
const ADMIN_KEY: &str = "admin-key-0123456789abcdef";
const CONNECTIONS: usize = 32;
const CLIP: f64 = 1.0;
const GAMMA: f64 = 0.01;
const SIGMA: f64 = 4.0;

struct Sizes {
    /// Updates per ingest pass, by dimension.
    ingest: [(usize, usize); 2],
    passes: usize,
    /// Cohort sizes for the aggregation table, by dimension.
    cohorts: [(usize, &'static [usize]); 2],
}

const WIDE_D: usize = 4998;
const WIDE_VOCAB: usize = 2000;
/// The bundled model's head parameters (contract 2: 2 × 64 + 4).
const BUNDLED_D: usize = 2 * 64 + 4;

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes = if full {
        Sizes {
            ingest: [(BUNDLED_D, 8000), (2 * WIDE_D + 4, 2000)],
            passes: 3,
            cohorts: [
                (BUNDLED_D, &[10, 100, 1000, 10000]),
                (2 * WIDE_D + 4, &[10, 100, 1000]),
            ],
        }
    } else {
        Sizes {
            ingest: [(BUNDLED_D, 64), (2 * WIDE_D + 4, 32)],
            passes: 1,
            cohorts: [(BUNDLED_D, &[10]), (2 * WIDE_D + 4, &[10])],
        }
    };
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("server")
        .build()
        .unwrap();
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("client")
        .build()
        .unwrap();
    let mut backends = vec!["sqlite", "sqlite-normal"];
    if std::env::var_os("FEEDLOOP_TEST_POSTGRES_URL").is_some() {
        backends.push("postgres");
    } else {
        eprintln!("(PostgreSQL not measured: FEEDLOOP_TEST_POSTGRES_URL is unset)");
    }
    println!(
        "feedloop-server ingest benchmark: {} logical CPUs, {CONNECTIONS} connections, \
         round C = {CLIP}, γ = {GAMMA}, σ = {SIGMA}{}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if full { "" } else { " (smoke run: tiny sizes)" }
    );

    let t = Instant::now();
    let wide = wide_model(WIDE_D, WIDE_VOCAB);
    eprintln!(
        "built the d = {} model ({} bytes) in {:.1?}",
        2 * WIDE_D + 4,
        wide.len(),
        t.elapsed()
    );
    let model_for = |d: usize| -> Arc<[u8]> {
        if d == BUNDLED_D {
            feedloop_core::BUNDLED_MODEL.into()
        } else {
            wide.clone().into()
        }
    };

    // ----- ingest -----
    println!();
    println!(
        "## Ingest over loopback HTTP (updates/s, median of {} passes)",
        sizes.passes
    );
    println!();
    println!("| d | payload bytes | updates/pass | bare axum 202 | feedloop sqlite (FULL) | ratio | sqlite (NORMAL) | ratio | feedloop postgres | ratio |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for &(d, n) in &sizes.ingest {
        let t = Instant::now();
        let payloads = privatized_payloads(d, n);
        eprintln!("privatized {n} updates of d = {d} in {:.1?}", t.elapsed());
        let payload_len = payloads.iter().map(Bytes::len).sum::<usize>() / n;

        // The bare handler: same requests, no database.
        let bare = {
            let router = Router::new().route(
                "/v1/rounds/{round_id}/updates",
                post(|body: Bytes| async move {
                    std::hint::black_box(body.len());
                    StatusCode::ACCEPTED
                }),
            );
            let (addr, stop) = spawn_server(&server_rt, router);
            let tokens: Vec<String> = (0..n).map(|i| format!("token-{i}")).collect();
            let rates: Vec<f64> = (0..sizes.passes)
                .map(|_| client_rt.block_on(load(addr, "1", "1", &tokens, &payloads)))
                .collect();
            let _ = stop.send(());
            median(rates)
        };

        let mut row = format!("| {d} | {payload_len} | {n} | {bare:.0} |");
        for backend in ["sqlite", "sqlite-normal", "postgres"] {
            if !backends.contains(&backend) {
                row.push_str(" – | – |");
                continue;
            }
            let (app, _dir) = server_rt.block_on(async {
                let (config, dir) = config(backend, model_for(d)).await;
                (App::new(config).await.unwrap(), dir)
            });
            let clients = server_rt.block_on(register(&app, n));
            let tokens: Vec<String> = clients.iter().map(|(_, t)| t.clone()).collect();
            let listener = server_rt
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let addr = listener.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let served = server_rt.spawn(feedloop_server::serve(app.clone(), listener, async {
                let _ = stopped.await;
            }));
            let mut rates = Vec::new();
            for _ in 0..sizes.passes {
                let round = server_rt.block_on(open_round(&app, 1_000_000_000));
                let rate = client_rt.block_on(load(
                    addr,
                    &round.round_id.to_string(),
                    &round.model_version.to_string(),
                    &tokens,
                    &payloads,
                ));
                let closed = server_rt
                    .block_on(app.close_round(round.round_id, "admin", Some("bench")))
                    .unwrap();
                assert_eq!(closed.received as usize, n, "every update stored");
                rates.push(rate);
            }
            let _ = stop.send(());
            server_rt.block_on(served).unwrap().unwrap();
            let rate = median(rates);
            row.push_str(&format!(" {rate:.0} | {:.1}× |", bare / rate));
        }
        println!("{row}");
    }

    // ----- aggregation -----
    println!();
    println!("## Aggregation: close_round → published (in-process; ms)");
    println!();
    println!("| backend | d | cohort | close_round ms | per update µs |");
    println!("|---|---:|---:|---:|---:|");
    for backend in &backends {
        for &(d, cohorts) in &sizes.cohorts {
            let max = *cohorts.iter().max().unwrap();
            let t = Instant::now();
            let payloads = privatized_payloads(d, max);
            eprintln!("privatized {max} updates of d = {d} in {:.1?}", t.elapsed());
            let (app, _dir) = server_rt.block_on(async {
                let (config, dir) = config(backend, model_for(d)).await;
                (App::new(config).await.unwrap(), dir)
            });
            let clients = Arc::new(server_rt.block_on(register(&app, max)));
            let payloads = Arc::new(payloads);
            for &n in cohorts {
                let ms = server_rt.block_on(async {
                    let round = open_round(&app, n as i64).await;
                    let version = round.model_version.to_string();
                    let next = Arc::new(AtomicUsize::new(0));
                    let mut submitters = tokio::task::JoinSet::new();
                    for _ in 0..4 {
                        let (app, clients) = (app.clone(), clients.clone());
                        let (payloads, next, version) =
                            (payloads.clone(), next.clone(), version.clone());
                        submitters.spawn(async move {
                            loop {
                                let i = next.fetch_add(1, Ordering::Relaxed);
                                if i >= n {
                                    break;
                                }
                                app.submit_update(
                                    &clients[i].0,
                                    round.round_id,
                                    Some(&version),
                                    &payloads[i],
                                )
                                .await
                                .unwrap();
                            }
                        });
                    }
                    submitters.join_all().await;
                    let t = Instant::now();
                    let closed = app
                        .close_round(round.round_id, "admin", Some("bench"))
                        .await
                        .unwrap();
                    let elapsed = t.elapsed();
                    assert_eq!(
                        closed.status,
                        feedloop_core::protocol::RoundStatus::Published
                    );
                    assert_eq!(closed.cohort_size, Some(n as i64));
                    elapsed.as_secs_f64() * 1e3
                });
                println!(
                    "| {backend} | {d} | {n} | {ms:.1} | {:.1} |",
                    ms * 1e3 / n as f64
                );
            }
        }
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Serves `router` on a free loopback port on `rt` until the sender is used or dropped.
fn spawn_server(
    rt: &tokio::runtime::Runtime,
    router: Router,
) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    rt.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    (addr, stop)
}

/// POSTs update i with token i to the round from CONNECTIONS concurrent tasks (one keep-alive
/// connection each); returns updates/s. Every answer must be 202.
async fn load(
    addr: SocketAddr,
    round_id: &str,
    model_version: &str,
    tokens: &[String],
    payloads: &[Bytes],
) -> f64 {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CONNECTIONS)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let url: Arc<str> = format!("http://{addr}/v1/rounds/{round_id}/updates").into();
    let jobs: Arc<Vec<(String, Bytes)>> = Arc::new(
        tokens
            .iter()
            .map(|t| format!("Bearer {t}"))
            .zip(payloads.iter().cloned())
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let model_version: Arc<str> = model_version.into();
    // Open the connections first (one request each; not counted, stores nothing: a bad token).
    let warm: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let _ = http.post(&*url).bearer_auth("warm-up").send().await;
            })
        })
        .collect();
    for w in warm {
        w.await.unwrap();
    }
    let start = Instant::now();
    let tasks: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let (http, url, jobs, next) = (http.clone(), url.clone(), jobs.clone(), next.clone());
            let model_version = model_version.clone();
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((bearer, payload)) = jobs.get(i) else {
                        break;
                    };
                    let r = http
                        .post(&*url)
                        .header("authorization", bearer)
                        .header("x-feedloop-model-version", &*model_version)
                        .header("content-type", "application/octet-stream")
                        .body(payload.clone())
                        .send()
                        .await
                        .unwrap();
                    let status = r.status();
                    let body = r.bytes().await.unwrap();
                    assert_eq!(
                        status,
                        StatusCode::ACCEPTED,
                        "{}",
                        String::from_utf8_lossy(&body)
                    );
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    tokens.len() as f64 / start.elapsed().as_secs_f64()
}

/// `n` distinct privatized updates of dimension `d` (in parallel over the CPUs).
fn privatized_payloads(d: usize, n: usize) -> Vec<Bytes> {
    let cfg = PrivatizerConfig::new(CLIP, GAMMA, SIGMA).unwrap();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let mut out: Vec<(usize, Bytes)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break mine;
                        }
                        let delta: Vec<f32> = (0..d)
                            .map(|j| ((j as f32 * 0.37 + i as f32 * 1.3).sin()) * 0.05)
                            .collect();
                        let u = privatize_with_os_rng(&delta, &cfg).unwrap();
                        mine.push((i, Bytes::from(u.to_bytes())));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, b)| b).collect()
}

/// A server configuration on a fresh database; the SQLite folder goes with the guard.
async fn config(backend: &str, model: Arc<[u8]>) -> (Config, TempDir) {
    let unique = format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000_000
    );
    let (url, dir) = if backend.starts_with("sqlite") {
        let dir = std::env::temp_dir().join(format!("feedloop-bench-{unique}"));
        std::fs::create_dir_all(&dir).unwrap();
        (format!("sqlite://{}/feedloop.db", dir.display()), Some(dir))
    } else {
        let admin_url = std::env::var("FEEDLOOP_TEST_POSTGRES_URL").unwrap();
        let name = format!("feedloop_bench_{unique}");
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let (head, query) = match admin_url.split_once('?') {
            Some((h, q)) => (h.to_string(), format!("?{q}")),
            None => (admin_url.clone(), String::new()),
        };
        let base = &head[..head.rfind('/').unwrap()];
        (format!("{base}/{name}{query}"), None)
    };
    let mut config = Config::new(url);
    if backend == "sqlite-normal" {
        config.sqlite_synchronous = feedloop_server::SqliteSynchronous::Normal;
    }
    config.deployment_keys = vec![format!("site={DEPLOYMENT_KEY}").parse().unwrap()];
    config.admin_keys = vec![ADMIN_KEY.to_string()];
    config.base_model = model;
    config.max_body_bytes = 1 << 20;
    (config, TempDir(dir))
}

struct TempDir(Option<std::path::PathBuf>);

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Some(dir) = &self.0 {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// `n` registered clients (claims and token).
async fn register(app: &App, n: usize) -> Vec<(Claims, String)> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let issued = app.register(DEPLOYMENT_KEY).await.unwrap();
        out.push((issued.claims, issued.token));
    }
    out
}

async fn open_round(app: &App, min_cohort: i64) -> feedloop_server::db::RoundRow {
    app.open_round(
        "bench",
        NewRound {
            clip_norm: CLIP,
            granularity: GAMMA,
            noise_stddev: SIGMA,
            min_cohort,
            target_count: None,
            deadline: None,
            duration_seconds: None,
            dimension: None,
            aggregation: Default::default(),
        },
    )
    .await
    .unwrap()
}

/// The bundled model with its body widened to `dims` dimensions over its first `vocab` tokens
/// (deterministic pseudo-random f32 embeddings in place of its packed table): a valid feedloop
/// model (docs/MODEL.md) whose head has 2·dims + 4 parameters (contract 2, like the bundled
/// model). Only the head's size matters here, not the body's quality.
fn wide_model(dims: usize, vocab: usize) -> Vec<u8> {
    let mut proto = ModelProto::decode(feedloop_core::BUNDLED_MODEL).unwrap();
    let graph = proto.graph.as_mut().unwrap();
    // the int4 table's unpacking (tools/distill_model.py `table_graph`) gives way to a plain table
    graph.node.retain(|n| !n.name.starts_with("int4_"));
    graph
        .initializer
        .retain(|t| !t.name.starts_with("int4_") && !t.name.starts_with("token_embeddings_"));
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    graph.initializer.push(TensorProto {
        name: "token_embeddings".into(),
        dims: vec![vocab as i64, dims as i64],
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: (0..vocab * dims)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (((state >> 56) as u8 as i8) as f32 * 0.01).to_le_bytes()
            })
            .collect(),
        ..Default::default()
    });
    for t in &mut graph.initializer {
        let (shape, raw): (Vec<i64>, Vec<u8>) = match t.name.as_str() {
            "lexical_idf" => (vec![vocab as i64], t.raw_data[..vocab].to_vec()),
            "head_interaction" | "head_candidate" => (
                vec![dims as i64],
                (0..dims).flat_map(|_| 0f32.to_le_bytes()).collect(),
            ),
            _ => continue,
        };
        t.dims = shape;
        t.raw_data = raw;
    }
    for output in graph.output.iter_mut().filter(|o| o.name == "embedding") {
        let Some(type_proto::Value::TensorType(tensor)) =
            output.r#type.as_mut().and_then(|t| t.value.as_mut())
        else {
            panic!("`embedding` is not a tensor");
        };
        let shape = tensor.shape.as_mut().unwrap();
        shape.dim[1].value = Some(tensor_shape_proto::dimension::Value::DimValue(dims as i64));
    }
    for prop in &mut proto.metadata_props {
        match prop.key.as_str() {
            "feedloop.vocab" => {
                prop.value = prop
                    .value
                    .lines()
                    .take(vocab)
                    .collect::<Vec<_>>()
                    .join("\n")
            }
            "feedloop.dimensions" => prop.value = dims.to_string(),
            _ => {}
        }
    }
    let bytes = proto.encode_to_vec();
    let model = feedloop_core::RewardModel::from_bytes(&bytes).expect("the widened model loads");
    assert_eq!(model.head().to_vector().len(), 2 * dims + 4);
    bytes
}
