// Activations: SiLU, exact (erf) GELU, QuickGELU, and GEGLU.
//
//   silu        out = x * sigmoid(x)
//   gelu        out = x/2 * (1 + erf(x / sqrt 2)) = x/2 * erfc(-x / sqrt 2)   (torch default)
//   quick_gelu  out = x * sigmoid(1.702 x)                                    (CLIP SD1)
//   geglu       x [R, 2F] -> out [R, F]: out[r, j] = x[r, j] * gelu(x[r, F + j])
//               (diffusers GEGLU: hidden, gate = chunk(2, dim=-1); hidden * gelu(gate))
//
// WGSL has no erf: `erfc_pos` is a Chebyshev-fitted erfc for z >= 0 with relative error
// about 1.2e-7, so GELU keeps its relative accuracy in the negative tail too (where it
// is 0.5 x erfc(|x| / sqrt 2), a small number) instead of losing it to 1 - erf.
//
// Bindings: 0 params, 1 x (read), 2 out (read_write), both windows of activations
// stored as S (AT or AT4); loads convert to V (f32 or vec4<f32>), the math is f32 and
// stores go through `st` (saturating in f16). Indices count V units. Unary entries: one lane per V unit of the band, grid
// folded in 2-D past 65535 workgroups. geglu: one lane per V unit of out; `f` = F in V
// units.

alias V = ${V};
alias S = ${S};

fn st(v: V) -> S {
    return ${ST}(v);
}

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<S>;
@group(0) @binding(2) var<storage, read_write> out: array<S>;

const WG: u32 = 256u;

fn index(wid: vec3<u32>, nwg: vec3<u32>, lid: u32) -> u32 {
    return (wid.x + wid.y * nwg.x) * WG + lid;
}

fn sigmoid_mul(v: V, a: f32) -> V {
    return v / (V(1.0) + exp(V(-a) * v));
}

// erfc(z) for z >= 0 (Numerical Recipes' Chebyshev fit, |relative error| < 1.2e-7).
fn erfc_pos(z: V) -> V {
    let t = V(1.0) / (V(1.0) + V(0.5) * z);
    var q = V(0.17087277);
    q = q * t + V(-0.82215223);
    q = q * t + V(1.48851587);
    q = q * t + V(-1.13520398);
    q = q * t + V(0.27886807);
    q = q * t + V(-0.18628806);
    q = q * t + V(0.09678418);
    q = q * t + V(0.37409196);
    q = q * t + V(1.00002368);
    q = q * t + V(-1.26551223);
    return t * exp(q - z * z);
}

fn gelu_v(v: V) -> V {
    let z = abs(v) * V(0.70710678118654752);
    let e = erfc_pos(z);
    // x >= 0: x/2 * (2 - erfc(z)); x < 0: x/2 * erfc(z).
    return V(0.5) * v * select(e, V(2.0) - e, v >= V(0.0));
}

@compute @workgroup_size(256)
fn silu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[p.o_shift + i] = st(sigmoid_mul(V(x[p.x_shift + i]), 1.0));
}

@compute @workgroup_size(256)
fn quick_gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[p.o_shift + i] = st(sigmoid_mul(V(x[p.x_shift + i]), 1.702));
}

@compute @workgroup_size(256)
fn gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    out[p.o_shift + i] = st(gelu_v(V(x[p.x_shift + i])));
}

@compute @workgroup_size(256)
fn geglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_index) lid: u32) {
    let i = index(wid, nwg, lid);
    if (i >= p.n) { return; }
    let r = i / p.f;
    let j = i - r * p.f;
    let src = p.x_shift + 2u * r * p.f + j;
    out[p.o_shift + i] = st(V(x[src]) * gelu_v(V(x[src + p.f])));
}
