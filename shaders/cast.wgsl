// Storage conversion of activations: out[i] = x[i] as AT (f32 <-> f16). To f16 the value
// saturates at +-65504 (`at`), so a value beyond f16's range becomes the largest finite
// half, never infinity.
//
// Bindings: 0 params, 1 x (read, `${XT}`, window), 2 out (read_write, AT, window). One lane
// per element of the band; grid folded in 2-D past 65535 workgroups.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${XT}>;
@group(0) @binding(2) var<storage, read_write> out: array<AT>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn convert(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    out[p.o_shift + i] = at(f32(x[p.x_shift + i]));
}
