// The FMA-peak probe of `wgsd bench` (method: the module comment of src/bench/probe.rs).
//
// fma_peak: each invocation runs `p.iters` rounds of CHAINS independent vec4
//           multiply-add chains (the straight-line DECL, BODY and SUM are generated
//           from CHAINS), 8 FLOP per chain per round. The multiplier and addend come
//           from `p`, so nothing folds at compile time, and the sum is stored only when
//           it equals `p.never` (a value it never reaches): the compiler must keep every
//           chain, and the probe writes no memory. STEP is the update, `a * m + c` or
//           `fma(a, m, c)` (fused on some drivers only; the probe times both).
//
// Bindings: 0 params, 1 src (read), 2 out (read_write). 1-D grid, folded to 2-D when
// needed (id = wid.x + wid.y * nwg.x).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<vec4<f32>>;

override WG: u32 = 64u;
const CHAINS: u32 = ${CHAINS}u;

fn step(a: vec4<f32>, m: vec4<f32>, c: vec4<f32>) -> vec4<f32> {
    return ${STEP};
}

@compute @workgroup_size(WG)
fn fma_peak(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let seed = vec4<f32>(f32(i) * 1e-9, 0.1, 0.2, 0.3);
    let m = vec4<f32>(p.m);
    let c = vec4<f32>(p.c);
${DECL}
    for (var k = 0u; k < p.iters; k++) {
${BODY}
    }
    let s = ${SUM};
    if (s.x == p.never) {
        out[p.out_shift + i] = s + src[p.src_shift] * f32(CHAINS);
    }
}
