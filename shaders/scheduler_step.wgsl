// One denoising step of any supported scheduler, fused with the classifier-free-guidance
// combine. Every supported update (DDIM, PNDM/PLMS, Euler, Euler ancestral, DPM++ 2M,
// LMS) is an affine combination of per-element values; the CPU works out the scalar
// coefficients (`StepPlan` in src/ops/scheduler_step.rs) and this kernel applies them:
//
//   e  = u + g * (c - u)           (guidance on: u, c = the two batch halves of the UNet
//                                  output, diffusers' order [uncond, cond]); e = u if off
//   d  = dx * x + de * e           (optional "derived" value, e.g. DDIM's predicted x0,
//                                  optionally clamped to [lo, hi] as clip_sample does)
//   x' = ox * x + oe * e + od * d + sum_k oh[k] * h_k + on * noise
//   h_k <- wx[k] * x + we[k] * e + wd[k] * d + sum_j wh_k[j] * h_j   for each slot k
//                                  flagged for writing (old slot values: UniPC's corrected
//                                  sample combines past outputs)
//
// All reads of an element happen before its writes, so a slot may be read (old value)
// and rewritten (new value) in the same step; x is updated in place.
//
// Bindings: 0 params (uniform); 1 u (read, AT: the UNet output may be f16) [n]; 2 c (read,
// AT) [n] (a second window on the
// same UNet output, or u again when guidance is off); 3 x (read_write) [n];
// 4..7 history slots h0..h3 (read_write) [n] (a tiny dummy when unused);
// 8 noise (read) [n] (a dummy when unused). Each binding is a window of a band:
// `s_*` is the index of the band's first element inside it.
// One invocation per element; the grid may be folded into 2-D for > 65535 workgroups.

// struct Params is generated from the launcher's Rust struct (shader_params!):
// flags: 1 guidance, 2 derived, 4 clamp, 8 noise, 16<<k read h_k, 256<<k write h_k;
// d_coef = (dx, de, 0, 0); out_coef = (ox, oe, od, on).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> u: array<AT>;
@group(0) @binding(2) var<storage, read> c: array<AT>;
@group(0) @binding(3) var<storage, read_write> x: array<f32>;
@group(0) @binding(4) var<storage, read_write> h0: array<f32>;
@group(0) @binding(5) var<storage, read_write> h1: array<f32>;
@group(0) @binding(6) var<storage, read_write> h2: array<f32>;
@group(0) @binding(7) var<storage, read_write> h3: array<f32>;
@group(0) @binding(8) var<storage, read> noise: array<f32>;

const WG: u32 = 256u;

fn on(bit: u32) -> bool {
    return (p.flags & bit) != 0u;
}

@compute @workgroup_size(256)
fn scheduler_step(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }

    var e = f32(u[p.s_u + i]);
    if (on(1u)) {
        // diffusers: noise_pred_uncond + guidance_scale * (noise_pred_text - noise_pred_uncond)
        e = e + p.guidance * (f32(c[p.s_c + i]) - e);
    }
    let xv = x[p.s_x + i];
    var d = 0.0;
    if (on(2u)) {
        d = p.d_coef.x * xv + p.d_coef.y * e;
        if (on(4u)) { d = clamp(d, p.lo, p.hi); }
    }
    var hv = vec4<f32>(0.0);
    if (on(16u)) { hv.x = h0[p.s_h.x + i]; }
    if (on(32u)) { hv.y = h1[p.s_h.y + i]; }
    if (on(64u)) { hv.z = h2[p.s_h.z + i]; }
    if (on(128u)) { hv.w = h3[p.s_h.w + i]; }

    var acc = p.out_coef.x * xv + p.out_coef.y * e + p.out_coef.z * d;
    acc = acc + dot(p.out_h, hv);
    if (on(8u)) { acc = acc + p.out_coef.w * noise[p.s_n + i]; }
    x[p.s_x + i] = acc;

    let wh = vec4<f32>(dot(p.w_h0, hv), dot(p.w_h1, hv), dot(p.w_h2, hv), dot(p.w_h3, hv));
    let w = p.w_x * xv + p.w_e * e + p.w_d * d + wh;
    if (on(256u)) { h0[p.s_h.x + i] = w.x; }
    if (on(512u)) { h1[p.s_h.y + i] = w.y; }
    if (on(1024u)) { h2[p.s_h.z + i] = w.z; }
    if (on(2048u)) { h3[p.s_h.w + i] = w.w; }
}
