//! Privacy on the device: the report (`privacyReport`), the ledger (`exportLedger`), the next
//! upload before it is sent (`inspectNextUpload`) and its release (`releaseNextUpload`), plus the
//! benchmark page's diagnostics. The decisions and the views are the core's
//! (`feedloop_core::contribution`, `feedloop_core::privacy_report`).

use feedloop_privacy::rng::OsCsprng;
use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert::{now_ms, round_config, to_js};
use crate::error::{invalid, Error, JsResult};
use crate::{indexeddb, Ranker};

/// The OS-seeded CSPRNG the privatizer draws from.
pub(crate) fn secure_rng() -> JsResult<OsCsprng> {
    OsCsprng::new().map_err(|e| invalid(format!("no secure randomness: {e}")))
}

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
    /// The privacy policy, what has been spent and what remains, and the ledger of every release
    /// (each entry also a dp-accounting `DpEvent`, so a privacy team can replay it in Python).
    #[wasm_bindgen(js_name = privacyReport, unchecked_return_type = "PrivacyReport")]
    pub fn privacy_report(&self) -> JsResult<JsValue> {
        to_js(&self.inner.borrow().privacy.report(now_ms()))
    }

    /// The payload inspector's metric reports: released ones waiting for delivery (their exact
    /// bodies and ledger entries), then noted ones (what will leave at the next sync, and how it
    /// is randomized; the verdicts themselves are not shown: they never leave).
    #[wasm_bindgen(js_name = pendingMetricReports, unchecked_return_type = "MetricPreview[]")]
    pub fn pending_metric_reports(&self) -> JsResult<JsValue> {
        to_js(&self.inner.borrow().privacy.metric_previews())
    }

    /// Whether the user's consent to contributing stands (the ledger's last consent change).
    #[wasm_bindgen(getter)]
    pub fn consent(&self) -> bool {
        self.inner.borrow().privacy.consented()
    }

    /// Records the user's consent to contributing (`true`) or its withdrawal (`false`) in the
    /// ledger and, with storage `name`, saves it durably together with the upload queue, which a
    /// withdrawal empties (the core's `Outbox::from_json`). Resolves to whether consent changed.
    #[wasm_bindgen(js_name = setConsent, unchecked_return_type = "Promise<boolean>")]
    pub fn set_consent(&self, name: Option<String>, granted: bool) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let now = now_ms();
            let (changed, mine) = {
                let mut guard = inner.borrow_mut();
                let inner = &mut *guard;
                let changed = inner
                    .privacy
                    .set_consent(granted, now, &inner.global_version)
                    .map_err(Error::from)?;
                (changed, inner.privacy.clone())
            };
            if let Some(name) = name {
                let (written, outbox) = indexeddb::save_privacy(&name, &mine, None, now)
                    .await
                    .map_err(Error::Storage)?;
                let mut inner = inner.borrow_mut();
                inner.privacy = written;
                inner.outbox = outbox;
            } else if !granted {
                inner.borrow_mut().outbox = Default::default();
            }
            Ok(JsValue::from_bool(changed))
        })
    }

    /// The ledger as JSON (`feedloop privacy verify-ledger` checks it).
    #[wasm_bindgen(js_name = exportLedger)]
    pub fn export_ledger(&self) -> String {
        self.inner.borrow().privacy.state().ledger.to_json()
    }

    /// The next upload for `round`, exactly as it would leave the device — bytes and decoded form —
    /// before anything is sent. Throws an `Error` if the round asks for weaker noise than the
    /// policy allows, the budget cannot pay for it, or it is for another model version.
    #[wasm_bindgen(js_name = inspectNextUpload, unchecked_return_type = "InspectedUpload")]
    pub fn inspect_next_upload(
        &self,
        #[wasm_bindgen(unchecked_param_type = "RoundConfig")] round: JsValue,
    ) -> JsResult<JsValue> {
        let round = round_config(round)?;
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        let now = now_ms();
        let learning = inner.feedback.learning_state().clone();
        let fresh = match &inner.pending {
            Some(p) => p.round() != &round || !p.accounts_for(&learning.delta),
            None => true,
        };
        if fresh {
            let prepared = inner
                .privacy
                .prepare(&learning, &round, now, &mut secure_rng()?)?;
            inner.pending = Some(prepared);
        }
        let prepared = inner.pending.as_ref().expect("prepared above");
        let inspected = inner.privacy.inspect(prepared, now);
        let value = to_js(&inspected)?;
        js_sys::Reflect::set(
            &value,
            &"bytes".into(),
            &Uint8Array::from(inspected.bytes.as_slice()),
        )
        .map_err(|_| invalid("could not build the inspected upload"))?;
        Ok(value)
    }

    /// Releases the upload `inspectNextUpload` showed for `round` (preparing it if needed): charges
    /// the budget, appends the ledger entry, durably saves both in IndexedDB database `name`, and
    /// only then resolves with the bytes to send. Rejects (and sends nothing) if storage fails —
    /// the spending stays counted in memory, so a failure can only over-count.
    #[wasm_bindgen(js_name = releaseNextUpload, unchecked_return_type = "Promise<Uint8Array>")]
    pub fn release_next_upload(
        &self,
        name: String,
        #[wasm_bindgen(unchecked_param_type = "RoundConfig")] round: JsValue,
    ) -> Promise {
        let prepared = self.inspect_next_upload(round.clone()).map(|_| ());
        let inner = self.inner.clone();
        future_to_promise(async move {
            prepared?;
            let (release, mine) = {
                let mut guard = inner.borrow_mut();
                let inner = &mut *guard;
                // Refused before the inspected upload is taken: a later release sends those bytes.
                inner.privacy.check_consent().map_err(Error::from)?;
                let prepared = inner.pending.take().expect("inspected above");
                let release = inner
                    .privacy
                    .release(prepared, now_ms())
                    .map_err(Error::from)?;
                (release, inner.privacy.clone())
            };
            let (written, outbox) = indexeddb::save_privacy(&name, &mine, None, now_ms())
                .await
                .map_err(Error::Storage)?;
            let mut inner = inner.borrow_mut();
            inner.privacy = written;
            inner.outbox = outbox;
            Ok(Uint8Array::from(release.bytes()).into())
        })
    }
}

