//! `multipart/form-data` bodies for `/predictions`, as TorchServe takes them
//! (`curl -F data="a prompt" -F seed=7`): the `data` field is the prompt, other fields
//! are the JSON parameter names (`prompt`, `seed`, `width`, ...). Parsed by axum's
//! multipart extractor (multer) from the body that `read_body` has already read under
//! `max_request_size`.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{HeaderMap, HeaderValue, header};
use serde_json::{Map, Value};

use super::error::ApiError;
use super::request::{Params, params_from_json};

/// Fields whose text is kept as text; the others are read as JSON numbers.
const TEXT_FIELDS: [&str; 7] = [
    "data",
    "prompt",
    "body",
    "negative_prompt",
    "scheduler",
    "timestep_spacing",
    "prompt_syntax",
];

/// Whether the request is a multipart form.
pub fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// The form's fields as request parameters. A field given twice, one that is not UTF-8
/// and a malformed form are 400s.
pub async fn parse(content_type: HeaderValue, body: Bytes) -> Result<Params, ApiError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ApiError::bad_request(format!("bad multipart form: {}", e.body_text()))
    };
    let mut req = Request::new(Body::from(body));
    req.headers_mut().insert(header::CONTENT_TYPE, content_type);
    // The body is already in memory and within `max_request_size`; without this the
    // extractor would apply axum's default 2 MB limit and refuse a large field as too large.
    let extract = tower::Layer::layer(
        &axum::extract::DefaultBodyLimit::disable(),
        tower::service_fn(|req: Request| async move { Multipart::from_request(req, &()).await }),
    );
    let mut form = tower::ServiceExt::oneshot(extract, req)
        .await
        .map_err(|e| ApiError::bad_request(format!("bad multipart form: {}", e.body_text())))?;
    let mut fields = Map::new();
    while let Some(field) = form.next_field().await.map_err(bad)? {
        let Some(name) = field.name().map(str::to_string) else {
            return Err(ApiError::bad_request("a multipart field has no name"));
        };
        let bytes = field.bytes().await.map_err(bad)?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
            ApiError::bad_request(format!("multipart field {name:?} is not valid UTF-8"))
        })?;
        let value = if TEXT_FIELDS.contains(&name.as_str()) {
            Value::String(text)
        } else {
            // `seed=7` is a number; a value that is not one stays text and fails the
            // parameter's type check with a 400 naming it.
            serde_json::from_str::<Value>(text.trim())
                .ok()
                .filter(|v| v.is_number() || v.is_boolean())
                .unwrap_or(Value::String(text))
        };
        if fields.insert(name.clone(), value).is_some() {
            return Err(ApiError::bad_request(format!(
                "multipart field {name:?} is given twice"
            )));
        }
    }
    params_from_json(Value::Object(fields))
}
