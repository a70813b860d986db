// Fused multi-head attention, flash style, for CPU drivers (lavapipe): one workgroup is
// one subgroup of SG lanes, no shared memory, no barriers.
//
//   out[b, i, h*D + d] = sum_j softmax_j(scale * q[b, i, h*D:] . k[b, j, h*D:]) v[b, j, h*D + d]
//
// with key j masked for query i when CAUSAL and j > i (i is the query's global index).
// The Nq x Nk score matrix is never stored: every query row keeps a running max `m`, a
// running sum `l` and an output accumulator (online softmax, all f32, in base 2: q is
// pre-scaled by scale * log2(e) and exp2 replaces exp, which gives the same softmax).
//
// Bindings: 0 params (uniform), 1 q (read) // [B, Nq, H*D], 2 k (read) // [B, Nk, H*D],
// 3 v (read) // [B, Nk, H*D], 4 out (read_write) // [B, Nq, H*D]. Each binding is a
// window: `*_shift` is where the window's first row starts inside it. The q/out windows
// start at row (b0*Nq + q0) and cover `nb` batch items of `nrows` rows each (nb > 1 only
// when q0 = 0 and nrows = Nq); the k/v windows start at row b0*Nk. The element type T is
// AT4 (vec4 of the activation type, f32 or f16) when D % 4 == 0 (offsets are then
// multiples of 4 and loads are divided by 4), else AT. Loads convert to f32: scores, the
// softmax and the accumulators are f32 whatever the storage; stores use at()/at4().
//
// Grid: work item id = wid.x + wid.y * nwg.x (folded grid) -> (query block, column group,
// head, batch), block fastest so neighbouring workgroups read the same head's keys. A
// block is R*SG query rows of one head of one batch item; lane l owns rows r*SG + l
// (r < R) with the output accumulator of G vec4 chunks (columns 4*cg .. 4*(cg + G)) in
// registers as named variables, and, when one group covers D, the whole pre-scaled q
// row too. Wider heads (several groups) reload q per chunk in a plain loop over D, and
// every group recomputes the scores: this bounds the generated code (lavapipe's JIT
// time grows with it) at the price of redoing the q.k work for D > 4 * G.
//
// Per block of SG keys, lane l loads key/value row j0 + l once, one vec4 chunk at a time;
// each chunk is handed to every lane by subgroupBroadcast (constant lanes, so the walk is
// generated as straight-line code by the launcher: the INIT, BLOCK and STORE defines).
// Scores, max and sum are per lane-owned row, so no cross-lane reduction is needed.
// Rows and chunks past the end are clamped for loads and skipped for stores (elements past
// D load as 0 through the ld_* helpers of f32 bindings); keys past the end or
// masked get score -BIG, so exp2 gives exactly 0; key rows past kend are clamped for loads.
// Key 0 is valid for every query, so the first block makes every m finite.
//
// The workgroup must fit in one subgroup: the launcher passes SG <= the adapter's
// smallest subgroup size. Straight-line named variables rather than private arrays:
// lavapipe puts dynamically indexed arrays in scratch memory and compiles them slowly.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<${T}>;
@group(0) @binding(2) var<storage, read> k: array<${T}>;
@group(0) @binding(3) var<storage, read> v: array<${T}>;
@group(0) @binding(4) var<storage, read_write> out: array<${T}>;

override SG: u32 = 8u;
const D: u32 = ${D}u;
const DC: u32 = (D + 3u) / 4u;  // vec4 chunks per head
const G: u32 = ${G}u;           // chunks per column group
const R: u32 = ${R}u;
const BIG: f32 = 3.0e38;

${LOADERS}
@compute @workgroup_size(SG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let id = wid.x + wid.y * nwg.x;
    if (id >= p.items) { return; }
    let blk = id % p.nblk;
    let cg = (id / p.nblk) % p.groups * G;
    let h = (id / (p.nblk * p.groups)) % p.heads;
    let bl = id / (p.nblk * p.groups * p.heads);
    let i_first = blk * R * SG;
    let i_last = min(i_first + R * SG, p.nrows) - 1u;
    let qs = p.scale * 1.4426950408889634;
    let hb = h * D;
    let kvb = bl * p.nk * p.hd + hb;
    // Keys needed: all, or up to the block's last query when causal.
    var kend = p.nk;
    if (p.causal != 0u) { kend = min(p.nk, p.q0 + i_last + 1u); }
${INIT}
    for (var j0 = 0u; j0 < kend; j0 += SG) {
        let jo = kvb + min(j0 + lane, kend - 1u) * p.hd;
        let ko = p.k_shift + jo;
        let vo = p.v_shift + jo;
${SCORES}
${BLOCK}
    }
${STORE}
}
