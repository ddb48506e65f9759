//! The reward model against its references: the committed model hash, Hugging Face `tokenizers` ids
//! and onnxruntime outputs (fixtures written by tools/make_fixtures.py and re-checked by `make test`),
//! the contract's refusals, and edge cases.

use feedloop_core::{Error, RewardModel};
use prost::Message;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tract_onnx::pb::ModelProto;

const MODEL: &[u8] = include_bytes!("../../models/feedloop-default.onnx");
const MODEL_SHA256: &str = include_str!("../../models/feedloop-default.onnx.sha256");
const TOKENIZER_CASES: &str = include_str!("../../tests/fixtures/tokenizer_cases.json");
const PARITY: &str = include_str!("../../tests/fixtures/parity.json");
/// The default model as it was before contract 2 (the same table, no lexical term): contract 1
/// files keep loading.
const MODEL_CONTRACT_1: &[u8] = include_bytes!("../../tests/fixtures/model-contract-1.onnx");

fn model() -> RewardModel {
    RewardModel::from_bytes(MODEL).expect("the default model loads")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn committed_model_matches_recorded_hash() {
    let recorded = MODEL_SHA256.split_whitespace().next().unwrap();
    assert_eq!(hex(&Sha256::digest(MODEL)), recorded);
}

#[test]
fn tokenizer_matches_hugging_face_tokenizers() {
    let model = model();
    let cases: Value = serde_json::from_str(TOKENIZER_CASES).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 200, "only {} tokenizer cases", cases.len());
    let mut mismatches = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = model.tokenizer().encode(text);
        if got != expected {
            mismatches.push(format!(
                "{text:?}\n  expected {expected:?}\n  got      {got:?}"
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} cases differ:\n{}",
        mismatches.len(),
        cases.len(),
        mismatches.join("\n")
    );
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn embeddings_and_scores_match_onnxruntime() {
    let model = model();
    let parity: Value = serde_json::from_str(PARITY).unwrap();
    let recorded = MODEL_SHA256.split_whitespace().next().unwrap();
    assert_eq!(
        parity["model_sha256"].as_str(),
        Some(recorded),
        "fixture is for another model"
    );
    let mut worst = 0f32;
    for group in parity["groups"].as_array().unwrap() {
        let context = group["context"].as_str().unwrap();
        let candidates: Vec<&str> = group["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let ids: Vec<u32> = model.token_ids(context);
        let expected_ids: Vec<u32> = group["context_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, expected_ids, "context ids for {context:?}");

        let embeddings = model.embed(&candidates).unwrap();
        for (i, expected) in group["embeddings"].as_array().unwrap().iter().enumerate() {
            for (a, b) in embeddings.row(i).iter().zip(floats(expected)) {
                worst = worst.max((a - b).abs());
            }
        }
        let context_embedding = model.embed(&[context]).unwrap();
        for (a, b) in context_embedding
            .row(0)
            .iter()
            .zip(floats(&group["context_embedding"]))
        {
            worst = worst.max((a - b).abs());
        }
        let scores = model.score(context, &candidates).unwrap();
        for (a, b) in scores.iter().zip(floats(&group["scores"])) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(
        worst <= 1e-5,
        "largest difference from onnxruntime: {worst:e}"
    );
}

fn proto() -> ModelProto {
    ModelProto::decode(MODEL).unwrap()
}

fn load(proto: &ModelProto) -> Result<RewardModel, Error> {
    RewardModel::from_bytes(&proto.encode_to_vec())
}

fn contract_error(proto: &ModelProto) -> String {
    match load(proto) {
        Err(e @ Error::Contract(_)) => e.to_string(),
        Err(other) => panic!("expected a contract error, got {other}"),
        Ok(_) => panic!("a model that breaks the contract was accepted"),
    }
}

#[test]
fn model_missing_an_output_is_refused_by_name() {
    let mut p = proto();
    p.graph
        .as_mut()
        .unwrap()
        .output
        .retain(|o| o.name != "score");
    let message = contract_error(&p);
    assert!(message.contains("output `score`"), "{message}");
}

#[test]
fn model_missing_metadata_and_inputs_is_refused_naming_all() {
    let mut p = proto();
    p.metadata_props
        .retain(|e| e.key != "feedloop.vocab" && e.key != "feedloop.dimensions");
    p.graph
        .as_mut()
        .unwrap()
        .input
        .retain(|i| i.name != "attention_mask");
    let message = contract_error(&p);
    for part in [
        "input `attention_mask`",
        "metadata `feedloop.vocab`",
        "metadata `feedloop.dimensions`",
    ] {
        assert!(message.contains(part), "{part} not named in: {message}");
    }
}

#[test]
fn model_missing_a_head_parameter_is_refused() {
    let mut p = proto();
    p.graph
        .as_mut()
        .unwrap()
        .initializer
        .retain(|t| t.name != "head_candidate");
    let message = contract_error(&p);
    assert!(
        message.contains("initializer `head_candidate`"),
        "{message}"
    );
}

#[test]
fn unsupported_contract_version_is_refused() {
    let mut p = proto();
    for e in &mut p.metadata_props {
        if e.key == "feedloop.contract" {
            e.value = "99".into();
        }
    }
    assert!(contract_error(&p).contains("\"99\""));
}

#[test]
fn wrong_dimensions_in_metadata_are_refused() {
    let mut p = proto();
    for e in &mut p.metadata_props {
        if e.key == "feedloop.dimensions" {
            e.value = "32".into();
        }
    }
    let message = contract_error(&p);
    assert!(message.contains("values"), "{message}");
}

#[test]
fn malformed_bytes_are_refused() {
    for bytes in [
        &b""[..],
        b"not an onnx model at all",
        &MODEL[..MODEL.len() / 2],
    ] {
        match RewardModel::from_bytes(bytes) {
            Err(Error::MalformedModel(m)) => assert!(!m.is_empty()),
            Err(other) => panic!("expected MalformedModel, got {other}"),
            Ok(_) => panic!("malformed bytes accepted"),
        }
    }
}

#[test]
fn empty_candidate_list_gives_empty_ranking() {
    let ranking = model().rank::<&str>("anything", &[]).unwrap();
    assert!(ranking.is_empty());
}

#[test]
fn long_texts_are_truncated_at_max_tokens() {
    let model = model();
    let max = model.info().max_tokens;
    let long = "privacy ".repeat(3 * max);
    assert_eq!(model.token_ids(&long).len(), max);
    // Everything past max_tokens is ignored: appending more text changes nothing.
    let longer = format!("{long} completely different words about bananas");
    let a = model.embed(&[long.as_str()]).unwrap();
    let b = model.embed(&[longer.as_str()]).unwrap();
    assert_eq!(a, b);
}

#[test]
fn empty_text_embeds_to_zero_and_scores_finite() {
    let model = model();
    let e = model.embed(&[""]).unwrap();
    assert!(e.row(0).iter().all(|&x| x == 0.0));
    let scores = model.score("", &["", "hello"]).unwrap();
    assert!(scores.iter().all(|s| s.is_finite()));
}

#[test]
fn ranking_is_deterministic_across_loads() {
    let candidates = [
        "Reset it under Settings › Security › Password.",
        "Our office is closed on Sundays.",
        "",
    ];
    let a = model()
        .rank("how do I reset my password?", &candidates)
        .unwrap();
    let b = model()
        .rank("how do I reset my password?", &candidates)
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn default_ranking_is_by_relevance() {
    let model = model();
    let candidates = [
        "The museum opens at nine and closes at five.",
        "To reset your password, click 'Forgot password' on the sign-in page and follow the email link.",
        "Bananas are rich in potassium.",
    ];
    let ranking = model
        .rank("How do I reset my password?", &candidates)
        .unwrap();
    assert_eq!(ranking[0].index, 1, "{ranking:?}");
    let features = model
        .features("How do I reset my password?", &candidates)
        .unwrap();
    let head = model.head();
    let weight = head.lexical.expect("the default model is contract 2");
    assert!(weight > 0.0 && head.cosine > 0.0);
    for (r, f) in ranking.iter().map(|r| (r, &features[r.index])) {
        let lexical = f.lexical.expect("a contract 2 model supplies λ");
        assert!(
            (r.score - (head.cosine * f.cosine() + weight * lexical)).abs() < 1e-6,
            "the default head scores a·cosine + w·λ"
        );
    }
    let shared = features[1].lexical.unwrap();
    assert!(shared > 0.2, "shares \"reset\", \"password\": {shared}");
    assert_eq!(features[2].lexical, Some(0.0), "shares no word");
}

#[test]
fn contract_1_models_still_load_and_score_by_cosine() {
    let v1 = RewardModel::from_bytes(MODEL_CONTRACT_1).expect("a contract 1 model loads");
    assert_eq!(v1.info().contract_version, "1");
    assert!(!v1.info().lexical_feature && v1.lexical().is_none());
    assert_eq!(v1.info().head_parameters, 2 * 64 + 3);
    let v2 = model();
    assert_eq!(v2.info().contract_version, "2");
    assert!(v2.info().lexical_feature);
    assert_eq!(v2.info().head_parameters, 2 * 64 + 4);
    let candidates = [
        "Reset it under Settings › Security › Password.",
        "Bananas.",
        "",
    ];
    let context = "how do I reset my password?";
    let f1 = v1.features(context, &candidates).unwrap();
    let f2 = v2.features(context, &candidates).unwrap();
    for ((a, b), score) in f1
        .iter()
        .zip(&f2)
        .zip(v1.score(context, &candidates).unwrap())
    {
        assert_eq!(a.lexical, None);
        // contract 1's file has the int8 table the default model's int4 one was requantized from
        let drift = (a.cosine() - b.cosine()).abs();
        assert!(drift < 0.05, "int8 and int4 cosines differ by {drift}");
        assert!((score - a.cosine()).abs() < 1e-6);
        assert_eq!(a.to_vector().len(), 131);
        assert_eq!(b.to_vector().len(), 132);
    }
    // A contract 1 head cannot be set on a contract 2 model, nor the other way round.
    let mut v2 = v2;
    assert!(v2.set_head(v1.head().clone()).is_err());
}

fn lexical(model: &RewardModel, context: &str, candidate: &str) -> f32 {
    model.features(context, &[candidate]).unwrap()[0]
        .lexical
        .unwrap()
}

#[test]
fn the_lexical_term_on_edge_cases() {
    let model = model();
    // empty texts
    assert_eq!(lexical(&model, "", "reset your password"), 0.0);
    assert_eq!(lexical(&model, "reset your password", ""), 0.0);
    // repeated words saturate below 1
    let once = lexical(&model, "password", "password");
    let often = lexical(&model, "password", &"password ".repeat(50));
    assert!(once > 0.0 && often < 1.0, "{once} {often}");
    // a text longer than max tokens: only the first max_tokens count
    let max = model.info().max_tokens;
    let long = "privacy ".repeat(2 * max);
    let longer = format!("{long} bananas");
    assert_eq!(
        lexical(&model, "bananas privacy", &long),
        lexical(&model, "bananas privacy", &longer)
    );
    // unknown tokens ([UNK] stands for many words) carry no weight
    let unk = "\u{10FFFF}\u{10FFFE}";
    assert_eq!(model.token_ids(unk), [100]);
    assert_eq!(lexical(&model, unk, unk), 0.0);
    assert_eq!(
        lexical(&model, &format!("{unk} password"), "password"),
        once
    );
    // a rarer shared word counts for more than a common one
    let common = lexical(&model, "the password", "the cat");
    let rare = lexical(&model, "the password", "password cat");
    assert!(rare > common, "{rare} vs {common}");
}

#[test]
fn contract_2_without_its_lexical_initializers_is_refused() {
    let mut p = proto();
    p.graph
        .as_mut()
        .unwrap()
        .initializer
        .retain(|t| t.name != "lexical_idf" && t.name != "lexical_k1");
    let message = contract_error(&p);
    for part in ["initializer `lexical_idf`", "initializer `lexical_k1`"] {
        assert!(message.contains(part), "{part} not named in: {message}");
    }
    let mut p = proto();
    for t in &mut p.graph.as_mut().unwrap().initializer {
        if t.name == "lexical_idf" {
            t.raw_data.truncate(100);
            t.dims = vec![100];
        }
    }
    let message = contract_error(&p);
    assert!(message.contains("has 100 values"), "{message}");
    let mut p = proto();
    for e in &mut p.metadata_props {
        if e.key == "feedloop.head.parameters" {
            e.value = "head_cosine,head_interaction,head_candidate,head_length,head_bias".into();
        }
    }
    assert!(contract_error(&p).contains("head_lexical"));
}

#[test]
fn flat_batches_embed_exactly_like_nested_ones() {
    let model = model();
    let texts = [
        "How do I reset my password?",
        "",
        "Boil dried spaghetti for 8 to 12 minutes.",
    ];
    let nested: Vec<Vec<u32>> = texts.iter().map(|t| model.token_ids(t)).collect();
    let flat: Vec<u32> = nested.concat();
    let lengths: Vec<u32> = nested.iter().map(|r| r.len() as u32).collect();
    assert_eq!(lengths[1], 0, "the empty text stays an empty row");
    let a = model.embed_ids(&nested).unwrap();
    let b = model.embed_flat(&flat, &lengths).unwrap();
    assert_eq!(a, b);

    let short = model
        .embed_flat(&flat[1..], &lengths)
        .unwrap_err()
        .to_string();
    assert!(short.contains("add up to"), "{short}");
    let vocab = model.info().vocab_size as u32;
    let outside = model.embed_flat(&[vocab], &[1]).unwrap_err().to_string();
    assert!(outside.contains("outside the vocabulary"), "{outside}");
}

#[test]
fn large_batches_are_chunked_by_length_and_keep_their_order() {
    let model = model();
    // 600 texts (more than one body run) of very different lengths, in no particular order.
    let words = [
        "reset",
        "password",
        "refund",
        "invoice",
        "café",
        "two-factor",
        "export",
    ];
    let texts: Vec<String> = (0..600)
        .map(|i| {
            let n = (i * 37) % 61;
            (0..n)
                .map(|k| words[(i + k) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    let all = model.embed(&texts).unwrap();
    assert_eq!(all.len(), texts.len());
    let mut worst = 0f32;
    for (i, text) in texts.iter().enumerate().step_by(7) {
        let alone = model.embed(&[text]).unwrap();
        assert_eq!(all.token_counts[i], alone.token_counts[0], "text {i}");
        for (a, b) in all.row(i).iter().zip(alone.row(0)) {
            worst = worst.max((a - b).abs());
        }
    }
    assert!(
        worst <= 1e-6,
        "chunked rows differ from single rows by {worst}"
    );
}
