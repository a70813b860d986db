// Device probes for `wgsd bench`: the practical FMA peak and copy bandwidth, so every
// kernel's figure can be given as a fraction of what this device can do.
//
// fma_peak: each invocation runs `p.iters` rounds of 8 independent vec4 multiply-adds
//           (written as a * b + c: WGSL fma() is not fused on every driver), 64 FLOP per
//           round, and writes one value so the work cannot be removed.
// copy:     out[i] = src[i] over vec4s (bandwidth = 2 * bytes / time).
// noop:     one invocation writing one value, for the launch-overhead figure.
//
// Bindings: 0 params, 1 src (read), 2 out (read_write). 1-D grid, folded to 2-D when
// needed (id = wid.x + wid.y * nwg.x).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;

override WG: u32 = 64u;

@compute @workgroup_size(WG)
fn fma_peak(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    // Touch `src` so the auto-derived layout keeps binding 1.
    let seed = f32(i) * 1e-9 + src[p.src_shift].x * 0.0;
    var a0 = vec4<f32>(seed, 0.1, 0.2, 0.3);
    var a1 = a0 + 0.01; var a2 = a0 + 0.02; var a3 = a0 + 0.03;
    var a4 = a0 + 0.04; var a5 = a0 + 0.05; var a6 = a0 + 0.06; var a7 = a0 + 0.07;
    let m = vec4<f32>(0.9999);
    let c = vec4<f32>(1e-4);
    for (var k = 0u; k < p.iters; k++) {
        a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
        a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
    }
    out[p.out_shift + i] = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
}

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    out[p.out_shift + i] = src[p.src_shift + i];
}

@compute @workgroup_size(1)
fn noop() {
    out[p.out_shift] = vec4<f32>(f32(p.n)) + src[p.src_shift] * 0.0;
}
