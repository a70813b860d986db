//! `Tensor`: a GPU buffer with a shape and a dtype. Row-major, contiguous, offset 0.
//! Reshapes are free (they share the buffer); windows bind a byte range of it.

use std::sync::Arc;

use super::context::Gpu;
use super::pool::{ACTIVATION_USAGE, BufferPool, create_checked};
use crate::error::{Error, Result};

/// Element type of a tensor. Activations are f32; weights f16 where the device allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    /// Integer data (token ids); never a weight or activation.
    U32,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> u64 {
        match self {
            DType::F32 | DType::U32 => 4,
            DType::F16 => 2,
        }
    }

    /// The WGSL scalar type name.
    pub fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
        }
    }
}

/// Buffer sizes are rounded to this many bytes: vec4 loads stay in bounds and the arena
/// finds more matches.
const SIZE_QUANTUM: u64 = 256;

fn next_storage_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

pub(crate) struct Storage {
    pub(crate) buf: wgpu::Buffer,
    /// Unique for the life of the process (never reused, unlike buffers).
    id: u64,
    pool: Arc<BufferPool>,
    pooled: bool,
}

impl Drop for Storage {
    fn drop(&mut self) {
        if self.pooled {
            self.pool.give(self.buf.clone());
        } else {
            self.pool.give_uncached(self.buf.size());
        }
    }
}

/// A byte range of a tensor's buffer bound to one shader binding. `shift` is how many
/// elements the wanted data starts after the (alignment-rounded) binding offset; kernels
/// add it to their indices.
#[derive(Clone, Debug)]
pub struct Window {
    pub buffer: wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    pub shift: u32,
}

/// A dense row-major tensor on the GPU.
#[derive(Clone)]
pub struct Tensor {
    pub(crate) storage: Arc<Storage>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.shape, self.dtype)
    }
}

fn byte_size(numel: usize, dtype: DType) -> u64 {
    let raw = (numel as u64 * dtype.size()).max(4);
    raw.div_ceil(SIZE_QUANTUM) * SIZE_QUANTUM
}

