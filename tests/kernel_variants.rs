//! Every kernel variant wgsd can build, including those this machine cannot run (other
//! subgroup sizes, f16 on adapters without it): expanded from its defines and validated
//! with naga, its `Params` layout compared with the Rust struct's. Needs no GPU.

use std::collections::HashSet;

use wgpu::naga;
use wgsd::gpu::KernelSpec;

fn validate(spec: &KernelSpec) -> Result<(), String> {
    let src = spec.expand().map_err(|e| e.to_string())?;
    let module = naga::front::wgsl::parse_str(&src)
        .map_err(|e| format!("parse: {}", e.emit_to_string(&src)))?;
    let mut validator = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    );
    validator.subgroup_stages(naga::valid::ShaderStages::all());
    validator.subgroup_operations(naga::valid::SubgroupOperationSet::all());
    validator
        .validate(&module)
        .map_err(|e| format!("validate: {}", e.emit_to_string(&src)))?;
    if !module.entry_points.iter().any(|e| e.name == spec.entry) {
        return Err(format!("no entry point {}", spec.entry));
    }
    for (name, _) in &spec.constants {
        if !module
            .overrides
            .iter()
            .any(|(_, o)| o.name.as_deref() == Some(name))
        {
            return Err(format!("override constant {name} is not declared"));
        }
    }
    if let Some(decl) = &spec.params {
        let mut layouter = naga::proc::Layouter::default();
        layouter
            .update(module.to_ctx())
            .map_err(|e| format!("layout: {e}"))?;
        let (handle, ty) = module
            .types
            .iter()
            .find(|(_, t)| t.name.as_deref() == Some("Params"))
            .ok_or("no Params struct")?;
        let naga::TypeInner::Struct { members, span } = &ty.inner else {
            return Err("Params is not a struct".into());
        };
        let rust = (decl.offsets)();
        let wgsl: Vec<(&str, usize)> = members
            .iter()
            .map(|m| (m.name.as_deref().unwrap_or("?"), m.offset as usize))
            .collect();
        if rust != wgsl {
            return Err(format!(
                "Params fields differ: Rust {rust:?}, WGSL {wgsl:?}"
            ));
        }
        // The uniform binding is the Rust struct rounded to 16 bytes; WGSL's struct must
        // fit in it.
        let wgsl_size = (*span as usize).max(layouter[handle].size as usize);
        if wgsl_size > decl.size.div_ceil(16) * 16 {
            return Err(format!(
                "Params is {wgsl_size} bytes in WGSL, {} in Rust",
                decl.size
            ));
        }
    }
    Ok(())
}

#[test]
fn every_kernel_variant_expands_and_validates() {
    let specs = wgsd::ops::kernel_variants();
    let mut failures = Vec::new();
    let mut keys = HashSet::new();
    for spec in &specs {
        if let Err(e) = validate(spec) {
            failures.push(format!("{}: {e}", spec.key()));
        }
        keys.insert(spec.key());
    }
    assert!(
        failures.is_empty(),
        "{} of {} kernel variants fail:\n{}",
        failures.len(),
        specs.len(),
        failures.join("\n\n")
    );
    // Distinct choices give distinct cache keys (no two variants share a pipeline).
    assert_eq!(keys.len(), specs.len(), "duplicate kernel variants");
    // Every shader family is covered.
    let families: HashSet<&str> = specs.iter().map(|s| s.name).collect();
    for f in [
        "activation",
        "attention",
        "attention_flash",
        "attention_coop",
        "attention_rows",
        "concat",
        "conv2d",
        "conv2d_subgroup",
        "conv2d_tiled128",
        "elementwise",
        "embedding",
        "image",
        "latent_resize",
        "matmul",
        "matmul_tiled",
        "matmul_tiled128",
        "matmul_coop",
        "conv2d_coop",
        "norm",
        "probe",
        "scheduler_step",
        "transpose",
        "upsample",
    ] {
        assert!(families.contains(f), "no variant of {f} is validated");
    }
}

const TOY: &str = "${T} ${U}";

#[test]
fn expansion_is_strict() {
    let ok = KernelSpec::new("toy", TOY, "main")
        .define("T", "a")
        .define("U", "b");
    assert_eq!(ok.expand().unwrap(), "a b");

    let unused = ok.clone().define("V", "c");
    let e = unused.expand().unwrap_err().to_string();
    assert!(e.contains("define V is not used"), "{e}");

    let missing = KernelSpec::new("toy", TOY, "main").define("T", "a");
    let e = missing.expand().unwrap_err().to_string();
    assert!(e.contains("${U} is not defined"), "{e}");

    let f16 = ok.clone().f16(true);
    assert!(f16.expand().unwrap().starts_with("enable f16;\n"));
    assert_ne!(f16.key(), ok.key(), "the f16 flag is part of the cache key");
    // A define whose value is "f16" no longer turns f16 on by itself.
    let spelled = KernelSpec::new("toy", TOY, "main")
        .define("T", "f16")
        .define("U", "b");
    assert!(!spelled.expand().unwrap().contains("enable f16"));
}

