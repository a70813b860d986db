//! The cooperative-matrix GEMM kernels' geometry and generated code
//! (`shaders/matmul_coop.wgsl`, `shaders/conv2d_coop.wgsl`): how many subgroups a
//! workgroup has, which S x S accumulator tiles each owns, and the unrolled
//! load / multiply-add / epilogue statements (cooperative matrices are opaque values,
//! so each accumulator is its own variable).

use crate::gpu::KernelSpec;

/// The compile-time shape of one cooperative GEMM workgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoopGeometry {
    /// Cooperative tile edge (8 or 16).
    pub s: u32,
    /// Lanes per subgroup (fixed on the device).
    pub sg: u32,
    /// Subgroups down and across the output tile.
    pub sgm: u32,
    pub sgn: u32,
    /// Accumulator tiles per subgroup, down and across.
    pub fm: u32,
    pub fn_: u32,
    /// k staged per step.
    pub bk: u32,
}

impl CoopGeometry {
    /// 128 x 128 output tiles of 256 invocations for 16x16 matrices (8 subgroups of 32
    /// lanes as 4 x 2, each 32 x 64 = 2 x 4 tiles; or 4 of 64 lanes as 2 x 2, each
    /// 64 x 64); 64 x 64 tiles of 128 invocations for 8x8 (Metal's simdgroups of 32:
    /// 4 subgroups as 2 x 2, each 32 x 32 = 4 x 4 tiles). None for other lane counts.
    pub fn for_device(s: u32, sg: u32) -> Option<CoopGeometry> {
        let (edge, invocations): (u32, u32) = match s {
            16 => (128, 256),
            8 => (64, 128),
            _ => return None,
        };
        if sg == 0 || !sg.is_power_of_two() || !invocations.is_multiple_of(sg) {
            return None;
        }
        let nsg = invocations / sg;
        // Subgroups as square as possible, more of them down.
        let sgn = match nsg {
            1 => 1,
            2 => 1,
            4 => 2,
            8 => 2,
            16 => 4,
            _ => return None,
        };
        let sgm = nsg / sgn;
        let (fm, fn_) = (edge / s / sgm, edge / s / sgn);
        if fm == 0 || fn_ == 0 || !fn_.is_multiple_of(2) || !(s * s).is_multiple_of(sg) {
            return None;
        }
        Some(CoopGeometry {
            s,
            sg,
            sgm,
            sgn,
            fm,
            fn_,
            bk: 32,
        })
    }

    pub fn bm(self) -> u32 {
        self.sgm * self.fm * self.s
    }

    pub fn bn(self) -> u32 {
        self.sgn * self.fn_ * self.s
    }

    pub fn invocations(self) -> u32 {
        self.sgm * self.sgn * self.sg
    }

    /// The defines every cooperative GEMM template takes.
    pub(crate) fn apply(self, spec: KernelSpec, geglu: bool) -> KernelSpec {
        let lds = self.bk + 8;
        let stage = if geglu {
            2 * self.s * self.s
        } else {
            self.s * self.s
        };
        let nsg = self.sgm * self.sgn;
        // Whole multiples of the workgroup so the zero fill needs no bounds check.
        let stage_all = (stage * nsg).div_ceil(self.invocations()) * self.invocations();
        spec.coop()
            .define("CM", format!("coop_mat{0}x{0}", self.s))
            .define("S", self.s.to_string())
            .define("SG", self.sg.to_string())
            .define("SGN", self.sgn.to_string())
            .define("FM", self.fm.to_string())
            .define("FN", self.fn_.to_string())
            .define("BM", self.bm().to_string())
            .define("BN", self.bn().to_string())
            .define("BK", self.bk.to_string())
            .define("WGS", self.invocations().to_string())
            .define("STAGE", stage.to_string())
            .define("STAGE_ALL", stage_all.to_string())
            .define("XS", (self.bm() * lds).to_string())
            .define("WS", (self.bn() * lds).to_string())
    }

    /// Reads the geometry back from a spec's defines (inside a generator).
    fn of(spec: &KernelSpec) -> CoopGeometry {
        let g = |k: &str| spec.get(k).and_then(|v| v.parse().ok()).unwrap_or(1);
        CoopGeometry {
            s: g("S"),
            sg: g("SG"),
            sgm: g("BM") / (g("FM") * g("S")),
            sgn: g("SGN"),
            fm: g("FM"),
            fn_: g("FN"),
            bk: g("BK"),
        }
    }
}

