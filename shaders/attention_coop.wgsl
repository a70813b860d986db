// Fused multi-head attention on cooperative matrices (tensor cores), flash style: the
// same result, Params, bindings and windows as attention_flash.wgsl (see there), for f16
// q, k, v, out and non-causal masks (the UNet's attention; CLIP runs in f32):
//
//   out[b, i, h*D + d] = sum_j softmax_j(scale * q[b, i, h*D:] . k[b, j, h*D:]) v[b, j, h*D + d]
//
// Grid: one workgroup of NSG subgroups (SG lanes, a fixed size) per block of BQ = 16 * NSG
// query rows of one head (items = nb * heads * nblk, query block fastest). D is padded
// with zeros to DP = 16 * DT.
//   1. All invocations stage the block's q rows (f16) in `kv`; subgroup g loads its 16
//      rows as DT A-matrices (held for the whole key loop).
//   2. Per block of BK keys: stage k rows ([BK][DP], B column-major) and v rows
//      ([BK][DP], B row-major) in `kv`. S = Q K^T: BK/16 score tiles of DT
//      coopMultiplyAdds each, stored row-major to the subgroup's `sc` (f32).
//   3. Online softmax in f32 by the subgroup's lanes, LPR = SG / 16 lanes per query row
//      (row maxima and sums combined with subgroupShuffleXor): P = exp2(S * scale *
//      log2(e) - m) goes to `pm` as f16, and the row's output registers are rescaled.
//   4. O += P V: per 16 output columns, BK/16 coopMultiplyAdds into a zero tile, stored to
//      `sc` and added by the lanes to their private accumulators (each lane owns 16 / LPR
//      columns of its row in every 16-column tile: the same row as in step 3).
// Keys past nk are zero-filled and masked (probability 0); q rows past nrows are zero and
// not stored. Every coop operation and barrier runs in workgroup-uniform control flow.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<AT>;
@group(0) @binding(2) var<storage, read> k: array<AT>;
@group(0) @binding(3) var<storage, read> v: array<AT>;
@group(0) @binding(4) var<storage, read_write> out: array<AT>;

alias MA = coop_mat16x16<f16, A>;
alias MB = coop_mat16x16<f16, B>;
alias MC = coop_mat16x16<f32, C>;

const D: u32 = ${D}u;
const DT: u32 = ${DT}u;      // 16-column tiles of the head
const DP: u32 = DT * 16u;    // padded head width
const SG: u32 = ${SG}u;
const NSG: u32 = ${NSG}u;
const WGS: u32 = NSG * SG;
const BQ: u32 = NSG * 16u;   // query rows per workgroup
const BK: u32 = ${BK}u;      // keys per staged block
const LPR: u32 = SG / 16u;   // lanes per query row
const CPL: u32 = BK / LPR;   // score columns per lane
const OE: u32 = 16u / LPR;   // output columns per lane per tile
const LOG2E: f32 = 1.4426950408889634;
const BIG: f32 = 3.0e38;

var<workgroup> kv: array<f16, ${KV}>;          // q block, then [BK][DP] keys + [BK][DP] values
var<workgroup> sc: array<f32, NSG * 16u * BK>;  // per subgroup: 16 x BK scores / 16 x 16 PV tile
var<workgroup> pm: array<f16, NSG * 16u * BK>;  // per subgroup: 16 x BK probabilities

// Row maximum / sum over the LPR lanes of one query row.
fn row_max(x: f32) -> f32 {
    var r = x;
    for (var s = 1u; s < LPR; s *= 2u) { r = max(r, subgroupShuffleXor(r, s)); }
    return r;
}
fn row_sum(x: f32) -> f32 {
    var r = x;
    for (var s = 1u; s < LPR; s *= 2u) { r += subgroupShuffleXor(r, s); }
    return r;
}

@compute @workgroup_size(WGS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let item = wid.x + wid.y * nwg.x;
    if (item >= p.items) { return; }
    let blk = item % p.nblk;
    let h = (item / p.nblk) % p.heads;
    let bl = item / (p.nblk * p.heads);
    let st = sg_id * 16u * BK;
    let r = lane / LPR;          // this lane's query row within the subgroup's 16
    let part = lane % LPR;
    let qs = p.scale * LOG2E;

    // 1. q rows (zero past nrows and past D), and a zero tile in sc.
    for (var i = 0u; i < BQ * DP / WGS; i++) {
        let e = li + i * WGS;
        let row = blk * BQ + e / DP;
        let c = e % DP;
        var t = 0.0h;
        if (row < p.nrows && c < D) {
            t = f16(q[p.q_shift + (bl * p.nq + row) * p.hd + h * D + c]);
        }
        kv[e] = t;
    }
    for (var i = 0u; i < NSG * 16u * BK / WGS; i++) { sc[li + i * WGS] = 0.0; }
    workgroupBarrier();
${Q_LOAD}
    let zc = coopLoadT<MC>(&sc[st], BK);
    workgroupBarrier();

    var m = -BIG;
    var l = 0.0;
    var o: array<f32, ${ON}>;
    let kvb = bl * p.nk;
    for (var j0 = 0u; j0 < p.nk; j0 += BK) {
        // 2. keys and values of this block.
        for (var i = 0u; i < BK * DP / WGS; i++) {
            let e = li + i * WGS;
            let j = e / DP;
            let c = e % DP;
            var kt = 0.0h;
            var vt = 0.0h;
            if (j0 + j < p.nk && c < D) {
                let src = (kvb + j0 + j) * p.hd + h * D + c;
                kt = f16(k[p.k_shift + src]);
                vt = f16(v[p.v_shift + src]);
            }
            kv[e] = kt;
            kv[BK * DP + e] = vt;
        }
        workgroupBarrier();
${SCORES}
        workgroupBarrier();
        // 3. online softmax of row r over this lane's CPL columns.
        var mx = m;
        for (var c = 0u; c < CPL; c++) {
            let col = part * CPL + c;
            var s = sc[st + r * BK + col] * qs;
            if (j0 + col >= p.nk) { s = -BIG; }
            mx = max(mx, s);
        }
        mx = row_max(mx);
        let alpha = exp2(m - mx);
        m = mx;
        var sum = 0.0;
        for (var c = 0u; c < CPL; c++) {
            let col = part * CPL + c;
            let s = sc[st + r * BK + col] * qs;
            let e = select(exp2(s - mx), 0.0, j0 + col >= p.nk);
            pm[st + r * BK + col] = f16(e);
            sum += e;
        }
        l = l * alpha + row_sum(sum);
        for (var i = 0u; i < ${ON}u; i++) { o[i] *= alpha; }
        workgroupBarrier();
        // 4. O += P V, one 16-column tile at a time.
${PV}
    }

    let row = blk * BQ + sg_id * 16u + r;
    if (row < p.nrows) {
        let inv = 1.0 / l;
        let ob = p.o_shift + (bl * p.nq + row) * p.hd + h * D;
        for (var t = 0u; t < DT; t++) {
            for (var e = 0u; e < OE; e++) {
                let col = t * 16u + part * OE + e;
                if (col < D) { out[ob + col] = at(o[t * OE + e] * inv); }
            }
        }
    }
}
