//! The studio's web page and its static assets, embedded in the binary (no CDN: it
//! works offline): `GET /`, `/studio.js`, `/studio_image.js`, `/studio.css`.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use super::AppState;

const INDEX_HTML: &str = include_str!("../../web/index.html");
const STUDIO_JS: &str = include_str!("../../web/studio.js");
const STUDIO_CSS: &str = include_str!("../../web/studio.css");
const STUDIO_IMAGE_JS: &str = include_str!("../../web/studio_image.js");

/// (path, content type, body) of every asset.
const ASSETS: [(&str, &str, &str); 4] = [
    ("/", "text/html; charset=utf-8", INDEX_HTML),
    ("/studio.js", "text/javascript; charset=utf-8", STUDIO_JS),
    ("/studio.css", "text/css; charset=utf-8", STUDIO_CSS),
    (
        "/studio_image.js",
        "text/javascript; charset=utf-8",
        STUDIO_IMAGE_JS,
    ),
];

pub(crate) fn routes() -> Router<Arc<AppState>> {
    ASSETS
        .iter()
        .fold(Router::new(), |router, &(path, content_type, body)| {
            router.route(
                path,
                get(move || async move {
                    (
                        [
                            (header::CONTENT_TYPE, content_type),
                            (header::CACHE_CONTROL, "no-cache"),
                        ],
                        body,
                    )
                        .into_response()
                }),
            )
        })
}
