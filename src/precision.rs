//! Numeric precision of a pipeline: how weights and activations are stored on the GPU.
//! Arithmetic always accumulates in f32 (matmul, conv, attention), and softmax and norm
//! statistics are f32 in every mode.

use std::fmt;
use std::str::FromStr;

use crate::gpu::{DType, Gpu};

/// What the user asks for (`--precision auto|f32|f16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    /// f16 on adapters with SHADER_F16 that are not CPU drivers; f32 on CPU drivers
    /// (lavapipe, where f16 is no faster and the f32 parity bars hold).
    #[default]
    Auto,
    /// Weights and activations in f32: matches diffusers in float32 (>= 60 dB).
    F32,
    /// Weights and activations stored as f16 (needs SHADER_F16), f32 accumulation.
    F16,
}

impl Precision {
    /// The storage type this precision resolves to on `gpu`. F16 on an adapter without
    /// SHADER_F16 is an error for the caller to report (see [`Precision::check`]).
    pub fn resolve(self, gpu: &Gpu) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::F16 => DType::F16,
            Precision::Auto => {
                if gpu.caps.f16 && !gpu.caps.is_cpu {
                    DType::F16
                } else {
                    DType::F32
                }
            }
        }
    }

    /// Errors when `gpu` cannot run this precision.
    pub fn check(self, gpu: &Gpu) -> crate::Result<()> {
        if self.resolve(gpu) == DType::F16 && !gpu.caps.f16 {
            return Err(crate::Error::InvalidInput(format!(
                "precision f16 needs the SHADER_F16 feature, which {} does not offer; use --precision f32",
                gpu.info.name
            )));
        }
        Ok(())
    }

    /// `"auto"`, `"f32"` or `"f16"`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Auto => "auto",
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> serde::Deserialize<'de> for Precision {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl serde::Serialize for Precision {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Precision::Auto),
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Precision::F16),
            other => Err(format!(
                "unknown precision {other:?}: expected auto, f32 or f16"
            )),
        }
    }
}
