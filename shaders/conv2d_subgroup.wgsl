// 2-D convolution as an implicit GEMM, for CPU drivers (lavapipe): subgroup-broadcast
// register tiles, no shared memory, no im2col buffer.
//
//   out[b, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] * x[b, ci, oy*s + ky - pad, ox*s + kx - pad]
//                        (+ bias[co]) (+ res[b, co, oy, ox])   (zero outside the image)
//
// GEMM view: M = Cout (rows of w), N = output pixels of the band (batch-major), K = this
// group's Cin * kh * kw. The launcher may split Cin into groups (so that each x window
// fits one binding): the first group writes bias + residual + its partial sum, later
// groups (ACCUM) add theirs to out.
//
// Bindings: 0 params (uniform), 1 x (read) // [nb, Cin, H, W], a window of channels
// cin_lo.. of each batch item, batch stride x_bstride; 2 w (read, WT) // [Cout, Cin,
// kh, kw] rows co_lo.., row stride w_row, this group's columns start at w_k0; 3 bias
// (read) // [Cout] (a dummy unless HAS_BIAS); 4 res (read) // like out (a dummy unless
// HAS_RES); 5 out (read_write) // [nb, Cout, Ho, Wo], batch stride o_bstride. `*_shift`
// is where element 0 of the band sits inside each window.
//
// Grid: one workgroup = one subgroup of SG lanes = TM output channels x 4*SG pixels.
// Lane l owns pixels 4l..4l+3 of the tile for all TM channels (TM vec4 accumulators).
// The K walk goes over blocks of SG input channels and, inside, over the kh*kw taps:
// per tap, lane l loads the weights of channel (block + l) for the TM rows, then
// the STEPS define loads the SG channels' input vectors and walks them row by row (each
// row's SG steps together), broadcasting each weight from the lane that loaded it
// (written out per lane because subgroupBroadcast needs a constant lane).
// Tiles are numbered tile = wid.x + wid.y * nwg.x (folded grid), channel tile fastest so
// that neighbouring workgroups read the same pixels; workgroups past p.tiles return.
//
// v1: TM up to 32, rows in loops: tens of seconds of lavapipe JIT. v2: every row
// written out by the launcher, TM up to 16. v3 (now): row-major walk, TM up to 24
// (fastest on lavapipe 22.3); scalar x loads (taps are not vec4-aligned), one select
// per tap for the padding. Since v4 the 3x3 stride-1 convolutions with 4-aligned widths
// take conv3x3_subgroup.wgsl (vec4 reads, ~1.4x faster) and 1x1 ones the matmul
// kernel; this kernel keeps strided, odd-width and odd-channel convolutions.

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

override SG: u32 = 8u;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override ACCUM: bool = false;
const TM: u32 = ${TM}u;

// Four taps of input channel c: pixel offsets `off` (relative to channel 0), zero where
// `ok` is false (padding, or a pixel past the end of the band).
fn xload(c: u32, off: vec4<i32>, ok_tap: vec4<bool>) -> vec4<f32> {
    let cb = i32(c * p.h * p.w);
    let ok = ok_tap & vec4<bool>(c < p.cin);
    return vec4<f32>(
        select(0.0, f32(x[u32(off.x + cb)]), ok.x),
        select(0.0, f32(x[u32(off.y + cb)]), ok.y),
        select(0.0, f32(x[u32(off.z + cb)]), ok.z),
        select(0.0, f32(x[u32(off.w + cb)]), ok.w));
}

// Writes output channel co (if inside the band) for this lane's four pixels.
fn store(co: u32, v: vec4<f32>, live: vec4<bool>, obase: vec4<u32>, howo: u32) {
    if (co >= p.cout) { return; }
    var add = 0.0;
    if (HAS_BIAS && !ACCUM) { add = bias[p.b_shift + co]; }
    let o = obase + vec4<u32>(co * howo);
    for (var j = 0u; j < 4u; j++) {
        if (live[j]) {
            var y = v[j] + add;
            if (ACCUM) {
                y += f32(out[p.o_shift + o[j]]);
            } else if (HAS_RES) {
                y += f32(res[p.r_shift + o[j]]);
            }
            out[p.o_shift + o[j]] = ost(y);
        }
    }
}

@compute @workgroup_size(SG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let tile = wid.x + wid.y * nwg.x;
    if (tile >= p.tiles) { return; }
    let co0 = (tile % p.m_tiles) * TM;
    let n0 = ((tile / p.m_tiles) * SG + lane) * 4u;
    let howo = p.ho * p.wo;
    let npix = p.nb * howo;

    // Where each of this lane's four pixels reads and writes (vector lanes = pixels).
    let n = vec4<u32>(n0) + vec4<u32>(0u, 1u, 2u, 3u);
    let live = n < vec4<u32>(npix);
    let nn = min(n, vec4<u32>(npix - 1u));
    let b = nn / howo;
    let r = nn % howo;
    let iy0 = vec4<i32>((r / p.wo) * p.stride) - vec4<i32>(i32(p.pad));
    let ix0 = vec4<i32>((r % p.wo) * p.stride) - vec4<i32>(i32(p.pad));
    // x index of tap (0, 0) in channel 0 (may point outside the image).
    let base = vec4<i32>(p.x_shift + b * p.x_bstride) + iy0 * i32(p.w) + ix0;
    let obase = b * p.o_bstride + r;

    // Accumulators and weights are indexed by literal constants only (the ACC_*, W_*
    // and STEPS defines are written out per row): a loop-indexed register array makes
    // lavapipe's compiler spill it and take tens of seconds to compile.
    var acc: array<vec4<f32>, TM>;
    var wl: array<f32, TM>;
    let khw = p.kh * p.kw;
    for (var cin0 = 0u; cin0 < p.cin; cin0 += SG) {
        let my_c = cin0 + lane;
        let c_ok = my_c < p.cin;
        let wcol = p.w_shift + p.w_k0 + min(my_c, p.cin - 1u) * khw;
        for (var t = 0u; t < khw; t++) {
            let ky = t / p.kw;
            let kx = t % p.kw;
            let iy = iy0 + vec4<i32>(i32(ky));
            let ix = ix0 + vec4<i32>(i32(kx));
            let ok = live & (vec4<u32>(iy) < vec4<u32>(p.h)) & (vec4<u32>(ix) < vec4<u32>(p.w));
            let off = base + vec4<i32>(i32(ky * p.w + kx));
            let wt0 = wcol + t;
${W_LOAD}
${STEPS}
        }
    }
${STORE}
}
