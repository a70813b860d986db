//! The device's practical peaks, measured with `shaders/probe_fma.wgsl` and
//! `shaders/probe.wgsl`, so every kernel can be reported as a fraction of them.
//!
//! A peak must never under-read (a kernel above 100% means the probe, not the kernel, is
//! wrong), so each probe tries several layouts and keeps the best, and each layout keeps
//! its fastest run (noise on a shared machine only ever slows a run down):
//!
//! - FMA: 4, 8 and 16 independent vec4 multiply-add chains per invocation (enough
//!   independent work to hide the FMA latency on any driver, without spilling), written
//!   as `a * m + c` and as `fma(a, m, c)` (fused on some drivers only), at workgroup
//!   sizes 64 and 256. `m` and `c` come from the uniform block and the result is stored
//!   only when it equals a value it never reaches, so the compiler can neither fold nor
//!   drop a chain. Every layout does the same FLOP per dispatch, enough (about 2 GFLOP
//!   on a CPU driver, 137 on a GPU) that the dispatch cost is noise.
//! - Copy: a shader copying 1 or 4 vec4s per invocation at workgroup sizes 64 and 256,
//!   and the device's own buffer-to-buffer copy (a `memcpy` on CPU drivers, which
//!   concat uses), over a buffer far larger than any cache (64 MiB each way; 32 MiB
//!   with `--quick`) and over one that fits a CPU's last-level cache (4 MiB each way,
//!   16 copies per submit to amortise the launch), since small kernels run from cache.
//!
//! The FLOP per round: 8 per vec4 chain (4 lanes x multiply + add).

use std::time::Duration;

use serde::Serialize;

use super::time_runs;
use crate::error::Result;
use crate::gpu::{DType, Gpu, KernelSpec, Recorder, Tensor};

const FMA_SRC: &str = include_str!("../../shaders/probe_fma.wgsl");
const SRC: &str = include_str!("../../shaders/probe.wgsl");
const COOP_SRC: &str = include_str!("../../shaders/probe_coop.wgsl");
/// Accumulator chains per subgroup and workgroup sizes the cooperative probe tries.
const COOP_CHAINS: [u32; 3] = [2, 4, 8];
const COOP_WGS: [u32; 2] = [128, 256];

crate::shader_params! {
    struct Params {
        n: u32,
        iters: u32,
        src_shift: u32,
        out_shift: u32,
        m: f32,
        c: f32,
        never: f32,
        pad: u32,
    }
}

/// Accumulator layouts, update forms and workgroup sizes the FMA probe tries.
const CHAINS: [u32; 3] = [4, 8, 16];
const STEPS: [(&str, &str); 2] = [("mul+add", "a * m + c"), ("fma", "fma(a, m, c)")];
const WGS: [u32; 2] = [64, 256];
/// vec4s per invocation the copy probe tries.
const PERS: [u32; 2] = [1, 4];

/// Measured peaks of this device.
#[derive(Debug, Clone, Serialize)]
pub struct Peaks {
    /// f32 multiply-add throughput, GFLOP/s (2 FLOP per multiply-add): the best layout.
    pub fma_gflops: f64,
    /// The layout that reached it, e.g. `8 chains, mul+add, wg 64`.
    pub fma_layout: String,
    /// Device-memory copy bandwidth, GB/s (bytes read + written): the best layout.
    pub copy_gbps: f64,
    /// The layout that reached it, e.g. `64 MiB, 4 per invocation, wg 256`.
    pub copy_layout: String,
    /// Copy bandwidth over the large (uncached) buffer alone.
    pub copy_dram_gbps: f64,
    /// The best shader copy (what a memory-bound kernel could reach; the buffer copy
    /// may be faster, e.g. a CPU driver's memcpy).
    pub shader_copy_gbps: f64,
    /// f16 x f16 -> f32 cooperative-matrix throughput, GFLOP/s, where the device runs
    /// cooperative matrices (`WGSD_COOPMAT=on`); cooperative kernels are reported
    /// against it.
    pub coop_gflops: Option<f64>,
    /// The layout that reached it, e.g. `16x16, 4 chains, wg 256`.
    pub coop_layout: Option<String>,
}

fn fma_code(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let n: u32 = spec.get("CHAINS").and_then(|v| v.parse().ok()).unwrap_or(8);
    let decl = (0..n)
        .map(|j| format!("    var a{j} = seed + vec4<f32>({}.0 * 0.01);\n", j))
        .collect();
    let body = (0..n)
        .map(|j| format!("        a{j} = step(a{j}, m, c);\n"))
        .collect();
    let sum = (0..n)
        .map(|j| format!("a{j}"))
        .collect::<Vec<_>>()
        .join(" + ");
    vec![("DECL", decl), ("BODY", body), ("SUM", sum)]
}

fn fma_spec(chains: u32, step: &str, wg: u32) -> KernelSpec {
    KernelSpec::new("probe_fma", FMA_SRC, "fma_peak")
        .params::<Params>()
        .define("CHAINS", chains.to_string())
        .define("STEP", step)
        .constant("WG", f64::from(wg))
        .generator(fma_code)
}

