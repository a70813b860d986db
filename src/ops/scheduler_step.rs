//! The fused classifier-free-guidance combine + scheduler update
//! (`shaders/scheduler_step.wgsl`).
//!
//! Every scheduler in `crate::schedulers` turns one diffusers `step()` into a [`StepPlan`]:
//! scalar coefficients of an affine combination of the current latents `x`, the guided
//! model output `e`, an optional derived value `d` (DDIM's clipped x0), up to [`SLOTS`]
//! history tensors kept on the GPU between steps (PNDM's past model outputs and first
//! sample, LMS's past derivatives, DPM++'s previous x0) and fresh noise. Only these
//! scalars (and, for ancestral samplers, the noise drawn on the CPU with torch's
//! generator) come from the CPU.

use std::ops::{Add, Mul, Sub};

use super::{expect_act, expect_f32, for_each_band, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor, Window};

const SRC: &str = include_str!("../../shaders/scheduler_step.wgsl");
const WG: usize = 256;
const OP: &str = "scheduler_step";

/// Number of history slots the kernel can read and write.
pub const SLOTS: usize = 4;

/// A linear combination of the values the kernel sees for one element.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Lin {
    /// The current latents.
    pub x: f64,
    /// The (guided) model output.
    pub e: f64,
    /// The derived value of the plan (see [`Derived`]).
    pub d: f64,
    /// History slots (their values before this step).
    pub h: [f64; SLOTS],
    /// Fresh noise.
    pub n: f64,
}

impl Lin {
    pub fn x(c: f64) -> Lin {
        Lin {
            x: c,
            ..Lin::default()
        }
    }
    pub fn e(c: f64) -> Lin {
        Lin {
            e: c,
            ..Lin::default()
        }
    }
    pub fn d(c: f64) -> Lin {
        Lin {
            d: c,
            ..Lin::default()
        }
    }
    pub fn h(slot: usize, c: f64) -> Lin {
        let mut l = Lin::default();
        if let Some(v) = l.h.get_mut(slot) {
            *v = c;
        }
        l
    }
    pub fn noise(c: f64) -> Lin {
        Lin {
            n: c,
            ..Lin::default()
        }
    }

    fn coefs(&self) -> impl Iterator<Item = f64> {
        [self.x, self.e, self.d, self.n]
            .into_iter()
            .chain(self.h.iter().copied())
    }

    fn uses_only_x_e_d(&self) -> bool {
        self.n == 0.0 && self.h.iter().all(|&c| c == 0.0)
    }
}

impl Add for Lin {
    type Output = Lin;
    fn add(self, o: Lin) -> Lin {
        let mut h = self.h;
        for (a, b) in h.iter_mut().zip(o.h) {
            *a += b;
        }
        Lin {
            x: self.x + o.x,
            e: self.e + o.e,
            d: self.d + o.d,
            h,
            n: self.n + o.n,
        }
    }
}

impl Mul<f64> for Lin {
    type Output = Lin;
    fn mul(self, s: f64) -> Lin {
        Lin {
            x: self.x * s,
            e: self.e * s,
            d: self.d * s,
            h: self.h.map(|c| c * s),
            n: self.n * s,
        }
    }
}

impl Sub for Lin {
    type Output = Lin;
    fn sub(self, o: Lin) -> Lin {
        self + o * -1.0
    }
}

/// `d = value` (in `x` and `e` only), clamped to `[lo, hi]` when `clamp` is set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Derived {
    pub value: Lin,
    pub clamp: Option<(f64, f64)>,
}

/// One scheduler step as scalars.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepPlan {
    pub derived: Option<Derived>,
    /// The next latents.
    pub out: Lin,
    /// New values of history slots (in `x`, `e`, `d` and the slots' old values; no
    /// noise), written after every read.
    pub writes: [Option<Lin>; SLOTS],
    /// diffusers draws fresh noise at this step (ancestral samplers draw even when its
    /// coefficient is 0, at the last step): the caller must draw it from the generator
    /// to keep the generator's stream in step with diffusers.
    pub draws_noise: bool,
}

