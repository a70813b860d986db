//! Decoded image to u8 pixels (`shaders/image.wgsl`), diffusers' post-processing for
//! `output_type="pil"` / numpy: `(x / 2 + 0.5).clamp(0, 1)`, times 255, rounded half to
//! even, channels last.

use super::{expect_act, u32_of};
use crate::error::{Error, Result};
use crate::gpu::{DType, KernelSpec, Recorder, Tensor};

const SRC: &str = include_str!("../../shaders/image.wgsl");
const WG: usize = 256;

crate::shader_params! {
    struct Params {
        words: u32,
        bytes: u32,
        hw: u32,
        x_shift: u32,
        o_shift: u32,
        _pad0: u32,
        _pad1: u32,
        _pad2: u32,
    }
}

/// u8 images `[B, H, W, 3]` recorded on the GPU; read them with [`U8Images::read`].
pub struct U8Images {
    packed: Vec<Tensor>,
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

fn spec(dt: DType) -> KernelSpec {
    KernelSpec::new("image", SRC, "to_u8")
        .params::<Params>()
        .activation(dt)
}

/// Records the conversion of `x` `[B, 3, H, W]` (f32 or f16) (one image per band, so any batch size
/// stays under the binding limit).
pub fn to_u8(rec: &mut Recorder, x: &Tensor) -> Result<U8Images> {
    let op = "to_u8";
    let dt = expect_act(op, x)?;
    let &[b, 3, h, w] = x.shape() else {
        return Err(Error::shape(
            op,
            format!("x must be [B, 3, H, W], got {:?}", x.shape()),
        ));
    };
    let gpu = rec.gpu();
    let kernel = gpu.kernel(&spec(dt))?;
    let per = 3 * h * w;
    let mut packed = Vec::with_capacity(b);
    for i in 0..b {
        let words = per.div_ceil(4);
        let out = Tensor::empty(gpu, &[words], DType::U32)?;
        let xw = x.window(gpu, i * per, per)?;
        let ow = out.whole(gpu)?;
        let p = Params {
            words: u32_of(op, words)?,
            bytes: u32_of(op, per)?,
            hw: u32_of(op, h * w)?,
            x_shift: xw.shift,
            o_shift: ow.shift,
            ..Default::default()
        };
        let groups = rec.grid(u32_of(op, words.div_ceil(WG))?);
        rec.dispatch(&kernel, &p, &[xw, ow], groups)?;
        packed.push(out);
    }
    Ok(U8Images {
        packed,
        batch: b,
        height: h,
        width: w,
    })
}

impl U8Images {
    /// Submits pending work and returns each image's `H * W * 3` bytes (blocks).
    pub fn read(&self, rec: &mut Recorder) -> Result<Vec<Vec<u8>>> {
        let n = 3 * self.height * self.width;
        self.packed
            .iter()
            .map(|t| {
                let mut bytes = rec.read_bytes(t)?;
                bytes.truncate(n);
                Ok(bytes)
            })
            .collect()
    }
}

/// CPU reference.
pub mod cpu {
    /// `[B, 3, H, W]` f32 -> per image `H * W * 3` bytes.
    pub fn to_u8(x: &[f32], b: usize, h: usize, w: usize) -> Vec<Vec<u8>> {
        let hw = h * w;
        (0..b)
            .map(|i| {
                let img = &x[i * 3 * hw..][..3 * hw];
                (0..hw)
                    .flat_map(|p| (0..3).map(move |c| (p, c)))
                    .map(|(p, c)| {
                        let v = (img[c * hw + p] / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0;
                        v.round_ties_even() as u8
                    })
                    .collect()
            })
            .collect()
    }
}

/// Every kernel variant of this family (validated offline by the tests).
pub fn variants() -> Vec<KernelSpec> {
    vec![spec(DType::F32), spec(DType::F16)]
}
