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

/// The subgroup matmul kernel (`matmul.wgsl`) for its `SG` lanes: LOAD_A, STEPS, TAIL,
/// BIAS and STORE (with the GEGLU epilogue when the constant is set).
pub(super) fn matmul_subgroup(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let sg = spec.constant_of("SG").unwrap_or(8.0) as u32;
    let n_rows: usize = spec.get("ROWS").and_then(|t| t.parse().ok()).unwrap_or(24);
    let rows = |line: &str| per_row(n_rows, "        ", line);
    let mut steps = String::new();
    // Row-major walk: the chunk's SG W vectors first, then each row's SG steps in a row,
    // so one accumulator stays in registers for SG multiply-adds (lavapipe spills the
    // tile; column-major order stored every accumulator once per k, ~30% slower).
    for j in 0..sg {
        steps += &format!("        let wv{j} = wvec(wbase, k0 + {j}u, c);\n");
    }
    for r in 0..n_rows {
        for j in 0..sg {
            steps += &format!("        acc[{r}] += subgroupBroadcast(a[{r}], {j}u) * wv{j};\n");
        }
    }
    let store = if on(spec, "GEGLU") {
        // The value lanes take the gate accumulators of lane + SG/2.
        rows(
            "g = subgroupShuffleXor(acc[#], SG / 2u); store_row(obase, m0, #u, n0, acc[#] * gelu4(g), lo);",
        )
    } else {
        rows("store_row(obase, m0, #u, n0, acc[#], lo);")
    };
    vec![
        (
            "LOAD_A",
            rows("a[#] = f32(x[xrow(xbase, m0, #u) + k0 + lane]);"),
        ),
        ("STEPS", steps),
        (
            "TAIL",
            rows("acc[#] += f32(x[xrow(xbase, m0, #u) + k]) * wv;"),
        ),
        ("BIAS", rows("acc[#] += add;")),
        ("STORE", store),
    ]
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