impl Tensor {
    /// An uninitialised tensor from the activation arena.
    pub fn empty(gpu: &Gpu, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let size = byte_size(shape.iter().product(), dtype);
        if size > gpu.caps.max_buffer {
            return Err(Error::OutOfMemory(format!(
                "a {shape:?} {dtype:?} tensor needs {size} bytes, over this device's largest buffer ({} bytes)",
                gpu.caps.max_buffer
            )));
        }
        let buf = gpu.pool.take(&gpu.device, size)?;
        Ok(Tensor {
            storage: Arc::new(Storage {
                id: next_storage_id(),
                buf,
                pool: gpu.pool.clone(),
                pooled: true,
            }),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads f32 data, stored as `dtype` (converted to f16 on the CPU when asked).
    pub fn from_f32(gpu: &Gpu, shape: &[usize], data: &[f32], dtype: DType) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if numel != data.len() {
            return Err(Error::shape(
                "upload",
                format!(
                    "shape {shape:?} holds {numel} elements, data has {}",
                    data.len()
                ),
            ));
        }
        match dtype {
            DType::F32 => Tensor::from_bytes(gpu, shape, dtype, bytemuck::cast_slice(data)),
            DType::F16 => {
                let h: Vec<half::f16> = data.iter().map(|&x| half::f16::from_f32(x)).collect();
                Tensor::from_bytes(gpu, shape, dtype, bytemuck::cast_slice(&h))
            }
            DType::U32 => {
                let u: Vec<u32> = data.iter().map(|&x| x as u32).collect();
                Tensor::from_bytes(gpu, shape, dtype, bytemuck::cast_slice(&u))
            }
        }
    }

    /// Uploads integer data (token ids).
    pub fn from_u32(gpu: &Gpu, shape: &[usize], data: &[u32]) -> Result<Tensor> {
        Tensor::from_bytes(gpu, shape, DType::U32, bytemuck::cast_slice(data))
    }

    /// Uploads raw little-endian bytes already in `dtype`'s layout.
    pub fn from_bytes(gpu: &Gpu, shape: &[usize], dtype: DType, bytes: &[u8]) -> Result<Tensor> {
        let numel: usize = shape.iter().product();
        if bytes.len() as u64 != numel as u64 * dtype.size() {
            return Err(Error::shape(
                "upload",
                format!(
                    "shape {shape:?} {dtype:?} needs {} bytes, got {}",
                    numel as u64 * dtype.size(),
                    bytes.len()
                ),
            ));
        }
        let size = byte_size(numel, dtype);
        if size > gpu.caps.max_buffer {
            return Err(Error::OutOfMemory(format!(
                "a {shape:?} {dtype:?} tensor needs {size} bytes, over this device's largest buffer ({} bytes)",
                gpu.caps.max_buffer
            )));
        }
        // A new buffer mapped at creation: the data is in place before any later submit,
        // so it is ordered correctly with respect to recorded work (see pool.rs).
        let padded;
        let contents = if bytes.len() as u64 == size {
            bytes
        } else {
            padded = [bytes, &vec![0u8; (size - bytes.len() as u64) as usize]].concat();
            &padded
        };
        gpu.pool.adopt(size)?;
        let buf = create_checked(&gpu.device, "upload", size, || {
            gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("upload"),
                size,
                usage: ACTIVATION_USAGE,
                mapped_at_creation: true,
            })
        })
        .and_then(|buf| {
            // `create_buffer_init` would panic here on a buffer the device failed to make.
            buf.get_mapped_range_mut(..)
                .map_err(|e| Error::OutOfMemory(format!("mapping a {size}-byte upload: {e}")))?
                .copy_from_slice(contents);
            buf.unmap();
            Ok(buf)
        })
        .inspect_err(|_| gpu.pool.give_uncached(size))?;
        Ok(Tensor {
            storage: Arc::new(Storage {
                id: next_storage_id(),
                buf,
                pool: gpu.pool.clone(),
                pooled: false,
            }),
            shape: shape.to_vec(),
            dtype,
        })
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes of data (not of the possibly larger buffer).
    pub fn nbytes(&self) -> u64 {
        self.numel() as u64 * self.dtype.size()
    }

    /// The underlying buffer.
    pub fn buffer(&self) -> &wgpu::Buffer {
        &self.storage.buf
    }

    /// Same data, another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != self.numel() {
            return Err(Error::shape(
                "reshape",
                format!("{:?} -> {shape:?} changes the element count", self.shape),
            ));
        }
        Ok(Tensor {
            storage: self.storage.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }

    /// An identity of this tensor's storage, unique for the life of the process (a
    /// recycled buffer gets a new one): caches keyed by it never see stale data, provided
    /// the tensor is not written in place after being cached.
    pub fn storage_id(&self) -> u64 {
        self.storage.id
    }

    /// True if both tensors use the same buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// A binding over elements `start .. start + len`. Errors if it exceeds one binding:
    /// callers split their work into bands first (see [`Gpu::max_binding_elems`]).
    pub fn window(&self, gpu: &Gpu, start: usize, len: usize) -> Result<Window> {
        let es = self.dtype.size();
        let align = gpu.caps.binding_align.max(4);
        let begin = start as u64 * es;
        let offset = begin / align * align;
        let shift = ((begin - offset) / es) as u32;
        let end = ((start + len.max(1)) as u64 * es).div_ceil(4) * 4;
        let size = (end - offset).min(self.storage.buf.size() - offset);
        if size > gpu.caps.max_binding {
            return Err(Error::OutOfMemory(format!(
                "binding of {size} bytes exceeds the device's {}-byte storage binding limit (tensor {:?})",
                gpu.caps.max_binding, self.shape
            )));
        }
        Ok(Window {
            buffer: self.storage.buf.clone(),
            offset,
            size,
            shift,
        })
    }

    /// A binding over the whole tensor.
    pub fn whole(&self, gpu: &Gpu) -> Result<Window> {
        self.window(gpu, 0, self.numel())
    }
}

impl Gpu {
    /// How many elements of `dtype` one binding may safely cover, leaving room for the
    /// alignment shift of a window.
    pub fn max_binding_elems(&self, dtype: DType) -> usize {
        ((self.caps.max_binding - self.caps.binding_align.max(4)) / dtype.size()) as usize
    }
}
