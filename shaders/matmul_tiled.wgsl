// Matrix products for discrete GPUs: shared-memory tiles, 2-D workgroup.
//
//   out[b, m, n] = sum_k x[b, m, k] * W(b, k, n)  (+ bias[n])  (+ res[b, m, n])
//
// Same Params, bindings and W addressing as matmul.wgsl (see there): B_T selects
// w[n*ldw + k] (nn.Linear [N, K]) or w[k*ldw + n] ([B, K, N]); the WT define is f32 or f16;
// accumulation in f32.
//
// Grid: a 16x16 workgroup computes a 64x64 output tile; invocation (tx, ty) owns rows
// ty + 16i and columns tx + 16j (i, j < 4). K advances 16 at a time through two
// workgroup tiles (x: 64 rows x 16 k, W: 16 k x 64 columns), each invocation loading 4
// elements of each, zero-filled past the edges. Tiles are numbered as in matmul.wgsl.
// Slow on lavapipe (barriers), fast on GPUs; it only needs no subgroup support.

// struct Params is generated from the launcher's Rust struct (shader_params!).

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<AT>;
@group(0) @binding(2) var<storage, read> w: array<${WT}>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<AT>;
@group(0) @binding(5) var<storage, read_write> out: array<AT>;

override B_T: bool = true;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
// GEGLU epilogue (B_T only): tile columns 0..31 are value rows of W, 32..63 the gate rows
// (gate_w further on) of the same 32 output columns; invocation columns j = 0, 1 hold
// values and j = 2, 3 their gates, stored as value * gelu(gate).
override GEGLU: bool = false;

const T: u32 = 64u;   // output tile edge
const TK: u32 = 16u;  // k per step

var<workgroup> xs: array<f32, 1024>;  // [TK, T]: xs[kk * T + row]
var<workgroup> ws: array<f32, 1024>;  // [TK, T]: ws[kk * T + col]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>,
        @builtin(local_invocation_index) li: u32) {
    let tile = wid.x + wid.y * nwg.x;
    // Uniform per workgroup, so returning keeps the barriers below in uniform control.
    if (tile >= p.tiles) { return; }
    let tn = tile % p.n_tiles;
    let tm = (tile / p.n_tiles) % p.m_tiles;
    let b = tile / (p.n_tiles * p.m_tiles);
    let m0 = tm * T;
    var n0 = tn * T;
    if (GEGLU) { n0 = tn * (T / 2u); }
    let xbase = p.x_shift + b * p.sx;
    let wbase = p.w_shift + b * p.sw;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        for (var i = 0u; i < 4u; i++) {
            let e = li + 256u * i;
            // x: consecutive invocations walk k (contiguous in memory).
            let row = e / TK;
            let kx = e % TK;
            var xv = 0.0;
            if (m0 + row < p.m && k0 + kx < p.k) {
                xv = f32(x[xbase + (m0 + row) * p.ldx + k0 + kx]);
            }
            xs[kx * T + row] = xv;
            var col: u32;
            var kw: u32;
            if (B_T) { col = e / TK; kw = e % TK; } else { kw = e / T; col = e % T; }
            var wv = 0.0;
            // GEGLU: tile column col is output column col % 32 of the value or gate half.
            var cn = n0 + col;
            var wb = wbase;
            if (GEGLU) {
                cn = n0 + col % (T / 2u);
                wb += col / (T / 2u) * p.gate_w;
            }
            if (cn < p.n && k0 + kw < p.k) {
                if (B_T) {
                    wv = f32(w[wb + cn * p.ldw + k0 + kw]);
                } else {
                    wv = f32(w[wbase + (k0 + kw) * p.ldw + n0 + col]);
                }
            }
            ws[kw * T + col] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let wr = vec4<f32>(ws[kk * T + lid.x], ws[kk * T + lid.x + 16u],
                               ws[kk * T + lid.x + 32u], ws[kk * T + lid.x + 48u]);
            for (var i = 0u; i < 4u; i++) {
                acc[i] += xs[kk * T + lid.y + 16u * i] * wr;
            }
        }
        workgroupBarrier();
    }
    let obase = b * p.so;
    if (GEGLU) {
        for (var j = 0u; j < 2u; j++) {
            let n = n0 + lid.x + 16u * j;
            if (n >= p.n) { continue; }
            var add = 0.0;
            var gadd = 0.0;
            if (HAS_BIAS) {
                add = bias[p.bias_shift + n];
                gadd = bias[p.bias_shift + p.gate_b + n];
            }
            for (var i = 0u; i < 4u; i++) {
                let m = m0 + lid.y + 16u * i;
                if (m < p.m) {
                    let o = obase + m * p.ldo + n;
                    var y = (acc[i][j] + add) * gelu(acc[i][j + 2u] + gadd);
                    if (HAS_RES) { y += f32(res[p.res_shift + o]); }
                    out[p.out_shift + o] = at(y);
                }
            }
        }
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + lid.x + 16u * j;
        if (n >= p.n) { continue; }
        var add = 0.0;
        if (HAS_BIAS) { add = bias[p.bias_shift + n]; }
        for (var i = 0u; i < 4u; i++) {
            let m = m0 + lid.y + 16u * i;
            if (m < p.m) {
                let o = obase + m * p.ldo + n;
                var y = acc[i][j] + add;
                if (HAS_RES) { y += f32(res[p.res_shift + o]); }
                out[p.out_shift + o] = at(y);
            }
        }
    }
}
