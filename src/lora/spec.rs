//! A LoRA asked for: a file and its scale (`--lora FILE[:SCALE]`).

use std::path::{Path, PathBuf};

use super::LoraError;

/// One LoRA of a request: `W + scale * alpha / rank * up @ down` for each module it has.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub scale: f32,
}

impl LoraSpec {
    pub fn new(path: impl Into<PathBuf>, scale: f32) -> Result<LoraSpec, LoraError> {
        let path = path.into();
        if !scale.is_finite() {
            return Err(LoraError::Spec {
                spec: path.display().to_string(),
                msg: format!("the scale must be a finite number, got {scale}"),
            });
        }
        Ok(LoraSpec { path, scale })
    }

    /// `FILE` (scale 1.0) or `FILE:SCALE`. Only a suffix that reads as a number is a
    /// scale, so `C:\loras\x.safetensors` stays a path.
    pub fn parse(s: &str) -> Result<LoraSpec, LoraError> {
        if let Some((file, scale)) = s.rsplit_once(':')
            && !file.is_empty()
            && let Ok(v) = scale.trim().parse::<f32>()
        {
            return LoraSpec::new(file, v).map_err(|_| LoraError::Spec {
                spec: s.to_string(),
                msg: format!("the scale must be a finite number, got {scale:?}"),
            });
        }
        if s.is_empty() {
            return Err(LoraError::Spec {
                spec: s.to_string(),
                msg: "no file given".into(),
            });
        }
        LoraSpec::new(Path::new(s), 1.0)
    }
}

/// What two LoRA lists must share to run in one batch: a hash of the paths and scales
/// (in order: fusing adds the LoRAs in that order).
pub fn set_key(loras: &[LoraSpec]) -> u64 {
    use std::hash::{Hash, Hasher};
    if loras.is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for l in loras {
        l.path.hash(&mut h);
        l.scale.to_bits().hash(&mut h);
    }
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_and_scale() {
        let l = LoraSpec::parse("a.safetensors:0.5").unwrap();
        assert_eq!((l.path, l.scale), (PathBuf::from("a.safetensors"), 0.5));
        let l = LoraSpec::parse("dir/a.safetensors").unwrap();
        assert_eq!(l.scale, 1.0);
        let l = LoraSpec::parse(r"C:\loras\a.safetensors").unwrap();
        assert_eq!(l.path, PathBuf::from(r"C:\loras\a.safetensors"));
        assert_eq!(LoraSpec::parse("a:-1.5").unwrap().scale, -1.5);
        assert!(LoraSpec::parse("a:inf").is_err());
        assert!(LoraSpec::parse("").is_err());
        assert_ne!(set_key(&[LoraSpec::parse("a:1").unwrap()]), set_key(&[]));
        assert_ne!(
            set_key(&[LoraSpec::parse("a:1").unwrap()]),
            set_key(&[LoraSpec::parse("a:0.5").unwrap()])
        );
    }
}
