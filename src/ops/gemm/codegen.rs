//! Generated straight-line code for the GEMM kernels ([`KernelSpec::generator`]
//! functions, run on a pipeline-cache miss only). lavapipe's compiler spills and takes
//! minutes on loops over local arrays of register-tile size, and `subgroupBroadcast`
//! wants a constant lane, so every row and lane is written out here.

use crate::gpu::KernelSpec;

fn on(spec: &KernelSpec, constant: &str) -> bool {
    spec.constant_of(constant).unwrap_or(0.0) != 0.0
}

/// `line` once per row `0..n` (`#` becomes the row), indented.
fn per_row(n: usize, indent: &str, line: &str) -> String {
    (0..n)
        .map(|r| format!("{indent}{}\n", line.replace('#', &r.to_string())))
        .collect()
}

/// The subgroup matmul kernel (`matmul.wgsl`) for its `SG` lanes, `ROWS` rows and `HV`
/// vec4s of columns per lane: the storage layout (ACCESS, XV, WV, AV, KCHUNK), COLS,
/// LOAD_A, STEPS, TAIL, BIAS and STORE (with the GEGLU epilogue when the constant is set).
///
/// With `VEC4` (rows of x and W 16-byte aligned, see `matmul::vec4_ok`) x and w are
/// bound as vec4 arrays: each lane reads 4 consecutive k of its rows per load and the
/// chunk is 4*SG deep. lavapipe turns every per-lane storage read into a loop over the
/// lanes, so one vec4 read costs little more than one scalar read: this cuts the
/// reads per multiply-add by 4 for x and W alike.
pub(super) fn matmul_subgroup(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    const C: [&str; 4] = ["x", "y", "z", "w"];
    let sg = spec.constant_of("SG").unwrap_or(8.0) as usize;
    let vec4 = on(spec, "VEC4");
    let b_t = on(spec, "B_T");
    let n_rows: usize = spec.get("ROWS").and_then(|t| t.parse().ok()).unwrap_or(24);
    let hv: usize = spec.get("HV").and_then(|t| t.parse().ok()).unwrap_or(1);
    let ind = "        ";
    let mut cols = String::new();
    for h in 0..hv {
        cols += &format!("    let c{h} = wcols(n0 + {}u, nl, gw);\n", 4 * h);
        if vec4 && !b_t {
            cols += &format!("    let nv{h} = min(n0 + {}u, max(p.n, 4u) - 4u);\n", 4 * h);
        }
    }
    // Row offsets of x, once (they do not change along K).
    for r in 0..n_rows {
        cols += &format!("    let xr{r} = xrow(xbase, m0, {r}u);\n");
    }
    let mut steps = String::new();
    // Row-major walk: the chunk's W vectors first, then each row's whole chunk in a row,
    // so its accumulators stay in registers for the chunk (lavapipe spills the tile;
    // column-major order stored every accumulator once per k, ~30% slower).
    if vec4 {
        for q in 0..sg {
            if b_t {
                // Each column's vec4 along k, regrouped per k (free: vec4 components are
                // separate registers on a SIMD-per-lane driver).
                for j in 0..4 * hv {
                    steps += &format!(
                        "{ind}let w{q}_{j} = w4(wbase + c{}.{} + k0 + {}u);\n",
                        j / 4,
                        C[j % 4],
                        4 * q
                    );
                }
                for h in 0..hv {
                    for (i, ci) in C.iter().enumerate() {
                        let parts: Vec<String> =
                            (0..4).map(|j| format!("w{q}_{}.{ci}", 4 * h + j)).collect();
                        steps += &format!(
                            "{ind}let wv{q}_{h}_{i} = vec4<f32>({});\n",
                            parts.join(", ")
                        );
                    }
                }
            } else {
                for h in 0..hv {
                    for i in 0..4 {
                        steps += &format!(
                            "{ind}let wv{q}_{h}_{i} = w4(wbase + (k0 + {}u) * p.ldw + nv{h});\n",
                            4 * q + i
                        );
                    }
                }
            }
        }
        for r in 0..n_rows {
            for q in 0..sg {
                steps += &format!("{ind}let s{r}_{q} = subgroupBroadcast(a[{r}], {q}u);\n");
                for (i, ci) in C.iter().enumerate() {
                    for h in 0..hv {
                        steps += &format!(
                            "{ind}acc[{}] += s{r}_{q}.{ci} * wv{q}_{h}_{i};\n",
                            r * hv + h
                        );
                    }
                }
            }
        }
    } else {
        for j in 0..sg {
            for h in 0..hv {
                steps += &format!("{ind}let wv{j}_{h} = wvec(wbase, k0 + {j}u, c{h});\n");
            }
        }
        for r in 0..n_rows {
            for j in 0..sg {
                steps += &format!("{ind}let s{r}_{j} = subgroupBroadcast(a[{r}], {j}u);\n");
                for h in 0..hv {
                    steps += &format!("{ind}acc[{}] += s{r}_{j} * wv{j}_{h};\n", r * hv + h);
                }
            }
        }
    }
    let mut tail = String::new();
    let mut bias = String::new();
    let mut store = String::new();
    let bias_rows = on(spec, "BIAS_ROWS");
    for h in 0..hv {
        tail += &format!("{ind}let tw{h} = wvec(wbase, k, c{h});\n");
        if !bias_rows {
            bias += &format!("{ind}let add{h} = bias4(n0 + {}u, nl, gb);\n", 4 * h);
        }
    }
    for r in 0..n_rows {
        tail += &format!("{ind}let t{r} = xs(xr{r} + k);\n");
        if bias_rows {
            bias += &format!(
                "{ind}let add{r} = vec4<f32>(bias[p.bias_shift + min(m0 + {r}u, p.m - 1u)]);\n"
            );
        }
        for h in 0..hv {
            let i = r * hv + h;
            tail += &format!("{ind}acc[{i}] += t{r} * tw{h};\n");
            let add = if bias_rows { r } else { h };
            bias += &format!("{ind}acc[{i}] += add{add};\n");
            store += &if on(spec, "GEGLU") {
                // The value lanes take the gate accumulators of lane + SG/2.
                format!(
                    "    g = subgroupShuffleXor(acc[{i}], SG / 2u); store_row(obase, m0, {r}u, n0 + {}u, acc[{i}] * gelu4(g), lo);\n",
                    4 * h
                )
            } else {
                format!(
                    "    store_row(obase, m0, {r}u, n0 + {}u, acc[{i}], lo);\n",
                    4 * h
                )
            };
        }
    }
    let rows = |line: &str| per_row(n_rows, ind, line);
    let (xv, wv, av, chunk, load_a, access) = if vec4 {
        (
            "vec4<AT>",
            "vec4<WT>",
            "vec4<f32>",
            "(4u * SG)",
            rows("a[#] = x4(xr# + k0 + 4u * lane);"),
            "fn xs(i: u32) -> f32 { return f32(x[i >> 2u][i & 3u]); }
fn ws(i: u32) -> f32 { return f32(w[i >> 2u][i & 3u]); }
fn x4(i: u32) -> vec4<f32> { return vec4<f32>(x[i >> 2u]); }
fn w4(i: u32) -> vec4<f32> { return vec4<f32>(w[i >> 2u]); }",
        )
    } else {
        (
            "AT",
            "WT",
            "f32",
            "SG",
            rows("a[#] = xs(xr# + k0 + lane);"),
            "fn xs(i: u32) -> f32 { return f32(x[i]); }
fn ws(i: u32) -> f32 { return f32(w[i]); }",
        )
    };
    [
        ("XV", xv.to_string()),
        ("WV", wv.to_string()),
        ("ACCESS", access.to_string()),
        ("AV", av.to_string()),
        ("KCHUNK", chunk.to_string()),
        ("COLS", cols),
        ("LOAD_A", load_a),
        ("STEPS", steps),
        ("TAIL", tail),
        ("BIAS", bias),
        ("STORE", store),
    ]
    .to_vec()
}