impl StepPlan {
    /// Whether the kernel reads history slot `k` (for the output or for a write).
    pub fn reads(&self, k: usize) -> bool {
        std::iter::once(&self.out)
            .chain(self.writes.iter().flatten())
            .any(|l| l.h.get(k).is_some_and(|&c| c != 0.0))
    }

    /// Whether the kernel reads the noise tensor.
    pub fn uses_noise(&self) -> bool {
        self.out.n != 0.0
    }

    /// Checks that the plan is one the kernel can apply.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::shape(OP, format!("invalid step plan: {m}")));
        let all = self
            .derived
            .iter()
            .flat_map(|d| {
                d.value
                    .coefs()
                    .chain(d.clamp.into_iter().flat_map(|(a, b)| [a, b]))
            })
            .chain(self.out.coefs())
            .chain(self.writes.iter().flatten().flat_map(|w| w.coefs()));
        for c in all {
            if !c.is_finite() {
                return bad("non-finite coefficient");
            }
        }
        if let Some(d) = &self.derived
            && (d.value.d != 0.0 || !d.value.uses_only_x_e_d())
        {
            return bad("the derived value may only combine x and e");
        }
        if self.derived.is_none()
            && (self.out.d != 0.0 || self.writes.iter().flatten().any(|w| w.d != 0.0))
        {
            return bad("uses d without a derived value");
        }
        if self.writes.iter().flatten().any(|w| w.n != 0.0) {
            return bad("history writes may not use noise");
        }
        Ok(())
    }
}

crate::shader_params! {
    struct Params {
        n: u32,
        flags: u32,
        guidance: f32,
        lo: f32,
        hi: f32,
        s_u: u32,
        s_c: u32,
        s_x: u32,
        s_h: [u32; 4],
        s_n: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
        d_coef: [f32; 4],
        out_coef: [f32; 4],
        out_h: [f32; 4],
        w_x: [f32; 4],
        w_e: [f32; 4],
        w_d: [f32; 4],
        // Row k: write k's coefficients of the old slot values h0..h3.
        w_h0: [f32; 4],
        w_h1: [f32; 4],
        w_h2: [f32; 4],
        w_h3: [f32; 4],
    }
}

fn check_len(what: &str, t: &Tensor, n: usize) -> Result<()> {
    expect_f32(OP, t)?;
    check_numel(what, t, n)
}

fn check_numel(what: &str, t: &Tensor, n: usize) -> Result<()> {
    if t.numel() != n {
        return Err(Error::shape(
            OP,
            format!(
                "{what} has {} elements ({:?}), expected {n}",
                t.numel(),
                t.shape()
            ),
        ));
    }
    Ok(())
}

fn spec(model_out: DType) -> KernelSpec {
    KernelSpec::new(OP, SRC, OP)
        .params::<Params>()
        .activation(model_out)
}

