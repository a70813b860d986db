// 2-D convolution as an implicit GEMM on cooperative matrices (tensor cores): the same
// convolution, Params, bindings, Cin groups (ACCUM), OT/RT storage and tile numbering as
// conv2d.wgsl (see there), for f16 activations and f16 weights, accumulated in f32.
//
//   out[b, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] * x[b, ci, oy*s + ky - pad, ox*s + kx - pad]
//                        (+ bias[co]) (+ res[b, co, oy, ox])   (zero outside the image)
//
// GEMM view: M = Cout (A = the weights, [BM][LDS] row-major in workgroup memory), N =
// output pixels of the band, batch-major (B = the gathered taps, staged [BN][LDS], i.e.
// column-major), K = Cin * kh * kw, BK per step. Subgroups own accumulator tiles as in
// matmul_coop.wgsl; the epilogue stages each tile through workgroup memory.
// Every coop operation and barrier runs in workgroup-uniform control flow.

// struct Params is generated from the launcher's Rust struct (shader_params!).

alias OT = ${OT};
alias RT = ${RT};
fn ost(v: f32) -> OT { return ${OT_CVT}(v); }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read> wt: array<${WT}>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<RT>;
@group(0) @binding(5) var<storage, read_write> out: array<OT>;

override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override ACCUM: bool = false;

alias MA = ${CM}<f16, A>;
alias MB = ${CM}<f16, B>;
alias MC = ${CM}<f32, C>;

const S: u32 = ${S}u;
const SG: u32 = ${SG}u;
const SGN: u32 = ${SGN}u;
const FM: u32 = ${FM}u;
const FN: u32 = ${FN}u;
const BM: u32 = ${BM}u;     // output channels per tile
const BN: u32 = ${BN}u;     // output pixels per tile
const BK: u32 = ${BK}u;
const WGS: u32 = ${WGS}u;
const LDS: u32 = BK + 8u;
const STAGE: u32 = ${STAGE}u;

var<workgroup> xs: array<f16, ${XS}>;     // [BM][LDS]: weights (A)
var<workgroup> ws: array<f16, ${WS}>;     // [BN][LDS]: taps (B)
var<workgroup> stage: array<f32, ${STAGE_ALL}>;

// The implicit-GEMM element B[k, n]: tap k of output pixel n, zero in the padding.
fn tap(k: u32, n: u32, kk: u32, npix: u32) -> f16 {
    if (k >= kk || n >= npix) { return 0.0h; }
    let khw = p.kh * p.kw;
    let c = k / khw;
    let t = k % khw;
    let howo = p.ho * p.wo;
    let b = n / howo;
    let r = n % howo;
    let iy = i32((r / p.wo) * p.stride + t / p.kw) - i32(p.pad);
    let ix = i32((r % p.wo) * p.stride + t % p.kw) - i32(p.pad);
    if (iy < 0 || ix < 0 || u32(iy) >= p.h || u32(ix) >= p.w) { return 0.0h; }
    return f16(x[p.x_shift + b * p.x_bstride + (c * p.h + u32(iy)) * p.w + u32(ix)]);
}

// Bias / residual / partial sums for the S x S tile staged at st: channels co.., pixels n...
fn store_conv(st: u32, lane: u32, co: u32, n: u32) {
    let howo = p.ho * p.wo;
    let npix = p.nb * howo;
    for (var t = 0u; t < S * S / SG; t++) {
        let e = lane + t * SG;
        let c = co + e / S;
        let q = n + e % S;
        if (c < p.cout && q < npix) {
            var y = stage[st + e];
            if (HAS_BIAS && !ACCUM) { y += bias[p.b_shift + c]; }
            let o = (q / howo) * p.o_bstride + c * howo + q % howo;
            if (ACCUM) {
                y += f32(out[p.o_shift + o]);
            } else if (HAS_RES) {
                y += f32(res[p.r_shift + o]);
            }
            out[p.o_shift + o] = ost(y);
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
    let co0 = (tile % p.m_tiles) * BM;
    let n0 = (tile / p.m_tiles) * BN;
    let npix = p.nb * p.ho * p.wo;
    let kk_all = p.cin * p.kh * p.kw;
    let sm = sg_id / SGN;
    let sn = sg_id % SGN;
    let st = sg_id * STAGE;
    let rows = sm * FM * S;

    for (var i = 0u; i < ${STAGE_ALL}u / WGS; i++) { stage[li + i * WGS] = 0.0; }
    workgroupBarrier();
${ACC_INIT}
    for (var k0 = 0u; k0 < kk_all; k0 += BK) {
        for (var i = 0u; i < BM * BK / WGS; i++) {
            let e = li + i * WGS;
            let row = e / BK;
            let kk = e % BK;
            var v = 0.0h;
            if (co0 + row < p.cout && k0 + kk < kk_all) {
                v = f16(wt[p.w_shift + (co0 + row) * p.w_row + p.w_k0 + k0 + kk]);
            }
            xs[row * LDS + kk] = v;
        }
        for (var i = 0u; i < BN * BK / WGS; i++) {
            let e = li + i * WGS;
            // Consecutive invocations walk pixels (contiguous in x for stride 1).
            let col = e % BN;
            let kk = e / BN;
            ws[col * LDS + kk] = tap(k0 + kk, n0 + col, kk_all, npix);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk += S) {
${MMA}
        }
        workgroupBarrier();
    }
${EPILOGUE}
}
