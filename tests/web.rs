//! The wasm build in real headless Chromium (wasm-bindgen-test): the same embeddings and scores as
//! onnxruntime and the native build (tests/fixtures/parity.json, to 1e-5), and JS-facing errors that
//! are real `Error`s.
#![cfg(target_arch = "wasm32")]

use feedloop::Ranker;
use feedloop_core::RewardModel;
use js_sys::{Array, Reflect, Uint8Array};
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

fn error_message(result: Result<impl Sized, impl Into<JsValue>>) -> String {
    let value = match result {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.into(),
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
        message.contains("candidates[1] must be a string or { id, text }, got number"),
        "{message}"
    );
    let message = error_message(ranker.rank(JsValue::NULL, Array::new().into()));
    assert!(
        message.contains("context must be a string, got null"),
        "{message}"
    );
}

// ---- feedback, learning and persistence in the browser ---------------------------------------

fn candidates(items: &[(&str, &str)]) -> JsValue {
    let array = Array::new();
    for (id, text) in items {
        let object = js_sys::Object::new();
        Reflect::set(&object, &"id".into(), &(*id).into()).unwrap();
        Reflect::set(&object, &"text".into(), &(*text).into()).unwrap();
        array.push(&object);
    }
    array.into()
}

const QUESTION: &str = "How do I reset my password?";
const ANSWERS: [(&str, &str); 3] = [
    (
        "reset",
        "To reset your password, click 'Forgot password' on the sign-in page.",
    ),
    ("rules", "Passwords must be at least 12 characters long."),
    ("museum", "The museum opens at nine."),
];

fn ranked_ids(ranker: &Ranker) -> Vec<String> {
    let ranked = ranker
        .rank(QUESTION.into(), candidates(&ANSWERS))
        .map_err(JsValue::from)
        .unwrap();
    Array::from(&ranked)
        .iter()
        .map(|r| Reflect::get(&r, &"id".into()).unwrap().as_string().unwrap())
        .collect()
}

fn event(json: &str) -> JsValue {
    js_sys::JSON::parse(json).unwrap()
}

