//! Model archive loading (zip, TorchServe .mar, folder, cache reuse, hostile archives) and
//! safetensors weights (conversion on upload, the named errors).

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use wgsd::Error;
use wgsd::gpu::{DType, Recorder};
use wgsd::loader::{
    ArchiveOptions, ClipTextConfig, LoadError, SafetensorsFile, SourceKind, VarBuilder,
    find_weights_file, manifest_version, open_model_with,
};
use zip::write::SimpleFileOptions;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn opts(cache: &Path) -> ArchiveOptions {
    ArchiveOptions {
        cache_dir: Some(cache.to_path_buf()),
        ..Default::default()
    }
}

/// Writes a zip with the given (name, bytes) entries; `symlinks` are (name, target).
fn make_zip(path: &Path, files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) {
    let f = std::fs::File::create(path).expect("create zip");
    let mut z = zip::ZipWriter::new(f);
    let o = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in files {
        z.start_file(*name, o).expect("start_file");
        z.write_all(data).expect("write");
    }
    for (name, target) in symlinks {
        z.add_symlink(*name, *target, o).expect("symlink");
    }
    z.finish().expect("finish zip");
}

const INDEX: &[u8] = br#"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.42.1",
  "text_encoder": ["transformers", "CLIPTextModel"], "safety_checker": [null, null],
  "requires_safety_checker": false}"#;

/// Files under the folder (relative names), sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).expect("read_dir").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(base).expect("prefix").display().to_string());
            if p.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn load_err(e: Error) -> LoadError {
    match e {
        Error::Load(l) => l,
        other => panic!("expected a load error, got {other}"),
    }
}

#[test]
fn zip_fixture_extracts_once_and_is_reused() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    let m = open_model_with(&repo("weights/sd2-tiny.zip"), &opts(&cache)).expect("open zip");
    assert_eq!(m.kind, SourceKind::Zip);
    assert!(m.extracted_now);
    assert!(
        m.root.starts_with(&cache),
        "{} outside the cache",
        m.root.display()
    );
    assert_eq!(m.index.class_name, "StableDiffusionPipeline");
    for c in ["text_encoder", "tokenizer", "unet", "vae", "scheduler"] {
        assert!(m.component(c).is_ok(), "component {c}");
        assert!(m.index.components.contains_key(c), "model_index lists {c}");
    }
    let te = ClipTextConfig::read(&m.root).expect("text encoder config");
    assert_eq!(te.hidden_act, "gelu");
    assert_eq!(te.hidden_size, 16);

    // A second start finds the extracted folder: no re-extraction (a marker survives).
    let marker = m.root.join("marker");
    std::fs::write(&marker, b"x").expect("marker");
    let again = open_model_with(&repo("weights/sd2-tiny.zip"), &opts(&cache)).expect("reopen");
    assert!(!again.extracted_now);
    assert_eq!(again.root, m.root);
    assert!(marker.exists(), "the cached folder was re-extracted");
    // Only the hash-named folder is in the cache (no leftover partial folders).
    let top: Vec<_> = std::fs::read_dir(&cache)
        .expect("cache")
        .flatten()
        .collect();
    assert_eq!(top.len(), 1, "{:?}", tree(&cache));
    assert_eq!(top[0].file_name().len(), 64, "named by the SHA-256");

    // The extracted folder also loads in place.
    let f = open_model_with(&m.root, &opts(&tmp.path().join("unused"))).expect("folder");
    assert_eq!(f.kind, SourceKind::Folder);
    assert_eq!(f.root, m.root);
    assert!(
        !tmp.path().join("unused").exists(),
        "a folder is used in place"
    );
}

#[test]
fn mar_fixture_unpacks_inner_model_zip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = open_model_with(
        &repo("tests/fixtures/sd2-tiny/sd2-tiny.mar"),
        &opts(tmp.path()),
    )
    .expect("open .mar");
    assert_eq!(m.kind, SourceKind::Mar);
    assert!(m.handler.is_some(), "handler named in MANIFEST.json");
    assert!(m.root.join("model_index.json").is_file());
    assert!(m.root.join("unet").join("config.json").is_file());
    assert!(m.root.starts_with(tmp.path()));
    // torch-model-archiver's default version, read without extracting.
    assert_eq!(
        manifest_version(&repo("tests/fixtures/sd2-tiny/sd2-tiny.mar")).as_deref(),
        Some("1.0")
    );
    assert_eq!(manifest_version(&repo("weights/sd2-tiny.zip")), None);
}

