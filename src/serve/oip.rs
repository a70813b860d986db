//! The Open Inference Protocol's tensors as wgsd reads and writes them, shared by the
//! REST routes (`protocols`, with Triton's binary tensor extension) and gRPC (`grpc`),
//! so both accept the same inputs and parameters and reply with the same image tensor.
//!
//! Inputs: a BYTES tensor of prompts (any name but `negative_prompt`), optionally a
//! BYTES `negative_prompt` tensor (one, or one per prompt); request `parameters` take the
//! JSON parameter names of `/predictions`. Output: `image`, UINT8 `[N, H, W, 3]` (or
//! `[H, W, 3]` for one image from a scalar prompt), row-major.
//!
//! BYTES in their raw form (gRPC's `raw_input_contents`, REST binary data) are, as
//! Triton's `tritonclient.utils.serialize_byte_tensor` writes them, each element's
//! length as a little-endian u32 followed by its bytes.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::request::{Defaults, MAX_IMAGES, params_from_json};
use crate::pipeline::{GenerateRequest, Image};

/// The output tensor's name.
pub(crate) const IMAGE_OUTPUT: &str = "image";
/// The input that holds negative prompts; any other BYTES input holds the prompts.
pub(crate) const NEGATIVE_INPUT: &str = "negative_prompt";
/// Request parameters of Triton's binary tensor extension (not generation parameters).
pub(crate) const BINARY_OUTPUT_PARAM: &str = "binary_data_output";
/// The model metadata's tensors: (name, datatype, shape with -1 for any size).
pub(crate) const INPUTS: [(&str, &str, &[i64]); 1] = [("prompt", "BYTES", &[-1])];
pub(crate) const OUTPUTS: [(&str, &str, &[i64]); 1] = [(IMAGE_OUTPUT, "UINT8", &[-1, -1, -1, 3])];
/// The protocol extensions the server metadata lists (Triton's names).
pub(crate) const EXTENSIONS: [&str; 1] = ["binary_tensor_data"];
/// The platform the metadata names.
pub(crate) const PLATFORM: &str = "wgsd_stable_diffusion";

/// One BYTES input as a request carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BytesInput {
    pub name: String,
    pub strings: Vec<String>,
    /// A scalar (a bare JSON string, or shape `[]`): one image comes back as `[H, W, 3]`.
    pub scalar: bool,
}

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

/// Only BYTES inputs hold prompts.
pub(crate) fn check_datatype(name: &str, datatype: &str) -> Result<(), ApiError> {
    match datatype {
        "BYTES" => Ok(()),
        "" => Err(bad(format!("input {name:?} has no datatype"))),
        other => Err(bad(format!(
            "input {name:?}: datatype {other} is not supported; prompts are BYTES"
        ))),
    }
}

/// The element count of `dims`, checked: `[2^64-1, 2^64-1]` must not wrap to a small
/// count, and a negative size is refused.
pub(crate) fn element_count(name: &str, dims: &[i64]) -> Result<u64, ApiError> {
    dims.iter()
        .try_fold(1u64, |acc, &d| {
            u64::try_from(d).ok().and_then(|d| acc.checked_mul(d))
        })
        .ok_or_else(|| {
            bad(format!(
                "input {name:?}: shape {dims:?} is too large or negative"
            ))
        })
}

/// Refuses `strings` whose count is not what `dims` holds.
pub(crate) fn check_shape(name: &str, dims: &[i64], strings: usize) -> Result<(), ApiError> {
    let count = element_count(name, dims)?;
    if count != strings as u64 {
        return Err(bad(format!(
            "input {name:?}: shape {dims:?} holds {count} elements, the data has {strings}"
        )));
    }
    Ok(())
}

/// A prompt as text.
pub(crate) fn utf8(name: &str, bytes: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        bad(format!(
            "input {name:?}: a BYTES element is not valid UTF-8"
        ))
    })
}

/// The raw form of a BYTES tensor (u32 little-endian length, then the bytes, per
/// element) to its strings; every length is checked against what is left.
pub(crate) fn decode_raw_bytes(name: &str, mut raw: &[u8]) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let Some((len, rest)) = raw.split_first_chunk::<4>() else {
            return Err(bad(format!(
                "input {name:?}: raw BYTES data ends inside an element's 4-byte length"
            )));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(bad(format!(
                "input {name:?}: a raw BYTES element says {len} bytes, {} are left",
                rest.len()
            )));
        }
        let (element, rest) = rest.split_at(len);
        out.push(utf8(name, element)?);
        raw = rest;
    }
    Ok(out)
}

