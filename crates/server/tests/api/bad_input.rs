//! Bad input gets a clear error and loses nothing.

use super::*;

#[tokio::test]
async fn a_half_sent_request_head_is_closed_after_the_header_timeout() {
    let server = TestServer::start_with(|c| c.header_timeout = Duration::from_millis(500)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"POST /topics/slow/events HTTP/1.1\r\nHost: x\r\nContent-Ty").await.unwrap();
    let answer = read_to_close(&mut stream, Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(400), "not before the timeout: {elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "soon after the timeout: {elapsed:?}");
    let text = show(&answer);
    assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");

    // Trickling the head a byte at a time does not buy more time.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let head =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut closed = false;
    for byte in head {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        let read = tokio::io::AsyncReadExt::read(&mut stream, &mut buf);
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(50), read).await {
            closed = true;
            break;
        }
    }
    let elapsed = started.elapsed();
    assert!(closed, "a trickled head kept the connection open for {elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "closed soon after the header timeout: {elapsed:?}");
    server.assert_still_serving().await;
}

#[tokio::test]
async fn invalid_topic_names_are_400_invalid_topic() {
    let server = TestServer::start().await;
    let token = server.root_token();
    let long = "t".repeat(201);
    for topic in ["a%2Fb", "a%20b", "caf%C3%A9", "a%00b", long.as_str(), "%2A", "a*"] {
        let publish = server
            .client
            .post(server.url(&format!("/topics/{topic}/events")))
            .bearer_auth(&token)
            .json(&json!({"data": "x"}))
            .send()
            .await
            .unwrap();
        expect_error(publish, StatusCode::BAD_REQUEST, "invalid_topic").await;
        let subscribe =
            server.client.get(server.url(&format!("/topics/{topic}/events"))).bearer_auth(&token).send().await.unwrap();
        expect_error(subscribe, StatusCode::BAD_REQUEST, "invalid_topic").await;
        // In the query, `*` and `a*` are patterns, valid there.
        if !topic.ends_with('*') && !topic.ends_with("%2A") {
            let many = server
                .client
                .get(server.url(&format!("/events?topic={topic}")))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            expect_error(many, StatusCode::BAD_REQUEST, "invalid_topic").await;
        }
    }
    let ok_name = "A-z_0.9:~@".to_owned() + &"t".repeat(190);
    assert_eq!(ok_name.len(), 200);
    server.publish_data(&ok_name, "longest name").await;
    // An empty path segment is an empty topic name.
    let empty = server
        .client
        .post(server.url("/topics//events"))
        .bearer_auth(&token)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(empty, StatusCode::BAD_REQUEST, "invalid_topic").await;
    let empty = server.client.get(server.url("/topics//events")).bearer_auth(&token).send().await.unwrap();
    expect_error(empty, StatusCode::BAD_REQUEST, "invalid_topic").await;
    let empty_query = server.client.get(server.url("/events?topic=")).bearer_auth(&token).send().await.unwrap();
    expect_error(empty_query, StatusCode::BAD_REQUEST, "invalid_topic").await;
    server.assert_still_serving().await;
}

#[tokio::test]
async fn bad_event_types_and_bodies_are_clear_400s() {
    let server = TestServer::start().await;
    let token = server.root_token();
    let url = server.url("/topics/bad/events");
    let post_json = |body: Value| server.client.post(&url).bearer_auth(&token).json(&body).send();
    for (body, code) in [
        (json!({"data": "x", "event": "herald.gap"}), "reserved_event_type"),
        (json!({"data": "x", "event": "herald.anything"}), "reserved_event_type"),
        (json!({"data": "x", "event": "a\rb"}), "invalid_event_type"),
        (json!({"data": "x", "event": "a\nevent: injected"}), "invalid_event_type"),
        (json!({"data": "x", "event": "a\u{0}b"}), "invalid_event_type"),
        (json!({"data": "x", "event": ""}), "invalid_event_type"),
        (json!({"event": "only"}), "missing_data"),
        (json!({}), "missing_data"),
        (json!({"data": "x", "unknown": 1}), "invalid_json"),
        (json!({"data": "x", "retry": -5}), "invalid_json"),
        (json!(["data"]), "invalid_json"),
    ] {
        let response = post_json(body.clone()).await.unwrap();
        let message = expect_error(response, StatusCode::BAD_REQUEST, code).await;
        assert!(!message.contains('\r') && !message.contains('\0'), "{body}: {message:?}");
    }
    for raw in ["{\"data\": ", "not json", "", "{\"data\": \"x\",}"] {
        let response = server
            .client
            .post(&url)
            .bearer_auth(&token)
            .header(header::CONTENT_TYPE, "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        expect_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    }
    for content_type in
        [Some("text/html"), Some("application/x-www-form-urlencoded"), Some("multipart/form-data; boundary=x"), None]
    {
        let mut request = server.client.post(&url).bearer_auth(&token).body("data=x");
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        expect_error(request.send().await.unwrap(), StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    }
    let batch_text = server
        .client
        .post(server.url("/publish"))
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    expect_error(batch_text, StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type").await;
    let not_utf8 = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap();
    expect_error(not_utf8, StatusCode::BAD_REQUEST, "invalid_utf8").await;
    // An event type with a dot but not the reserved prefix is fine.
    let ok = post_json(json!({"data": "x", "event": "heraldish.ok"})).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    server.assert_still_serving().await;
}

#[tokio::test]
async fn publish_errors_say_what_to_send_and_which_flag_raises_a_limit() {
    let server = TestServer::start_with(|c| {
        c.max_body_bytes = 4096;
        c.max_event_bytes = 100;
        c.max_batch_events = 2;
    })
    .await;
    let token = server.root_token();
    let post = |path: &str, body: Value| server.client.post(server.url(path)).bearer_auth(&token).json(&body).send();

    let pattern = post("/topics/orders.*/events", json!({"data": 1})).await.unwrap();
    let message = expect_error(pattern, StatusCode::BAD_REQUEST, "invalid_topic").await;
    assert!(message.contains("publishing needs one exact topic name"), "{message}");
    let pattern = post("/publish", json!([{"topic": "orders.*", "data": 1}])).await.unwrap();
    let message = expect_error(pattern, StatusCode::BAD_REQUEST, "invalid_topic").await;
    assert!(message.starts_with("item 0: ") && message.contains("exact topic name"), "{message}");

    let string = post("/topics/shape/events", json!("hello")).await.unwrap();
    let message = expect_error(string, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert!(message.contains(r#"{"data": ..., "event"?"#) && !message.contains("PublishBody"), "{message}");
    // serde would read an array as the struct's fields in order: refused, pointing to batches.
    let array = post("/topics/shape/events", json!(["x", null, null])).await.unwrap();
    let message = expect_error(array, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert!(message.contains("POST /publish"), "{message}");
    let item = post("/publish", json!(["x"])).await.unwrap();
    let message = expect_error(item, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert!(message.contains(r#"{"topic": "name""#) && !message.contains("BatchItem"), "{message}");
    let object = post("/publish", json!({"topic": "shape", "data": 1})).await.unwrap();
    let message = expect_error(object, StatusCode::BAD_REQUEST, "invalid_json").await;
    assert!(message.contains("a JSON array of"), "{message}");
    assert!(server.state.hub.topic_stats("shape").is_none(), "nothing was published");

    let event = post("/topics/big/events", json!({"data": "x".repeat(101)})).await.unwrap();
    let message = expect_error(event, StatusCode::PAYLOAD_TOO_LARGE, "event_too_large").await;
    assert!(message.contains("--max-event-bytes"), "{message}");
    let body = post("/topics/big/events", json!({"data": "x".repeat(5000)})).await.unwrap();
    let message = expect_error(body, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    assert!(message.contains("--max-body-bytes"), "{message}");
    let items: Vec<Value> = (0..3).map(|i| json!({"topic": "big", "data": i})).collect();
    let batch = post("/publish", Value::Array(items)).await.unwrap();
    let message = expect_error(batch, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large").await;
    assert!(message.contains("--max-batch-events"), "{message}");
    server.assert_still_serving().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405_in_json() {
    let server = TestServer::start().await;
    let token = server.root_token();
    for path in ["/nope", "/topics/a/events/extra", "/topics/a/other", "/metrics-not"] {
        let response = server.client.get(server.url(path)).bearer_auth(&token).send().await.unwrap();
        expect_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    for (method, path) in [
        (reqwest::Method::DELETE, "/topics/a/events"),
        (reqwest::Method::PUT, "/topics/a/events"),
        (reqwest::Method::GET, "/publish"),
        (reqwest::Method::POST, "/events"),
        (reqwest::Method::POST, "/healthz"),
        (reqwest::Method::DELETE, "/topics/a"),
    ] {
        let response =
            server.client.request(method.clone(), server.url(path)).bearer_auth(&token).send().await.unwrap();
        expect_error(response, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    }
    server.assert_still_serving().await;
}

#[tokio::test]
async fn the_root_points_to_the_inspector_the_dashboard_and_the_docs() {
    let server = TestServer::start().await;
    let response = server.client.get(server.url("/")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let index: Value = response.json().await.unwrap();
    assert_eq!(index["name"], "herald");
    assert_eq!(index["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(index["links"]["inspector"], "/inspector");
    assert_eq!(index["links"]["admin"], "/admin");
    assert!(index["links"]["docs"].as_str().is_some_and(|d| d.starts_with("http")), "{index}");
    let page = server.client.get(server.url("/")).header(header::ACCEPT, "text/html,*/*").send().await.unwrap();
    assert!(page.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/html"));
    let page = page.text().await.unwrap();
    assert!(page.contains("href=\"/inspector\"") && page.contains("href=\"/admin\""), "{page}");

    // With an internal listener, the public root does not point to what it does not serve.
    let internal = TestServer::start_with(|c| c.internal_listen = Some("127.0.0.1:9".parse().unwrap())).await;
    let index: Value = internal.client.get(internal.url("/")).send().await.unwrap().json().await.unwrap();
    assert!(index["links"].get("admin").is_none() && index["links"].get("metrics").is_none(), "{index}");
    assert!(!index.to_string().contains(":9"), "no internal address: {index}");
}
