//! Event streams: headers, heartbeats, expiry, time limits, CORS.

use super::*;

#[tokio::test]
async fn idle_streams_get_heartbeat_comments() {
    let server = TestServer::start_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    let response =
        server.client.get(server.url("/topics/hb/events")).bearer_auth(server.root_token()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut bytes = response.bytes_stream();
    let mut raw = Vec::new();
    let started = Instant::now();
    within(Duration::from_secs(5), "three heartbeats", async {
        while raw.split(|b| *b == b'\n').filter(|line| *line == b":").count() < 3 {
            raw.extend_from_slice(&bytes.next().await.expect("stream open").expect("stream ok"));
        }
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "heartbeats are paced, not a flood: {:?}",
        started.elapsed()
    );
    let text = show(&raw);
    assert!(text.starts_with("retry: "), "{text:?}");
    assert!(!text.contains("data:"), "only comments on an idle stream: {text:?}");
}

#[tokio::test]
async fn streams_end_at_stream_max_duration_and_resume_cleanly() {
    let server = TestServer::start_with(|c| c.stream_max_duration = Some(Duration::from_millis(700))).await;
    let first = server.publish_data("md", "one").await;
    let started = Instant::now();
    let mut sse = Sse::open(
        server
            .client
            .get(server.url("/topics/md/events"))
            .bearer_auth(server.root_token())
            .header("Last-Event-ID", &first),
    )
    .await;
    let second = server.publish_data("md", "two").await;
    assert_eq!(sse.next().await.id, second);
    let rest = sse.until_end(Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{rest:?}");
    assert!(started.elapsed() >= Duration::from_millis(600), "{:?}", started.elapsed());
}

/// A CORS preflight for a publish from `origin`.
async fn preflight(server: &TestServer, origin: &str) -> Response {
    server
        .client
        .request(reqwest::Method::OPTIONS, server.url("/topics/c/events"))
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
        .header(header::ACCESS_CONTROL_REQUEST_HEADERS, "authorization, content-type, idempotency-key")
        .send()
        .await
        .unwrap()
}

/// A stream opened from `origin`, with a token in the header.
async fn cross_origin_stream(server: &TestServer, origin: &str) -> Sse {
    Sse::open(
        server
            .client
            .get(server.url("/topics/c/events"))
            .bearer_auth(server.root_token())
            .header(header::ORIGIN, origin),
    )
    .await
}

#[tokio::test]
async fn cors_preflight_echoes_allowed_origins_only() {
    let server = TestServer::start_with(|c| c.cors_origins = vec!["https://app.example.com".into()]).await;
    let allowed = preflight(&server, "https://app.example.com").await;
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example.com");
    assert!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "no cookies without --cors-credentials: {h:?}");
    let methods = h.get(header::ACCESS_CONTROL_ALLOW_METHODS).unwrap().to_str().unwrap().to_ascii_uppercase();
    assert!(methods.contains("POST") && methods.contains("GET"), "{methods}");
    let allowed_headers = h.get(header::ACCESS_CONTROL_ALLOW_HEADERS).unwrap().to_str().unwrap().to_ascii_lowercase();
    for name in ["authorization", "content-type", "idempotency-key", "last-event-id"] {
        assert!(allowed_headers.contains(name), "{name} in {allowed_headers}");
    }

    let denied = preflight(&server, "https://evil.example.com").await;
    assert!(denied.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{:?}", denied.headers());

    // A real cross-origin stream request gets the header too.
    let sse = cross_origin_stream(&server, "https://app.example.com").await;
    assert_eq!(sse.headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example.com");
    assert!(sse.headers.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "{:?}", sse.headers);
}

#[tokio::test]
async fn cors_any_origin_never_carries_cookies_unless_asked() {
    let server = TestServer::start_with(|c| c.cors_origins = vec!["*".into()]).await;
    for response_headers in [
        preflight(&server, "https://anyone.example.com").await.headers().clone(),
        cross_origin_stream(&server, "https://anyone.example.com").await.headers,
    ] {
        assert_eq!(response_headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "*", "{response_headers:?}");
        assert!(response_headers.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none(), "{response_headers:?}");
    }

    // `--cors-credentials`: the operator asked for cookies across origins.
    let server = TestServer::start_with(|c| {
        c.cors_origins = vec!["*".into()];
        c.cors_credentials = true;
    })
    .await;
    for response_headers in [
        preflight(&server, "https://anyone.example.com").await.headers().clone(),
        cross_origin_stream(&server, "https://anyone.example.com").await.headers,
    ] {
        let h = &response_headers;
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://anyone.example.com", "{h:?}");
        assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(), "true", "{h:?}");
    }

    // An explicit list follows the setting too.
    let server = TestServer::start_with(|c| {
        c.cors_origins = vec!["https://app.example.com".into()];
        c.cors_credentials = true;
    })
    .await;
    let h = preflight(&server, "https://app.example.com").await.headers().clone();
    assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).unwrap(), "https://app.example.com", "{h:?}");
    assert_eq!(h.get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS).unwrap(), "true", "{h:?}");
}
