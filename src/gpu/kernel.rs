//! Kernel compilation and the pipeline cache. A kernel is one WGSL file from `shaders/`
//! plus compile-time choices: text defines (`${NAME}` in the source, e.g. the weight
//! type) and WGSL `override` constants (tile sizes). Each distinct choice compiles once
//! per device.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::context::Gpu;
use crate::error::{Error, Result};

/// What to compile: the pipeline-cache key holds exactly these fields.
#[derive(Debug, Clone)]
pub struct KernelSpec {
    /// Kernel family, e.g. `"matmul"` (the WGSL file's name).
    pub name: &'static str,
    /// The WGSL source (`include_str!("../../shaders/matmul.wgsl")`).
    pub source: &'static str,
    /// Entry point.
    pub entry: &'static str,
    /// `${KEY}` -> value text substitutions. A value `f16` turns on `enable f16;`.
    pub defines: Vec<(&'static str, String)>,
    /// Values for WGSL `override` constants.
    pub constants: Vec<(&'static str, f64)>,
}

impl KernelSpec {
    pub fn new(name: &'static str, source: &'static str, entry: &'static str) -> Self {
        KernelSpec {
            name,
            source,
            entry,
            defines: Vec::new(),
            constants: Vec::new(),
        }
    }

    /// Adds a text define.
    pub fn define(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.defines.push((key, value.into()));
        self
    }

    /// Sets an override constant.
    pub fn constant(mut self, key: &'static str, value: f64) -> Self {
        self.constants.push((key, value));
        self
    }

    fn key(&self) -> String {
        let mut k = format!("{}:{}", self.name, self.entry);
        for (d, v) in &self.defines {
            k.push_str(&format!("|{d}={v}"));
        }
        for (c, v) in &self.constants {
            k.push_str(&format!("|{c}:{v}"));
        }
        k
    }

    /// The WGSL text after substitution.
    pub fn expand(&self) -> String {
        let mut src = self.source.to_string();
        let mut f16 = false;
        for (d, v) in &self.defines {
            src = src.replace(&format!("${{{d}}}"), v);
            f16 |= v == "f16";
        }
        if f16 {
            src.insert_str(0, "enable f16;\n");
        }
        src
    }
}

/// Compiled pipelines by key.
#[derive(Default)]
pub struct PipelineCache {
    map: Mutex<HashMap<String, Arc<wgpu::ComputePipeline>>>,
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
        let src = spec.expand();
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
                cache: None,
            });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("compiling kernel {key}: {e}")));
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, pipeline.clone());
        Ok(pipeline)
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
