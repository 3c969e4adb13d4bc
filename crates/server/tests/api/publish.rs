//! Publishing one event, JSON or text, and what subscribers receive.

use super::*;

#[tokio::test]
async fn publish_json_and_text_reach_a_subscriber_as_sent() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/topics/news/events").await;
    let token = server.root_token();
    let url = server.url("/topics/news/events");

    let response = server.client.post(&url).bearer_auth(&token).json(&json!({"data": "hello"})).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let receipt: Value = response.json().await.unwrap();
    let receipt = receipt.as_object().expect("receipt is an object");
    assert_eq!(receipt.len(), 2, "{receipt:?}");
    assert_eq!(receipt["topic"], "news");
    let first_id = receipt["id"].as_str().unwrap().to_owned();

    let value = json!({"order": 7, "items": ["a", "b"], "paid": true, "note": null});
    let value_id = server.publish("news", json!({"data": value})).await;
    let typed_id = server.publish("news", json!({"data": "typed", "event": "order.created"})).await;
    let retry_id = server.publish("news", json!({"data": "with retry", "retry": 5000})).await;
    let response = server
        .client
        .post(&url)
        .bearer_auth(&token)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body("line one\nline two\r\nline three")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let text_id = response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned();

    let event = sse.next().await;
    assert_eq!((event.id.as_str(), event.event.as_str(), event.data.as_str()), (first_id.as_str(), "message", "hello"));
    let event = sse.next().await;
    assert_eq!(event.id, value_id);
    assert_eq!(serde_json::from_str::<Value>(&event.data).unwrap(), value, "JSON data arrives as its JSON text");
    let event = sse.next().await;
    assert_eq!(
        (event.id.as_str(), event.event.as_str(), event.data.as_str()),
        (typed_id.as_str(), "order.created", "typed")
    );
    let event = sse.next().await;
    assert_eq!(event.id, retry_id);
    assert_eq!(event.retry, Some(Duration::from_millis(5000)));
    assert_eq!(event.data, "with retry");
    let event = sse.next().await;
    assert_eq!(event.id, text_id);
    assert_eq!(event.data, "line one\nline two\nline three", "each line of text data is its own data: line");

    let ids = [&first_id, &value_id, &typed_id, &retry_id, &text_id];
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
}

#[tokio::test]
async fn streams_have_sse_headers_and_open_with_retry_and_a_comment() {
    let server = TestServer::start_with(|c| c.retry = Duration::from_millis(1500)).await;
    let sse = server.subscribe("/topics/t/events").await;
    let content_type = sse.headers.get(header::CONTENT_TYPE).unwrap().to_str().unwrap();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    assert_eq!(sse.headers.get(header::CACHE_CONTROL).unwrap(), "no-cache");
    assert_eq!(sse.headers.get("x-accel-buffering").unwrap(), "no");
    let opening = show(&sse.opening);
    assert!(opening.starts_with("retry: 1500\n"), "{opening:?}");
    assert!(opening.contains(": herald stream open\n"), "{opening:?}");
}

#[tokio::test]
async fn a_stream_reads_the_same_whether_it_opens_a_connection_or_follows_another_request() {
    // A stream that is its connection's first request is served directly on
    // the socket; one after another request (here pipelined) is hyper's.
    let server = TestServer::start_with(|c| c.heartbeat = HOUR).await;
    let token = server.root_token();
    let get = format!("GET /topics/same/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
    let mut direct = TcpStream::connect(server.addr).await.unwrap();
    direct.write_all(get.as_bytes()).await.unwrap();
    let mut after_another = TcpStream::connect(server.addr).await.unwrap();
    after_another.write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n{get}").as_bytes()).await.unwrap();
    let mut heads = Vec::new();
    for stream in [&mut direct, &mut after_another] {
        let opened = show(&read_until(stream, b"herald stream open").await);
        let head = opened.rsplit_once("HTTP/1.1 200 OK\r\n").expect("a 200 for the stream").1;
        let head = head.split_once("\r\n\r\n").expect("a whole head").0.to_ascii_lowercase();
        heads.push(head);
    }
    for head in &heads {
        for line in
            ["content-type: text/event-stream", "cache-control: no-cache", "transfer-encoding: chunked", "date: "]
        {
            assert!(head.contains(line), "{line:?} in {head:?}");
        }
    }
    let id = server.publish_data("same", "hello").await;
    let frame = format!("id: {id}\ndata: hello\n\n");
    read_until(&mut direct, frame.as_bytes()).await;
    read_until(&mut after_another, frame.as_bytes()).await;

    // A client that hangs up is noticed at once, not at the next heartbeat.
    assert_eq!(server.state.streams.open_for(LOCALHOST), 2);
    drop(direct);
    within(Duration::from_secs(5), "the closed stream to be released", async {
        while server.state.streams.open_for(LOCALHOST) != 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // An error answer to a first request is whole, and closes the connection.
    let answer = show(&raw_exchange(server.addr, b"GET /topics/same/events HTTP/1.1\r\nHost: x\r\n\r\n").await);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{answer}");
    assert!(head.contains(&format!("content-length: {}", body.len())), "{answer}");
    assert!(head.contains("connection: close"), "{answer}");
    let error: Value = serde_json::from_str(body).expect("a JSON error");
    assert_eq!(error["error"]["code"], "missing_token", "{error}");
}

#[tokio::test]
async fn one_stream_of_several_topics_delivers_in_id_order() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/events?topic=a&topic=b").await;
    let mut published = Vec::new();
    for (i, topic) in ["a", "b", "b", "a", "c", "b", "a"].into_iter().enumerate() {
        let id = server.publish_data(topic, &format!("{topic}{i}")).await;
        if topic != "c" {
            published.push((id, format!("{topic}{i}")));
        }
    }
    let mut got = Vec::new();
    for _ in 0..published.len() {
        let event = sse.next().await;
        got.push((event.id, event.data));
    }
    assert_eq!(got, published, "every event of a and b, none of c, in publish order");
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "ids increase along the stream");
}

#[tokio::test]
async fn pattern_subscription_includes_topics_created_after_it() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/events?topic=orders.*").await;
    server.publish_data("other", "no").await;
    let first = server.publish_data("orders.eu", "eu").await;
    server.publish_data("ordersx", "no").await;
    let second = server.publish_data("orders.us.west", "us").await;
    let third = server.publish_data("orders.eu", "eu again").await;
    let got: Vec<(String, String)> = {
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = sse.next().await;
            got.push((e.id, e.data));
        }
        got
    };
    assert_eq!(
        got,
        vec![(first, "eu".into()), (second, "us".into()), (third, "eu again".into())],
        "only orders.* topics, including ones that did not exist when the stream opened"
    );
}
