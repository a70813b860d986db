// Bandwidth and launch probes for `wgsd bench` (method: the module comment of
// src/bench/probe.rs; the FMA probe is probe_fma.wgsl).
//
// copy:     out[j] = src[j] over vec4s; `p.n` invocations each copy PER vec4s,
//           i, i + n, i + 2n, ... (adjacent invocations touch adjacent vec4s).
//           Bandwidth = 2 * bytes / time.
// noop:     one invocation writing one value, for the launch-overhead figure.
//
// Bindings: 0 params, 1 src (read), 2 out (read_write). 1-D grid, folded to 2-D when
// needed (id = wid.x + wid.y * nwg.x).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;

override WG: u32 = 64u;
override PER: u32 = 1u;

@compute @workgroup_size(WG)
fn copy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    for (var r = 0u; r < PER; r++) {
        let j = i + r * p.n;
        out[p.out_shift + j] = src[p.src_shift + j];
    }
}

@compute @workgroup_size(1)
fn noop() {
    out[p.out_shift] = vec4<f32>(f32(p.n)) + src[p.src_shift] * 0.0;
}
