// Decoded image -> u8 pixels, exactly as diffusers' VaeImageProcessor + numpy_to_pil:
//   v = clamp(x / 2 + 0.5, 0, 1); u8 = round_half_even(v * 255)
// (WGSL's round() rounds halves to even, like numpy's round).
//
// Bindings: 0 params, 1 x [B, 3, H, W] AT (f32 or f16, read), 2 out: the u8 array [B, H, W, 3] packed
// four bytes per u32, little-endian (read_write). One invocation per output word; the
// grid is folded into 2-D (id = wid.x + wid.y * nwg.x).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;

fn byte_at(i: u32) -> u32 {
    let per_image = 3u * p.hw;
    let b = i / per_image;
    let r = i % per_image;
    let pix = r / 3u;
    let ch = r % 3u;
    let v = clamp(f32(x[p.x_shift + b * per_image + ch * p.hw + pix]) / 2.0 + 0.5, 0.0, 1.0);
    return u32(round(v * 255.0));
}

@compute @workgroup_size(256)
fn to_u8(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let w = (wid.x + wid.y * nwg.x) * WG + lid;
    if (w >= p.words) { return; }
    var word = 0u;
    for (var k = 0u; k < 4u; k++) {
        let i = 4u * w + k;
        if (i < p.bytes) {
            word |= byte_at(i) << (8u * k);
        }
    }
    out[p.o_shift + w] = word;
}
