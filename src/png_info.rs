//! Generation parameters in PNG files, as AUTOMATIC1111's web UI writes them: a text
//! chunk with the keyword `parameters` holding
//!
//! ```text
//! a red circle on a white background
//! Negative prompt: blurry
//! Steps: 20, Sampler: Euler a, CFG scale: 7.5, Seed: 1234, Size: 64x64, Model hash: 1a2b3c4d5e, Model: shapes-tiny
//! ```
//!
//! (the negative prompt line only when there is one). [`encode_png`] writes an RGB PNG
//! with that chunk (`tEXt` when the text is Latin-1, else `iTXt`, as PIL does);
//! [`read_parameters`] reads it back and [`parse`] turns the text into fields.

use std::io::Cursor;

use crate::error::{Error, Result};
use crate::hires::{HiresFix, HiresSize};
use crate::schedulers::Sampler;

/// The chunk keyword A1111 (and the tools that read its images) use.
pub const KEYWORD: &str = "parameters";

/// Characters of the model hash A1111 shows ("sha256 short").
pub const HASH_CHARS: usize = 10;

/// What one image was generated with.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GenParams {
    pub prompt: String,
    /// Empty: none.
    pub negative_prompt: String,
    pub steps: usize,
    pub scheduler: Option<Sampler>,
    pub guidance_scale: f32,
    pub seed: u64,
    pub width: usize,
    pub height: usize,
    /// First [`HASH_CHARS`] hex digits of the SHA-256 of the model archive.
    pub model_hash: Option<String>,
    /// The registered model name.
    pub model: Option<String>,
    /// img2img and the hires fix: A1111's "Denoising strength".
    pub denoising_strength: Option<f64>,
    /// The hires fix: "Hires upscale" (or "Hires resize"), "Hires steps" (when not 0) and
    /// "Hires upscaler", in A1111's order (`StableDiffusionProcessingTxt2Img.init`).
    pub hires: Option<HiresFix>,
    /// A1111's "Lora hashes": each LoRA's name as the prompt mentions it and the first 12
    /// hex digits of its file's SHA-256.
    pub lora_hashes: Vec<(String, String)>,
}

/// A number as A1111's infotext shows it: Python's shortest repr, without a `.0` on whole
/// numbers (`0.7`, `2`, `1.5`).
pub fn number(v: f64) -> String {
    format!("{v}")
}

/// A1111's sampler name for a sampler.
pub fn sampler_name(sampler: Sampler) -> &'static str {
    sampler.a1111_name()
}

/// The sampler for an A1111 sampler name (`None`: one wgsd does not have).
pub fn scheduler_from_sampler(name: &str) -> Option<Sampler> {
    Sampler::all().find(|s| s.a1111_name().eq_ignore_ascii_case(name.trim()))
}

/// The short name `Sampler::parse` accepts and the HTTP API reports.
pub fn short_name(sampler: Sampler) -> &'static str {
    sampler.name()
}

/// The first [`HASH_CHARS`] characters of a hex digest.
pub fn short_hash(sha256_hex: &str) -> String {
    sha256_hex.chars().take(HASH_CHARS).collect()
}

