//! Schedulers against diffusers 0.42.1 (tests/fixtures/schedulers, made by
//! tests/fixtures/make_fixtures.py, and tests/fixtures/samplers, made by
//! make_sampler_fixtures.py): 19 + 18 standalone 10-step runs fed the stored model
//! outputs, step plans applied by the CPU reference of the fused step kernel (and a few
//! through the GPU kernel); timesteps / sigmas / init_noise_sigma / input scales; class
//! switching from the archives' scheduler_config.json as diffusers' `from_config` does;
//! clear errors for unsupported configs.
//!
//! Tolerances: latents within 1e-5 of the step's largest |value| (diffusers computes the
//! step in float32 torch ops, we fold it into float64 coefficients); sigmas, scales and
//! init_noise_sigma within 1e-6 relative; timesteps exact (1e-12, JSON parsing).

#[path = "common/mod.rs"]
mod common;

use std::io::Read;

use safetensors::SafeTensors;
use serde_json::Value;
use wgsd::gpu::{DType, Recorder, Tensor};
use wgsd::ops::scheduler_step::{self, SLOTS, cpu};
use wgsd::rng::TorchGenerator;
use wgsd::schedulers::{self, Sampler, SchedulerConfig, quote_nonfinite_tokens};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
/// Latents: max |got - want| / max |want| per step.
const LATENT_TOL: f64 = 1e-5;
const SCALAR_TOL: f64 = 1e-6;
/// Timesteps are integers or float32 values: equal up to serde_json's float parsing
/// (not always correctly rounded in the last bit).
const TIME_TOL: f64 = 1e-12;
/// Fractional timesteps: 4 float32 ulps.
const FRACTIONAL_TIME_TOL: f64 = 5e-7;

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&quote_nonfinite_tokens(&text)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array, got {v}"))
        .iter()
        .map(|x| x.as_f64().expect("number"))
        .collect()
}

struct Fixture {
    json: Value,
    bytes: Vec<u8>,
}

impl Fixture {
    /// `dir`: `schedulers` (the original six classes, make_fixtures.py) or `samplers`
    /// (UniPC, Karras sigmas, DPM++ 2M SDE, trailing spacing; make_sampler_fixtures.py).
    fn load(dir: &str) -> Fixture {
        let path = format!("{DIR}/{dir}/reference.safetensors");
        Fixture {
            json: read_json(&format!("{DIR}/{dir}/reference.json")),
            bytes: std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
        }
    }

    fn all() -> [Fixture; 2] {
        [Fixture::load("schedulers"), Fixture::load("samplers")]
    }

    fn tensor(&self, name: &str) -> Vec<f32> {
        let st = SafeTensors::deserialize(&self.bytes).expect("safetensors");
        let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    fn cases(&self) -> &[Value] {
        self.json["cases"].as_array().expect("cases")
    }

    fn shape(&self) -> Vec<usize> {
        f64s(&self.json["sample_shape"])
            .iter()
            .map(|&v| v as usize)
            .collect()
    }
}

fn build(case: &Value) -> Box<dyn schedulers::Scheduler> {
    let cfg = SchedulerConfig::from_json_str(&case["effective_config"].to_string()).unwrap();
    let class = Sampler::parse(case["class"].as_str().unwrap()).unwrap();
    schedulers::from_config(&cfg, Some(class)).unwrap()
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    let err = (got - want).abs() / want.abs().max(1e-30);
    assert!(
        err <= tol || got == want,
        "{what}: got {got} expected {want} (rel {err:e} > {tol:e})"
    );
}

fn close_all(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length {got:?} vs {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        close(&format!("{what}[{i}]"), g, w, tol);
    }
}

/// Integer timesteps exactly; fractional ones (Karras sigmas mapped back to timesteps
/// through numpy's float32 `np.log`, whose SIMD implementation is not correctly rounded
/// and differs between CPUs) within a few float32 ulps.
fn check_timesteps(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length {got:?} vs {want:?}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = if w.fract() == 0.0 {
            TIME_TOL
        } else {
            FRACTIONAL_TIME_TOL
        };
        close(&format!("{what}[{i}]"), g, w, tol);
    }
}

/// max |got - want| / max |want|.
fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    let scale = want.iter().fold(0f64, |m, &w| m.max(f64::from(w).abs()));
    let diff = got.iter().zip(want).fold(0f64, |m, (&g, &w)| {
        m.max((f64::from(g) - f64::from(w)).abs())
    });
    diff / scale
}

#[test]
fn schedules_match_diffusers() {
    for fx in Fixture::all() {
        schedules_match(&fx);
    }
}

