//! Integration tests of herald-server's HTTP API: the real server on a real
//! socket (in this process, on 127.0.0.1 and a port of its own), real HTTP
//! clients (reqwest, raw TCP), SSE parsed by the independent
//! `eventsource-stream` crate; the `herald` binary as a subprocess; and
//! npm's `eventsource` (the browser's EventSource) under node.
//!
//! Test keys under `tests/keys/` were made once with openssl:
//! `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048`,
//! `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`,
//! `openssl genpkey -algorithm ED25519`, each public key with
//! `openssl pkey -pubout`.

mod common;

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use common::*;
use futures::StreamExt as _;
use herald_server::config::JwtKey;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

const HOUR: Duration = Duration::from_secs(3600);
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

// ---------------------------------------------------------------- publish

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

// ----------------------------------------------------------------- resume

#[tokio::test]
async fn resume_by_header_or_query_and_the_header_wins() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(server.publish_data("r", &format!("e{i}")).await);
    }
    let token = server.root_token();
    let base = server.url("/topics/r/events");

    // Header: everything after e1.
    let mut sse =
        Sse::open(server.client.get(&base).bearer_auth(&token).header("Last-Event-ID", ids[0].as_str())).await;
    assert_eq!(sse.next_data(3).await, ["e2", "e3", "e4"]);
    // Query: everything after e2.
    let mut by_query =
        Sse::open(server.client.get(format!("{base}?last_event_id={}", ids[1])).bearer_auth(&token)).await;
    let event = by_query.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (ids[2].as_str(), "e3"));
    assert_eq!(by_query.next().await.data, "e4");
    // Both: the header (e1) wins over the query (e3).
    let mut both = Sse::open(
        server
            .client
            .get(format!("{base}?last_event_id={}", ids[2]))
            .bearer_auth(&token)
            .header("Last-Event-ID", ids[0].as_str()),
    )
    .await;
    assert_eq!(both.next_data(3).await, ["e2", "e3", "e4"]);

    // Then live, with nothing repeated.
    server.publish_data("r", "e5").await;
    assert_eq!(sse.next().await.data, "e5");
    assert_eq!(by_query.next().await.data, "e5");
    assert_eq!(both.next().await.data, "e5");
}

#[tokio::test]
async fn resuming_before_retained_history_starts_with_a_gap_notice() {
    let server = TestServer::start_with(|c| {
        c.retention.max_events_per_topic = 3;
        c.hub.ring.max_events = 2;
    })
    .await;
    let mut ids = Vec::new();
    for i in 1..=6 {
        ids.push(server.publish_data("g", &format!("e{i}")).await);
    }
    let mut sse = Sse::open(
        server
            .client
            .get(server.url("/topics/g/events"))
            .bearer_auth(server.root_token())
            .header("Last-Event-ID", &ids[0]),
    )
    .await;
    let gap = sse.next().await;
    assert_eq!(gap.event, "herald.gap");
    let notice: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
    assert_eq!(notice["reason"], "history_trimmed", "{notice}");
    assert_eq!(notice["topic"], "g", "{notice}");
    assert_eq!(notice["after"], ids[0].as_str(), "{notice}");
    assert_eq!(notice["through"], ids[2].as_str(), "e2 and e3 were lost: {notice}");
    let rest: Vec<(String, String)> = {
        let mut rest = Vec::new();
        for _ in 0..3 {
            let e = sse.next().await;
            rest.push((e.id, e.data));
        }
        rest
    };
    assert_eq!(rest, vec![(ids[3].clone(), "e4".into()), (ids[4].clone(), "e5".into()), (ids[5].clone(), "e6".into())]);
}

#[tokio::test]
async fn garbage_huge_and_negative_last_event_ids_open_with_a_gap_notice() {
    let server = TestServer::start().await;
    let huge = "7".repeat(4096);
    for (i, bad) in ["garbage", huge.as_str(), "-1", "deadbeef-00000000000000zz"].into_iter().enumerate() {
        let topic = format!("fresh{i}");
        let mut sse = Sse::open(
            server
                .client
                .get(server.url(&format!("/topics/{topic}/events")))
                .bearer_auth(server.root_token())
                .header("Last-Event-ID", bad),
        )
        .await;
        let gap = sse.next().await;
        assert_eq!(gap.event, "herald.gap", "Last-Event-ID {bad:.20}…");
        let notice: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
        assert_eq!(notice["reason"], "unknown_last_event_id", "{notice}");
        assert!(!gap.data.contains(&huge[..100]), "the bad id is not echoed back whole");
        // The stream then works as usual.
        let id = server.publish_data(&topic, "after").await;
        let event = sse.next().await;
        assert_eq!((event.event.as_str(), event.id.as_str(), event.data.as_str()), ("message", id.as_str(), "after"));
    }
    // Also by query parameter.
    let mut sse = Sse::open(
        server.client.get(server.url("/topics/fresh0/events?last_event_id=nope")).bearer_auth(server.root_token()),
    )
    .await;
    let gap = sse.next().await;
    assert_eq!(gap.event, "herald.gap");
    // An unknown id replays everything retained after the notice.
    assert_eq!(sse.next_data(1).await, ["after"]);
    server.assert_still_serving().await;
}

// ------------------------------------------------------------ idempotency

