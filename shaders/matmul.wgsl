// Matrix products for CPU drivers (lavapipe): subgroup-broadcast register tiles.
//
//   out[b, m, n] = sum_k x[b, m, k] * W(b, k, n)  (+ bias[n])  (+ res[b, m, n])
//
// W(b, k, n) = w[b*sw + n*ldw + k] when B_T (nn.Linear weight [N, K]), else
// w[b*sw + k*ldw + n] (batched matmul, b [B, K, N]). x and w may be f32 or f16 (the WT define);
// accumulation is always f32.
//
// Bindings: 0 params (uniform), 1 x (read) // [B, M, ldx], 2 w (read) // [N, K] or
// [B, K, N], 3 bias (read) // [N] (a dummy unless HAS_BIAS), 4 res (read) // like out
// (a dummy unless HAS_RES), 5 out (read_write) // [B, M, ldo]. Each binding is a window:
// `*_shift` is where element 0 of this band sits inside it.
//
// GEGLU (B_T only): the tile is ROWS x 2*SG output columns; lane l < SG/2 computes the
// value columns 4l..4l+3 and lane l + SG/2 the gate columns for the same outputs (W and
// bias rows gate_w / gate_b further on); the value lanes fetch the gate with
// subgroupShuffleXor and store value * gelu(gate). The [.., 2I] product is never stored.
//
// Grid: one workgroup = one subgroup of SG lanes = one tile of ROWS rows x 4*HV*SG
// columns. Lane l owns HV groups of 4 columns (4*HV*l ..) for all ROWS rows (ROWS*HV
// vec4 accumulators). Per chunk of k's, lane l loads its share of x for each row and
// its columns' W; the chunk is then walked row by row (each row's steps together, so
// its accumulators stay in registers), each lane broadcasting row values from the lane
// that loaded them (the STEPS define is that walk, unrolled with literal lane indices
// because subgroupBroadcast needs a constant lane). Chunks are SG deep (lane l loads
// x[row, k0 + l]), or with VEC4 4*SG deep (lane l loads x[row, k0 + 4l .. + 3] and each
// column's W[n, k0 + 4q .. + 3] as vec4s: lavapipe reads storage lane by lane, so reads
// per multiply-add, not arithmetic, set this kernel's speed there).
// Tiles are numbered tile = wid.x + wid.y * nwg.x (folded grid),
// n-tile fastest, then m-tile, then batch; workgroups past p.tiles return (uniformly).
// Rows and columns past the edge are clamped for loads and skipped for stores; the
// K % chunk tail runs a plain loop.
//
// The workgroup must be exactly one subgroup: the launcher passes the adapter's fixed
// subgroup size as SG and uses another variant where the size is not fixed.

// struct Params is generated from the launcher's Rust struct (shader_params!).

alias WT = ${WT};

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<${XV}>;
@group(0) @binding(2) var<storage, read> w: array<${WV}>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read> res: array<AT>;
@group(0) @binding(5) var<storage, read_write> out: array<AT>;

override SG: u32 = 8u;
override B_T: bool = true;
override HAS_BIAS: bool = false;
override HAS_RES: bool = false;
// GEGLU epilogue (B_T only): lanes 0..SG/2 hold value columns, lanes SG/2..SG the gate
// columns (W rows gate_w further on) of the same output columns; out = value * gelu(gate).
override GEGLU: bool = false;
// x and w bound as vec4 arrays (rows 16-byte aligned; the launcher checks): one read
// covers 4 k, the chunk is 4*SG deep (the generated code is the only user).
override VEC4: bool = false;
// Bias per output row (bias[m]) rather than per column: a 1x1 convolution's channels
// (the generated BIAS code is the only user).
override BIAS_ROWS: bool = false;
const ROWS: u32 = ${ROWS}u;
// vec4s of output columns per lane (4 * HV columns).
const HV: u32 = ${HV}u;

