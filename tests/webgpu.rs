//! The WebGPU path in real headless Chromium (wasm-bindgen-test): the same scores and gradients as
//! the CPU path to 1e-5 (`|gpu − cpu| ≤ 1e-5·max(1, |cpu|)`) for 1, 100 and 10,000 candidates, and
//! the fallback to the CPU when the browser has no adapter.
//!
//! What runs depends on `FEEDLOOP_WEBGPU` at compile time:
//! - `required`: an adapter must be found (Chromium with `--enable-unsafe-webgpu
//!   --use-webgpu-adapter=swiftshader`); no adapter fails.
//! - `absent`: there must be none (Chromium without those flags: `navigator.gpu` exists but
//!   `requestAdapter()` gives null); the CPU fallback is checked.
//! - unset: whichever the browser gives is checked and reported on the console.
#![cfg(target_arch = "wasm32")]

use feedloop_core::head::{PairFeatures, RewardHead};
use feedloop_core::learning::Example;
use feedloop_core::Embeddings;
use feedloop_gpu::{close_to, cpu, fallback, GpuBackend};
use js_sys::{Array, Float32Array, Reflect, Uint32Array};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const D: usize = 64;
const MAX_TOKENS: usize = 512;
const TOLERANCE: f32 = 1e-5;
const MODEL: &[u8] = include_bytes!("../models/feedloop-default.onnx");

/// SplitMix64 in [-1, 1): seeded inputs without a dependency.
struct Rng(u64);

impl Rng {
    fn signed(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    fn unit_vector(&mut self) -> Vec<f32> {
        let v: Vec<f32> = (0..D).map(|_| self.signed()).collect();
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
        v.into_iter().map(|x| x / norm).collect()
    }

    fn embeddings(&mut self, n: usize) -> Embeddings {
        Embeddings {
            dimensions: D,
            values: (0..n).flat_map(|_| self.unit_vector()).collect(),
            token_counts: (0..n).map(|i| (i * 37) % (MAX_TOKENS + 1)).collect(),
            token_ids: Vec::new(),
        }
    }

    fn head(&mut self) -> RewardHead {
        let v: Vec<f32> = (0..2 * D + 3).map(|_| self.signed()).collect();
        RewardHead::from_vector(D, &v).unwrap()
    }

    fn examples(&mut self, n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                id: i as u64,
                x: PairFeatures::new(&self.unit_vector(), &self.unit_vector(), i % 50, MAX_TOKENS)
                    .to_vector(),
                label: [0.0, 1.0, 0.5][i % 3],
                weight: [1.0, 0.25][i % 2],
            })
            .collect()
    }
}

fn expectation() -> Option<&'static str> {
    option_env!("FEEDLOOP_WEBGPU")
}

/// The browser's adapter, checked against `FEEDLOOP_WEBGPU`.
async fn adapter() -> Option<GpuBackend> {
    let gpu = GpuBackend::new().await.expect("requesting a WebGPU device");
    match (&gpu, expectation()) {
        (Some(gpu), Some("absent")) => panic!(
            "FEEDLOOP_WEBGPU=absent but the browser gave an adapter ({})",
            gpu.adapter_info().name
        ),
        (None, Some("required")) => panic!(
            "FEEDLOOP_WEBGPU=required but requestAdapter() gave none (Chromium needs \
             --enable-unsafe-webgpu --use-webgpu-adapter=swiftshader)"
        ),
        (Some(gpu), _) => console_log!(
            "WebGPU adapter: {:?} via {}",
            gpu.adapter_info(),
            gpu.backend_name()
        ),
        (None, _) => console_log!("no WebGPU adapter: checking the CPU fallback"),
    }
    gpu
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths differ");
    for (i, (a, b)) in gpu.iter().zip(cpu).enumerate() {
        assert!(
            close_to(*a, *b, TOLERANCE),
            "{what}[{i}]: GPU {a} vs CPU {b}"
        );
    }
}

#[wasm_bindgen_test]
async fn webgpu_scores_equal_cpu_scores_for_1_100_and_10000_candidates() {
    let gpu = adapter().await;
    let mut rng = Rng(11);
    for n in [1, 100, 10_000] {
        let context = rng.unit_vector();
        let candidates = rng.embeddings(n);
        let head = rng.head();
        let reference = cpu::score(&context, &candidates, None, &head, MAX_TOKENS);
        // Forced onto the GPU whatever the batch size; the CPU when there is no adapter.
        let scored = fallback::score(
            gpu.as_ref(),
            true,
            &context,
            &candidates,
            None,
            &head,
            MAX_TOKENS,
        )
        .await;
        assert_eq!(scored.gpu_error, None, "N = {n}");
        match &gpu {
            Some(_) => {
                assert_eq!(scored.backend, "webgpu");
                assert_close(&format!("scores (N = {n})"), &scored.value, &reference);
            }
            None => {
                assert_eq!(scored.backend, "cpu");
                assert_eq!(scored.value, reference);
            }
        }
        console_log!("N = {n}: scored on {}", scored.backend);
    }
}