fn coop_code(spec: &KernelSpec) -> Vec<(&'static str, String)> {
    let n: u32 = spec.get("CHAINS").and_then(|v| v.parse().ok()).unwrap_or(4);
    let decl = (0..n)
        .map(|j| format!("    var c{j} = coopLoadT<MC>(&zs[0], S);\n"))
        .collect();
    let body = (0..n)
        .map(|j| format!("        c{j} = coopMultiplyAdd(a, b, c{j});\n"))
        .collect();
    let store = (0..n)
        .map(|j| format!("    coopStoreT(c{j}, &out[base + {j}u * S * S], S);\n"))
        .collect();
    vec![("DECL", decl), ("BODY", body), ("STORE", store)]
}

/// The cooperative probe for `s` x `s` tiles, `chains` accumulators per subgroup and
/// `wg` invocations.
fn coop_spec(s: u32, chains: u32, wg: u32) -> KernelSpec {
    KernelSpec::new("probe_coop", COOP_SRC, "coop_peak")
        .params::<Params>()
        .coop()
        .define("CM", format!("coop_mat{s}x{s}"))
        .define("S", s.to_string())
        .define("S2", (s * s).to_string())
        .define("WGS", wg.to_string())
        .define("CHAINS", chains.to_string())
        .generator(coop_code)
}

/// The cooperative-matrix peak (GFLOP/s and layout), or `None` where the device does
/// not run cooperative matrices.
pub fn coop_peak(gpu: &Gpu, repeats: usize) -> Result<Option<(f64, String)>> {
    let Some(s) = gpu.caps.coop.tile else {
        return Ok(None);
    };
    let sg = gpu.caps.subgroup_size.max(1);
    let groups: u32 = 4096;
    let rounds: u32 = 4096;
    let dummy = Tensor::empty(gpu, &[4], DType::F32)?;
    let (mut best_g, mut layout) = (0.0, String::new());
    for wg in COOP_WGS {
        let nsg = (wg / sg).max(1);
        let out = Tensor::empty(gpu, &[(8 * nsg * s * s) as usize], DType::F32)?;
        for chains in COOP_CHAINS {
            let k = gpu.kernel(&coop_spec(s, chains, wg))?;
            let iters = rounds / chains;
            let t = best(gpu, repeats, |rec| {
                let grid = rec.grid(groups);
                let bind = [dummy.whole(gpu)?, out.whole(gpu)?];
                rec.dispatch(&k, &params(groups, iters), &bind, grid)
            })?;
            let flop = f64::from(groups)
                * f64::from(nsg)
                * f64::from(chains)
                * f64::from(iters)
                * 2.0
                * f64::from(s).powi(3);
            let g = flop / t.as_secs_f64() / 1e9;
            if g > best_g {
                best_g = g;
                layout = format!("{s}x{s}, {chains} chains, wg {wg}");
            }
        }
    }
    Ok(Some((best_g, layout)))
}

fn copy_spec(per: u32, wg: u32) -> KernelSpec {
    KernelSpec::new("probe", SRC, "copy")
        .params::<Params>()
        .constant("WG", f64::from(wg))
        .constant("PER", f64::from(per))
}

fn noop_spec() -> KernelSpec {
    KernelSpec::new("probe", SRC, "noop").params::<Params>()
}

/// The fastest of `repeats` timed runs (after one warm-up).
fn best(
    gpu: &Gpu,
    repeats: usize,
    record: impl FnMut(&mut Recorder) -> Result<()>,
) -> Result<Duration> {
    Ok(time_runs(gpu, repeats, record)?[0])
}

fn params(n: u32, iters: u32) -> Params {
    Params {
        n,
        iters,
        m: 0.9999,
        c: 1e-4,
        // The chains converge to 1 (c / (1 - m)); they never reach this.
        never: -1234.5,
        ..Params::default()
    }
}

/// The FMA peak alone (GFLOP/s and the layout that reached it): every layout, the
/// fastest of `repeats` runs each.
pub fn fma_peak(gpu: &Gpu, repeats: usize) -> Result<(f64, String)> {
    // The same chain-rounds per invocation for every layout.
    let threads: u32 = if gpu.caps.is_cpu { 1 << 14 } else { 1 << 20 };
    let rounds: u32 = 16384;
    let out = Tensor::empty(gpu, &[threads as usize * 4], DType::F32)?;
    let dummy = Tensor::empty(gpu, &[4], DType::F32)?;
    let (mut fma_gflops, mut fma_layout) = (0.0, String::new());
    for chains in CHAINS {
        for (step_name, step) in STEPS {
            for wg in WGS {
                let k = gpu.kernel(&fma_spec(chains, step, wg))?;
                let iters = rounds / chains;
                let t = best(gpu, repeats, |rec| {
                    let groups = rec.grid(threads.div_ceil(wg));
                    let bind = [dummy.whole(gpu)?, out.whole(gpu)?];
                    rec.dispatch(&k, &params(threads, iters), &bind, groups)
                })?;
                let flop = f64::from(threads) * f64::from(iters) * f64::from(chains) * 8.0;
                let g = flop / t.as_secs_f64() / 1e9;
                if g > fma_gflops {
                    fma_gflops = g;
                    fma_layout = format!("{chains} chains, {step_name}, wg {wg}");
                }
            }
        }
    }
    Ok((fma_gflops, fma_layout))
}