/// A value that holds a comma, a colon or a quote is quoted (with `\"` and `\\`
/// escapes), as A1111's `quote` does (it checks commas, colons and newlines), so the
/// `key: value, ...` line splits back unambiguously.
fn quote_if_needed(v: &str) -> String {
    if !v.contains([',', ':', '"', '\n']) {
        return v.to_string();
    }
    let mut out = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The A1111 text for `p`.
pub fn format(p: &GenParams) -> String {
    let mut out = p.prompt.clone();
    if !p.negative_prompt.is_empty() {
        out.push_str("\nNegative prompt: ");
        out.push_str(&p.negative_prompt);
    }
    let mut fields = vec![format!("Steps: {}", p.steps)];
    if let Some(s) = p.scheduler {
        fields.push(format!("Sampler: {}", sampler_name(s)));
    }
    fields.push(format!("CFG scale: {}", p.guidance_scale));
    fields.push(format!("Seed: {}", p.seed));
    fields.push(format!("Size: {}x{}", p.width, p.height));
    if let Some(h) = &p.model_hash {
        fields.push(format!("Model hash: {}", quote_if_needed(h)));
    }
    if let Some(m) = &p.model {
        fields.push(format!("Model: {}", quote_if_needed(m)));
    }
    if let Some(d) = p.denoising_strength {
        fields.push(format!("Denoising strength: {}", number(d)));
    }
    if let Some(h) = &p.hires {
        fields.push(match h.size {
            HiresSize::Scale(s) => format!("Hires upscale: {}", number(s)),
            HiresSize::Resize { width, height } => format!("Hires resize: {width}x{height}"),
        });
        if h.steps > 0 {
            fields.push(format!("Hires steps: {}", h.steps));
        }
        fields.push(format!(
            "Hires upscaler: {}",
            quote_if_needed(h.upscaler.name())
        ));
    }
    if !p.lora_hashes.is_empty() {
        let list: Vec<String> = p
            .lora_hashes
            .iter()
            .map(|(name, hash)| format!("{}: {hash}", name.replace([':', ','], "")))
            .collect();
        fields.push(format!(
            "Lora hashes: {}",
            quote_if_needed(&list.join(", "))
        ));
    }
    out.push('\n');
    out.push_str(&fields.join(", "));
    out
}

/// What [`parse`] finds: every field is optional (text from other tools may lack any).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedParams {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: Option<usize>,
    /// The sampler as written.
    pub sampler: Option<String>,
    pub scheduler: Option<Sampler>,
    pub guidance_scale: Option<f32>,
    pub seed: Option<u64>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    pub model_hash: Option<String>,
    pub model: Option<String>,
    pub denoising_strength: Option<f64>,
    /// Every `key: value` pair of the settings line, in order.
    pub extra: Vec<(String, String)>,
}

/// Splits `Steps: 20, Sampler: Euler a, Model: "a, b"` into pairs; `None` when the line
/// is not such a list.
fn split_fields(line: &str) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut rest = line.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once(':')?;
        let key = key.trim();
        if key.is_empty() || key.contains(['"', ',']) {
            return None;
        }
        let after = after.trim_start();
        let (value, tail) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, e)) => value.push(e),
                        None => return None,
                    },
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end?..])
        } else {
            match after.split_once(',') {
                Some((v, t)) => (v.trim().to_string(), t),
                None => (after.trim().to_string(), ""),
            }
        };
        out.push((key.to_string(), value));
        let tail = tail.trim_start();
        rest = tail.strip_prefix(',').unwrap_or(tail).trim_start();
    }
    Some(out)
}

/// Reads A1111 text. The last line that is a `key: value` list with `Steps:` holds the
/// settings; the lines before it are the prompt, up to a line starting with
/// `Negative prompt:`, and the negative prompt after. Text without a settings line is
/// all prompt (as A1111 reads it).
pub fn parse(text: &str) -> ParsedParams {
    let lines: Vec<&str> = text.lines().collect();
    let settings = lines.iter().enumerate().rev().find_map(|(i, l)| {
        let fields = split_fields(l)?;
        fields
            .iter()
            .any(|(k, _)| k == "Steps")
            .then_some((i, fields))
    });
    let (body, fields) = match settings {
        Some((i, f)) => (&lines[..i], f),
        None => (&lines[..], Vec::new()),
    };
    let mut prompt = Vec::new();
    let mut negative: Option<Vec<&str>> = None;
    for line in body {
        if let Some(n) = &mut negative {
            n.push(line);
        } else if let Some(first) = line.strip_prefix("Negative prompt:") {
            negative = Some(vec![first.trim_start()]);
        } else {
            prompt.push(*line);
        }
    }
    let mut out = ParsedParams {
        prompt: prompt.join("\n"),
        negative_prompt: negative.map(|n| n.join("\n")).unwrap_or_default(),
        ..ParsedParams::default()
    };
    for (k, v) in &fields {
        match k.as_str() {
            "Steps" => out.steps = v.parse().ok(),
            "Sampler" => {
                out.scheduler = scheduler_from_sampler(v);
                out.sampler = Some(v.clone());
            }
            "CFG scale" => out.guidance_scale = v.parse().ok(),
            "Seed" => out.seed = v.parse().ok(),
            "Size" => {
                if let Some((w, h)) = v.split_once('x') {
                    out.width = w.trim().parse().ok();
                    out.height = h.trim().parse().ok();
                }
            }
            "Model hash" => out.model_hash = Some(v.clone()),
            "Model" => out.model = Some(v.clone()),
            "Denoising strength" => out.denoising_strength = v.parse().ok(),
            _ => {}
        }
    }
    out.extra = fields;
    out
}

