//! The feedloop model contract (docs/MODEL.md): what an ONNX file must carry to be a feedloop model.
//!
//! Checked on the protobuf before tract builds anything, so a model that does not fit is refused with
//! an error that names every missing piece at once.

use std::collections::HashMap;

use tract_onnx::pb::{ModelProto, TensorProto};

use crate::error::{Error, Result};
use crate::head::{RewardHead, HEAD_PARAMETERS};
use crate::tokenizer::TokenizerConfig;

/// The contract version this build understands.
pub const CONTRACT_VERSION: &str = "1";
pub const TOKENIZER_KIND: &str = "bert-wordpiece-uncased";

pub const INPUT_TOKEN_IDS: &str = "token_ids";
pub const INPUT_ATTENTION_MASK: &str = "attention_mask";
pub const INPUT_CONTEXT_TOKEN_IDS: &str = "context_token_ids";
pub const INPUT_CONTEXT_ATTENTION_MASK: &str = "context_attention_mask";
pub const OUTPUT_EMBEDDING: &str = "embedding";
pub const OUTPUT_SCORE: &str = "score";

const KEY_CONTRACT: &str = "feedloop.contract";
const KEY_TOKENIZER: &str = "feedloop.tokenizer";
const KEY_VOCAB: &str = "feedloop.vocab";
const KEY_MAX_TOKENS: &str = "feedloop.max_tokens";
const KEY_DIMENSIONS: &str = "feedloop.dimensions";
const KEY_HEAD_PARAMETERS: &str = "feedloop.head.parameters";

/// What the contract's metadata and initializers say about a model.
#[derive(Debug, Clone)]
pub struct ModelContract {
    pub contract_version: String,
    pub vocab: Vec<String>,
    pub tokenizer: TokenizerConfig,
    pub max_tokens: usize,
    pub dimensions: usize,
    pub head: RewardHead,
    /// Every `metadata_props` entry except the (large) vocabulary, for display.
    pub metadata: Vec<(String, String)>,
}

impl ModelContract {
    /// Reads and checks the contract; the error lists everything that is missing or wrong.
    pub fn from_proto(proto: &ModelProto) -> Result<Self> {
        let mut problems = Vec::new();
        let meta: HashMap<&str, &str> = proto
            .metadata_props
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        let Some(graph) = proto.graph.as_ref() else {
            return Err(Error::MalformedModel("the file holds no graph".into()));
        };

        for (name, what) in [(INPUT_TOKEN_IDS, "input"), (INPUT_ATTENTION_MASK, "input")] {
            if !graph.input.iter().any(|i| i.name == name) {
                problems.push(format!("{what} `{name}`"));
            }
        }
        for name in [OUTPUT_EMBEDDING, OUTPUT_SCORE] {
            if !graph.output.iter().any(|o| o.name == name) {
                problems.push(format!("output `{name}`"));
            }
        }

        let mut text = |key: &str| -> Option<String> {
            match meta.get(key) {
                Some(v) => Some((*v).to_string()),
                None => {
                    problems.push(format!("metadata `{key}`"));
                    None
                }
            }
        };
        let contract_version = text(KEY_CONTRACT);
        let tokenizer_kind = text(KEY_TOKENIZER);
        let vocab = text(KEY_VOCAB);
        let max_tokens = text(KEY_MAX_TOKENS);
        let dimensions = text(KEY_DIMENSIONS);
        let head_names = text(KEY_HEAD_PARAMETERS);
        if !problems.is_empty() {
            return Err(missing(problems));
        }
        let (contract_version, tokenizer_kind, vocab, max_tokens, dimensions, head_names) = (
            contract_version.unwrap_or_default(),
            tokenizer_kind.unwrap_or_default(),
            vocab.unwrap_or_default(),
            max_tokens.unwrap_or_default(),
            dimensions.unwrap_or_default(),
            head_names.unwrap_or_default(),
        );

        if contract_version != CONTRACT_VERSION {
            return Err(Error::Contract(format!(
                "contract version {contract_version:?} is not supported (this build reads {CONTRACT_VERSION:?})"
            )));
        }
        if tokenizer_kind != TOKENIZER_KIND {
            return Err(Error::Contract(format!(
                "tokenizer {tokenizer_kind:?} is not supported (this build reads {TOKENIZER_KIND:?})"
            )));
        }
        let max_tokens = parse_positive(KEY_MAX_TOKENS, &max_tokens)?;
        let dimensions = parse_positive(KEY_DIMENSIONS, &dimensions)?;
        let expected_names = HEAD_PARAMETERS.join(",");
        if head_names != expected_names {
            return Err(Error::Contract(format!(
                "metadata `{KEY_HEAD_PARAMETERS}` is {head_names:?}, expected {expected_names:?}"
            )));
        }
        let tokenizer = tokenizer_config(&meta)?;
        let head = read_head(graph.initializer.as_slice(), dimensions)?;
        let vocab: Vec<String> = vocab.split('\n').map(str::to_string).collect();

        let metadata = proto
            .metadata_props
            .iter()
            .filter(|e| e.key != KEY_VOCAB)
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        Ok(Self {
            contract_version,
            vocab,
            tokenizer,
            max_tokens,
            dimensions,
            head,
            metadata,
        })
    }
}