fn schedules_match(fx: &Fixture) {
    for case in fx.cases() {
        let name = case["case"].as_str().unwrap();
        for (n, want) in [(10usize, case), (50, &case["steps50"])] {
            let mut s = build(case);
            s.set_timesteps(n).unwrap();
            check_timesteps(
                &format!("{name} {n} timesteps"),
                s.timesteps(),
                &f64s(&want["timesteps"]),
            );
            match (s.sigmas(), want.get("sigmas")) {
                (Some(got), Some(w)) => {
                    close_all(&format!("{name} {n} sigmas"), got, &f64s(w), SCALAR_TOL)
                }
                (None, None) => {}
                (g, w) => panic!("{name}: sigmas presence differs: got {g:?}, expected {w:?}"),
            }
        }
        let mut s = build(case);
        s.set_timesteps(10).unwrap();
        close(
            &format!("{name} init_noise_sigma"),
            s.init_noise_sigma(),
            case["init_noise_sigma"].as_f64().unwrap(),
            SCALAR_TOL,
        );
        let factors = f64s(&case["scale_model_input_factor"]);
        let got: Vec<f64> = (0..factors.len())
            .map(|i| s.scale_model_input_factor(i))
            .collect();
        close_all(&format!("{name} scale factors"), &got, &factors, SCALAR_TOL);
    }
}

/// Runs one case on the CPU reference; returns the worst per-step error.
fn run_cpu(fx: &Fixture, case: &Value) -> f64 {
    let name = case["case"].as_str().unwrap();
    let prefix = case["tensor_prefix"].as_str().unwrap();
    let shape = fx.shape();
    let mut s = build(case);
    s.set_timesteps(10).unwrap();
    let mut x = fx.tensor(&format!("{prefix}.sample0"));
    let mut hist = vec![vec![0f32; x.len()]; SLOTS];
    let mut generator = case["generator_seed"].as_u64().map(TorchGenerator::new);
    let mut worst = 0f64;
    for i in 0..s.timesteps().len() {
        let step = format!("{prefix}.step{i}");
        let factor = s.scale_model_input_factor(i);
        if factor != 1.0 {
            let scaled: Vec<f32> = x.iter().map(|&v| (f64::from(v) * factor) as f32).collect();
            let err = rel_err(&scaled, &fx.tensor(&format!("{step}.scaled")));
            assert!(
                err <= LATENT_TOL,
                "{name} step {i}: scaled input off by {err:e}"
            );
        }
        let plan = s.step(i).unwrap();
        let noise = plan.draws_noise.then(|| {
            generator
                .as_mut()
                .expect("ancestral case without generator seed")
                .randn(&shape)
                .unwrap()
        });
        let mo = fx.tensor(&format!("{step}.model_output"));
        cpu::scheduler_step(&plan, &mut x, &mo, None, &mut hist, noise.as_deref()).unwrap();
        let err = rel_err(&x, &fx.tensor(&format!("{step}.prev_sample")));
        assert!(
            err <= LATENT_TOL,
            "{name} step {i}: latents off by {err:e} of their scale"
        );
        worst = worst.max(err);
    }
    worst
}

#[test]
fn steps_match_diffusers_cpu_reference() {
    for fx in Fixture::all() {
        for case in fx.cases() {
            let worst = run_cpu(&fx, case);
            eprintln!(
                "{:40} max error {worst:.2e}",
                case["case"].as_str().unwrap()
            );
        }
    }
}

#[test]
fn steps_match_diffusers_on_gpu() {
    let gpu = common::gpu();
    for (dir, name) in [
        ("schedulers", "pndm_v"),
        ("schedulers", "euler_ancestral_eps"),
        ("schedulers", "dpmpp2m_v"),
        ("schedulers", "lms_linear_trailing_eps"),
        ("schedulers", "ddim_linear_clip_eps"),
        // Four history slots, writes that combine old slots (UniPC's corrected sample).
        ("samplers", "unipc_order3_bh1_v"),
        ("samplers", "unipc_eps"),
        ("samplers", "dpmpp2m_sde_karras_v"),
    ] {
        let fx = Fixture::load(dir);
        let shape = fx.shape();
        let case = fx
            .cases()
            .iter()
            .find(|c| c["case"] == name)
            .unwrap_or_else(|| panic!("no case {name}"));
        let prefix = case["tensor_prefix"].as_str().unwrap();
        let mut s = build(case);
        s.set_timesteps(10).unwrap();
        let x = Tensor::from_f32(
            gpu,
            &shape,
            &fx.tensor(&format!("{prefix}.sample0")),
            DType::F32,
        )
        .unwrap();
        let hist: Vec<Tensor> = (0..s.history_slots())
            .map(|_| Tensor::empty(gpu, &shape, DType::F32).unwrap())
            .collect();
        let mut generator = case["generator_seed"].as_u64().map(TorchGenerator::new);
        let mut worst = 0f64;
        for i in 0..s.timesteps().len() {
            let step = format!("{prefix}.step{i}");
            let plan = s.step(i).unwrap();
            let noise = plan.draws_noise.then(|| {
                let z = generator.as_mut().unwrap().randn(&shape).unwrap();
                Tensor::from_f32(gpu, &shape, &z, DType::F32).unwrap()
            });
            let mo = Tensor::from_f32(
                gpu,
                &shape,
                &fx.tensor(&format!("{step}.model_output")),
                DType::F32,
            )
            .unwrap();
            let mut rec = Recorder::new(gpu);
            scheduler_step::scheduler_step(&mut rec, &plan, &x, &mo, None, &hist, noise.as_ref())
                .unwrap();
            let got = rec.read_f32(&x).unwrap();
            let err = rel_err(&got, &fx.tensor(&format!("{step}.prev_sample")));
            assert!(
                err <= LATENT_TOL,
                "{name} step {i} (GPU): latents off by {err:e} of their scale"
            );
            worst = worst.max(err);
        }
        eprintln!("{name:40} GPU max error {worst:.2e}");
    }
}