#[wasm_bindgen_test]
async fn webgpu_gradient_equals_cpu_gradient() {
    let gpu = adapter().await;
    let mut rng = Rng(12);
    let theta = rng.head().to_vector();
    let examples = rng.examples(1_000);
    let reference = cpu::gradient(&theta, &examples, 0.1);
    let computed = fallback::gradient(gpu.as_ref(), &theta, &examples, 0.1).await;
    assert_eq!(computed.gpu_error, None);
    assert_eq!(
        computed.backend,
        if gpu.is_some() { "webgpu" } else { "cpu" }
    );
    assert_close("gradient", &computed.value, &reference);
}

#[wasm_bindgen_test]
async fn a_lost_webgpu_device_falls_back_to_the_cpu() {
    let Some(gpu) = adapter().await else {
        return;
    };
    let mut rng = Rng(13);
    let (context, candidates, head) = (rng.unit_vector(), rng.embeddings(100), rng.head());
    gpu.destroy();
    let scored = fallback::score(
        Some(&gpu),
        true,
        &context,
        &candidates,
        None,
        &head,
        MAX_TOKENS,
    )
    .await;
    assert_eq!(scored.backend, "cpu");
    assert_eq!(
        scored.value,
        cpu::score(&context, &candidates, None, &head, MAX_TOKENS)
    );
    console_log!("after destroy(): {:?}", scored.gpu_error);
}

fn field<T: JsCast>(object: &JsValue, key: &str) -> T {
    Reflect::get(object, &JsValue::from_str(key))
        .unwrap()
        .dyn_into()
        .unwrap()
}

fn error_message(error: impl Into<JsValue>) -> String {
    let value: JsValue = error.into();
    Reflect::get(&value, &JsValue::from_str("message"))
        .unwrap()
        .as_string()
        .unwrap()
}

async fn score_catalog(
    ranker: &feedloop::Ranker,
    context: &str,
    vectors: &[f32],
    counts: &[u32],
    ids: &[u32],
) -> Vec<f32> {
    let promise = ranker
        .score_catalog(
            context.into(),
            vectors.to_vec(),
            counts.to_vec(),
            Some(ids.to_vec()),
        )
        .map_err(error_message)
        .unwrap();
    let scores: Float32Array = JsFuture::from(promise).await.unwrap().dyn_into().unwrap();
    scores.to_vec()
}