#[tokio::test]
async fn idempotency_key_returns_the_first_id_and_delivers_once() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/topics/idem/events").await;
    let send = |data: &str| {
        server
            .client
            .post(server.url("/topics/idem/events"))
            .bearer_auth(server.root_token())
            .header("Idempotency-Key", "order-42")
            .json(&json!({"data": data}))
            .send()
    };
    let first = send("once").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send("once").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "the retry answers with the first receipt");
    // The same key for another body is a new request, refused: not a replay.
    let reused = send("something else").await.unwrap();
    let message = expect_error(reused, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    assert!(message.contains("Idempotency-Key"), "{message}");

    let sentinel = server.publish_data("idem", "sentinel").await;
    let event = sse.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (first["id"].as_str().unwrap(), "once"));
    let event = sse.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (sentinel.as_str(), "sentinel"), "no second event");

    let bad = server
        .client
        .post(server.url("/topics/idem/events"))
        .bearer_auth(server.root_token())
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({"data": 1}))
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
}

/// A token that may publish to and subscribe to `topic` only, for `sub`.
fn tenant_token(sub: &str, topic: &str) -> String {
    sign_hs256(&claims(json!({"sub": sub, "herald": {"publish": [topic], "subscribe": [topic]}})), SECRET)
}

/// The outside review's finding: keys were global, so tenant B's publish
/// with A's key was answered with A's id and topic, and never stored.
#[tokio::test]
async fn idempotency_keys_belong_to_their_caller_for_single_and_batch_publishes() {
    let server = TestServer::start().await;
    let (a, b) = (tenant_token("tenant-a", "tenantA"), tenant_token("tenant-b", "tenantB"));
    let mut b_stream = Sse::open(server.client.get(server.url("/topics/tenantB/events")).bearer_auth(&b)).await;
    let publish = |token: &str, topic: &str, data: &str| {
        server
            .client
            .post(server.url(&format!("/topics/{topic}/events")))
            .bearer_auth(token)
            .header("Idempotency-Key", "order-1")
            .json(&json!({"data": data}))
            .send()
    };
    let from_a = publish(&a, "tenantA", "a's order").await.unwrap();
    assert_eq!(from_a.status(), StatusCode::CREATED);
    let from_a: Value = from_a.json().await.unwrap();
    let from_b = publish(&b, "tenantB", "b's order").await.unwrap();
    assert_eq!(from_b.status(), StatusCode::CREATED);
    assert!(from_b.headers().get("idempotent-replayed").is_none(), "B's publish is not a replay of A's");
    let from_b: Value = from_b.json().await.unwrap();
    assert_eq!(from_b["topic"], "tenantB", "B learns nothing of A's topic: {from_b}");
    assert_ne!(from_b["id"], from_a["id"]);
    let event = b_stream.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (from_b["id"].as_str().unwrap(), "b's order"));

    // Batches: a key stands for the whole batch, within its caller's keys.
    let batch = |token: &str, key: &str, body: Value| {
        server.client.post(server.url("/publish")).bearer_auth(token).header("Idempotency-Key", key).json(&body).send()
    };
    let body = json!([{"topic": "tenantB", "data": "1"}, {"topic": "tenantB", "data": "2"}]);
    let first = batch(&b, "batch-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let retried = batch(&b, "batch-1", body.clone()).await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(retried.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(retried.json::<Value>().await.unwrap(), first, "the retry answers with the first receipts");
    let changed = batch(&b, "batch-1", json!([{"topic": "tenantB", "data": "1"}])).await.unwrap();
    expect_error(changed, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    // B's single-publish key is not B's batch key's business either way.
    let other_shape = batch(&b, "order-1", body).await.unwrap();
    expect_error(other_shape, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    // A's batch with B's batch key is A's own.
    let a_batch = batch(&a, "batch-1", json!([{"topic": "tenantA", "data": "x"}])).await.unwrap();
    assert_eq!(a_batch.status(), StatusCode::CREATED);
    assert!(a_batch.headers().get("idempotent-replayed").is_none());

    // B's stream got each of B's events once, and nothing else.
    server.publish_data("tenantB", "sentinel").await;
    assert_eq!(b_stream.next_data(3).await, ["1", "2", "sentinel"]);
}

// ------------------------------------------------------------------ batch

#[tokio::test]
async fn batch_publish_is_in_order_and_seen_by_one_subscriber() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/events?topic=x&topic=y").await;
    let batch = json!([
        {"topic": "x", "data": "1"},
        {"topic": "y", "data": {"n": 2}, "event": "two"},
        {"topic": "x", "data": "3"},
        {"topic": "y", "data": "4"},
    ]);
    let response =
        server.client.post(server.url("/publish")).bearer_auth(server.root_token()).json(&batch).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let receipts: Vec<Value> = response.json().await.unwrap();
    assert_eq!(receipts.len(), 4);
    let topics: Vec<&str> = receipts.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, ["x", "y", "x", "y"]);
    let ids: Vec<String> = receipts.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in batch order: {ids:?}");
    for (i, expected) in [("1", "message"), ("{\"n\":2}", "two"), ("3", "message"), ("4", "message")].iter().enumerate()
    {
        let event = sse.next().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str(), event.event.as_str()),
            (ids[i].as_str(), expected.0, expected.1)
        );
    }
}

