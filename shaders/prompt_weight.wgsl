// AUTOMATIC1111's prompt emphasis (modules/sd_hijack_clip.py, process_tokens with the
// "Original" emphasis): the text encoder's output of one 77-token chunk is scaled per
// token by its weight, then rescaled so that its mean is the unweighted mean again:
//   zw[c, t, :] = z[c, t, :] * w[c, t]
//   out[c]      = zw[c] * (mean(z[c]) / mean(zw[c]))
// Means are over the whole chunk (tokens x dim), summed in f32. A1111 takes the mean over
// the chunk of every prompt in its batch at once; per chunk it is the same for a batch of
// one prompt (or of equal prompts), which is what wgsd's requests are.
//
// One workgroup per chunk: each lane sums a strided slice of the chunk (both sums in one
// pass), a tree reduction in workgroup memory combines them, then every lane scales its
// slice. Chunks are small (77 x 1024 values for SD 2), so one pass over them per lane is
// cheap even on a CPU driver.
//
// Bindings: 0 params, 1 z (read, AT), 2 w (read, f32 [chunks, tokens]), 3 out
// (read_write, AT). The launcher checks that every binding fits.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> z: array<AT>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<AT>;

const WG: u32 = 256u;

var<workgroup> sum_z: array<f32, 256>;
var<workgroup> sum_zw: array<f32, 256>;

@compute @workgroup_size(256)
fn prompt_weight(@builtin(workgroup_id) wid: vec3<u32>,
                 @builtin(local_invocation_index) lid: u32) {
    let c = wid.x;
    if (c >= p.chunks) { return; }
    let n = p.tokens * p.dim;
    let base = c * n;
    var sz = 0.0;
    var szw = 0.0;
    for (var i = lid; i < n; i += WG) {
        let v = f32(z[p.z_shift + base + i]);
        sz += v;
        szw += v * w[p.w_shift + c * p.tokens + i / p.dim];
    }
    sum_z[lid] = sz;
    sum_zw[lid] = szw;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s /= 2u) {
        if (lid < s) {
            sum_z[lid] += sum_z[lid + s];
            sum_zw[lid] += sum_zw[lid + s];
        }
        workgroupBarrier();
    }
    // mean(z) / mean(zw): the element counts cancel.
    let ratio = sum_z[0] / sum_zw[0];
    for (var i = lid; i < n; i += WG) {
        let v = f32(z[p.z_shift + base + i]) * w[p.w_shift + c * p.tokens + i / p.dim];
        out[p.o_shift + base + i] = at(v * ratio);
    }
}
