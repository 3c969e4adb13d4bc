//! Plain HTTP that sends every request to HTTPS (`--listen http://ADDR`
//! beside `--tls-cert`): a permanent redirect (308, so a POST stays a POST)
//! to the same host and path on the HTTPS port.

use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse as _, Response},
};

use crate::error::{ApiError, ErrorCode};

/// The redirecting service, to HTTPS on `https_port`.
pub fn router(https_port: u16) -> Router {
    Router::new().fallback(move |request: Request| async move {
        redirect(request.uri(), request.headers().get(header::HOST), https_port)
    })
}

fn redirect(uri: &Uri, host: Option<&HeaderValue>, https_port: u16) -> Response {
    let Some(name) = host.and_then(|h| h.to_str().ok()).and_then(host_name) else {
        let why = "plain HTTP here only redirects to HTTPS, which needs the request's Host header";
        return ApiError::new(ErrorCode::InvalidRequest, why).into_response();
    };
    let authority = if https_port == 443 { name.to_owned() } else { format!("{name}:{https_port}") };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, format!("https://{authority}{path}"))]).into_response()
}

/// The host of a `Host` header, without its port: `[::1]:80` → `[::1]`.
fn host_name(host: &str) -> Option<&str> {
    let name = match host.rfind(':') {
        Some(colon) if !host[colon..].contains(']') => &host[..colon],
        _ => host,
    };
    (!name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic())).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(path: &str, host: Option<&str>, port: u16) -> (StatusCode, Option<String>) {
        let host = host.map(|h| HeaderValue::from_str(h).unwrap());
        let response = redirect(&path.parse().unwrap(), host.as_ref(), port);
        let location = response.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_owned());
        (response.status(), location)
    }

    #[test]
    fn the_same_host_and_path_on_the_https_port() {
        let moved = |l: &str| (StatusCode::PERMANENT_REDIRECT, Some(l.to_owned()));
        assert_eq!(
            location("/topics/a/events?x=1", Some("example.com"), 443),
            moved("https://example.com/topics/a/events?x=1")
        );
        assert_eq!(location("/", Some("example.com:80"), 8443), moved("https://example.com:8443/"));
        assert_eq!(location("/a", Some("[::1]:8080"), 443), moved("https://[::1]/a"));
        assert_eq!(location("/a", Some("[::1]"), 9443), moved("https://[::1]:9443/a"));
        assert_eq!(location("/a", None, 443).0, StatusCode::BAD_REQUEST);
        assert_eq!(location("/a", Some(":80"), 443).0, StatusCode::BAD_REQUEST);
    }
}
