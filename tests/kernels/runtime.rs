//! The runtime itself: one submit for hundreds of dispatches, the pipeline cache, the
//! activation arena, windows, and clear errors.

use wgsd::gpu::{DType, KernelSpec, Recorder, Tensor};
use wgsd::ops::elementwise;

use crate::common::{Rng, assert_close, gpu};

/// 600 chained dispatches recorded into one recorder and submitted once give the same
/// result as the CPU; the arena keeps memory at a few tensors, not 600.
#[test]
fn hundreds_of_dispatches_in_one_submit_reuse_memory() {
    let gpu = gpu();
    let n = 4096;
    let mut rng = Rng::new(1);
    let x = rng.vec(n);
    let d = rng.vec(n);
    let tx = Tensor::from_f32(gpu, &[n], &x, DType::F32).unwrap();
    let td = Tensor::from_f32(gpu, &[n], &d, DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    let start = rec.dispatch_count();
    let mut acc = tx.clone();
    let mut want = x.clone();
    for i in 0..600 {
        acc = elementwise::add_scaled(&mut rec, &acc, &td, if i % 2 == 0 { 0.5 } else { 2.0 })
            .unwrap();
        for (w, dv) in want.iter_mut().zip(&d) {
            *w = (*w + dv) * if i % 2 == 0 { 0.5 } else { 2.0 };
        }
    }
    assert_eq!(rec.dispatch_count() - start, 600);
    let got = rec.read_f32(&acc).unwrap();
    assert_close("600 chained adds", &got, &want, 1e-4, 1e-5);
}

/// Dropping a tensor returns its buffer; the next tensor of that size reuses it.
#[test]
fn arena_reuses_freed_buffers() {
    let gpu = gpu();
    // An unusual size so that other tests running in parallel do not take the buffer.
    let shape = [12_345, 7];
    let a = Tensor::empty(gpu, &shape, DType::F32).unwrap();
    let ptr = format!("{:?}", a.buffer());
    drop(a);
    let b = Tensor::empty(gpu, &shape, DType::F32).unwrap();
    assert_eq!(
        format!("{:?}", b.buffer()),
        ptr,
        "the freed buffer was not reused"
    );
}

wgsd::shader_params! {
    struct P {
        n: u32,
    }
}

/// A kernel compiles once per (source, entry, defines, constants).
#[test]
fn pipeline_cache_compiles_once() {
    let gpu = gpu();
    let src = "@group(0) @binding(0) var<uniform> p: Params;\n@group(0) @binding(1) var<storage, read_write> o: array<f32>;\noverride K: f32 = 1.0;\n@compute @workgroup_size(1) fn main() { o[0] = f32(p.n) * K * ${SCALE}; }";
    let spec = KernelSpec::new("cache-test", src, "main")
        .params::<P>()
        .define("SCALE", "2.0");
    let p1 = gpu.kernel(&spec).unwrap();
    let p2 = gpu.kernel(&spec).unwrap();
    assert!(std::sync::Arc::ptr_eq(&p1, &p2));
    let p3 = gpu.kernel(&spec.clone().constant("K", 3.0)).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&p1, &p3));
    // And it runs: 7 * 3 * 2.
    let out = Tensor::empty(gpu, &[4], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    rec.dispatch(&p3, &P { n: 7 }, &[out.whole(gpu).unwrap()], [1, 1, 1])
        .unwrap();
    assert_eq!(rec.read_f32(&out).unwrap()[0], 42.0);
}

/// A WGSL error is an `Error::Gpu` naming the kernel, not a panic.
#[test]
fn bad_kernel_is_an_error() {
    let gpu = gpu();
    let err = gpu
        .kernel(&KernelSpec::new("broken", "fn main( {", "main"))
        .unwrap_err();
    assert!(err.to_string().contains("broken"), "{err}");
}

