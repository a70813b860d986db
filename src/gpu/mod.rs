//! The GPU runtime: adapter choice, device context, tensors, the pipeline cache, the
//! activation arena and the command recorder.

pub mod adapter;
pub mod context;
pub mod coopmat;
pub mod kernel;
pub mod pool;
pub mod profile;
pub mod recorder;
pub mod tensor;

pub use adapter::AdapterChoice;
pub use context::{Caps, Gpu};
pub use kernel::{Generator, KernelSpec, ShaderParams};
pub use recorder::{Recorder, WeightOverrides};
pub use tensor::{DType, Tensor, Window};
