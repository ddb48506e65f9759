//! Runs any ONNX model through tract with named inputs; used by `feedloop model run`.

use serde::{Deserialize, Serialize};
use tract_onnx::prelude::*;

use crate::error::{inference, Error, Result};

/// A named tensor with its data flattened in row-major order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Tensor elements by type. Inputs are float32 or int64; outputs of other types are widened to one
/// of these (floats to f64, integers and booleans to i64).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
}

impl TensorData {
    fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::F64(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }
}

/// Runs the graph on `inputs` (every graph input must be given, by name) and returns every graph
/// output in graph order.
pub fn run_onnx(bytes: &[u8], inputs: &[NamedTensor]) -> Result<Vec<NamedTensor>> {
    let onnx = tract_onnx::onnx();
    let proto = onnx
        .proto_model_for_read(&mut &*bytes)
        .map_err(|e| Error::MalformedModel(format!("not an ONNX protobuf ({e:#})")))?;
    let mut model = onnx
        .model_for_proto_model(&proto)
        .map_err(|e| Error::MalformedModel(format!("{e:#}")))?;

    let graph_inputs: Vec<String> = model
        .input_outlets()
        .map_err(inference)?
        .iter()
        .map(|o| model.node(o.node).name.clone())
        .collect();
    let missing: Vec<&str> = graph_inputs
        .iter()
        .filter(|name| !inputs.iter().any(|i| &i.name == *name))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(Error::InvalidInput(format!(
            "missing input(s) {}; the model takes {}",
            missing.join(", "),
            graph_inputs.join(", ")
        )));
    }
    if let Some(extra) = inputs.iter().find(|i| !graph_inputs.contains(&i.name)) {
        return Err(Error::InvalidInput(format!(
            "the model has no input `{}`; it takes {}",
            extra.name,
            graph_inputs.join(", ")
        )));
    }

    let mut values = TVec::new();
    for (ix, name) in graph_inputs.iter().enumerate() {
        let input = inputs
            .iter()
            .find(|i| &i.name == name)
            .expect("checked above");
        let tensor = to_tensor(input)?;
        model
            .set_input_fact(
                ix,
                InferenceFact::from(tensor.datum_type().fact(tensor.shape())),
            )
            .map_err(inference)?;
        values.push(tensor.into_tvalue());
    }
    let output_names: Vec<String> = model
        .output_outlets()
        .map_err(inference)?
        .iter()
        .map(|o| {
            let node = model.node(o.node);
            model
                .outlet_label(*o)
                .map(str::to_string)
                .unwrap_or_else(|| node.name.clone())
        })
        .collect();
    let plan = model
        .into_optimized()
        .and_then(|m| m.into_runnable())
        .map_err(inference)?;
    let outputs = plan.run(values).map_err(inference)?;
    outputs
        .iter()
        .zip(output_names)
        .map(|(t, name)| from_tensor(name, t))
        .collect()
}

fn to_tensor(input: &NamedTensor) -> Result<Tensor> {
    let expected: usize = input.shape.iter().product();
    if input.data.len() != expected {
        return Err(Error::InvalidInput(format!(
            "input `{}` has {} values, its shape {:?} needs {expected}",
            input.name,
            input.data.len(),
            input.shape
        )));
    }
    let tensor = match &input.data {
        TensorData::F32(v) => Tensor::from_shape(&input.shape, v),
        TensorData::F64(v) => Tensor::from_shape(&input.shape, v),
        TensorData::I64(v) => Tensor::from_shape(&input.shape, v),
    };
    tensor.map_err(|e| Error::InvalidInput(format!("input `{}`: {e:#}", input.name)))
}

fn from_tensor(name: String, t: &Tensor) -> Result<NamedTensor> {
    let shape = t.shape().to_vec();
    let dt = t.datum_type();
    let data = if dt == f32::datum_type() {
        TensorData::F32(values::<f32>(t)?)
    } else if dt.is_float() {
        TensorData::F64(values::<f64>(&*t.cast_to::<f64>().map_err(inference)?)?)
    } else if dt.is_integer() || dt == bool::datum_type() {
        TensorData::I64(values::<i64>(&*t.cast_to::<i64>().map_err(inference)?)?)
    } else {
        return Err(Error::InvalidInput(format!(
            "output `{name}` has type {dt:?}, which JSON output does not support"
        )));
    };
    Ok(NamedTensor { name, shape, data })
}

fn values<T: Datum + Copy>(t: &Tensor) -> Result<Vec<T>> {
    Ok(t.to_plain_array_view::<T>()
        .map_err(inference)?
        .iter()
        .copied()
        .collect())
}
