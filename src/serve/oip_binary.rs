//! Triton's binary tensor data extension of the OIP REST API (what `tritonclient.http`
//! sends and asks for by default, `binary_data=True`), as Triton's
//! `docs/protocol/extension_binary_data.md` describes it:
//!
//! - request: the `Inference-Header-Content-Length: N` header says the body's first N
//!   bytes are the JSON inference request; the rest is the inputs' raw data, one after
//!   the other in input order, each input that is sent this way naming its byte count in
//!   `parameters.binary_data_size` (and carrying no `data`);
//! - reply: when the request asks (`parameters.binary_data_output: true`, or
//!   `parameters.binary_data: true` on a requested output), the output's `data` is left
//!   out of the JSON, which names its size in `parameters.binary_data_size`, and its raw
//!   bytes follow the JSON; the reply's `Inference-Header-Content-Length` is the JSON's
//!   length.
//!
//! Every size is checked against what the body holds (no arithmetic can wrap).

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::error::ApiError;
use super::oip::{self, BINARY_OUTPUT_PARAM, BytesInput, IMAGE_OUTPUT};
use super::reply;
use super::request::Defaults;
use crate::pipeline::{GenerateRequest, Image};

/// The header that splits a body into its JSON head and binary data.
pub(crate) const HEADER_LENGTH: &str = "inference-header-content-length";

fn bad(m: impl Into<String>) -> ApiError {
    ApiError::bad_request(m)
}

/// An OIP REST inference request, read.
#[derive(Debug)]
pub struct InferRequest {
    /// The JSON inference request (its `id` is echoed).
    pub head: Value,
    pub request: GenerateRequest,
    /// One image from a scalar prompt: the output's shape is `[H, W, 3]`.
    pub one: bool,
    /// The image goes back as binary data after the JSON.
    pub binary: bool,
}

/// Reads a `/v2/models/{m}/infer` body (JSON, or JSON plus binary data when `headers`
/// have `Inference-Header-Content-Length`) into a generation request.
pub fn parse_request(
    headers: &HeaderMap,
    body: Bytes,
    defaults: &Defaults,
) -> Result<InferRequest, ApiError> {
    let (head, tail) = split_body(headers, body)?;
    let raw = binary_inputs(&head, &tail)?;
    let binary = wants_binary(&head)?;
    let (request, one) = generation(defaults, &head, &raw)?;
    Ok(InferRequest {
        head,
        request,
        one,
        binary,
    })
}

/// One input of the JSON request: its strings from `data`, or from `raw` (its binary
/// data, Triton's extension) in the BYTES raw form.
fn bytes_input(input: &Value, raw: Option<&[u8]>) -> Result<BytesInput, ApiError> {
    let name = input.get("name").and_then(Value::as_str).unwrap_or("?");
    oip::check_datatype(
        name,
        input.get("datatype").and_then(Value::as_str).unwrap_or(""),
    )?;
    let dims = match input.get("shape") {
        None => None,
        Some(shape) => Some(
            shape
                .as_array()
                .and_then(|d| d.iter().map(Value::as_u64).collect::<Option<Vec<u64>>>())
                .ok_or_else(|| bad(format!("input {name:?}: shape must be a list of sizes")))?
                .into_iter()
                .map(|d| {
                    i64::try_from(d)
                        .map_err(|_| bad(format!("input {name:?}: shape size {d} is too large")))
                })
                .collect::<Result<Vec<i64>, _>>()?,
        ),
    };
    let (strings, scalar) = match (raw, input.get("data")) {
        (Some(raw), _) => (
            oip::decode_raw_bytes(name, raw)?,
            dims.as_ref().is_some_and(|d| d.is_empty()),
        ),
        (None, Some(Value::String(s))) => (vec![s.clone()], true),
        (None, Some(Value::Array(items))) => {
            // Nested lists are the row-major form of a multi-dimensional shape.
            let mut out = Vec::new();
            let mut stack: Vec<&Value> = items.iter().rev().collect();
            while let Some(v) = stack.pop() {
                match v {
                    Value::String(s) => out.push(s.clone()),
                    Value::Array(inner) => stack.extend(inner.iter().rev()),
                    other => {
                        return Err(bad(format!(
                            "input {name:?}: BYTES data must be strings, got {other}"
                        )));
                    }
                }
            }
            (out, false)
        }
        _ => {
            return Err(bad(format!(
                "input {name:?}: \"data\" must be a string or a list of strings"
            )));
        }
    };
    if let Some(dims) = &dims {
        oip::check_shape(name, dims, strings.len())?;
    }
    Ok(BytesInput {
        name: input
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        strings,
        scalar,
    })
}

