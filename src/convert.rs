//! Converting JS values to Rust and back, with messages a web developer can act on.

use feedloop_core::contribution::RoundConfig;
use feedloop_core::CandidateIds;
use js_sys::Array;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

use crate::error::{invalid, Error, JsResult};

/// Now, in unix milliseconds.
pub fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

/// A JSON-compatible JS value (plain objects, not `Map`s).
pub fn to_js<T: Serialize + ?Sized>(value: &T) -> JsResult<JsValue> {
    value
        .serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| invalid(format!("could not convert the result: {e}")))
}

/// serde-wasm-bindgen reads only the fields a struct names, so a misspelled field would pass in
/// silence; this names it.
pub fn check_fields(object: &JsValue, allowed: &[&str], what: &str) -> JsResult<()> {
    for key in js_sys::Object::keys(object.unchecked_ref::<js_sys::Object>()).iter() {
        let key = key.as_string().unwrap_or_default();
        if !allowed.contains(&key.as_str()) {
            return Err(invalid(format!(
                "invalid {what}: unknown field `{key}`, expected one of {}",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// An object with only `allowed` fields, deserialized.
pub fn object<T: serde::de::DeserializeOwned>(
    value: JsValue,
    allowed: &[&str],
    what: &str,
) -> JsResult<T> {
    check_fields(&value, allowed, what)?;
    serde_wasm_bindgen::from_value(value).map_err(|e| invalid(format!("invalid {what}: {e}")))
}

pub fn string(value: &JsValue, what: &str) -> JsResult<String> {
    value.as_string().ok_or_else(|| not_a_string(what, value))
}

fn not_a_string(what: impl std::fmt::Display, value: &JsValue) -> Error {
    invalid(format!("{what} must be a string, got {}", type_name(value)))
}

pub fn strings(value: &JsValue, what: &str) -> JsResult<Vec<String>> {
    if !Array::is_array(value) {
        return Err(invalid(format!(
            "{what} must be an array of strings, got {}",
            type_name(value)
        )));
    }
    Array::from(value)
        .iter()
        .enumerate()
        .map(|(i, item)| {
            // The label is formatted only for the error, not for every element.
            item.as_string()
                .ok_or_else(|| not_a_string(format_args!("{what}[{i}]"), &item))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateObject {
    id: String,
    text: String,
}

/// `(id, text)` pairs from strings (their own ids, by the core's [`CandidateIds`] rule) and
/// `{ id, text }` objects.
pub fn candidate_list(value: &JsValue) -> JsResult<Vec<(String, String)>> {
    if !Array::is_array(value) {
        return Err(invalid(format!(
            "candidates must be an array of strings or {{ id, text }} objects, got {}",
            type_name(value)
        )));
    }
    let mut ids = CandidateIds::default();
    Array::from(value)
        .iter()
        .enumerate()
        .map(|(i, item)| {
            if let Some(text) = item.as_string() {
                Ok((ids.id_for(&text), text))
            } else if item.is_object() && !Array::is_array(&item) {
                let c: CandidateObject = serde_wasm_bindgen::from_value(item)
                    .map_err(|e| invalid(format!("candidates[{i}] must be {{ id, text }}: {e}")))?;
                Ok((c.id, c.text))
            } else {
                Err(invalid(format!(
                    "candidates[{i}] must be a string or {{ id, text }}, got {}",
                    type_name(&item)
                )))
            }
        })
        .collect()
}

/// A round as `inspectNextUpload` / `releaseNextUpload` take it.
pub fn round_config(value: JsValue) -> JsResult<RoundConfig> {
    if !value.is_object() || Array::is_array(&value) {
        return Err(invalid(format!(
            "a round must be an object {{ roundId, modelVersion, clipNorm, granularity, noiseStddev }}, got {}",
            type_name(&value)
        )));
    }
    object(
        value,
        &[
            "roundId",
            "modelVersion",
            "clipNorm",
            "granularity",
            "noiseStddev",
            "secure",
        ],
        "round",
    )
}

/// Splits `joined` into consecutive pieces of the given lengths in UTF-16 code units (the JS
/// `length` of each string that was joined).
pub fn split_utf16<'a>(joined: &'a str, lengths: &[u32], what: &str) -> JsResult<Vec<&'a str>> {
    let mismatch = || {
        invalid(format!(
            "the {what} do not split at the given lengths (a lone UTF-16 surrogate at the end of one?)"
        ))
    };
    let mut pieces = Vec::with_capacity(lengths.len());
    let mut chars = joined.char_indices();
    let mut start = 0;
    for &length in lengths {
        let (mut units, mut end) = (0u32, start);
        while units < length {
            let (at, c) = chars.next().ok_or_else(mismatch)?;
            units += c.len_utf16() as u32;
            end = at + c.len_utf8();
        }
        if units != length {
            return Err(mismatch());
        }
        pieces.push(&joined[start..end]);
        start = end;
    }
    if start != joined.len() {
        return Err(mismatch());
    }
    Ok(pieces)
}

/// How a value is described in an error ("null", "an array", "number", …).
pub fn type_name(value: &JsValue) -> String {
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
