//! `Pipeline::warm_up`: after it, a request of that size builds no new GPU pipeline. Its
//! own test binary, so the process-wide GPU starts with no pipelines built.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use common::gpu;
use wgsd::loader::ArchiveOptions;
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions};
use wgsd::schedulers::Sampler;

fn tiny() -> Pipeline<'static> {
    let archive = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("weights/sd2-tiny.zip");
    let opts = PipelineOptions {
        archive: ArchiveOptions {
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
            ..ArchiveOptions::default()
        },
        ..PipelineOptions::default()
    };
    Pipeline::load(gpu(), &archive, &opts).expect("the tiny model loads")
}

#[test]
fn after_warm_up_a_generate_at_that_size_builds_no_pipeline() {
    let pipe = tiny();
    let before = gpu().pipeline_count();
    let w = pipe.warm_up(40, 32, 1).expect("warm-up");
    assert_eq!((w.width, w.height, w.batch), (40, 32, 1));
    assert!(w.pipelines_created > 0, "a cold GPU builds pipelines");
    assert_eq!(gpu().pipeline_count(), before + w.pipelines_created);

    let warm = gpu().pipeline_count();
    let req = GenerateRequest {
        steps: 3,
        width: 40,
        height: 32,
        seed: 7,
        ..GenerateRequest::new("a red fox in the snow")
    };
    let out = pipe.generate(&req).expect("generate");
    assert_eq!(out.images.len(), 1);
    assert_eq!(
        gpu().pipeline_count(),
        warm,
        "a request at the warmed-up size compiled new pipelines"
    );

    // Every sampler uses the kernels the archive's scheduler warmed up.
    for class in Sampler::all() {
        let r = GenerateRequest {
            scheduler: Some(class),
            ..req.clone()
        };
        pipe.generate(&r).expect("generate");
        assert_eq!(
            gpu().pipeline_count(),
            warm,
            "{class:?} built new pipelines"
        );
    }
    // So do no guidance and two images.
    for r in [
        GenerateRequest {
            guidance: 1.0,
            ..req.clone()
        },
        GenerateRequest {
            num_images_per_prompt: 2,
            ..req.clone()
        },
    ] {
        pipe.generate(&r).expect("generate");
        assert_eq!(gpu().pipeline_count(), warm, "{r:?} built new pipelines");
    }
    // A second warm-up at the same size has nothing left to build.
    let again = pipe.warm_up(40, 32, 1).expect("second warm-up");
    assert_eq!(again.pipelines_created, 0);
}

#[test]
fn warm_up_rejects_a_size_the_vae_cannot_decode() {
    let pipe = tiny();
    let e = pipe
        .warm_up(33, 32, 1)
        .expect_err("33 is not a multiple of 8");
    assert!(e.to_string().contains("multiple"), "{e}");
}
