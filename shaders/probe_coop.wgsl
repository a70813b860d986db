// The cooperative-matrix peak probe of `wgsd bench` (method: src/bench/probe.rs).
//
// coop_peak: each subgroup keeps CHAINS independent S x S f32 accumulators and runs
//            `p.iters` rounds of one coopMultiplyAdd per chain (2 * S^3 FLOP each) with
//            f16 A and B tiles loaded once from workgroup memory. Each accumulator is
//            stored at the end (to a small region all workgroups share: the values are
//            never read, the stores only keep the work alive), so nothing can be dropped.
//
// Bindings: 0 params, 1 src (read; unused but bound like the other probes), 2 out
// (read_write, CHAINS * NSG * S * S floats). 1-D grid, folded to 2-D when needed.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

alias MA = ${CM}<f16, A>;
alias MB = ${CM}<f16, B>;
alias MC = ${CM}<f32, C>;

const S: u32 = ${S}u;
const WGS: u32 = ${WGS}u;
const CHAINS: u32 = ${CHAINS}u;

var<workgroup> ab: array<f16, ${S2}>;
var<workgroup> zs: array<f32, ${S2}>;

@compute @workgroup_size(WGS)
fn coop_peak(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) li: u32,
             @builtin(subgroup_id) sg_id: u32) {
    if (wid.x + wid.y * nwg.x >= p.n) { return; }
    for (var e = li; e < S * S; e += WGS) {
        ab[e] = f16(p.m * f32(e % 7u) * 1e-3 + p.c);
        zs[e] = 0.0;
    }
    workgroupBarrier();
    let a = coopLoadT<MA>(&ab[0], S);
    let b = coopLoad<MB>(&ab[0], S);
${DECL}
    for (var k = 0u; k < p.iters; k++) {
${BODY}
    }
    let base = p.out_shift + sg_id * CHAINS * S * S;
${STORE}
}
