//! feedloop's browser layer: a thin wasm-bindgen surface over `feedloop-core`.
//!
//! It converts JS values, validates them with messages a web developer can act on, and turns every
//! core error into a real JS `Error`. Model logic lives in the core; package entry points (`create()`,
//! fetching the bundled model) live in `js/index.js`.

use feedloop_core::{rank_scores, RewardModel};
use js_sys::{Array, Float32Array, Uint32Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;

/// Every fallible export returns this; `JsError` arrives in JS as an `Error` with a stack.
pub type JsResult<T> = Result<T, JsError>;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = r#"
/** One candidate in a ranking: its position in the input array and its score. */
export interface RankedCandidate { index: number; score: number }

/** Facts about the loaded model. */
export interface ModelInfo {
  contractVersion: string;
  dimensions: number;
  maxTokens: number;
  vocabSize: number;
  headParameters: number;
  metadata: [string, string][];
}
"#;

#[wasm_bindgen(start)]
fn start() {
    console_error_panic_hook::set_once();
}

/// Ranks candidate texts for a context with an on-device reward model.
///
/// ```js
/// import { Ranker } from "feedloop";
/// const ranker = await Ranker.create();
/// ranker.rank("how do I reset my password?", ["Open Settings › Security.", "Bananas are yellow."]);
/// // → [{ index: 0, score: 0.41 }, { index: 1, score: 0.02 }]
/// ```
#[wasm_bindgen(js_name = WasmRanker)]
pub struct Ranker {
    model: RewardModel,
}

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
    /// Loads a model from the bytes of an ONNX file that meets the feedloop contract.
    /// Throws an `Error` naming what is wrong if the bytes are not such a model.
    #[wasm_bindgen(js_name = fromBytes)]
    pub fn from_bytes(bytes: &[u8]) -> JsResult<Ranker> {
        let model = RewardModel::from_bytes(bytes).map_err(to_js_error)?;
        Ok(Ranker { model })
    }

    /// Candidates best first, as `{ index, score }`. Ties keep input order.
    ///
    /// ```js
    /// ranker.rank("best pizza in town", ["Luigi's, wood-fired", "Tax forms"]); // [{index: 0, ...}, ...]
    /// ```
    #[wasm_bindgen(unchecked_return_type = "RankedCandidate[]")]
    pub fn rank(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string[]")] candidates: JsValue,
    ) -> JsResult<JsValue> {
        let scores = self.scores(&context, &candidates)?;
        to_js(&rank_scores(&scores))
    }

    /// One score per candidate, in input order.
    pub fn score(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "string[]")] candidates: JsValue,
    ) -> JsResult<Float32Array> {
        let scores = self.scores(&context, &candidates)?;
        Ok(Float32Array::from(scores.as_slice()))
    }

    /// L2-normalized embeddings, one `Float32Array` of `info.dimensions` values per text.
    #[wasm_bindgen(unchecked_return_type = "Float32Array[]")]
    pub fn embed(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
    ) -> JsResult<Array> {
        let texts = strings(&texts, "texts")?;
        let embeddings = self.model.embed(&texts).map_err(to_js_error)?;
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
        Ok(Uint32Array::from(self.model.token_ids(&text).as_slice()))
    }

    /// Facts about the loaded model.
    #[wasm_bindgen(getter, unchecked_return_type = "ModelInfo")]
    pub fn info(&self) -> JsResult<JsValue> {
        to_js(self.model.info())
    }
}

impl Ranker {
    fn scores(&self, context: &JsValue, candidates: &JsValue) -> JsResult<Vec<f32>> {
        let context = string(context, "context")?;
        let candidates = strings(candidates, "candidates")?;
        self.model.score(&context, &candidates).map_err(to_js_error)
    }
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
    value.as_string().ok_or_else(|| {
        JsError::new(&format!(
            "feedloop: {what} must be a string, got {}",
            type_name(value)
        ))
    })
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
        .map(|(i, item)| string(&item, &format!("{what}[{i}]")))
        .collect()
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