/// Diagnostics for the benchmark page: `count` exact discrete Gaussian draws of standard deviation
/// `sigma` (integers, as f64) from the OS-seeded CSPRNG.
#[wasm_bindgen(js_name = sampleDiscreteGaussian)]
pub fn sample_discrete_gaussian(sigma: f64, count: u32) -> JsResult<js_sys::Float64Array> {
    let mut out = vec![0i64; count as usize];
    feedloop_privacy::sampler::sample_discrete_gaussian_batch(sigma, &mut out)
        .map_err(|e| invalid(e.to_string()))?;
    let values: Vec<f64> = out.iter().map(|v| *v as f64).collect();
    Ok(js_sys::Float64Array::from(values.as_slice()))
}

/// Diagnostics for the benchmark page: privatizes one update of `dimension` values (an arbitrary
/// deterministic vector, C = 1, γ = 0.001, σ = 4) and returns its encoded size in bytes.
/// Diagnostics for the benchmark page: a secure round's device step for one update of `dimension`
/// values — clip, round, Prio3 shard, HPKE seal to two fixed keys — and the report's size in bytes.
#[wasm_bindgen(js_name = sealBenchmarkReport)]
pub fn seal_benchmark_report(dimension: u32) -> JsResult<u32> {
    let size =
        feedloop_core::contribution::seal_benchmark_report(dimension as usize, &mut secure_rng()?)
            .map_err(Error::from)?;
    Ok(size as u32)
}

#[wasm_bindgen(js_name = privatizeBenchmarkUpdate)]
pub fn privatize_benchmark_update(dimension: u32) -> JsResult<u32> {
    let update: Vec<f32> = (0..dimension)
        .map(|i| ((i % 17) as f32 - 8.0) * 1e-3)
        .collect();
    let config = feedloop_privacy::PrivatizerConfig::new(1.0, 0.001, 4.0)
        .map_err(|e| invalid(e.to_string()))?;
    let privatized = feedloop_privacy::privatize_with_os_rng(&update, &config)
        .map_err(|e| invalid(e.to_string()))?;
    Ok(privatized.to_bytes().len() as u32)
}
