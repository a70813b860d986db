// Matrix products for discrete GPUs: 128x128 register-tiled variant (8x8 outputs per
// invocation). The default GPU kernel; matmul_tiled.wgsl (64x64, 4x4 per invocation) is
// kept as the smaller-tile fallback and for side-by-side benchmarks.
//
//   out[b, m, n] = sum_k x[b, m, k] * W(b, k, n)  (+ bias[n])  (+ res[b, m, n])
//
// Same Params, bindings and W addressing as matmul.wgsl (see there): B_T selects
// w[n*ldw + k] (nn.Linear [N, K]) or w[k*ldw + n] ([B, K, N]); the WT define is f32 or f16;
// accumulation in f32. Tiles are numbered as in matmul.wgsl (folded grid, n-tile fastest).
//
// Grid: a 16x16 workgroup computes a 128x128 output tile. Invocation (tx, ty) owns rows
// 4ty..4ty+3 and 64+4ty..64+4ty+3, columns 4tx..4tx+3 and 64+4tx..64+4tx+3: 16 vec4
// accumulators c<r>_<h> (r: row 0..7, h: column half), written out by the launcher (the
// FMA and STORE defines) so no private array is indexed. K advances TK = 8 at a time
// through two workgroup tiles of vec4s, xs[kk][row/4] and ws[kk][col/4] (row stride S =
// 33 vec4: the pad keeps the transposed stores off one bank); each invocation stages one
// vec4 of each (4 rows or columns at one k), zero past the edges. Per k step an
// invocation reads 4 vec4s from workgroup memory for 64 FMAs. 8.25 KiB workgroup memory.

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
// GEGLU epilogue (B_T only): tile columns 0..63 are value rows of W, 64..127 the gate rows
// (gate_w further on) of the same 64 output columns, so each invocation holds both halves
// of its outputs (c<r>_0 value, c<r>_1 gate) and stores value * gelu(gate).
override GEGLU: bool = false;

const T: u32 = 128u;  // output tile edge
const TK: u32 = 8u;   // k per step
const S: u32 = 33u;   // vec4 row stride of the staged tiles

var<workgroup> xs: array<vec4<f32>, 264>;  // [TK][S]: xs[kk*S + r/4][r%4] = x[m0 + r, k0 + kk]
var<workgroup> ws: array<vec4<f32>, 264>;  // [TK][S]: ws[kk*S + c/4][c%4] = W(k0 + kk, n0 + c)

// x[m, k] (0 outside the matrix).
fn xat(xbase: u32, m: u32, k: u32) -> f32 {
    if (m < p.m && k < p.k) { return f32(x[xbase + m * p.ldx + k]); }
    return 0.0;
}

// W(k, n) (0 outside the matrix).
fn wat(wbase: u32, k: u32, n: u32) -> f32 {
    if (n < p.n && k < p.k) {
        if (B_T) { return f32(w[wbase + n * p.ldw + k]); }
        return f32(w[wbase + k * p.ldw + n]);
    }
    return 0.0;
}

// Writes out[m, n..n+3] (those inside the matrix) = v (+ bias) (+ res).
fn store4(obase: u32, m: u32, n: u32, v: vec4<f32>) {
    if (m >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let c = n + j;
        if (c < p.n) {
            let o = obase + m * p.ldo + c;
            var y = v[j];
            if (HAS_BIAS) { y += bias[p.bias_shift + c]; }
            if (HAS_RES) { y += f32(res[p.res_shift + o]); }
            out[p.out_shift + o] = at(y);
        }
    }
}

// GEGLU: writes out[m, n..n+3] = (v + bias) * gelu(g + gate bias) (+ res).
fn store_geglu4(obase: u32, m: u32, n: u32, v: vec4<f32>, g: vec4<f32>) {
    if (m >= p.m) { return; }
    for (var j = 0u; j < 4u; j++) {
        let c = n + j;
        if (c < p.n) {
            let o = obase + m * p.ldo + c;
            var h = v[j];
            var gv = g[j];
            if (HAS_BIAS) {
                h += bias[p.bias_shift + c];
                gv += bias[p.bias_shift + p.gate_b + c];
            }
            var y = h * gelu(gv);
            if (HAS_RES) { y += f32(res[p.res_shift + o]); }
            out[p.out_shift + o] = at(y);
        }
    }
}

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
    let tx = lid.x;
    let ty = lid.y;
    // Staging: k-fastest for x (and W when B_T) so 8 neighbours read 8 consecutive k.
    let sk = li % TK;
    let sq = li / TK;           // 0..31: rows (or columns) 4sq..4sq+3
    let wk = li / 32u;          // !B_T: k row of W
    let wq = li % 32u;          // !B_T: columns 4wq..4wq+3 (consecutive in memory)
${DECL}
    for (var k0 = 0u; k0 < p.k; k0 += TK) {
        let r = m0 + 4u * sq;
        let kx = k0 + sk;
        xs[sk * S + sq] = vec4<f32>(xat(xbase, r, kx), xat(xbase, r + 1u, kx),
                                    xat(xbase, r + 2u, kx), xat(xbase, r + 3u, kx));
        if (B_T) {
            var c = n0 + 4u * sq;
            var wb = wbase;
            if (GEGLU) {
                c = n0 + (4u * sq) % (T / 2u);
                wb += (4u * sq) / (T / 2u) * p.gate_w;
            }
            ws[sk * S + sq] = vec4<f32>(wat(wb, kx, c), wat(wb, kx, c + 1u),
                                        wat(wb, kx, c + 2u), wat(wb, kx, c + 3u));
        } else {
            let c = n0 + 4u * wq;
            let kw = k0 + wk;
            ws[wk * S + wq] = vec4<f32>(wat(wbase, kw, c), wat(wbase, kw, c + 1u),
                                        wat(wbase, kw, c + 2u), wat(wbase, kw, c + 3u));
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = xs[kk * S + ty];
            let a1 = xs[kk * S + ty + 16u];
            let b0 = ws[kk * S + tx];
            let b1 = ws[kk * S + tx + 16u];
${FMA}
        }
        workgroupBarrier();
    }
    let obase = b * p.so;
    let mr = m0 + 4u * ty;
    let nc = n0 + 4u * tx;
${STORE}
}
