// Splits the last dimension into three equal parts: x [R, 3C] -> a, b, c each [R, C]
// (torch's `x.chunk(3, dim=-1)` made contiguous): the fused Q/K/V projection's output
// becomes the three tensors attention reads.
//
// Data moves as u32 words (`w` = C * element size / 4 words per part), so f32 and f16
// (with C even) both work. One lane per word of one output row band; grid folded in 2-D.
//
// Bindings: 0 params; 1 x (read, window of the band's rows); 2, 3, 4 outputs (read_write,
// windows). `*_shift` is where the band starts inside each window.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> o0: array<u32>;
@group(0) @binding(3) var<storage, read_write> o1: array<u32>;
@group(0) @binding(4) var<storage, read_write> o2: array<u32>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn split3(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let r = i / p.w;
    let j = i - r * p.w;
    let src = p.x_shift + r * 3u * p.w + j;
    o0[p.o0_shift + i] = x[src];
    o1[p.o1_shift + i] = x[src + p.w];
    o2[p.o2_shift + i] = x[src + 2u * p.w];
}
