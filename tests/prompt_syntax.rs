//! AUTOMATIC1111's prompt syntax in the engine ([`PromptSyntax::A1111`]): emphasis, `BREAK`,
//! 75-token chunks concatenated instead of cut, and prompt editing switching the
//! conditioning between steps.
//!
//! - Against diffusers fed with embeddings built the A1111 way by an independent Python
//!   implementation (tests/fixtures/prompt-syntax, make_prompt_syntax_fixtures.py):
//!   >= 60 dB, f32.
//! - Exact identities: a prompt without syntax, `(word:1.0)`, `[a:b:N]` with N = steps and
//!   `[x|x]` give the plain prompt's image bit for bit.
//! - Emphasis changes the image; a prompt past 75 tokens uses its second chunk (two
//!   prompts that differ only after token 75 are one image in diffusers' plain syntax, two
//!   in A1111's).
//!
//! The parser and chunker's own tests are unit tests in src/prompt/.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;
use wgsd::loader::ArchiveOptions;
use wgsd::pipeline::{GenerateRequest, Pipeline, PipelineOptions, PromptSyntax, VaeTiling};

use common::{gpu, psnr};

const MIN_PSNR: f64 = 60.0;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn pipeline() -> Pipeline<'static> {
    let opts = PipelineOptions {
        precision: wgsd::Precision::F32,
        archive: ArchiveOptions {
            cache_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("model-cache")),
            ..ArchiveOptions::default()
        },
    };
    Pipeline::load(gpu(), &root().join("weights/sd2-tiny.zip"), &opts).expect("load sd2-tiny")
}

fn a1111(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        seed: 5,
        steps: 2,
        width: 32,
        height: 32,
        vae_tiling: VaeTiling::Off,
        prompt_syntax: PromptSyntax::A1111,
        ..GenerateRequest::new(prompt)
    }
}

fn plain(prompt: &str) -> GenerateRequest {
    GenerateRequest {
        prompt_syntax: PromptSyntax::Plain,
        ..a1111(prompt)
    }
}

fn image(pipe: &Pipeline, req: &GenerateRequest) -> Vec<u8> {
    pipe.generate(req).expect("generate").images.remove(0).data
}

#[test]
fn a1111_prompts_match_diffusers_with_a1111_embeddings() {
    let dir = root().join("tests/fixtures/prompt-syntax");
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).expect("json"))
            .expect("json");
    let refs = std::fs::read(dir.join("reference.safetensors")).expect("safetensors");
    let st = safetensors::SafeTensors::deserialize(&refs).expect("safetensors");
    let pipe = pipeline();
    for case in json["cases"].as_array().expect("cases") {
        let name = case["case"].as_str().expect("case");
        let pre = case["tensor_prefix"].as_str().expect("prefix");
        let n = |k: &str| case[k].as_u64().expect(k) as usize;
        let neg = case["negative_prompt"].as_str().expect("negative_prompt");
        let req = GenerateRequest {
            seed: case["seed"].as_u64().expect("seed"),
            steps: n("num_inference_steps"),
            guidance: case["guidance_scale"].as_f64().expect("guidance") as f32,
            width: n("width"),
            height: n("height"),
            negative_prompts: if neg.is_empty() {
                Vec::new()
            } else {
                vec![neg.to_string()]
            },
            vae_tiling: VaeTiling::Off,
            prompt_syntax: PromptSyntax::A1111,
            ..GenerateRequest::new(case["prompt"].as_str().expect("prompt"))
        };
        let got = image(&pipe, &req);
        let want = st.tensor(&format!("{pre}.image_u8")).expect("image");
        let p = psnr(&got, want.data());
        // The same request in diffusers' plain syntax, for scale.
        let p_plain = psnr(
            &image(
                &pipe,
                &GenerateRequest {
                    prompt_syntax: PromptSyntax::Plain,
                    ..req.clone()
                },
            ),
            want.data(),
        );
        eprintln!(
            "{name} ({} chunks): PSNR {p:.1} dB (plain syntax against it: {p_plain:.1} dB)",
            case["chunks"]
        );
        assert!(p >= MIN_PSNR, "{name}: PSNR {p:.2} dB < {MIN_PSNR}");
        assert!(
            p_plain < 45.0,
            "{name}: the A1111 reading changed nothing ({p_plain:.1} dB)"
        );
    }
}

#[test]
fn weight_one_and_trivial_schedules_are_the_plain_image_exactly() {
    let pipe = pipeline();
    let base = "a red circle on a white background";
    let want = image(&pipe, &plain(base));
    for prompt in [
        base,
        "a (red:1.0) circle on a white background",
        "a [red circle:blue square:2] on a white background",
        "a [red|red] circle on a white background",
        "a red circle on a [:green:5]white background",
    ] {
        let got = image(&pipe, &a1111(prompt));
        assert!(got == want, "{prompt:?}: not the plain prompt's image");
    }
}

#[test]
fn emphasis_and_schedules_change_the_image() {
    let pipe = pipeline();
    // Three steps: A1111 runs `[a:b:1]`'s `a` for steps 0 and 1, `b` for step 2.
    let three = |p: &str| GenerateRequest {
        steps: 3,
        ..a1111(p)
    };
    let want = image(&pipe, &three("a red circle on a white background"));
    // (prompt, whether it must change the image a lot: emphasis does; a switch for the
    // last step only nudges it).
    for (prompt, far) in [
        ("a (red:1.6) circle on a white background", true),
        ("a ((red)) circle on a white background", true),
        ("a [red] circle on a white background", true),
        ("a [red circle:blue square:1] on a white background", false),
        ("a [red|blue] circle on a white background", false),
    ] {
        let got = image(&pipe, &three(prompt));
        let p = psnr(&got, &want);
        eprintln!("{prompt:?}: {p:.1} dB from the plain prompt");
        assert!(got != want, "{prompt:?}: the same image");
        if far {
            assert!(p < 60.0, "{prompt:?}: nearly the same image ({p:.1} dB)");
        }
    }
}

#[test]
fn a_prompt_past_75_tokens_uses_its_second_chunk() {
    let pipe = pipeline();
    let head = "tree, ".repeat(40); // 80 tokens: "tree" "," per repeat
    let (a, b) = (format!("{head}red sky"), format!("{head}green sea"));
    // diffusers cuts both at 77 tokens: one image.
    assert!(image(&pipe, &plain(&a)) == image(&pipe, &plain(&b)));
    // A1111 encodes the rest as a second chunk: two images.
    let (ia, ib) = (image(&pipe, &a1111(&a)), image(&pipe, &a1111(&b)));
    assert!(psnr(&ia, &ib) < 60.0, "the second chunk is ignored");
}

#[test]
fn requests_with_different_chunk_counts_do_not_batch() {
    let pipe = pipeline();
    let short = a1111("a red circle");
    let long = a1111(&"tree, ".repeat(50));
    let (ks, kl) = (
        pipe.batch_key(&short).expect("key"),
        pipe.batch_key(&long).expect("key"),
    );
    assert_eq!((ks.prompt_chunks, kl.prompt_chunks), (1, 2));
    assert_ne!(ks, kl);
    assert_ne!(pipe.batch_key(&plain("a red circle")), Some(ks));
}
