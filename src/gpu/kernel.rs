//! Kernel compilation and the pipeline cache. A kernel is one WGSL file from `shaders/`
//! plus compile-time choices: text defines (`${NAME}` in the source, e.g. the storage
//! type of activations), WGSL `override` constants (tile sizes) and whether f16 is
//! enabled. The choices are the cache key; everything derived from them (generated
//! straight-line code, the `Params` declaration) is built only when the key misses.
//!
//! Expansion is strict: a define whose `${NAME}` does not occur in the source, or a
//! `${...}` left unreplaced, is an error, so a typo cannot silently compile another
//! kernel. Each launcher's `Params` struct is declared once, in Rust, with
//! [`shader_params!`](crate::shader_params); its WGSL text is prepended to the source.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::Gpu;
use super::tensor::DType;
use crate::error::{Error, Result};

/// A `#[repr(C)]` uniform block whose WGSL declaration is generated from the Rust struct
/// (see [`shader_params!`](crate::shader_params)), so the two cannot drift apart.
pub trait ShaderParams: bytemuck::Pod {
    /// `struct Params { ... }` in WGSL.
    fn wgsl() -> String;
    /// Each field's name and byte offset in the Rust struct (tests compare them with
    /// WGSL's uniform layout).
    fn offsets() -> Vec<(&'static str, usize)>;
}

/// A Rust field type and its WGSL spelling in a uniform block.
pub trait WgslType {
    const NAME: &'static str;
}
impl WgslType for u32 {
    const NAME: &'static str = "u32";
}
impl WgslType for i32 {
    const NAME: &'static str = "i32";
}
impl WgslType for f32 {
    const NAME: &'static str = "f32";
}
impl WgslType for [u32; 4] {
    const NAME: &'static str = "vec4<u32>";
}
impl WgslType for [f32; 4] {
    const NAME: &'static str = "vec4<f32>";
}

/// Declares a kernel's uniform `Params` once: the `#[repr(C)]` Pod struct the launcher
/// fills, and (through [`ShaderParams`]) the identical WGSL struct the shader sees.
/// Field types: `u32`, `i32`, `f32`, `[u32; 4]`, `[f32; 4]` (vec4, 16-byte aligned in
/// WGSL: place them at 16-byte offsets). The WGSL struct is always named `Params`.
#[macro_export]
macro_rules! shader_params {
    ($(#[$meta:meta])* $vis:vis struct $name:ident { $($fvis:vis $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Default, Debug, bytemuck::Pod, bytemuck::Zeroable)]
        $vis struct $name { $($fvis $field: $ty),* }
        impl $crate::gpu::ShaderParams for $name {
            fn wgsl() -> String {
                let mut s = String::from("struct Params {\n");
                $(
                    s.push_str(&format!(
                        "    {}: {},\n",
                        stringify!($field),
                        <$ty as $crate::gpu::kernel::WgslType>::NAME
                    ));
                )*
                s.push_str("}\n");
                s
            }
            fn offsets() -> Vec<(&'static str, usize)> {
                vec![$((stringify!($field), std::mem::offset_of!($name, $field))),*]
            }
        }
    };
}

/// Produces the code-fragment defines of a kernel from its choices (e.g. unrolled loops
/// whose length is a choice). Runs only on a pipeline-cache miss.
pub type Generator = fn(&KernelSpec) -> Vec<(&'static str, String)>;

/// A kernel's uniform block, from its [`ShaderParams`] type.
#[derive(Debug, Clone, Copy)]
pub struct ParamsDecl {
    pub wgsl: fn() -> String,
    pub offsets: fn() -> Vec<(&'static str, usize)>,
    /// `size_of` the Rust struct.
    pub size: usize,
}

/// What to compile: the pipeline-cache key holds exactly the compile-time choices
/// (name, entry, defines, constants, f16).
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Kernel family, e.g. `"matmul"` (the WGSL file's name).
    pub name: &'static str,
    /// The WGSL source (`include_str!("../../shaders/matmul.wgsl")`).
    pub source: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// `${KEY}` -> value text substitutions: the compile-time choices.
    pub defines: Vec<(&'static str, String)>,
    /// Values for WGSL `override` constants.
    pub constants: Vec<(&'static str, f64)>,
    /// Prepend `enable f16;` (the kernel uses f16 storage or arithmetic).
    pub f16: bool,
    /// Prepend `enable wgpu_cooperative_matrix;` (the kernel uses cooperative matrices;
    /// only devices with [`CoopCaps::tile`](super::coopmat::CoopCaps) compile it).
    pub coop: bool,
    /// Storage type of activations (`AT` in the shader; see [`KernelSpec::activation`]).
    pub activation: Option<DType>,
    /// The `Params` declaration (built on a cache miss) and the Rust struct's size.
    pub params: Option<ParamsDecl>,
    /// Code fragments derived from the choices (see [`Generator`]).
    pub generate: Option<Generator>,
}

impl KernelSpec {
    pub fn new(name: &'static str, source: &'static str, entry: &'static str) -> Self {
        KernelSpec {
            name,
            source,
            entry,
            defines: Vec::new(),
            constants: Vec::new(),
            f16: false,
            coop: false,
            activation: None,
            params: None,
            generate: None,
        }
    }

    /// Adds a text define (a compile-time choice).
    pub fn define(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.defines.push((key, value.into()));
        self
    }

    /// Sets an override constant.
    pub fn constant(mut self, key: &'static str, value: f64) -> Self {
        self.constants.push((key, value));
        self
    }

    /// Enables f16 in the shader (`enable f16;`), needed by any f16 storage or math.
    pub fn f16(mut self, on: bool) -> Self {
        self.f16 |= on;
        self
    }

    /// Marks a cooperative-matrix kernel (`enable wgpu_cooperative_matrix;`, f16 on).
    pub fn coop(mut self) -> Self {
        self.coop = true;
        self.f16 = true;
        self
    }

    /// Chooses how activations are stored: declares `alias AT` (`f32` or `f16`), `AT4`
    /// (`vec4<AT>`) and `at(v: f32) -> AT` / `at4(v: vec4<f32>) -> AT4`, which convert
    /// a result for storing. Kernels load `f32(x[i])`, compute in f32 and store with
    /// `at(...)`. In f16, `at` saturates to +-65504 so that an overflow becomes the
    /// largest finite half instead of infinity (and NaN never follows from it).
    pub fn activation(mut self, dtype: DType) -> Self {
        self.activation = Some(dtype);
        self.f16 |= dtype == DType::F16;
        self
    }

    /// Declares the kernel's uniform block from its Rust struct.
    pub fn params<P: ShaderParams>(mut self) -> Self {
        self.params = Some(ParamsDecl {
            wgsl: P::wgsl,
            offsets: P::offsets,
            size: std::mem::size_of::<P>(),
        });
        self
    }

    /// Derives code fragments from the choices on a cache miss.
    pub fn generator(mut self, g: Generator) -> Self {
        self.generate = Some(g);
        self
    }

    /// The value of define `key`, if chosen.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.defines
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of override constant `key`, if set.
    pub fn constant_of(&self, key: &str) -> Option<f64> {
        self.constants
            .iter()
            .find(|(k, _)| *k == key)
            .map(|&(_, v)| v)
    }

    /// The pipeline-cache key: the compile-time choices only.
    pub fn key(&self) -> String {
        let mut k = format!("{}:{}", self.name, self.entry);
        if self.f16 {
            k.push_str("|f16");
        }
        if self.coop {
            k.push_str("|coop");
        }
        if let Some(at) = self.activation {
            k.push_str(&format!("|AT={}", at.wgsl()));
        }
        for (d, v) in &self.defines {
            k.push_str(&format!("|{d}={v}"));
        }
        for (c, v) in &self.constants {
            k.push_str(&format!("|{c}:{v}"));
        }
        k
    }

    /// The WGSL text after substitution. Errors on a define the source does not use and
    /// on a `${...}` left unreplaced.
    pub fn expand(&self) -> Result<String> {
        let bad = |msg: String| Error::Gpu(format!("kernel {}: {msg}", self.key()));
        let mut all = self.defines.clone();
        if let Some(g) = self.generate {
            all.extend(g(self));
        }
        let mut src = self.source.to_string();
        for (d, v) in &all {
            let pat = format!("${{{d}}}");
            if !src.contains(&pat) {
                return Err(bad(format!("define {d} is not used by the source")));
            }
            src = src.replace(&pat, v);
        }
        if let Some(at) = src.find("${") {
            let end = src[at..].find('}').map_or(src.len(), |e| at + e + 1);
            return Err(bad(format!("{} is not defined", &src[at..end])));
        }
        let mut head = String::new();
        if self.f16 {
            head.push_str("enable f16;\n");
        }
        if self.coop {
            head.push_str("enable wgpu_cooperative_matrix;\n");
        }
        match self.activation {
            Some(DType::F16) => head.push_str(AT_F16),
            Some(DType::F32) => head.push_str(AT_F32),
            Some(DType::U32) => return Err(bad("activations cannot be u32".into())),
            None => {}
        }
        if let Some(decl) = &self.params {
            head.push_str(&(decl.wgsl)());
        }
        src.insert_str(0, &head);
        Ok(src)
    }
}

/// The activation prelude for f32 storage.
const AT_F32: &str = "alias AT = f32;
alias AT4 = vec4<f32>;
fn at(v: f32) -> AT { return v; }
fn at4(v: vec4<f32>) -> AT4 { return v; }
";

/// The activation prelude for f16 storage: stores saturate at the largest finite half.
const AT_F16: &str = "alias AT = f16;
alias AT4 = vec4<f16>;
const AT_MAX: f32 = 65504.0;
fn at(v: f32) -> AT { return AT(clamp(v, -AT_MAX, AT_MAX)); }
fn at4(v: vec4<f32>) -> AT4 { return AT4(clamp(v, vec4<f32>(-AT_MAX), vec4<f32>(AT_MAX))); }
";

/// Compiled pipelines by key.
#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
    /// Kernel name by pipeline address (for profiles).
    names: Mutex<HashMap<usize, &'static str>>,
}

impl Gpu {
    /// The compiled pipeline for `spec`, compiling it on first use.
    pub fn kernel(&self, spec: &KernelSpec) -> Result<Arc<wgpu::ComputePipeline>> {
        let key = spec.key();
        if let Some(p) = self
            .pipelines
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(p.clone());
        }
        if spec.f16 && !self.caps.f16 {
            return Err(Error::Gpu(format!(
                "kernel {key} needs SHADER_F16, which {} does not offer",
                self.info.name
            )));
        }
        if spec.coop && self.caps.coop.tile.is_none() {
            return Err(Error::Gpu(format!(
                "kernel {key} uses cooperative matrices, which are not enabled on {}{}",
                self.info.name,
                self.caps
                    .coop
                    .why_not
                    .as_deref()
                    .map(|w| format!(" ({w})"))
                    .unwrap_or_default()
            )));
        }
        let src = spec.expand()?;
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = self
            .device
            .create_shader_module(wgpu::ShaderModuleDescriptor {
                label: Some(spec.name),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            });
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(spec.name),
                layout: None,
                module: &module,
                entry_point: Some(spec.entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants: &spec.constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: self.disk_cache.as_ref().map(|c| &c.cache),
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling kernel {key}: {e}")));
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Arc::as_ptr(&pipeline) as usize, spec.name);
        self.pipelines
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }

    /// The name of the kernel `pipeline` was compiled from ("?" if not from
    /// [`Gpu::kernel`]).
    pub fn kernel_name(&self, pipeline: &Arc<wgpu::ComputePipeline>) -> &'static str {
        self.pipelines
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(Arc::as_ptr(pipeline) as usize))
            .copied()
            .unwrap_or("?")
    }

    /// Number of compiled pipelines (for `wgsd bench` and tests).
    pub fn pipeline_count(&self) -> usize {
        self.pipelines
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}
