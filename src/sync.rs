//! Sync with the feedloop server: pull the global model, contribute a privatized update to the open
//! round, deliver queued uploads (with backoff, and by `sendBeacon` when the page is hidden), and
//! send the metric reports noted since the last sync (`feedloop_core::metric_reports`).
//!
//! The order of a sync is the privacy order: an upload is privatized and charged (`DevicePrivacy`),
//! recorded and queued in one IndexedDB transaction, and only then handed to the network layer
//! (`network.rs`), which accepts nothing but queued uploads. Whether to contribute is the core's
//! decision (`DevicePrivacy::eligibility`).

use std::cell::RefCell;
use std::rc::Rc;

use feedloop_core::metric_reports::MetricRelease;
use feedloop_core::outbox::{QueuedUpload, SendOutcome, Settled};
use feedloop_core::protocol::UnixMillis;
use feedloop_privacy::accounting::zcdp_to_approx_dp;
use js_sys::Promise;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert::{check_fields, now_ms, to_js};
use crate::error::{invalid, Error, JsResult};
use crate::network::{self, ClientToken, GlobalModel, NetError, OpenRound, ServerConfig};
use crate::persistence::save_personal;
use crate::privacy::secure_rng;
use crate::{indexeddb, Inner, Ranker};

/// The adopted global model, as stored.
#[derive(Serialize, Deserialize)]
struct StoredGlobal {
    version: String,
    head: Vec<f32>,
}

/// What one `sync` did, for the page (and the `sync` event).
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct SyncReport {
    /// The server could not be reached (or answered 5xx): queued uploads wait for the next sync.
    offline: bool,
    /// Why the sync stopped early, if it did.
    error: Option<String>,
    client_id: Option<String>,
    /// The global model version in use after this sync, and whether this sync adopted it.
    model_version: String,
    model_updated: bool,
    /// The open round, if any.
    round: Option<OpenRound>,
    /// This sync's contribution to the round: its id, payload hash and ε at the policy's δ.
    contribution: Option<Contribution>,
    /// Why no contribution was made (nothing learned, budget, policy, already contributed, ...).
    skipped: Option<String>,
    /// Uploads the server stored, or refused for good, during this sync.
    settled: Vec<Settled>,
    /// Uploads still waiting (with backoff).
    queued: usize,
    /// Metric reports this sync released (randomized, charged, in the ledger) and sent.
    metrics: Vec<MetricSent>,
}

/// One metric report of a sync.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MetricSent {
    /// What it measures ("thumbs": the thumbs-up rate of the answers this version ranked first;
    /// "stars": the star rating given under it).
    kind: &'static str,
    model_version: String,
    /// SHA-256 of the released payload, as in the ledger.
    sha256: String,
    /// ε of the randomized response.
    epsilon: f64,
    /// Whether the server stored it (a report that could not be sent is not retried: its cost
    /// is recorded, which can only over-count).
    delivered: bool,
    error: Option<String>,
}

/// One queued upload, for `pendingUploads()`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PendingUpload<'a> {
    round_id: &'a str,
    model_version: &'a str,
    sha256: &'a str,
    bytes: usize,
    attempts: u32,
    next_attempt_at: u64,
    beaconed: bool,
}

