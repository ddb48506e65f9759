//! feedloop's browser layer: a thin wasm-bindgen surface over `feedloop-core`.
//!
//! It converts JS values, touches browser APIs and turns every failure into a real JS `Error`
//! ([`error`]); every decision is the core's. The JS class `WasmRanker` is defined here and its
//! methods by area, one module each (as ywasm does): [`ranking`], [`catalog`] (with [`gpu`]),
//! [`feedback`] (with [`observe`]), [`persistence`] (with [`indexeddb`]), [`privacy`], [`sync`]
//! (with [`network`]). The package entry (`create()`, fetching the bundled model) is js/index.ts.

mod catalog;
mod convert;
mod error;
mod feedback;
mod gpu;
mod indexeddb;
mod network;
mod observe;
mod persistence;
mod privacy;
mod ranking;
mod sync;
mod typescript;

use std::cell::RefCell;
use std::rc::Rc;

use feedloop_core::contribution::{DevicePrivacy, PreparedUpload};
use feedloop_core::privacy_report::PolicyOptions;
use feedloop_core::{FeedbackLoop, FeedbackWeights, LearningConfig, PersonalState, RewardModel};
use serde::Deserialize;
use wasm_bindgen::prelude::*;

use crate::convert::object;
pub use crate::error::{Error, JsResult};
use crate::observe::Observation;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// The ranker's state, shared with the futures of its async methods.
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
    client: Option<network::ClientToken>,
    /// Sync: the global model's version (what the personal delta is added to) and ETag.
    global_version: String,
    model_etag: Option<String>,
    /// The segment the page declared for this user (`options.segment`): noted with thumbs
    /// verdicts, reported only randomized together with one.
    segment: Option<String>,
}

/// `WasmRanker.withOptions`'s options.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LearningOptions {
    #[serde(default)]
    weights: FeedbackWeights,
    #[serde(default)]
    learning: LearningConfig,
    #[serde(default)]
    privacy: PolicyOptions,
    #[serde(default)]
    segment: Option<String>,
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
            object(
                options,
                &["weights", "learning", "privacy", "segment"],
                "options",
            )?
        };
        if let Some(segment) = &options.segment {
            feedloop_core::segments::validate_name(segment).map_err(error::page_input)?;
        }
        let model = RewardModel::from_bytes(bytes)?;
        let instance = (js_sys::Math::random() * 2f64.powi(53)) as u64;
        let feedback = FeedbackLoop::new(model, options.weights, options.learning, instance)?;
        let saved = feedback.state().clone();
        let parameters = saved.learning.delta.len();
        let privacy = DevicePrivacy::new(
            options.privacy.policy().map_err(error::page_input)?,
            parameters,
            &saved.learning.base_version,
        )?;
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
                segment: options.segment,
            })),
            observations: RefCell::new(Vec::new()),
            gpu: Rc::default(),
        })
    }
}
