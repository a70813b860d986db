// 2-D convolution as an implicit GEMM with shared-memory tiles (the portable variant,
// for discrete GPUs; CPU drivers use conv2d_subgroup.wgsl).
//
//   out[b, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] * x[b, ci, oy*s + ky - pad, ox*s + kx - pad]
//                        (+ bias[co]) (+ res[b, co, oy, ox])   (zero outside the image)
//
// GEMM view: M = Cout, N = output pixels of the band (batch-major), K = this group's
// Cin * kh * kw; no im2col buffer: the x tile is gathered straight from NCHW. The
// launcher may split Cin into groups (each x window must fit one binding): the first
// group writes bias + residual + its partial sum, later groups (ACCUM) add theirs.
//
// Bindings (same as conv2d_subgroup.wgsl): 0 params (uniform), 1 x (read) // [nb, Cin, H,
// W] window, batch stride x_bstride; 2 w (read, WT) // [Cout, Cin, kh, kw] rows
// co_lo.., row stride w_row, group columns from w_k0; 3 bias (read) // [Cout] (dummy
// unless HAS_BIAS); 4 res (read) // like out (dummy unless HAS_RES); 5 out (read_write)
// // [nb, Cout, Ho, Wo], batch stride o_bstride. `*_shift`: element 0 of the band inside
// each window.
//
// Grid: a 16x16 workgroup computes a 64 (channels) x 64 (pixels) tile, 4x4 per
// invocation; K is walked in chunks of 16 staged in workgroup memory (each invocation
// stages 4 weights and 4 gathered taps per chunk). Tiles are numbered
// tile = wid.x + wid.y * nwg.x (folded grid), channel tile fastest; workgroups past
// p.tiles return (the whole workgroup, so the barriers stay uniform).

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

const TS: u32 = 64u;   // tile edge (channels and pixels)
const KC: u32 = 16u;   // K chunk staged per step

var<workgroup> ws: array<f32, 1024>;   // [KC][TS] weights
var<workgroup> xs: array<f32, 1024>;   // [KC][TS] taps

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

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let tile = wid.x + wid.y * nwg.x;
    if (tile >= p.tiles) { return; }
    let co0 = (tile % p.m_tiles) * TS;
    let n0 = (tile / p.m_tiles) * TS;
    let howo = p.ho * p.wo;
    let npix = p.nb * howo;
    let kk = p.cin * p.kh * p.kw;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < kk; k0 += KC) {
        for (var e = 0u; e < 4u; e++) {
            let i = li + e * 256u;
            let q = i % TS;
            let k = k0 + i / TS;
            let co = co0 + q;
            var wv = 0.0;
            if (k < kk && co < p.cout) {
                wv = f32(wt[p.w_shift + co * p.w_row + p.w_k0 + k]);
            }
            ws[i] = wv;
            xs[i] = tap(k, n0 + q, kk, npix);
        }
        workgroupBarrier();
        for (var c = 0u; c < KC; c++) {
            let a = c * TS + lid.y * 4u;
            let bq = c * TS + lid.x * 4u;
            let xv = vec4<f32>(xs[bq], xs[bq + 1u], xs[bq + 2u], xs[bq + 3u]);
            acc[0] += ws[a] * xv;
            acc[1] += ws[a + 1u] * xv;
            acc[2] += ws[a + 2u] * xv;
            acc[3] += ws[a + 3u] * xv;
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < 4u; i++) {
        let co = co0 + lid.y * 4u + i;
        if (co >= p.cout) { break; }
        var add = 0.0;
        if (HAS_BIAS && !ACCUM) { add = bias[p.b_shift + co]; }
        for (var j = 0u; j < 4u; j++) {
            let n = n0 + lid.x * 4u + j;
            if (n < npix) {
                let o = (n / howo) * p.o_bstride + co * howo + n % howo;
                var y = acc[i][j] + add;
                if (ACCUM) {
                    y += f32(out[p.o_shift + o]);
                } else if (HAS_RES) {
                    y += f32(res[p.r_shift + o]);
                }
                out[p.o_shift + o] = ost(y);
            }
        }
    }
}
