//! Warm pipelines: [`Pipeline::warm_up`] runs one cheap pass through every model part at
//! a size (text encoder, one UNet call with the guidance batch, the scheduler step, the
//! VAE decode and the u8 conversion), so every compute pipeline that size needs is
//! created and, on drivers that compile at the first dispatch (lavapipe), compiled, before
//! the first real request. Then it writes wgpu's pipeline cache to disk, so the next
//! process skips the driver compilation too.

use std::time::{Duration, Instant};

use std::sync::Arc;

use crate::error::Result;
use crate::inpaint::Mask;
use crate::pipeline::{DEFAULT_GUIDANCE, GenerateRequest, Image, Pipeline};

/// What [`Pipeline::warm_up`] did.
#[derive(Debug, Clone, Copy)]
pub struct WarmUp {
    pub width: usize,
    pub height: usize,
    /// Images per pass (each with its unconditional row: the UNet sees twice as many).
    pub batch: usize,
    /// Wall-clock time of the pass and the cache write.
    pub elapsed: Duration,
    /// Compute pipelines the pass created (0 when everything was built already).
    pub pipelines_created: usize,
    /// Bytes of the pipeline cache written to disk (0 where the backend keeps none).
    pub cache_bytes: u64,
}

impl Pipeline<'_> {
    /// One denoising step with guidance, the archive's scheduler, `batch` images of
    /// `width x height` (empty prompts), the VAE decode and the image conversion; the
    /// images are thrown away. Afterwards a request of that size and batch creates no
    /// new pipeline (see the `pipeline_count` test).
    pub fn warm_up(&self, width: usize, height: usize, batch: usize) -> Result<WarmUp> {
        let gpu = self.gpu();
        let start = Instant::now();
        let before = gpu.pipeline_count();
        let mut req = GenerateRequest {
            prompts: vec![String::new(); batch.max(1)],
            steps: 1,
            guidance: DEFAULT_GUIDANCE,
            width,
            height,
            ..GenerateRequest::default()
        };
        // An inpainting model (9-channel UNet) only runs with an image and a mask.
        if self.unet_in_channels() == 9 {
            req.init_image = Some(Arc::new(Image {
                width,
                height,
                data: vec![128; width * height * 3],
            }));
            req.mask = Some(Arc::new(Mask {
                width,
                height,
                data: vec![255; width * height],
            }));
            req.strength = crate::inpaint::DEFAULT_STRENGTH;
        }
        self.generate(&req)?;
        let pipelines_created = gpu.pipeline_count().saturating_sub(before);
        let cache_bytes = gpu.save_pipeline_cache()?;
        Ok(WarmUp {
            width,
            height,
            batch: batch.max(1),
            elapsed: start.elapsed(),
            pipelines_created,
            cache_bytes,
        })
    }
}
