//! Writes a component's converted tensors as one safetensors file (streamed: one tensor
//! in memory at a time), and zips a converted pipeline folder.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde_json::{Value, json};

use super::keymap::{Op, Plan};
use super::tensors::Checkpoint;
use crate::loader::error::LoadError;

/// Writes `plan`'s tensors from `ckpt` to `path` in the safetensors format: 8-byte
/// header length, JSON header (sorted names, contiguous offsets, padded to 8 bytes),
/// then the data in header order.
pub fn write_safetensors(ckpt: &Checkpoint, plan: &Plan, path: &Path) -> Result<(), LoadError> {
    let infos = ckpt.infos();
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, m) in plan {
        let info = infos
            .get(&m.source)
            .ok_or_else(|| LoadError::MissingTensor {
                file: ckpt.path().to_path_buf(),
                key: m.source.clone(),
            })?;
        let shape = m.shape(&info.shape);
        if let Op::Rows { parts, .. } = m.op
            && info.shape.first().is_none_or(|r| r % parts != 0)
        {
            return Err(LoadError::Corrupt {
                file: ckpt.path().to_path_buf(),
                msg: format!(
                    "{}: shape {:?} does not split into {parts} along its first dimension",
                    m.source, info.shape
                ),
            });
        }
        let bytes = shape.iter().product::<usize>() * info.dtype.size();
        header.insert(
            name.clone(),
            json!({
                "dtype": info.dtype.safetensors_name(),
                "shape": shape,
                "data_offsets": [offset, offset + bytes],
            }),
        );
        offset += bytes;
    }
    let mut text = serde_json::to_string(&Value::Object(header)).map_err(|e| LoadError::Json {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })?;
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| LoadError::io(p, e))?;
    }
    let io = |e| LoadError::io(path, e);
    let mut out = BufWriter::new(File::create(path).map_err(io)?);
    out.write_all(&(text.len() as u64).to_le_bytes())
        .and_then(|()| out.write_all(text.as_bytes()))
        .map_err(io)?;
    // Fused q/k/v sources are read once for their three parts.
    let mut fused: Option<(String, Vec<u8>)> = None;
    for m in plan.values() {
        match m.op {
            Op::Copy | Op::Squeeze => out.write_all(&ckpt.read(&m.source)?).map_err(io)?,
            Op::Rows { index, parts } => {
                let data = match fused.take() {
                    Some((k, d)) if k == m.source => d,
                    _ => ckpt.read(&m.source)?,
                };
                let n = data.len() / parts;
                out.write_all(&data[index * n..(index + 1) * n])
                    .map_err(io)?;
                fused = Some((m.source.clone(), data));
            }
        }
    }
    out.into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

/// Zips the folder `src` into `dest` (entries sorted; weights stored, the rest deflated).
pub fn zip_folder(src: &Path, dest: &Path) -> Result<(), LoadError> {
    let mut files = BTreeMap::new();
    collect(src, src, &mut files)?;
    let io = |e| LoadError::io(dest, e);
    let file = File::create(dest).map_err(io)?;
    let mut zip = zip::ZipWriter::new(BufWriter::new(file));
    let zerr = |e: zip::result::ZipError| LoadError::Archive {
        path: dest.to_path_buf(),
        msg: e.to_string(),
    };
    for (name, path) in files {
        let size = fs::metadata(&path)
            .map_err(|e| LoadError::io(&path, e))?
            .len();
        let method = if name.ends_with(".safetensors") {
            zip::CompressionMethod::Stored
        } else {
            zip::CompressionMethod::Deflated
        };
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .large_file(size >= u32::MAX as u64);
        zip.start_file(name, opts).map_err(zerr)?;
        let mut f = File::open(&path).map_err(|e| LoadError::io(&path, e))?;
        std::io::copy(&mut f, &mut zip).map_err(io)?;
    }
    let inner = zip.finish().map_err(zerr)?;
    inner
        .into_inner()
        .map_err(|e| io(e.into_error()))?
        .sync_all()
        .map_err(io)
}

fn collect(
    root: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, std::path::PathBuf>,
) -> Result<(), LoadError> {
    for e in fs::read_dir(dir).map_err(|e| LoadError::io(dir, e))? {
        let p = e.map_err(|e| LoadError::io(dir, e))?.path();
        if p.is_dir() {
            collect(root, &p, out)?;
        } else if let Ok(rel) = p.strip_prefix(root) {
            let name = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.insert(name, p);
        }
    }
    Ok(())
}
