// Fused multi-head attention, flash style, for CPU drivers (lavapipe): one workgroup is
// one subgroup of SG lanes, no shared memory, no barriers.
//
//   out[b, i, h*D + d] = sum_j softmax_j(scale * q[b, i, h*D:] . k[b, j, h*D:]) v[b, j, h*D + d]
//
// with key j masked for query i when CAUSAL and j > i (i is the query's global index).
// The Nq x Nk score matrix is never stored: each workgroup keeps a running max `m`, a
// running sum `l` and an output accumulator per query row (online softmax, all f32).
//
// Bindings: 0 params (uniform), 1 q (read) // [B, Nq, H*D], 2 k (read) // [B, Nk, H*D],
// 3 v (read) // [B, Nk, H*D], 4 out (read_write) // [B, Nq, H*D]. Each binding is a
// window: `*_shift` is where the window's first row starts inside it. The q/out windows
// start at row (b0*Nq + q0) and cover `nb` batch items of `nrows` rows each (nb > 1 only
// when q0 = 0 and nrows = Nq); the k/v windows start at row b0*Nk.
//
// Grid: work item id = wid.x + wid.y * nwg.x (folded grid) -> (query block, head, batch),
// block fastest so neighbouring workgroups read the same head's keys. A block is R query
// rows of one head of one batch item.
//
// Per block of SG keys:
//   scores: lane l owns key j0 + l for all R rows: s[r] is a dot product over D, q read
//           at lane-uniform addresses.
//   softmax: one subgroupMax per row gives the block max; rescale acc and l by
//           exp(m_old - m_new); p = exp(s - m_new) overwrites s. Each lane keeps a
//           partial l over its own keys (the max is uniform, so partials add up exactly
//           like the full sum); one subgroupAdd per row at the end.
//   p @ v:  lane l owns output columns 4*(c*SG + l) .. +3 for c < DC (DC vec4 chunks, so
//           lanes read a contiguous run of each v row); each key's p is broadcast from
//           the lane that owns the key (PV_STEPS: the walk over the SG lanes,
//           unrolled because subgroupBroadcast needs a constant lane).
// Rows past the end are clamped for loads and skipped for stores; columns past D are
// clamped for loads and skipped for stores; masked or missing keys get score -BIG, so
// exp gives exactly 0. Key 0 is valid for every query, so the first block makes m finite.
//
// The workgroup must fit in one subgroup: the launcher passes SG <= the adapter's
// smallest subgroup size. D, R and DC are text defines (private arrays need constant
// sizes); SG is an override.

struct Params {
    nq: u32,        // queries per batch item (row stride between batch items in q/out)
    q0: u32,        // global index of this dispatch's first query row
    nrows: u32,     // query rows per batch item in this dispatch
    nk: u32,        // keys per batch item
    hd: u32,        // heads * D: row stride of every tensor
    heads: u32,
    nblk: u32,      // ceil(nrows / R)
    items: u32,     // nb * heads * nblk
    q_shift: u32,
    k_shift: u32,
    v_shift: u32,
    o_shift: u32,
    scale: f32,
    causal: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

override SG: u32 = 8u;
const D: u32 = ${D}u;
const R: u32 = ${R}u;
const DC: u32 = ${DC}u;
const BIG: f32 = 3.0e38;

@compute @workgroup_size(SG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.items) { return; }
    let blk = id % p.nblk;
    let h = (id / p.nblk) % p.heads;
    let bl = id / (p.nblk * p.heads);
    let i_first = blk * R;
    let i_last = min(i_first + R, p.nrows) - 1u;

    // Row offsets of this block's queries (clamped) and the per-lane column offsets.
    var qoff: array<u32, R>;
    for (var r = 0u; r < R; r++) {
        qoff[r] = p.q_shift + (bl * p.nq + min(i_first + r, i_last)) * p.hd + h * D;
    }
    var col: array<vec4<u32>, DC>;
    for (var c = 0u; c < DC; c++) {
        let c0 = (c * SG + lane) * 4u;
        col[c] = min(vec4<u32>(c0, c0 + 1u, c0 + 2u, c0 + 3u), vec4<u32>(D - 1u)) + h * D;
    }
    let kvrow = bl * p.nk;

    // Keys needed: all, or up to the block's last query when causal.
    var kend = p.nk;
    if (p.causal != 0u) { kend = min(p.nk, p.q0 + i_last + 1u); }

    var m: array<f32, R>;
    var l: array<f32, R>;
    var acc: array<vec4<f32>, R * DC>;
    for (var r = 0u; r < R; r++) { m[r] = -BIG; }

    for (var j0 = 0u; j0 < kend; j0 += SG) {
        // Scores of this lane's key j0 + lane for the R rows.
        let j = j0 + lane;
        let koff = p.k_shift + (kvrow + min(j, p.nk - 1u)) * p.hd + h * D;
        var s: array<f32, R>;
        for (var d = 0u; d < D; d++) {
            let kd = k[koff + d];
            for (var r = 0u; r < R; r++) { s[r] += q[qoff[r] + d] * kd; }
        }
        // Online softmax update.
        for (var r = 0u; r < R; r++) {
            let qi = p.q0 + min(i_first + r, i_last);
            var sv = s[r] * p.scale;
            if (j >= p.nk || (p.causal != 0u && j > qi)) { sv = -BIG; }
            let mn = max(m[r], subgroupMax(sv));
            let alpha = exp(m[r] - mn);
            m[r] = mn;
            let e = exp(sv - mn);
            s[r] = e;
            l[r] = l[r] * alpha + e;
            for (var c = 0u; c < DC; c++) { acc[r * DC + c] *= alpha; }
        }
        // acc += p @ v, one key at a time, p broadcast from the key's lane.
${PV_STEPS}
    }

    for (var r = 0u; r < R; r++) {
        let i = i_first + r;
        let inv = 1.0 / subgroupAdd(l[r]);
        if (i < p.nrows) {
            let ob = p.o_shift + (bl * p.nq + i) * p.hd + h * D;
            for (var c = 0u; c < DC; c++) {
                let y = acc[r * DC + c] * inv;
                let c0 = (c * SG + lane) * 4u;
                for (var e = 0u; e < 4u; e++) {
                    if (c0 + e < D) { out[ob + c0 + e] = y[e]; }
                }
            }
        }
    }
}