#[tokio::test]
async fn batch_with_one_forbidden_item_publishes_nothing() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/events?topic=a.*&topic=b").await;
    let token = server.token(&["a.*"], &[], false, HOUR);
    let batch = json!([{"topic": "a.1", "data": "x"}, {"topic": "b", "data": "y"}, {"topic": "a.2", "data": "z"}]);
    let response = server.client.post(server.url("/publish")).bearer_auth(&token).json(&batch).send().await.unwrap();
    let message = expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(message.contains("item 1"), "{message}");

    for (body, status, code) in [
        (json!([]), StatusCode::BAD_REQUEST, "empty_batch"),
        (json!([{"topic": "a.1"}]), StatusCode::BAD_REQUEST, "missing_data"),
        (json!([{"topic": "a 1", "data": "x"}]), StatusCode::BAD_REQUEST, "invalid_topic"),
        (json!({"topic": "a.1", "data": "x"}), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            json!([{"topic": "a.1", "data": "x", "event": "herald.fake"}]),
            StatusCode::BAD_REQUEST,
            "reserved_event_type",
        ),
    ] {
        let response = server.client.post(server.url("/publish")).bearer_auth(&token).json(&body).send().await.unwrap();
        expect_error(response, status, code).await;
    }
    // Nothing of the refused batches reached the stream: the next event is this one.
    let after = server.publish_data("a.1", "after").await;
    let event = sse.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (after.as_str(), "after"));
}

// ------------------------------------------------------------------ auth

#[tokio::test]
async fn token_from_header_query_or_cookie() {
    let server = TestServer::start().await;
    let token = server.token(&[], &["t"], false, HOUR);
    let url = server.url("/topics/t/events");
    let mut by_header = Sse::open(server.client.get(&url).bearer_auth(&token)).await;
    let mut by_query = Sse::open(server.client.get(format!("{url}?access_token={token}"))).await;
    let mut by_cookie =
        Sse::open(server.client.get(&url).header(header::COOKIE, format!("theme=dark; herald_token={token}; x=1")))
            .await;
    let id = server.publish_data("t", "all three").await;
    for sse in [&mut by_header, &mut by_query, &mut by_cookie] {
        let event = sse.next().await;
        assert_eq!((event.id.as_str(), event.data.as_str()), (id.as_str(), "all three"));
    }
    // A bad token in any of the three places is refused.
    let bad = sign_hs256(&claims(json!({})), "another-secret-another-secret-another");
    expect_invalid_token(server.client.get(&url).bearer_auth(&bad).send().await.unwrap()).await;
    expect_invalid_token(server.client.get(format!("{url}?access_token={bad}")).send().await.unwrap()).await;
    expect_invalid_token(
        server.client.get(&url).header(header::COOKIE, format!("herald_token={bad}")).send().await.unwrap(),
    )
    .await;
    // No token at all: 401 missing_token with a plain Bearer challenge.
    let response = server.client.get(&url).send().await.unwrap();
    let challenge = response.headers().get(header::WWW_AUTHENTICATE).unwrap().to_str().unwrap().to_owned();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    expect_error(response, StatusCode::UNAUTHORIZED, "missing_token").await;
}

#[tokio::test]
async fn public_subscribe_patterns_need_no_token() {
    let server = TestServer::start_with(|c| c.public_subscribe = vec!["public.*".parse().unwrap()]).await;
    let mut sse = Sse::open(server.client.get(server.url("/events?topic=public.news"))).await;
    let mut pattern = Sse::open(server.client.get(server.url("/events?topic=public.*"))).await;
    let id = server.publish_data("public.news", "for everyone").await;
    assert_eq!(sse.next().await.id, id);
    assert_eq!(pattern.next().await.id, id);

    let private = server.client.get(server.url("/topics/private/events")).send().await.unwrap();
    expect_error(private, StatusCode::UNAUTHORIZED, "missing_token").await;
    let mixed = server.client.get(server.url("/events?topic=public.news&topic=private")).send().await.unwrap();
    expect_error(mixed, StatusCode::UNAUTHORIZED, "missing_token").await;
    let wider = server.client.get(server.url("/events?topic=*")).send().await.unwrap();
    expect_error(wider, StatusCode::UNAUTHORIZED, "missing_token").await;
    // Publishing always needs a token.
    let publish =
        server.client.post(server.url("/topics/public.news/events")).json(&json!({"data": "x"})).send().await.unwrap();
    expect_error(publish, StatusCode::UNAUTHORIZED, "missing_token").await;
    // A token that is sent is checked, even where none is needed.
    let garbage =
        server.client.get(server.url("/topics/public.news/events")).bearer_auth("not.a.jwt").send().await.unwrap();
    expect_invalid_token(garbage).await;
}

#[tokio::test]
async fn an_open_stream_ends_with_herald_expired_when_its_token_expires() {
    let server = TestServer::start().await;
    let token = server.token(&[], &["exp"], false, Duration::from_secs(2));
    let started = Instant::now();
    let mut sse = Sse::open(server.client.get(server.url("/topics/exp/events")).bearer_auth(&token)).await;
    let id = server.publish_data("exp", "before expiry").await;
    assert_eq!(sse.next().await.id, id);
    let rest = sse.until_end(Duration::from_secs(6)).await;
    let elapsed = started.elapsed();
    assert_eq!(rest.len(), 1, "one last event, then the end: {rest:?}");
    assert_eq!(rest[0].event, "herald.expired");
    let data: Value = serde_json::from_str(&rest[0].data).expect("expired data is JSON");
    assert_eq!(data["reason"], "token_expired", "{data}");
    assert!(elapsed >= Duration::from_millis(900), "not before the token expires ({elapsed:?})");
}

