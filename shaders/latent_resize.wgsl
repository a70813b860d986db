// Resizing latents to any size as torch.nn.functional.interpolate(x, size=(OH, OW),
// mode=..., align_corners=False, antialias=False) does on the CPU (aten's UpSampleKernel.cpp),
// for AUTOMATIC1111's latent hires-fix upscalers ("Latent" = bilinear, "Latent (bicubic)",
// "Latent (nearest-exact)"; plain "nearest" is upsample.wgsl's `nearest`).
//
// x [P, H, W] -> out [P, OH, OW] (P = B * C planes), per band of whole planes. The scales
// are f32(H) / f32(OH) and f32(W) / f32(OW), rounded to f32 on the CPU as torch does.
//
// bilinear: src = max(scale * (o + 0.5) - 0.5, 0); i0 = min(floor(src), size - 1);
//   l1 = clamp(src - i0, 0, 1), l0 = 1 - l1; i1 = i0 + (i0 < size - 1);
//   out = (x[y0, x0] * lx0 + x[y0, x1] * lx1) * ly0 + (x[y1, x0] * lx0 + x[y1, x1] * lx1) * ly1
//   (torch's order: the W sums inside, H outside).
// bicubic: src = scale * (o + 0.5) - 0.5 (not clamped); i = min(floor(src), size - 1);
//   t = clamp(src - i, 0, 1); Keys' cubic with A = -0.75 on taps i - 1 .. i + 2, each index
//   clamped to [0, size - 1]; W sums inside, H outside.
// nearest_exact: i = min(floor((o + 0.5) * scale), size - 1).
//
// Bindings: 0 params, 1 x (read, AT: f32 or f16, window), 2 out (read_write, window).
// One lane per output element; grid folded in 2-D past 65535 workgroups.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read_write> out: array<AT>;

const WG: u32 = 256u;

struct Out {
    plane: u32,
    oy: u32,
    ox: u32,
}

fn locate(i: u32) -> Out {
    let plane = p.oh * p.ow;
    let pl = i / plane;
    let r = i - pl * plane;
    let oy = r / p.ow;
    return Out(pl, oy, r - oy * p.ow);
}

fn at_xy(pl: u32, iy: u32, ix: u32) -> f32 {
    return f32(x[p.x_shift + (pl * p.h + iy) * p.w + ix]);
}

// Linear taps of one axis: (i0, i1, l0, l1) packed as vec4 (indices as f32 are exact here).
fn linear_taps(scale: f32, o: u32, size: u32) -> vec4<f32> {
    let src = max(scale * (f32(o) + 0.5) - 0.5, 0.0);
    let i0 = min(u32(floor(src)), size - 1u);
    let l1 = clamp(src - f32(i0), 0.0, 1.0);
    let i1 = select(i0, i0 + 1u, i0 < size - 1u);
    return vec4<f32>(f32(i0), f32(i1), 1.0 - l1, l1);
}

@compute @workgroup_size(256)
fn bilinear(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let o = locate(i);
    let ty = linear_taps(p.sh, o.oy, p.h);
    let tx = linear_taps(p.sw, o.ox, p.w);
    let y0 = u32(ty.x);
    let y1 = u32(ty.y);
    let x0 = u32(tx.x);
    let x1 = u32(tx.y);
    let r0 = at_xy(o.plane, y0, x0) * tx.z + at_xy(o.plane, y0, x1) * tx.w;
    let r1 = at_xy(o.plane, y1, x0) * tx.z + at_xy(o.plane, y1, x1) * tx.w;
    out[p.o_shift + i] = at(r0 * ty.z + r1 * ty.w);
}

const A: f32 = -0.75;

// Keys' cubic convolution weights for the 4 taps at fractional offset t (torch's
// get_cubic_upsample_coefficients).
fn cubic_weights(t: f32) -> vec4<f32> {
    let x1 = t + 1.0;
    let x2 = 1.0 - t;
    let x3 = x2 + 1.0;
    let w0 = ((A * x1 - 5.0 * A) * x1 + 8.0 * A) * x1 - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * x2 - (A + 3.0)) * x2 * x2 + 1.0;
    let w3 = ((A * x3 - 5.0 * A) * x3 + 8.0 * A) * x3 - 4.0 * A;
    return vec4<f32>(w0, w1, w2, w3);
}

// The first tap index (may be -1) and the fractional offset of one axis.
fn cubic_base(scale: f32, o: u32, size: u32) -> vec2<f32> {
    let src = scale * (f32(o) + 0.5) - 0.5;
    let i = min(floor(src), f32(size) - 1.0);
    let t = clamp(src - i, 0.0, 1.0);
    return vec2<f32>(i, t);
}

fn clamp_tap(base: f32, k: i32, size: u32) -> u32 {
    return u32(clamp(i32(base) - 1 + k, 0, i32(size) - 1));
}

@compute @workgroup_size(256)
fn bicubic(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let o = locate(i);
    let by = cubic_base(p.sh, o.oy, p.h);
    let bx = cubic_base(p.sw, o.ox, p.w);
    let wy = cubic_weights(by.y);
    let wx = cubic_weights(bx.y);
    var acc = 0.0;
    for (var j = 0; j < 4; j++) {
        let iy = clamp_tap(by.x, j, p.h);
        var row = 0.0;
        for (var k = 0; k < 4; k++) {
            row += at_xy(o.plane, iy, clamp_tap(bx.x, k, p.w)) * wx[k];
        }
        acc += row * wy[j];
    }
    out[p.o_shift + i] = at(acc);
}

@compute @workgroup_size(256)
fn nearest_exact(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let o = locate(i);
    let iy = min(u32(floor((f32(o.oy) + 0.5) * p.sh)), p.h - 1u);
    let ix = min(u32(floor((f32(o.ox) + 0.5) * p.sw)), p.w - 1u);
    out[p.o_shift + i] = x[p.x_shift + (o.plane * p.h + iy) * p.w + ix];
}
