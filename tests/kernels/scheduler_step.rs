use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::scheduler_step::{self, Derived, Lin, SLOTS, StepPlan, cpu};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::stored;

/// A random plan using every feature selected by `mask`: bit 0 derived, 1 clamp, 2 noise,
/// 4.. reads of slot k, 8.. writes of slot k, 12 writes that also combine the old values
/// of the slots in use (UniPC's corrected sample).
fn plan(rng: &mut Rng, mask: u32) -> StepPlan {
    let mut c = || rng.uniform() as f64;
    let derived = (mask & 1 != 0).then(|| Derived {
        value: Lin::x(c()) + Lin::e(c()),
        clamp: (mask & 2 != 0).then_some((-0.3, 0.4)),
    });
    let d = if derived.is_some() { c() } else { 0.0 };
    let mut out = Lin::x(c()) + Lin::e(c()) + Lin::d(d);
    if mask & 4 != 0 {
        out = out + Lin::noise(c());
    }
    let mut writes = [None; SLOTS];
    for (k, write) in writes.iter_mut().enumerate() {
        if mask & (16 << k) != 0 {
            out = out + Lin::h(k, c());
        }
        if mask & (256 << k) != 0 {
            let dw = if derived.is_some() { c() } else { 0.0 };
            *write = Some(Lin::x(c()) + Lin::e(c()) + Lin::d(dw));
        }
    }
    if mask & 0x1000 != 0 {
        for write in writes.iter_mut().flatten() {
            for j in (0..SLOTS).filter(|j| mask & ((16 | 256) << j) != 0) {
                *write = *write + Lin::h(j, c());
            }
        }
    }
    StepPlan {
        derived,
        out,
        writes,
        draws_noise: mask & 4 != 0,
    }
}

fn check(n: usize, guidance: Option<f32>, mask: u32, seed: u64) {
    check_as(n, guidance, mask, seed, DType::F32);
}

/// [`check`] with the model output stored as `mt` (an f16 UNet's output; latents,
/// history and noise stay f32).
fn check_as(n: usize, guidance: Option<f32>, mask: u32, seed: u64, mt: DType) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let p = plan(&mut rng, mask);
    let x: Vec<f32> = rng.vec(n);
    let mo = stored(&rng.vec(if guidance.is_some() { 2 * n } else { n }), mt);
    let mut hist: Vec<Vec<f32>> = (0..SLOTS).map(|_| rng.vec(n)).collect();
    let noise: Vec<f32> = rng.vec(n);

    let tx = Tensor::from_f32(gpu, &[n], &x, DType::F32).unwrap();
    let tm = Tensor::from_f32(gpu, &[mo.len()], &mo, mt).unwrap();
    let th: Vec<Tensor> = hist
        .iter()
        .map(|h| Tensor::from_f32(gpu, &[n], h, DType::F32).unwrap())
        .collect();
    let tn = Tensor::from_f32(gpu, &[n], &noise, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    scheduler_step::scheduler_step(&mut rec, &p, &tx, &tm, guidance, &th, Some(&tn)).unwrap();
    let got_x = rec.read_f32(&tx).unwrap();
    let got_h: Vec<Vec<f32>> = th.iter().map(|t| rec.read_f32(t).unwrap()).collect();

    let mut want_x = x.clone();
    cpu::scheduler_step(&p, &mut want_x, &mo, guidance, &mut hist, Some(&noise)).unwrap();
    // f32 on the GPU against f64 combinations: values are O(1) (at most ~10 with
    // guidance), so 1e-5 relative plus 2e-5 absolute.
    let what = format!("x (n {n}, guidance {guidance:?}, mask {mask:#x}, model out {mt:?})");
    assert_close(&what, &got_x, &want_x, 2e-5, 1e-5);
    for k in 0..SLOTS {
        assert_close(
            &format!("slot {k} ({what})"),
            &got_h[k],
            &hist[k],
            2e-5,
            1e-5,
        );
    }
}

