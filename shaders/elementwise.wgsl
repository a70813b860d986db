// Elementwise binary ops with broadcast: add and mul, with a fused output scale.
//
// out[i] = op(a[i], b[(i / b_inner) % b_period]) * scale      (entries add, mul)
//
// The broadcast rule covers every pattern the models need: same shape (inner 1, period
// n), per-channel bias over NCHW (inner H*W, period C), a [B, C] vector over [B, C, H, W]
// (inner H*W, period B*C), a row vector over rows (inner 1, period C).
//
// Bindings: 0 params (uniform), 1 a (read, AT), 2 b (read, AT, or f32 for a bias),
// 3 out (read_write, AT). Computed in f32, stored with `at` (saturating in f16).
// Each binding is a window: `*_shift` is where element 0 of this
// band sits inside it. `base` is this band's first element in the full tensor, so the
// broadcast index is computed on global positions. One invocation handles one element;
// the grid may be folded into 2-D (id = wid.x + wid.y * nwg.x) for > 65535 workgroups.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<AT>;
@group(0) @binding(2) var<storage, read> b: array<${BT}>;
@group(0) @binding(3) var<storage, read_write> out: array<AT>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

fn b_at(i: u32) -> f32 {
    let g = p.base + i;
    return f32(b[p.b_shift + (g / p.b_inner) % p.b_period]);
}

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[p.out_shift + i] = at((f32(a[p.a_shift + i]) + b_at(i)) * p.scale);
}

@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[p.out_shift + i] = at(f32(a[p.a_shift + i]) * b_at(i) * p.scale);
}