/// An RGB8 PNG of `width` x `height` pixels carrying `parameters` as its A1111 chunk.
pub fn encode_png(width: usize, height: usize, rgb: &[u8], parameters: &str) -> Result<Vec<u8>> {
    let dims = |v: usize| {
        u32::try_from(v).map_err(|_| Error::InvalidInput(format!("image side {v} is too large")))
    };
    if rgb.len() != width * height * 3 {
        return Err(Error::InvalidInput(format!(
            "an RGB image of {width} x {height} needs {} bytes, got {}",
            width * height * 3,
            rgb.len()
        )));
    }
    let png_err = |e: png::EncodingError| Error::InvalidInput(format!("PNG encoding: {e}"));
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, dims(width)?, dims(height)?);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let latin1 = parameters.chars().all(|c| (c as u32) < 256);
        if latin1 {
            enc.add_text_chunk(KEYWORD.into(), parameters.into())
        } else {
            enc.add_itxt_chunk(KEYWORD.into(), parameters.into())
        }
        .map_err(png_err)?;
        let mut writer = enc.write_header().map_err(png_err)?;
        writer.write_image_data(rgb).map_err(png_err)?;
        writer.finish().map_err(png_err)?;
    }
    Ok(out)
}

/// Whether `bytes` start with the PNG signature.
pub fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

/// The `parameters` text of a PNG (`Ok(None)` when it has none); an error when `bytes`
/// is not a readable PNG. Only the chunks before the image data are read.
pub fn read_parameters(bytes: &[u8]) -> Result<Option<String>> {
    if !is_png(bytes) {
        return Err(Error::InvalidInput("not a PNG file".into()));
    }
    read_parameters_from(Cursor::new(bytes))
}

