//! The error reply of every API in TorchServe's shape:
//! `{"code": 404, "type": "ModelNotFoundException", "message": "..."}`, except on the
//! KServe v1 and Open Inference Protocol paths, whose specs' error object is
//! `{"error": "..."}` ([`speaks_kserve`], [`ApiError::into_kserve_response`]).

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::Error;

/// What went wrong: each kind has one HTTP status and TorchServe's exception name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    /// A registration URL could not be fetched.
    DownloadModel,
    InvalidKey,
    Forbidden,
    ResourceNotFound,
    ModelNotFound,
    ModelVersionNotFound,
    MethodNotAllowed,
    /// An operation TorchServe has that wgsd does not (501).
    NotImplemented,
    Conflict,
    FileAlreadyExists,
    RequestEntityTooLarge,
    /// A `Content-Encoding` wgsd does not decode (415).
    UnsupportedMediaType,
    ServiceUnavailable,
    RequestTimeout,
    /// The request body did not arrive in time (`body_read_timeout`; 408).
    BodyTimeout,
    OutOfMemory,
    ResponseTooLarge,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        use ErrorKind::*;
        match self {
            BadRequest | DownloadModel => StatusCode::BAD_REQUEST,
            InvalidKey => StatusCode::UNAUTHORIZED,
            Forbidden => StatusCode::FORBIDDEN,
            ResourceNotFound | ModelNotFound | ModelVersionNotFound => StatusCode::NOT_FOUND,
            MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            NotImplemented => StatusCode::NOT_IMPLEMENTED,
            Conflict | FileAlreadyExists => StatusCode::CONFLICT,
            RequestEntityTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            OutOfMemory => StatusCode::INSUFFICIENT_STORAGE,
            ResponseTooLarge | Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// TorchServe's exception name (the reply's `type`).
    pub fn name(self) -> &'static str {
        use ErrorKind::*;
        match self {
            BadRequest => "BadRequestException",
            DownloadModel => "DownloadModelException",
            InvalidKey => "InvalidKeyException",
            Forbidden => "ForbiddenException",
            ResourceNotFound => "ResourceNotFoundException",
            ModelNotFound => "ModelNotFoundException",
            ModelVersionNotFound => "ModelVersionNotFoundException",
            MethodNotAllowed | NotImplemented => "MethodNotAllowedException",
            Conflict => "ConflictStatusException",
            FileAlreadyExists => "FileAlreadyExistsException",
            RequestEntityTooLarge => "RequestEntityTooLargeException",
            UnsupportedMediaType => "UnsupportedMediaTypeException",
            ServiceUnavailable => "ServiceUnavailableException",
            RequestTimeout | BodyTimeout => "RequestTimeoutException",
            OutOfMemory => "OutOfMemoryException",
            ResponseTooLarge => "ResponseTooLargeException",
            Internal => "InternalServerException",
        }
    }
}

/// An error reply in TorchServe's shape.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError::new(ErrorKind::Internal, message)
    }

    /// TorchServe's 404 for a path no route answers.
    pub fn resource_not_found() -> Self {
        ApiError::new(
            ErrorKind::ResourceNotFound,
            "Requested resource is not found, please refer to API document.",
        )
    }

    pub fn model_not_found(model: &str) -> Self {
        ApiError::new(
            ErrorKind::ModelNotFound,
            format!("Model not found: {model}"),
        )
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

/// Whether `path` is a KServe v1 (`/v1/models...`) or OIP (`/v2...`) route, whose
/// errors (401, 404 and 405 included) are `{"error": "..."}`.
pub fn speaks_kserve(path: &str) -> bool {
    path == "/v2"
        || path.starts_with("/v2/")
        || path == "/v1/models"
        || path.starts_with("/v1/models/")
}

impl ApiError {
    /// The error in the KServe / OIP shape `{"error": "..."}`, with the same status (and
    /// `Retry-After` on 503) as TorchServe's shape.
    pub fn into_kserve_response(self) -> Response {
        let status = self.status();
        let body = serde_json::json!({ "error": self.message });
        let mut res = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    }

    /// The error in the shape the API at `path` uses.
    pub fn into_response_for(self, path: &str) -> Response {
        if speaks_kserve(path) {
            self.into_kserve_response()
        } else {
            self.into_response()
        }
    }
}

/// A pipeline error as the client sees it: its input (400), GPU memory (507), else 500.
impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidInput(m) => ApiError::bad_request(m),
            Error::Lora(e) => ApiError::bad_request(e.to_string()),
            Error::Hires(e) => ApiError::bad_request(e.to_string()),
            Error::OutOfMemory(m) => {
                ApiError::new(ErrorKind::OutOfMemory, format!("out of GPU memory: {m}"))
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "code": self.status().as_u16(),
            "type": self.kind.name(),
            "message": self.message,
        });
        let mut res = (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response();
        // A full queue or a shutdown is temporary: tell clients when to try again.
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            res.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_errors_map_to_statuses() {
        let e = ApiError::from(Error::InvalidInput("bad size".into()));
        assert_eq!(
            (e.status(), e.kind.name()),
            (StatusCode::BAD_REQUEST, "BadRequestException")
        );
        let e = ApiError::from(Error::OutOfMemory("1 GiB".into()));
        assert_eq!(e.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(e.message.contains("1 GiB"));
        let e = ApiError::from(Error::Gpu("lost".into()));
        assert_eq!(e.kind, ErrorKind::Internal);
    }

    #[test]
    fn kserve_paths_get_the_error_object() {
        for path in [
            "/v2",
            "/v2/models/sd/infer",
            "/v1/models",
            "/v1/models/sd:predict",
        ] {
            assert!(speaks_kserve(path), "{path}");
        }
        for path in [
            "/v1/images/generations",
            "/predictions/sd",
            "/v2x",
            "/v1/modelsx",
        ] {
            assert!(!speaks_kserve(path), "{path}");
        }
        let res = ApiError::new(ErrorKind::ServiceUnavailable, "busy").into_response_for("/v2");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(res.headers().contains_key(header::RETRY_AFTER));
    }
}
