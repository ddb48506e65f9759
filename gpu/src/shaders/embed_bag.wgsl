// The embedding bag, one workgroup per text: the masked mean of the token rows, divided by
// max(‖mean‖, 1e-12) — the ONNX body's formula, so an empty text embeds to the zero vector.

struct Params {
    count: u32,
    dims: u32,
    width: u32,
    groups_x: u32,
    clip_norm: f32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

const LANES: u32 = 64u;

@group(0) @binding(0) var<uniform> params: Params;
// V × D dequantized token table, row-major
@group(0) @binding(1) var<storage, read> table: array<f32>;
// N × width token ids, padded
@group(0) @binding(2) var<storage, read> token_ids: array<u32>;
@group(0) @binding(3) var<storage, read> token_counts: array<u32>;
// N × D
@group(0) @binding(4) var<storage, read_write> embeddings: array<f32>;

var<workgroup> partial_squares: array<f32, LANES>;
var<workgroup> norm: f32;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    // Uniform across the workgroup, so returning before the barriers is allowed.
    let text = group.y * params.groups_x + group.x;
    if text >= params.count {
        return;
    }
    let d = params.dims;
    let tokens = token_counts[text];
    let first = text * params.width;
    let divisor = max(f32(tokens), 1.0);
    var squares = 0.0;
    for (var k = lane; k < d; k += LANES) {
        var sum = 0.0;
        for (var t = 0u; t < tokens; t++) {
            sum += table[token_ids[first + t] * d + k];
        }
        let mean = sum / divisor;
        embeddings[text * d + k] = mean;
        squares += mean * mean;
    }
    partial_squares[lane] = squares;
    workgroupBarrier();
    if lane == 0u {
        var total = 0.0;
        for (var j = 0u; j < LANES; j++) {
            total += partial_squares[j];
        }
        norm = max(sqrt(total), 1e-12);
    }
    workgroupBarrier();
    let divide_by = norm;
    for (var k = lane; k < d; k += LANES) {
        embeddings[text * d + k] = embeddings[text * d + k] / divide_by;
    }
}
