// Normalisation: GroupNorm (torch.nn.GroupNorm, optional fused SiLU) and LayerNorm over
// the last dimension. Statistics in f32, accurate for groups of millions of elements.
//
// GroupNorm, x [B, C, S] (S = product of the spatial dims), G groups of CPG = C / G
// channels; group gi = b * G + g covers the contiguous run x[gi * GS .. (gi + 1) * GS],
// GS = CPG * S. Three entries, all dispatched per band (a window of x under one binding):
//
//   gn_partial   one workgroup per chunk of CHUNK elements of one group (chunks never
//                span groups). Sums of (x - K) and (x - K)^2 with the shift K = the
//                chunk's first element, so there is no catastrophic cancellation; each
//                lane sums a strided subset, one barrier, lane 0 adds the lanes' sums
//                and writes part[gi * chunks + ci] = (chunk mean, chunk M2, count, 0).
//   gn_finalize  one lane per group: merges its chunks' (mean, M2, n) with Chan's
//                pairwise formula and writes stats[gi] = (mean, 1 / sqrt(var + eps)).
//   gn_apply     one lane per element (per vec4 when S % 4 == 0): (x - mean) * rstd *
//                gamma[c] + beta[c], then x * sigmoid(x) when silu != 0.
//
// LayerNorm, x [R, C]: layer_norm, one workgroup per row (grid folded past 65535 rows):
// shifted sums as above, one barrier, lane 0 makes mean / rstd, a second barrier, then
// every lane normalises its strided elements.
//
// Bindings per entry are listed above each. Activations x / out are stored as S (AT or
// AT4: f32 or f16) and converted to V (f32 or vec4<f32>) on load: statistics and the
// affine are f32, stores go through `store` (saturating in f16); gamma / beta are f32.
// With vec4 every index below counts vec4s and all sizes are multiples of 4.
// Version 1: shifted sums + Chan merge (Welford per element was 2x slower on lavapipe).

alias V = ${V};
alias S = ${S};

fn store(v: V) -> S {
    return ${ST}(v);
}

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;
const CHUNK: u32 = 16384u; // elements (not V units) per gn_partial workgroup
const LN_WG: u32 = 64u;

const W: u32 = ${W}u; // elements per V

fn hsum(v: V) -> f32 {
    return ${HSUM};
}

fn first(v: V) -> f32 {
    return ${FIRST};
}

// ---- gn_partial: 1 x (read, V units), 2 part (read_write, vec4 per chunk) ----
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> part: array<vec4<f32>>;

var<workgroup> red: array<vec2<f32>, 256>;

@compute @workgroup_size(256)
fn gn_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let w = wid.x + wid.y * nwg.x;
    // Every lane of a workgroup takes the same branch: the barrier below stays uniform.
    let live = w < p.n;
    let wc = min(w, p.n - 1u);
    let gq = wc / p.band_chunks;
    let ci = p.c0 + wc % p.band_chunks;
    let chunk_v = CHUNK / W;
    let start = p.x_shift + gq * p.gs + (ci - p.c0) * chunk_v;
    let count = min(chunk_v, p.gs - ci * chunk_v);
    let k = first(V(x[start]));
    var s1 = V(0.0);
    var s2 = V(0.0);
    for (var i = lid; i < count; i += WG) {
        let d = V(x[start + i]) - V(k);
        s1 += d;
        s2 += d * d;
    }
    red[lid] = vec2<f32>(hsum(s1), hsum(s2));
    workgroupBarrier();
    if (lid == 0u && live) {
        var t1 = 0.0;
        var t2 = 0.0;
        for (var j = 0u; j < WG; j++) {
            t1 += red[j].x;
            t2 += red[j].y;
        }
        let n = f32(count * W);
        let m = t1 / n;
        part[(p.g0 + gq) * p.chunks + ci] = vec4<f32>(k + m, max(t2 - t1 * m, 0.0), n, 0.0);
    }
}

// ---- gn_finalize: 1 part (read), 2 stats (read_write, vec2 per group) ----
@group(0) @binding(1) var<storage, read> part_in: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> stats: array<vec2<f32>>;

@compute @workgroup_size(64)
fn gn_finalize(@builtin(global_invocation_id) gid: vec3<u32>) {
    let gi = gid.x;
    if (gi >= p.n) { return; }
    var mean = 0.0;
    var m2 = 0.0;
    var n = 0.0;
    for (var j = 0u; j < p.chunks; j++) {
        let q = part_in[gi * p.chunks + j];
        let nn = n + q.z;
        let d = q.x - mean;
        mean += d * (q.z / nn);
        m2 += q.y + d * d * (n * q.z / nn);
        n = nn;
    }
    stats[gi] = vec2<f32>(mean, inverseSqrt(m2 / n + p.eps));
}

// ---- gn_apply: 1 x (read), 2 stats (read), 3 gamma (read), 4 beta (read), 5 out ----
@group(0) @binding(1) var<storage, read> xa: array<S>;
@group(0) @binding(2) var<storage, read> st: array<vec2<f32>>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<S>;

@compute @workgroup_size(256)
fn gn_apply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let plane = (p.g0 + i) / p.s;          // b * C + c
    let c = plane % p.c;
    let gi = plane / p.cpg;                // b * G + g, as C = G * cpg
    let sm = st[gi];
    let a = sm.y * gamma[c];
    var y = (V(xa[p.x_shift + i]) - V(sm.x)) * V(a) + V(beta[c]);
    if (p.silu != 0u) {
        y = y / (V(1.0) + exp(-y));
    }
    out[p.o_shift + i] = store(y);
}

// ---- layer_norm: 1 x (read), 2 gamma (read, V), 3 beta (read, V), 4 out ----
@group(0) @binding(1) var<storage, read> xl: array<S>;
@group(0) @binding(2) var<storage, read> lgamma: array<V>;
@group(0) @binding(3) var<storage, read> lbeta: array<V>;
@group(0) @binding(4) var<storage, read_write> ol: array<S>;

var<workgroup> lred: array<vec2<f32>, 64>;
var<workgroup> lstat: vec2<f32>;

@compute @workgroup_size(64)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let r = wid.x + wid.y * nwg.x;
    let live = r < p.n;
    let rc = min(r, p.n - 1u);
    let start = p.x_shift + rc * p.gs;
    let k = first(V(xl[start]));
    var s1 = V(0.0);
    var s2 = V(0.0);
    for (var i = lid; i < p.gs; i += LN_WG) {
        let d = V(xl[start + i]) - V(k);
        s1 += d;
        s2 += d * d;
    }
    lred[lid] = vec2<f32>(hsum(s1), hsum(s2));
    workgroupBarrier();
    if (lid == 0u) {
        var t1 = 0.0;
        var t2 = 0.0;
        for (var j = 0u; j < LN_WG; j++) {
            t1 += lred[j].x;
            t2 += lred[j].y;
        }
        let n = f32(p.gs * W);
        let m = t1 / n;
        lstat = vec2<f32>(k + m, inverseSqrt(max(t2 - t1 * m, 0.0) / n + p.eps));
    }
    workgroupBarrier();
    if (!live) { return; }
    let sm = lstat;
    let o = p.o_shift + rc * p.gs;
    for (var i = lid; i < p.gs; i += LN_WG) {
        ol[o + i] = store((V(xl[start + i]) - V(sm.x)) * V(sm.y) * lgamma[i] + lbeta[i]);
    }
}
