//! The feedloop model contract (docs/MODEL.md): what an ONNX file must carry to be a feedloop model.
//!
//! Checked on the protobuf before tract builds anything, so a model that does not fit is refused with
//! an error that names every missing piece at once.

use std::collections::HashMap;

use tract_onnx::pb::{ModelProto, TensorProto};

use crate::error::{Error, Result};
use crate::head::{parameter_count, RewardHead, HEAD_PARAMETERS, HEAD_PARAMETERS_LEXICAL};
use crate::lexical::LexicalFeature;
use crate::tokenizer::TokenizerConfig;

/// The newest contract version this build understands; it also reads version 1 (no lexical term).
pub const CONTRACT_VERSION: &str = "2";
/// Contract versions this build reads.
pub const CONTRACT_VERSIONS: [&str; 2] = ["1", "2"];

/// Contract 2's initializers for the lexical feature ([`crate::lexical`]).
pub const LEXICAL_IDF: &str = "lexical_idf";
pub const LEXICAL_IDF_SCALE: &str = "lexical_idf_scale";
pub const LEXICAL_K1: &str = "lexical_k1";
pub const LEXICAL_B: &str = "lexical_b";
pub const LEXICAL_AVG_TOKENS: &str = "lexical_avg_tokens";
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
    /// The lexical feature (contract 2); `None` for a contract 1 model.
    pub lexical: Option<LexicalFeature>,
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

        if !CONTRACT_VERSIONS.contains(&contract_version.as_str()) {
            return Err(Error::Contract(format!(
                "contract version {contract_version:?} is not supported (this build reads {})",
                CONTRACT_VERSIONS.join(" and ")
            )));
        }
        let lexical = contract_version != "1";
        if tokenizer_kind != TOKENIZER_KIND {
            return Err(Error::Contract(format!(
                "tokenizer {tokenizer_kind:?} is not supported (this build reads {TOKENIZER_KIND:?})"
            )));
        }
        let max_tokens = parse_positive(KEY_MAX_TOKENS, &max_tokens)?;
        let dimensions = parse_positive(KEY_DIMENSIONS, &dimensions)?;
        let expected_names = if lexical {
            HEAD_PARAMETERS_LEXICAL.join(",")
        } else {
            HEAD_PARAMETERS.join(",")
        };
        if head_names != expected_names {
            return Err(Error::Contract(format!(
                "metadata `{KEY_HEAD_PARAMETERS}` is {head_names:?}, expected {expected_names:?}"
            )));
        }
        let tokenizer = tokenizer_config(&meta)?;
        let head = read_head(graph.initializer.as_slice(), dimensions, lexical)?;
        let vocab: Vec<String> = vocab.split('\n').map(str::to_string).collect();
        let lexical = if lexical {
            Some(read_lexical(graph.initializer.as_slice(), vocab.len())?)
        } else {
            None
        };

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
            lexical,
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
fn read_head(initializers: &[TensorProto], dimensions: usize, lexical: bool) -> Result<RewardHead> {
    let expected_len = |name: &str| match name {
        "head_interaction" | "head_candidate" => dimensions,
        _ => 1,
    };
    let names: &[&str] = if lexical {
        &HEAD_PARAMETERS_LEXICAL
    } else {
        &HEAD_PARAMETERS
    };
    let mut values = Vec::with_capacity(parameter_count(dimensions, lexical));
    let mut problems = Vec::new();
    for &name in names {
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

/// Reads contract 2's lexical constants: `lexical_idf` (uint8 [V] with a float `lexical_idf_scale`,
/// or float32 [V]) and the float scalars k1, b and avg_tokens.
fn read_lexical(initializers: &[TensorProto], vocab_size: usize) -> Result<LexicalFeature> {
    let find = |name: &str| initializers.iter().find(|t| t.name == name);
    let missing_names: Vec<String> = [LEXICAL_IDF, LEXICAL_K1, LEXICAL_B, LEXICAL_AVG_TOKENS]
        .iter()
        .filter(|n| find(n).is_none())
        .map(|n| format!("initializer `{n}`"))
        .collect();
    if !missing_names.is_empty() {
        return Err(missing(missing_names));
    }
    let scalar = |name: &str| -> Result<f32> {
        let v = float_values(find(name).expect("checked above"))?;
        match v.as_slice() {
            [x] => Ok(*x),
            _ => Err(Error::Contract(format!(
                "initializer `{name}` has {} values, expected 1",
                v.len()
            ))),
        }
    };
    let table = find(LEXICAL_IDF).expect("checked above");
    let idf = if table.data_type == ONNX_UINT8 {
        let Some(scale) = find(LEXICAL_IDF_SCALE) else {
            return Err(missing(vec![format!(
                "initializer `{LEXICAL_IDF_SCALE}` (for a uint8 `{LEXICAL_IDF}`)"
            )]));
        };
        let scale = match float_values(scale)?.as_slice() {
            [x] => *x,
            v => {
                return Err(Error::Contract(format!(
                    "initializer `{LEXICAL_IDF_SCALE}` has {} values, expected 1",
                    v.len()
                )))
            }
        };
        // As the graph computes it: Cast(uint8 → float) · scale.
        let bytes: Vec<u8> = if table.raw_data.is_empty() {
            table.int32_data.iter().map(|&v| v as u8).collect()
        } else {
            table.raw_data.clone()
        };
        bytes.iter().map(|&q| f32::from(q) * scale).collect()
    } else {
        float_values(table)?
    };
    if idf.len() != vocab_size {
        return Err(Error::Contract(format!(
            "initializer `{LEXICAL_IDF}` has {} values, the vocabulary {vocab_size} tokens",
            idf.len()
        )));
    }
    LexicalFeature::new(
        idf,
        scalar(LEXICAL_K1)?,
        scalar(LEXICAL_B)?,
        scalar(LEXICAL_AVG_TOKENS)?,
    )
}

const ONNX_FLOAT: i32 = 1;
const ONNX_UINT8: i32 = 2;

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
