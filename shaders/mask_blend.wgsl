// Inpainting with an ordinary 4-channel UNet: after each scheduler step the latents
// outside the mask are replaced by the image's latents (diffusers
// StableDiffusionInpaintPipeline.__call__, `num_channels_unet == 4`):
//
//   x[i] = (1 - m[i % hw]) * a[i] + m[i % hw] * x[i]
//
// computed as torch does, ((1 - m) * a) + (m * x) in f32; the mask is binary after
// diffusers' mask processing, so the result is exactly a or x.
//
// Bindings: 0 params, 1 a (read, f32: the noised image latents of one row [C, h, w]),
// 2 m (read, f32: that row's latent-size mask [1, h, w], broadcast over channels),
// 3 x (read_write, f32: the row of latents [C, h, w], updated in place). The launcher
// dispatches one latent row at a time; `*_shift` is where element 0 of the row sits
// inside each binding window. One invocation per element of the row, the grid folded
// into 2-D (id = wid.x + wid.y * nwg.x).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn mask_blend(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let k = m[p.m_shift + i % p.hw];
    let keep = (1.0 - k) * a[p.a_shift + i];
    let gen = k * x[p.x_shift + i];
    x[p.x_shift + i] = keep + gen;
}
