//! wgsd's errors as gRPC statuses, with the same messages the REST routes give, and the
//! status for a request over `max_request_size`.

use axum::http::HeaderValue;
use axum::response::Response;
use tonic::{Code, Status};

use crate::serve::error::{ApiError, ErrorKind};

/// The gRPC code for each error kind (gRPC's own mapping of HTTP statuses where one fits:
/// `doc/http-grpc-status-mapping.md` in grpc/grpc).
pub(crate) fn code(kind: ErrorKind) -> Code {
    use ErrorKind::*;
    match kind {
        BadRequest | UnsupportedMediaType => Code::InvalidArgument,
        InvalidKey => Code::Unauthenticated,
        Forbidden => Code::PermissionDenied,
        ResourceNotFound | ModelNotFound | ModelVersionNotFound => Code::NotFound,
        MethodNotAllowed | NotImplemented => Code::Unimplemented,
        Conflict | FileAlreadyExists => Code::AlreadyExists,
        RequestEntityTooLarge | ResponseTooLarge | OutOfMemory => Code::ResourceExhausted,
        ServiceUnavailable => Code::Unavailable,
        RequestTimeout | BodyTimeout => Code::DeadlineExceeded,
        DownloadModel | Internal => Code::Internal,
    }
}

pub(crate) fn status(e: ApiError) -> Status {
    Status::new(code(e.kind), e.message)
}

/// tonic answers a message over its decoding limit with OUT_OF_RANGE; gRPC's own
/// servers (and clients such as tritonclient) use RESOURCE_EXHAUSTED for a message
/// larger than the receiver accepts, so the code is rewritten. The status travels in
/// the headers of such a trailers-only reply.
pub(crate) async fn too_large_as_exhausted(mut res: Response) -> Response {
    let out_of_range = HeaderValue::from(Code::OutOfRange as i32);
    let decoding_limit = res
        .headers()
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| {
            m.contains("message%20length%20too%20large") || m.contains("message length too large")
        });
    if res.headers().get("grpc-status") == Some(&out_of_range) && decoding_limit {
        res.headers_mut().insert(
            "grpc-status",
            HeaderValue::from(Code::ResourceExhausted as i32),
        );
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_the_codes_clients_expect() {
        let cases = [
            (ErrorKind::BadRequest, Code::InvalidArgument),
            (ErrorKind::ModelNotFound, Code::NotFound),
            (ErrorKind::ModelVersionNotFound, Code::NotFound),
            (ErrorKind::ServiceUnavailable, Code::Unavailable),
            (ErrorKind::ResponseTooLarge, Code::ResourceExhausted),
            (ErrorKind::RequestEntityTooLarge, Code::ResourceExhausted),
            (ErrorKind::OutOfMemory, Code::ResourceExhausted),
            (ErrorKind::InvalidKey, Code::Unauthenticated),
            (ErrorKind::RequestTimeout, Code::DeadlineExceeded),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, want) in cases {
            assert_eq!(code(kind), want, "{kind:?}");
        }
        let s = status(ApiError::model_not_found("sd"));
        assert_eq!(
            (s.code(), s.message()),
            (Code::NotFound, "Model not found: sd")
        );
    }
}
