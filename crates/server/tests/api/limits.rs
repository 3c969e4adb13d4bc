//! Limits: body and event sizes, streams per IP, connections, slow and stalled clients, shutdown.

use super::*;

#[tokio::test]
async fn oversized_bodies_and_events_are_413() {
    let server = TestServer::start_with(|c| {
        c.max_body_bytes = 64 * 1024;
        c.max_event_bytes = 1024;
    })
    .await;
    let token = server.root_token();
    let url = server.url("/topics/big/events");

    let event =
        server.client.post(&url).bearer_auth(&token).json(&json!({"data": "x".repeat(2000)})).send().await.unwrap();
    let message = expect_error(event, StatusCode::PAYLOAD_TOO_LARGE, "event_too_large").await;
    assert!(message.contains("1024"), "{message}");
    let text = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("y".repeat(1025))
        .send()
        .await
        .unwrap();
    expect_error(text, StatusCode::PAYLOAD_TOO_LARGE, "event_too_large").await;
    let exact = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body("y".repeat(1024))
        .send()
        .await
        .unwrap();
    assert_eq!(exact.status(), StatusCode::CREATED, "exactly the limit is fine");

    let body = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .json(&json!({"data": "x".repeat(70 * 1024)}))
        .send()
        .await
        .unwrap();
    expect_error(body, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
    let batch = server
        .client
        .post(server.url("/publish"))
        .bearer_auth(&token)
        .json(&json!([{"topic": "big", "data": "x".repeat(2000)}]))
        .send()
        .await
        .unwrap();
    expect_error(batch, StatusCode::PAYLOAD_TOO_LARGE, "event_too_large").await;

    // 10 MiB, with a Content-Length, and streamed without one (chunked).
    let ten_mib = vec![b'z'; 10 << 20];
    let declared = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(ten_mib.clone())
        .send()
        .await;
    match declared {
        Ok(response) => {
            expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
        }
        Err(error) => panic!("a 10 MiB body with Content-Length got no 413 but a transport error: {error:?}"),
    }
    let chunks =
        futures::stream::iter((0..160).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'z'; 64 * 1024]))));
    let streamed = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    match streamed {
        Ok(response) => {
            expect_error(response, StatusCode::PAYLOAD_TOO_LARGE, "body_too_large").await;
        }
        Err(error) => panic!("a 10 MiB chunked body got no 413 but a transport error: {error:?}"),
    }
    server.assert_still_serving().await;
}

