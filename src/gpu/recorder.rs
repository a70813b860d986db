//! `Recorder`: collects hundreds of dispatches (and buffer copies) and submits them as
//! one command buffer. Each dispatch's parameters go into one shared uniform buffer at
//! 256-byte-aligned slots, written once at submit. Reading a tensor back is the only
//! blocking operation.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::context::Gpu;
use super::profile::DispatchProfile;
use super::tensor::{DType, Tensor, Window};
use crate::error::{Error, Result};

enum Command {
    Dispatch {
        pipeline: Arc<wgpu::ComputePipeline>,
        params: (u64, u64),
        bindings: Vec<Window>,
        groups: [u32; 3],
    },
    Copy {
        src: Window,
        dst: Window,
    },
}

/// Records GPU work for one submit.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    commands: Vec<Command>,
    params: Vec<u8>,
    dispatches_total: u64,
    circular_padding: bool,
    weight_overrides: Option<Arc<WeightOverrides>>,
    /// When set, every dispatch is submitted alone, waited for and timed here.
    profile: Option<Arc<Mutex<DispatchProfile>>>,
}

/// Weights to use in place of others for one run, keyed by the replaced tensor's
/// [`Tensor::storage_id`]: fused LoRA copies (`crate::lora`) of the few weights a LoRA
/// changes, so the base weights stay loaded and untouched.
pub type WeightOverrides = HashMap<u64, Tensor>;

impl<'g> Recorder<'g> {
    pub fn new(gpu: &'g Gpu) -> Self {
        Recorder {
            gpu,
            commands: Vec::new(),
            params: Vec::new(),
            dispatches_total: 0,
            circular_padding: false,
            weight_overrides: None,
            profile: None,
        }
    }

    /// Seamless tiling for the work recorded from now on: every padded convolution of the
    /// models (`models::nn::Conv2d`) pads circularly, as PyTorch's
    /// `Conv2d(padding_mode="circular")` that AUTOMATIC1111's `tiling` sets on every UNet
    /// and VAE convolution. A per-run choice, so it lives with the run's recorder.
    pub fn set_circular_padding(&mut self, on: bool) {
        self.circular_padding = on;
    }

    pub fn circular_padding(&self) -> bool {
        self.circular_padding
    }

    /// Replacement weights for the work recorded from now on (`None`: the loaded ones).
    /// `models::nn::Linear` and `Conv2d` look their weight up with
    /// [`Recorder::weight`]. A per-run choice, like circular padding.
    pub fn set_weight_overrides(&mut self, overrides: Option<Arc<WeightOverrides>>) {
        self.weight_overrides = overrides;
    }

    /// Times every dispatch from now on into `profile` (see [`super::profile`]).
    pub fn set_profile(&mut self, profile: Option<Arc<Mutex<DispatchProfile>>>) {
        self.profile = profile;
    }