#[test]
fn hand_checked_ddim_like_step() {
    // x' = 0.5 x + 2 clamp(x - e, -1, 1), e = u + 3 (c - u); slot 0 <- e.
    let gpu = gpu();
    let x = [1.0f32, -2.0, 0.25];
    let mo = [0.0f32, 1.0, 0.5, 1.0, 0.0, 0.5];
    let p = StepPlan {
        derived: Some(Derived {
            value: Lin::x(1.0) + Lin::e(-1.0),
            clamp: Some((-1.0, 1.0)),
        }),
        out: Lin::x(0.5) + Lin::d(2.0),
        writes: [Some(Lin::e(1.0)), None, None, None],
        draws_noise: false,
    };
    // e = [3, -2, 0.5]; d = clamp([-2, 0, -0.25]) = [-1, 0, -0.25]
    let tx = Tensor::from_f32(gpu, &[3], &x, DType::F32).unwrap();
    let tm = Tensor::from_f32(gpu, &[6], &mo, DType::F32).unwrap();
    let th = [Tensor::from_f32(gpu, &[3], &[9.0; 3], DType::F32).unwrap()];
    let mut rec = Recorder::new(gpu);
    scheduler_step::scheduler_step(&mut rec, &p, &tx, &tm, Some(3.0), &th, None).unwrap();
    assert_eq!(rec.read_f32(&tx).unwrap(), vec![-1.5, -1.0, -0.375]);
    assert_eq!(rec.read_f32(&th[0]).unwrap(), vec![3.0, -2.0, 0.5]);
}

#[test]
fn random_plans_and_sizes() {
    let masks = [
        0x0, 0x1, 0x3, 0x4, 0x7, 0x11, 0x101, 0x1f3, 0xf0f, 0x773, 0xfff, 0x8f5, 0x1f00, 0x1731,
        0x1e15,
    ];
    for (i, &mask) in masks.iter().enumerate() {
        for (j, &n) in [1usize, 7, 256, 1000, 4 * 3 * 37 * 41].iter().enumerate() {
            let g = [None, Some(7.5f32), Some(1.0)][(i + j) % 3];
            check(n, g, mask, (i * 10 + j) as u64);
        }
    }
}

#[test]
fn bad_plans_are_errors() {
    let gpu = gpu();
    let tx = Tensor::from_f32(gpu, &[4], &[0.0; 4], DType::F32).unwrap();
    let tm = Tensor::from_f32(gpu, &[4], &[0.0; 4], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let uses_slot = StepPlan {
        out: Lin::h(2, 1.0),
        ..StepPlan::default()
    };
    assert!(
        scheduler_step::scheduler_step(&mut rec, &uses_slot, &tx, &tm, None, &[], None).is_err()
    );
    let needs_noise = StepPlan {
        out: Lin::noise(1.0),
        ..StepPlan::default()
    };
    assert!(
        scheduler_step::scheduler_step(&mut rec, &needs_noise, &tx, &tm, None, &[], None).is_err()
    );
    let no_derived = StepPlan {
        out: Lin::d(1.0),
        ..StepPlan::default()
    };
    assert!(
        scheduler_step::scheduler_step(&mut rec, &no_derived, &tx, &tm, None, &[], None).is_err()
    );
    let noisy_write = StepPlan {
        out: Lin::e(1.0),
        writes: [Some(Lin::noise(1.0)), None, None, None],
        ..StepPlan::default()
    };
    let h0 = Tensor::from_f32(gpu, &[4], &[0.0; 4], DType::F32).unwrap();
    assert!(
        scheduler_step::scheduler_step(&mut rec, &noisy_write, &tx, &tm, None, &[h0], None)
            .is_err()
    );
    // guidance needs a model output of twice x's size
    let ok = StepPlan {
        out: Lin::e(1.0),
        ..StepPlan::default()
    };
    assert!(scheduler_step::scheduler_step(&mut rec, &ok, &tx, &tm, Some(7.5), &[], None).is_err());
    // x may not alias the model output
    assert!(scheduler_step::scheduler_step(&mut rec, &ok, &tx, &tx, None, &[], None).is_err());
}

/// 34 M floats (136 MB) exceed one 128 MiB binding: the launcher must band (the model
/// output with guidance is 272 MB).
#[test]
fn step_larger_than_one_binding() {
    check(34_000_000, Some(7.5), 0x113 | 0x4, 77);
}

/// An f16 model output (the f16 UNet's), read as f32 by the step.
#[test]
fn f16_model_output() {
    for (i, &mask) in [0x0u32, 0x3, 0x1f3, 0xfff].iter().enumerate() {
        for (j, &n) in [7usize, 4 * 3 * 37 * 41].iter().enumerate() {
            let g = [None, Some(7.5f32)][(i + j) % 2];
            check_as(n, g, mask, (100 + i * 10 + j) as u64, DType::F16);
        }
    }
}