// Element reads xs(i) / ws(i) (and, in the VEC4 layout, the aligned vec4 reads x4 / w4).
${ACCESS}
// One vec4 of bias for columns n..n+3 (clamped to the last column), gate half at gb.
fn bias4(n: u32, nl: u32, gb: u32) -> vec4<f32> {
    let bl = min(vec4<u32>(n, n + 1u, n + 2u, n + 3u), vec4<u32>(nl)) + vec4<u32>(gb);
    return vec4<f32>(bias[p.bias_shift + bl.x], bias[p.bias_shift + bl.y],
                     bias[p.bias_shift + bl.z], bias[p.bias_shift + bl.w]);
}

// W row offsets (B_T) or columns of the 4 columns from n, clamped to the last one.
fn wcols(n: u32, nl: u32, gw: u32) -> vec4<u32> {
    let c = min(vec4<u32>(n, n + 1u, n + 2u, n + 3u), vec4<u32>(nl));
    if (B_T) { return c * p.ldw + vec4<u32>(gw); }
    return c;
}

// One vec4 of W: columns c (4 of them, already clamped) at depth k.
fn wvec(base: u32, k: u32, c: vec4<u32>) -> vec4<f32> {
    if (B_T) {
        let o = base + k;
        return vec4<f32>(ws(o + c.x), ws(o + c.y), ws(o + c.z), ws(o + c.w));
    }
    let o = base + k * p.ldw;
    return vec4<f32>(ws(o + c.x), ws(o + c.y), ws(o + c.z), ws(o + c.w));
}

// Offset of row m0 + r of x (clamped to the last row).
fn xrow(xbase: u32, m0: u32, r: u32) -> u32 {
    return xbase + min(m0 + r, p.m - 1u) * p.ldx;
}

// Writes row m0 + r, columns n0..n0+3 (those inside the matrix) of out, if `live`.
fn store_row(obase: u32, m0: u32, r: u32, n0: u32, v: vec4<f32>, live: bool) {
    let m = m0 + r;
    if (m >= p.m || !live) { return; }
    for (var j = 0u; j < 4u; j++) {
        let n = n0 + j;
        if (n < p.n) {
            let o = obase + m * p.ldo + n;
            var y = v[j];
            if (HAS_RES) { y += f32(res[p.res_shift + o]); }
            out[p.out_shift + o] = at(y);
        }
    }
}

// The per-row code (LOAD_A, STEPS, TAIL, STORE) is written out row by row by the
// launcher: lavapipe's compiler takes minutes on loops over local arrays of this size.
@compute @workgroup_size(SG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lane: u32) {
    let tile = wid.x + wid.y * nwg.x;
    if (tile >= p.tiles) { return; }
    let tn = tile % p.n_tiles;
    let tm = (tile / p.n_tiles) % p.m_tiles;
    let b = tile / (p.n_tiles * p.m_tiles);
    let m0 = tm * ROWS;
    // Lane l owns HV groups of 4 output columns: n0 + 4h .. n0 + 4h + 3.
    var n0 = (tn * SG + lane) * (4u * HV);
    // GEGLU: the gate half's offsets into W and bias (0 for the value half).
    var gw = 0u;
    var gb = 0u;
    if (GEGLU) {
        let half = SG / 2u;
        n0 = (tn * half + lane % half) * (4u * HV);
        if (lane >= half) {
            gw = p.gate_w;
            gb = p.gate_b;
        }
    }
    let nl = p.n - 1u;
    let wbase = p.w_shift + b * p.sw;
    let xbase = p.x_shift + b * p.sx;
    // Column h of 4 (clamped), and for B_T its W row offsets: c<h>; x row offsets xr<r>.
${COLS}
    var acc: array<vec4<f32>, ROWS * HV>;
    var a: array<${AV}, ROWS>;
    let kfull = p.k - p.k % ${KCHUNK};
    for (var k0 = 0u; k0 < kfull; k0 += ${KCHUNK}) {
${LOAD_A}
${STEPS}
    }
    for (var k = kfull; k < p.k; k++) {
${TAIL}
    }
    if (HAS_BIAS) {
${BIAS}
    }
    let obase = b * p.so;
    let lo = !GEGLU || lane < SG / 2u;
    var g: vec4<f32>;
${STORE}
}
