// Fused multi-head attention, portable variant: one invocation per (query row, head),
// no subgroup operations, no shared memory. Computes exactly what attention.wgsl does
// (see there for the formula, the bindings and the window layout; Params is identical):
//
//   out[b, i, h*D + d] = sum_j softmax_j(scale * q[b, i, h*D:] . k[b, j, h*D:]) v[b, j, h*D + d]
//
// Grid: invocation id = (wid.x + wid.y * nwg.x) * WG + lid -> (row, column group, head,
// batch), row fastest, so the invocations of one workgroup read the same key and value
// rows (one cache line serves all of them on a GPU). `items` is nb * heads * groups * nrows
// here. An invocation accumulates G columns (g*G .. g*G + G of its head; groups =
// ceil(D / G)); q is read from storage in the dot products, so the only private array
// is acc[G] (small arrays keep the shader quick to compile, also on lavapipe). Wide heads
// recompute the scores once per group.
// Keys are walked in chunks of KC with an online softmax (running max m, sum l, output
// accumulator, all f32, whatever the storage type AT of q, k, v, out); causal masking
// stops at the query's own index.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<AT>;
@group(0) @binding(2) var<storage, read> k: array<AT>;
@group(0) @binding(3) var<storage, read> v: array<AT>;
@group(0) @binding(4) var<storage, read_write> out: array<AT>;

const WG: u32 = 64u;
const D: u32 = ${D}u;
const G: u32 = ${G}u;
const KC: u32 = 8u;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let id = (wid.x + wid.y * nwg.x) * WG + lid;
    if (id >= p.items) { return; }
    let i = id % p.nrows;
    let c0 = (id / p.nrows) % p.groups * G;
    let h = (id / (p.nrows * p.groups)) % p.heads;
    let bl = id / (p.nrows * p.groups * p.heads);
    let gn = min(G, D - c0);

    let qb = p.q_shift + (bl * p.nq + i) * p.hd + h * D;
    var kend = p.nk;
    if (p.causal != 0u) { kend = min(p.nk, p.q0 + i + 1u); }

    var m = -3.0e38;
    var l = 0.0;
    var acc: array<f32, G>;
    for (var j0 = 0u; j0 < kend; j0 += KC) {
        let n = min(KC, kend - j0);
        var s: array<f32, KC>;
        var mx = m;
        for (var t = 0u; t < n; t++) {
            let kb = p.k_shift + (bl * p.nk + j0 + t) * p.hd + h * D;
            var dot = 0.0;
            for (var d = 0u; d < D; d++) { dot += f32(q[qb + d]) * f32(k[kb + d]); }
            s[t] = dot * p.scale;
            mx = max(mx, s[t]);
        }
        let alpha = exp(m - mx);
        m = mx;
        l *= alpha;
        for (var d = 0u; d < gn; d++) { acc[d] *= alpha; }
        for (var t = 0u; t < n; t++) {
            let e = exp(s[t] - mx);
            l += e;
            let vb = p.v_shift + (bl * p.nk + j0 + t) * p.hd + h * D + c0;
            for (var d = 0u; d < gn; d++) { acc[d] += e * f32(v[vb + d]); }
        }
    }

    let inv = 1.0 / l;
    let ob = p.o_shift + (bl * p.nq + i) * p.hd + h * D + c0;
    for (var d = 0u; d < gn; d++) { out[ob + d] = at(acc[d] * inv); }
}
