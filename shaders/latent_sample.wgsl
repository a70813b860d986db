// The two elementwise steps that turn an encoded image into img2img's starting latents
// (diffusers StableDiffusionImg2ImgPipeline.prepare_latents):
//
//   sample:     out[i] = (mean[i] + exp(0.5 * clamp(logvar[i], -30, 20)) * eps[i]) * scale
//               (DiagonalGaussianDistribution.sample() times vae.config.scaling_factor;
//               mean = a[i], logvar = a[n + i]: the encoder's moments [2C, h, w] of one
//               image, channels split in half as torch.chunk(moments, 2, dim=1))
//   add_noise:  out[i] = ca * a[i] + cb * b[i]
//               (scheduler.add_noise: ca = 1, cb = sigma for sigma-based schedulers;
//               ca = sqrt(alpha_bar), cb = sqrt(1 - alpha_bar) for DDIM / PNDM)
//
// Bindings: 0 params, 1 a (read; AT moments for `sample`, f32 latents for `add_noise`),
// 2 b (read, f32: eps or noise), 3 out (read_write, f32). Computed in f32. The launcher
// dispatches one latent row (one image) at a time; `*_shift` is where element 0 of that
// row sits inside each binding window. One invocation per element of the row, the grid
// folded into 2-D (id = wid.x + wid.y * nwg.x).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<AT>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

@compute @workgroup_size(256)
fn sample(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let mean = f32(a[p.a_shift + i]);
    let logvar = clamp(f32(a[p.a_shift + p.n + i]), -30.0, 20.0);
    let sd = exp(0.5 * logvar);
    let z = mean + sd * b[p.b_shift + i];
    out[p.o_shift + i] = z * p.ca;
}

@compute @workgroup_size(256)
fn add_noise(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[p.o_shift + i] = p.ca * f32(a[p.a_shift + i]) + p.cb * b[p.b_shift + i];
}