    /// The weight to use for `w` in this run: its override, or `w` itself.
    pub fn weight(&self, w: &Tensor) -> Tensor {
        self.weight_overrides
            .as_ref()
            .and_then(|o| o.get(&w.storage_id()))
            .unwrap_or(w)
            .clone()
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Dispatches recorded since creation (across submits).
    pub fn dispatch_count(&self) -> u64 {
        self.dispatches_total
    }

    /// Records one dispatch. Binding 0 of group 0 is the `params` uniform; `bindings` are
    /// bindings 1, 2, ... in order.
    pub fn dispatch<P: super::kernel::ShaderParams>(
        &mut self,
        pipeline: &Arc<wgpu::ComputePipeline>,
        params: &P,
        bindings: &[Window],
        groups: [u32; 3],
    ) -> Result<()> {
        let max = self.gpu.caps.max_workgroups_per_dim;
        if groups.iter().any(|&g| g > max) {
            return Err(Error::Gpu(format!(
                "dispatch of {groups:?} workgroups exceeds the per-dimension limit {max}"
            )));
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let align = u64::from(self.gpu.limits.min_uniform_buffer_offset_alignment).max(16);
        let offset = (self.params.len() as u64).div_ceil(align) * align;
        let bytes = bytemuck::bytes_of(params);
        self.params.resize(offset as usize, 0);
        self.params.extend_from_slice(bytes);
        // Uniform bindings must be a multiple of 16 bytes.
        let size = (bytes.len() as u64).div_ceil(16) * 16;
        self.params.resize((offset + size) as usize, 0);
        if let Some(profile) = self.profile.clone() {
            // Finish what came before, then time this dispatch alone.
            self.submit()?;
            self.gpu.wait()?;
            return self.dispatch_timed(pipeline, params, bindings, groups, &profile);
        }
        self.commands.push(Command::Dispatch {
            pipeline: pipeline.clone(),
            params: (offset, size),
            bindings: bindings.to_vec(),
            groups,
        });
        self.dispatches_total += 1;
        Ok(())
    }

    fn dispatch_timed<P: super::kernel::ShaderParams>(
        &mut self,
        pipeline: &Arc<wgpu::ComputePipeline>,
        params: &P,
        bindings: &[Window],
        groups: [u32; 3],
        profile: &Mutex<DispatchProfile>,
    ) -> Result<()> {
        self.params.clear();
        let bytes = bytemuck::bytes_of(params);
        self.params.extend_from_slice(bytes);
        let size = (bytes.len() as u64).div_ceil(16) * 16;
        self.params.resize(size as usize, 0);
        self.commands.push(Command::Dispatch {
            pipeline: pipeline.clone(),
            params: (0, size),
            bindings: bindings.to_vec(),
            groups,
        });
        self.dispatches_total += 1;
        let t = Instant::now();
        self.submit()?;
        self.gpu.wait()?;
        profile
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add(self.gpu.kernel_name(pipeline), t.elapsed());
        Ok(())
    }

    /// Records a byte copy between two windows of equal size.
    pub fn copy(&mut self, src: Window, dst: Window) -> Result<()> {
        if src.size != dst.size || src.shift != 0 || dst.shift != 0 {
            return Err(Error::Gpu(
                "copy windows must be aligned and equally sized".into(),
            ));
        }
        self.commands.push(Command::Copy { src, dst });
        Ok(())
    }

    /// A grid of `n` workgroups folded into two dimensions when `n` exceeds the
    /// per-dimension limit. Kernels compute `id = wid.x + wid.y * num_workgroups.x` and
    /// return when `id >= n`.
    pub fn grid(&self, n: u32) -> [u32; 3] {
        let max = self.gpu.caps.max_workgroups_per_dim.max(1);
        if n <= max {
            [n, 1, 1]
        } else {
            let y = n.div_ceil(max);
            [n.div_ceil(y), y, 1]
        }
    }

    /// Submits everything recorded so far as one command buffer. Does not wait.
    pub fn submit(&mut self) -> Result<()> {
        if self.commands.is_empty() {
            return Ok(());
        }
        let device = &self.gpu.device;
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let params_buf = {
            use wgpu::util::DeviceExt;
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: &self.params,
                usage: wgpu::BufferUsages::UNIFORM,
            })
        };
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("wgsd"),
        });
        let commands = std::mem::take(&mut self.commands);
        self.params.clear();
        let mut i = 0;
        while i < commands.len() {
            if let Command::Copy { src, dst } = &commands[i] {
                encoder.copy_buffer_to_buffer(
                    &src.buffer,
                    src.offset,
                    &dst.buffer,
                    dst.offset,
                    src.size,
                );
                i += 1;
                continue;
            }
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            });
            while let Some(Command::Dispatch {
                pipeline,
                params,
                bindings,
                groups,
            }) = commands.get(i)
            {
                let mut entries = Vec::with_capacity(bindings.len() + 1);
                entries.push(wgpu::BindGroupEntry {
                    binding: 0,
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &params_buf,
                        offset: params.0,
                        size: wgpu::BufferSize::new(params.1),
                    }),
                });
                for (b, w) in bindings.iter().enumerate() {
                    entries.push(wgpu::BindGroupEntry {
                        binding: b as u32 + 1,
                        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                            buffer: &w.buffer,
                            offset: w.offset,
                            size: wgpu::BufferSize::new(w.size),
                        }),
                    });
                }
                let bg = device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &pipeline.get_bind_group_layout(0),
                    entries: &entries,
                });
                pass.set_pipeline(pipeline);
                pass.set_bind_group(0, &bg, &[]);
                pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
                i += 1;
            }
        }
        self.gpu.queue.submit([encoder.finish()]);
        if let Some(e) = pollster::block_on(validation.pop()) {
            return Err(Error::Gpu(e.to_string()));
        }
        if let Some(e) = pollster::block_on(oom.pop()) {
            return Err(Error::OutOfMemory(e.to_string()));
        }
        Ok(())
    }

    /// Submits pending work, then copies `t` back and converts it to f32. Blocks.
    pub fn read_f32(&mut self, t: &Tensor) -> Result<Vec<f32>> {
        let bytes = self.read_bytes(t)?;
        Ok(match t.dtype() {
            DType::F32 => bytemuck::pod_collect_to_vec(&bytes),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, half::f16>(&bytes)
                .into_iter()
                .map(f32::from)
                .collect(),
            DType::U32 => bytemuck::pod_collect_to_vec::<u8, u32>(&bytes)
                .into_iter()
                .map(|v| v as f32)
                .collect(),
        })
    }

    /// Submits pending work, then copies `t`'s bytes back. Blocks.
    pub fn read_bytes(&mut self, t: &Tensor) -> Result<Vec<u8>> {
        self.submit()?;
        let n = t.nbytes();
        let padded = n.div_ceil(4) * 4;
        let device = &self.gpu.device;
        let staging = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("read-back"),
            size: padded.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("read-back"),
        });
        encoder.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, padded);
        self.gpu.queue.submit([encoder.finish()]);
        let (tx, rx) = std::sync::mpsc::channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| drop(tx.send(r)));
        self.gpu.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("read-back callback never ran".into()))?
            .map_err(|e| Error::Gpu(format!("mapping the read-back buffer: {e}")))?;
        let data = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading the mapped buffer: {e}")))?[..n as usize]
            .to_vec();
        staging.unmap();
        Ok(data)
    }
}
