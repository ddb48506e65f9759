//! Dequantizes constant tables in the ONNX protobuf before tract sees it.
//!
//! A `DequantizeLinear` over initializers (the default model's int8 token table with one scale per
//! row) is constant, and the model loader folds it once. Left to tract, that fold runs through its
//! generic broadcasting `Sub` and `Mul` (`eval_in_a`, an ndarray zip over 2M elements): 73% of the
//! time to load the default model in wasm (~140 ms of ~190 ms in V8). Here it is one pass over the
//! bytes. The result is exactly ONNX's `(x − zero_point) · scale` in f32, so nothing downstream can
//! tell the difference; anything not in the plain form handled here (external data, blocked
//! quantization, other types) is left for tract as before. The default model's packed int4 table
//! (nibbles unpacked by a chain of elementwise ops, then gathered per id) is folded the same way.

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

/// The ops the default model's int4 table is unpacked with (tools/distill_model.py `table_graph`).
const INT4_OPS: &[&str] = &[
    "Cast",
    "Mod",
    "Div",
    "Unsqueeze",
    "Concat",
    "Reshape",
    "Sub",
    "Mul",
    "Gather",
];

/// Folds the default model's packed int4 table (docs/MODEL.md, "The token table") into an f32
/// initializer `token_embeddings`, in one pass: for every id, its row r = `token_embeddings_row`[id]
/// and column c, `(nibble(r, c) − 8) · scale[r, c / group]` in f32, where byte c/2 of row r holds
/// column c in its low nibble when c is even, else in its high one. That is what the graph's
/// Cast/Mod/Div/Concat/Sub/Mul/Gather chain computes, exactly (the nibble, the subtraction and the
/// f16 → f32 scale are exact; the product rounds once). Left to tract the chain is ~10 generic
/// broadcasting passes over 1M–2M elements at every load.
///
/// Only a constant chain is folded: the nodes `token_embeddings` depends on must read initializers
/// (or each other) only, be of the ops above, and feed nothing else; anything else is left to tract.
/// Returns whether it folded.
pub(crate) fn fold_packed_int4_table(proto: &mut ModelProto) -> bool {
    let Some(graph) = proto.graph.as_mut() else {
        return false;
    };
    let Some(table) = unpack_int4(&graph.initializer) else {
        return false;
    };
    let Some(chain) = constant_chain(graph, "token_embeddings") else {
        return false;
    };
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        !chain.contains(&(index - 1))
    });
    let graph = &mut *graph;
    // the packed tensors are read by the removed nodes only; drop them (and any other initializer
    // nothing reads any more) so tract does not load them
    let read: std::collections::HashSet<&str> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(graph.output.iter().map(|o| o.name.as_str()))
        .collect();
    graph.initializer.retain(|t| read.contains(t.name.as_str()));
    graph.initializer.push(table);
    true
}

/// The f32 `token_embeddings` [V, D] of the packed int4 initializers, if they are all there and
/// consistent.
fn unpack_int4(initializers: &[TensorProto]) -> Option<TensorProto> {
    let find = |name: &str| initializers.iter().find(|t| t.name == name);
    let packed = find("token_embeddings_int4")?;
    let scale = find("token_embeddings_scale")?;
    let row = find("token_embeddings_row")?;
    let (&[kept, half], &[scale_rows, groups], &[vocab]) = (
        packed.dims.as_slice(),
        scale.dims.as_slice(),
        row.dims.as_slice(),
    ) else {
        return None;
    };
    let (kept, half, groups) = (kept as usize, half as usize, groups as usize);
    let dims = 2 * half;
    if packed.data_type != DataType::Uint8 as i32
        || !plain(packed)
        || packed.raw_data.len() != kept * half
        || scale_rows as usize != kept
        || groups == 0
        || !dims.is_multiple_of(groups)
        || kept == 0
    {
        return None;
    }
    let scales = halves(scale)?;
    let rows = shorts(row)?;
    if scales.len() != kept * groups || rows.len() != vocab as usize {
        return None;
    }
    if rows.iter().any(|&r| r as usize >= kept) {
        return None;
    }
    let group = dims / groups;
    // each kept row once, then every id's row copied from it
    let mut unpacked = vec![0f32; kept * dims];
    for ((out, bytes), scale) in unpacked
        .chunks_exact_mut(dims)
        .zip(packed.raw_data.chunks_exact(half))
        .zip(scales.chunks_exact(groups))
    {
        for (c, value) in out.iter_mut().enumerate() {
            let byte = bytes[c / 2];
            let nibble = if c % 2 == 0 { byte & 15 } else { byte >> 4 };
            *value = (nibble as f32 - 8.0) * scale[c / group];
        }
    }
    let mut raw = Vec::with_capacity(rows.len() * dims * 4);
    for &r in &rows {
        let start = r as usize * dims;
        for value in &unpacked[start..start + dims] {
            raw.extend_from_slice(&value.to_le_bytes());
        }
    }
    Some(TensorProto {
        name: "token_embeddings".into(),
        dims: vec![vocab, dims as i64],
        data_type: DataType::Float as i32,
        raw_data: raw,
        ..Default::default()
    })
}

