//! Fused copies of the weights LoRAs change: `W + sum_i scale_i * alpha_i / r_i * up_i @
//! down_i`, what diffusers' `fuse_lora(lora_scale=...)` writes into the model, computed
//! on the GPU by the existing matmul (`linear` with its residual add) in f32 and stored
//! in the weight's dtype. Every update of one loaded tensor (several LoRAs, or the Q, K
//! and V parts of a fused projection) goes into one matmul: the up matrices side by side
//! (each scaled, at its module's rows, zero elsewhere), the down matrices stacked.

use std::collections::HashMap;

use super::LoraError;
use super::file::{LoraFile, ModuleName};
use super::targets::{ModelTargets, Target};
use crate::error::Result;
use crate::gpu::{DType, Gpu, Recorder, Tensor, WeightOverrides};
use crate::ops;

/// One module's update, resolved against its target.
struct Update<'a> {
    target: &'a Target,
    /// `scale * alpha / r`.
    factor: f32,
    up: &'a [f32],
    down: &'a [f32],
    rank: usize,
}

/// Checks `down` / `up` against the module's weight shape `[out, in(, kh, kw)]`.
fn fits(down: &[usize], up: &[usize], weight: &[usize]) -> bool {
    let (r, out) = (down[0], weight[0]);
    let inner: usize = weight[1..].iter().product();
    let up_ok = up[0] == out && up[1] == r && up[2..].iter().all(|&d| d == 1);
    let down_ok = down[1..] == weight[1..]
        // A Linear-shaped LoRA on a 1x1 convolution (proj_in / proj_out of SD 1).
        || (down.len() == 2 && down[1] == inner && weight[2..].iter().all(|&d| d == 1));
    up_ok && down_ok
}

/// Resolves every layer of `loras` (each with its scale) to the module it changes.
fn resolve<'a>(
    targets: &'a ModelTargets,
    loras: &'a [(&'a LoraFile, f32)],
) -> Result<Vec<Update<'a>>, LoraError> {
    let mut updates = Vec::new();
    for &(file, scale) in loras {
        for layer in &file.layers {
            let found = match &layer.module {
                ModuleName::Kohya(flat) => targets.kohya(layer.component, flat),
                ModuleName::Dotted(name) => targets.dotted(layer.component, name),
            };
            let Some((name, target)) = found else {
                return Err(LoraError::NoSuchModule {
                    file: file.path.clone(),
                    key: layer.key.clone(),
                    component: layer.component.name(),
                    module: match &layer.module {
                        ModuleName::Kohya(m) | ModuleName::Dotted(m) => m.clone(),
                    },
                });
            };
            if !fits(&layer.down.shape, &layer.up.shape, &target.shape) {
                return Err(LoraError::Shape {
                    file: file.path.clone(),
                    module: format!("{}.{name}", layer.component.name()),
                    down: layer.down.shape.clone(),
                    up: layer.up.shape.clone(),
                    weight: target.shape.clone(),
                });
            }
            updates.push(Update {
                target,
                factor: scale * layer.alpha_scale(),
                up: &layer.up.data,
                down: &layer.down.data,
                rank: layer.rank(),
            });
        }
    }
    Ok(updates)
}

/// The fused weights for `loras`, keyed by the storage id of the weight each replaces.
pub fn fuse(
    gpu: &Gpu,
    targets: &ModelTargets,
    loras: &[(&LoraFile, f32)],
) -> Result<WeightOverrides> {
    let updates = resolve(targets, loras)?;
    let mut by_tensor: HashMap<u64, Vec<&Update>> = HashMap::new();
    for u in &updates {
        by_tensor
            .entry(u.target.tensor.storage_id())
            .or_default()
            .push(u);
    }
    let mut rec = Recorder::new(gpu);
    let mut out = WeightOverrides::new();
    for (id, group) in by_tensor {
        let base = &group[0].target.tensor;
        out.insert(id, fused(&mut rec, base, &group)?);
    }
    rec.submit()?;
    gpu.wait()?;
    Ok(out)
}

/// `base` (`[N, ...]`) plus every update of `group` (all on `base`).
fn fused(rec: &mut Recorder, base: &Tensor, group: &[&Update]) -> Result<Tensor> {
    let gpu = rec.gpu();
    let rows = base.shape()[0];
    let inner = base.numel() / rows.max(1);
    let total_rank: usize = group.iter().map(|u| u.rank).sum();
    // up_all [rows, R]: each update's scaled up at its rows and columns.
    // down_t [inner, R]: each update's down, transposed (the matmul's `[out, in]` weight).
    let mut up_all = vec![0f32; rows * total_rank];
    let mut down_t = vec![0f32; inner * total_rank];
    let mut col = 0;
    for u in group {
        let out_rows = u.target.shape[0];
        for i in 0..out_rows {
            for j in 0..u.rank {
                up_all[(u.target.row_offset + i) * total_rank + col + j] =
                    u.factor * u.up[i * u.rank + j];
            }
        }
        for j in 0..u.rank {
            for k in 0..inner {
                down_t[k * total_rank + col + j] = u.down[j * inner + k];
            }
        }
        col += u.rank;
    }
    let up_t = Tensor::from_f32(gpu, &[rows, total_rank], &up_all, DType::F32)?;
    let down_w = Tensor::from_f32(gpu, &[inner, total_rank], &down_t, DType::F32)?;
    let w32 = ops::cast::cast(rec, &base.reshape(&[rows, inner])?, DType::F32)?;
    let sum = ops::matmul::linear(rec, &up_t, &down_w, None, Some(&w32))?;
    ops::cast::cast(rec, &sum, base.dtype())?.reshape(base.shape())
}

#[cfg(test)]
mod tests {
    use super::fits;

    #[test]
    fn shapes_that_fit() {
        assert!(fits(&[4, 16], &[32, 4], &[32, 16]));
        assert!(fits(&[4, 16, 3, 3], &[32, 4, 1, 1], &[32, 16, 3, 3]));
        assert!(fits(&[4, 16, 1, 1], &[32, 4, 1, 1], &[32, 16, 1, 1]));
        assert!(fits(&[4, 16], &[32, 4], &[32, 16, 1, 1]));
        assert!(!fits(&[4, 16], &[32, 4], &[32, 16, 3, 3]));
        assert!(!fits(&[4, 8], &[32, 4], &[32, 16]));
        assert!(!fits(&[4, 16], &[16, 4], &[32, 16]));
        assert!(!fits(&[4, 16], &[32, 2], &[32, 16]));
    }
}