fn archive_scheduler_config(zip_path: &str) -> SchedulerConfig {
    let file = std::fs::File::open(zip_path).unwrap_or_else(|e| panic!("{zip_path}: {e}"));
    let mut z = zip::ZipArchive::new(file).unwrap();
    let name = z
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .find(|n| n.ends_with("scheduler/scheduler_config.json"))
        .expect("scheduler_config.json in the archive");
    let mut text = String::new();
    z.by_name(&name).unwrap().read_to_string(&mut text).unwrap();
    SchedulerConfig::from_json_str(&text).unwrap()
}

/// Every e2e case of both pipelines built its scheduler with
/// `Cls.from_config(archive_config)`: timesteps, sigmas and init_noise_sigma must agree.
#[test]
fn from_config_switches_class_like_diffusers() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (zip, reference, default) in [
        (
            format!("{root}/weights/sd2-tiny.zip"),
            format!("{DIR}/sd2-tiny/reference.json"),
            "DDIMScheduler",
        ),
        (
            format!("{DIR}/sd1-tiny-fp16/model.zip"),
            format!("{DIR}/sd1-tiny-fp16/reference.json"),
            "PNDMScheduler",
        ),
    ] {
        let cfg = archive_scheduler_config(&zip);
        assert_eq!(
            schedulers::from_config(&cfg, None).unwrap().class_name(),
            default
        );
        for case in read_json(&reference)["e2e"].as_array().unwrap() {
            let name = case["case"].as_str().unwrap();
            let class = Sampler::parse(case["scheduler"].as_str().unwrap()).unwrap();
            let mut s = schedulers::from_config(&cfg, Some(class)).unwrap();
            s.set_timesteps(case["num_inference_steps"].as_u64().unwrap() as usize)
                .unwrap();
            close_all(
                &format!("{name} timesteps"),
                s.timesteps(),
                &f64s(&case["timesteps"]),
                TIME_TOL,
            );
            if let Some(w) = case.get("sigmas").filter(|v| !v.is_null()) {
                close_all(
                    &format!("{name} sigmas"),
                    s.sigmas().unwrap(),
                    &f64s(w),
                    SCALAR_TOL,
                );
            }
            close(
                &format!("{name} init_noise_sigma"),
                s.init_noise_sigma(),
                case["init_noise_sigma"].as_f64().unwrap(),
                SCALAR_TOL,
            );
        }
    }
}