/// Applies `plan` on the GPU: `x` (the latents, `[B, C, H, W]`) is updated in place.
/// `model_out` is the UNet output (f32 or f16): `[2B, C, H, W]` = [uncond; cond] when `guidance` is
/// `Some(g)`, `[B, C, H, W]` otherwise. `history` holds the scheduler's slot tensors (at
/// least as many as the plan touches, each of `x`'s size); `noise` is needed when the plan
/// uses noise.
pub fn scheduler_step(
    rec: &mut Recorder,
    plan: &StepPlan,
    x: &Tensor,
    model_out: &Tensor,
    guidance: Option<f32>,
    history: &[Tensor],
    noise: Option<&Tensor>,
) -> Result<()> {
    plan.validate()?;
    expect_f32(OP, x)?;
    let n = x.numel();
    // The UNet output may be f16 (an f16 UNet); the latents and the state stay f32.
    let mt = expect_act(OP, model_out)?;
    check_numel(
        "the model output",
        model_out,
        if guidance.is_some() { 2 * n } else { n },
    )?;
    let mut flags = 0u32;
    if guidance.is_some() {
        flags |= 1;
    }
    if let Some(d) = &plan.derived {
        flags |= 2;
        if d.clamp.is_some() {
            flags |= 4;
        }
    }
    let noise = if plan.uses_noise() {
        let t = noise.ok_or_else(|| Error::shape(OP, "the plan needs noise but none was given"))?;
        check_len("the noise", t, n)?;
        flags |= 8;
        Some(t)
    } else {
        None
    };
    let mut slots: [Option<&Tensor>; SLOTS] = [None; SLOTS];
    for (k, slot) in slots.iter_mut().enumerate() {
        let read = plan.reads(k);
        let write = plan.writes[k].is_some();
        if !(read || write) {
            continue;
        }
        let t = history.get(k).ok_or_else(|| {
            Error::shape(
                OP,
                format!(
                    "the plan uses history slot {k} but only {} were given",
                    history.len()
                ),
            )
        })?;
        check_len("a history slot", t, n)?;
        if read {
            flags |= 16 << k;
        }
        if write {
            flags |= 256 << k;
        }
        *slot = Some(t);
    }
    // x and the slots are bound read_write: no other binding may share their buffers.
    let written: Vec<&Tensor> = std::iter::once(x)
        .chain(slots.iter().flatten().copied())
        .collect();
    let read_only = [Some(model_out), noise];
    for (i, a) in written.iter().enumerate() {
        let clash = written[i + 1..].iter().any(|b| a.same_storage(b))
            || read_only.iter().flatten().any(|b| a.same_storage(b));
        if clash {
            return Err(Error::shape(
                OP,
                "x, the history slots, the model output and the noise must be distinct tensors",
            ));
        }
    }

    let gpu = rec.gpu();
    let pipeline = gpu.kernel(&spec(mt))?;
    // Unused bindings get tiny distinct dummies (never accessed).
    let dummies: Vec<Tensor> = (0..SLOTS + 1)
        .map(|_| Tensor::empty(gpu, &[4], DType::F32))
        .collect::<Result<_>>()?;
    let f = |v: f64| v as f32;
    let w = |sel: fn(&Lin) -> f64| {
        let mut out = [0f32; 4];
        for (o, wr) in out.iter_mut().zip(&plan.writes) {
            *o = wr.as_ref().map_or(0.0, |l| f(sel(l)));
        }
        out
    };
    let w_h = |k: usize| plan.writes[k].map_or([0.0; 4], |l| l.h.map(f));
    let (lo, hi) = plan.derived.and_then(|d| d.clamp).unwrap_or((0.0, 0.0));
    let dv = plan.derived.map(|d| d.value).unwrap_or_default();
    let base = Params {
        n: 0,
        flags,
        guidance: guidance.unwrap_or(1.0),
        lo: f(lo),
        hi: f(hi),
        s_u: 0,
        s_c: 0,
        s_x: 0,
        s_h: [0; 4],
        s_n: 0,
        d_coef: [f(dv.x), f(dv.e), 0.0, 0.0],
        out_coef: [f(plan.out.x), f(plan.out.e), f(plan.out.d), f(plan.out.n)],
        out_h: plan.out.h.map(f),
        w_x: w(|l| l.x),
        w_e: w(|l| l.e),
        w_d: w(|l| l.d),
        w_h0: w_h(0),
        w_h1: w_h(1),
        w_h2: w_h(2),
        w_h3: w_h(3),
        ..Default::default()
    };
    let per_band = gpu.max_binding_elems(DType::F32) / WG * WG;
    for_each_band(n, per_band, |start, len| {
        let uw = model_out.window(gpu, start, len)?;
        let cw = if guidance.is_some() {
            model_out.window(gpu, n + start, len)?
        } else {
            uw.clone()
        };
        let xw = x.window(gpu, start, len)?;
        let mut hw: Vec<Window> = Vec::with_capacity(SLOTS);
        for (k, slot) in slots.iter().enumerate() {
            hw.push(match slot {
                Some(t) => t.window(gpu, start, len)?,
                None => dummies[k].whole(gpu)?,
            });
        }
        let nw = match noise {
            Some(t) => t.window(gpu, start, len)?,
            None => dummies[SLOTS].whole(gpu)?,
        };
        let params = Params {
            n: u32_of(OP, len)?,
            s_u: uw.shift,
            s_c: cw.shift,
            s_x: xw.shift,
            s_h: [hw[0].shift, hw[1].shift, hw[2].shift, hw[3].shift],
            s_n: nw.shift,
            ..base
        };
        let groups = rec.grid(u32_of(OP, len.div_ceil(WG))?);
        let mut bindings = vec![uw, cw, xw];
        bindings.extend(hw);
        bindings.push(nw);
        rec.dispatch(&pipeline, &params, &bindings, groups)
    })
}

