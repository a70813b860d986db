// Concatenation of two tensors along one dimension (torch.cat([a, b], dim)), for the
// case with many outer rows; the launcher does few-row cases (the UNet skip concat on
// dim 1 with a small batch) as plain buffer copies instead.
//
// Seen as rows: a [R, IA], b [R, IB] -> out [R, IA + IB], out[r] = a[r] ++ b[r].
// Data moves as T: u32 bits for any 4-byte dtype, f16 for f16 activations.
//
// Bindings: 0 params, 1 a (read, window), 2 b (read, window), 3 out (read_write, window).
// One lane per output element of the band (bands of whole rows); grid folded in 2-D.

alias T = ${T};

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<T>;
@group(0) @binding(2) var<storage, read> b: array<T>;
@group(0) @binding(3) var<storage, read_write> out: array<T>;

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn concat_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let row_len = p.ia + p.ib;
    let r = i / row_len;
    let c = i - r * row_len;
    var v: T;
    if (c < p.ia) {
        v = a[p.a_shift + r * p.ia + c];
    } else {
        v = b[p.b_shift + r * p.ib + (c - p.ia)];
    }
    out[p.o_shift + i] = v;
}
