//! OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with the
//! status OpenAI gives (400 invalid_request_error, 404 model_not_found, 503, ...).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::serve::error::ApiError;

/// An error reply in OpenAI's shape.
#[derive(Debug)]
pub struct OpenAiError {
    pub status: StatusCode,
    pub message: String,
    pub kind: &'static str,
    pub param: Option<String>,
    pub code: Option<&'static str>,
}

impl OpenAiError {
    pub fn invalid(param: &str, message: impl Into<String>) -> OpenAiError {
        OpenAiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param: Some(param.to_string()),
            code: None,
        }
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        let (kind, code) = match status.as_u16() {
            404 => ("invalid_request_error", Some("model_not_found")),
            413 => ("invalid_request_error", Some("request_too_large")),
            400..=499 => ("invalid_request_error", None),
            503 => ("server_error", Some("server_busy")),
            504 => ("server_error", Some("timeout")),
            _ => ("server_error", None),
        };
        OpenAiError {
            status,
            message: e.message,
            kind,
            param: None,
            code,
        }
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        });
        let mut res = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::ErrorKind;
    use axum::response::IntoResponse;

    #[test]
    fn error_shape() {
        let res = OpenAiError::invalid("size", "bad").into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        let e = OpenAiError::from(ApiError::new(ErrorKind::ServiceUnavailable, "full"));
        assert_eq!(
            (e.status.as_u16(), e.kind, e.code),
            (503, "server_error", Some("server_busy"))
        );
    }
}
