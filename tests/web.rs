//! The wasm build in real headless Chromium (wasm-bindgen-test): the same embeddings and scores as
//! onnxruntime and the native build (tests/fixtures/parity.json, to 1e-5), and JS-facing errors that
//! are real `Error`s.
#![cfg(target_arch = "wasm32")]

use feedloop::Ranker;
use feedloop_core::RewardModel;
use js_sys::{Array, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

const MODEL: &[u8] = include_bytes!("../models/feedloop-default.onnx");
const PARITY: &str = include_str!("fixtures/parity.json");

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[wasm_bindgen_test]
fn embeddings_and_scores_match_onnxruntime_in_the_browser() {
    let model = RewardModel::from_bytes(MODEL).unwrap();
    let ranker = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    let parity: serde_json::Value = serde_json::from_str(PARITY).unwrap();
    let mut worst = 0f32;
    for group in parity["groups"].as_array().unwrap() {
        let context = group["context"].as_str().unwrap();
        let candidates: Vec<&str> = group["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let embeddings = model.embed(&candidates).unwrap();
        for (i, expected) in group["embeddings"].as_array().unwrap().iter().enumerate() {
            for (a, b) in embeddings.row(i).iter().zip(floats(expected)) {
                worst = worst.max((a - b).abs());
            }
        }
        // Through the JS-facing surface too: JsValue in, Float32Array out.
        let js_candidates: Array = candidates.iter().map(|c| JsValue::from_str(c)).collect();
        let scores = ranker
            .score(JsValue::from_str(context), js_candidates.into())
            .map_err(JsValue::from)
            .unwrap()
            .to_vec();
        for (a, b) in scores.iter().zip(floats(&group["scores"])) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(
        worst <= 1e-5,
        "largest difference from onnxruntime: {worst:e}"
    );
}

fn error_message(result: Result<impl Sized, JsError>) -> String {
    let value = match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => JsValue::from(e),
    };
    assert!(
        value.is_instance_of::<js_sys::Error>(),
        "not a JS Error: {value:?}"
    );
    Reflect::get(&value, &"message".into())
        .unwrap()
        .as_string()
        .unwrap()
}

#[wasm_bindgen_test]
fn malformed_model_bytes_are_a_js_error() {
    let message = error_message(Ranker::from_bytes(b"definitely not onnx"));
    assert!(message.contains("malformed ONNX model"), "{message}");
}

#[wasm_bindgen_test]
fn non_string_candidate_is_a_js_error() {
    let ranker = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    let candidates: Array = [JsValue::from_str("fine"), JsValue::from_f64(42.0)]
        .iter()
        .collect();
    let message = error_message(ranker.rank(JsValue::from_str("context"), candidates.into()));
    assert!(
        message.contains("candidates[1] must be a string, got number"),
        "{message}"
    );
    let message = error_message(ranker.rank(JsValue::NULL, Array::new().into()));
    assert!(
        message.contains("context must be a string, got null"),
        "{message}"
    );
}