/// As [`read_parameters`], from a reader (a file: the pixels are not read).
pub fn read_parameters_from<R: std::io::BufRead + std::io::Seek>(r: R) -> Result<Option<String>> {
    let reader = png::Decoder::new(r)
        .read_info()
        .map_err(|e| Error::InvalidInput(format!("unreadable PNG: {e}")))?;
    let info = reader.info();
    if let Some(t) = info
        .uncompressed_latin1_text
        .iter()
        .find(|t| t.keyword == KEYWORD)
    {
        return Ok(Some(t.text.clone()));
    }
    for t in &info.compressed_latin1_text {
        if t.keyword == KEYWORD {
            let text = t
                .get_text()
                .map_err(|e| Error::InvalidInput(format!("unreadable zTXt chunk: {e}")))?;
            return Ok(Some(text));
        }
    }
    for t in &info.utf8_text {
        if t.keyword == KEYWORD {
            let text = t
                .get_text()
                .map_err(|e| Error::InvalidInput(format!("unreadable iTXt chunk: {e}")))?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GenParams {
        GenParams {
            prompt: "a red circle on a white background".into(),
            negative_prompt: "blurry".into(),
            steps: 20,
            scheduler: Some(Sampler::parse("euler_a").unwrap()),
            guidance_scale: 7.5,
            seed: 1234,
            width: 64,
            height: 64,
            model_hash: Some("1a2b3c4d5e".into()),
            model: Some("shapes-tiny".into()),
            ..GenParams::default()
        }
    }

    fn check_round_trip(p: &GenParams) -> ParsedParams {
        let text = format(p);
        let got = parse(&text);
        assert_eq!(got.prompt, p.prompt, "{text}");
        assert_eq!(got.negative_prompt, p.negative_prompt, "{text}");
        assert_eq!(got.steps, Some(p.steps));
        assert_eq!(got.scheduler, p.scheduler);
        assert_eq!(got.guidance_scale, Some(p.guidance_scale));
        assert_eq!(got.seed, Some(p.seed));
        assert_eq!((got.width, got.height), (Some(p.width), Some(p.height)));
        assert_eq!(got.model_hash, p.model_hash);
        assert_eq!(got.model, p.model);
        got
    }

    #[test]
    fn format_is_a1111s() {
        assert_eq!(
            format(&sample()),
            "a red circle on a white background\nNegative prompt: blurry\nSteps: 20, \
             Sampler: Euler a, CFG scale: 7.5, Seed: 1234, Size: 64x64, Model hash: \
             1a2b3c4d5e, Model: shapes-tiny"
        );
    }

    /// A1111's order: Denoising strength after Model, then the hires fields, then the
    /// LoRA hashes (added when the networks activate, after `init`).
    #[test]
    fn denoising_hires_and_lora_fields() {
        use crate::hires::Upscaler;
        let p = GenParams {
            negative_prompt: String::new(),
            denoising_strength: Some(0.7),
            hires: Some(HiresFix {
                size: HiresSize::Scale(2.0),
                upscaler: Upscaler::default(),
                strength: 0.7,
                steps: 10,
            }),
            lora_hashes: vec![("detail".into(), "0123456789ab".into())],
            ..sample()
        };
        let text = format(&p);
        assert!(
            text.ends_with(
                "Model: shapes-tiny, Denoising strength: 0.7, Hires upscale: 2, Hires steps: 10, \
                 Hires upscaler: Latent, Lora hashes: \"detail: 0123456789ab\""
            ),
            "{text}"
        );
        let got = check_round_trip(&p);
        assert_eq!(got.denoising_strength, Some(0.7));
        assert!(
            got.extra
                .contains(&("Hires upscaler".into(), "Latent".into()))
        );
        let p = GenParams {
            hires: Some(HiresFix {
                size: HiresSize::Resize {
                    width: 96,
                    height: 0,
                },
                upscaler: crate::hires::Upscaler::parse("Latent (bicubic)").unwrap(),
                strength: 0.5,
                steps: 0,
            }),
            denoising_strength: Some(0.5),
            ..sample()
        };
        let text = format(&p);
        assert!(
            text.ends_with(
                "Denoising strength: 0.5, Hires resize: 96x0, Hires upscaler: Latent (bicubic)"
            ),
            "{text}"
        );
        check_round_trip(&p);
        assert_eq!(
            (number(1.5), number(2.0), number(0.75)),
            ("1.5".into(), "2".into(), "0.75".into())
        );
    }

    #[test]
    fn round_trip_with_and_without_negative_prompt() {
        let p = sample();
        check_round_trip(&p);
        let no_negative = GenParams {
            negative_prompt: String::new(),
            ..sample()
        };
        let text = format(&no_negative);
        assert!(!text.contains("Negative prompt"), "{text}");
        check_round_trip(&no_negative);
    }

    #[test]
    fn round_trip_multi_line_prompts_and_odd_values() {
        let p = GenParams {
            prompt: "line one\nline two: with a colon, and a comma\n\nline four".into(),
            negative_prompt: "bad\nworse".into(),
            model: Some("my, \"quoted\" model".into()),
            scheduler: Some(Sampler::parse("dpm++2m").unwrap()),
            guidance_scale: 1.0,
            seed: u64::MAX >> 11,
            ..sample()
        };
        check_round_trip(&p);
        for class in Sampler::all() {
            let q = GenParams {
                scheduler: Some(class),
                ..sample()
            };
            check_round_trip(&q);
        }
    }

    #[test]
    fn garbage_is_all_prompt() {
        for text in [
            "",
            "just words",
            "Steps twenty",
            "a: b, \"c",
            "\u{0}\u{ff}x",
        ] {
            let got = parse(text);
            assert_eq!(got.prompt, text.lines().collect::<Vec<_>>().join("\n"));
            assert_eq!(got.steps, None);
            assert_eq!(got.seed, None);
        }
        // A settings line with unreadable numbers keeps what it can.
        let got = parse("p\nSteps: x, Seed: 7, Size: 3y4, Sampler: Magic");
        assert_eq!(got.prompt, "p");
        assert_eq!((got.steps, got.seed, got.width), (None, Some(7), None));
        assert_eq!(got.sampler.as_deref(), Some("Magic"));
        assert_eq!(got.scheduler, None);
    }

    #[test]
    fn png_round_trip_latin1_and_utf8() {
        let rgb: Vec<u8> = (0..4 * 3 * 3).map(|i| i as u8).collect();
        for prompt in ["a café", "a 猫 in space"] {
            let p = GenParams {
                prompt: prompt.into(),
                ..sample()
            };
            let text = format(&p);
            let png = encode_png(4, 3, &rgb, &text).expect("encode");
            assert!(is_png(&png));
            assert_eq!(read_parameters(&png).expect("read"), Some(text));
            let img = image::load_from_memory(&png).expect("decodes").to_rgb8();
            assert_eq!(img.dimensions(), (4, 3));
            assert_eq!(img.into_raw(), rgb);
        }
    }

    #[test]
    fn png_without_chunk_and_not_png() {
        let img = image::RgbImage::new(2, 2);
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encode");
        assert_eq!(read_parameters(out.get_ref()).expect("read"), None);
        assert!(read_parameters(b"GIF89a....").is_err());
        assert!(read_parameters(b"\x89PNG\r\n\x1a\ngarbage").is_err());
        assert!(encode_png(2, 2, &[0; 5], "x").is_err());
    }
}