/// CPU reference.
pub mod cpu {
    use super::{Lin, OP, SLOTS, StepPlan};
    use crate::error::{Error, Result};

    /// Applies `plan` to host data exactly as the kernel does (combinations in f64). The
    /// guidance combine is done in f32 like diffusers (`u + g * (c - u)`).
    pub fn scheduler_step(
        plan: &StepPlan,
        x: &mut [f32],
        model_out: &[f32],
        guidance: Option<f32>,
        history: &mut [Vec<f32>],
        noise: Option<&[f32]>,
    ) -> Result<()> {
        plan.validate()?;
        let n = x.len();
        let want = if guidance.is_some() { 2 * n } else { n };
        let bad = |m: String| Err(Error::shape(OP, m));
        if model_out.len() != want {
            return bad(format!(
                "model output has {} elements, expected {want}",
                model_out.len()
            ));
        }
        for k in 0..SLOTS {
            if (plan.reads(k) || plan.writes[k].is_some())
                && history.get(k).is_none_or(|h| h.len() != n)
            {
                return bad(format!("history slot {k} missing or not of {n} elements"));
            }
        }
        if plan.uses_noise() && noise.is_none_or(|z| z.len() != n) {
            return bad(format!("noise missing or not of {n} elements"));
        }
        let lin = |l: &Lin, x: f64, e: f64, d: f64, h: &[f64; SLOTS], z: f64| {
            let mut acc = l.x * x + l.e * e + l.d * d + l.n * z;
            for (&c, &v) in l.h.iter().zip(h) {
                if c != 0.0 {
                    acc += c * v;
                }
            }
            acc
        };
        for i in 0..n {
            let u = model_out[i];
            let e = match guidance {
                Some(g) => u + g * (model_out[n + i] - u),
                None => u,
            } as f64;
            let xv = x[i] as f64;
            let d = match &plan.derived {
                Some(dv) => {
                    let v = (lin(&dv.value, xv, e, 0.0, &[0.0; SLOTS], 0.0) as f32) as f64;
                    match dv.clamp {
                        Some((lo, hi)) => v.clamp(lo as f32 as f64, hi as f32 as f64),
                        None => v,
                    }
                }
                None => 0.0,
            };
            let mut h = [0.0; SLOTS];
            for (k, hv) in h.iter_mut().enumerate() {
                if plan.reads(k) {
                    *hv = history[k][i] as f64;
                }
            }
            let z = if plan.uses_noise() {
                noise.map_or(0.0, |z| z[i] as f64)
            } else {
                0.0
            };
            x[i] = lin(&plan.out, xv, e, d, &h, z) as f32;
            for (w, slot) in plan.writes.iter().zip(history.iter_mut()) {
                if let Some(w) = w {
                    slot[i] = lin(w, xv, e, d, &h, 0.0) as f32;
                }
            }
        }
        Ok(())
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(DType::F32), spec(DType::F16)]
}
