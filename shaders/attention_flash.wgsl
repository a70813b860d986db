// Fused multi-head attention for discrete GPUs, flash style: a workgroup of WG = 64
// invocations takes a block of 64 query rows of one head (and one column group); key and
// value rows are staged block by block in workgroup memory by all invocations together,
// and each invocation keeps its own query row, online-softmax state (running max m, sum l)
// and output accumulator in registers. No subgroup operations. Computes exactly what
// attention.wgsl does (see there for the formula, the bindings and the window layout;
// Params is identical):
//
//   out[b, i, h*D + d] = sum_j softmax_j(scale * q[b, i, h*D:] . k[b, j, h*D:]) v[b, j, h*D + d]
//
// Grid: workgroup (wid.x + wid.y * nwg.x) -> (query block, column group, head, batch item),
// query block fastest; `items` is nb * heads * groups * nblk workgroups. A column group is
// G columns of the head (groups = ceil(D / G)); wide heads recompute the scores per group.
// D and G are padded to DC, GC vec4 chunks (zero past D). Keys advance BK per block:
// ks[j][c] holds chunk c of key j (all of D), vs[j][c] chunk c of this group's value
// columns; BK * (DC + GC) vec4s stay within 16 KiB. Scores are computed with q pre-scaled
// by scale * log2(e), so the softmax uses exp2. Causal: key j is masked for query row
// q0 + i when j > q0 + i, and the key loop stops after the block's last row.
//
// q, k, v, out are stored as AT (f32 or f16); staging, scores, softmax and accumulators
// are f32, stores go through at().
//
// Every invocation, including those past the last query row, takes part in the staging and
// the barriers (the loop bounds are uniform per workgroup); only the stores check the row.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<AT>;
@group(0) @binding(2) var<storage, read> k: array<AT>;
@group(0) @binding(3) var<storage, read> v: array<AT>;
@group(0) @binding(4) var<storage, read_write> out: array<AT>;

const WG: u32 = 64u;
const D: u32 = ${D}u;
const G: u32 = ${G}u;     // columns per group
const DC: u32 = ${DC}u;   // ceil(D / 4)
const GC: u32 = ${GC}u;   // ceil(G / 4)
const BK: u32 = ${BK}u;   // keys per staged block
const LOG2E: f32 = 1.4426950408889634;

var<workgroup> ks: array<vec4<f32>, ${KS}>;   // [BK][DC]
var<workgroup> vs: array<vec4<f32>, ${VS}>;   // [BK][GC]

// Four consecutive elements of a row of `buf` starting at column c (of `lim` valid
// columns), 0 past lim.
fn ld4k(base: u32, c: u32, lim: u32) -> vec4<f32> {
    var r = vec4<f32>();
    for (var e = 0u; e < 4u; e++) {
        if (c + e < lim) { r[e] = f32(k[base + c + e]); }
    }
    return r;
}
fn ld4v(base: u32, c: u32, lim: u32) -> vec4<f32> {
    var r = vec4<f32>();
    for (var e = 0u; e < 4u; e++) {
        if (c + e < lim) { r[e] = f32(v[base + c + e]); }
    }
    return r;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let item = wid.x + wid.y * nwg.x;
    // Uniform per workgroup, so returning keeps the barriers below in uniform control.
    if (item >= p.items) { return; }
    let blk = item % p.nblk;
    let c0 = (item / p.nblk) % p.groups * G;
    let h = (item / (p.nblk * p.groups)) % p.heads;
    let bl = item / (p.nblk * p.groups * p.heads);
    let gn = min(G, D - c0);

    let i = blk * WG + lid;            // this invocation's row in the band
    let ri = min(i, p.nrows - 1u);     // clamped for loads
    let qb = p.q_shift + (bl * p.nq + ri) * p.hd + h * D;
    let qs = p.scale * LOG2E;
    var qr: array<vec4<f32>, DC>;
    for (var c = 0u; c < DC; c++) {
        var t = vec4<f32>();
        for (var e = 0u; e < 4u; e++) {
            if (4u * c + e < D) { t[e] = f32(q[qb + 4u * c + e]); }
        }
        qr[c] = t * qs;
    }
    // Keys this row sees, and (uniform) keys the whole block sees.
    var kend = p.nk;
    var kend_wg = p.nk;
    if (p.causal != 0u) {
        kend = min(p.nk, p.q0 + ri + 1u);
        let last = min(blk * WG + WG, p.nrows) - 1u;
        kend_wg = min(p.nk, p.q0 + last + 1u);
    }

    var m = -3.0e38;
    var l = 0.0;
    var acc: array<vec4<f32>, GC>;
    let kvb = bl * p.nk;
    for (var j0 = 0u; j0 < kend_wg; j0 += BK) {
        let nb = min(BK, kend_wg - j0);
        // Stage keys (all of D) and this group's value columns.
        for (var e = lid; e < BK * DC; e += WG) {
            let j = e / DC;
            let c = e % DC;
            var t = vec4<f32>();
            if (j < nb) { t = ld4k(p.k_shift + (kvb + j0 + j) * p.hd + h * D, 4u * c, D); }
            ks[e] = t;
        }
        for (var e = lid; e < BK * GC; e += WG) {
            let j = e / GC;
            let c = e % GC;
            var t = vec4<f32>();
            if (j < nb) { t = ld4v(p.v_shift + (kvb + j0 + j) * p.hd + h * D + c0, 4u * c, gn); }
            vs[e] = t;
        }
        workgroupBarrier();
        var s: array<f32, BK>;
        var mx = m;
        for (var j = 0u; j < BK; j++) {
            var dot4 = vec4<f32>();
            for (var c = 0u; c < DC; c++) { dot4 += qr[c] * ks[j * DC + c]; }
            var sj = dot4.x + dot4.y + dot4.z + dot4.w;
            if (j0 + j >= kend) { sj = -3.0e38; }
            s[j] = sj;
            mx = max(mx, sj);
        }
        let alpha = exp2(m - mx);
        m = mx;
        l *= alpha;
        for (var c = 0u; c < GC; c++) { acc[c] *= alpha; }
        for (var j = 0u; j < BK; j++) {
            // Masked keys (and keys past the block) add exactly 0.
            let e = select(exp2(s[j] - mx), 0.0, j0 + j >= kend);
            l += e;
            for (var c = 0u; c < GC; c++) { acc[c] += e * vs[j * GC + c]; }
        }
        workgroupBarrier();
    }

    if (i < p.nrows) {
        let inv = 1.0 / l;
        let ob = p.o_shift + (bl * p.nq + i) * p.hd + h * D + c0;
        for (var c = 0u; c < GC; c++) {
            let o = acc[c] * inv;
            for (var e = 0u; e < 4u; e++) {
                if (4u * c + e < gn) { out[ob + 4u * c + e] = at(o[e]); }
            }
        }
    }
}
