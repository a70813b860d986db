use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::tile_blend::{blend_tile, cpu, crop};

use crate::common::{Rng, assert_close, gpu};

/// f16 inputs are rounded first so that the reference sees what the GPU sees.
fn round(v: Vec<f32>, dt: DType) -> Vec<f32> {
    match dt {
        DType::F16 => v
            .into_iter()
            .map(|x| half::f16::from_f32(x).to_f32())
            .collect(),
        _ => v,
    }
}

/// diffusers' tiling over a `[planes, h * f, w * f]` image made of random "decoded"
/// tiles: tile `t` latents every `stride`, scale `f`, blend `ext`, crop `rl`.
#[allow(clippy::too_many_arguments)]
fn check_assembly(
    planes: usize,
    (h, w): (usize, usize),
    (t, stride, f, ext, rl): (usize, usize, usize, usize, usize),
    dt: DType,
    seed: u64,
) {
    let gpu = gpu();
    let mut rng = Rng::new(seed);
    let starts = |n: usize| (0..n).step_by(stride).collect::<Vec<_>>();
    let mut cpu_rows = Vec::new();
    let mut gpu_rows = Vec::new();
    for &y in &starts(h) {
        let (mut crow, mut grow) = (Vec::new(), Vec::new());
        for &x in &starts(w) {
            let (th, tw) = (t.min(h - y) * f, t.min(w - x) * f);
            let data = round(rng.vec(planes * th * tw), dt);
            grow.push(Tensor::from_f32(gpu, &[1, planes, th, tw], &data, dt).unwrap());
            crow.push(cpu::Tile { data, h: th, w: tw });
        }
        cpu_rows.push(crow);
        gpu_rows.push(grow);
    }
    let (want, oh, ow) = cpu::assemble(cpu_rows, planes, ext, rl);
    let out = Tensor::empty(gpu, &[1, planes, oh, ow], dt).unwrap();
    let mut rec = Recorder::new(gpu);
    let mut oy = 0;
    for i in 0..gpu_rows.len() {
        let mut ox = 0;
        for j in 0..gpu_rows[i].len() {
            let tile = &gpu_rows[i][j];
            let above = (i > 0).then(|| &gpu_rows[i - 1][j]);
            let left = (j > 0).then(|| &gpu_rows[i][j - 1]);
            blend_tile(&mut rec, tile, above, left, ext, rl, &out, (oy, ox)).unwrap();
            ox += tile.shape()[3].min(rl);
        }
        oy += gpu_rows[i][0].shape()[2].min(rl);
    }
    let got = rec.read_f32(&out).unwrap();
    let (atol, rtol) = match dt {
        DType::F16 => (2e-3, 2e-3),
        _ => (1e-6, 1e-6),
    };
    assert_close(
        &format!("tile assembly {planes}x{h}x{w} {dt:?}"),
        &got,
        &want,
        atol,
        rtol,
    );
}

/// Hand-checked blend of two 1x4 tiles side by side, extent 2, crop 3: the right tile's
/// columns 0, 1 become a[2] * 1 + b[0] * 0 = 3 and a[3] * 0.5 + b[1] * 0.5 = 12.
#[test]
fn tile_blend_tiny() {
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[1, 1, 1, 4], &[1.0, 2.0, 3.0, 4.0], DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[1, 1, 1, 4], &[10.0, 20.0, 30.0, 40.0], DType::F32).unwrap();
    let out = Tensor::empty(gpu, &[1, 1, 1, 6], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    blend_tile(&mut rec, &a, None, None, 2, 3, &out, (0, 0)).unwrap();
    blend_tile(&mut rec, &b, None, Some(&a), 2, 3, &out, (0, 3)).unwrap();
    let got = rec.read_f32(&out).unwrap();
    assert_close("tiny", &got, &[1.0, 2.0, 3.0, 3.0, 12.0, 30.0], 0.0, 0.0);
    // In place, as diffusers' blend_h.
    let got_b = rec.read_f32(&b).unwrap();
    assert_close("tiny in place", &got_b, &[3.0, 12.0, 30.0, 40.0], 0.0, 0.0);
    let bad = Tensor::empty(gpu, &[1, 1, 1, 2], DType::F32).unwrap();
    assert!(blend_tile(&mut rec, &b, None, None, 2, 3, &bad, (0, 0)).is_err());
}