#[test]
fn hand_made_mar_and_nested_zip_folder() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // model.zip made with `zip -r model.zip folder/`: the pipeline is one level down.
    let inner = tmp.path().join("model.zip");
    make_zip(
        &inner,
        &[
            ("sd/model_index.json", INDEX),
            ("sd/text_encoder/config.json", b"{}"),
        ],
        &[],
    );
    let inner_bytes = std::fs::read(&inner).expect("read");
    let manifest = br#"{"model": {"modelName": "sd", "handler": "stable_diffusion_handler.py"}}"#;
    let mar = tmp.path().join("sd.mar");
    make_zip(
        &mar,
        &[
            ("MAR-INF/MANIFEST.json", manifest),
            ("model.zip", &inner_bytes),
        ],
        &[],
    );
    let cache = tmp.path().join("cache");
    let m = open_model_with(&mar, &opts(&cache)).expect("open mar");
    assert_eq!(m.kind, SourceKind::Mar);
    assert_eq!(m.handler.as_deref(), Some("stable_diffusion_handler.py"));
    assert_eq!(
        manifest_version(&mar),
        None,
        "no modelVersion in this manifest"
    );
    let versioned = tmp.path().join("sd-v2.mar");
    make_zip(
        &versioned,
        &[(
            "MAR-INF/MANIFEST.json",
            br#"{"model": {"modelName": "sd", "modelVersion": "2.5"}}"#,
        )],
        &[],
    );
    assert_eq!(manifest_version(&versioned).as_deref(), Some("2.5"));
    assert!(m.root.ends_with("sd"));
    assert!(!m.root.join("model.zip").exists());
    let z = open_model_with(&inner, &opts(&cache)).expect("open nested zip");
    assert_eq!(z.kind, SourceKind::Zip);
    assert_eq!(z.index.class_of("text_encoder"), Some("CLIPTextModel"));
    assert_eq!(z.index.class_of("safety_checker"), None);
    // Missing component: named.
    let e = z.component("unet").expect_err("no unet");
    assert!(e.to_string().contains("no unet/ folder"), "{e}");
}

/// Opens a hostile archive; asserts it is refused with `want` in the message and that
/// nothing was written outside (or left inside) the cache.
fn refuse(files: &[(&str, &[u8])], links: &[(&str, &str)], max: Option<u64>, want: &str) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let zip_path = tmp.path().join("bad.zip");
    make_zip(&zip_path, files, links);
    let cache = tmp.path().join("a").join("cache");
    let mut o = opts(&cache);
    if let Some(m) = max {
        o.max_extract_bytes = m;
    }
    let e = open_model_with(&zip_path, &o).expect_err("hostile archive accepted");
    let msg = e.to_string();
    assert!(msg.contains(want), "error {msg:?} lacks {want:?}");
    assert!(msg.contains("bad.zip"), "error names the archive: {msg}");
    let mut all = tree(tmp.path());
    all.retain(|p| p != "bad.zip" && p != "a" && p != "a/cache");
    assert!(all.is_empty(), "files left behind: {all:?}");
}

#[test]
fn zip_slip_entries_are_refused() {
    refuse(
        &[("model_index.json", INDEX), ("../evil.txt", b"x")],
        &[],
        None,
        "`..`",
    );
    refuse(
        &[("model_index.json", INDEX), ("a/../../evil.txt", b"x")],
        &[],
        None,
        "`..`",
    );
    refuse(&[("/tmp/wgsd-evil.txt", b"x")], &[], None, "absolute path");
    refuse(
        &[("model_index.json", INDEX)],
        &[("link", "/etc")],
        None,
        "symbolic link",
    );
    assert!(!Path::new("/tmp/wgsd-evil.txt").exists());
}

#[test]
fn extraction_size_is_bounded() {
    // Incompressible, so the ratio bound does not refuse it first.
    let mut rng = common::Rng::new(3);
    let big: Vec<u8> = (0..1 << 20).map(|_| rng.next_u64() as u8).collect();
    refuse(
        &[("model_index.json", INDEX), ("big.bin", &big)],
        &[],
        Some(100_000),
        "more than 100000 bytes",
    );
}

/// A zip bomb (64 MiB of zeros deflates ~1000x) is refused from the central directory,
/// before anything is written, under the default 16 GiB size bound.
#[test]
fn zip_bombs_are_refused_by_ratio() {
    let zeros = vec![0u8; 64 << 20];
    refuse(
        &[("model_index.json", INDEX), ("unet/weights.bin", &zeros)],
        &[],
        None,
        "zip bomb",
    );
}

/// Archives with more entries than a model can have are refused before extraction.
#[test]
fn entry_count_is_bounded() {
    let names: Vec<String> = (0..=wgsd::loader::archive::DEFAULT_MAX_ENTRIES)
        .map(|i| format!("f/{i}"))
        .collect();
    let mut files: Vec<(&str, &[u8])> = vec![("model_index.json", INDEX)];
    files.extend(names.iter().map(|n| (n.as_str(), &b""[..])));
    refuse(&files, &[], None, "entries");
}