/// The package's path: `setGpu`, `embedCatalog`, `scoreCatalog`, `backend` — the catalog's scores
/// equal the ranker's own (CPU) personal scores, on whichever backend ran, before and after learning.
#[wasm_bindgen_test]
async fn the_ranker_scores_a_catalog_on_the_backend_it_reports() {
    let has_adapter = adapter().await.is_some();
    let ranker = feedloop::Ranker::from_bytes(MODEL)
        .map_err(JsValue::from)
        .unwrap();
    let described = JsFuture::from(ranker.set_gpu("always".into()).unwrap())
        .await
        .unwrap();
    assert_eq!(described.is_string(), has_adapter, "adapter: {described:?}");
    console_log!("setGpu(\"always\") → {:?}", described.as_string());

    let subjects = [
        "the password",
        "a refund",
        "the invoice",
        "two-factor login",
        "an export",
    ];
    let verbs = ["reset", "request", "download", "turn on", "cancel", "find"];
    let texts: Vec<String> = subjects
        .iter()
        .flat_map(|s| {
            verbs
                .iter()
                .map(move |v| format!("How to {v} {s} from the account page."))
        })
        .collect();
    let array: Array = texts.iter().map(|t| JsValue::from_str(t)).collect();
    let catalog = ranker.embed_catalog(array.clone().into()).unwrap();
    let vectors = field::<Float32Array>(&catalog, "vectors").to_vec();
    let counts = field::<Uint32Array>(&catalog, "tokenCounts").to_vec();
    let ids = field::<Uint32Array>(&catalog, "tokenIds").to_vec();
    assert_eq!(counts.len(), texts.len());
    assert_eq!(ids.len() as u32, counts.iter().sum::<u32>());
    let context = "I forgot my password";

    for round in 0..2 {
        let scored = score_catalog(&ranker, context, &vectors, &counts, &ids).await;
        let expected_backend = if has_adapter { "webgpu" } else { "cpu" };
        assert_eq!(
            ranker.backend(),
            expected_backend,
            "round {round}: {:?}",
            ranker.gpu_error()
        );
        let reference = ranker
            .score(context.into(), array.clone().into())
            .unwrap()
            .to_vec();
        assert_close(
            &format!("catalog scores, round {round}"),
            &scored,
            &reference,
        );
        // Learn something; the next round's catalog scores must follow the personal head.
        let event = js_sys::Object::new();
        Reflect::set(&event, &"kind".into(), &"thumbs".into()).unwrap();
        Reflect::set(&event, &"candidate".into(), &texts[7].as_str().into()).unwrap();
        Reflect::set(&event, &"up".into(), &JsValue::TRUE).unwrap();
        ranker
            .record_feedback(event.into())
            .map_err(error_message)
            .unwrap();
    }

    // "auto" keeps small batches (and any software adapter) on the CPU; "off" never uses the GPU.
    for mode in ["auto", "off"] {
        JsFuture::from(ranker.set_gpu(mode.into()).unwrap())
            .await
            .unwrap();
        let scored = score_catalog(&ranker, context, &vectors, &counts, &ids).await;
        assert_eq!(ranker.backend(), "cpu", "mode {mode}");
        let reference = ranker
            .score(context.into(), array.clone().into())
            .unwrap()
            .to_vec();
        assert_close(&format!("catalog scores, {mode}"), &scored, &reference);
    }

    // A malformed catalog is an Error that says what is wrong.
    let message = error_message(
        ranker
            .score_catalog(
                context.into(),
                vectors[1..].to_vec(),
                counts.clone(),
                Some(ids.clone()),
            )
            .unwrap_err(),
    );
    assert!(message.contains("vector values"), "{message}");
    // The default model's lexical term needs the token ids: a catalog without them is refused.
    let message = error_message(
        ranker
            .score_catalog(context.into(), vectors.clone(), counts.clone(), None)
            .unwrap_err(),
    );
    assert!(message.contains("embed it again"), "{message}");
    let message = error_message(ranker.set_gpu("fast".into()).unwrap_err());
    assert!(
        message.contains("\"auto\", \"always\" or \"off\""),
        "{message}"
    );
}

/// `"auto"` requests no adapter until a catalog is large enough to use one, and then keeps a
/// software adapter (SwiftShader here) off the scoring path.
#[wasm_bindgen_test]
async fn auto_requests_an_adapter_only_for_a_large_catalog_and_never_scores_on_software() {
    let has_adapter = adapter().await.is_some();
    let ranker = feedloop::Ranker::from_bytes(MODEL)
        .map_err(JsValue::from)
        .unwrap();
    let described = JsFuture::from(ranker.set_gpu("auto".into()).unwrap())
        .await
        .unwrap();
    assert!(described.is_null(), "auto requested an adapter up front");
    let mut rng = Rng(14);
    let small = rng.embeddings(10);
    let counts = |e: &Embeddings| e.token_counts.iter().map(|&n| n as u32).collect::<Vec<_>>();
    // Synthetic token ids (a fixed pattern) for the lexical term.
    let ids = |e: &Embeddings| {
        (0..e.token_counts.iter().sum::<usize>())
            .map(|k| 1000 + (k % 5000) as u32)
            .collect::<Vec<_>>()
    };
    score_catalog(
        &ranker,
        "a question",
        &small.values,
        &counts(&small),
        &ids(&small),
    )
    .await;
    assert_eq!(
        ranker.gpu_adapter(),
        None,
        "a small catalog requested an adapter"
    );
    let large = rng.embeddings(feedloop_gpu::GPU_MIN_CANDIDATES);
    let scored = score_catalog(
        &ranker,
        "a question",
        &large.values,
        &counts(&large),
        &ids(&large),
    )
    .await;
    assert_eq!(scored.len(), large.len());
    assert_eq!(ranker.gpu_adapter().is_some(), has_adapter);
    if let Some(adapter) = ranker.gpu_adapter() {
        console_log!("auto found {adapter}");
        assert!(adapter.contains("software"), "{adapter}");
    }
    assert_eq!(ranker.backend(), "cpu");
}
