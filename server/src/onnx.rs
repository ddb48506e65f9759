//! Publishing a head as an ONNX file: the base model with its `head_*` initializers rewritten
//! and the metadata key `feedloop.model.version` set.

use feedloop_core::head::split_head_vector;
use prost::Message;
use sha2::{Digest, Sha256};
use tract_onnx::pb::{ModelProto, StringStringEntryProto};

use crate::error::{Error, Result};

/// The metadata key carrying the published version.
pub const KEY_MODEL_VERSION: &str = "feedloop.model.version";

/// The ONNX model `base` with the head replaced by `head` (in `RewardHead::to_vector` order,
/// 2·D + 3 values, or 2·D + 4 for a contract 2 model's head with its lexical weight) and
/// `feedloop.model.version = version`.
pub fn rewrite_head(base: &[u8], head: &[f32], version: &str) -> Result<Vec<u8>> {
    let mut proto = ModelProto::decode(base)
        .map_err(|e| Error::internal(format!("base model is not ONNX: {e}")))?;
    let graph = proto
        .graph
        .as_mut()
        .ok_or_else(|| Error::internal("base model has no graph"))?;
    let slices = split_head_vector(head).map_err(|e| Error::internal(e.to_string()))?;
    for (name, values) in slices {
        let tensor = graph
            .initializer
            .iter_mut()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::internal(format!("base model lacks initializer `{name}`")))?;
        let existing: i64 = tensor.dims.iter().product();
        if existing != values.len() as i64 {
            return Err(Error::internal(format!(
                "initializer `{name}` has {existing} values in the base model, the head {}",
                values.len()
            )));
        }
        tensor.float_data.clear();
        tensor.raw_data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    }
    proto.metadata_props.retain(|e| e.key != KEY_MODEL_VERSION);
    proto.metadata_props.push(StringStringEntryProto {
        key: KEY_MODEL_VERSION.to_string(),
        value: version.to_string(),
    });
    Ok(proto.encode_to_vec())
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
