//! The device's practical peaks, measured with `shaders/probe.wgsl`.

use std::time::Duration;

use serde::Serialize;

use super::time_median;
use crate::error::Result;
use crate::gpu::{DType, Gpu, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/probe.wgsl");
const WG: u32 = 64;

crate::shader_params! {
    struct Params {
        n: u32,
        iters: u32,
        src_shift: u32,
        out_shift: u32,
    }
}

/// Measured peaks of this device.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Peaks {
    /// f32 multiply-add throughput, GFLOP/s (2 FLOP per multiply-add).
    pub fma_gflops: f64,
    /// Device-memory copy bandwidth, GB/s (bytes read + written).
    pub copy_gbps: f64,
}

/// Measures the FMA and copy peaks.
pub fn measure_peaks(gpu: &Gpu, quick: bool) -> Result<Peaks> {
    let repeats = if quick { 3 } else { 5 };
    // Enough invocations to fill any GPU; enough iterations to dwarf launch cost.
    let threads: u32 = if gpu.caps.is_cpu { 1 << 14 } else { 1 << 20 };
    let iters: u32 = if gpu.caps.is_cpu { 4096 } else { 16384 };
    let out = Tensor::empty(gpu, &[threads as usize * 4], DType::F32)?;
    let fma = gpu.kernel(&KernelSpec::new("probe", SRC, "fma_peak").params::<Params>())?;
    // The fma entry never reads `src`, but the layout has it: bind a small dummy.
    let dummy = Tensor::empty(gpu, &[4], DType::F32)?;
    let t = time_median(gpu, repeats, |rec| {
        let params = Params {
            n: threads,
            iters,
            src_shift: 0,
            out_shift: 0,
        };
        let groups = rec.grid(threads.div_ceil(WG));
        rec.dispatch(&fma, &params, &[dummy.whole(gpu)?, out.whole(gpu)?], groups)
    })?;
    let flops = f64::from(threads) * f64::from(iters) * 64.0;
    let fma_gflops = flops / t.as_secs_f64() / 1e9;

    // Copy: 64 MiB (fits one binding everywhere), vec4 elements.
    let floats = if quick { 8 << 20 } else { 16 << 20 };
    let src = Tensor::empty(gpu, &[floats], DType::F32)?;
    let dst = Tensor::empty(gpu, &[floats], DType::F32)?;
    let copy = gpu.kernel(&KernelSpec::new("probe", SRC, "copy").params::<Params>())?;
    let n = (floats / 4) as u32;
    let t = time_median(gpu, repeats, |rec| {
        let params = Params {
            n,
            iters: 0,
            src_shift: 0,
            out_shift: 0,
        };
        let groups = rec.grid(n.div_ceil(WG));
        rec.dispatch(&copy, &params, &[src.whole(gpu)?, dst.whole(gpu)?], groups)
    })?;
    let copy_gbps = 2.0 * (floats * 4) as f64 / t.as_secs_f64() / 1e9;
    Ok(Peaks {
        fma_gflops,
        copy_gbps,
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
    let noop = gpu.kernel(&KernelSpec::new("probe", SRC, "noop").params::<Params>())?;
    let src = Tensor::empty(gpu, &[4], DType::F32)?;
    let dst = Tensor::empty(gpu, &[4], DType::F32)?;
    let record = |rec: &mut Recorder| -> Result<()> {
        for i in 0..N {
            let params = Params {
                n: i,
                iters: 0,
                src_shift: 0,
                out_shift: 0,
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
    let t: Duration = time_median(gpu, 3, record)?;
    let us = t.as_secs_f64() * 1e6 / f64::from(N);
    Ok(LaunchOverhead {
        dispatches_per_submit: N,
        us_per_dispatch: us,
        dispatches_per_second: 1e6 / us,
    })
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    ["fma_peak", "copy", "noop"]
        .into_iter()
        .map(|e| KernelSpec::new("probe", SRC, e).params::<Params>())
        .collect()
}
