//! The dashboard's static files, embedded from `web/` at build time.

use axum::{
    extract::Path,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

const CSS: &str = include_str!("../../../web/admin.css");
const JS: &str = include_str!("../../../web/admin.js");
const SSE: &str = include_str!("../../../web/sse.js");
const INSPECTOR: &str = include_str!("../../../web/inspector.html");

/// `GET /admin/assets/{file}` and `GET /inspector/assets/{file}`.
pub(crate) async fn serve(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "admin.css" => (CSS, "text/css; charset=utf-8"),
        "admin.js" => (JS, "text/javascript; charset=utf-8"),
        "sse.js" => (SSE, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
    response
}

/// `GET /inspector`.
pub(crate) async fn inspector() -> Response {
    let mut response = INSPECTOR.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    response
}
