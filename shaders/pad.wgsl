// Circular padding (F.pad(x, (p, p, p, p), mode="circular")), what a Conv2d with
// padding_mode="circular" applies before its unpadded convolution:
//   out[pl, y, x] = in[pl, (y - p) mod H, (x - p) mod W],  out [P, H + 2p, W + 2p].
// torch requires p <= H and p <= W (one wrap at most); the launcher checks it.
//
// Launched per band of whole planes (so both windows fit one binding); one lane per
// output element, grid folded in 2-D past 65535 workgroups.
//
// Bindings: 0 params, 1 x (read, AT: f32 or f16, window), 2 out (read_write, window).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read_write> out: array<AT>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn pad_circular(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let ow = p.w + 2u * p.pad;
    let oh = p.h + 2u * p.pad;
    let plane = oh * ow;
    let pl = i / plane;
    let r = i - pl * plane;
    let oy = r / ow;
    let ox = r - oy * ow;
    // (o - pad) mod n for o in [0, n + 2 pad) with pad <= n: add n before subtracting.
    let iy = (oy + p.h - p.pad) % p.h;
    let ix = (ox + p.w - p.pad) % p.w;
    out[p.o_shift + i] = x[p.x_shift + (pl * p.h + iy) * p.w + ix];
}
