// Latents -> small RGB preview, the linear approximation of the VAE decoder that UIs show
// while denoising: rgb = M^T l + bias per latent pixel (l = the 4 latent channels), then
// u8 = round(clamp((rgb + 1) / 2, 0, 1) * 255). One pixel per latent cell: no VAE pass.
//
// Bindings: 0 params, 1 x [B, 4, H, W] AT (f32 or f16, read), 2 out: the u8 array
// [H, W, 3] of one image packed four bytes per u32, little-endian (read_write). One
// invocation per output word; the grid is folded into 2-D (id = wid.x + wid.y * nwg.x).
// `p.r`, `p.g`, `p.b` hold the matrix columns (the weight of each latent channel for that
// colour), `p.bias.xyz` the bias.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const WG: u32 = 256u;

fn byte_at(i: u32) -> u32 {
    let pix = i / 3u;
    let ch = i % 3u;
    let base = p.x_shift + pix;
    let l = vec4<f32>(f32(x[base]), f32(x[base + p.hw]), f32(x[base + 2u * p.hw]),
                      f32(x[base + 3u * p.hw]));
    var w = p.r;
    var b = p.bias.x;
    if (ch == 1u) {
        w = p.g;
        b = p.bias.y;
    } else if (ch == 2u) {
        w = p.b;
        b = p.bias.z;
    }
    let v = clamp((dot(l, w) + b + 1.0) * 0.5, 0.0, 1.0);
    return u32(round(v * 255.0));
}

@compute @workgroup_size(256)
fn latent_preview(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
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
