// The reward head over N candidates, one invocation per candidate. The additions run in the order
// of `RewardHead::score` on the CPU (sequential over d), so the f32 rounding matches.

struct Params {
    count: u32,
    dims: u32,
    width: u32,
    groups_x: u32,
    clip_norm: f32,
    _pad0: u32,
    // 1 when the head has a lexical term
    lexical: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
// θ = [cosine, interaction (D), candidate (D), length, (lexical,) bias]
@group(0) @binding(1) var<storage, read> head: array<f32>;
@group(0) @binding(2) var<storage, read> context: array<f32>;
// D × N, column-major: dimension k of candidate i at k·N + i
@group(0) @binding(3) var<storage, read> candidates: array<f32>;
// ℓ(n) per candidate, computed on the host with the CPU's formula
@group(0) @binding(4) var<storage, read> lengths: array<f32>;
// λ per candidate against this context (contract 2 heads), computed on the host; one 0 otherwise
@group(0) @binding(5) var<storage, read> lexical: array<f32>;
@group(0) @binding(6) var<storage, read_write> scores: array<f32>;

@compute @workgroup_size(64)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let i = (group.y * params.groups_x + group.x) * 64u + lane;
    if i >= params.count {
        return;
    }
    let d = params.dims;
    let n = params.count;
    var cosine = 0.0;
    var interaction = 0.0;
    var candidate = 0.0;
    for (var k = 0u; k < d; k++) {
        let r = candidates[k * n + i];
        let product = context[k] * r;
        cosine += product;
        interaction += product * head[1u + k];
        candidate += r * head[1u + d + k];
    }
    let base = head[0] * cosine + interaction + candidate + head[1u + 2u * d] * lengths[i];
    if params.lexical != 0u {
        scores[i] = base + head[2u + 2u * d] * lexical[i] + head[3u + 2u * d];
    } else {
        scores[i] = base + head[2u + 2u * d];
    }
}