impl<'a> PendingUpload<'a> {
    fn of(u: &'a QueuedUpload) -> Self {
        Self {
            round_id: u.round_id(),
            model_version: u.model_version(),
            sha256: u.sha256(),
            bytes: u.bytes().len(),
            attempts: u.attempts(),
            next_attempt_at: u.next_attempt_ms(),
            beaconed: u.beaconed(),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Contribution {
    round_id: String,
    sha256: String,
    epsilon: f64,
}

fn server_config(value: JsValue) -> JsResult<ServerConfig> {
    check_fields(&value, &["url", "deploymentKey"], "server")?;
    let config: ServerConfig = serde_wasm_bindgen::from_value(value)
        .map_err(|e| invalid(format!("server must be {{ url, deploymentKey }}: {e}")))?;
    config.check().map_err(invalid)?;
    Ok(config)
}

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
    /// One sync with the server, using IndexedDB database `name` for the budget, ledger and upload
    /// queue: register (once), adopt a newer global model (rebasing what was learned on it),
    /// contribute a privatized update to the open round if something new was learned and the
    /// policy and budget allow it, and deliver queued uploads. Resolves with a report; an
    /// unreachable server is not an error (`offline: true`, uploads stay queued). Rejects with an
    /// `Error` for a bad configuration, a refused deployment key, or a storage failure.
    #[wasm_bindgen(unchecked_return_type = "Promise<SyncReport>")]
    pub fn sync(
        &self,
        name: String,
        #[wasm_bindgen(unchecked_param_type = "ServerOptions")] server: JsValue,
    ) -> Promise {
        let server = server_config(server);
        let inner = self.inner.clone();
        future_to_promise(async move {
            let server = server?;
            if !indexeddb::available() {
                return Err(
                    invalid("sync needs IndexedDB (the budget and ledger must persist)").into(),
                );
            }
            let report = run_sync(&inner, &name, &server).await?;
            Ok(to_js(&report)?)
        })
    }

    /// Hands every queued upload to `navigator.sendBeacon` (call it when the page is hidden: a fetch
    /// might not finish), once each. Synchronous, from the queue as last read; returns how many were handed
    /// over. The next `sync` confirms them (a repeat is acknowledged as a duplicate).
    pub fn beacon(
        &self,
        name: String,
        #[wasm_bindgen(unchecked_param_type = "ServerOptions")] server: JsValue,
    ) -> JsResult<u32> {
        let server = server_config(server)?;
        let (token, due) = {
            let inner = self.inner.borrow();
            let Some(token) = inner.client.clone() else {
                return Ok(0);
            };
            if !inner.privacy.consented() {
                return Ok(0);
            }
            // Not only the due ones: the page is going away, this is the last chance to send.
            (token, inner.outbox.uploads().to_vec())
        };
        let mut sent = Vec::new();
        for upload in due.iter().filter(|u| !u.beaconed()) {
            if network::beacon(&server, &token, upload) {
                sent.push(upload.sha256().to_string());
            }
        }
        for sha in &sent {
            self.inner.borrow_mut().outbox.mark_beaconed(sha);
        }
        if !sent.is_empty() {
            // Best effort: the page may be frozen before this completes (then the next sync
            // simply sends them again and the server answers "duplicate").
            let marked = sent.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let _ = indexeddb::update_outbox(&name, move |outbox| {
                    for sha in &marked {
                        outbox.mark_beaconed(sha);
                    }
                    Vec::new()
                })
                .await;
            });
        }
        Ok(sent.len() as u32)
    }

    /// The uploads waiting to be sent (privatized and ledgered already): round, payload hash,
    /// attempts and next attempt time.
    #[wasm_bindgen(js_name = pendingUploads, unchecked_return_type = "PendingUpload[]")]
    pub fn pending_uploads(&self) -> JsResult<JsValue> {
        let inner = self.inner.borrow();
        let list: Vec<PendingUpload> = inner
            .outbox
            .uploads()
            .iter()
            .map(PendingUpload::of)
            .collect();
        to_js(&list)
    }

    /// The global model version the personal head is built on ("bundled" before the first sync).
    #[wasm_bindgen(getter, js_name = modelVersion)]
    pub fn model_version(&self) -> String {
        self.inner.borrow().global_version.clone()
    }
}

/// Reads the adopted global model, the upload queue and the client token (part of `restore`).
pub(crate) async fn restore_sync_state(inner: &Rc<RefCell<Inner>>, name: &str) -> JsResult<()> {
    let global: Option<StoredGlobal> = indexeddb::load_json(name, indexeddb::GLOBAL_KEY)
        .await
        .map_err(Error::Storage)?;
    let client: Option<ClientToken> = indexeddb::load_json(name, indexeddb::CLIENT_KEY)
        .await
        .map_err(Error::Storage)?;
    let (outbox, _) = indexeddb::update_outbox(name, |_| Vec::new())
        .await
        .map_err(Error::Storage)?;
    let mut inner = inner.borrow_mut();
    if let Some(global) = global {
        inner.feedback.set_global(&global.version, &global.head)?;
        inner.global_version = global.version;
    }
    inner.client = client;
    inner.outbox = outbox;
    Ok(())
}