#[test]
fn generated_code_is_not_part_of_the_key() {
    fn gen_u(_: &KernelSpec) -> Vec<(&'static str, String)> {
        vec![("U", "generated".into())]
    }
    let spec = KernelSpec::new("toy", TOY, "main")
        .define("T", "a")
        .generator(gen_u);
    assert_eq!(spec.expand().unwrap(), "a generated");
    assert!(!spec.key().contains("generated"));
}

wgsd::shader_params! {
    struct Toy {
        a: u32,
        b: f32,
        v: [f32; 4],
    }
}

#[test]
fn params_struct_is_declared_once() {
    use wgsd::gpu::ShaderParams;
    assert_eq!(
        Toy::wgsl(),
        "struct Params {\n    a: u32,\n    b: f32,\n    v: vec4<f32>,\n}\n"
    );
    assert_eq!(Toy::offsets(), vec![("a", 0), ("b", 4), ("v", 8)]);
    // ...and the layout check catches the misaligned vec4 (WGSL puts it at 16).
    let spec = KernelSpec::new(
        "toy",
        "@group(0) @binding(0) var<uniform> p: Params;\n@compute @workgroup_size(1) fn main() { _ = p.a; }\n",
        "main",
    )
    .params::<Toy>();
    let e = validate(&spec).unwrap_err();
    assert!(e.contains("Params fields differ"), "{e}");
}

#[test]
fn activation_prelude_declares_at() {
    use wgsd::gpu::DType;
    let src = "@group(0) @binding(0) var<storage, read_write> o: array<AT>;\n@compute @workgroup_size(1) fn main() { o[0] = at(f32(o[1]) * 2.0); }\n";
    for dt in [DType::F32, DType::F16] {
        let spec = KernelSpec::new("toy", src, "main").activation(dt);
        validate(&spec).unwrap();
        assert_eq!(spec.f16, dt == DType::F16);
    }
    let a = KernelSpec::new("toy", src, "main").activation(DType::F32);
    let b = KernelSpec::new("toy", src, "main").activation(DType::F16);
    assert_ne!(a.key(), b.key());
}

/// lavapipe has no cooperative matrices, so these kernels cannot run here: beyond naga's
/// validation (above), each is lowered to SPIR-V as wgpu's Vulkan backend would (with the
/// CooperativeMatrixKHR capability), which catches what the WGSL front end accepts but
/// the backend cannot express. Their numeric tests are in tests/device_coopmat.rs (run
/// on a GPU: see README "Tests that need a GPU").
#[test]
fn cooperative_matrix_variants_lower_to_spirv() {
    let specs: Vec<KernelSpec> = wgsd::ops::kernel_variants()
        .into_iter()
        .filter(|s| s.coop)
        .collect();
    eprintln!("{} cooperative-matrix variants", specs.len());
    let families: HashSet<&str> = specs.iter().map(|s| s.name).collect();
    for f in ["matmul_coop", "conv2d_coop", "attention_coop", "probe_coop"] {
        assert!(families.contains(f), "no cooperative variant of {f}");
    }
    let mut failures = Vec::new();
    for spec in &specs {
        let lowered = (|| -> Result<usize, String> {
            let src = spec.expand().map_err(|e| e.to_string())?;
            assert!(src.contains("enable wgpu_cooperative_matrix;"));
            let module = naga::front::wgsl::parse_str(&src)
                .map_err(|e| format!("parse: {}", e.emit_to_string(&src)))?;
            let mut validator = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            );
            validator.subgroup_stages(naga::valid::ShaderStages::all());
            validator.subgroup_operations(naga::valid::SubgroupOperationSet::all());
            let info = validator
                .validate(&module)
                .map_err(|e| format!("validate: {}", e.emit_to_string(&src)))?;
            let constants: naga::back::PipelineConstants = spec
                .constants
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect();
            let (module, info) = naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, spec.entry)),
                &constants,
            )
            .map_err(|e| format!("overrides: {e}"))?;
            let options = naga::back::spv::Options {
                lang_version: (1, 3),
                ..Default::default()
            };
            let pipeline = naga::back::spv::PipelineOptions {
                shader_stage: naga::ShaderStage::Compute,
                entry_point: spec.entry.to_string(),
            };
            let words = naga::back::spv::write_vec(&module, &info, &options, Some(&pipeline))
                .map_err(|e| format!("spir-v: {e}"))?;
            Ok(words.len())
        })();
        match lowered {
            Ok(n) if n > 100 => {}
            Ok(n) => failures.push(format!("{}: only {n} SPIR-V words", spec.key())),
            Err(e) => failures.push(format!("{}: {e}", spec.key())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cooperative variants fail:\n{}",
        failures.len(),
        specs.len(),
        failures.join("\n\n")
    );
}