#[test]
fn config_parsing() {
    // Bare -Infinity / NaN tokens (Python json), but not inside strings.
    let cfg = SchedulerConfig::from_json_str(
        r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
            "beta_start": NaN, "algorithm_type": "dpmsolver++", "note": "say \"NaN\" -Infinity"}"#,
    )
    .unwrap();
    assert_eq!(cfg.lambda_min_clipped, Some(f64::NEG_INFINITY));
    assert!(cfg.beta_start.unwrap().is_nan());
    assert_eq!(
        quote_nonfinite_tokens(r#"{"a": "x NaN \" Infinity", "b": Infinity}"#),
        r#"{"a": "x NaN \" Infinity", "b": "Infinity"}"#
    );
    // _use_default_values: those keys count as absent, so the new class's defaults apply.
    let cfg = SchedulerConfig::from_json_str(
        r#"{"_class_name": "PNDMScheduler", "timestep_spacing": "leading", "steps_offset": 1,
            "_use_default_values": ["timestep_spacing"]}"#,
    )
    .unwrap();
    assert_eq!(cfg.timestep_spacing, None);
    let mut euler = schedulers::from_config(&cfg, Some(Sampler::parse("euler").unwrap())).unwrap();
    euler.set_timesteps(4).unwrap();
    assert_eq!(euler.timesteps(), &[999.0, 666.0, 333.0, 0.0]);
    // Aliases.
    for (alias, name) in [
        ("euler_a", "euler_a"),
        ("dpm++2m", "dpm++2m"),
        ("LMS", "lms"),
        ("ddimscheduler", "ddim"),
        ("PNDM", "pndm"),
        ("EulerDiscrete", "euler"),
        ("EulerDiscreteScheduler", "euler"),
        ("Euler a", "euler_a"),
        ("DPM++ 2M Karras", "dpm++2m_karras"),
        ("dpm++ 2m sde karras", "dpm++2m_sde_karras"),
        ("DPM++ 2M SDE", "dpm++2m_sde"),
        ("UniPC", "unipc"),
        ("UniPCMultistepScheduler", "unipc"),
        ("PLMS", "pndm"),
        ("LMS Karras", "lms_karras"),
        ("Euler Karras", "euler_karras"),
    ] {
        assert_eq!(Sampler::parse(alias).unwrap().name(), name, "{alias}");
    }
    // Every sampler parses back from its own names.
    for s in Sampler::all() {
        assert_eq!(Sampler::parse(s.name()).unwrap(), s);
        assert_eq!(Sampler::parse(s.a1111_name()).unwrap(), s);
    }
    let err = Sampler::parse("Heun++").unwrap_err().to_string();
    assert!(
        err.contains("dpm++2m_karras") && err.contains("UniPC"),
        "{err}"
    );
}

#[test]
fn bad_configs_name_the_field() {
    let err = |json: &str, class: Option<&str>| -> String {
        let cfg = match SchedulerConfig::from_json_str(json) {
            Ok(c) => c,
            Err(e) => return e.to_string(),
        };
        let class = class.map(|c| Sampler::parse(c).unwrap());
        match schedulers::from_config(&cfg, class) {
            Ok(s) => panic!("{json}: built {} without error", s.class_name()),
            Err(e) => e.to_string(),
        }
    };
    let cases: &[(&str, Option<&str>, &str)] = &[
        (r#"{"_class_name": "FooScheduler"}"#, None, "FooScheduler"),
        (r#"{}"#, None, "_class_name"),
        (
            r#"{"_class_name": "DDIMScheduler", "prediction_type": "sample"}"#,
            None,
            "prediction_type",
        ),
        (
            r#"{"_class_name": "DDIMScheduler", "beta_schedule": "sigmoid"}"#,
            None,
            "beta_schedule",
        ),
        (
            r#"{"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "even"}"#,
            None,
            "timestep_spacing",
        ),
        (
            r#"{"algorithm_type": "sde-dpmsolver"}"#,
            Some("DPMSolverMultistepScheduler"),
            "algorithm_type",
        ),
        (r#"{"solver_order": 4}"#, Some("unipc"), "solver_order"),
        (r#"{"predict_x0": false}"#, Some("unipc"), "predict_x0"),
        (r#"{"solver_order": 3}"#, Some("dpm"), "solver_order"),
        (
            r#"{"skip_prk_steps": false}"#,
            Some("pndm"),
            "skip_prk_steps",
        ),
        (r#"{}"#, Some("pndm"), "skip_prk_steps"),
        (r#"{"thresholding": true}"#, Some("ddim"), "thresholding"),
        (
            r#"{"use_exponential_sigmas": true}"#,
            Some("euler"),
            "use_exponential_sigmas",
        ),
        (
            r#"{"rescale_betas_zero_snr": true}"#,
            Some("euler_a"),
            "rescale_betas_zero_snr",
        ),
        (
            r#"{"trained_betas": [0.1, 0.2]}"#,
            Some("lms"),
            "trained_betas",
        ),
        (r#"{"beta_start": "lots"}"#, Some("lms"), "lots"),
        (r#"[1, 2]"#, Some("lms"), "object"),
    ];
    for (json, class, field) in cases {
        let msg = err(json, *class);
        assert!(
            msg.contains(field),
            "{json}: error {msg:?} does not name {field:?}"
        );
    }
    // Steps out of range.
    let cfg = SchedulerConfig::from_json_str(r#"{"_class_name": "DDIMScheduler"}"#).unwrap();
    let mut s = schedulers::from_config(&cfg, None).unwrap();
    assert!(s.set_timesteps(0).is_err());
    assert!(s.set_timesteps(1001).is_err());
    assert!(s.step(0).is_err(), "step before set_timesteps");
    s.set_timesteps(5).unwrap();
    assert!(s.step(5).is_err());
}
