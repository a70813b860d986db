// 3x3 convolution, stride 1, padding 1 (diffusers' ResnetBlock2D, Upsample2D and the VAE
// convolutions), for CPU drivers (lavapipe): the subgroup kernel of conv2d_subgroup.wgsl
// rearranged so that most storage reads are vec4s.
//
//   out[b, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] * x[b, ci, oy + ky - 1, ox + kx - 1]
//                        (+ bias[co]) (+ res[b, co, oy, ox])   (zero outside the image)
//
// Why: lavapipe runs a workgroup of 8 as one 8-wide SIMD program and turns every storage
// read whose address differs across lanes into a loop over the lanes, so a vec4 read
// costs about what a scalar read costs, and reads, not multiply-adds, set the speed.
//
// Bindings, Params, bands and input-channel groups (ACCUM) as conv2d_subgroup.wgsl; x
// and w are bound as vec4 arrays. The launcher takes this kernel only when the output
// width is a multiple of 4*PV (so a lane's pixels sit in one row, 16-byte aligned) and
// every window starts on a multiple of 4 elements.
//
// Grid: one workgroup = one subgroup of SG lanes = TM output channels x 4*PV*SG pixels.
// Lane l owns 4*PV consecutive pixels of one output row (PV vec4 accumulators
// per channel). The K walk: blocks of SG input channels (lane l's is cin0 + l), and in each
// the three kernel rows ky. Per block, lane l reads the nine weights
// w[co, cin0 + l, 0..2, 0..2] of each of the TM channels (three aligned vec4s, then a
// per-lane shift: the nine start anywhere); per (block, ky), for each of the block's
// channels, the PV aligned vec4s of input row oy + ky - 1 under its pixels and the
// halo column on each side; the three taps kx are then shifted views of those. The STEPS define walks the block channel by channel and row
// by row, broadcasting each weight from the lane that read it.

// struct Params is generated from the launcher's Rust struct (shader_params!).

alias OT = ${OT};
alias RT = ${RT};
fn ost(v: f32) -> OT { return ${OT_CVT}(v); }

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<vec4<AT>>;
@group(0) @binding(2) var<storage, read> wt: array<vec4<${WT}>>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<RT>;
@group(0) @binding(5) var<storage, read_write> out: array<OT>;

override SG: u32 = 8u;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
override ACCUM: bool = false;
const TM: u32 = ${TM}u;
// vec4s of pixels per lane (4 * PV pixels).
const PV: u32 = ${PV}u;

// The aligned vec4 of x holding element i (i a multiple of 4; out-of-range i reads
// whatever the bounds check gives, and the caller masks it).
fn xv(i: i32) -> vec4<f32> {
    return vec4<f32>(x[u32(max(i, 0)) >> 2u]);
}

fn wv(i: u32) -> vec4<f32> {
    return vec4<f32>(wt[i >> 2u]);
}

// Element s + j of e0, e1, e2, e3 (consecutive elements; s in 0..3, per lane).
fn at_shift(e0: f32, e1: f32, e2: f32, e3: f32, s: u32) -> f32 {
    return select(select(select(e0, e1, s == 1u), e2, s == 2u), e3, s == 3u);
}

// Writes output channel co (if inside the band) for 4 of this lane's pixels from obase.
fn store4(co: u32, v: vec4<f32>, live: bool, obase: u32, howo: u32) {
    if (co >= p.cout || !live) { return; }
    var add = 0.0;
    if (HAS_BIAS && !ACCUM) { add = bias[p.b_shift + co]; }
    let o = obase + co * howo;
    for (var j = 0u; j < 4u; j++) {
        var y = v[j] + add;
        if (ACCUM) {
            y += f32(out[p.o_shift + o + j]);
        } else if (HAS_RES) {
            y += f32(res[p.r_shift + o + j]);
        }
        out[p.o_shift + o + j] = ost(y);
    }
}

@compute @workgroup_size(SG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(subgroup_invocation_id) lane: u32) {
    let tile = wid.x + wid.y * nwg.x;
    if (tile >= p.tiles) { return; }
    let co0 = (tile % p.m_tiles) * TM;
    let n0 = ((tile / p.m_tiles) * SG + lane) * (4u * PV);
    let howo = p.ho * p.wo;
    let npix = p.nb * howo;
    // npix is a multiple of 4 * PV: a lane's pixels are all inside or all past the end.
    let live = n0 < npix;
    let nn = min(n0, npix - 4u * PV);
    let b = nn / howo;
    let r = nn % howo;
    let oy = r / p.wo;
    let ox = r % p.wo;
    let obase = b * p.o_bstride + r;
    let plane = i32(p.h * p.w);
    // x element of (channel 0, row oy - 1, column ox - 4): the vec4 holding the left halo.
    let xb = i32(p.x_shift + b * p.x_bstride + ox) + (i32(oy) - 1) * i32(p.w) - 4;
    let left = ox > 0u;
    let right = ox + 4u * PV < p.w;

    // Accumulators (acc[PV * r + h]: pixels 4h .. 4h + 3 of channel co0 + r) and
    // weights are indexed by literal constants only (the W_LOAD, STEPS and STORE
    // defines are written out per row).
    var acc: array<vec4<f32>, PV * TM>;
    // This lane's channel's 9 weights of each row, by kernel row: wk<ky>[r].
    var wk0: array<vec3<f32>, TM>;
    var wk1: array<vec3<f32>, TM>;
    var wk2: array<vec3<f32>, TM>;
    for (var cin0 = 0u; cin0 < p.cin; cin0 += SG) {
        let my_c = cin0 + lane;
        let c_ok = my_c < p.cin;
        let wc = p.w_shift + p.w_k0 + min(my_c, p.cin - 1u) * 9u;
        let ws = wc & 3u;
        let wa = wc - ws;
${W_LOAD}
        for (var ky = 0u; ky < 3u; ky++) {
            let iy = i32(oy + ky) - 1;
            let row_ok = iy >= 0 && iy < i32(p.h);
            let xrow = xb + i32(ky) * i32(p.w) + i32(cin0) * plane;
${STEPS}
        }
    }
${STORE}
}