/// The indices of the nodes `output` depends on, if they form a constant chain of [`INT4_OPS`]
/// whose intermediate values nothing else reads.
fn constant_chain(graph: &tract_onnx::pb::GraphProto, output: &str) -> Option<Vec<usize>> {
    use std::collections::HashSet;
    let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
    let producer = |name: &str| {
        graph
            .node
            .iter()
            .position(|n| n.output.iter().any(|o| o == name))
    };
    let mut chain = Vec::new();
    let mut pending = vec![producer(output)?];
    while let Some(index) = pending.pop() {
        if chain.contains(&index) {
            continue;
        }
        let node = &graph.node[index];
        if !node.domain.is_empty() || !INT4_OPS.contains(&node.op_type.as_str()) {
            return None;
        }
        chain.push(index);
        for input in node.input.iter().filter(|i| !i.is_empty()) {
            if initializers.contains(input.as_str()) {
                continue;
            }
            // a graph input (or a value from outside the chain) makes it non-constant
            pending.push(producer(input)?);
        }
    }
    let inside: HashSet<&str> = chain
        .iter()
        .flat_map(|&i| graph.node[i].output.iter().map(String::as_str))
        .filter(|o| *o != output)
        .collect();
    let read_outside =
        graph.node.iter().enumerate().any(|(i, n)| {
            !chain.contains(&i) && n.input.iter().any(|x| inside.contains(x.as_str()))
        }) || graph
            .output
            .iter()
            .any(|o| inside.contains(o.name.as_str()));
    (!read_outside).then_some(chain)
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

/// 16-bit values (raw little-endian bytes, or `int32_data` holding one per entry as ONNX stores
/// small types).
fn sixteen_bits(tensor: &TensorProto, data_type: DataType) -> Option<Vec<u16>> {
    if !plain(tensor) || tensor.data_type != data_type as i32 {
        return None;
    }
    if tensor.raw_data.is_empty() {
        return tensor
            .int32_data
            .iter()
            .map(|&v| u16::try_from(v).ok())
            .collect();
    }
    if !tensor.raw_data.len().is_multiple_of(2) {
        return None;
    }
    Some(
        tensor
            .raw_data
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect(),
    )
}

fn halves(tensor: &TensorProto) -> Option<Vec<f32>> {
    use tract_onnx::prelude::f16;
    let values = sixteen_bits(tensor, DataType::Float16)?
        .into_iter()
        .map(|bits| f16::from_bits(bits).to_f32());
    Some(values.collect())
}

fn shorts(tensor: &TensorProto) -> Option<Vec<u16>> {
    sixteen_bits(tensor, DataType::Uint16)
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

    /// The default model's table, folded here and by tract from the graph's own chain of ops: the
    /// same embeddings, bit for bit, for ids with rows of their own, ids sharing [UNK]'s, and the
    /// special tokens.
    #[test]
    fn the_default_models_int4_table_folds_to_what_its_graph_computes() {
        use tract_onnx::prelude::*;
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/feedloop-default.onnx"
        );
        let bytes = std::fs::read(path).unwrap();
        let onnx = tract_onnx::onnx();
        let graph_only = onnx.proto_model_for_read(&mut &*bytes).unwrap();
        let mut folded = graph_only.clone();
        assert!(fold_packed_int4_table(&mut folded));
        let g = folded.graph.as_ref().unwrap();
        assert!(
            g.node.iter().all(|n| !n.name.starts_with("int4_")),
            "the chain is gone"
        );
        assert!(g
            .initializer
            .iter()
            .all(|t| !t.name.starts_with("token_embeddings_")));
        assert!(
            !fold_packed_int4_table(&mut folded.clone()),
            "nothing left to fold"
        );
        // a chain that reads a graph input, or whose intermediate values something else reads,
        // is not constant: left to tract
        let edited = |edit: &dyn Fn(&mut Vec<NodeProto>)| {
            let mut proto = graph_only.clone();
            edit(&mut proto.graph.as_mut().unwrap().node);
            fold_packed_int4_table(&mut proto)
        };
        assert!(!edited(&|nodes| {
            let mul = nodes
                .iter_mut()
                .find(|n| n.name == "int4_apply_scale")
                .unwrap();
            mul.input[1] = "token_ids".into();
        }));
        assert!(!edited(&|nodes| {
            let other = nodes.iter_mut().find(|n| n.name == "head_w_cos").unwrap();
            other.input[0] = "int4_scaled".into();
        }));
        assert!(!edited(&|nodes| {
            let sub = nodes.iter_mut().find(|n| n.name == "int4_centre").unwrap();
            sub.op_type = "Pow".into();
        }));
        assert!(edited(&|_| {}));
        // ids: [PAD], [UNK], "the", a word piece, [unused0] (no row of its own), the last id
        let ids: Vec<i64> = vec![0, 100, 1996, 2015, 1, 30521, 7592, 2088];
        let embed = |proto: &ModelProto| {
            let model = onnx
                .model_for_proto_model(proto)
                .unwrap()
                .into_typed()
                .unwrap()
                .into_runnable()
                .unwrap();
            let n = ids.len();
            let ids = tract_ndarray::Array2::from_shape_vec((n, 1), ids.clone()).unwrap();
            let mask = tract_ndarray::Array2::<i64>::ones((n, 1));
            let ctx = tract_ndarray::Array2::<i64>::from_elem((1, 1), 1996);
            let out = model
                .run(tvec!(
                    Tensor::from(ids).into(),
                    Tensor::from(mask).into(),
                    Tensor::from(ctx.clone()).into(),
                    Tensor::from(ctx.mapv(|_| 1i64)).into()
                ))
                .unwrap();
            out[0]
                .to_plain_array_view::<f32>()
                .unwrap()
                .into_dimensionality::<tract_ndarray::Ix2>()
                .unwrap()
                .to_owned()
        };
        let (ours, theirs) = (embed(&folded), embed(&graph_only));
        assert_eq!(ours.shape(), [8, 64]);
        assert_eq!(ours, theirs);
        // an id without a row has [UNK]'s; the others have their own
        assert_eq!(ours.row(4), ours.row(1));
        assert_ne!(ours.row(2), ours.row(1));
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