#[tokio::test]
async fn invalid_tokens_are_401_invalid_token() {
    let server = TestServer::start().await;
    let publish = |token: String| {
        server
            .client
            .post(server.url("/topics/sec/events"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .json(&json!({"data": "x"}))
            .send()
    };
    let subscribe = |token: String| server.client.get(server.url("/topics/sec/events")).bearer_auth(token).send();

    let none_token =
        format!("{}.{}.", b64url(br#"{"alg":"none","typ":"JWT"}"#), b64url(claims(json!({})).to_string().as_bytes()));
    let hs512 = sign(&claims(json!({})), Algorithm::HS512, &EncodingKey::from_secret(SECRET.as_bytes()));
    let other_secret = sign_hs256(&claims(json!({})), "a-completely-different-secret-0123456789");
    let expired = sign_hs256(&claims(json!({"exp": now() - 120})), SECRET);
    let not_yet = sign_hs256(&claims(json!({"nbf": now() + 600})), SECRET);
    let no_exp = {
        let mut c = claims(json!({}));
        c.as_object_mut().unwrap().remove("exp");
        sign_hs256(&c, SECRET)
    };
    let bad_grants = sign_hs256(&claims(json!({"herald": {"publish": ["a b"]}})), SECRET);
    let tampered = {
        let good = server.root_token();
        let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
        parts[1] = b64url(claims(json!({"sub": "mallory"})).to_string().as_bytes());
        parts.join(".")
    };
    let cases = [
        ("alg none", none_token),
        ("HS512 to an HS256 server", hs512),
        ("signed with another secret", other_secret),
        ("expired", expired),
        ("nbf in the future", not_yet),
        ("no exp", no_exp),
        ("bad patterns in grants", bad_grants),
        ("tampered claims", tampered),
        ("garbage", "garbage".to_owned()),
    ];
    for (what, token) in cases {
        let message = expect_invalid_token(publish(token.clone()).await.unwrap()).await;
        assert!(message.starts_with("invalid token"), "{what}: {message}");
        expect_invalid_token(subscribe(token).await.unwrap()).await;
    }
    // A malformed Authorization header.
    let basic = server
        .client
        .post(server.url("/topics/sec/events"))
        .header(header::AUTHORIZATION, "Basic dXNlcjpwYXNz")
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_invalid_token(basic).await;
    // The control: a good token works.
    let good = publish(sign_hs256(&claims(json!({})), SECRET)).await.unwrap();
    assert_eq!(good.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn a_token_accepted_before_is_refused_once_it_expires() {
    // Verified tokens are remembered; an entry must not outlive the token.
    let server = TestServer::start_with(|c| c.jwt_leeway = Duration::ZERO).await;
    let token = sign_hs256(&claims(json!({"exp": now() + 3})), SECRET);
    let publish = || {
        server.client.post(server.url("/topics/brief/events")).bearer_auth(&token).json(&json!({"data": "x"})).send()
    };
    assert_eq!(publish().await.unwrap().status(), StatusCode::CREATED);
    assert_eq!(publish().await.unwrap().status(), StatusCode::CREATED, "again, from the verifier's memory");
    tokio::time::sleep(Duration::from_millis(4100)).await;
    let refused = publish().await.unwrap();
    let message = expect_invalid_token(refused).await;
    assert!(message.contains("expired"), "{message}");
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let server = TestServer::start_with(|c| {
        c.jwt_issuer = Some("https://issuer.example".into());
        c.jwt_audience = Some("herald".into());
    })
    .await;
    let publish = |claims_extra: Value| {
        server
            .client
            .post(server.url("/topics/iss/events"))
            .bearer_auth(sign_hs256(&claims(claims_extra), SECRET))
            .json(&json!({"data": "x"}))
            .send()
    };
    let ok = publish(json!({"iss": "https://issuer.example", "aud": "herald"})).await.unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    for extra in [
        json!({"iss": "https://evil.example", "aud": "herald"}),
        json!({"iss": "https://issuer.example", "aud": "someone-else"}),
        json!({"aud": "herald"}),
        json!({"iss": "https://issuer.example"}),
    ] {
        expect_invalid_token(publish(extra).await.unwrap()).await;
    }
    // A token from `herald token` style minting (no iss/aud) is refused too.
    expect_invalid_token(
        server
            .client
            .post(server.url("/topics/iss/events"))
            .bearer_auth(server.root_token())
            .json(&json!({"data": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
}

#[tokio::test]
async fn grants_that_do_not_cover_the_topic_are_403() {
    let server = TestServer::start().await;
    let token = server.token(&["orders.*"], &["orders.eu"], false, HOUR);
    let publish = server
        .client
        .post(server.url("/topics/billing/events"))
        .bearer_auth(&token)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(publish, StatusCode::FORBIDDEN, "forbidden").await;
    for path in ["/topics/orders.us/events", "/events?topic=orders.*", "/events?topic=orders.eu&topic=billing"] {
        let response = server.client.get(server.url(path)).bearer_auth(&token).send().await.unwrap();
        expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // What it does allow works.
    let ok = server
        .client
        .post(server.url("/topics/orders.new/events"))
        .bearer_auth(&token)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::CREATED);
    Sse::open(server.client.get(server.url("/topics/orders.eu/events")).bearer_auth(&token)).await;
    // A subscribe-only token cannot publish.
    let reader = server.token(&[], &["*"], false, HOUR);
    let publish = server
        .client
        .post(server.url("/topics/orders.eu/events"))
        .bearer_auth(&reader)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(publish, StatusCode::FORBIDDEN, "forbidden").await;
    // Admin may subscribe to anything, but publishing still needs a grant.
    let admin = server.token(&[], &[], true, HOUR);
    Sse::open(server.client.get(server.url("/events?topic=*")).bearer_auth(&admin)).await;
    let publish = server
        .client
        .post(server.url("/topics/orders.eu/events"))
        .bearer_auth(&admin)
        .json(&json!({"data": "x"}))
        .send()
        .await
        .unwrap();
    expect_error(publish, StatusCode::FORBIDDEN, "forbidden").await;
}

/// A server verifying `alg` tokens with the public key in `public`.
async fn asymmetric_server(public: &str, alg: Algorithm) -> TestServer {
    TestServer::start_with(|c| {
        c.jwt_key = JwtKey::PublicKey { path: key_path(public), pem: key_pem(public) };
        c.jwt_algorithm = alg;
    })
    .await
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_accepted_with_the_matching_key() {
    let cases = [
        ("rsa", Algorithm::RS256, EncodingKey::from_rsa_pem(&key_pem("rsa-private.pem")).unwrap()),
        ("ec", Algorithm::ES256, EncodingKey::from_ec_pem(&key_pem("ec-private.pem")).unwrap()),
        ("ed25519", Algorithm::EdDSA, EncodingKey::from_ed_pem(&key_pem("ed25519-private.pem")).unwrap()),
    ];
    for (name, alg, key) in &cases {
        let server = asymmetric_server(&format!("{name}-public.pem"), *alg).await;
        let token = sign(&claims(json!({})), *alg, key);
        let response = server
            .client
            .post(server.url("/topics/k/events"))
            .bearer_auth(&token)
            .json(&json!({"data": name}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "{name}: {}", response.text().await.unwrap());
        let mut sse = Sse::open(server.client.get(server.url("/topics/k/events")).bearer_auth(&token)).await;
        let id = server_publish_with(&server, &token, "k", name).await;
        assert_eq!(sse.next().await.id, id);
        // Another family's key, and the HS256 secret, are refused.
        for (other_name, other_alg, other_key) in &cases {
            if other_name != name {
                let token = sign(&claims(json!({})), *other_alg, other_key);
                let response =
                    server.client.get(server.url("/topics/k/events")).bearer_auth(&token).send().await.unwrap();
                expect_invalid_token(response).await;
            }
        }
        let hs = sign_hs256(&claims(json!({})), SECRET);
        expect_invalid_token(server.client.get(server.url("/topics/k/events")).bearer_auth(&hs).send().await.unwrap())
            .await;
    }
}

async fn server_publish_with(server: &TestServer, token: &str, topic: &str, data: &str) -> String {
    let response = server
        .client
        .post(server.url(&format!("/topics/{topic}/events")))
        .bearer_auth(token)
        .json(&json!({"data": data}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused_by_an_rs256_server() {
    for (public, alg) in [
        ("rsa-public.pem", Algorithm::RS256),
        ("ec-public.pem", Algorithm::ES256),
        ("ed25519-public.pem", Algorithm::EdDSA),
    ] {
        let server = asymmetric_server(public, alg).await;
        let pem = String::from_utf8(key_pem(public)).unwrap();
        for secret in [pem.as_str(), pem.trim()] {
            let confused = sign_hs256(&claims(json!({})), secret);
            let response = server
                .client
                .post(server.url("/topics/k/events"))
                .bearer_auth(&confused)
                .json(&json!({"data": "x"}))
                .send()
                .await
                .unwrap();
            let message = expect_invalid_token(response).await;
            assert!(message.contains("not signed with"), "{public}: {message}");
        }
    }
}

// ------------------------------------------------------------- streams

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

// ------------------------------------------------------- topics and health

#[tokio::test]
async fn topics_list_and_one_follow_grants() {
    let server = TestServer::start().await;
    let alpha = server.publish_data("alpha", "a").await;
    server.publish_data("beta", "b").await;
    let _sse = server.subscribe("/topics/alpha/events").await;

    let reader = server.token(&[], &["alpha"], false, HOUR);
    let list: Vec<Value> =
        server.client.get(server.url("/topics")).bearer_auth(&reader).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1, "only the topics the token may subscribe to: {list:?}");
    assert_eq!(list[0]["name"], "alpha");
    assert_eq!(list[0]["subscribers"], 1);
    assert_eq!(list[0]["buffered"], 1);
    assert_eq!(list[0]["last_id"], alpha.as_str());

    let admin = server.token(&[], &[], true, HOUR);
    let list: Vec<Value> =
        server.client.get(server.url("/topics")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"], "admin sees every topic, sorted");
    let anonymous = server.client.get(server.url("/topics")).send().await.unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_token").await;

    let one: Value =
        server.client.get(server.url("/topics/alpha")).bearer_auth(&reader).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["name"], "alpha");
    assert_eq!(one["last_id"], alpha.as_str());
    let forbidden = server.client.get(server.url("/topics/beta")).bearer_auth(&reader).send().await.unwrap();
    expect_error(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
    let missing = server.client.get(server.url("/topics/beta")).send().await.unwrap();
    expect_error(missing, StatusCode::UNAUTHORIZED, "missing_token").await;
    let unknown = server.client.get(server.url("/topics/nobody.here")).bearer_auth(&admin).send().await.unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let invalid = server.client.get(server.url("/topics/a%20b")).bearer_auth(&admin).send().await.unwrap();
    expect_error(invalid, StatusCode::BAD_REQUEST, "invalid_topic").await;
}

/// Topics stay listed, with what the store holds, after they leave memory.
#[tokio::test]
async fn topics_are_reported_from_the_store_after_they_leave_memory() {
    let server = TestServer::start().await;
    for n in 0..3 {
        server.publish_data("user@42", &n.to_string()).await;
    }
    let last = server.publish_data("user@42", "last").await;
    for name in ["a.1", "a.2", "a.3"] {
        server.publish_data(name, "x").await;
    }
    // Long after anyone listened, the registry lets them go; the store keeps them.
    let later = herald_core::now_ms() + 3_600_000;
    assert!(server.state.hub.sweep_idle_topics(later) >= 4);
    assert!(server.state.hub.topic_stats("user@42").is_none(), "out of memory");
    let admin = server.token(&[], &[], true, HOUR);
    let get = |path: &str| server.client.get(server.url(path)).bearer_auth(&admin).send();
    let one: Value = get("/topics/user@42").await.unwrap().json().await.unwrap();
    assert_eq!((one["retained"].as_u64(), one["last_id"].as_str()), (Some(4), Some(last.as_str())), "{one}");
    assert_eq!((one["subscribers"].as_u64(), one["buffered"].as_u64()), (Some(0), Some(0)), "{one}");
    let list: Vec<Value> = get("/topics").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.1", "a.2", "a.3", "user@42"]);
    // Page by page, following the `next` links, as the admin and as a token
    // that may see only the last topic (its pages skip what it may not see).
    let narrow = server.token(&[], &["user@*"], false, HOUR);
    for (token, expected) in [(&admin, vec!["a.1", "a.2", "a.3", "user@42"]), (&narrow, vec!["user@42"])] {
        let (mut names, mut next) = (Vec::new(), Some("/topics?limit=2".to_owned()));
        while let Some(path) = next.take() {
            assert!(names.len() < 10, "the links end");
            let response = server.client.get(server.url(&path)).bearer_auth(token).send().await.unwrap();
            next = response.headers().get("link").map(|link| {
                let link = link.to_str().unwrap();
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                link.trim_start_matches('<').split('>').next().unwrap().to_owned()
            });
            let page: Vec<Value> = response.json().await.unwrap();
            assert!(page.len() <= 2);
            names.extend(page.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        }
        assert_eq!(names, expected);
    }
    expect_error(get("/topics?limit=0").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_limit").await;
    expect_error(get("/topics?after=a%20b").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_topic").await;

    // The dashboard lists it too, with what is stored (its sampler reads the
    // store every few seconds).
    let page = get("/admin/topics/user@42").await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"t-retained\">4<"), "{page}");
    let row = "<a href=\"/admin/topics/user@42\">user@42</a></td><td class=\"num\">0</td><td class=\"num\">4</td>";
    within(WAIT, "the dashboard to list the stored topic", async {
        while !get("/admin").await.unwrap().text().await.unwrap().contains(row) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// With the registry full, events of topics that found no room reach pattern
/// subscribers from the store: no silent hole (the outside review saw ids
/// 1, 2, 3, 6 of six).
#[tokio::test]
async fn a_full_topic_registry_loses_nothing_for_pattern_subscribers() {
    let server = TestServer::start_with(|config| config.hub.max_topics = 3).await;
    let mut all = server.subscribe("/events?topic=*").await;
    let mut ids = Vec::new();
    for name in ["t1", "t2", "t3", "t4", "t5", "t1"] {
        ids.push(server.publish_data(name, name).await);
    }
    assert_eq!(server.state.hub.topic_count(), 3, "the registry is full");
    for (id, name) in ids.iter().zip(["t1", "t2", "t3", "t4", "t5", "t1"]) {
        let event = all.next().await;
        assert_eq!((event.id.as_str(), event.data.as_str(), event.event.as_str()), (id.as_str(), name, "message"));
    }
}

#[tokio::test]
async fn the_topic_list_needs_a_token_even_with_public_patterns() {
    let server = TestServer::start_with(|c| c.public_subscribe = vec!["news".parse().unwrap()]).await;
    server.publish_data("news", "n").await;
    let anonymous = server.client.get(server.url("/topics")).send().await.unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_token").await;
    let one: Value = server.client.get(server.url("/topics/news")).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["name"], "news", "one public topic's figures stay public");
    let reader = server.token(&[], &["other"], false, HOUR);
    let list: Vec<Value> =
        server.client.get(server.url("/topics")).bearer_auth(&reader).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1, "with a token, public topics are listed too: {list:?}");
}

#[tokio::test]
async fn healthz_and_readyz() {
    let server = TestServer::start().await;
    let health = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["store"].is_string(), "{ready}");
}

// ------------------------------------------------------------------ limits

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

// -------------------------------------------------------------- bad input

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

// -------------------------------------------------------------- binary

/// Its output once it holds `needle` (the lines after "listening on" come a little later).
async fn logged(herald: &Herald, needle: &str) -> String {
    within(WAIT, "a log line", async {
        loop {
            let output = herald.output();
            if output.contains(needle) {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Runs `herald token` with `args` in `cwd`.
fn herald_token(args: &[&str], cwd: &std::path::Path) -> std::process::Output {
    herald_command().arg("token").args(args).current_dir(cwd).output().expect("run herald token")
}

/// A token's claims, checked with `secret` (any `aud`).
fn claims_of(token: &str, secret: &str) -> Value {
    let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
    validation.validate_aud = false;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    jsonwebtoken::decode::<Value>(token, &key, &validation).expect("a token signed with the secret").claims
}

#[tokio::test]
async fn herald_token_signs_with_the_servers_key_and_claims_from_another_directory() {
    let dir = tempfile::tempdir().unwrap();
    let (server_cwd, elsewhere) = (dir.path().join("server"), dir.path().join("elsewhere"));
    std::fs::create_dir_all(&server_cwd).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\njwt-issuer = \"https://issuer.test\"\njwt-audience = \"herald-test\"\n",
            data.display()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap();
    let mut herald = Herald::run(&["--config", config_arg], &server_cwd);
    let log = logged(&herald, "signing key: ").await;
    assert!(log.contains("signing key: generated in"), "{log}");
    let secret_file = data.join("jwt-secret");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&secret_file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the generated secret is private to its owner");

    // Minted elsewhere with the server's config file: its key, iss and aud; comma lists split.
    let output =
        herald_token(&["--config", config_arg, "--sub", "x", "--publish", "a,b", "--subscribe", "b"], &elsewhere);
    assert!(output.status.success(), "herald token failed: {}", show(&output.stderr));
    let token = show(&output.stdout).trim().to_owned();
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let claims = claims_of(&token, secret.trim());
    assert_eq!((claims["iss"].as_str(), claims["aud"].as_str()), (Some("https://issuer.test"), Some("herald-test")));
    assert_eq!(claims["herald"]["publish"], json!(["a", "b"]), "{claims}");
    assert!(std::fs::read_dir(&elsewhere).unwrap().next().is_none(), "herald token made nothing where it ran");

    let http = client();
    let mut sse = Sse::open(http.get(herald.url("/topics/b/events")).bearer_auth(&token)).await;
    for topic in ["a", "b"] {
        let response = http
            .post(herald.url(&format!("/topics/{topic}/events")))
            .bearer_auth(&token)
            .json(&json!({"data": topic}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::CREATED, "publish to {topic}");
    }
    assert_eq!(sse.next().await.data, "b");

    // The same key without the claim settings: the server wants its iss.
    let data_arg = data.to_str().unwrap();
    let output = herald_token(&["--data-dir", data_arg, "--sub", "x", "--publish", "a"], &elsewhere);
    assert!(output.status.success(), "{}", show(&output.stderr));
    let bare = show(&output.stdout).trim().to_owned();
    let refused = http.post(herald.url("/topics/a/events")).bearer_auth(&bare).json(&json!({"data": 1})).send();
    let message = expect_invalid_token(refused.await.unwrap()).await;
    assert!(message.contains("`iss`") || message.contains("`aud`"), "{message}");

    // Another key: the 401 says where keys come from.
    let other = "another-secret-0123456789abcdef-0123456789";
    let output = herald_token(&["--jwt-secret", other, "--sub", "y", "--publish", "a"], &elsewhere);
    let foreign = show(&output.stdout).trim().to_owned();
    let refused = http.post(herald.url("/topics/a/events")).bearer_auth(&foreign).json(&json!({"data": 1})).send();
    let message = expect_invalid_token(refused.await.unwrap()).await;
    assert!(message.contains("--jwt-secret") && message.contains("--data-dir"), "{message}");

    // A second start reuses the key, and says so.
    herald.terminate();
    herald.wait_exit(Duration::from_secs(10)).await;
    let again = Herald::run(&["--config", config_arg], &server_cwd);
    let log = logged(&again, "signing key: ").await;
    assert!(log.contains("signing key: loaded from") && !log.contains("generated in"), "{log}");
    assert!(log.contains("herald token"), "the start-up log says how to mint a token:\n{log}");
    let still = http.post(again.url("/topics/a/events")).bearer_auth(&token).json(&json!({"data": 2})).send();
    assert_eq!(still.await.unwrap().status(), StatusCode::CREATED);
}

#[tokio::test]
async fn herald_token_never_makes_a_key_and_refuses_a_token_that_allows_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let output = herald_token(&["--sub", "x", "--publish", "a"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    let looked = std::path::absolute(dir.path().join("herald-data/jwt-secret")).unwrap();
    assert!(stderr.contains(&looked.display().to_string()), "says where it looked: {stderr}");
    for flag in ["--data-dir", "--config", "--jwt-secret"] {
        assert!(stderr.contains(flag), "names {flag}: {stderr}");
    }
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "no data dir, no secret made");

    let output = herald_token(&["--jwt-secret", SECRET, "--sub", "x"], dir.path());
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    for flag in ["--publish", "--subscribe", "--admin"] {
        assert!(stderr.contains(flag), "names {flag}: {stderr}");
    }
    let output =
        herald_token(&["--jwt-secret", SECRET, "--sub", "x", "--subscribe", "a.*,b", "--subscribe", "c"], dir.path());
    assert!(output.status.success(), "{}", show(&output.stderr));
    let claims = claims_of(show(&output.stdout).trim(), SECRET);
    assert_eq!(claims["herald"]["subscribe"], json!(["a.*", "b", "c"]), "{claims}");
    assert!(claims.get("iss").is_none() && claims.get("aud").is_none(), "{claims}");
}

#[tokio::test]
async fn a_start_that_cannot_listen_leaves_nothing_behind() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (vec!["--listen", port.as_str()], "--listen"),
        (vec!["--listen", "127.0.0.1:0", "--internal-listen", port.as_str()], "--internal-listen"),
    ] {
        let output = herald_command().args(args).current_dir(dir.path()).output().unwrap();
        let stderr = show(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(&format!("cannot listen on {port} ({flag})")), "{stderr}");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "a failed start left {left:?}");
    }
}

#[tokio::test]
async fn listen_takes_a_host_name_and_an_unknown_one_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::run(&["--memory", "--listen", "localhost:0", "--jwt-secret", SECRET], dir.path());
    assert!(herald.addr.ip().is_loopback(), "{}", herald.addr);
    let health = client().get(herald.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let output = herald_command()
        .args(["--memory", "--listen", "no-such-host.invalid:8080", "--internal-listen", "nor-this.invalid:9090"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    assert!(stderr.contains("--listen: cannot resolve `no-such-host.invalid`"), "{stderr}");
    assert!(stderr.contains("--internal-listen: cannot resolve `nor-this.invalid`"), "{stderr}");
}

#[tokio::test]
async fn sigterm_ends_open_streams_and_the_process_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let mut herald = Herald::run(
        &[
            "--memory",
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--shutdown-grace",
            "3s",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        dir.path(),
    );
    let token = sign_hs256(&claims(json!({})), SECRET);
    let http = client();
    let mut sse = Sse::open(http.get(herald.url("/topics/term/events")).bearer_auth(&token)).await;
    let response = http
        .post(herald.url("/topics/term/events"))
        .bearer_auth(&token)
        .json(&json!({"data": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(sse.next().await.data, "hi");

    let started = Instant::now();
    herald.terminate();
    let rest = sse.until_end(Duration::from_secs(5)).await;
    assert!(rest.is_empty(), "{rest:?}");
    let status = herald.wait_exit(Duration::from_secs(6)).await;
    assert_eq!(status.code(), Some(0), "exit status; output:\n{}", herald.output());
    assert!(started.elapsed() < Duration::from_secs(3), "within the grace period: {:?}", started.elapsed());
}

#[tokio::test]
async fn invalid_settings_exit_1_and_list_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let output =
        herald_command().args(["--listen", "nope", "--heartbeat", "soon"]).current_dir(dir.path()).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = show(&output.stderr);
    assert!(stderr.contains("--listen") && stderr.contains("nope"), "{stderr}");
    assert!(stderr.contains("--heartbeat") && stderr.contains("soon"), "{stderr}");
    assert_eq!(stderr.lines().filter(|l| l.starts_with("error:")).count(), 2, "{stderr}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "nothing was created in the working dir");
}

// ------------------------------------------------------------------ browser

#[tokio::test]
async fn browser_eventsource_reconnects_and_resumes_without_loss_or_duplicates() {
    const EVENTS: usize = 300;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/reconnect.mjs");
    let modules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/node_modules/eventsource");
    if std::process::Command::new("node").arg("--version").output().is_err() {
        eprintln!("SKIPPED browser_eventsource_reconnects…: `node` is not installed; run scripts/install-test-deps");
        return;
    }
    assert!(modules.exists(), "npm packages of tests/e2e are missing: run scripts/install-test-deps");

    let server = TestServer::start_with(|c| {
        c.stream_max_duration = Some(Duration::from_secs(1));
        c.retry = Duration::from_millis(50);
    })
    .await;
    let token = server.token(&[], &["e2e"], false, HOUR);
    let url = server.url(&format!("/topics/e2e/events?access_token={token}"));
    let mut node = std::process::Command::new("node")
        .arg(&script)
        .arg(&url)
        .arg((EVENTS - 1).to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop_guard();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let stdout = node.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let value: Value =
                serde_json::from_str(&line).unwrap_or_else(|_| json!({"type": "unparsed", "line": line}));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    let first = within(WAIT, "the EventSource to open", rx.recv()).await.expect("node printed a line");
    assert_eq!(first["type"], "open", "{first}");

    // Publish over ~4 s while the server cuts every stream after 1 s.
    let mut ids = Vec::with_capacity(EVENTS);
    let mut tick = tokio::time::interval(Duration::from_millis(13));
    for i in 0..EVENTS {
        tick.tick().await;
        ids.push(server.publish_data("e2e", &i.to_string()).await);
    }
    let mut lines = vec![first];
    within(Duration::from_secs(20), "the EventSource to receive the last event", async {
        while let Some(line) = rx.recv().await {
            lines.push(line);
        }
    })
    .await;
    let status = within(WAIT, "node to exit", async {
        loop {
            if let Some(status) = node.0.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "node exited with {status}; lines: {lines:?}");

    let received: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["type"] == "message")
        .map(|l| (l["id"].as_str().unwrap().to_owned(), l["data"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> = ids.iter().enumerate().map(|(i, id)| (id.clone(), i.to_string())).collect();
    assert_eq!(received.len(), EVENTS, "every event exactly once");
    assert_eq!(received, expected, "in order, none lost, none repeated");
    let opens = lines.iter().filter(|l| l["type"] == "open").count();
    assert!(opens >= 3, "at least two reconnects happened: {opens} opens");
    assert!(!lines.iter().any(|l| l["type"] == "gap" || l["type"] == "unparsed"), "{lines:?}");
}

/// A child process killed when the test ends, even by a panic.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

trait SpawnGuarded {
    fn kill_on_drop_guard(&mut self) -> KillOnDrop;
}

impl SpawnGuarded for std::process::Command {
    fn kill_on_drop_guard(&mut self) -> KillOnDrop {
        KillOnDrop(self.spawn().expect("spawn"))
    }
}