/// An archive that is not a pipeline is extracted, found wanting, and removed: the
/// cache holds nothing afterwards.
#[test]
fn a_refused_pipeline_leaves_nothing_in_the_cache() {
    refuse(&[("readme.txt", b"hello")], &[], None, "model_index.json");
}

#[test]
fn not_a_pipeline_and_not_a_zip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let z = tmp.path().join("empty.zip");
    make_zip(&z, &[("readme.txt", b"hi")], &[]);
    let e = open_model_with(&z, &opts(&tmp.path().join("c"))).expect_err("no model_index");
    assert!(e.to_string().contains("model_index.json"), "{e}");
    let junk = tmp.path().join("junk.zip");
    std::fs::write(&junk, b"this is not a zip file").expect("write");
    let e = open_model_with(&junk, &opts(&tmp.path().join("c"))).expect_err("junk");
    assert!(e.to_string().contains("not a usable model archive"), "{e}");
    let e =
        open_model_with(&tmp.path().join("missing.zip"), &opts(tmp.path())).expect_err("missing");
    assert!(e.to_string().contains("missing.zip"), "{e}");
}

/// A safetensors file with tensors of several dtypes; returns its path.
fn write_safetensors(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                TensorView::new(*d, s.clone(), b).expect("view"),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).expect("serialize");
    std::fs::write(path, bytes).expect("write safetensors");
}

fn sample_values() -> Vec<f32> {
    // Exactly representable in f16 and bf16 plus values that need rounding.
    let mut v = vec![
        0.0,
        1.0,
        -2.5,
        0.15625,
        65504.0,
        -0.0009765625,
        3.0e-5,
        1.0 / 3.0,
    ];
    let mut rng = common::Rng::new(7);
    v.extend(rng.vec(16).iter().map(|x| x * 10.0));
    v
}

#[test]
fn weights_convert_on_upload() {
    let gpu = common::gpu();
    let tmp = tempfile::tempdir().expect("tempdir");
    let vals = sample_values();
    let n = vals.len();
    let f32b: Vec<u8> = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
    let f16b: Vec<u8> = vals
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let bf16b: Vec<u8> = vals
        .iter()
        .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
        .collect();
    let path = tmp.path().join("model.safetensors");
    write_safetensors(
        &path,
        &[
            ("blocks.0.a", Dtype::F32, vec![4, n / 4], f32b),
            ("blocks.0.h", Dtype::F16, vec![n], f16b),
            ("blocks.0.b", Dtype::BF16, vec![n], bf16b),
            ("unused.x", Dtype::F32, vec![1], 1f32.to_le_bytes().to_vec()),
        ],
    );
    assert_eq!(find_weights_file(tmp.path()).expect("found"), path);
    let vb = VarBuilder::from_component(gpu, tmp.path(), DType::F16).expect("open");
    let b0 = vb.pp("blocks").pp(0);
    assert_eq!(b0.key("a"), "blocks.0.a");
    let mut rec = Recorder::new(gpu);
    let to_f16 = |x: f32| half::f16::from_f32(x).to_f32();
    let to_bf16 = |x: f32| half::bf16::from_f32(x).to_f32();
    let cases: Vec<(&str, Vec<usize>, DType, Vec<f32>)> = vec![
        ("a", vec![4, n / 4], DType::F32, vals.clone()),
        (
            "a",
            vec![4, n / 4],
            DType::F16,
            vals.iter().map(|&x| to_f16(x)).collect(),
        ),
        (
            "h",
            vec![n],
            DType::F32,
            vals.iter().map(|&x| to_f16(x)).collect(),
        ),
        (
            "h",
            vec![n],
            DType::F16,
            vals.iter().map(|&x| to_f16(x)).collect(),
        ),
        (
            "b",
            vec![n],
            DType::F32,
            vals.iter().map(|&x| to_bf16(x)).collect(),
        ),
        (
            "b",
            vec![n],
            DType::F16,
            vals.iter().map(|&x| to_f16(to_bf16(x))).collect(),
        ),
    ];
    for (name, shape, dtype, want) in cases {
        let t = b0.get(&shape, name, dtype).expect("get");
        assert_eq!(t.dtype(), dtype);
        assert_eq!(t.shape(), &shape[..]);
        let got = rec.read_f32(&t).expect("read back");
        // Conversions are exact roundings: compare bit for bit.
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                g.to_bits(),
                w.to_bits(),
                "{name} as {dtype:?}[{i}]: got {g} expected {w}"
            );
        }
    }
    assert_eq!(
        b0.get_weight(&[n], "h").expect("weight").dtype(),
        DType::F16
    );
    assert_eq!(b0.get_f32(&[n], "h").expect("f32").dtype(), DType::F32);
    assert_eq!(b0.get_f32_host(&[4, n / 4], "a").expect("host"), vals);
    assert_eq!(vb.unused_keys(), vec!["unused.x".to_string()]);
}

