//! The door's cross-origin rules. Mercure's clients send their cookie
//! across origins (`withCredentials`), so the door echoes an allowed origin
//! with credentials, even for `--cors-origins '*'`; and since a cookie goes
//! with every request a page makes, a publish authorised by the cookie
//! must come from an origin `--mercure-publish-origins` names.

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::error::{ApiError, ErrorCode};

/// CORS for the door when `--cors-origins` is set.
pub(super) fn layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let query = Method::from_bytes(b"QUERY").unwrap_or(Method::OPTIONS);
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::OPTIONS, query])
            .allow_headers([
                header::AUTHORIZATION,
                header::CACHE_CONTROL,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("mercure-last-event-id"),
                header::LINK,
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}

/// A publish authorised by the cookie comes from an allowed origin: its
/// `Origin`, or else its `Referer`'s scheme, host and port.
pub(super) fn check_publish_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), ApiError> {
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()).map(str::to_owned).or_else(|| {
        let referer = headers.get(header::REFERER)?.to_str().ok()?;
        let url = url::Url::parse(referer).ok()?;
        Some(url.origin().ascii_serialization())
    });
    let Some(origin) = origin else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "a publish with the cookie's token must say where it comes from (Origin or Referer)",
        ));
    };
    let origin = origin.trim_end_matches('/');
    if allowed.iter().any(|a| a == "*" || a == origin) {
        return Ok(());
    }
    Err(ApiError::new(
        ErrorCode::Forbidden,
        format!("origin `{origin}` may not publish with the cookie's token; add it to --mercure-publish-origins"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs.iter().map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_str(v).unwrap())).collect()
    }

    #[test]
    fn cookie_publishes_need_an_allowed_origin() {
        let allowed = vec!["https://app.example".to_owned()];
        assert!(check_publish_origin(&headers(&[("origin", "https://app.example")]), &allowed).is_ok());
        assert!(check_publish_origin(&headers(&[("referer", "https://app.example/page?x=1")]), &allowed).is_ok());
        assert!(check_publish_origin(&headers(&[("origin", "https://evil.example")]), &allowed).is_err());
        assert!(check_publish_origin(&headers(&[]), &allowed).is_err(), "neither header");
        assert!(check_publish_origin(&headers(&[("origin", "https://any.example")]), &["*".into()]).is_ok());
        assert!(check_publish_origin(&headers(&[("origin", "https://app.example")]), &[]).is_err());
    }
}