/// Measures the FMA and copy peaks.
pub fn measure_peaks(gpu: &Gpu, quick: bool) -> Result<Peaks> {
    let repeats = if quick { 3 } else { 5 };
    let (fma_gflops, fma_layout) = fma_peak(gpu, repeats)?;
    let coop = coop_peak(gpu, repeats)?;

    // Copy: a large buffer (DRAM) and a cache-sized one, each layout.
    let large = if quick { 8 << 20 } else { 16 << 20 };
    let small = 1 << 20;
    let (mut copy_gbps, mut copy_layout, mut copy_dram_gbps) = (0.0, String::new(), 0.0);
    let mut shader_copy_gbps: f64 = 0.0;
    for (floats, per_submit) in [(large, 1usize), (small, 16)] {
        let src = Tensor::empty(gpu, &[floats], DType::F32)?;
        let dst = Tensor::empty(gpu, &[floats], DType::F32)?;
        let mut keep = |g: f64, layout: String| {
            if floats == large && g > copy_dram_gbps {
                copy_dram_gbps = g;
            }
            if g > copy_gbps {
                copy_gbps = g;
                copy_layout = layout;
            }
        };
        for per in PERS {
            for wg in WGS {
                let k = gpu.kernel(&copy_spec(per, wg))?;
                let n = (floats / 4) as u32 / per;
                let t = best(gpu, repeats, |rec| {
                    for _ in 0..per_submit {
                        let groups = rec.grid(n.div_ceil(wg));
                        let bind = [src.whole(gpu)?, dst.whole(gpu)?];
                        rec.dispatch(&k, &params(n, 0), &bind, groups)?;
                    }
                    Ok(())
                })?;
                let g = 2.0 * (floats * 4 * per_submit) as f64 / t.as_secs_f64() / 1e9;
                let layout = format!(
                    "{} MiB, {per} vec4 per invocation, wg {wg}",
                    (floats * 4) >> 20
                );
                shader_copy_gbps = shader_copy_gbps.max(g);
                keep(g, layout);
            }
        }
        // The device's own buffer copy (what concat and other pure copies record).
        let t = best(gpu, repeats, |rec| {
            for _ in 0..per_submit {
                rec.copy(src.whole(gpu)?, dst.whole(gpu)?)?;
            }
            Ok(())
        })?;
        let g = 2.0 * (floats * 4 * per_submit) as f64 / t.as_secs_f64() / 1e9;
        keep(g, format!("{} MiB, buffer copy", (floats * 4) >> 20));
    }
    Ok(Peaks {
        fma_gflops,
        fma_layout,
        copy_gbps,
        copy_layout,
        copy_dram_gbps,
        shader_copy_gbps,
        coop_gflops: coop.as_ref().map(|c| c.0),
        coop_layout: coop.map(|c| c.1),
    })
}

/// Launch overhead: the time of one dispatch inside a submit of many tiny dispatches.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LaunchOverhead {
    pub dispatches_per_submit: u32,
    pub us_per_dispatch: f64,
    pub dispatches_per_second: f64,
}

pub fn launch_overhead(gpu: &Gpu) -> Result<LaunchOverhead> {
    const N: u32 = 1000;
    let noop = gpu.kernel(&noop_spec())?;
    let src = Tensor::empty(gpu, &[4], DType::F32)?;
    let dst = Tensor::empty(gpu, &[4], DType::F32)?;
    let record = |rec: &mut Recorder| -> Result<()> {
        for i in 0..N {
            let params = Params {
                n: i,
                ..Params::default()
            };
            rec.dispatch(
                &noop,
                &params,
                &[src.whole(gpu)?, dst.whole(gpu)?],
                [1, 1, 1],
            )?;
        }
        Ok(())
    };
    let t = super::time_median(gpu, 3, record)?;
    let us = t.as_secs_f64() * 1e6 / f64::from(N);
    Ok(LaunchOverhead {
        dispatches_per_submit: N,
        us_per_dispatch: us,
        dispatches_per_second: 1e6 / us,
    })
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    let mut v = Vec::new();
    for chains in CHAINS {
        for (_, step) in STEPS {
            for wg in WGS {
                v.push(fma_spec(chains, step, wg));
            }
        }
    }
    for per in PERS {
        for wg in WGS {
            v.push(copy_spec(per, wg));
        }
    }
    v.push(noop_spec());
    for s in [8, 16] {
        for chains in COOP_CHAINS {
            for wg in COOP_WGS {
                v.push(coop_spec(s, chains, wg));
            }
        }
    }
    v
}
