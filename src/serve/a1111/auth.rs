//! A1111's `--api-auth`: HTTP basic auth on every `/sdapi/v1` route when credentials are
//! configured (`api_auth` in [`ServeConfig`](crate::serve::ServeConfig)). A missing or
//! wrong one is a 401 with `WWW-Authenticate: Basic`, the detail FastAPI's `HTTPBasic`
//! and A1111's `auth` give.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::errors::A1111Error;
use crate::serve::AppState;
use crate::serve::auth::basic_matches;

pub async fn require_basic(
    State(state): State<Arc<AppState>>,
    req: Request,
    next: Next,
) -> Response {
    let creds = &state.config.api_auth;
    if creds.is_empty() {
        return next.run(req).await;
    }
    let given = req.headers().get(header::AUTHORIZATION);
    if basic_matches(given, creds) {
        return next.run(req).await;
    }
    let detail = if given.is_none() {
        "Not authenticated"
    } else {
        "Incorrect username or password"
    };
    let mut res = A1111Error::http(StatusCode::UNAUTHORIZED, detail).into_response();
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    res
}
