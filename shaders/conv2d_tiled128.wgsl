// 2-D convolution as an implicit GEMM for discrete GPUs: 128x128 register-tiled variant
// (8x8 outputs per invocation), the default on GPUs; conv2d.wgsl (64x64 tiles, 4x4 per
// invocation) is kept as the fallback for small Cout and for side-by-side benchmarks.
//
//   out[b, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] * x[b, ci, oy*s + ky - pad, ox*s + kx - pad]
//                        (+ bias[co]) (+ res[b, co, oy, ox])   (zero outside the image)
//
// GEMM view, Params, bindings, input-channel groups (ACCUM) and tile numbering as in
// conv2d.wgsl (see there): M = Cout, N = output pixels of the band (batch-major), K = this
// group's Cin * kh * kw, the tap matrix gathered straight from NCHW.
//
// Grid: a 16x16 workgroup computes a 128 (channels) x 128 (pixels) tile. Invocation
// (tx, ty) owns channels 4ty..4ty+3 and 64+4ty..64+4ty+3, pixels 4tx..4tx+3 and
// 64+4tx..64+4tx+3: 16 named vec4 accumulators c<r>_<h> (the launcher writes out the FMA
// and STORE defines, shared with matmul_tiled128.wgsl). K advances TK = 8 per step through
// two vec4 tiles in workgroup memory (row stride S = 33 vec4, 8.25 KiB in all); each
// invocation stages 4 weights (4 channels at one k: 8 neighbours read 8 consecutive k)
// and 4 taps (4 consecutive pixels at one k), zero past the edges.

// struct Params is generated from the launcher's Rust struct (shader_params!).

// Output and residual storage: AT, or f32 for the exact partial sums of an f16
// convolution whose input channels are split into groups (see gemm/conv2d.rs).
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

const T: u32 = 128u;  // tile edge (channels and pixels)
const TK: u32 = 8u;   // K chunk staged per step
const S: u32 = 33u;   // vec4 row stride of the staged tiles

var<workgroup> ws: array<vec4<f32>, 264>;  // [TK][S]: ws[kk*S + c/4][c%4] = w[co0 + c, k0 + kk]
var<workgroup> xs: array<vec4<f32>, 264>;  // [TK][S]: xs[kk*S + n/4][n%4] = tap(k0 + kk, n0 + n)

// The implicit-GEMM element B[k, n]: tap k of output pixel n, zero in the padding.
fn tap(k: u32, n: u32, kk: u32, npix: u32) -> f32 {
    if (k >= kk || n >= npix) { return 0.0; }
    let khw = p.kh * p.kw;
    let c = k / khw;
    let t = k % khw;
    let howo = p.ho * p.wo;
    let b = n / howo;
    let r = n % howo;
    let iy = i32((r / p.wo) * p.stride + t / p.kw) - i32(p.pad);
    let ix = i32((r % p.wo) * p.stride + t % p.kw) - i32(p.pad);
    if (iy < 0 || ix < 0 || u32(iy) >= p.h || u32(ix) >= p.w) { return 0.0; }
    return f32(x[p.x_shift + b * p.x_bstride + (c * p.h + u32(iy)) * p.w + u32(ix)]);
}

// w[co, k] of this group (0 outside).
fn wat(co: u32, k: u32, kk: u32) -> f32 {
    if (co < p.cout && k < kk) { return f32(wt[p.w_shift + co * p.w_row + p.w_k0 + k]); }
    return 0.0;
}

// Writes out[co, pixels n..n+3] (those inside the band) = v (+ bias) (+ res or, with ACCUM,
// + the earlier groups' sum).
fn store4(co: u32, n: u32, v: vec4<f32>) {
    if (co >= p.cout) { return; }
    let howo = p.ho * p.wo;
    let npix = p.nb * howo;
    var add = 0.0;
    if (HAS_BIAS && !ACCUM) { add = bias[p.b_shift + co]; }
    for (var j = 0u; j < 4u; j++) {
        let px = n + j;
        if (px < npix) {
            let o = (px / howo) * p.o_bstride + co * howo + px % howo;
            var y = v[j] + add;
            if (ACCUM) {
                y += f32(out[p.o_shift + o]);
            } else if (HAS_RES) {
                y += f32(res[p.r_shift + o]);
            }
            out[p.o_shift + o] = ost(y);
        }
    }
}

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let tile = wid.x + wid.y * nwg.x;
    // Uniform per workgroup, so returning keeps the barriers below in uniform control.
    if (tile >= p.tiles) { return; }
    let co0 = (tile % p.m_tiles) * T;
    let n0 = (tile / p.m_tiles) * T;
    let npix = p.nb * p.ho * p.wo;
    let kk = p.cin * p.kh * p.kw;
    let tx = lid.x;
    let ty = lid.y;
    let sk = li % TK;     // weights: k of this invocation's stage
    let sq = li / TK;     // weights: channels 4sq..4sq+3
    let xk = li / 32u;    // taps: k
    let xq = li % 32u;    // taps: pixels 4xq..4xq+3
${DECL}
    for (var k0 = 0u; k0 < kk; k0 += TK) {
        let co = co0 + 4u * sq;
        let kw_ = k0 + sk;
        ws[sk * S + sq] = vec4<f32>(wat(co, kw_, kk), wat(co + 1u, kw_, kk),
                                    wat(co + 2u, kw_, kk), wat(co + 3u, kw_, kk));
        let n = n0 + 4u * xq;
        let kx = k0 + xk;
        xs[xk * S + xq] = vec4<f32>(tap(kx, n, kk, npix), tap(kx, n + 1u, kk, npix),
                                    tap(kx, n + 2u, kk, npix), tap(kx, n + 3u, kk, npix));
        workgroupBarrier();
        for (var c = 0u; c < TK; c++) {
            let a0 = ws[c * S + ty];
            let a1 = ws[c * S + ty + 16u];
            let b0 = xs[c * S + tx];
            let b1 = xs[c * S + tx + 16u];
${FMA}
        }
        workgroupBarrier();
    }
    let mr = co0 + 4u * ty;
    let nc = n0 + 4u * tx;
${STORE}
}
