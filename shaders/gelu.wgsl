
// Exact (erf) GELU for the GEGLU epilogue, as in activation.wgsl: x/2 * erfc(-x / sqrt 2)
// with a Chebyshev-fitted erfc (|relative error| < 1.2e-7), accurate in f32 for x < 0.
fn gelu(v: f32) -> f32 {
    let z = abs(v) * 0.70710678118654752;
    let t = 1.0 / (1.0 + 0.5 * z);
    var q = 0.17087277;
    q = q * t - 0.82215223;
    q = q * t + 1.48851587;
    q = q * t - 1.13520398;
    q = q * t + 0.27886807;
    q = q * t - 0.18628806;
    q = q * t + 0.09678418;
    q = q * t + 0.37409196;
    q = q * t + 1.00002368;
    q = q * t - 1.26551223;
    let e = t * exp(q - z * z);
    return 0.5 * v * select(e, 2.0 - e, v >= 0.0);
}

fn gelu4(v: vec4<f32>) -> vec4<f32> {
    return vec4<f32>(gelu(v.x), gelu(v.y), gelu(v.z), gelu(v.w));
}