/// Windows report the alignment shift; one larger than a binding is refused.
#[test]
fn windows_align_and_refuse_oversize() {
    let gpu = gpu();
    let t = Tensor::empty(gpu, &[1000], DType::F32).unwrap();
    let w = t.window(gpu, 77, 100).unwrap();
    assert_eq!(w.offset % gpu.caps.binding_align.max(4), 0);
    assert_eq!(w.offset / 4 + u64::from(w.shift), 77);
    let big = gpu.max_binding_elems(DType::F32) + 1024;
    let t = Tensor::empty(gpu, &[big], DType::F32).unwrap();
    assert!(t.window(gpu, 0, big).is_err());
    assert!(t.window(gpu, 0, big - 2048).is_ok());
}

/// Shape mismatches are errors, not panics.
#[test]
fn shape_errors() {
    let gpu = gpu();
    let a = Tensor::from_f32(gpu, &[2, 3], &[0.0; 6], DType::F32).unwrap();
    let b = Tensor::from_f32(gpu, &[4], &[0.0; 4], DType::F32).unwrap();
    let mut rec = Recorder::new(gpu);
    assert!(elementwise::add(&mut rec, &a, &b).is_err());
    assert!(Tensor::from_f32(gpu, &[5], &[0.0; 4], DType::F32).is_err());
    assert!(a.reshape(&[7]).is_err());
}

/// Threads recording at the same time never get each other's freed buffers: each one's
/// chained results stay exact while the others allocate and free the same sizes.
#[test]
fn concurrent_recorders_do_not_share_freed_buffers() {
    let gpu = gpu();
    let n = 3000;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                let mut rng = Rng::new(100 + t);
                let d = rng.vec(n);
                let td = Tensor::from_f32(gpu, &[n], &d, DType::F32).unwrap();
                for round in 0..15 {
                    let x = rng.vec(n);
                    let mut acc = Tensor::from_f32(gpu, &[n], &x, DType::F32).unwrap();
                    let mut want = x.clone();
                    let mut rec = Recorder::new(gpu);
                    for _ in 0..20 {
                        // Each intermediate is dropped right after use, so its buffer
                        // returns to the arena while the recording is still open.
                        acc = elementwise::add(&mut rec, &acc, &td).unwrap();
                        want.iter_mut().zip(&d).for_each(|(w, dv)| *w += dv);
                    }
                    let got = rec.read_f32(&acc).unwrap();
                    assert_close(
                        &format!("thread {t} round {round}"),
                        &got,
                        &want,
                        1e-5,
                        1e-5,
                    );
                }
            });
        }
    });
}

/// Size classes: never smaller, at most 12.5% larger, and monotonic.
#[test]
fn size_classes_bound_the_waste() {
    use wgsd::gpu::pool::size_class;
    let mut last = 0;
    for size in (256..(1u64 << 24)).step_by(4093) {
        let c = size_class(size);
        assert!(c >= size && c <= size + size / 8 + 256, "{size} -> {c}");
        assert!(c >= last);
        last = c;
    }
}

/// The arena plans by lifetime: running "denoising steps" whose tensors have many shapes
/// (as a UNet's do), the memory held (live + cached) never passes the largest live set.
#[test]
fn arena_peak_is_the_largest_live_set() {
    // A device of its own, so that no other test's tensors are counted.
    let gpu = wgsd::gpu::Gpu::from_env().expect("a second device on the adapter");
    let step = |phase: usize| {
        // Each tensor lives while the next two are made: 3 alive at most.
        let mut alive = std::collections::VecDeque::new();
        for i in 0..24usize {
            let n = 1000 + 37_000 * ((i * 7 + phase) % 11);
            alive.push_back(Tensor::empty(&gpu, &[n], DType::F32).unwrap());
            if alive.len() > 3 {
                alive.pop_front();
            }
        }
    };
    for phase in [0, 0, 1, 2, 0, 3, 5, 8] {
        step(phase);
        let s = gpu.memory_stats();
        assert_eq!(s.in_use, 0);
        assert!(
            s.peak <= s.peak_in_use,
            "after phase {phase}: held {} bytes at peak, the live set was at most {}",
            s.peak,
            s.peak_in_use
        );
    }
    // The largest live set here is 3 of the largest tensors (rounded to size classes).
    let largest = wgsd::gpu::pool::size_class(4 * (1000 + 37_000 * 10));
    assert!(gpu.memory_stats().peak_in_use <= 3 * largest);
}