/// The 8x8-per-invocation register tile of `matmul_tiled128.wgsl`.
pub(super) fn matmul_tiled128(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    if on(spec, "GEGLU") {
        reg_tile("store4(obase, ", Some("store_geglu4(obase, "))
    } else {
        reg_tile("store4(obase, ", None)
    }
}

/// The subgroup conv2d kernel (`conv2d_subgroup.wgsl`) for its `TM` rows and `SG` lanes.
pub(super) fn conv2d_subgroup(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let sg = spec.constant_of("SG").unwrap_or(8.0) as u32;
    let tm: usize = spec.get("TM").and_then(|t| t.parse().ok()).unwrap_or(24);
    let rows = |line: &str| per_row(tm, "            ", line);
    let mut steps = String::new();
    // Row-major walk, as in `matmul_subgroup`: the block's SG input vectors first.
    for c in 0..sg {
        steps += &format!("            let xv{c} = xload(cin0 + {c}u, off, ok);\n");
    }
    for r in 0..tm {
        for c in 0..sg {
            steps +=
                &format!("            acc[{r}] += subgroupBroadcast(wl[{r}], {c}u) * xv{c};\n");
        }
    }
    let mut v = vec![
        (
            "W_LOAD",
            rows("wl[#] = select(0.0, f32(wt[wt0 + min(co0 + #u, p.cout - 1u) * p.w_row]), c_ok);"),
        ),
        ("STEPS", steps),
        ("STORE", rows("store(co0 + #u, acc[#], live, obase, howo);")),
    ];
    v.push(out_convert(spec));
    v
}