/// After a restored personal state replaced the in-memory one: its delta applies to the adopted
/// global model (a tab may have saved the state before the model it adopted).
pub(crate) fn reapply_global(inner: &mut Inner) -> JsResult<()> {
    if inner.global_version == "bundled" {
        return Ok(());
    }
    let version = inner.global_version.clone();
    let head = inner.feedback.global().1.to_vec();
    inner.feedback.set_global(&version, &head)?;
    inner.privacy.rebase(&version);
    Ok(())
}

async fn run_sync(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    server: &ServerConfig,
) -> Result<SyncReport, JsValue> {
    let mut report = SyncReport {
        model_version: inner.borrow().global_version.clone(),
        ..Default::default()
    };
    if network::offline() {
        report.offline = true;
        report.error = Some("the browser is offline".into());
        return finish(inner, report);
    }
    let token = match client_token(inner, name, server).await? {
        Ok(token) => token,
        Err(e) => return stop(inner, report, e),
    };
    report.client_id = Some(token.grant.client_id.clone());

    // 1. The global model.
    let etag = {
        let inner = inner.borrow();
        inner.model_etag.clone()
    };
    match network::current_model(server, &token, etag.as_deref()).await {
        Ok(Some(model)) => {
            if adopt(inner, name, model).await? {
                report.model_updated = true;
            }
        }
        Ok(None) => {}
        Err(e) => return stop(inner, report, e),
    }
    report.model_version = inner.borrow().global_version.clone();

    // 2. The open round: contribute if something new was learned.
    match network::open_round(server).await {
        Ok(Some(round)) => {
            match contribute(inner, name, &round).await? {
                Ok(contribution) => report.contribution = Some(contribution),
                Err(why) => report.skipped = Some(why),
            }
            report.round = Some(round);
        }
        Ok(None) => report.skipped = Some("no round is open".into()),
        Err(e) => return stop(inner, report, e),
    }

    // 3. Deliver what is queued (this contribution and any earlier ones).
    let (settled, offline) = deliver(inner, name, server, &token).await?;
    if let Some(round) = report.round.as_mut() {
        // The round as fetched did not count what this sync delivered to it.
        let delivered = settled
            .iter()
            .filter(|s| s.delivered && s.round_id == round.config.round_id)
            .count();
        round.received += delivered as i64;
    }
    report.settled = settled;
    report.offline = offline;

    // 4. Metric reports noted since the last sync.
    if !offline {
        let (sent, why) = report_metrics(inner, name, server, &token).await?;
        report.metrics = sent;
        report.error = why;
    }
    finish(inner, report)
}

/// Sends the metric reports released earlier whose delivery failed, then releases and sends every
/// noted one: each is randomized, charged and written to the ledger in IndexedDB before it is
/// handed to the network layer, like an update, and stays listed there until the server confirms
/// it. Stops at the first report the policy or the budget refuses (the note stays for a later
/// sync) and returns why, with the reports sent before it.
async fn report_metrics(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    server: &ServerConfig,
    token: &ClientToken,
) -> Result<(Vec<MetricSent>, Option<String>), JsValue> {
    let mut sent = Vec::new();
    let retries = inner.borrow().privacy.undelivered_metrics();
    for release in retries {
        sent.push(send_and_settle(inner, name, server, token, &release).await?);
    }
    if inner.borrow().privacy.state().pending_metrics.is_empty() {
        return Ok((sent, None));
    }
    let terms = match network::metric_terms(server).await {
        Ok(e) => e,
        Err(e) => return Ok((sent, Some(format!("metric reports wait: {e}")))),
    };
    loop {
        let now = now_ms();
        let (release, privacy) = {
            let mut inner = inner.borrow_mut();
            let mut rng = secure_rng()?;
            match inner.privacy.release_next_metric(&terms, now, &mut rng) {
                Ok(Some(release)) => (release, inner.privacy.clone()),
                Ok(None) => break,
                Err(e) => return Ok((sent, Some(format!("a metric report was refused: {e}")))),
            }
        };
        save_privacy_state(inner, name, &privacy, now).await?;
        sent.push(send_and_settle(inner, name, server, token, &release).await?);
    }
    Ok((sent, None))
}