/// The JSON head's inputs (with each one's binary data) and parameters to one (batched)
/// generation request, and whether it is one image from a scalar prompt.
fn generation(
    defaults: &Defaults,
    body: &Value,
    raw: &[Option<&[u8]>],
) -> Result<(GenerateRequest, bool), ApiError> {
    let inputs = body
        .get("inputs")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            bad("expected \"inputs\": [{\"name\", \"shape\", \"datatype\": \"BYTES\", \"data\"}]")
        })?;
    let inputs = inputs
        .iter()
        .enumerate()
        .map(|(i, input)| bytes_input(input, raw.get(i).copied().flatten()))
        .collect::<Result<Vec<_>, _>>()?;
    let parameters = match body.get("parameters") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return Err(bad("\"parameters\" must be an object")),
    };
    oip::generate_request(defaults, inputs, parameters)
}

/// The body's JSON head (parsed) and its binary tail (empty without the header).
pub(crate) fn split_body(headers: &HeaderMap, body: Bytes) -> Result<(Value, Bytes), ApiError> {
    let Some(value) = headers.get(HEADER_LENGTH) else {
        let head = serde_json::from_slice(&body)
            .map_err(|e| bad(format!("the JSON body does not parse: {e}")))?;
        return Ok((head, Bytes::new()));
    };
    let n = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| bad("Inference-Header-Content-Length must be a byte count"))?;
    if n > body.len() {
        return Err(bad(format!(
            "Inference-Header-Content-Length is {n}, the body has only {} bytes",
            body.len()
        )));
    }
    let head = serde_json::from_slice(&body[..n])
        .map_err(|e| bad(format!("the JSON inference header does not parse: {e}")))?;
    Ok((head, body.slice(n..)))
}

/// Each input's binary data, in input order (`None` for an input whose data is in the
/// JSON); the sizes must add up to exactly the tail.
pub(crate) fn binary_inputs<'a>(
    head: &Value,
    tail: &'a [u8],
) -> Result<Vec<Option<&'a [u8]>>, ApiError> {
    let inputs = head.get("inputs").and_then(Value::as_array);
    let mut out = Vec::new();
    let mut offset = 0usize;
    for input in inputs.into_iter().flatten() {
        let name = input.get("name").and_then(Value::as_str).unwrap_or("?");
        let Some(size) = input
            .get("parameters")
            .and_then(|p| p.get("binary_data_size"))
        else {
            out.push(None);
            continue;
        };
        let size = size
            .as_u64()
            .and_then(|s| usize::try_from(s).ok())
            .ok_or_else(|| {
                bad(format!(
                    "input {name:?}: binary_data_size must be a byte count"
                ))
            })?;
        if input.get("data").is_some() {
            return Err(bad(format!(
                "input {name:?} has both \"data\" and binary_data_size"
            )));
        }
        let end = offset
            .checked_add(size)
            .filter(|&end| end <= tail.len())
            .ok_or_else(|| {
                bad(format!(
                    "input {name:?}: binary_data_size {size} is past the end of the binary data ({} bytes after the JSON, {offset} used)",
                    tail.len()
                ))
            })?;
        out.push(Some(&tail[offset..end]));
        offset = end;
    }
    if offset != tail.len() {
        return Err(bad(format!(
            "{} bytes after the JSON inference header belong to no input (binary_data_size adds up to {offset})",
            tail.len()
        )));
    }
    Ok(out)
}

fn flag(v: &Value, what: &str) -> Result<bool, ApiError> {
    v.as_bool()
        .ok_or_else(|| bad(format!("{what} must be true or false")))
}

/// Whether the reply's `image` goes as binary data: the request's `binary_data_output`,
/// overridden by a requested output's own `binary_data`. A requested output other than
/// `image` is refused.
pub(crate) fn wants_binary(head: &Value) -> Result<bool, ApiError> {
    let mut binary = match head
        .get("parameters")
        .and_then(|p| p.get(BINARY_OUTPUT_PARAM))
    {
        Some(v) => flag(v, BINARY_OUTPUT_PARAM)?,
        None => false,
    };
    let outputs = match head.get("outputs") {
        None | Some(Value::Null) => return Ok(binary),
        Some(Value::Array(o)) => o,
        Some(_) => return Err(bad("\"outputs\" must be a list")),
    };
    for output in outputs {
        let name = output.get("name").and_then(Value::as_str).unwrap_or("");
        if name != IMAGE_OUTPUT {
            return Err(bad(format!(
                "unknown output {name:?}: this model's output is \"{IMAGE_OUTPUT}\""
            )));
        }
        if let Some(v) = output.get("parameters").and_then(|p| p.get("binary_data")) {
            binary = flag(v, "binary_data")?;
        }
    }
    Ok(binary)
}