#[test]
fn tile_blend_assembly() {
    // sd2-tiny's VAE: tile 8 latents, stride 6, scale 8, blend 16, crop 48; 3x3 tiles
    // with thin remainders (a 1-latent last row).
    check_assembly(3, (13, 18), (8, 6, 8, 16, 48), DType::F32, 1);
    check_assembly(6, (12, 9), (8, 6, 8, 16, 48), DType::F32, 2);
    check_assembly(2, (7, 10), (4, 3, 4, 4, 12), DType::F32, 3);
    // A stride whose pixels are not row_limit (int(2 * 0.75) = 1): diffusers' image is
    // then larger than 4x the latents, and so is ours.
    check_assembly(1, (3, 5), (2, 1, 4, 2, 6), DType::F32, 4);
}

#[test]
fn tile_blend_assembly_f16() {
    if !gpu().caps.f16 {
        panic!("this adapter has no SHADER_F16; the f16 kernels cannot be tested");
    }
    check_assembly(3, (13, 18), (8, 6, 8, 16, 48), DType::F16, 5);
    check_assembly(2, (7, 10), (4, 3, 4, 4, 12), DType::F16, 6);
}

#[test]
fn tile_crop() {
    let gpu = gpu();
    for (dt, seed) in [(DType::F32, 7), (DType::F16, 8)] {
        let mut rng = Rng::new(seed);
        let (b, c, h, w) = (2, 4, 13, 18);
        let x = round(rng.vec(b * c * h * w), dt);
        let tx = Tensor::from_f32(gpu, &[b, c, h, w], &x, dt).unwrap();
        let mut rec = Recorder::new(gpu);
        for (y0, x0) in [(0, 0), (6, 12), (12, 6)] {
            let t = crop(&mut rec, &tx, y0, x0, 8, 8).unwrap();
            let (th, tw) = (8.min(h - y0), 8.min(w - x0));
            assert_eq!(t.shape(), &[b, c, th, tw]);
            let want = cpu::crop(&x, b * c, (h, w), (y0, x0), (th, tw));
            assert_close(
                &format!("crop {dt:?} at {y0},{x0}"),
                &rec.read_f32(&t).unwrap(),
                &want,
                0.0,
                0.0,
            );
        }
    }
}

/// An assembled image 720000 pixels wide: the 48 crop rows of one plane are 138 MB, over
/// one 128 MiB binding, so the launcher bands the rows.
#[test]
fn tile_blend_larger_than_one_binding() {
    let gpu = gpu();
    let mut rng = Rng::new(9);
    let (th, tw, ext, rl, wo) = (64, 64, 16, 48, 720_000);
    let mk = |rng: &mut Rng| rng.vec(th * tw);
    let (a, l, b) = (mk(&mut rng), mk(&mut rng), mk(&mut rng));
    let up = |d: &[f32]| Tensor::from_f32(gpu, &[1, 1, th, tw], d, DType::F32).unwrap();
    let (ta, tl, tb) = (up(&a), up(&l), up(&b));
    let out = Tensor::empty(gpu, &[1, 1, rl, wo], DType::F32).unwrap();
    assert!(out.nbytes() > gpu.caps.max_binding);
    let ox = wo - rl;
    let mut rec = Recorder::new(gpu);
    blend_tile(&mut rec, &tb, Some(&ta), Some(&tl), ext, rl, &out, (0, ox)).unwrap();
    let got = rec.read_f32(&out).unwrap();
    let mut want = cpu::Tile {
        data: b,
        h: th,
        w: tw,
    };
    let at = |data: Vec<f32>| cpu::Tile { data, h: th, w: tw };
    cpu::blend_v(&at(a), &mut want, 1, ext);
    cpu::blend_h(&at(l), &mut want, 1, ext);
    let got_crop: Vec<f32> = (0..rl)
        .flat_map(|y| got[y * wo + ox..y * wo + ox + rl].to_vec())
        .collect();
    let want_crop: Vec<f32> = (0..rl)
        .flat_map(|y| want.data[y * tw..y * tw + rl].to_vec())
        .collect();
    assert_close("banded crop", &got_crop, &want_crop, 1e-6, 1e-6);
    assert_close(
        "banded in place",
        &rec.read_f32(&tb).unwrap(),
        &want.data,
        1e-6,
        1e-6,
    );
}
