// Row gather: out[r, :] = src[idx[r], :] for rows of `row` elements. Assembles a
// conditioning tensor from encoded prompt chunks (each 77 x dim values), e.g. the
// chunks of every prompt of a batch for one sampling step (A1111 prompt editing).
// Indices must be < the source's rows (the launcher checks them on the CPU).
//
// One lane per output element; grid folded in 2-D past 65535 workgroups.
// Bindings: 0 params, 1 idx (read, u32), 2 src (read, AT), 3 out (read_write, AT).

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> idx: array<u32>;
@group(0) @binding(2) var<storage, read> src: array<AT>;
@group(0) @binding(3) var<storage, read_write> out: array<AT>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn gather_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let r = i / p.row;
    let j = i - r * p.row;
    out[p.o_shift + i] = src[p.src_shift + idx[r] * p.row + j];
}