/// The reply with the images as binary data after the JSON `head` (which holds the
/// model name, version and id), refused when over `limit` bytes.
pub(crate) fn reply(
    mut head: Map<String, Value>,
    shape: &[usize],
    images: Vec<Image>,
    limit: usize,
) -> Result<Response, ApiError> {
    let size = images
        .iter()
        .try_fold(0usize, |acc, i| acc.checked_add(i.data.len()))
        .ok_or_else(|| reply::too_large(usize::MAX, limit))?;
    head.insert(
        "outputs".into(),
        json!([{
            "name": IMAGE_OUTPUT,
            "datatype": "UINT8",
            "shape": shape,
            "parameters": { "binary_data_size": size },
        }]),
    );
    let text = Value::Object(head).to_string();
    let total = text.len().saturating_add(size);
    reply::check_size(total, limit)?;
    let mut body = Vec::with_capacity(total);
    body.extend_from_slice(text.as_bytes());
    for image in images {
        body.extend_from_slice(&image.data);
    }
    let mut res = ([(header::CONTENT_TYPE, "application/octet-stream")], body).into_response();
    res.headers_mut()
        .insert(HEADER_LENGTH, HeaderValue::from(text.len()));
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(n: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER_LENGTH, HeaderValue::from_str(n).expect("header"));
        h
    }

    #[test]
    fn bodies_split_at_the_header_length() {
        let json = br#"{"inputs":[{"name":"p","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":5}}]}"#;
        let mut body = json.to_vec();
        body.extend_from_slice(&[1, 0, 0, 0, b'x']);
        let (head, tail) =
            split_body(&headers(&json.len().to_string()), Bytes::from(body.clone())).expect("ok");
        assert_eq!(&tail[..], &[1, 0, 0, 0, b'x']);
        let raw = binary_inputs(&head, &tail).expect("sizes add up");
        assert_eq!(raw, vec![Some(&[1u8, 0, 0, 0, b'x'][..])]);
        // The header past the body, not a number, or leaving bytes unclaimed.
        assert!(split_body(&headers("100000"), Bytes::from(body.clone())).is_err());
        assert!(split_body(&headers("-1"), Bytes::from(body.clone())).is_err());
        assert!(binary_inputs(&head, &tail[..4]).is_err());
        let mut extra = tail.to_vec();
        extra.push(0);
        assert!(binary_inputs(&head, &extra).is_err());
        // Without the header the whole body is JSON.
        assert!(split_body(&HeaderMap::new(), Bytes::from(body)).is_err());
    }

    #[test]
    fn huge_sizes_do_not_wrap() {
        let head = json!({"inputs": [
            {"name": "a", "parameters": {"binary_data_size": 2}},
            {"name": "b", "parameters": {"binary_data_size": u64::MAX}},
        ]});
        assert!(binary_inputs(&head, &[0, 0, 0]).is_err());
        let both = json!({"inputs": [{"name": "a", "data": ["x"], "parameters": {"binary_data_size": 0}}]});
        assert!(binary_inputs(&both, &[]).is_err());
    }

    #[test]
    fn binary_output_is_asked_per_request_or_output() {
        assert!(!wants_binary(&json!({})).expect("default"));
        assert!(wants_binary(&json!({"parameters": {"binary_data_output": true}})).expect("req"));
        let per_output = json!({"parameters": {"binary_data_output": true},
            "outputs": [{"name": "image", "parameters": {"binary_data": false}}]});
        assert!(!wants_binary(&per_output).expect("output wins"));
        assert!(wants_binary(&json!({"outputs": [{"name": "mask"}]})).is_err());
        assert!(wants_binary(&json!({"parameters": {"binary_data_output": 1}})).is_err());
    }

    #[test]
    fn binary_reply_has_json_then_bytes() {
        let image = Image {
            width: 2,
            height: 1,
            data: vec![1, 2, 3, 4, 5, 6],
        };
        let res = reply(Map::new(), &[1, 1, 2, 3], vec![image.clone()], 1 << 20).expect("fits");
        let n: usize = res.headers()[HEADER_LENGTH]
            .to_str()
            .expect("ascii")
            .parse()
            .expect("number");
        assert!(n > 0);
        assert!(reply(Map::new(), &[1, 1, 2, 3], vec![image], 10).is_err());
    }
}