/// The inputs and request parameters to one (batched) generation request, and whether
/// the reply is one image from a scalar prompt.
pub(crate) fn generate_request(
    defaults: &Defaults,
    inputs: Vec<BytesInput>,
    mut parameters: Map<String, Value>,
) -> Result<(GenerateRequest, bool), ApiError> {
    if inputs.is_empty() {
        return Err(bad(
            "expected \"inputs\": [{\"name\", \"shape\", \"datatype\": \"BYTES\", \"data\"}]",
        ));
    }
    let mut prompts = None;
    let mut negative = None;
    for input in inputs {
        let slot = if input.name == NEGATIVE_INPUT {
            &mut negative
        } else {
            &mut prompts
        };
        let name = input.name.clone();
        if slot.replace(input).is_some() {
            return Err(bad(format!(
                "more than one prompt input (\"{name}\"); send the prompts as one BYTES input"
            )));
        }
    }
    let prompts = prompts.ok_or_else(|| bad("no prompt input"))?;
    parameters.remove(BINARY_OUTPUT_PARAM);
    let first = prompts.strings.first().cloned().unwrap_or_default();
    parameters.insert("prompt".into(), Value::String(first));
    let mut request = params_from_json(Value::Object(parameters))?.into_request(defaults)?;
    if prompts.strings.iter().any(|p| p.trim().is_empty()) {
        return Err(bad("a prompt is empty"));
    }
    let images = prompts
        .strings
        .len()
        .saturating_mul(request.num_images_per_prompt);
    if images > MAX_IMAGES {
        return Err(bad(format!(
            "{images} images asked for ({} prompts x num_images {}); at most {MAX_IMAGES}",
            prompts.strings.len(),
            request.num_images_per_prompt
        )));
    }
    if let Some(neg) = negative {
        if neg.strings.len() != 1 && neg.strings.len() != prompts.strings.len() {
            return Err(bad(format!(
                "{} negative prompts for {} prompts: give one, or one per prompt",
                neg.strings.len(),
                prompts.strings.len()
            )));
        }
        request.negative_prompts = neg.strings;
    }
    let one = prompts.scalar && images == 1;
    request.prompts = prompts.strings;
    Ok((request, one))
}

/// The bytes of the images a request asks for (`N * H * W * 3`), for checks against
/// `max_response_size` before any GPU time is spent.
pub(crate) fn image_bytes(request: &GenerateRequest) -> usize {
    request
        .prompts
        .len()
        .saturating_mul(request.num_images_per_prompt)
        .saturating_mul(request.width)
        .saturating_mul(request.height)
        .saturating_mul(3)
}

/// The `image` output's shape.
pub(crate) fn image_shape(images: &[Image], one: bool) -> Vec<usize> {
    let (h, w) = images.first().map_or((0, 0), |i| (i.height, i.width));
    if one {
        vec![h, w, 3]
    } else {
        vec![images.len(), h, w, 3]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(strings: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for s in strings {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    #[test]
    fn raw_bytes_round_trip_and_bounds() {
        let data = raw(&["a red circle", "", "ünïcode"]);
        assert_eq!(
            decode_raw_bytes("p", &data).expect("valid"),
            vec!["a red circle", "", "ünïcode"]
        );
        assert_eq!(
            decode_raw_bytes("p", &[]).expect("empty"),
            Vec::<String>::new()
        );
        // A length past the end, a cut length, bad UTF-8.
        let mut long = raw(&["abc"]);
        long[0] = 200;
        let e = decode_raw_bytes("p", &long).expect_err("too long");
        assert!(e.message.contains("200 bytes"), "{}", e.message);
        let e = decode_raw_bytes("p", &[1, 0]).expect_err("cut");
        assert!(e.message.contains("4-byte length"), "{}", e.message);
        let e = decode_raw_bytes("p", &[1, 0, 0, 0, 0xff]).expect_err("utf8");
        assert!(e.message.contains("UTF-8"), "{}", e.message);
        let huge = u32::MAX.to_le_bytes();
        assert!(decode_raw_bytes("p", &huge).is_err());
    }

    #[test]
    fn shapes_are_checked_without_wrapping() {
        assert_eq!(element_count("p", &[]).expect("scalar"), 1);
        assert_eq!(element_count("p", &[2, 3]).expect("6"), 6);
        assert!(element_count("p", &[-1]).is_err());
        assert!(element_count("p", &[i64::MAX, i64::MAX, 4]).is_err());
        assert!(check_shape("p", &[1], 1).is_ok());
        assert!(check_shape("p", &[2], 1).is_err());
    }

    #[test]
    fn inputs_become_one_request() {
        let defaults = Defaults {
            steps: 2,
            width: 16,
            height: 16,
            lora_dir: None,
        };
        let input = |name: &str, strings: &[&str], scalar| BytesInput {
            name: name.into(),
            strings: strings.iter().map(|s| s.to_string()).collect(),
            scalar,
        };
        let mut params = Map::new();
        params.insert("seed".into(), Value::from(7));
        params.insert(BINARY_OUTPUT_PARAM.into(), Value::Bool(true));
        let (r, one) = generate_request(
            &defaults,
            vec![
                input("prompt", &["a", "b"], false),
                input(NEGATIVE_INPUT, &["x"], false),
            ],
            params,
        )
        .expect("valid");
        assert_eq!((r.prompts.len(), r.seed, one), (2, 7, false));
        assert_eq!(r.negative_prompts, vec!["x"]);
        assert_eq!(image_bytes(&r), 2 * 16 * 16 * 3);
        let (_, one) = generate_request(&defaults, vec![input("text", &["a"], true)], Map::new())
            .expect("scalar");
        assert!(one);
        for bad_inputs in [
            vec![],
            vec![input("prompt", &["a"], false), input("text", &["b"], false)],
            vec![input(NEGATIVE_INPUT, &["a"], false)],
            vec![input("prompt", &[" "], false)],
            vec![
                input("prompt", &["a", "b"], false),
                input(NEGATIVE_INPUT, &["x", "y", "z"], false),
            ],
        ] {
            assert!(generate_request(&defaults, bad_inputs, Map::new()).is_err());
        }
    }
}
