// Batched transpose of the last two dimensions, with an optional fused add:
//   out[b, j, i] = x[b, i, j] (+ residual[b, j, i])
// Used to move between NCHW feature maps ([B, C, H*W]) and token rows ([B, H*W, C]) around
// the UNet's and VAE's attention blocks; the add fuses the transformer's residual.
// Activations are stored as AT (f32 or f16); the add is f32, stored with at().
//
// Bindings: 0 params, 1 x [B, M, N] (read), 2 out [B, N, M] (read_write), 3 residual
// [B, N, M] (read; only `transpose_add` has it, so `transpose`'s layout stops at 2).
// One invocation per output element, in output order (coalesced writes); the grid is
// folded into 2-D (id = wid.x + wid.y * nwg.x). Launchers band over batch items, so
// `n` counts only this band's elements and the shifts place it inside the windows.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read_write> out: array<AT>;
@group(0) @binding(3) var<storage, read> residual: array<AT>;

const WG: u32 = 256u;

fn source(o: u32) -> u32 {
    let per = p.m * p.cols;
    let b = o / per;
    let r = o % per;
    let j = r / p.m;   // output row = x column
    let i = r % p.m;   // output column = x row
    return b * per + i * p.cols + j;
}

@compute @workgroup_size(256)
fn transpose(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let o = (wid.x + wid.y * nwg.x) * WG + lid;
    if (o >= p.n) { return; }
    out[p.o_shift + o] = x[p.x_shift + source(o)];
}

@compute @workgroup_size(256)
fn transpose_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let o = (wid.x + wid.y * nwg.x) * WG + lid;
    if (o >= p.n) { return; }
    out[p.o_shift + o] = at(f32(x[p.x_shift + source(o)]) + f32(residual[p.r_shift + o]));
}
