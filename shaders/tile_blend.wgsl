// Tiled VAE decode's seams and assembly (diffusers AutoencoderKL.tiled_decode).
//
// blend: one band of rows of ONE plane of decoded tile `b` (rows y0 .. y0 + nr, width
// WB). With `a` the finished tile above and `l` the finished tile to the left:
//   v = b[y, x]
//   y < EV: v = a[HA - EV + y, x] * (1 - y / EV) + v * (y / EV)      (blend_v)
//   x < EH: v = l[y, WL - EH + x] * (1 - x / EH) + v * (x / EH)      (blend_h)
// written back into `b` where it changed (diffusers blends in place, and later tiles
// blend against the blended values), and into the assembled image `out` when inside the
// crop (y < RH, x < RW) at (oy + y, ox + x). EV = 0 / EH = 0: no neighbour there.
// crop: a window of latents, out[pl, y, x] = x_in[pl, y0 + y, x0 + x] (the tile to decode).
//
// Bindings (blend): 0 params, 1 a (read; band rows start at a's row HA - EV + y0),
// 2 l (read; rows y0..), 3 b (read_write; rows y0..), 4 out (read_write; plane rows
// oy + y0 .. at column 0, absent = dummy when the band is below the crop).
// Bindings (crop): 0 params, 1 x (read, planes p0..), 2 out (read_write).
// Activations are AT (f32 or f16); blending is computed in f32. One lane per element;
// grid folded in 2-D past 65535 workgroups.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

@group(0) @binding(1) var<storage, read> a: array<AT>;
@group(0) @binding(2) var<storage, read> l: array<AT>;
@group(0) @binding(3) var<storage, read_write> b: array<AT>;
@group(0) @binding(4) var<storage, read_write> out: array<AT>;

@compute @workgroup_size(256)
fn blend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let r = i / p.wb;
    let x = i - r * p.wb;
    let y = p.y0 + r;
    var v = f32(b[p.b_shift + i]);
    let top = y < p.ev;
    let left = x < p.eh;
    if (top) {
        let t = f32(y) / f32(p.ev);
        v = f32(a[p.a_shift + r * p.wb + x]) * (1.0 - t) + v * t;
        if (left) { v = f32(at(v)); } // diffusers stores the blend_v result first
    }
    if (left) {
        let t = f32(x) / f32(p.eh);
        v = f32(l[p.l_shift + r * p.wl + (p.wl - p.eh + x)]) * (1.0 - t) + v * t;
    }
    if (top || left) {
        b[p.b_shift + i] = at(v);
    }
    if (y < p.rh && x < p.rw) {
        out[p.o_shift + r * p.wo + p.ox + x] = at(v);
    }
}

@group(0) @binding(1) var<storage, read> src: array<AT>;
@group(0) @binding(2) var<storage, read_write> dst: array<AT>;

// crop: planes of RH x WB taken at (y0, x0) from planes of HIN x WO.
@compute @workgroup_size(256)
fn crop(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let plane = p.rh * p.wb;
    let pl = i / plane;
    let rem = i - pl * plane;
    let y = rem / p.wb;
    let x = rem - y * p.wb;
    dst[p.o_shift + i] = src[p.b_shift + (pl * p.hin + p.y0 + y) * p.wo + p.x0 + x];
}
