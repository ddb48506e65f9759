//! Dequantizes constant tables in the ONNX protobuf before tract sees it.
//!
//! A `DequantizeLinear` over initializers (the default model's int8 token table with one scale per
//! row) is constant, and the model loader folds it once. Left to tract, that fold runs through its
//! generic broadcasting `Sub` and `Mul` (`eval_in_a`, an ndarray zip over 2M elements): 73% of the
//! time to load the default model in wasm (~140 ms of ~190 ms in V8). Here it is one pass over the
//! bytes. The result is exactly ONNX's `(x − zero_point) · scale` in f32, so nothing downstream can
//! tell the difference; anything not in the plain form handled here (external data, blocked
//! quantization, other types) is left for tract as before.

use tract_onnx::pb::tensor_proto::DataType;
use tract_onnx::pb::{ModelProto, NodeProto, TensorProto};

/// Replaces every `DequantizeLinear` whose inputs are all plain int8/uint8 + f32 initializers with
/// an f32 initializer of its output. Returns how many were replaced.
pub(crate) fn fold_constant_dequantize(proto: &mut ModelProto) -> usize {
    let Some(graph) = proto.graph.as_mut() else {
        return 0;
    };
    let mut folded = 0;
    let mut index = 0;
    while index < graph.node.len() {
        let node = &graph.node[index];
        let replacement = (node.op_type == "DequantizeLinear" && node.domain.is_empty())
            .then(|| dequantize(node, &graph.initializer))
            .flatten();
        match replacement {
            Some(tensor) => {
                graph.node.remove(index);
                graph.initializer.push(tensor);
                folded += 1;
            }
            None => index += 1,
        }
    }
    folded
}

fn dequantize(node: &NodeProto, initializers: &[TensorProto]) -> Option<TensorProto> {
    let find = |name: &str| initializers.iter().find(|t| t.name == name);
    let [output] = node.output.as_slice() else {
        return None;
    };
    let x = find(node.input.first()?)?;
    let scale = find(node.input.get(1)?)?;
    let zero_point = match node.input.get(2) {
        Some(name) if !name.is_empty() => Some(find(name)?),
        _ => None,
    };
    let values = integers(x)?;
    let scales = floats(scale)?;
    let zero_points = match zero_point {
        Some(z) if z.data_type == x.data_type => integers(z)?,
        Some(_) => return None,
        None => vec![0; scales.len()],
    };
    if zero_points.len() != scales.len() {
        return None;
    }
    if values.is_empty() || values.len() as i64 != x.dims.iter().product::<i64>() {
        return None;
    }
    // Per tensor (one scale), or per axis (one scale per index along `axis`, default 1).
    let (outer_stride, channels) = if scales.len() == 1 && scale.dims.iter().all(|&d| d == 1) {
        (values.len(), 1)
    } else {
        let rank = x.dims.len() as i64;
        let axis = node
            .attribute
            .iter()
            .find(|a| a.name == "axis")
            .map_or(1, |a| a.i);
        let axis = if axis < 0 { axis + rank } else { axis };
        if !(0..rank).contains(&axis)
            || scale.dims.len() != 1
            || x.dims[axis as usize] != scales.len() as i64
            || node
                .attribute
                .iter()
                .any(|a| a.name == "block_size" && a.i != 0)
        {
            return None;
        }
        let inner: i64 = x.dims[axis as usize + 1..].iter().product();
        (inner as usize, scales.len())
    };
    let mut raw = vec![0u8; values.len() * 4];
    // Block by block (one scale each), writing whole 4-byte arrays: a per-element `copy_from_slice`
    // and index division stayed calls under the size-optimized wasm build (6 ms of every load).
    let blocks = raw
        .chunks_mut(outer_stride * 4)
        .zip(values.chunks(outer_stride));
    for (index, (out, block)) in blocks.enumerate() {
        let channel = index % channels;
        let (zero_point, scale) = (zero_points[channel], scales[channel]);
        for (bytes, &q) in out.chunks_exact_mut(4).zip(block) {
            let bytes: &mut [u8; 4] = bytes.try_into().expect("chunks of exactly 4 bytes");
            *bytes = ((q - zero_point) as f32 * scale).to_le_bytes();
        }
    }
    Some(TensorProto {
        name: output.clone(),
        dims: x.dims.clone(),
        data_type: DataType::Float as i32,
        raw_data: raw,
        ..Default::default()
    })
}

fn plain(tensor: &TensorProto) -> bool {
    tensor.data_location.unwrap_or(0) == 0 && tensor.external_data.is_empty()
}