async fn save_privacy_state(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    privacy: &feedloop_core::contribution::DevicePrivacy,
    now: u64,
) -> Result<(), JsValue> {
    let (written, outbox) = indexeddb::save_privacy(name, privacy, None, now)
        .await
        .map_err(Error::Storage)?;
    let mut inner = inner.borrow_mut();
    inner.privacy = written;
    inner.outbox = outbox;
    Ok(())
}

/// Sends one released report. Delivered (or already held by the server), or refused for good (a
/// 4xx other than a retryable one): it is no longer resent. Unreachable: it stays listed.
async fn send_and_settle(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    server: &ServerConfig,
    token: &ClientToken,
    release: &MetricRelease,
) -> Result<MetricSent, JsValue> {
    let result = network::send_metric(server, token, release).await;
    let settled = match &result {
        Ok(()) => true,
        Err(e) => !e.retry(),
    };
    if settled {
        let privacy = {
            let mut inner = inner.borrow_mut();
            inner.privacy.metric_delivered(release);
            inner.privacy.clone()
        };
        save_privacy_state(inner, name, &privacy, now_ms()).await?;
    }
    Ok(MetricSent {
        kind: release.kind(),
        model_version: release.model_version().to_string(),
        sha256: release.ledger_entry().payload_sha256.clone(),
        // ρ = ε²/2 for randomized response.
        epsilon: (2.0 * release.ledger_entry().rho).sqrt(),
        delivered: result.is_ok(),
        error: result.err().map(|e| e.to_string()),
    })
}

fn stop(
    inner: &Rc<RefCell<Inner>>,
    mut report: SyncReport,
    error: NetError,
) -> Result<SyncReport, JsValue> {
    report.offline = error.retry();
    report.error = Some(error.to_string());
    finish(inner, report)
}

fn finish(inner: &Rc<RefCell<Inner>>, mut report: SyncReport) -> Result<SyncReport, JsValue> {
    report.queued = inner.borrow().outbox.len();
    Ok(report)
}

/// The stored or a new client token. A refused deployment key is the developer's error (rejects);
/// an unreachable server is not (`Ok(Err(..))`).
async fn client_token(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    server: &ServerConfig,
) -> Result<Result<ClientToken, NetError>, JsValue> {
    // Unix milliseconds, as the server's `expiresAt`.
    let now = UnixMillis(now_ms() as i64);
    let current = inner
        .borrow()
        .client
        .clone()
        .filter(|t| t.valid_for(server, now));
    let fresh = match current {
        Some(token) if !token.grant.needs_refresh(now) => return Ok(Ok(token)),
        Some(token) => match network::refresh(server, &token).await {
            Ok(t) => t,
            Err(e) if e.retry() => return Ok(Ok(token)),
            Err(_) => match network::register(server).await {
                Ok(t) => t,
                Err(e) => return registration_failed(e),
            },
        },
        None => match network::register(server).await {
            Ok(t) => t,
            Err(e) => return registration_failed(e),
        },
    };
    indexeddb::save_json(name, indexeddb::CLIENT_KEY, &fresh)
        .await
        .map_err(Error::Storage)?;
    inner.borrow_mut().client = Some(fresh.clone());
    Ok(Ok(fresh))
}

fn registration_failed(e: NetError) -> Result<Result<ClientToken, NetError>, JsValue> {
    // Offline, or blocked by CORS: reported in the sync report (and an `error` event), not thrown.
    if e.retry() || e.cors() {
        Ok(Err(e))
    } else {
        Err(invalid(format!("the server refused to register this device: {e}")).into())
    }
}