#[tokio::test]
async fn streams_per_ip_are_bounded_with_429() {
    let server = TestServer::start_with(|c| c.max_streams_per_ip = 2).await;
    let one = server.subscribe("/topics/s1/events").await;
    let _two = server.subscribe("/topics/s2/events").await;
    let third =
        server.client.get(server.url("/topics/s3/events")).bearer_auth(server.root_token()).send().await.unwrap();
    expect_error(third, StatusCode::TOO_MANY_REQUESTS, "too_many_requests").await;
    // Publishing is not a stream: unaffected.
    server.assert_still_serving().await;
    // Closing one frees its place.
    drop(one);
    within(WAIT, "the closed stream's place to be freed", async {
        while server.state.streams.open_for(LOCALHOST) != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    server.subscribe("/topics/s3/events").await;
}

#[tokio::test]
async fn too_many_topics_in_one_subscription_is_400() {
    let server = TestServer::start_with(|c| c.max_topics_per_subscription = 2).await;
    let response = server
        .client
        .get(server.url("/events?topic=a&topic=b&topic=c"))
        .bearer_auth(server.root_token())
        .send()
        .await
        .unwrap();
    let message = expect_error(response, StatusCode::BAD_REQUEST, "too_many_topics").await;
    assert!(message.contains('2'), "{message}");
    server.subscribe("/events?topic=a&topic=b.*").await;
    let none = server.client.get(server.url("/events")).bearer_auth(server.root_token()).send().await.unwrap();
    expect_error(none, StatusCode::BAD_REQUEST, "missing_topic").await;
}

#[tokio::test]
async fn a_keep_alive_connection_is_closed_after_the_idle_timeout_and_kept_while_used() {
    let server = TestServer::start_with(|c| c.idle_timeout = Duration::from_millis(400)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut used = TcpStream::connect(server.addr).await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    idle.write_all(request).await.unwrap();
    read_until(&mut idle, b"\"ok\"").await;
    let idle_from = Instant::now();
    // A request every 150 ms for 1.2 s: never 400 ms without one in flight.
    for _ in 0..8 {
        used.write_all(request).await.unwrap();
        read_until(&mut used, b"\"ok\"").await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    used.write_all(request).await.unwrap();
    read_until(&mut used, b"\"ok\"").await;
    // The other one was closed, and not before its 400 ms.
    let rest = read_to_close(&mut idle, Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{}", show(&rest));
    assert!(idle_from.elapsed() >= Duration::from_millis(350), "closed after {:?}", idle_from.elapsed());
}

#[tokio::test]
async fn connections_over_the_bound_get_a_503_json() {
    let server = TestServer::start_with(|c| c.max_connections = 2).await;
    let held_one = TcpStream::connect(server.addr).await.unwrap();
    let mut held_two = TcpStream::connect(server.addr).await.unwrap();
    // The second is served: proof that both were accepted before the third.
    held_two.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    read_until(&mut held_two, b"\"ok\"").await;

    let refused = raw_exchange(server.addr, b"").await;
    let text = show(&refused);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.to_ascii_lowercase().contains("content-type: application/json"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap()).expect("JSON body");
    assert_eq!(body["error"]["code"], "too_many_connections", "{body}");

    // A client that sends its request at once also gets the 503 (not a reset).
    let response = client().get(server.url("/healthz")).send().await;
    match response {
        Ok(response) => {
            expect_error(response, StatusCode::SERVICE_UNAVAILABLE, "too_many_connections").await;
        }
        Err(error) => panic!("over the connection bound, a request got a transport error, not a 503: {error:?}"),
    }

    // Closing one makes room again.
    drop(held_one);
    within(WAIT, "a connection once one is closed", async {
        loop {
            if let Ok(response) = client().get(server.url("/healthz")).send().await
                && response.status() == StatusCode::OK
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn graceful_shutdown_ends_open_streams_and_serve_returns() {
    let mut server = TestServer::start().await;
    let mut one = server.subscribe("/topics/bye/events").await;
    let mut many = server.subscribe("/events?topic=bye&topic=other.*").await;
    let id = server.publish_data("bye", "last words").await;
    assert_eq!(one.next().await.id, id);
    assert_eq!(many.next().await.id, id);
    let started = Instant::now();
    server.shutdown().await.expect("serve returns Ok");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "no need to wait out the grace period: {:?}",
        started.elapsed()
    );
    assert!(one.until_end(WAIT).await.is_empty());
    assert!(many.until_end(WAIT).await.is_empty());
    // Nothing listens any more.
    assert!(TcpStream::connect(server.addr).await.is_err(), "the listener is closed");
}

#[tokio::test]
async fn a_stalled_reader_does_not_slow_others_and_is_disconnected() {
    // 8 MB in all: more than the kernel's largest socket buffers (4 MiB by
    // default) can hide, so the stalled connection really stalls.
    const EVENTS: usize = 8000;
    const BATCH: usize = 500;
    let server = TestServer::start_with(|c| {
        c.stall_timeout = Duration::from_secs(1);
        c.heartbeat = Duration::from_millis(250);
    })
    .await;
    let token = server.root_token();

    // A subscriber with a small receive buffer that reads its opening and then nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr).await.unwrap();
    stalled
        .write_all(
            format!("GET /topics/flood/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    read_until(&mut stalled, b"herald stream open").await;
    let mut reader = server.subscribe("/topics/flood/events").await;
    assert_eq!(server.state.streams.open_for(LOCALHOST), 2);

    let payload = "p".repeat(1000);
    let started = Instant::now();
    let publisher = async {
        let mut ids = Vec::with_capacity(EVENTS);
        for batch in 0..EVENTS / BATCH {
            let items: Vec<Value> = (0..BATCH)
                .map(|i| json!({"topic": "flood", "data": format!("{}:{payload}", batch * BATCH + i)}))
                .collect();
            let response =
                server.client.post(server.url("/publish")).bearer_auth(&token).json(&items).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::CREATED);
            let receipts: Vec<Value> = response.json().await.unwrap();
            ids.extend(receipts.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        }
        ids
    };
    let consumer = async {
        let mut got = Vec::with_capacity(EVENTS);
        for i in 0..EVENTS {
            let event = reader.next().await;
            let (n, rest) = event.data.split_once(':').expect("n:payload");
            assert_eq!(n.parse::<usize>().unwrap(), i, "in order, none missing");
            assert_eq!(rest.len(), 1000);
            got.push(event.id);
        }
        got
    };
    let (ids, got) =
        within(Duration::from_secs(30), "the reader to get every event", async { tokio::join!(publisher, consumer) })
            .await;
    assert_eq!(got, ids);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "the reader kept up: {elapsed:?}");

    // The stalled stream is cut once its writes make no progress for the stall timeout.
    within(Duration::from_secs(10), "the stalled stream to be disconnected", async {
        while server.state.streams.open_for(LOCALHOST) != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let drained = read_to_close(&mut stalled, WAIT).await;
    assert!(drained.len() < EVENTS * 1000, "it got only part of the flood: {} bytes", drained.len());
    // The healthy reader is still live.
    let id = server.publish_data("flood", "after").await;
    assert_eq!(reader.next().await.id, id);
}
