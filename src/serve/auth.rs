//! Token auth (`--auth-token`, config key `auth_token`): when a token is set, the
//! management and inference APIs need `Authorization: Bearer TOKEN`, as TorchServe's
//! token authorization has it. Health checks (`/ping`, `/v2/health/*`) stay open so
//! load balancers can probe; the studio page (`/`, `/studio.js`, `/studio.css`) and the
//! metrics API are not behind this layer.
//!
//! AUTOMATIC1111's `--api-auth user:pass[,user2:pass2]` ([`parse_api_auth`]) guards the
//! `/sdapi/v1` routes with HTTP basic auth instead (A1111's clients, e.g. `webuiapi`, send
//! basic credentials); when it is set, those routes skip the bearer check.

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

/// Parses A1111's `--api-auth` value: `user:pass` pairs separated by commas (a password
/// may hold `:`).
pub fn parse_api_auth(spec: &str) -> Result<Vec<(String, String)>, String> {
    spec.split(',')
        .map(|pair| {
            let (user, pass) = pair.trim().split_once(':').ok_or_else(|| {
                format!("api_auth {pair:?}: expected user:password (pairs separated by commas)")
            })?;
            if user.is_empty() || pass.is_empty() {
                return Err(format!(
                    "api_auth {pair:?}: neither the user nor the password may be empty"
                ));
            }
            Ok((user.to_string(), pass.to_string()))
        })
        .collect()
}

/// Whether `header` is `Basic base64(user:password)` for one of `credentials`, the
/// password compared in constant time.
pub fn basic_matches(header: Option<&HeaderValue>, credentials: &[(String, String)]) -> bool {
    use base64::Engine;
    let Some(value) = header.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, given)) = value.trim().split_once(' ') else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(given.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, pass)) = text.split_once(':') else {
        return false;
    };
    credentials
        .iter()
        .filter(|(u, _)| u == user)
        .any(|(_, p)| bool::from(p.as_bytes().ct_eq(pass.as_bytes())))
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
    let path = req.uri().path();
    // With `--api-auth`, A1111's routes check basic auth themselves (`a1111::auth`).
    let own_auth = !state.config.api_auth.is_empty() && path.starts_with("/sdapi/");
    if own_auth || is_open(path) || bearer_matches(req.headers().get(header::AUTHORIZATION), token)
    {
        return next.run(req).await;
    }
    // OpenAI's clients read OpenAI's error shape (their API key is this token).
    let mut res = if path.starts_with("/v1/images/") {
        let body = serde_json::json!({ "error": {
            "message": "Incorrect API key provided: wgsd expects the server's --auth-token.",
            "type": "invalid_request_error",
            "param": null,
            "code": "invalid_api_key",
        }});
        (
            axum::http::StatusCode::UNAUTHORIZED,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    } else {
        ApiError::new(
            ErrorKind::InvalidKey,
            "Token Authorization failed. Token either incorrect, expired, or not provided correctly",
        )
        .into_response_for(path)
    };
    res.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    #[test]
    fn api_auth_pairs_and_basic_headers() {
        let creds = parse_api_auth("alice:secret, bob:pa:ss").expect("valid");
        assert_eq!(
            creds,
            vec![
                ("alice".to_string(), "secret".to_string()),
                ("bob".to_string(), "pa:ss".to_string())
            ]
        );
        for bad in ["alice", "alice:", ":x", "a:b,,c:d"] {
            assert!(parse_api_auth(bad).is_err(), "{bad}");
        }
        let header = |s: &str| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(s);
            HeaderValue::from_str(&format!("Basic {b64}")).expect("header")
        };
        assert!(basic_matches(Some(&header("bob:pa:ss")), &creds));
        assert!(!basic_matches(Some(&header("bob:secret")), &creds));
        assert!(!basic_matches(Some(&header("carol:secret")), &creds));
        assert!(!basic_matches(None, &creds));
        let bearer = HeaderValue::from_static("Bearer secret");
        assert!(!basic_matches(Some(&bearer), &creds));
    }
}
