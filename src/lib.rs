//! feedloop's browser layer: a thin wasm-bindgen surface over `feedloop-core`.
//!
//! It converts JS values, validates them with messages a web developer can act on, and turns every
//! core error into a real JS `Error`. Model logic lives in the core; package entry points (`create()`,
//! fetching the bundled model) live in `js/index.js`.

mod client;
mod gpu;
mod observe;
mod storage;
mod sync;

use std::cell::RefCell;
use std::rc::Rc;

use feedloop_core::contribution::{DevicePrivacy, PreparedUpload, RoundConfig};
use feedloop_core::{
    Candidate, FeedbackLoop, FeedbackWeights, LearningConfig, PersonalState, RawFeedback,
    RewardModel,
};
use feedloop_privacy::accounting::zcdp_to_approx_dp;
use feedloop_privacy::budget::{PrivacyPolicy, DAY_MS};
use feedloop_privacy::rng::OsCsprng;
use js_sys::{Array, Float32Array, Function, Promise, Uint32Array, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::future_to_promise;

use crate::observe::{Observation, Recorder};

/// Every fallible export returns this; `JsError` arrives in JS as an `Error` with a stack.
pub type JsResult<T> = Result<T, JsError>;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** One candidate in a ranking: the id (yours, or the text for plain strings), its position in the
 *  input array and its personal score. */
export interface RankedCandidate { id: string; index: number; score: number }

/** Texts embedded once (`embedCatalog`), row-major, to score many times with `scoreCatalog`. */
export interface EmbeddedCatalog { dimensions: number; vectors: Float32Array; tokenCounts: Uint32Array }

/** A candidate with an id of yours, so feedback can name it. */
export interface CandidateInput { id: string; text: string }

/** Facts about the loaded model. */
export interface ModelInfo {
  contractVersion: string;
  dimensions: number;
  maxTokens: number;
  vocabSize: number;
  headParameters: number;
  metadata: [string, string][];
}

export type FlagCategory = "wrong" | "harmful" | "off-topic";

/** Common to every event: the context it was judged in (default: where the candidate was last
 *  ranked) and when (ms since 1970, default now; more than 5 minutes ahead is an error). */
interface EventBase { context?: string; timestamp?: number }

/** Every feedback event, by kind. */
export type FeedbackEvent = EventBase & (
  | { kind: "thumbs"; candidate: string; up: boolean }
  | { kind: "stars"; candidate: string; stars: 1 | 2 | 3 | 4 | 5 }
  | { kind: "pairwise"; winner: string; loser: string }
  | { kind: "correction"; candidate: string; text: string }
  | { kind: "flag"; candidate: string; category: FlagCategory }
  | { kind: "click"; candidate: string }
  | { kind: "dwell"; candidate: string; ms: number }
  | { kind: "copy"; candidate: string }
  | { kind: "regenerate"; candidate: string }
  | { kind: "skip"; candidate: string }
);

export type FeedbackKind = FeedbackEvent["kind"];

/** What recording an event did. */
export interface FeedbackOutcome {
  kind: FeedbackKind;
  /** Whether the personal head learned from it (capped or too-short events are only logged). */
  learned: boolean;
  reason?: string;
  /** The (first named) candidate's personal score before and after. */
  scoreBefore: number;
  scoreAfter: number;
}

/** The parts of a candidate's score: score = relevance + globalPreference + personalAdjustment. */
export interface Explanation {
  candidate: string;
  context: string;
  score: number;
  relevance: number;
  globalPreference: number;
  personalAdjustment: number;
  /** 0 (no feedback behind it) to 1. */
  confidence: number;
  directFeedback: number;
  learnedExamples: number;
}

/** One entry of the local activity log (never uploaded). */
export interface Activity {
  id: number;
  timestamp: number;
  kind: FeedbackKind;
  candidates: string[];
  weight: number;
  learned: boolean;
  scoreBefore: number;
  scoreAfter: number;
}

/** What the device learned: the personal head's offset from the global head. */
export interface LearningState { baseVersion: string; delta: number[]; exampleCount: number }

export interface FeedbackWeights {
  thumbs?: number; stars?: number; pairwise?: number; correction?: number; flag?: number;
  click?: number; dwell?: number; copy?: number; regenerate?: number; skip?: number;
  /** Dwell shorter than this teaches nothing (default 4000). */
  minDwellMs?: number;
  /** Events about one candidate that still teach (default 5). */
  maxEventsPerCandidate?: number;
}

export interface LearningConfig {
  learningRate?: number; clipNorm?: number; l2?: number;
  replaySteps?: number; replayCapacity?: number; seed?: number;
}

/** The device's privacy policy: at most `epsilon` at `delta` over any `windowDays`, and at most
 *  `maxRhoPerRelease` (zCDP) per release. Defaults: ε = 8, δ = 1e-6, 30 days, ρ ≤ 0.5. */
export interface PrivacyPolicyOptions {
  epsilon?: number; delta?: number; windowDays?: number; maxRhoPerRelease?: number;
}

export interface LearningOptions {
  weights?: FeedbackWeights; learning?: LearningConfig; privacy?: PrivacyPolicyOptions;
}

/** A federated round as a server announces it. */
export interface RoundConfig {
  roundId: string; modelVersion: string; clipNorm: number; granularity: number; noiseStddev: number;
}

/** The feedloop server to sync with. */
export interface ServerOptions {
  /** Base URL, e.g. "https://feedback.example.com"; "" for this page's origin. */
  url: string;
  /** The site's deployment key (`feedloop serve --deployment-key site=KEY`). */
  deploymentKey: string;
}

/** The open round as the server announces it. */
export interface OpenRound extends RoundConfig {
  dimension: number; minCohort: number; targetCount: number | null; received: number; deadline: number | null;
}

/** An upload that left the queue: stored by the server, or refused for good / expired. */
export interface SettledUpload { roundId: string; sha256: string; delivered: boolean; reason: string | null }

/** What one `sync()` did. */
export interface SyncReport {
  /** The server was unreachable (or failing): queued uploads wait, with backoff. */
  offline: boolean;
  error: string | null;
  clientId: string | null;
  /** The global model in use after this sync, and whether this sync adopted it. */
  modelVersion: string;
  modelUpdated: boolean;
  round: OpenRound | null;
  /** This sync's contribution: round, payload hash (as in the ledger) and its ε. */
  contribution: { roundId: string; sha256: string; epsilon: number } | null;
  /** Why nothing was contributed (nothing new learned, policy, budget, already contributed, no round). */
  skipped: string | null;
  settled: SettledUpload[];
  /** Uploads still waiting. */
  queued: number;
}

/** An upload waiting to be delivered (privatized and in the ledger already). */
export interface PendingUpload {
  roundId: string; modelVersion: string; sha256: string; bytes: number; attempts: number;
  nextAttemptAt: number; beaconed: boolean;
}

/** The next upload, exactly as it would leave the device, before anything is sent. */
export interface InspectedUpload {
  round: RoundConfig;
  /** The exact bytes (docs/PRIVACY.md, wire format). */
  bytes: Uint8Array;
  sha256: string;
  decoded: { dimension: number; values: number[]; clipNorm: number; granularity: number; noiseStddev: number };
  /** zCDP cost of this release, and its ε alone at the policy's δ. */
  rho: number;
  epsilon: number;
  /** ε spent in the current window if it is released. */
  windowEpsilonAfter: number;
}

/** Policy, spending and the ledger (each entry also a dp-accounting DpEvent). */
export interface PrivacyReport {
  policy: { epsilon: number; delta: number; windowDays: number; maxRhoPerRelease: number; totalRho: number; minNoiseMultiplier: number };
  spent: { windowRho: number; windowEpsilon: number; lifetimeRho: number; releases: number };
  remaining: { rho: number };
  ledger: any;
}
"#;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

struct Inner {
    feedback: FeedbackLoop,
    /// What this tab last loaded from or saved to storage (the base of a three-way merge).
    saved: PersonalState,
    privacy: DevicePrivacy,
    /// What `inspectNextUpload` showed: `releaseNextUpload` sends exactly these bytes.
    pending: Option<PreparedUpload>,
    /// Sync: the upload queue as last read from or written to storage (for `sendBeacon`, which
    /// must run synchronously while the page is being hidden).
    outbox: feedloop_core::outbox::Outbox,
    /// Sync: this device's client token, once registered.
    client: Option<sync::ClientToken>,
    /// Sync: the global model's version (what the personal delta is added to) and ETag.
    global_version: String,
    model_etag: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LearningOptions {
    #[serde(default)]
    weights: FeedbackWeights,
    #[serde(default)]
    learning: LearningConfig,
    #[serde(default)]
    privacy: PolicyOptions,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
struct PolicyOptions {
    epsilon: f64,
    delta: f64,
    window_days: f64,
    max_rho_per_release: f64,
}

impl Default for PolicyOptions {
    fn default() -> Self {
        Self {
            epsilon: 8.0,
            delta: 1e-6,
            window_days: 30.0,
            max_rho_per_release: 0.5,
        }
    }
}

impl PolicyOptions {
    fn policy(&self) -> JsResult<PrivacyPolicy> {
        if !(self.window_days.is_finite() && self.window_days > 0.0) {
            return Err(JsError::new(&format!(
                "feedloop: privacy.windowDays must be a positive number, got {}",
                self.window_days
            )));
        }
        PrivacyPolicy::new(
            self.epsilon,
            self.delta,
            (self.window_days * DAY_MS as f64) as u64,
            self.max_rho_per_release,
        )
        .map_err(|e| JsError::new(&format!("feedloop: invalid privacy policy: {e}")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateObject {
    id: String,
    text: String,
}

/// Ranks candidates for a context with an on-device reward model, and learns from feedback.
///
/// ```js
/// import { Ranker } from "feedloop";
/// const ranker = await Ranker.create();
/// ranker.rank("how do I reset my password?", ["Open Settings › Security.", "Bananas are yellow."]);
/// // → [{ id: "Open Settings › Security.", index: 0, score: 0.41 }, ...]
/// ```
#[wasm_bindgen(js_name = WasmRanker)]
pub struct Ranker {
    inner: Rc<RefCell<Inner>>,
    observations: RefCell<Vec<Observation>>,
    gpu: Rc<RefCell<gpu::GpuState>>,
}

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
    /// Loads a model from the bytes of an ONNX file that meets the feedloop contract.
    /// Throws an `Error` naming what is wrong if the bytes are not such a model.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: &[u8]) -> JsResult<Ranker> {
        Self::with_options(bytes, JsValue::UNDEFINED)
    }

    /// Like `fromBytes`, with feedback weights and learning settings.
    ///
    /// ```js
    /// WasmRanker.withOptions(bytes, { weights: { click: 0 }, learning: { learningRate: 0.5 } });
    /// ```
    #[wasm_bindgen(js_name = withOptions)]
    pub fn with_options(
        bytes: &[u8],
        #[wasm_bindgen(unchecked_param_type = "LearningOptions | undefined")] options: JsValue,
    ) -> JsResult<Ranker> {
        let options: LearningOptions = if options.is_undefined() || options.is_null() {
            LearningOptions::default()
        } else {
            check_fields(&options, &["weights", "learning", "privacy"], "options")?;
            serde_wasm_bindgen::from_value(options)
                .map_err(|e| JsError::new(&format!("feedloop: invalid options: {e}")))?
        };
        let model = RewardModel::from_bytes(bytes).map_err(to_js_error)?;
        let instance = (js_sys::Math::random() * 2f64.powi(53)) as u64;
        let feedback = FeedbackLoop::new(model, options.weights, options.learning, instance)
            .map_err(to_js_error)?;
        let saved = feedback.state().clone();
        let parameters = saved.learning.delta.len();
        let privacy = DevicePrivacy::new(
            options.privacy.policy()?,
            parameters,
            &saved.learning.base_version,
        )
        .map_err(to_js_error)?;
        Ok(Ranker {
            inner: Rc::new(RefCell::new(Inner {
                feedback,
                saved,
                privacy,
                pending: None,
                outbox: Default::default(),
                client: None,
                global_version: "bundled".into(),
                model_etag: None,
            })),
            observations: RefCell::new(Vec::new()),
            gpu: Rc::default(),
        })
    }

    /// Candidates best first under the personal head, as `{ id, index, score }`. Candidates are
    /// strings (their id is the text) or `{ id, text }` objects. Ties keep input order.
    ///
    /// ```js
    /// ranker.rank("best pizza in town", [{ id: "luigi", text: "Luigi's, wood-fired" }, { id: "tax", text: "Tax forms" }]);
    /// ```
    #[wasm_bindgen(unchecked_return_type = "RankedCandidate[]")]
    pub fn rank(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "(string | CandidateInput)[]")] candidates: JsValue,
    ) -> JsResult<JsValue> {
        let ranked = self.ranked(&context, &candidates)?;
        to_js(&ranked)
    }

    /// One personal score per candidate, in input order.
    pub fn score(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "(string | CandidateInput)[]")] candidates: JsValue,
    ) -> JsResult<Float32Array> {
        let ranked = self.ranked(&context, &candidates)?;
        let mut scores = vec![0f32; ranked.len()];
        for r in ranked {
            scores[r.index] = r.score;
        }
        Ok(Float32Array::from(scores.as_slice()))
    }

    /// Personal scores in input order for candidates given as parallel lists of ids and texts: the
    /// fast path the package's `rank` uses (it builds the sorted objects in JS, which is cheaper than
    /// converting objects across the boundary). Each list arrives as one joined string and the length
    /// of every piece in UTF-16 code units (JS `length`): one string crossing per list instead of one
    /// per candidate, which was a fifth of ranking 100 new texts.
    #[wasm_bindgen(js_name = scoreCandidates)]
    pub fn score_candidates(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        ids: &str,
        id_lengths: &[u32],
        texts: &str,
        text_lengths: &[u32],
    ) -> JsResult<Float32Array> {
        let context = string(&context, "context")?;
        let ids = split_utf16(ids, id_lengths, "ids")?;
        let texts = split_utf16(texts, text_lengths, "candidates")?;
        if ids.len() != texts.len() {
            return Err(JsError::new(&format!(
                "feedloop: {} ids for {} candidates",
                ids.len(),
                texts.len()
            )));
        }
        let list: Vec<Candidate> = ids
            .iter()
            .zip(&texts)
            .map(|(&id, &text)| Candidate { id, text })
            .collect();
        let ranked = self
            .inner
            .borrow_mut()
            .feedback
            .rank(&context, &list)
            .map_err(to_js_error)?;
        let mut scores = vec![0f32; ranked.len()];
        for r in ranked {
            scores[r.index] = r.score;
        }
        Ok(Float32Array::from(scores.as_slice()))
    }

    /// Global-head scores from token ids (no tokenizer, no cache): the work an ONNX runtime does with
    /// the same model, for like-for-like benchmarks against it. The candidates arrive as one flat
    /// buffer and their lengths (the JS wrapper flattens `Uint32Array[]`): two copies into wasm
    /// memory instead of one boundary crossing per candidate.
    #[wasm_bindgen(js_name = scoreTokenIds)]
    pub fn score_token_ids(
        &self,
        context_ids: &[u32],
        candidate_ids: &[u32],
        candidate_lengths: &[u32],
    ) -> JsResult<Float32Array> {
        let mut ids = Vec::with_capacity(context_ids.len() + candidate_ids.len());
        ids.extend_from_slice(context_ids);
        ids.extend_from_slice(candidate_ids);
        let mut lengths = Vec::with_capacity(candidate_lengths.len() + 1);
        lengths.push(context_ids.len() as u32);
        lengths.extend_from_slice(candidate_lengths);
        let inner = self.inner.borrow();
        let model = inner.feedback.model();
        let embeddings = model.embed_flat(&ids, &lengths).map_err(to_js_error)?;
        let max_tokens = model.info().max_tokens;
        let scores: Vec<f32> = (1..embeddings.len())
            .map(|i| {
                let features = feedloop_core::PairFeatures::new(
                    embeddings.row(0),
                    embeddings.row(i),
                    embeddings.token_counts[i],
                    max_tokens,
                );
                model.head().score(&features)
            })
            .collect();
        Ok(Float32Array::from(scores.as_slice()))
    }

    /// Chooses when catalog scoring may use WebGPU — `"auto"` (a hardware adapter and a large
    /// batch; the adapter is requested at the first such batch), `"always"` (any adapter, any batch;
    /// requested now) or `"off"`. Resolves to the adapter's description, or `null` when none is held
    /// (not requested yet, no `navigator.gpu`, no adapter, or `"off"`). Never rejects for a missing GPU.
    #[wasm_bindgen(js_name = setGpu, unchecked_return_type = "Promise<string | null>")]
    pub fn set_gpu(&self, mode: JsValue) -> JsResult<Promise> {
        let mode = mode
            .as_string()
            .and_then(|m| gpu::GpuMode::parse(&m))
            .ok_or_else(|| {
                JsError::new(&format!(
                    "feedloop: gpu must be \"auto\", \"always\" or \"off\", got {}",
                    type_name(&mode)
                ))
            })?;
        let state = self.gpu.clone();
        Ok(future_to_promise(async move {
            gpu::configure(state.clone(), mode).await;
            let adapter = match mode {
                gpu::GpuMode::Off => None,
                _ => state.borrow().adapter(),
            };
            Ok(adapter.map_or(JsValue::NULL, |a| JsValue::from_str(&a)))
        }))
    }

    /// The backend that computed the most recent `scoreCatalog`: `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.gpu.borrow().last_backend().to_string()
    }

    /// Why the GPU was tried and not used in the most recent `scoreCatalog` (its CPU result
    /// stands), or `undefined`.
    #[wasm_bindgen(getter, js_name = gpuError)]
    pub fn gpu_error(&self) -> Option<String> {
        self.gpu.borrow().last_error()
    }

    /// The WebGPU adapter in use (name, hardware or software), or `undefined`.
    #[wasm_bindgen(getter, js_name = gpuAdapter)]
    pub fn gpu_adapter(&self) -> Option<String> {
        self.gpu.borrow().adapter()
    }

    /// Embeds texts into one flat catalog — `{ dimensions, vectors, tokenCounts }`, row-major — to
    /// keep and score many times with `scoreCatalog` (the embedding is the expensive part).
    #[wasm_bindgen(js_name = embedCatalog, unchecked_return_type = "EmbeddedCatalog")]
    pub fn embed_catalog(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
    ) -> JsResult<JsValue> {
        let texts = strings(&texts, "texts")?;
        let inner = self.inner.borrow();
        let embedded = inner.feedback.model().embed(&texts).map_err(to_js_error)?;
        let counts: Vec<u32> = embedded.token_counts.iter().map(|&n| n as u32).collect();
        let catalog = js_sys::Object::new();
        let set = |key: &str, value: JsValue| {
            js_sys::Reflect::set(&catalog, &JsValue::from_str(key), &value).map(|_| ())
        };
        set("dimensions", JsValue::from(embedded.dimensions as u32))
            .and_then(|_| {
                set(
                    "vectors",
                    Float32Array::from(embedded.values.as_slice()).into(),
                )
            })
            .and_then(|_| set("tokenCounts", Uint32Array::from(counts.as_slice()).into()))
            .map_err(|_| JsError::new("feedloop: could not build the catalog object"))?;
        Ok(catalog.into())
    }

    /// Personal scores of every catalog entry for `context`, in catalog order — on WebGPU when
    /// `setGpu` allows it for this batch, else on the CPU, with the same numbers to 1e-5 relative
    /// (`backend` says which ran). Never blocks the main thread on the GPU. Rejects with an `Error`
    /// for a malformed catalog.
    #[wasm_bindgen(js_name = scoreCatalog, unchecked_return_type = "Promise<Float32Array>")]
    pub fn score_catalog(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        // Owned: wasm-bindgen copies the typed arrays into wasm memory once, and the catalog keeps
        // that copy (a slice would be copied again).
        vectors: Vec<f32>,
        token_counts: Vec<u32>,
    ) -> JsResult<Promise> {
        let context = string(&context, "context")?;
        let inner = self.inner.borrow();
        let model = inner.feedback.model();
        let (dimensions, max_tokens) = (model.info().dimensions, model.info().max_tokens);
        if vectors.len() != token_counts.len() * dimensions {
            return Err(JsError::new(&format!(
                "feedloop: a catalog of {} entries needs {} vector values ({dimensions} per entry), got {}",
                token_counts.len(),
                token_counts.len() * dimensions,
                vectors.len()
            )));
        }
        if let Some(i) = vectors.iter().position(|v| !v.is_finite()) {
            return Err(JsError::new(&format!(
                "feedloop: catalog vector value {i} (entry {}) is not a finite number",
                i / dimensions
            )));
        }
        if let Some(i) = token_counts.iter().position(|&n| n as usize > max_tokens) {
            return Err(JsError::new(&format!(
                "feedloop: catalog tokenCounts[{i}] is {}, more than the model's {max_tokens} tokens",
                token_counts[i]
            )));
        }
        let context = model.embed(&[context]).map_err(to_js_error)?;
        let catalog = feedloop_core::Embeddings {
            dimensions,
            values: vectors,
            token_counts: token_counts.iter().map(|&n| n as usize).collect(),
        };
        let head = inner.feedback.personal_head();
        let state = self.gpu.clone();
        let context = context.row(0).to_vec();
        Ok(future_to_promise(async move {
            let scores = gpu::score(state, context, catalog, head, max_tokens).await;
            Ok(Float32Array::from(scores.as_slice()).into())
        }))
    }

    /// L2-normalized embeddings, one `Float32Array` of `info.dimensions` values per text.
    #[wasm_bindgen(unchecked_return_type = "Float32Array[]")]
    pub fn embed(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
    ) -> JsResult<Array> {
        let texts = strings(&texts, "texts")?;
        let inner = self.inner.borrow();
        let embeddings = inner.feedback.model().embed(&texts).map_err(to_js_error)?;
        Ok((0..embeddings.len())
            .map(|i| Float32Array::from(embeddings.row(i)))
            .collect())
    }

    /// The token ids the model sees for `text` (truncated at `info.maxTokens`).
    pub fn tokenize(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] text: JsValue,
    ) -> JsResult<Uint32Array> {
        let text = string(&text, "text")?;
        let ids = self.inner.borrow().feedback.model().token_ids(&text);
        Ok(Uint32Array::from(ids.as_slice()))
    }

    /// Facts about the loaded model.
    #[wasm_bindgen(getter, unchecked_return_type = "ModelInfo")]
    pub fn info(&self) -> JsResult<JsValue> {
        to_js(self.inner.borrow().feedback.model().info())
    }

    /// Records one feedback event and learns from it at once; the next `rank` shows the change.
    /// Throws an `Error` for a malformed event or a candidate that was never ranked.
    ///
    /// ```js
    /// ranker.recordFeedback({ kind: "thumbs", candidate: "luigi", up: false });
    /// ```
    #[wasm_bindgen(js_name = recordFeedback, unchecked_return_type = "FeedbackOutcome")]
    pub fn record_feedback(
        &self,
        #[wasm_bindgen(unchecked_param_type = "FeedbackEvent")] event: JsValue,
    ) -> JsResult<JsValue> {
        let raw = raw_feedback(event)?;
        let outcome = record(&self.inner, raw)?;
        to_js(&outcome)
    }

    /// Why a ranked candidate scores what it does, and how much feedback backs it.
    #[wasm_bindgen(unchecked_return_type = "Explanation")]
    pub fn explain(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] candidate: JsValue,
    ) -> JsResult<JsValue> {
        let candidate = string(&candidate, "candidate")?;
        let explanation = self
            .inner
            .borrow()
            .feedback
            .explain(&candidate)
            .map_err(to_js_error)?;
        to_js(&explanation)
    }

    /// Recent feedback on this device, oldest first (local only; never uploaded).
    #[wasm_bindgen(unchecked_return_type = "Activity[]")]
    pub fn activity(&self) -> JsResult<JsValue> {
        to_js(&self.inner.borrow().feedback.state().activity)
    }

    /// What the device learned: the delta from the global head and how many examples shaped it.
    #[wasm_bindgen(js_name = learningState, unchecked_return_type = "LearningState")]
    pub fn learning_state(&self) -> JsResult<JsValue> {
        let inner = self.inner.borrow();
        let state = inner.feedback.learning_state();
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct View<'a> {
            base_version: &'a str,
            delta: &'a [f32],
            example_count: u64,
        }
        to_js(&View {
            base_version: &state.base_version,
            delta: &state.delta,
            example_count: state.example_count,
        })
    }

    /// Forgets everything learned on this device (saved by the next `save`).
    #[wasm_bindgen(js_name = resetLearning)]
    pub fn reset_learning(&self) {
        self.inner.borrow_mut().feedback.reset();
    }

    /// The personal state's bytes, as `save` stores them.
    #[wasm_bindgen(js_name = stateBytes)]
    pub fn state_bytes(&self) -> Uint8Array {
        Uint8Array::from(self.inner.borrow().feedback.state().to_bytes().as_slice())
    }

    /// Whether this environment has IndexedDB.
    #[wasm_bindgen(js_name = storageAvailable)]
    pub fn storage_available() -> bool {
        storage::available()
    }

    /// Loads the state saved in IndexedDB database `name`; resolves to whether there was one.
    /// Rejects with an `Error` if storage fails (the ranker keeps working in memory).
    #[wasm_bindgen(unchecked_return_type = "Promise<boolean>")]
    pub fn restore(&self, name: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let parameters = inner.borrow().saved.learning.delta.len();
            // Privacy first: spending recorded by earlier visits must never be forgotten.
            if let Some(stored) = storage::load_privacy(&name).await.map_err(storage_error)? {
                let mut inner = inner.borrow_mut();
                let policy = inner.privacy.state().policy.clone();
                let mut privacy = stored;
                privacy.set_policy(policy);
                inner.privacy = privacy;
            }
            client::restore_sync_state(&inner, &name).await?;
            let stored = storage::load(&name, parameters)
                .await
                .map_err(storage_error)?;
            let Some(stored) = stored else {
                return Ok(JsValue::FALSE);
            };
            let mut inner = inner.borrow_mut();
            inner
                .feedback
                .set_state(stored.clone())
                .map_err(|e| JsValue::from(to_js_error(e)))?;
            inner.saved = stored;
            // What was learned applies on top of the adopted global model.
            client::reapply_global(&mut inner).map_err(JsValue::from)?;
            Ok(JsValue::TRUE)
        })
    }

    /// Saves the personal state to IndexedDB database `name`, merging with what other tabs saved
    /// meanwhile; resolves with the stored revision once the write is durable. Rejects with an
    /// `Error` on a storage failure; nothing is lost: the state stays in memory for the next save.
    #[wasm_bindgen(unchecked_return_type = "Promise<number>")]
    pub fn save(&self, name: String) -> Promise {
        let inner = self.inner.clone();
        future_to_promise(async move {
            let revision = save_personal(&inner, &name).await?;
            Ok(JsValue::from_f64(revision as f64))
        })
    }

    /// The privacy policy, what has been spent and what remains, and the ledger of every release
    /// (each entry also a dp-accounting `DpEvent`, so a privacy team can replay it in Python).
    #[wasm_bindgen(js_name = privacyReport, unchecked_return_type = "PrivacyReport")]
    pub fn privacy_report(&self) -> JsResult<JsValue> {
        let inner = self.inner.borrow();
        let state = inner.privacy.state();
        let policy = &state.policy;
        let now = js_sys::Date::now() as u64;
        let window_rho = state.budget.window_rho(policy, now);
        let ledger: serde_json::Value = serde_json::from_str(&state.ledger.to_json())
            .map_err(|e| JsError::new(&format!("feedloop: ledger export: {e}")))?;
        to_js(&serde_json::json!({
            "policy": {
                "epsilon": policy.epsilon(),
                "delta": policy.delta(),
                "windowDays": policy.window_ms() as f64 / DAY_MS as f64,
                "maxRhoPerRelease": policy.max_rho_per_release(),
                "totalRho": policy.total_rho(),
                "minNoiseMultiplier": policy.min_noise_multiplier(),
            },
            "spent": {
                "windowRho": window_rho,
                "windowEpsilon": zcdp_to_approx_dp(window_rho, policy.delta()).unwrap_or(f64::NAN),
                "lifetimeRho": state.budget.lifetime_rho(),
                "releases": state.ledger.entries().len(),
            },
            "remaining": { "rho": state.budget.remaining_rho(policy, now) },
            "ledger": ledger,
        }))
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
        let now = js_sys::Date::now() as u64;
        let learning = inner.feedback.learning_state().clone();
        let fresh = match &inner.pending {
            Some(p) => p.round() != &round || !p.accounts_for(&learning.delta),
            None => true,
        };
        if fresh {
            let mut rng = OsCsprng::new()
                .map_err(|e| JsError::new(&format!("feedloop: no secure randomness: {e}")))?;
            let prepared = inner
                .privacy
                .prepare(&learning, &round, now, &mut rng)
                .map_err(to_js_error)?;
            inner.pending = Some(prepared);
        }
        let prepared = inner.pending.as_ref().expect("prepared above");
        let policy = &inner.privacy.state().policy;
        let params = prepared.update().params();
        let bytes = prepared.bytes();
        let window_after = inner.privacy.state().budget.window_rho(policy, now) + prepared.rho();
        let inspected = serde_json::json!({
            "round": round,
            "sha256": feedloop_privacy::ledger::sha256_hex(&bytes),
            "decoded": {
                "dimension": params.dimension,
                "values": prepared.update().values().iter().map(|v| *v as f64).collect::<Vec<f64>>(),
                "clipNorm": params.clip_norm,
                "granularity": params.granularity,
                "noiseStddev": params.noise_stddev,
            },
            "rho": prepared.rho(),
            "epsilon": zcdp_to_approx_dp(prepared.rho(), policy.delta()).unwrap_or(f64::NAN),
            "windowEpsilonAfter": zcdp_to_approx_dp(window_after, policy.delta()).unwrap_or(f64::NAN),
        });
        let value = to_js(&inspected)?;
        js_sys::Reflect::set(&value, &"bytes".into(), &Uint8Array::from(bytes.as_slice()))
            .map_err(|_| JsError::new("feedloop: could not build the inspected upload"))?;
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
            prepared.map_err(JsValue::from)?;
            let (release, mine) = {
                let mut guard = inner.borrow_mut();
                let inner = &mut *guard;
                let prepared = inner.pending.take().expect("inspected above");
                let now = js_sys::Date::now() as u64;
                let release = inner
                    .privacy
                    .release(prepared, now)
                    .map_err(|e| JsValue::from(to_js_error(e)))?;
                (release, inner.privacy.clone())
            };
            let (written, outbox) = storage::save_privacy(&name, &mine, None, now_ms())
                .await
                .map_err(storage_error)?;
            let mut inner = inner.borrow_mut();
            inner.privacy = written;
            inner.outbox = outbox;
            Ok(Uint8Array::from(release.bytes()).into())
        })
    }

    /// Deletes the state saved in IndexedDB database `name`.
    #[wasm_bindgen(js_name = clearStorage, unchecked_return_type = "Promise<void>")]
    pub fn clear_storage(name: String) -> Promise {
        future_to_promise(async move {
            storage::clear(&name).await.map_err(storage_error)?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Records implicit feedback for `candidate` from `element` by itself: click, copy and dwell.
    /// `onRecord` receives each outcome (or an `Error`, e.g. if the candidate was forgotten).
    ///
    /// ```js
    /// ranker.observe(document.querySelector("#answer-1"), "answer-1", (outcome) => console.log(outcome));
    /// ```
    pub fn observe(
        &self,
        element: web_sys::Element,
        candidate: String,
        #[wasm_bindgen(js_name = onRecord)] on_record: Function,
    ) -> JsResult<()> {
        if candidate.is_empty() {
            return Err(JsError::new("feedloop: observe needs a candidate id"));
        }
        self.unobserve(&element);
        let inner = Rc::downgrade(&self.inner);
        let recorder: Recorder = Rc::new(move |raw: RawFeedback| {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let result = match record(&inner, raw) {
                Ok(outcome) => to_js(&outcome).map_err(JsValue::from),
                Err(e) => Err(JsValue::from(e)),
            };
            let value = result.unwrap_or_else(|e| e);
            let _ = on_record.call1(&JsValue::NULL, &value);
        });
        self.observations
            .borrow_mut()
            .push(Observation::new(element, candidate, recorder));
        Ok(())
    }

    /// Removes the listeners `observe` attached to `element`; returns whether there were any.
    pub fn unobserve(&self, element: &web_sys::Element) -> bool {
        let mut observations = self.observations.borrow_mut();
        let before = observations.len();
        observations.retain(|o| o.element != *element);
        observations.len() != before
    }
}

impl Ranker {
    fn ranked(
        &self,
        context: &JsValue,
        candidates: &JsValue,
    ) -> JsResult<Vec<feedloop_core::RankedCandidate>> {
        let context = string(context, "context")?;
        let candidates = candidate_list(candidates)?;
        let list: Vec<Candidate> = candidates
            .iter()
            .map(|(id, text)| Candidate { id, text })
            .collect();
        self.inner
            .borrow_mut()
            .feedback
            .rank(&context, &list)
            .map_err(to_js_error)
    }
}

/// Saves the personal state (see `save`); returns the stored revision.
async fn save_personal(inner: &Rc<RefCell<Inner>>, name: &str) -> Result<u64, JsValue> {
    let (base, mine) = {
        let inner = inner.borrow();
        (inner.saved.clone(), inner.feedback.state().clone())
    };
    let written = storage::save(name, &base, &mine)
        .await
        .map_err(storage_error)?;
    let mut inner = inner.borrow_mut();
    // Feedback recorded while the save was in flight is kept: merge it onto what was written.
    let current = inner.feedback.state().clone();
    let mut adopted = if current == mine {
        written.clone()
    } else {
        PersonalState::merge(&written, &mine, &current)
    };
    adopted.revision = written.revision;
    let revision = written.revision;
    inner
        .feedback
        .set_state(adopted)
        .map_err(|e| JsValue::from(to_js_error(e)))?;
    inner.saved = written;
    Ok(revision)
}

fn record(inner: &RefCell<Inner>, raw: RawFeedback) -> JsResult<feedloop_core::FeedbackOutcome> {
    inner
        .borrow_mut()
        .feedback
        .record(raw, js_sys::Date::now())
        .map_err(to_js_error)
}

fn raw_feedback(event: JsValue) -> JsResult<RawFeedback> {
    if !event.is_object() || Array::is_array(&event) {
        return Err(JsError::new(&format!(
            "feedloop: a feedback event must be an object like {{ kind: \"thumbs\", candidate: \"a\", up: true }}, got {}",
            type_name(&event)
        )));
    }
    check_fields(&event, RawFeedback::FIELDS, "feedback event")?;
    serde_wasm_bindgen::from_value(event)
        .map_err(|e| JsError::new(&format!("feedloop: invalid feedback event: {e}")))
}

/// serde-wasm-bindgen reads only the fields a struct names, so a misspelled field would pass in
/// silence; this names it.
fn check_fields(object: &JsValue, allowed: &[&str], what: &str) -> JsResult<()> {
    for key in js_sys::Object::keys(object.unchecked_ref::<js_sys::Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !allowed.contains(&key.as_str()) {
            return Err(JsError::new(&format!(
                "feedloop: invalid {what}: unknown field `{key}`, expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// `(id, text)` pairs: strings are their own ids (a repeated string gets `text#2`, `text#3`, ...).
fn candidate_list(value: &JsValue) -> JsResult<Vec<(String, String)>> {
    if !Array::is_array(value) {
        return Err(JsError::new(&format!(
            "feedloop: candidates must be an array of strings or {{ id, text }} objects, got {}",
            type_name(value)
        )));
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    Array::from(value)
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if let Some(text) = item.as_string() {
                let n = seen.entry(text.clone()).or_default();
                *n += 1;
                let id = if *n == 1 {
                    text.clone()
                } else {
                    format!("{text}#{n}")
                };
                Ok((id, text))
            } else if item.is_object() && !Array::is_array(&item) {
                let c: CandidateObject = serde_wasm_bindgen::from_value(item).map_err(|e| {
                    JsError::new(&format!(
                        "feedloop: candidates[{i}] must be {{ id, text }}: {e}"
                    ))
                })?;
                Ok((c.id, c.text))
            } else {
                Err(JsError::new(&format!(
                    "feedloop: candidates[{i}] must be a string or {{ id, text }}, got {}",
                    type_name(&item)
                )))
            }
        })
        .collect()
}

/// Diagnostics for the benchmark page: `count` exact discrete Gaussian draws of standard deviation
/// `sigma` (integers, as f64) from the OS-seeded CSPRNG.
#[wasm_bindgen(js_name = sampleDiscreteGaussian)]
pub fn sample_discrete_gaussian(sigma: f64, count: u32) -> JsResult<js_sys::Float64Array> {
    let mut out = vec![0i64; count as usize];
    feedloop_privacy::sampler::sample_discrete_gaussian_batch(sigma, &mut out)
        .map_err(|e| JsError::new(&format!("feedloop: {e}")))?;
    let values: Vec<f64> = out.iter().map(|v| *v as f64).collect();
    Ok(js_sys::Float64Array::from(values.as_slice()))
}

/// Diagnostics for the benchmark page: privatizes one update of `dimension` values (an arbitrary
/// deterministic vector, C = 1, γ = 0.001, σ = 4) and returns its encoded size in bytes.
#[wasm_bindgen(js_name = privatizeBenchmarkUpdate)]
pub fn privatize_benchmark_update(dimension: u32) -> JsResult<u32> {
    let update: Vec<f32> = (0..dimension)
        .map(|i| ((i % 17) as f32 - 8.0) * 1e-3)
        .collect();
    let config = feedloop_privacy::PrivatizerConfig::new(1.0, 0.001, 4.0)
        .map_err(|e| JsError::new(&format!("feedloop: {e}")))?;
    let privatized = feedloop_privacy::privatize_with_os_rng(&update, &config)
        .map_err(|e| JsError::new(&format!("feedloop: {e}")))?;
    Ok(privatized.to_bytes().len() as u32)
}

fn round_config(value: JsValue) -> JsResult<RoundConfig> {
    if !value.is_object() || Array::is_array(&value) {
        return Err(JsError::new(&format!(
            "feedloop: a round must be an object {{ roundId, modelVersion, clipNorm, granularity, noiseStddev }}, got {}",
            type_name(&value)
        )));
    }
    check_fields(
        &value,
        &[
            "roundId",
            "modelVersion",
            "clipNorm",
            "granularity",
            "noiseStddev",
        ],
        "round",
    )?;
    serde_wasm_bindgen::from_value(value)
        .map_err(|e| JsError::new(&format!("feedloop: invalid round: {e}")))
}

fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

fn storage_error(message: String) -> JsValue {
    JsError::new(&format!("feedloop: storage: {message}")).into()
}

fn to_js_error(err: feedloop_core::Error) -> JsError {
    JsError::new(&format!("feedloop: {err}"))
}

fn to_js<T: Serialize + ?Sized>(value: &T) -> JsResult<JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&format!("feedloop: could not convert the result: {e}")))
}

fn string(value: &JsValue, what: &str) -> JsResult<String> {
    value.as_string().ok_or_else(|| not_a_string(what, value))
}

fn not_a_string(what: impl std::fmt::Display, value: &JsValue) -> JsError {
    JsError::new(&format!(
        "feedloop: {what} must be a string, got {}",
        type_name(value)
    ))
}

fn strings(value: &JsValue, what: &str) -> JsResult<Vec<String>> {
    if !Array::is_array(value) {
        return Err(JsError::new(&format!(
            "feedloop: {what} must be an array of strings, got {}",
            type_name(value)
        )));
    }
    Array::from(value)
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // The label is formatted only for the error, not for every element.
            item.as_string()
                .ok_or_else(|| not_a_string(format_args!("{what}[{i}]"), &item))
        })
        .collect()
}

/// Splits `joined` into consecutive pieces of the given lengths in UTF-16 code units (the JS
/// `length` of each string that was joined).
fn split_utf16<'a>(joined: &'a str, lengths: &[u32], what: &str) -> JsResult<Vec<&'a str>> {
    let mismatch = || {
        JsError::new(&format!(
            "feedloop: the {what} do not split at the given lengths (a lone UTF-16 surrogate at the end of one?)"
        ))
    };
    let mut pieces = Vec::with_capacity(lengths.len());
    let mut chars = joined.char_indices();
    let mut start = 0;
    for &length in lengths {
        let (mut units, mut end) = (0u32, start);
        while units < length {
            let (at, c) = chars.next().ok_or_else(mismatch)?;
            units += c.len_utf16() as u32;
            end = at + c.len_utf8();
        }
        if units != length {
            return Err(mismatch());
        }
        pieces.push(&joined[start..end]);
        start = end;
    }
    if start != joined.len() {
        return Err(mismatch());
    }
    Ok(pieces)
}

fn type_name(value: &JsValue) -> String {
    if value.is_null() {
        "null".into()
    } else if Array::is_array(value) {
        "an array".into()
    } else {
        value
            .js_typeof()
            .as_string()
            .unwrap_or_else(|| "unknown".into())
    }
}
