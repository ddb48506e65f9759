//! Catalogs: texts embedded once and scored many times, on WebGPU or the CPU (`setGpu`,
//! `backend`, `gpuError`, `gpuAdapter`, `embedCatalog`, `scoreCatalog`). The GPU itself is
//! [`crate::gpu`]'s.

use feedloop_core::Embeddings;
use js_sys::{Float32Array, Promise, Uint32Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

use crate::convert::{string, strings, type_name};
use crate::error::{invalid, page_input, JsResult};
use crate::gpu::{self, GpuMode};
use crate::Ranker;

#[wasm_bindgen(js_class = WasmRanker)]
impl Ranker {
    /// Chooses when catalog scoring may use WebGPU — `"auto"` (a hardware adapter and a large
    /// batch; the adapter is requested at the first such batch), `"always"` (any adapter, any batch;
    /// requested now) or `"off"`. Resolves to the adapter's description, or `null` when none is held
    /// (not requested yet, no `navigator.gpu`, no adapter, or `"off"`). Never rejects for a missing GPU.
    #[wasm_bindgen(js_name = setGpu, unchecked_return_type = "Promise<string | null>")]
    pub fn set_gpu(
        &self,
        #[wasm_bindgen(unchecked_param_type = "\"auto\" | \"always\" | \"off\"")] mode: JsValue,
    ) -> JsResult<Promise> {
        let mode = mode
            .as_string()
            .and_then(|m| GpuMode::parse(&m))
            .ok_or_else(|| {
                invalid(format!(
                    "gpu must be \"auto\", \"always\" or \"off\", got {}",
                    type_name(&mode)
                ))
            })?;
        let state = self.gpu.clone();
        Ok(future_to_promise(async move {
            gpu::configure(state.clone(), mode).await;
            let adapter = match mode {
                GpuMode::Off => None,
                _ => state.borrow().adapter(),
            };
            Ok(adapter.map_or(JsValue::NULL, |a| JsValue::from_str(&a)))
        }))
    }

    /// The backend that computed the most recent `scoreCatalog`: `"webgpu"` or `"cpu"`.
    #[wasm_bindgen(getter, unchecked_return_type = "\"webgpu\" | \"cpu\"")]
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

    /// Embeds texts into one flat catalog — `{ dimensions, vectors, tokenCounts, tokenIds }`,
    /// row-major — to keep and score many times with `scoreCatalog` (the embedding is the expensive
    /// part; the token ids feed the lexical term of a contract 2 model).
    #[wasm_bindgen(js_name = embedCatalog, unchecked_return_type = "EmbeddedCatalog")]
    pub fn embed_catalog(
        &self,
        #[wasm_bindgen(unchecked_param_type = "string[]")] texts: JsValue,
    ) -> JsResult<JsValue> {
        let texts = strings(&texts, "texts")?;
        let inner = self.inner.borrow();
        let embedded = inner.feedback.model().embed(&texts)?;
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
            .and_then(|_| {
                set(
                    "tokenIds",
                    Uint32Array::from(embedded.token_ids.as_slice()).into(),
                )
            })
            .map_err(|_| invalid("could not build the catalog object"))?;
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
        token_ids: Option<Vec<u32>>,
    ) -> JsResult<Promise> {
        let context = string(&context, "context")?;
        let inner = self.inner.borrow();
        let model = inner.feedback.model();
        let (dimensions, max_tokens) = (model.info().dimensions, model.info().max_tokens);
        let catalog =
            Embeddings::catalog(dimensions, vectors, &token_counts, token_ids, max_tokens)
                .map_err(page_input)?;
        let context_ids = model.token_ids(&context);
        let lexical = model
            .lexical_values(&context_ids, &catalog)
            .map_err(page_input)?;
        let context = model.embed_ids(&[context_ids])?;
        let head = inner.feedback.personal_head();
        let state = self.gpu.clone();
        let context = context.row(0).to_vec();
        Ok(future_to_promise(async move {
            let scores = gpu::score(state, context, catalog, lexical, head, max_tokens).await;
            Ok(Float32Array::from(scores.as_slice()).into())
        }))
    }
}