/// Every geometry the kernels are validated in: 16x16 tiles with 32 (NVIDIA) and 64
/// (AMD wave64) lanes, 8x8 with 32 (Apple) and 16 lanes.
pub fn geometries() -> Vec<CoopGeometry> {
    [(16, 32), (16, 64), (8, 32), (8, 16)]
        .into_iter()
        .filter_map(|(s, sg)| CoopGeometry::for_device(s, sg))
        .collect()
}

/// Column offset (in elements of the staged W / output tile) of accumulator column `j`
/// of subgroup column `sn` (a WGSL expression). With GEGLU the first half of a
/// subgroup's columns are value tiles and the second half the gates of the same outputs.
fn col_expr(g: CoopGeometry, j: u32, geglu: bool) -> String {
    let s = g.s;
    if !geglu {
        return format!("(sn * {}u + {j}u) * {s}u", g.fn_);
    }
    let half = g.fn_ / 2;
    if j < half {
        format!("(sn * {half}u + {j}u) * {s}u")
    } else {
        format!("BN / 2u + (sn * {half}u + {}u) * {s}u", j - half)
    }
}

/// ACC_INIT, MMA and EPILOGUE for `shaders/matmul_coop.wgsl` (and, with `conv`, for
/// `shaders/conv2d_coop.wgsl`, whose epilogue function is `store_conv`).
fn gemm_code(spec: &KernelSpec, conv: bool) -> Vec<(&'static str, String)> {
    let g = CoopGeometry::of(spec);
    let geglu = !conv && spec.constant_of("GEGLU").unwrap_or(0.0) != 0.0;
    let mut init = String::new();
    let mut mma = String::new();
    let mut epi = String::new();
    for i in 0..g.fm {
        for j in 0..g.fn_ {
            init += &format!("    var c_{i}_{j} = coopLoadT<MC>(&stage[st], S);\n");
        }
    }
    for i in 0..g.fm {
        mma += &format!(
            "            let a_{i} = coopLoadT<MA>(&xs[(rows + {i}u * S) * LDS + kk], LDS);\n"
        );
    }
    for j in 0..g.fn_ {
        mma += &format!(
            "            let b_{j} = coopLoad<MB>(&ws[({}) * LDS + kk], LDS);\n",
            col_expr(g, j, geglu)
        );
    }
    for i in 0..g.fm {
        for j in 0..g.fn_ {
            mma += &format!("            c_{i}_{j} = coopMultiplyAdd(a_{i}, b_{j}, c_{i}_{j});\n");
        }
    }
    // Matmul: A rows are output rows m, B columns output columns n. Conv: A rows are
    // output channels, B columns output pixels.
    let (row0, col0, store) = if conv {
        ("co0", "n0", "store_conv")
    } else {
        ("m0", "n0", if geglu { "store_geglu" } else { "store_tile" })
    };
    let tail = if conv { "" } else { ", obase" };
    let cols = if geglu { g.fn_ / 2 } else { g.fn_ };
    for i in 0..g.fm {
        for j in 0..cols {
            epi += &format!("    coopStoreT(c_{i}_{j}, &stage[st], S);\n");
            if geglu {
                epi += &format!(
                    "    coopStoreT(c_{i}_{}, &stage[st + S * S], S);\n",
                    j + g.fn_ / 2
                );
            }
            epi += "    workgroupBarrier();\n";
            epi += &format!(
                "    {store}(st, lane, {row0} + rows + {i}u * S, {col0} + {}{tail});\n",
                col_expr(g, j, geglu)
            );
            epi += "    workgroupBarrier();\n";
        }
    }
    vec![("ACC_INIT", init), ("MMA", mma), ("EPILOGUE", epi)]
}

/// [`KernelSpec::generator`] for `shaders/matmul_coop.wgsl`.
pub(super) fn matmul_coop(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    gemm_code(spec, false)
}

/// [`KernelSpec::generator`] for `shaders/conv2d_coop.wgsl`.
pub(super) fn conv2d_coop(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let mut v = gemm_code(spec, true);
    v.push(super::codegen::out_convert(spec));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometries_cover_their_tiles() {
        for (s, sg, edge) in [(16, 32, 128), (16, 64, 128), (8, 32, 64), (8, 16, 64)] {
            let g = CoopGeometry::for_device(s, sg).expect("geometry");
            assert_eq!((g.bm(), g.bn()), (edge, edge), "{g:?}");
            assert_eq!(g.sgm * g.sgn * g.sg, g.invocations());
            assert_eq!((g.s * g.s) % g.sg, 0);
        }
        assert!(CoopGeometry::for_device(16, 48).is_none());
        assert!(CoopGeometry::for_device(12, 32).is_none());
    }
}