fn missing(problems: Vec<String>) -> Error {
    Error::Contract(format!("missing {}", problems.join(", ")))
}

fn parse_positive(key: &str, value: &str) -> Result<usize> {
    match value.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(Error::Contract(format!(
            "metadata `{key}` must be a positive integer, got {value:?}"
        ))),
    }
}

fn tokenizer_config(meta: &HashMap<&str, &str>) -> Result<TokenizerConfig> {
    let defaults = TokenizerConfig::default();
    let flag = |key: &str, default: bool| -> Result<bool> {
        match meta.get(key).copied() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(Error::Contract(format!(
                "metadata `{key}` must be \"true\" or \"false\", got {other:?}"
            ))),
        }
    };
    if flag("feedloop.tokenizer.add_special_tokens", false)? {
        return Err(Error::Contract(
            "metadata `feedloop.tokenizer.add_special_tokens` = true is not supported".into(),
        ));
    }
    let max_chars = match meta.get("feedloop.tokenizer.max_input_chars_per_word") {
        None => defaults.max_input_chars_per_word,
        Some(v) => parse_positive("feedloop.tokenizer.max_input_chars_per_word", v)?,
    };
    Ok(TokenizerConfig {
        lowercase: flag("feedloop.tokenizer.lowercase", defaults.lowercase)?,
        strip_accents: flag("feedloop.tokenizer.strip_accents", defaults.strip_accents)?,
        handle_chinese_chars: flag(
            "feedloop.tokenizer.handle_chinese_chars",
            defaults.handle_chinese_chars,
        )?,
        unk_token: meta
            .get("feedloop.tokenizer.unk_token")
            .map_or(defaults.unk_token, |s| s.to_string()),
        continuing_subword_prefix: meta
            .get("feedloop.tokenizer.continuing_subword_prefix")
            .map_or(defaults.continuing_subword_prefix, |s| s.to_string()),
        max_input_chars_per_word: max_chars,
        special_tokens: match meta.get("feedloop.tokenizer.special_tokens") {
            None => defaults.special_tokens,
            Some(list) => list.split(',').map(str::to_string).collect(),
        },
    })
}

/// Reads the head's initial parameters from the graph's initializers.
fn read_head(initializers: &[TensorProto], dimensions: usize) -> Result<RewardHead> {
    let expected_len = |name: &str| match name {
        "head_interaction" | "head_candidate" => dimensions,
        _ => 1,
    };
    let mut values = Vec::with_capacity(2 * dimensions + 3);
    let mut problems = Vec::new();
    for name in HEAD_PARAMETERS {
        let Some(tensor) = initializers.iter().find(|t| t.name == name) else {
            problems.push(format!("initializer `{name}`"));
            continue;
        };
        match float_values(tensor) {
            Ok(v) if v.len() == expected_len(name) => values.extend(v),
            Ok(v) => {
                return Err(Error::Contract(format!(
                    "initializer `{name}` has {} values, expected {}",
                    v.len(),
                    expected_len(name)
                )))
            }
            Err(e) => return Err(e),
        }
    }
    if !problems.is_empty() {
        return Err(missing(problems));
    }
    RewardHead::from_vector(dimensions, &values)
        .map_err(|e| Error::Contract(format!("head initializers: {e}")))
}

const ONNX_FLOAT: i32 = 1;

fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    if t.data_type != ONNX_FLOAT {
        return Err(Error::Contract(format!(
            "initializer `{}` must be float32 (ONNX type 1), is type {}",
            t.name, t.data_type
        )));
    }
    if !t.float_data.is_empty() {
        return Ok(t.float_data.clone());
    }
    if !t.raw_data.len().is_multiple_of(4) {
        return Err(Error::MalformedModel(format!(
            "initializer `{}` has {} raw bytes, not a whole number of float32",
            t.name,
            t.raw_data.len()
        )));
    }
    Ok(t.raw_data
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect())
}