/// The 3x3 stride-1 subgroup conv kernel (`conv3x3_subgroup.wgsl`) for its `TM` rows
/// and `SG` lanes: W_LOAD (each row's three weights of this lane's channel), STEPS (per
/// block channel: the four input vec4s and the three tap views, then every row's
/// broadcasts and multiply-adds) and STORE.
pub(super) fn conv3x3_subgroup(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let sg = spec.constant_of("SG").unwrap_or(8.0) as usize;
    let tm: usize = spec.get("TM").and_then(|t| t.parse().ok()).unwrap_or(32);
    let ind = "            ";
    let mut w_load = String::new();
    let wind = "        ";
    for r in 0..tm {
        w_load += &format!(
            "{wind}let wr{r} = wa + min(co0 + {r}u, p.cout - 1u) * p.w_row;\n\
             {wind}let wa{r} = wv(wr{r});\n{wind}let wb{r} = wv(wr{r} + 4u);\n{wind}let wc{r} = wv(wr{r} + 8u);\n"
        );
        // e(i): element i of the 12 read; tap t is element ws + t.
        let e = |i: usize| {
            format!(
                "w{}{r}.{}",
                ["a", "b", "c"][i / 4],
                ["x", "y", "z", "w"][i % 4]
            )
        };
        for ky in 0..3 {
            let taps: Vec<String> = (0..3)
                .map(|kx| {
                    let t = 3 * ky + kx;
                    format!(
                        "at_shift({}, {}, {}, {}, ws)",
                        e(t),
                        e(t + 1),
                        e(t + 2),
                        e(t + 3)
                    )
                })
                .collect();
            w_load += &format!(
                "{wind}wk{ky}[{r}] = select(vec3<f32>(0.0), vec3<f32>({}), c_ok);\n",
                taps.join(", ")
            );
        }
    }
    let z = "vec4<f32>(0.0)";
    let pv: usize = spec.get("PV").and_then(|t| t.parse().ok()).unwrap_or(2);
    let mut steps = String::new();
    for c in 0..sg {
        // q<c>_<h>: pixels 4h .. 4h+3 of input row iy; hl/hr the halo columns.
        steps += &format!(
            "{ind}let xo{c} = xrow + {c} * plane;\n\
             {ind}let ok{c} = row_ok && cin0 + {c}u < p.cin;\n\
             {ind}let hl{c} = select(0.0, xv(xo{c}).w, ok{c} && left);\n\
             {ind}let hr{c} = select(0.0, xv(xo{c} + {}).x, ok{c} && right);\n",
            4 * (pv + 1)
        );
        for h in 0..pv {
            steps += &format!(
                "{ind}let q{c}_{h} = select({z}, xv(xo{c} + {}), ok{c});\n",
                4 * (h + 1)
            );
        }
        // Tap kx = 0 reads one pixel left (l<c>_<h>), kx = 2 one right (r<c>_<h>).
        for h in 0..pv {
            let prev = if h == 0 {
                format!("hl{c}")
            } else {
                format!("q{c}_{}.w", h - 1)
            };
            let next = if h + 1 == pv {
                format!("hr{c}")
            } else {
                format!("q{c}_{}.x", h + 1)
            };
            steps += &format!(
                "{ind}let l{c}_{h} = vec4<f32>({prev}, q{c}_{h}.xyz);\n\
                 {ind}let r{c}_{h} = vec4<f32>(q{c}_{h}.yzw, {next});\n"
            );
        }
    }
    for r in 0..tm {
        steps += &format!(
            "{ind}let kr{r} = select(select(wk0[{r}], wk1[{r}], ky == 1u), wk2[{r}], ky == 2u);\n"
        );
        for c in 0..sg {
            steps += &format!("{ind}let s{r}_{c} = subgroupBroadcast(kr{r}, {c}u);\n");
            // Taps kx = 0, 1, 2: weight component x, y, z times that tap's view.
            for (comp, view) in [("x", "l"), ("y", "q"), ("z", "r")] {
                for h in 0..pv {
                    steps += &format!(
                        "{ind}acc[{}] += s{r}_{c}.{comp} * {view}{c}_{h};\n",
                        pv * r + h
                    );
                }
            }
        }
    }
    let mut store = String::new();
    for r in 0..tm {
        for h in 0..pv {
            store += &format!(
                "    store4(co0 + {r}u, acc[{}], live, obase + {}u, howo);\n",
                pv * r + h,
                4 * h
            );
        }
    }
    vec![
        ("W_LOAD", w_load),
        ("STEPS", steps),
        ("STORE", store),
        out_convert(spec),
    ]
}