/// int8/uint8 values as i32 (raw bytes, or `int32_data` as ONNX allows for small types).
fn integers(tensor: &TensorProto) -> Option<Vec<i32>> {
    if !plain(tensor) {
        return None;
    }
    let from_raw = !tensor.raw_data.is_empty();
    match DataType::try_from(tensor.data_type).ok()? {
        DataType::Int8 if from_raw => {
            Some(tensor.raw_data.iter().map(|&b| b as i8 as i32).collect())
        }
        DataType::Uint8 if from_raw => Some(tensor.raw_data.iter().map(|&b| b as i32).collect()),
        DataType::Int8 | DataType::Uint8 => Some(tensor.int32_data.clone()),
        _ => None,
    }
}

fn floats(tensor: &TensorProto) -> Option<Vec<f32>> {
    if !plain(tensor) || tensor.data_type != DataType::Float as i32 {
        return None;
    }
    if tensor.raw_data.is_empty() {
        return Some(tensor.float_data.clone());
    }
    if !tensor.raw_data.len().is_multiple_of(4) {
        return None;
    }
    Some(
        tensor
            .raw_data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::pb::{AttributeProto, GraphProto};

    fn int8(name: &str, dims: &[i64], values: &[i8]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Int8 as i32,
            raw_data: values.iter().map(|&v| v as u8).collect(),
            ..Default::default()
        }
    }

    fn float(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: DataType::Float as i32,
            float_data: values.to_vec(),
            ..Default::default()
        }
    }

    fn model(inputs: &[&str], axis: Option<i64>, initializers: Vec<TensorProto>) -> ModelProto {
        let attribute = axis
            .map(|i| AttributeProto {
                name: "axis".into(),
                i,
                ..Default::default()
            })
            .into_iter()
            .collect();
        ModelProto {
            graph: Some(GraphProto {
                node: vec![NodeProto {
                    op_type: "DequantizeLinear".into(),
                    input: inputs.iter().map(|s| s.to_string()).collect(),
                    output: vec!["y".into()],
                    attribute,
                    ..Default::default()
                }],
                initializer: initializers,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn folded(mut proto: ModelProto) -> Option<Vec<f32>> {
        if fold_constant_dequantize(&mut proto) == 0 {
            return None;
        }
        let graph = proto.graph.unwrap();
        assert!(graph.node.is_empty());
        floats(graph.initializer.iter().find(|t| t.name == "y").unwrap())
    }

    #[test]
    fn per_axis_with_zero_points_is_onnx_arithmetic() {
        // x is [2, 3]; one scale and zero point per column (axis 1, the ONNX default).
        let x = int8("x", &[2, 3], &[-128, 0, 127, 5, -5, 1]);
        let proto = |axis| {
            model(
                &["x", "s", "z"],
                axis,
                vec![
                    x.clone(),
                    float("s", &[3], &[0.5, 2.0, 0.25]),
                    int8("z", &[3], &[1, -2, 0]),
                ],
            )
        };
        let expected = vec![
            (-128 - 1) as f32 * 0.5,
            2.0 * 2.0, // (0 − (−2)) · 2
            127.0 * 0.25,
            (5 - 1) as f32 * 0.5,
            (-5 + 2) as f32 * 2.0,
            0.25,
        ];
        assert_eq!(folded(proto(None)), Some(expected.clone()));
        assert_eq!(folded(proto(Some(-1))), Some(expected));
    }

    #[test]
    fn per_row_and_per_tensor_scales() {
        let x = int8("x", &[2, 2], &[1, 2, 3, 4]);
        let rows = model(
            &["x", "s"],
            Some(0),
            vec![x.clone(), float("s", &[2], &[10.0, 0.5])],
        );
        assert_eq!(folded(rows), Some(vec![10.0, 20.0, 1.5, 2.0]));
        let tensor = model(&["x", "s", ""], None, vec![x, float("s", &[], &[3.0])]);
        assert_eq!(folded(tensor), Some(vec![3.0, 6.0, 9.0, 12.0]));
    }

    #[test]
    fn anything_else_is_left_to_tract() {
        let x = int8("x", &[2, 2], &[1, 2, 3, 4]);
        let s = float("s", &[2], &[1.0, 1.0]);
        // An input that is not an initializer.
        assert_eq!(folded(model(&["input", "s"], None, vec![s.clone()])), None);
        // A scale count that does not match the axis.
        let wrong = float("s", &[3], &[1.0, 1.0, 1.0]);
        assert_eq!(
            folded(model(&["x", "s"], None, vec![x.clone(), wrong])),
            None
        );
        // External data.
        let mut external = x.clone();
        external.data_location = Some(1);
        assert_eq!(
            folded(model(&["x", "s"], None, vec![external, s.clone()])),
            None
        );
        // A zero point of another type.
        let z = TensorProto {
            data_type: DataType::Uint8 as i32,
            ..int8("z", &[2], &[0, 0])
        };
        assert_eq!(
            folded(model(&["x", "s", "z"], None, vec![x, s.clone(), z])),
            None
        );
        // An empty table (a zero dimension).
        let empty = int8("x", &[0, 2], &[]);
        assert_eq!(folded(model(&["x", "s"], Some(1), vec![empty, s])), None);
    }
}
