// Embeddings.
//
// timestep_embedding: diffusers' get_timestep_embedding. t [B] f32, freq [half] f32
// (computed on the CPU exactly as torch does in f32) -> out [B, dim]:
//   arg = t[b] * freq[k]  (one f32 multiply, as torch)
//   out[b, j] = sin(arg_j) for j < half and cos(arg_{j-half}) for half <= j < 2 half,
//   swapped when flip; 0 in the odd last column. sin / cos are evaluated here with a
//   three-part Cody-Waite reduction by pi/2 and minimax polynomials on [-pi/4, pi/4],
//   so arguments up to ~1000 keep ~1e-7 absolute accuracy on every device (builtin
//   sin/cos only promise 2^-11 in WGSL).
//   Bindings: 0 params, 1 t (read), 2 freq (read), 3 out (read_write). One lane per
//   output element.
//
// token_pos: CLIPTextEmbeddings. ids [B, T] u32, tok [V, D] (`${VT}`: TT or vec4<TT>,
// TT f32 or f16), pos [P, D] -> out [B, T, D] f32: out[b, t] = tok[ids[b, t]] + pos[t].
//   The token table may exceed one binding: the launcher binds it in bands of rows
//   [v0, v1) and dispatches once per band; a lane writes only when its token's id falls
//   in the band, so every output is written exactly once. Ids >= V (invalid) are
//   written by the last band as pos[t] alone.
//   Bindings: 0 params, 1 ids (read), 2 tok (read, band window), 3 pos (read), 4 out
//   (read_write). One lane per V unit of out; grid folded in 2-D past 65535 workgroups.

alias V = ${V};
// Output storage: activations (AT / AT4, f32 or f16), stored through `sto` (saturating).
alias VO = ${VO};
fn sto(v: V) -> VO {
    return ${STO}(v);
}
// Table element types; `${TT}` / `${TP}` as plain names turn on `enable f16;`.
alias TT = ${TT};
alias TP = ${TP};

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;

const WG: u32 = 256u;

// ---- timestep ----
@group(0) @binding(1) var<storage, read> ts: array<f32>;
@group(0) @binding(2) var<storage, read> freq: array<f32>;
@group(0) @binding(3) var<storage, read_write> temb: array<AT>;

// sin(x) and cos(x) for |x| < ~1e5.
fn sincos(x: f32) -> vec2<f32> {
    let k = round(x * 0.63661977236758134);
    // pi/2 = A + B + C, A and B with few mantissa bits so k * A and k * B are exact.
    var r = x - k * 1.5703125;
    r = r - k * 4.837512969970703125e-4;
    r = r - k * 7.54978995489188216e-8;
    let z = r * r;
    let s = ((-1.9515295891e-4 * z + 8.3321608736e-3) * z - 1.6666654611e-1) * z * r + r;
    let c = ((2.443315711809948e-5 * z - 1.388731625493765e-3) * z + 4.166664568298827e-2) * z * z
        - 0.5 * z + 1.0;
    let q = i32(k) & 3;
    switch q {
        case 0: { return vec2<f32>(s, c); }
        case 1: { return vec2<f32>(c, -s); }
        case 2: { return vec2<f32>(-s, -c); }
        default: { return vec2<f32>(-c, s); }
    }
}

@compute @workgroup_size(256)
fn timestep(@builtin(global_invocation_id) gid: vec3<u32>) {
    let i = gid.x;
    if (i >= p.n) { return; }
    let b = i / p.d;
    let j = i - b * p.d;
    var v = 0.0;
    if (j < 2u * p.half) {
        let k = j % p.half;
        let sc = sincos(ts[b] * freq[k]);
        // First half is sin (cos when flipped).
        let first = (j < p.half) != (p.flip != 0u);
        v = select(sc.y, sc.x, first);
    }
    temb[i] = at(v);
}

// ---- token_pos ----
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> tok: array<${VT}>;
@group(0) @binding(3) var<storage, read> pos: array<${VP}>;
@group(0) @binding(4) var<storage, read_write> out: array<VO>;

@compute @workgroup_size(256)
fn token_pos(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
             @builtin(local_invocation_index) lid: u32) {
    let i = (wid.x + wid.y * nwg.x) * WG + lid;
    if (i >= p.n) { return; }
    let n = i / p.d;            // token index b * T + t
    let c = i - n * p.d;
    let id = ids[p.ids_shift + n];
    let here = id >= p.v0 && id < p.v1;
    let beyond = p.last != 0u && id >= p.v1;
    if (!here && !beyond) { return; }
    var y = V(pos[p.pos_shift + (n % p.t) * p.d + c]);
    if (here) {
        y += V(tok[p.tok_shift + (id - p.v0) * p.d + c]);
    }
    out[p.o_shift + i] = sto(y);
}