/// `conv2d.wgsl` (64x64 tiles): only the output conversion.
pub(super) fn conv2d_tiled(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    vec![out_convert(spec)]
}

/// `conv2d_tiled128.wgsl`: the register tile and the output conversion.
pub(super) fn conv2d_tiled128(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let mut v = reg_tile("store4(", None);
    v.push(out_convert(spec));
    v
}

/// OT_CVT: how a conv kernel converts an f32 result for its output storage `OT`
/// (`at`, saturating, for activations; `f32` for exact partial sums).
pub(super) fn out_convert(spec: &KernelSpec) -> (&'static str, String) {
    let cvt = if spec.get("OT") == Some("f32") {
        "f32"
    } else {
        "at"
    };
    ("OT_CVT", cvt.to_string())
}

/// DECL, FMA and STORE of an 8x8-per-invocation register tile: 16 named vec4
/// accumulators `c<r>_<h>` (row r of 8, column half h of 2), so no private array is
/// indexed (quick to compile everywhere). FMA expects vec4s a0, a1 (rows 0-3, 4-7) and
/// b0, b1 (column halves); STORE calls `<store>row, col, value)` with rows
/// `mr + {0..3, 64..67}` and columns `nc + {0, 64}`, or with `geglu`,
/// `<geglu>row, nc, value, gate)` (the second column half holds the gates).
fn reg_tile(store_call: &str, geglu: Option<&str>) -> Vec<(&'static str, String)> {
    let mut decl = String::new();
    let mut fma = String::new();
    let mut store = String::new();
    for r in 0..8 {
        let comp = ["x", "y", "z", "w"][r % 4];
        let row = (r / 4) * 64 + r % 4;
        for h in 0..2 {
            decl += &format!("    var c{r}_{h} = vec4<f32>();\n");
            fma += &format!("            c{r}_{h} += a{}.{comp} * b{h};\n", r / 4);
            if geglu.is_none() {
                store += &format!(
                    "    {store_call}mr + {row}u, nc + {}u, c{r}_{h});\n",
                    h * 64
                );
            }
        }
        if let Some(g) = geglu {
            store += &format!("    {g}mr + {row}u, nc, c{r}_0, c{r}_1);\n");
        }
    }
    vec![("DECL", decl), ("FMA", fma), ("STORE", store)]
}