#[wasm_bindgen_test]
fn malformed_feedback_is_a_js_error_naming_the_problem() {
    let ranker = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    ranked_ids(&ranker);
    for (json, expected) in [
        (
            r#"{"kind": "like", "candidate": "reset"}"#,
            "unknown feedback kind \"like\"",
        ),
        (
            r#"{"kind": "stars", "candidate": "reset", "stars": 7}"#,
            "1 to 5",
        ),
        (
            r#"{"kind": "pairwise", "winner": "reset", "loser": "reset"}"#,
            "two different",
        ),
        (
            r#"{"kind": "click", "candidate": "nobody"}"#,
            "unknown candidate \"nobody\"",
        ),
        (
            r#"{"kind": "click", "candidate": "reset", "timestamp": 9e15}"#,
            "in the future",
        ),
        (
            r#"{"kind": "thumbs", "candidate": "reset", "upp": true}"#,
            "unknown field `upp`",
        ),
        (r#""thumbs""#, "must be an object"),
    ] {
        let message = error_message(ranker.record_feedback(event(json)));
        assert!(message.contains(expected), "{json}: {message}");
    }
}

#[wasm_bindgen_test]
fn a_thumbs_down_reranks_at_once() {
    let ranker = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    let before = ranked_ids(&ranker);
    assert_eq!(before[0], "reset");
    ranker
        .record_feedback(event(
            r#"{"kind": "thumbs", "candidate": "reset", "up": false}"#,
        ))
        .map_err(JsValue::from)
        .unwrap();
    let after = ranked_ids(&ranker);
    assert_ne!(after[0], "reset", "{after:?}");
}

async fn resolve(promise: js_sys::Promise) -> Result<JsValue, JsValue> {
    wasm_bindgen_futures::JsFuture::from(promise).await
}

fn example_count(ranker: &Ranker) -> f64 {
    let state = ranker.learning_state().map_err(JsValue::from).unwrap();
    Reflect::get(&state, &"exampleCount".into())
        .unwrap()
        .as_f64()
        .unwrap()
}

#[wasm_bindgen_test]
async fn state_persists_across_a_fresh_ranker_and_two_tabs_merge() {
    let db = format!("feedloop-test-{}", js_sys::Math::random());
    let tab_a = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    let tab_b = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    assert_eq!(
        resolve(tab_a.restore(db.clone())).await.unwrap(),
        JsValue::FALSE
    );
    assert_eq!(
        resolve(tab_b.restore(db.clone())).await.unwrap(),
        JsValue::FALSE
    );
    ranked_ids(&tab_a);
    ranked_ids(&tab_b);
    tab_a
        .record_feedback(event(
            r#"{"kind": "thumbs", "candidate": "reset", "up": false}"#,
        ))
        .map_err(JsValue::from)
        .unwrap();
    tab_b
        .record_feedback(event(
            r#"{"kind": "stars", "candidate": "rules", "stars": 5}"#,
        ))
        .map_err(JsValue::from)
        .unwrap();
    tab_b
        .record_feedback(event(r#"{"kind": "copy", "candidate": "museum"}"#))
        .map_err(JsValue::from)
        .unwrap();
    // Both tabs save; the second merges instead of overwriting.
    resolve(tab_a.save(db.clone())).await.unwrap();
    resolve(tab_b.save(db.clone())).await.unwrap();

    let reloaded = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    assert_eq!(
        resolve(reloaded.restore(db.clone())).await.unwrap(),
        JsValue::TRUE
    );
    assert_eq!(example_count(&reloaded), 3.0);
    let activity = Array::from(&reloaded.activity().map_err(JsValue::from).unwrap());
    assert_eq!(activity.length(), 3);
    // The learned head survives: the thumbed-down answer is no longer on top.
    assert_ne!(ranked_ids(&reloaded)[0], "reset");
    resolve(Ranker::clear_storage(db)).await.unwrap();
}

#[wasm_bindgen_test]
async fn a_storage_failure_rejects_with_an_error_and_loses_nothing() {
    let db = format!("feedloop-test-{}", js_sys::Math::random());
    let ranker = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    ranked_ids(&ranker);
    ranker
        .record_feedback(event(
            r#"{"kind": "thumbs", "candidate": "rules", "up": true}"#,
        ))
        .map_err(JsValue::from)
        .unwrap();
    let break_storage = js_sys::Function::new_no_args(
        "IDBFactory.prototype.__open = IDBFactory.prototype.open;
         IDBFactory.prototype.open = function () {
           throw new DOMException('The quota has been exceeded.', 'QuotaExceededError');
         };",
    );
    let repair_storage =
        js_sys::Function::new_no_args("IDBFactory.prototype.open = IDBFactory.prototype.__open;");
    break_storage.call0(&JsValue::NULL).unwrap();
    let failure = resolve(ranker.save(db.clone())).await;
    repair_storage.call0(&JsValue::NULL).unwrap();
    let error = failure.expect_err("save must fail while IndexedDB is broken");
    assert!(error.is_instance_of::<js_sys::Error>());
    let message = Reflect::get(&error, &"message".into())
        .unwrap()
        .as_string()
        .unwrap();
    assert!(
        message.contains("feedloop: storage:") && message.contains("quota"),
        "{message}"
    );
    // Still working in memory, and the next save writes everything.
    ranker
        .record_feedback(event(r#"{"kind": "click", "candidate": "reset"}"#))
        .map_err(JsValue::from)
        .unwrap();
    assert_eq!(example_count(&ranker), 2.0);
    resolve(ranker.save(db.clone())).await.unwrap();
    let reloaded = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    resolve(reloaded.restore(db.clone())).await.unwrap();
    assert_eq!(example_count(&reloaded), 2.0);
    resolve(Ranker::clear_storage(db)).await.unwrap();
}

// ---- the exact discrete Gaussian sampler in the wasm build -----------------------------------

/// χ² goodness of fit of 10⁶ draws against the exact PMF p(x) ∝ exp(−x²/2σ²), in the browser's wasm
/// engine (the same code as natively; this checks the wasm build, its integer arithmetic included).
/// Prints samples/s (a debug-profile test build; the package's release numbers come from the bench).
#[wasm_bindgen_test]
fn discrete_gaussian_draws_fit_the_exact_pmf_in_wasm() {
    use chacha20::rand_core::SeedableRng;
    use feedloop_privacy::sampler::DiscreteGaussian;

    const DRAWS: usize = 1_000_000;
    for (seed, sigma) in [(1u64, 0.5f64), (2, 3.0), (3, 100.0), (4, 1000.0)] {
        let sampler = DiscreteGaussian::from_sigma(sigma).unwrap();
        let mut rng = chacha20::ChaCha20Rng::seed_from_u64(seed);
        let mut draws = vec![0i64; DRAWS];
        let start = js_sys::Date::now();
        sampler.fill(&mut rng, &mut draws);
        let seconds = (js_sys::Date::now() - start) / 1000.0;

        // Exact PMF over a range holding all but ~e-300 of the mass.
        let radius = (40.0 * sigma).ceil() as i64 + 5;
        let weights: Vec<f64> = (-radius..=radius)
            .map(|x| (-(x as f64).powi(2) / (2.0 * sigma * sigma)).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut counts = vec![0u64; weights.len()];
        for &x in &draws {
            assert!(
                x.abs() <= radius,
                "σ = {sigma}: draw {x} is absurdly far out"
            );
            counts[(x + radius) as usize] += 1;
        }
        // Bins with expected count ≥ 5: merge each tail into its neighbour.
        let mut bins: Vec<(f64, f64)> = Vec::new();
        let (mut expected, mut observed) = (0.0, 0.0);
        for (w, c) in weights.iter().zip(&counts) {
            expected += w / total * DRAWS as f64;
            observed += *c as f64;
            if expected >= 5.0 {
                bins.push((expected, observed));
                expected = 0.0;
                observed = 0.0;
            }
        }
        if let Some(last) = bins.last_mut() {
            last.0 += expected;
            last.1 += observed;
        }
        let chi2: f64 = bins.iter().map(|(e, o)| (o - e).powi(2) / e).sum();
        let dof = (bins.len() - 1) as f64;
        // Wilson–Hilferty upper 0.1 % point of χ²(dof).
        let h = 2.0 / (9.0 * dof);
        let critical = dof * (1.0 - h + 3.09 * h.sqrt()).powi(3);
        let mean = draws.iter().sum::<i64>() as f64 / DRAWS as f64;
        wasm_bindgen_test::console_log!(
            "discrete Gaussian σ = {sigma}: χ² = {chi2:.1} on {dof} dof (0.1 % critical {critical:.1}), mean {mean:.4}, {:.0} samples/s",
            DRAWS as f64 / seconds
        );
        assert!(
            chi2 < critical,
            "σ = {sigma}: χ² = {chi2:.1} ≥ {critical:.1}"
        );
        assert!(mean.abs() < 5.0 * sigma / (DRAWS as f64).sqrt() + 1e-9);
    }
}

// ---- privacy: inspect, release, budget across reloads -----------------------------------------

fn round(id: &str, sigma: f64) -> JsValue {
    js_sys::JSON::parse(&format!(
        r#"{{"roundId": "{id}", "modelVersion": "bundled", "clipNorm": 1, "granularity": 0.01, "noiseStddev": {sigma}}}"#
    ))
    .unwrap()
}

fn get(value: &JsValue, path: &[&str]) -> JsValue {
    path.iter().fold(value.clone(), |v, key| {
        Reflect::get(&v, &(*key).into()).unwrap()
    })
}

#[wasm_bindgen_test]
fn the_next_upload_can_be_inspected_and_weak_rounds_are_refused() {
    let ranker = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    ranked_ids(&ranker);
    ranker
        .record_feedback(event(
            r#"{"kind": "thumbs", "candidate": "reset", "up": false}"#,
        ))
        .map_err(JsValue::from)
        .unwrap();
    // σ = 1 for C = 1 costs ρ = 2, above the default 0.5 per release.
    let message = error_message(ranker.inspect_next_upload(round("weak", 1.0)));
    assert!(message.contains("privacy:"), "{message}");
    let stale = js_sys::JSON::parse(
        r#"{"roundId": "r", "modelVersion": "v9", "clipNorm": 1, "granularity": 0.01, "noiseStddev": 4}"#,
    )
    .unwrap();
    assert!(error_message(ranker.inspect_next_upload(stale)).contains("update the model first"));
    let misspelled = js_sys::JSON::parse(r#"{"roundID": "r"}"#).unwrap();
    assert!(
        error_message(ranker.inspect_next_upload(misspelled)).contains("unknown field `roundID`")
    );

    let first = ranker
        .inspect_next_upload(round("r1", 4.0))
        .map_err(JsValue::from)
        .unwrap();
    let bytes = Uint8Array::from(get(&first, &["bytes"])).to_vec();
    assert_eq!(&bytes[..4], b"FLDP");
    assert_eq!(get(&first, &["decoded", "dimension"]).as_f64(), Some(132.0));
    assert_eq!(
        Array::from(&get(&first, &["decoded", "values"])).length(),
        132
    );
    assert!((get(&first, &["rho"]).as_f64().unwrap() - 0.125).abs() < 1e-12);
    // Inspecting again shows the same bytes: what is inspected is what will be sent.
    let again = ranker
        .inspect_next_upload(round("r1", 4.0))
        .map_err(JsValue::from)
        .unwrap();
    assert_eq!(Uint8Array::from(get(&again, &["bytes"])).to_vec(), bytes);
    assert_eq!(get(&again, &["sha256"]), get(&first, &["sha256"]));
}

#[wasm_bindgen_test]
async fn spent_budget_persists_across_a_reload_and_is_never_spent_twice() {
    let db = format!("feedloop-test-{}", js_sys::Math::random());
    let ranker = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    resolve(ranker.restore(db.clone())).await.unwrap();
    ranked_ids(&ranker);
    ranker
        .record_feedback(event(
            r#"{"kind": "stars", "candidate": "rules", "stars": 5}"#,
        ))
        .map_err(JsValue::from)
        .unwrap();
    let inspected = ranker
        .inspect_next_upload(round("r1", 4.0))
        .map_err(JsValue::from)
        .unwrap();
    // Inspecting needs no consent; releasing does, and nothing is charged while it is missing.
    let refused = resolve(ranker.release_next_upload(db.clone(), round("r1", 4.0))).await;
    assert!(error_message(refused).contains("not consented"));
    let report = ranker.privacy_report().map_err(JsValue::from).unwrap();
    assert_eq!(get(&report, &["spent", "lifetimeRho"]).as_f64(), Some(0.0));
    assert_eq!(get(&report, &["consent", "granted"]).as_bool(), Some(false));
    let changed = resolve(ranker.set_consent(Some(db.clone()), true))
        .await
        .unwrap();
    assert_eq!(changed.as_bool(), Some(true));
    assert!(ranker.consent());
    let sent = resolve(ranker.release_next_upload(db.clone(), round("r1", 4.0)))
        .await
        .unwrap();
    assert_eq!(
        Uint8Array::from(sent).to_vec(),
        Uint8Array::from(get(&inspected, &["bytes"])).to_vec(),
        "the released bytes are the inspected ones"
    );

    let reloaded = Ranker::from_bytes(MODEL).map_err(JsValue::from).unwrap();
    resolve(reloaded.restore(db.clone())).await.unwrap();
    let report = reloaded.privacy_report().map_err(JsValue::from).unwrap();
    assert_eq!(get(&report, &["spent", "releases"]).as_f64(), Some(1.0));
    assert!((get(&report, &["spent", "lifetimeRho"]).as_f64().unwrap() - 0.125).abs() < 1e-12);
    assert_eq!(
        get(&report, &["consent", "granted"]).as_bool(),
        Some(true),
        "consent was saved"
    );
    let entries = Array::from(&get(&report, &["ledger", "entries"]));
    assert_eq!(entries.length(), 2, "the consent, then the release");
    assert_eq!(
        get(&entries.get(0), &["purpose"]).as_string().unwrap(),
        "consent granted"
    );
    assert_eq!(
        get(&entries.get(1), &["dp_event", "dp_event"])
            .as_string()
            .unwrap(),
        "GaussianDpEvent"
    );
    // The same round cannot be paid for twice, even after a reload.
    let message = error_message(reloaded.inspect_next_upload(round("r1", 4.0)));
    assert!(message.contains("already charged"), "{message}");
    resolve(Ranker::clear_storage(db)).await.unwrap();
}
