use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::embedding::{self, cpu};

use crate::common::{Rng, assert_close, gpu};
use crate::f16data::{F16_MAX, assert_saturated, stored, tol};

fn check_timestep(t: &[f32], dim: usize, flip: bool, shift: f32) {
    let gpu = gpu();
    let tt = Tensor::from_f32(gpu, &[t.len()], t, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = embedding::timestep_embedding(&mut rec, &tt, dim, flip, shift).unwrap();
    assert_eq!(y.shape(), &[t.len(), dim]);
    // sin / cos of the same f32 arguments torch forms: ~1e-7 absolute.
    assert_close(
        &format!("timestep_embedding dim {dim} flip {flip} shift {shift}"),
        &rec.read_f32(&y).unwrap(),
        &cpu::timestep_embedding(t, dim, flip, shift),
        3e-7,
        0.0,
    );
}

/// Hand-checked: dim 4, shift 1 -> half 2, freqs [1, 1e-4]; t = 1:
/// [sin 1, sin 1e-4, cos 1, cos 1e-4]; flipped [cos 1, cos 1e-4, sin 1, sin 1e-4].
#[test]
fn timestep_tiny() {
    let gpu = gpu();
    let t = Tensor::from_f32(gpu, &[1], &[1.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let a = embedding::timestep_embedding(&mut rec, &t, 4, false, 1.0).unwrap();
    let b = embedding::timestep_embedding(&mut rec, &t, 5, true, 1.0).unwrap();
    let (s1, c1) = (1f64.sin() as f32, 1f64.cos() as f32);
    let (s2, c2) = (1e-4f32, 1.0f32);
    assert_close(
        "temb",
        &rec.read_f32(&a).unwrap(),
        &[s1, s2, c1, c2],
        1e-7,
        1e-6,
    );
    assert_close(
        "temb flip odd",
        &rec.read_f32(&b).unwrap(),
        &[c1, c2, s1, s2, 0.0],
        1e-7,
        1e-6,
    );
}

#[test]
fn timestep_shapes() {
    let ts: Vec<f32> = vec![999.0, 981.0, 500.0, 1.0, 0.0, 0.5, 261.37];
    check_timestep(&ts, 320, true, 0.0); // SD UNet: flip_sin_to_cos, freq_shift 0
    check_timestep(&ts, 1280, false, 1.0);
    check_timestep(&ts, 33, false, 1.0); // odd: zero column
    check_timestep(&[999.0, 999.0], 8, true, 0.0);
    let mut rng = Rng::new(3);
    let many: Vec<f32> = (0..300).map(|_| (rng.uniform() + 1.0) * 600.0).collect();
    check_timestep(&many, 256, true, 0.0);
}

#[allow(clippy::too_many_arguments)]
fn check_tokens(
    b: usize,
    t: usize,
    v: usize,
    p: usize,
    d: usize,
    dt: DType,
    ids: Vec<u32>,
    seed: u64,
) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let mut tok = rng.vec(v * d);
    let mut pos = rng.vec(p * d);
    let ttok = Tensor::from_f32(gpu, &[v, d], &tok, dt).unwrap();
    let tpos = Tensor::from_f32(gpu, &[p, d], &pos, dt).unwrap();
    if dt == DType::F16 {
        // Compare against the values the GPU actually holds.
        for a in tok.iter_mut().chain(pos.iter_mut()) {
            *a = half::f16::from_f32(*a).to_f32();
        }
    }
    let tids = Tensor::from_u32(gpu, &[b, t], &ids).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = embedding::token_position_embedding(&mut rec, &tids, &ttok, &tpos).unwrap();
    let z = embedding::token_position_embedding_ids(&mut rec, &ids, b, &ttok, &tpos).unwrap();
    assert_eq!(y.shape(), &[b, t, d]);
    let want = cpu::token_position_embedding(&ids, t, &tok, &pos, d);
    // One f32 add of exactly representable values.
    let what = format!("token_pos b{b} t{t} v{v} d{d} {dt:?}");
    assert_close(&what, &rec.read_f32(&y).unwrap(), &want, 0.0, 1e-7);
    assert_close(&what, &rec.read_f32(&z).unwrap(), &want, 0.0, 1e-7);
}

fn random_ids(rng: &mut Rng, n: usize, v: usize) -> Vec<u32> {
    (0..n).map(|_| rng.range(0, v) as u32).collect()
}

/// Hand-checked: tok rows [10, 20, 30], pos rows [1, 2]; ids [2, 0] -> [31, 12].
#[test]
fn token_embedding_tiny() {
    let gpu = gpu();
    let tok = Tensor::from_f32(gpu, &[3, 1], &[10.0, 20.0, 30.0], DType::F32).unwrap();
    let pos = Tensor::from_f32(gpu, &[2, 1], &[1.0, 2.0], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = embedding::token_position_embedding_ids(&mut rec, &[2, 0], 1, &tok, &pos).unwrap();
    assert_close(
        "token tiny",
        &rec.read_f32(&y).unwrap(),
        &[31.0, 12.0],
        0.0,
        0.0,
    );
    assert!(embedding::token_position_embedding_ids(&mut rec, &[3, 0], 1, &tok, &pos).is_err());
    // More tokens than positions.
    assert!(embedding::token_position_embedding_ids(&mut rec, &[0, 0, 0], 1, &tok, &pos).is_err());
}

#[test]
fn token_embedding_shapes() {
    let mut rng = Rng::new(1);
    let ids = random_ids(&mut rng, 2 * 77, 1000);
    check_tokens(2, 77, 1000, 77, 64, DType::F32, ids, 2);
    let ids = random_ids(&mut rng, 3 * 5, 50);
    check_tokens(3, 5, 50, 9, 7, DType::F32, ids, 3); // odd D: scalar path
    let gpu = gpu();
    let ids = random_ids(&mut rng, 2 * 77, 500);
    if gpu.caps.f16 {
        check_tokens(2, 77, 500, 77, 96, DType::F16, ids.clone(), 4);
        check_tokens(1, 11, 500, 77, 6, DType::F16, ids[..11].to_vec(), 5);
    } else {
        // Without SHADER_F16 an f16 table must be a clear error, not garbage.
        let tok = Tensor::from_f32(gpu, &[4, 4], &[0.0; 16], DType::F16).unwrap();
        let t = Tensor::from_u32(gpu, &[1, 1], &[0]).unwrap();
        let mut rec = Recorder::new(gpu);
        assert!(embedding::token_position_embedding(&mut rec, &t, &tok, &tok).is_err());
    }
}

/// A [40000, 1000] f32 token table (160 MB) exceeds one 128 MiB binding: it is bound
/// in two bands of rows; ids on both sides of the band edge (row 33554).
#[test]
fn token_embedding_table_larger_than_one_binding() {
    let mut rng = Rng::new(9);
    let mut ids = random_ids(&mut rng, 2 * 77, 40_000);
    ids[..6].copy_from_slice(&[0, 33_553, 33_554, 33_555, 39_999, 33_000]);
    check_tokens(2, 77, 40_000, 77, 1000, DType::F32, ids, 10);
}

/// The sinusoid stored as f16 activations: the f32 values, rounded once.
#[test]
fn timestep_f16() {
    let gpu = gpu();
    let mut rng = Rng::new(31);
    let t: Vec<f32> = (0..300).map(|_| (rng.uniform() + 1.0) * 600.0).collect();
    let tt = Tensor::from_f32(gpu, &[t.len()], &t, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    for (dim, flip, shift) in [(320, true, 0.0), (7, false, 1.0)] {
        let y =
            embedding::timestep_embedding_as(&mut rec, &tt, dim, flip, shift, DType::F16).unwrap();
        assert_eq!((y.shape(), y.dtype()), (&[t.len(), dim][..], DType::F16));
        let (atol, rtol) = tol(DType::F16, 3e-7, 0.0);
        assert_close(
            &format!("timestep f16 dim {dim}"),
            &rec.read_f32(&y).unwrap(),
            &cpu::timestep_embedding(&t, dim, flip, shift),
            atol,
            rtol,
        );
    }
    assert!(embedding::timestep_embedding_as(&mut rec, &tt, 8, true, 0.0, DType::U32).is_err());
}

/// Token + position sums stored as f16, from f32 and f16 tables; sums past f16's range
/// saturate.
#[test]
fn token_embedding_f16_output() {
    let gpu = gpu();
    let mut rng = Rng::new(32);
    for (d, table_dt) in [(96, DType::F32), (96, DType::F16), (6, DType::F32)] {
        let (v, t, b) = (300, 77, 2);
        let tok = stored(&rng.vec(v * d), table_dt);
        let pos = stored(&rng.vec(t * d), table_dt);
        let ids = random_ids(&mut rng, b * t, v);
        let ttok = Tensor::from_f32(gpu, &[v, d], &tok, table_dt).unwrap();
        let tpos = Tensor::from_f32(gpu, &[t, d], &pos, table_dt).unwrap();
        let tids = Tensor::from_u32(gpu, &[b, t], &ids).unwrap();
        let mut rec = Recorder::new(gpu);
        let y = embedding::token_position_embedding_as(&mut rec, &tids, &ttok, &tpos, DType::F16)
            .unwrap();
        assert_eq!(y.dtype(), DType::F16);
        let (atol, rtol) = tol(DType::F16, 0.0, 1e-7);
        assert_close(
            &format!("token_pos f16 out d{d} tables {table_dt:?}"),
            &rec.read_f32(&y).unwrap(),
            &cpu::token_position_embedding(&ids, t, &tok, &pos, d),
            atol,
            rtol,
        );
    }
    let tok = Tensor::from_f32(gpu, &[1, 4], &[6e4, -6e4, 6e4, 1.0], DType::F32).unwrap();
    let pos = Tensor::from_f32(gpu, &[1, 4], &[6e4, -6e4, -6e4, 2.0], DType::F32).unwrap();
    let ids = Tensor::from_u32(gpu, &[1, 1], &[0]).unwrap();
    let mut rec = Recorder::new(gpu);
    let y = embedding::token_position_embedding_as(&mut rec, &ids, &tok, &pos, DType::F16).unwrap();
    let got = rec.read_f32(&y).unwrap();
    assert_saturated("token_pos f16", &got);
    assert_eq!(got, [F16_MAX, -F16_MAX, 0.0, 3.0]);
}
