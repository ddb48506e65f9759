// Σᵢ wᵢ·clip(∇Lᵢ(θ)) for the logistic loss, 256 examples per workgroup: each invocation works out
// its example's residual σ(θ·x) − y and clip factor (`learning::clipped_gradient`), then each
// invocation sums one coordinate over the workgroup's examples. The host adds the per-workgroup
// partial sums in f64.
//
// WGSL may assume floats are finite, so finiteness is tested on the bits.

struct Params {
    count: u32,
    // P, the parameter count
    dims: u32,
    width: u32,
    groups_x: u32,
    clip_norm: f32,
    groups: u32,
    _pad1: u32,
    _pad2: u32,
}

const EXAMPLES: u32 = 256u;
const USED: u32 = 1u;
const CLIPPED: u32 = 2u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> theta: array<f32>;
// N × P, row-major
@group(0) @binding(2) var<storage, read> examples: array<f32>;
@group(0) @binding(3) var<storage, read> labels: array<f32>;
@group(0) @binding(4) var<storage, read> weights: array<f32>;
// groups × P
@group(0) @binding(5) var<storage, read_write> partials: array<f32>;

var<workgroup> residuals: array<f32, EXAMPLES>;
var<workgroup> scales: array<f32, EXAMPLES>;
var<workgroup> flags: array<u32, EXAMPLES>;

fn is_finite(x: f32) -> bool {
    return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u;
}

// σ(z) without overflow, as `learning::sigmoid`.
fn sigmoid(z: f32) -> f32 {
    if z >= 0.0 {
        return 1.0 / (1.0 + exp(-z));
    }
    let e = exp(z);
    return e / (1.0 + e);
}

@compute @workgroup_size(256)
fn main(
    @builtin(workgroup_id) group_id: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let group = group_id.y * params.groups_x + group_id.x;
    if group >= params.groups {
        return;
    }
    let p = params.dims;
    let first = group * EXAMPLES;

    // Phase 1: one example per invocation.
    var residual = 0.0;
    var scale = 1.0;
    var flag = 0u;
    let e = first + lane;
    if e < params.count {
        let row = e * p;
        var finite = true;
        var z = 0.0;
        var largest = 0.0;
        for (var j = 0u; j < p; j++) {
            let x = examples[row + j];
            finite = finite && is_finite(x);
            z += theta[j] * x;
            largest = max(largest, abs(x));
        }
        // The CPU sums θ·x in f64; a sum that overflowed f32 on the way is redone on x / max|x|.
        if finite && !is_finite(z) && largest > 0.0 {
            var scaled = 0.0;
            for (var j = 0u; j < p; j++) {
                scaled += theta[j] * (examples[row + j] / largest);
            }
            z = scaled * largest;
        }
        residual = sigmoid(z) - labels[e];
        if finite && is_finite(residual) {
            // ‖g‖ for g = residual·x, scaled by max|g| so squares cannot overflow (the CPU uses f64).
            var g_max = 0.0;
            for (var j = 0u; j < p; j++) {
                g_max = max(g_max, abs(residual * examples[row + j]));
            }
            if is_finite(g_max) {
                flag = USED;
                if g_max > 0.0 {
                    var squares = 0.0;
                    for (var j = 0u; j < p; j++) {
                        let q = residual * examples[row + j] / g_max;
                        squares += q * q;
                    }
                    let norm = g_max * sqrt(squares);
                    if norm > params.clip_norm {
                        scale = params.clip_norm / norm;
                        flag = USED | CLIPPED;
                    }
                }
            }
        }
    }
    residuals[lane] = residual;
    scales[lane] = scale;
    flags[lane] = flag;
    workgroupBarrier();

    // Phase 2: one coordinate per invocation, over this workgroup's examples in order.
    let in_group = min(EXAMPLES, params.count - first);
    for (var j = lane; j < p; j += EXAMPLES) {
        var sum = 0.0;
        for (var k = 0u; k < in_group; k++) {
            let f = flags[k];
            if (f & USED) != 0u {
                var g = residuals[k] * examples[(first + k) * p + j];
                if (f & CLIPPED) != 0u {
                    g = g * scales[k];
                }
                sum += weights[first + k] * g;
            }
        }
        partials[group * p + j] = sum;
    }
}
