// Matrix products on cooperative matrices (tensor cores, simdgroup matrices): the same
// product, Params, bindings, W addressing and tile numbering as matmul_tiled.wgsl (see
// there), for f16 activations and f16 weights, accumulated in f32 by coopMultiplyAdd.
//
//   out[b, m, n] = sum_k x[b, m, k] * W(b, k, n)  (+ bias[n])  (+ res[b, m, n])
//
// Grid: one workgroup of NSG subgroups (SG lanes each, a fixed size) computes a BM x BN
// output tile. K advances BK at a time: all invocations stage x as [BM][LDS] (k
// contiguous; A, row-major) and W as [BN][LDS] (k contiguous; B, column-major) in
// workgroup memory as f16, zero past the edges. Subgroup g owns an FM x FN block of
// S x S accumulator tiles (rows (g / SGN) * FM * S.., columns by COLS below) and runs
// FM * FN coopMultiplyAdds per S of k.
//
// GEGLU (B_T only): the tile's first BN/2 columns are value rows of W, the last BN/2 the
// gate rows (gate_w further on) of the same BN/2 output columns; each subgroup owns FN/2
// value tiles and the FN/2 gate tiles of the same columns.
//
// Epilogue: cooperative tiles are opaque, so each accumulator is stored row-major into
// the subgroup's S x S f32 staging area (two with GEGLU), and the subgroup's lanes add
// bias / residual / apply GEGLU and store AT with bounds checks. The zero accumulators
// are loaded from that staging area after zero-filling it (a portable zero value).
//
// Every coop operation and barrier runs in workgroup-uniform control flow: loop bounds are
// uniforms or constants, and workgroups past p.tiles return as a whole.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read> w: array<${WT}>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<AT>;
@group(0) @binding(5) var<storage, read_write> out: array<AT>;

override B_T: bool = true;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override GEGLU: bool = false;

alias MA = ${CM}<f16, A>;
alias MB = ${CM}<f16, B>;
alias MC = ${CM}<f32, C>;

const S: u32 = ${S}u;       // cooperative tile edge
const SG: u32 = ${SG}u;     // lanes per subgroup
const SGN: u32 = ${SGN}u;   // subgroups across the tile's columns
const FM: u32 = ${FM}u;     // accumulator tiles per subgroup, down
const FN: u32 = ${FN}u;     // accumulator tiles per subgroup, across
const BM: u32 = ${BM}u;     // output tile rows
const BN: u32 = ${BN}u;     // output tile columns (W rows staged)
const BK: u32 = ${BK}u;     // k per staged step
const WGS: u32 = ${WGS}u;   // invocations: NSG * SG
const LDS: u32 = BK + 8u;   // padded staged row (f16): 16-byte aligned, fewer bank conflicts
const STAGE: u32 = ${STAGE}u;  // f32 staging per subgroup

var<workgroup> xs: array<f16, ${XS}>;     // [BM][LDS]
var<workgroup> ws: array<f16, ${WS}>;     // [BN][LDS]
var<workgroup> stage: array<f32, ${STAGE_ALL}>;

// Adds bias and residual to the S x S tile staged at st (row-major) and stores the
// in-bounds elements at output rows m..m+S, columns n..n+S.
fn store_tile(st: u32, lane: u32, m: u32, n: u32, obase: u32) {
    for (var t = 0u; t < S * S / SG; t++) {
        let e = lane + t * SG;
        let mm = m + e / S;
        let nn = n + e % S;
        if (mm < p.m && nn < p.n) {
            var y = stage[st + e];
            if (HAS_BIAS) { y += bias[p.bias_shift + nn]; }
            let o = obase + mm * p.ldo + nn;
            if (HAS_RES) { y += f32(res[p.res_shift + o]); }
            out[p.out_shift + o] = at(y);
        }
    }
}

// GEGLU: values staged at st, their gates at st + S * S.
fn store_geglu(st: u32, lane: u32, m: u32, n: u32, obase: u32) {
    for (var t = 0u; t < S * S / SG; t++) {
        let e = lane + t * SG;
        let mm = m + e / S;
        let nn = n + e % S;
        if (mm < p.m && nn < p.n) {
            var hv = stage[st + e];
            var gv = stage[st + S * S + e];
            if (HAS_BIAS) {
                hv += bias[p.bias_shift + nn];
                gv += bias[p.bias_shift + p.gate_b + nn];
            }
            let o = obase + mm * p.ldo + nn;
            var y = hv * gelu(gv);
            if (HAS_RES) { y += f32(res[p.res_shift + o]); }
            out[p.out_shift + o] = at(y);
        }
    }
}

@compute @workgroup_size(WGS)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) li: u32,
        @builtin(subgroup_id) sg_id: u32,
        @builtin(subgroup_invocation_id) lane: u32) {
    let tile = wid.x + wid.y * nwg.x;
    if (tile >= p.tiles) { return; }
    let tn = tile % p.n_tiles;
    let tm = (tile / p.n_tiles) % p.m_tiles;
    let b = tile / (p.n_tiles * p.m_tiles);
    let m0 = tm * BM;
    var n0 = tn * BN;
    if (GEGLU) { n0 = tn * (BN / 2u); }
    let xbase = p.x_shift + b * p.sx;
    let wbase = p.w_shift + b * p.sw;
    let obase = b * p.so;
    let sm = sg_id / SGN;
    let sn = sg_id % SGN;
    let st = sg_id * STAGE;
    let rows = sm * FM * S;

    for (var i = 0u; i < ${STAGE_ALL}u / WGS; i++) { stage[li + i * WGS] = 0.0; }
    workgroupBarrier();
${ACC_INIT}
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var i = 0u; i < BM * BK / WGS; i++) {
            let e = li + i * WGS;
            let row = e / BK;
            let kk = e % BK;
            var v = 0.0h;
            if (m0 + row < p.m && k0 + kk < p.k) {
                v = f16(x[xbase + (m0 + row) * p.ldx + k0 + kk]);
            }
            xs[row * LDS + kk] = v;
        }
        for (var i = 0u; i < BN * BK / WGS; i++) {
            let e = li + i * WGS;
            var col: u32;
            var kk: u32;
            // Global reads walk the contiguous index: k for [N, K], n for [K, N].
            if (B_T) { col = e / BK; kk = e % BK; } else { kk = e / BN; col = e % BN; }
            var cn = n0 + col;
            var wb = wbase;
            if (GEGLU) {
                cn = n0 + col % (BN / 2u);
                wb += col / (BN / 2u) * p.gate_w;
            }
            var v = 0.0h;
            if (cn < p.n && k0 + kk < p.k) {
                if (B_T) {
                    v = f16(w[wb + cn * p.ldw + k0 + kk]);
                } else {
                    v = f16(w[wbase + (k0 + kk) * p.ldw + cn]);
                }
            }
            ws[col * LDS + kk] = v;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += S) {
${MMA}
        }
        workgroupBarrier();
    }
${EPILOGUE}
}
