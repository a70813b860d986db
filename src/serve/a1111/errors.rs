//! AUTOMATIC1111's error replies, as its API (FastAPI) sends them:
//!
//! - request validation: 422 `{"detail": [{"loc": ["body", "steps"], "msg": ..., "type":
//!   ...}]}`, FastAPI's `RequestValidationError` shape (pydantic v1 types, A1111 1.x);
//! - anything else: `{"error": "HTTPException", "detail": ..., "body": "", "errors":
//!   "404: Model not found"}`, the shape of `api_middleware`'s `handle_exception` in
//!   A1111's `modules/api/api.py`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::serve::error::ApiError;

/// One invalid field of a request body.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// `["body", field]` (or `["body"]` for the body itself).
    pub loc: Vec<Value>,
    pub msg: String,
    /// pydantic's error type, e.g. `type_error.integer`, `value_error`.
    pub kind: &'static str,
}

impl FieldError {
    pub fn body_field(field: &str, msg: impl Into<String>, kind: &'static str) -> FieldError {
        FieldError {
            loc: vec![json!("body"), json!(field)],
            msg: msg.into(),
            kind,
        }
    }
}

/// An error reply of the `/sdapi/v1` routes.
#[derive(Debug)]
pub enum A1111Error {
    /// 422 in FastAPI's validation shape.
    Validation(Vec<FieldError>),
    /// A1111's exception shape with this status.
    Http {
        status: StatusCode,
        /// The exception's class name (`HTTPException`, `RuntimeError`).
        error: &'static str,
        detail: String,
    },
}

impl A1111Error {
    /// 422 for one body field wgsd cannot honour or that is malformed.
    pub fn field(field: &str, msg: impl Into<String>, kind: &'static str) -> A1111Error {
        A1111Error::Validation(vec![FieldError::body_field(field, msg, kind)])
    }

    /// An `HTTPException` with `status` and `detail`.
    pub fn http(status: StatusCode, detail: impl Into<String>) -> A1111Error {
        A1111Error::Http {
            status,
            error: "HTTPException",
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            A1111Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            A1111Error::Http { status, .. } => *status,
        }
    }

    /// The reply body.
    pub fn body(&self) -> Value {
        match self {
            A1111Error::Validation(errors) => {
                let detail: Vec<Value> = errors
                    .iter()
                    .map(|e| json!({ "loc": e.loc, "msg": e.msg, "type": e.kind }))
                    .collect();
                json!({ "detail": detail })
            }
            A1111Error::Http {
                status,
                error,
                detail,
            } => json!({
                "error": error,
                "detail": detail,
                "body": "",
                // str() of a starlette HTTPException.
                "errors": format!("{}: {detail}", status.as_u16()),
            }),
        }
    }
}

/// A shared-layer error (queue full, model failure, ...) in A1111's shape, same status.
impl From<ApiError> for A1111Error {
    fn from(e: ApiError) -> Self {
        let status = e.status();
        A1111Error::Http {
            status,
            error: if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
                "RuntimeError"
            } else {
                "HTTPException"
            },
            detail: e.message,
        }
    }
}

impl IntoResponse for A1111Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut res = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let e = A1111Error::field(
            "steps",
            "value is not a valid integer",
            "type_error.integer",
        );
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            e.body(),
            json!({"detail": [{"loc": ["body", "steps"], "msg": "value is not a valid integer", "type": "type_error.integer"}]})
        );
        let e = A1111Error::http(StatusCode::NOT_FOUND, "Model not found");
        assert_eq!(
            e.body(),
            json!({"error": "HTTPException", "detail": "Model not found", "body": "", "errors": "404: Model not found"})
        );
        let e = A1111Error::from(ApiError::internal("boom"));
        assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.body()["error"], "RuntimeError");
    }
}