/// Adopts a newer global model: the personal head becomes new head + delta, the budget's
/// "contributed" mark moves with it. Stored global first, then the personal and privacy state.
async fn adopt(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    model: GlobalModel,
) -> Result<bool, JsValue> {
    if inner.borrow().global_version == model.version {
        inner.borrow_mut().model_etag = model.etag;
        return Ok(false);
    }
    let privacy = {
        let mut guard = inner.borrow_mut();
        let inner = &mut *guard;
        inner
            .feedback
            .set_global(&model.version, &model.head)
            .map_err(Error::from)?;
        inner.global_version = model.version.clone();
        inner.model_etag = model.etag.clone();
        inner.privacy.rebase(&model.version);
        inner.pending = None;
        inner.privacy.clone()
    };
    let stored = StoredGlobal {
        version: model.version,
        head: model.head,
    };
    indexeddb::save_json(name, indexeddb::GLOBAL_KEY, &stored)
        .await
        .map_err(Error::Storage)?;
    save_personal(inner, name).await?;
    let (written, outbox) = indexeddb::save_privacy(name, &privacy, None, now_ms())
        .await
        .map_err(Error::Storage)?;
    let mut inner = inner.borrow_mut();
    inner.privacy = written;
    inner.outbox = outbox;
    Ok(true)
}

/// Privatizes, charges, records and queues this device's update for `round` (one transaction);
/// `Ok(Err(why))` when it should not or may not contribute.
async fn contribute(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    round: &OpenRound,
) -> Result<Result<Contribution, String>, JsValue> {
    let now = now_ms();
    let (release, privacy) = {
        let mut guard = inner.borrow_mut();
        let inner = &mut *guard;
        let learning = inner.feedback.learning_state().clone();
        if let Err(why) = inner.privacy.eligibility(
            &learning,
            &round.config,
            &inner.global_version,
            round.dimension,
        ) {
            return Ok(Err(why.to_string()));
        }
        let mut rng = secure_rng()?;
        let prepared = match inner
            .privacy
            .prepare(&learning, &round.config, now, &mut rng)
        {
            Ok(p) => p,
            // The policy refuses the round, or the budget cannot pay for it.
            Err(e) => return Ok(Err(e.to_string())),
        };
        let release = match inner.privacy.release(prepared, now) {
            Ok(r) => r,
            Err(e) => return Ok(Err(e.to_string())),
        };
        inner.pending = None;
        (release, inner.privacy.clone())
    };
    let upload = QueuedUpload::from_release(&release, now);
    let (written, outbox) = indexeddb::save_privacy(name, &privacy, Some(upload), now)
        .await
        .map_err(Error::Storage)?;
    let epsilon = zcdp_to_approx_dp(release.ledger_entry().rho, privacy.state().policy.delta())
        .unwrap_or(f64::NAN);
    let mut inner = inner.borrow_mut();
    inner.privacy = written;
    inner.outbox = outbox;
    Ok(Ok(Contribution {
        round_id: release.round().round_id.clone(),
        sha256: release.ledger_entry().payload_sha256.clone(),
        epsilon,
    }))
}

/// Sends every due upload; records outcomes in storage. Returns what settled and whether the
/// server was unreachable.
async fn deliver(
    inner: &Rc<RefCell<Inner>>,
    name: &str,
    server: &ServerConfig,
    token: &ClientToken,
) -> Result<(Vec<Settled>, bool), JsValue> {
    // The stored queue (another tab may have queued or sent since).
    let (outbox, _) = indexeddb::update_outbox(name, |o| o.expire(now_ms()))
        .await
        .map_err(Error::Storage)?;
    let mut outcomes = Vec::new();
    let mut offline = false;
    for upload in outbox.due(now_ms()) {
        let outcome = network::send(server, token, &upload).await;
        if let SendOutcome::RetryLater(why) = &outcome {
            offline = true;
            if why.starts_with("401") {
                // Expired or unknown token: register again at the next sync.
                inner.borrow_mut().client = None;
            }
        }
        outcomes.push((upload.sha256().to_string(), outcome));
        if offline {
            break; // the rest would fail the same way; they keep their schedule
        }
    }
    let now = now_ms();
    let (outbox, settled) = indexeddb::update_outbox(name, move |o| {
        let jitter = js_sys::Math::random();
        let mut settled = Vec::new();
        for (sha, outcome) in &outcomes {
            settled.extend(o.record(sha, outcome, now, jitter));
        }
        settled
    })
    .await
    .map_err(Error::Storage)?;
    inner.borrow_mut().outbox = outbox;
    Ok((settled, offline))
}
