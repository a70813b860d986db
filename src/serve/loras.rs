//! The loras folder (`--lora-dir`, default `loras/` in the model store): LoRAs named in
//! requests by file stem, the `loras` JSON field (`[{"name": .., "scale": ..}]` or
//! `{"name": scale}`), and AUTOMATIC1111's `<lora:name:scale>` prompt tags (its
//! `extra_networks.parse_prompt`: every `<type:args>` tag is taken out of the prompt text;
//! `lora` / `lyco` tags are applied with their first multiplier, default 1).

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::ApiError;
use crate::lora::LoraSpec;

/// A LoRA file in the folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraEntry {
    /// File stem: what requests call it.
    pub name: String,
    pub path: PathBuf,
}

/// The `.safetensors` files under `dir` (subfolders included), by name; none when the
/// folder does not exist.
pub fn list(dir: &Path) -> Vec<LoraEntry> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|x| x == "safetensors")
                && let Some(stem) = path.file_stem()
            {
                out.push(LoraEntry {
                    name: stem.to_string_lossy().into_owned(),
                    path,
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.path.cmp(&b.path)));
    out
}

/// The file of LoRA `name` in `dir`.
pub fn resolve(dir: Option<&Path>, name: &str, scale: f32) -> Result<LoraSpec, ApiError> {
    let Some(dir) = dir else {
        return Err(ApiError::bad_request(
            "this server has no loras folder (--lora-dir)",
        ));
    };
    let entry = list(dir).into_iter().find(|e| e.name == name);
    let Some(entry) = entry else {
        return Err(ApiError::bad_request(format!(
            "no LoRA named {name:?} in {}",
            dir.display()
        )));
    };
    LoraSpec::new(entry.path, scale).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// The `loras` field: `[{"name": "x", "scale": 0.8}, ...]` (scale default 1) or
/// `{"x": 0.8, ...}`.
pub fn from_json(v: &Value, dir: Option<&Path>) -> Result<Vec<LoraSpec>, ApiError> {
    let bad = || {
        ApiError::bad_request(
            "loras must be a list of {\"name\": ..., \"scale\": ...} or an object {name: scale}",
        )
    };
    let pairs: Vec<(String, f32)> = match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items
            .iter()
            .map(|item| {
                let name = item.get("name").and_then(Value::as_str).ok_or_else(bad)?;
                let scale = match item.get("scale") {
                    None | Some(Value::Null) => 1.0,
                    Some(s) => s.as_f64().ok_or_else(bad)? as f32,
                };
                Ok((name.to_string(), scale))
            })
            .collect::<Result<_, ApiError>>()?,
        Value::Object(map) => map
            .iter()
            .map(|(name, s)| Ok((name.clone(), s.as_f64().ok_or_else(bad)? as f32)))
            .collect::<Result<_, ApiError>>()?,
        _ => return Err(bad()),
    };
    pairs
        .into_iter()
        .map(|(name, scale)| resolve(dir, &name, scale))
        .collect()
}

/// A1111's extra-network tags taken out of `prompt`: the prompt without them, and each
/// `<lora:name[:te_multiplier[:unet_multiplier]]>` as (name, multiplier).
pub fn take_prompt_tags(prompt: &str) -> Result<(String, Vec<(String, f32)>), ApiError> {
    let mut text = String::with_capacity(prompt.len());
    let mut loras = Vec::new();
    let mut rest = prompt;
    while let Some(start) = rest.find('<') {
        text.push_str(&rest[..start]);
        let tail = &rest[start + 1..];
        // A1111's pattern: `<(\w+):([^>]+)>`.
        let tag = tail.find('>').map(|end| &tail[..end]).and_then(|inner| {
            let (kind, args) = inner.split_once(':')?;
            let word = !kind.is_empty() && kind.chars().all(|c| c.is_alphanumeric() || c == '_');
            (word && !args.is_empty()).then_some((kind, args, inner.len()))
        });
        match tag {
            Some((kind, args, len)) => {
                if kind == "lora" || kind == "lyco" {
                    let mut parts = args.split(':');
                    let name = parts.next().unwrap_or_default().trim().to_string();
                    let scale = match parts.next() {
                        None => 1.0,
                        Some(s) => s.trim().parse::<f32>().map_err(|_| {
                            ApiError::bad_request(format!(
                                "<{kind}:{args}>: the multiplier {s:?} is not a number"
                            ))
                        })?,
                    };
                    if let Some(u) = parts.next()
                        && u.trim().parse::<f32>().ok() != Some(scale)
                    {
                        return Err(ApiError::bad_request(format!(
                            "<{kind}:{args}>: a UNet multiplier other than the text encoder's is not supported"
                        )));
                    }
                    loras.push((name, scale));
                }
                rest = &tail[len + 1..];
            }
            None => {
                text.push('<');
                rest = tail;
            }
        }
    }
    text.push_str(rest);
    Ok((text, loras))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_tags() {
        let (p, l) =
            take_prompt_tags("a cat <lora:ink:0.8>, <lora:b> <hypernet:x:1> 1 < 2").unwrap();
        assert_eq!(p, "a cat ,   1 < 2");
        assert_eq!(l, vec![("ink".to_string(), 0.8), ("b".to_string(), 1.0)]);
        let (p, l) = take_prompt_tags("<lora:a:0.5:0.5>x").unwrap();
        assert_eq!((p.as_str(), l), ("x", vec![("a".to_string(), 0.5)]));
        assert!(take_prompt_tags("<lora:a:0.5:0.7>").is_err());
        assert!(take_prompt_tags("<lora:a:big>").is_err());
        let (p, l) = take_prompt_tags("no tags <here>").unwrap();
        assert_eq!((p.as_str(), l.len()), ("no tags <here>", 0));
    }

    #[test]
    fn json_forms() {
        let dir = std::env::temp_dir().join(format!("wgsd-loras-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/ink.safetensors"), b"x").unwrap();
        let l = from_json(
            &serde_json::json!([{"name": "ink", "scale": 0.5}]),
            Some(&dir),
        )
        .unwrap();
        assert_eq!(
            (l[0].scale, l[0].path.clone()),
            (0.5, dir.join("sub/ink.safetensors"))
        );
        let l = from_json(&serde_json::json!({"ink": 0.25}), Some(&dir)).unwrap();
        assert_eq!(l[0].scale, 0.25);
        assert_eq!(
            from_json(&serde_json::json!([{"name": "ink"}]), Some(&dir)).unwrap()[0].scale,
            1.0
        );
        assert!(from_json(&serde_json::json!([{"name": "nope"}]), Some(&dir)).is_err());
        assert!(from_json(&serde_json::json!("ink"), Some(&dir)).is_err());
        assert!(from_json(&serde_json::json!({"ink": "x"}), Some(&dir)).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