#[test]
fn weight_errors_name_file_and_tensor() {
    let gpu = common::gpu();
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("diffusion_pytorch_model.safetensors");
    let data: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
    let ints: Vec<u8> = (0..2i64).flat_map(|i| i.to_le_bytes()).collect();
    write_safetensors(
        &path,
        &[
            ("conv.weight", Dtype::F32, vec![2, 3], data),
            ("position_ids", Dtype::I64, vec![2], ints),
        ],
    );
    let vb = VarBuilder::from_file(gpu, &path, DType::F32).expect("open");
    let file = path.display().to_string();

    let e = load_err(vb.pp("conv").get_f32(&[3, 2], "weight").expect_err("shape"));
    assert!(matches!(e, LoadError::Shape { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&file)
            && msg.contains("conv.weight")
            && msg.contains("[2, 3]")
            && msg.contains("[3, 2]"),
        "{msg}"
    );

    let e = load_err(vb.pp("conv").get_f32(&[2], "bias").expect_err("missing"));
    assert!(matches!(e, LoadError::MissingTensor { .. }), "{e:?}");
    assert!(
        e.to_string().contains("conv.bias") && e.to_string().contains(&file),
        "{e}"
    );

    let e = load_err(vb.get_f32(&[2], "position_ids").expect_err("i64"));
    assert!(matches!(e, LoadError::UnsupportedDType { .. }), "{e:?}");
    assert!(
        e.to_string().contains("I64") && e.to_string().contains("position_ids"),
        "{e}"
    );

    // Truncated: drop the last bytes of the data section.
    let bytes = std::fs::read(&path).expect("read");
    let cut = tmp.path().join("cut.safetensors");
    std::fs::write(&cut, &bytes[..bytes.len() - 5]).expect("write");
    let e = SafetensorsFile::open(&cut).expect_err("truncated");
    assert!(matches!(e, LoadError::Corrupt { .. }), "{e:?}");
    assert!(
        e.to_string().contains("cut.safetensors") && e.to_string().contains("truncated"),
        "{e}"
    );
    // Garbage header.
    std::fs::write(&cut, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}").expect("write");
    assert!(matches!(
        SafetensorsFile::open(&cut),
        Err(LoadError::Corrupt { .. })
    ));
}

#[test]
fn pickle_only_and_missing_weights_are_explained() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let unet = tmp.path().join("unet");
    std::fs::create_dir(&unet).expect("mkdir");
    let e = find_weights_file(&unet).expect_err("empty");
    assert!(matches!(e, LoadError::NoWeights { .. }), "{e:?}");
    assert!(
        e.to_string()
            .contains("diffusion_pytorch_model.safetensors"),
        "{e}"
    );
    std::fs::write(unet.join("diffusion_pytorch_model.bin"), b"pickle").expect("write");
    let e = find_weights_file(&unet).expect_err("pickle");
    let msg = e.to_string();
    assert!(matches!(e, LoadError::PickleOnly { .. }), "{e:?}");
    assert!(
        msg.contains("diffusion_pytorch_model.bin") && msg.contains("safe_serialization=True"),
        "{msg}"
    );
    let e = find_weights_file(&tmp.path().join("vae")).expect_err("no vae");
    assert!(e.to_string().contains("no vae/ folder"), "{e}");
}

#[test]
fn fixture_weights_load_in_both_storage_dtypes() {
    let gpu = common::gpu();
    let tmp = tempfile::tempdir().expect("tempdir");
    for archive in [
        "weights/sd2-tiny.zip",
        "tests/fixtures/sd1-tiny-fp16/model.zip",
    ] {
        let m = open_model_with(&repo(archive), &opts(tmp.path())).expect("open");
        let cfg = ClipTextConfig::read(&m.root).expect("config");
        let te = m.component("text_encoder").expect("text_encoder");
        let vb = VarBuilder::from_component(gpu, &te, DType::F32).expect("weights");
        let emb = vb
            .pp_if_present("text_model")
            .pp("embeddings")
            .pp("token_embedding");
        let shape = [cfg.vocab_size, cfg.hidden_size];
        let host = emb.get_f32_host(&shape, "weight").expect("host");
        let mut rec = Recorder::new(gpu);
        let dev = rec
            .read_f32(&emb.get_f32(&shape, "weight").expect("gpu"))
            .expect("read");
        assert_eq!(host, dev, "{archive}: f32 upload");
        assert!(
            !vb.pp_if_present("text_model")
                .prefix()
                .starts_with("text_model")
        );
        // The fixture rounds the embedding to multiples of 2^-10: f16 storage is exact.
        let h = rec
            .read_f32(&emb.get(&shape, "weight", DType::F16).expect("f16"))
            .expect("read");
        common::assert_close(archive, &h, &host, 0.0, 1e-3);
    }
}
