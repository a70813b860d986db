// Nearest-neighbour 2x upsampling (F.interpolate(scale_factor=2, mode="nearest")):
// x [B, C, H, W] -> out [B, C, 2H, 2W], out[.., y, x] = in[.., y / 2, x / 2].
//
// Seen as B*C*H input rows of W, each input row makes two output rows of 2W. Launched
// per band of whole input rows (so every window fits one binding); `base` is not needed
// because the index map is the same for every row.
//
// Bindings: 0 params, 1 x (read, AT: f32 or f16, window), 2 out (read_write, window).
// up2x_vec4 (2W % 4 == 0): one lane per output vec4 = (a, a, b, b) from two inputs.
// up2x (any W): one lane per output element. Grid folded in 2-D past 65535 workgroups.
//
// nearest: any output size (F.interpolate(size=(OH, OW), mode="nearest"), diffusers'
// Upsample2D with output_size), x [P, H, W] -> out [P, OH, OW] per band of planes:
// iy = min(floor(f32(oy) * sh), H - 1), sh = f32(H) / f32(OH) rounded to f32, exactly
// torch's nearest_idx; same for x. One lane per output element.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read_write> out4: array<AT4>;
@group(0) @binding(2) var<storage, read_write> out1: array<AT>;

const WG: u32 = 256u;

fn source(o: u32) -> u32 {
    let w2 = 2u * p.w;
    let orow = o / w2;
    let ocol = o - orow * w2;
    return p.x_shift + (orow / 2u) * p.w + ocol / 2u;
}

@compute @workgroup_size(256)
fn up2x_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let s = source(4u * i);
    let a = x[s];
    let b = x[s + 1u];
    out4[p.o_shift + i] = AT4(a, a, b, b);
}

@compute @workgroup_size(256)
fn up2x(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    out1[p.o_shift + i] = x[source(i)];
}

@compute @workgroup_size(256)
fn nearest(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let plane = p.oh * p.ow;
    let pl = i / plane;
    let r = i - pl * plane;
    let oy = r / p.ow;
    let ox = r - oy * p.ow;
    let iy = min(u32(floor(f32(oy) * p.sh)), p.h - 1u);
    let ix = min(u32(floor(f32(ox) * p.sw)), p.w - 1u);
    out1[p.o_shift + i] = x[p.x_shift + (pl * p.h + iy) * p.w + ix];
}
