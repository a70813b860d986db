//! Token auth (`--auth-token`, config key `auth_token`): when a token is set, the
//! management and inference APIs need `Authorization: Bearer TOKEN`, as TorchServe's
//! token authorization has it. Health checks (`/ping`, `/v2/health/*`) stay open so
//! load balancers can probe; the studio page (`/`, `/studio.js`, `/studio.css`) and the
//! metrics API are not behind this layer.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::AppState;
use super::error::{ApiError, ErrorKind};

/// Paths answered without a token (health probes). The studio page is not behind this
/// layer at all (the router adds it outside).
fn is_open(path: &str) -> bool {
    path == "/ping" || path.starts_with("/v2/health/")
}

/// Whether `header` is `Bearer TOKEN` for `token`, compared in constant time.
pub fn bearer_matches(header: Option<&HeaderValue>, token: &str) -> bool {
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && given.trim().as_bytes().ct_eq(token.as_bytes()).into()
}

/// Axum middleware: 401 in TorchServe's error shape unless the request carries the token.
pub(crate) async fn require_token(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = state.config.auth_token.as_deref() else {
        return next.run(req).await;
    };
    if is_open(req.uri().path()) || bearer_matches(req.headers().get(header::AUTHORIZATION), token)
    {
        return next.run(req).await;
    }
    let mut res = ApiError::new(
        ErrorKind::InvalidKey,
        "Token Authorization failed. Token either incorrect, expired, or not provided correctly",
    )
    .into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}
