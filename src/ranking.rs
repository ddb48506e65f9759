//! Ranking, scoring, embedding and tokenizing (`WasmRanker.rank`, `score`, `rankCandidates`,
//! `scoreCandidates`, `scoreTokenIds`, `embed`, `tokenize`, `info`).

use feedloop_core::{Candidate, RankedCandidate};
use js_sys::{Array, Float32Array, Float64Array, Uint32Array};
use wasm_bindgen::prelude::*;

use crate::convert::{candidate_list, split_utf16, string, strings, to_js};
use crate::error::{invalid, JsResult};
use crate::Ranker;

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
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
        to_js(&self.rank_values(&context, &candidates)?)
    }

    /// One personal score per candidate, in input order.
    pub fn score(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        #[wasm_bindgen(unchecked_param_type = "(string | CandidateInput)[]")] candidates: JsValue,
    ) -> JsResult<Float32Array> {
        Ok(input_order(&self.rank_values(&context, &candidates)?))
    }

    /// Personal scores in input order for candidates given as parallel lists of ids and texts: the
    /// fast path the package's `score` uses. Each list arrives as one joined string and the length
    /// of every piece in UTF-16 code units (JS `length`): one string crossing per list instead of
    /// one per candidate, which was a fifth of ranking 100 new texts.
    #[wasm_bindgen(js_name = scoreCandidates)]
    pub fn score_candidates(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        ids: &str,
        id_lengths: &[u32],
        texts: &str,
        text_lengths: &[u32],
    ) -> JsResult<Float32Array> {
        let ranked = self.rank_joined(context, ids, id_lengths, texts, text_lengths)?;
        Ok(input_order(&ranked))
    }

    /// The core's ranking of candidates given as `scoreCandidates` takes them: `[index, score,
    /// index, score, …]` best first (ties in input order), so the package builds its
    /// `{ id, index, score }` objects in the core's order without sorting again.
    #[wasm_bindgen(js_name = rankCandidates)]
    pub fn rank_candidates(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string")] context: JsValue,
        ids: &str,
        id_lengths: &[u32],
        texts: &str,
        text_lengths: &[u32],
    ) -> JsResult<Float64Array> {
        let ranked = self.rank_joined(context, ids, id_lengths, texts, text_lengths)?;
        let pairs: Vec<f64> = ranked
            .iter()
            .flat_map(|r| [r.index as f64, f64::from(r.score)])
            .collect();
        Ok(Float64Array::from(pairs.as_slice()))
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
        let inner = self.inner.borrow();
        let scores = inner.feedback.model().score_token_ids(
            context_ids,
            candidate_ids,
            candidate_lengths,
        )?;
        Ok(Float32Array::from(scores.as_slice()))
    }

    /// L2-normalized embeddings, one `Float32Array` of `info.dimensions` values per text.
    #[wasm_bindgen(unchecked_return_type = "Float32Array[]")]
    pub fn embed(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
    ) -> JsResult<Array> {
        let texts = strings(&texts, "texts")?;
        let inner = self.inner.borrow();
        let embeddings = inner.feedback.model().embed(&texts)?;
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
}

impl Ranker {
    /// The core's ranking of candidates given as JS values (strings or `{ id, text }`).
    fn rank_values(
        &self,
        context: &JsValue,
        candidates: &JsValue,
    ) -> JsResult<Vec<RankedCandidate>> {
        let context = string(context, "context")?;
        let candidates = candidate_list(candidates)?;
        let list: Vec<Candidate> = candidates
            .iter()
            .map(|(id, text)| Candidate { id, text })
            .collect();
        self.rank_list(&context, &list)
    }

    fn rank_list(&self, context: &str, list: &[Candidate]) -> JsResult<Vec<RankedCandidate>> {
        Ok(self.inner.borrow_mut().feedback.rank(context, list)?)
    }

    fn rank_joined(
        &self,
        context: JsValue,
        ids: &str,
        id_lengths: &[u32],
        texts: &str,
        text_lengths: &[u32],
    ) -> JsResult<Vec<RankedCandidate>> {
        let context = string(&context, "context")?;
        let ids = split_utf16(ids, id_lengths, "ids")?;
        let texts = split_utf16(texts, text_lengths, "candidates")?;
        if ids.len() != texts.len() {
            return Err(invalid(format!(
                "{} ids for {} candidates",
                ids.len(),
                texts.len()
            )));
        }
        let list: Vec<Candidate> = ids
            .iter()
            .zip(&texts)
            .map(|(&id, &text)| Candidate { id, text })
            .collect();
        self.rank_list(&context, &list)
    }
}

/// The scores of a ranking, back in input order.
fn input_order(ranked: &[RankedCandidate]) -> Float32Array {
    let mut scores = vec![0f32; ranked.len()];
    for r in ranked {
        scores[r.index] = r.score;
    }
    Float32Array::from(scores.as_slice())
}
