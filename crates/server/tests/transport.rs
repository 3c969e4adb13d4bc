//! The transport against clients that misbehave on purpose: bodies that never
//! arrive, heads trickled past the direct reader, idle keep-alive connections,
//! HTTP/2 peers that ignore PING or keep a stream's window shut, and inputs
//! (a token's `exp`, settings) large enough to overflow time arithmetic.
//! The real server on a real socket; HTTP/2 spoken with the independent `h2`
//! crate, or as hand-written frames where a client must break the protocol.

mod common;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::http::{Request, StatusCode as H2Status, header::AUTHORIZATION};
use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

// ------------------------------------------------------------------ bodies

/// A request head announcing a 100-byte body that never comes.
fn head_without_body(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let kind = if path.starts_with("/admin") { "application/x-www-form-urlencoded" } else { "application/json" };
    format!("POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: {kind}\r\nContent-Length: 100\r\n\r\n").into_bytes()
}

/// Asserts that `answer` (all a connection got before it closed) is the
/// 408 `body_timeout` JSON error naming the setting.
fn assert_body_timeout(answer: &[u8]) {
    let text = show(answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");
    let body: Value = serde_json::from_str(text.split("\r\n\r\n").nth(1).unwrap_or_default())
        .unwrap_or_else(|e| panic!("not a JSON body ({e}): {text}"));
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("--body-timeout"), "{body}");
}

#[tokio::test]
async fn bodies_that_never_arrive_are_a_408_and_free_their_connections() {
    let server = TestServer::start_with(|c| {
        c.max_connections = 4;
        c.body_timeout = Duration::from_secs(1);
    })
    .await;
    let token = server.root_token();
    // As many as the server takes: the login form and authenticated
    // publishes, each with a body that never comes.
    let mut held = Vec::new();
    for (path, token) in [
        ("/admin/login", None),
        ("/admin/login", None),
        ("/topics/slow/events", Some(token.as_str())),
        ("/publish", Some(token.as_str())),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream.write_all(&head_without_body(path, token)).await.unwrap();
        held.push(stream);
    }
    for stream in &mut held {
        assert_body_timeout(&read_to_close(stream, WAIT).await);
    }
    // Their slots are free again.
    within(WAIT, "a connection slot once the slow bodies timed out", async {
        while server.state.connections.open() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.assert_still_serving().await;

    // An unauthenticated publish is refused without waiting for its body, and closed.
    let answer = raw_exchange(server.addr, &head_without_body("/topics/slow/events", None)).await;
    assert!(show(&answer).starts_with("HTTP/1.1 401"), "{}", show(&answer));

    // A body sent in parts, within the timeout, is taken.
    let body = json!({"data": "in parts"}).to_string();
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /topics/slow/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stream.write_all(&body.as_bytes()[5..]).await.unwrap();
    let answer = read_until(&mut stream, b"\"id\"").await;
    assert!(show(&answer).starts_with("HTTP/1.1 201"), "{}", show(&answer));
}

#[tokio::test]
async fn an_http2_body_that_never_arrives_is_a_408() {
    let server = TestServer::start_with(|c| c.body_timeout = Duration::from_secs(1)).await;
    let mut h2 = h2_client(server.addr, 65_535).await;
    let request = Request::post(format!("http://{}/topics/slow/events", server.addr))
        .header(AUTHORIZATION, format!("Bearer {}", server.root_token()))
        .header("content-type", "application/json")
        .header("content-length", "100")
        .body(())
        .unwrap();
    // The request's end is never sent.
    let (response, _body) = h2.send_request(request, false).unwrap();
    let response = within(WAIT, "the 408", response).await.unwrap();
    assert_eq!(response.status(), H2Status::REQUEST_TIMEOUT);
    let text = h2_read_to_end(response.into_body()).await;
    let body: Value = serde_json::from_slice(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", show(&text)));
    assert_eq!(body["error"]["code"], "body_timeout", "{body}");
    server.assert_still_serving().await;
}

// ------------------------------------------------------------------- heads

#[tokio::test]
async fn an_idle_keep_alive_connection_waits_for_the_idle_timeout_not_the_header_timeout() {
    let server = TestServer::start_with(|c| {
        c.header_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(3);
    })
    .await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until(&mut stream, b"\"ok\"").await;
    // Idle for twice the header timeout, within the idle timeout: still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stream.write_all(request).await.unwrap();
    read_until(&mut stream, b"\"ok\"").await;
    // Idle past the idle timeout: closed, and not at the header timeout.
    let idle_from = Instant::now();
    let rest = read_to_close(&mut stream, WAIT).await;
    assert!(rest.is_empty(), "{}", show(&rest));
    assert!(idle_from.elapsed() >= Duration::from_millis(2800), "closed after {:?}", idle_from.elapsed());
}

#[tokio::test]
async fn a_head_longer_than_the_direct_reader_takes_is_timed_from_its_first_byte() {
    const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
    let server = TestServer::start_with(|c| c.header_timeout = HEADER_TIMEOUT).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let first_byte = Instant::now();
    stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ").await.unwrap();
    stream.write_all(&[b'a'; 1024]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Past 16 KiB: the direct reader hands the head over, 1.5 s into its time.
    stream.write_all(&[b'a'; 16 * 1024]).await.unwrap();
    let closed = within(WAIT, "the trickled head to be cut", async {
        loop {
            if stream.write_all(b"a").await.is_err() {
                return Instant::now();
            }
            let mut buf = [0u8; 256];
            if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await {
                return Instant::now();
            }
        }
    })
    .await;
    let took = closed - first_byte;
    // Bounds on the timer's start, coarse on purpose: a fresh timer at the
    // hand-over would close it at 3.5 s.
    assert!(took >= HEADER_TIMEOUT - Duration::from_millis(200), "closed before the header timeout: {took:?}");
    assert!(took < HEADER_TIMEOUT + Duration::from_secs(1), "the head got more than its header timeout: {took:?}");
    server.assert_still_serving().await;
}

// ------------------------------------------------------------------ HTTP/2

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn an_http2_connection_that_sends_only_its_preface_is_closed() {
    let server = TestServer::start_with(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&SETTINGS).await.unwrap();
    // Reads what the server sends (SETTINGS, GOAWAY, PING) and answers nothing.
    read_to_close(&mut stream, WAIT).await;
    within(WAIT, "its connection slot to be freed", async {
        while server.state.connections.open() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn an_http2_stream_whose_client_ignores_ping_is_closed() {
    let server = TestServer::start_with(|c| {
        c.idle_timeout = Duration::from_secs(1);
        c.stall_timeout = Duration::from_secs(1);
        c.public_subscribe = vec!["open.*".parse().unwrap()];
    })
    .await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    stream.write_all(&SETTINGS).await.unwrap();
    // HEADERS, END_STREAM | END_HEADERS, stream 1: GET /topics/open.x/events,
    // HPACK-encoded from the static table and literals.
    let path = b"/topics/open.x/events";
    let mut block = vec![0x82, 0x86, 0x04, u8::try_from(path.len()).unwrap()];
    block.extend_from_slice(path);
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"127.0.0.1");
    let len = u32::try_from(block.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], 1, 0x5, 0, 0, 0, 1];
    frame.extend_from_slice(&block);
    stream.write_all(&frame).await.unwrap();
    let opened = read_until(&mut stream, b"herald stream open").await;
    assert!(!opened.is_empty());
    // The stream stays open (heartbeats would keep it so); only the
    // unanswered PING ends the connection.
    read_to_close(&mut stream, WAIT).await;
}

#[tokio::test]
async fn an_http2_stream_whose_window_stays_shut_is_cut_alone_and_counted_as_lagged() {
    let server = TestServer::start_with(|c| {
        c.stall_timeout = Duration::from_secs(1);
        c.heartbeat = Duration::from_millis(200);
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let lagged_before = metric(&server, "herald_streams_closed_total{reason=\"lagged\"}");
    let cut_before = metric(&server, "herald_lagged_disconnects_total");
    // One connection, two streams, each with a 256-byte window.
    let mut h2 = h2_client(server.addr, 256).await;
    let token = server.root_token();
    let get = |topic: &str| {
        Request::get(format!("http://{}/topics/{topic}/events", server.addr))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .body(())
            .unwrap()
    };
    let (shut, _) = h2.send_request(get("h2.shut"), true).unwrap();
    let (open, _) = h2.send_request(get("h2.open"), true).unwrap();
    let mut shut = within(WAIT, "the first stream", shut).await.unwrap().into_body();
    let mut open = within(WAIT, "the second stream", open).await.unwrap().into_body();
    // The first is read as far as its window lets the server send, and its
    // window is never opened again.
    server.publish_data("h2.shut", &"x".repeat(2000)).await;
    let error = h2_until_cut(&mut shut).await.expect("the stream was reset, not ended as if complete");
    assert!(error.is_reset(), "{error}");
    // Its neighbour on the same connection still gets events.
    let id = server.publish_data("h2.open", "still here").await;
    let mut seen = Vec::new();
    within(WAIT, "the event on the other stream", async {
        while !contains(&seen, id.as_bytes()) {
            let data = open.data().await.expect("the other stream is open").expect("and healthy");
            open.flow_control().release_capacity(data.len()).unwrap();
            seen.extend_from_slice(&data);
        }
    })
    .await;
    assert_eq!(metric(&server, "herald_streams_closed_total{reason=\"lagged\"}"), lagged_before + 1.0);
    assert_eq!(metric(&server, "herald_lagged_disconnects_total"), cut_before + 1.0);
}

/// A reader that opens its window slowly, but keeps opening it, makes
/// progress: it is not cut however long its backlog takes to drain.
#[tokio::test]
async fn an_http2_reader_that_opens_its_window_slowly_is_never_cut() {
    let server = TestServer::start_with(|c| {
        c.stall_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(1);
    })
    .await;
    let lagged_before = metric(&server, "herald_streams_closed_total{reason=\"lagged\"}");
    let mut h2 = h2_client(server.addr, 256).await;
    let request = Request::get(format!("http://{}/topics/h2.slow/events", server.addr))
        .header(AUTHORIZATION, format!("Bearer {}", server.root_token()))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let mut body = within(WAIT, "the stream", response).await.unwrap().into_body();
    // About 2.5 KB of events, read 256 bytes every 300 ms: three stall
    // timeouts' worth of draining.
    let mut last = String::new();
    for n in 0..10 {
        last = server.publish_data("h2.slow", &format!("{n:0>150}")).await;
    }
    let mut seen = Vec::new();
    within(Duration::from_secs(30), "the slow reader to drain its backlog", async {
        while !contains(&seen, last.as_bytes()) {
            let data = body.data().await.expect("the stream stays open").expect("and is not reset");
            seen.extend_from_slice(&data);
            tokio::time::sleep(Duration::from_millis(300)).await;
            body.flow_control().release_capacity(data.len()).unwrap();
        }
    })
    .await;
    assert_eq!(metric(&server, "herald_streams_closed_total{reason=\"lagged\"}"), lagged_before);
}

/// An HTTP/1.1 reader that stops reading is cut once its stream's writes
/// make no progress for the stall timeout, and both its stream and its
/// connection count as lagged, whichever path writes the stream: the
/// hand-written one (a connection's first request) or hyper (a later one).
#[tokio::test]
async fn a_stalled_http1_stream_is_cut_and_counted_as_lagged_on_either_path() {
    let server = TestServer::start_with(|c| {
        c.stall_timeout = Duration::from_secs(1);
        c.heartbeat = Duration::from_millis(200);
    })
    .await;
    let token = server.root_token();
    // 8 MB: more than the kernel's largest socket buffers can hide.
    let batch: Vec<Value> = (0..4).map(|_| json!({"topic": "stall.h1", "data": "x".repeat(200_000)})).collect();
    let lagged =
        ["herald_streams_closed_total{reason=\"lagged\"}", "herald_connections_closed_total{reason=\"lagged\"}"];
    for (path, first) in [("hand-written", None), ("hyper", Some("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))] {
        let before = lagged.map(|series| metric(&server, series));
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut reader = socket.connect(server.addr).await.unwrap();
        if let Some(request) = first {
            reader.write_all(request.as_bytes()).await.unwrap();
            read_until(&mut reader, b"\"ok\"").await;
        }
        let open = format!("GET /topics/stall.h1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n");
        reader.write_all(open.as_bytes()).await.unwrap();
        read_until(&mut reader, b"herald stream open").await;
        for _ in 0..10 {
            let response =
                server.client.post(server.url("/publish")).bearer_auth(&token).json(&batch).send().await.unwrap();
            assert_eq!(response.status(), reqwest::StatusCode::CREATED);
        }
        // The stream, then its connection: each counted once.
        for (series, before) in lagged.into_iter().zip(before) {
            within(WAIT, &format!("{series} to count the {path} stream"), async {
                while metric(&server, series) == before {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
            .await;
            assert_eq!(metric(&server, series), before + 1.0, "{path}: {series}");
        }
    }
}

// ------------------------------------------------------- time arithmetic

#[tokio::test]
async fn a_token_whose_exp_is_the_largest_number_streams_without_panicking() {
    let server = TestServer::start().await;
    let token = sign_hs256(&claims(json!({ "exp": u64::MAX })), SECRET);
    let mut stream = Sse::open(server.client.get(server.url("/topics/forever/events")).bearer_auth(&token)).await;
    let id = server.publish_data("forever", "hello").await;
    assert_eq!(stream.next().await.id, id);
    // The dashboard's streams end at the operator's `exp` too.
    let admin = sign_hs256(&claims(json!({ "exp": u64::MAX, "herald": { "admin": true } })), SECRET);
    let mut live = Sse::open(server.client.get(server.url("/admin/live")).bearer_auth(&admin)).await;
    assert_eq!(live.next().await.event, "history");
    let mut tail = Sse::open(server.client.get(server.url("/admin/topics/forever/tail")).bearer_auth(&admin)).await;
    let id = server.publish_data("forever", "again").await;
    assert_eq!(tail.next().await.id, id);
    server.assert_still_serving().await;
}

#[tokio::test]
async fn the_largest_durations_in_every_setting_do_not_panic() {
    let server = TestServer::start_with(|c| {
        c.heartbeat = Duration::MAX;
        c.stream_max_duration = Some(Duration::MAX);
        c.header_timeout = Duration::MAX;
        c.body_timeout = Duration::MAX;
        c.idle_timeout = Duration::MAX;
        c.stall_timeout = Duration::MAX;
    })
    .await;
    let token = sign_hs256(&claims(json!({ "exp": u64::MAX })), SECRET);
    // Over HTTP/1.1, served directly, and over HTTP/2, by hyper.
    let mut direct = Sse::open(server.client.get(server.url("/topics/huge/events")).bearer_auth(&token)).await;
    let mut h2 = h2_client(server.addr, 65_535).await;
    let request = Request::get(format!("http://{}/topics/huge/events", server.addr))
        .header(AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (response, _) = h2.send_request(request, true).unwrap();
    let mut over_h2 = within(WAIT, "the HTTP/2 stream", response).await.unwrap().into_body();
    let id = server.publish_data("huge", "hello").await;
    assert_eq!(direct.next().await.id, id);
    let mut seen = Vec::new();
    within(WAIT, "the event over HTTP/2", async {
        while !contains(&seen, id.as_bytes()) {
            let data = over_h2.data().await.expect("the stream is open").expect("and healthy");
            over_h2.flow_control().release_capacity(data.len()).unwrap();
            seen.extend_from_slice(&data);
        }
    })
    .await;
    server.assert_still_serving().await;
}

// ----------------------------------------------------------------- helpers

/// An HTTP/2 client (prior knowledge) whose streams have `window` bytes of
/// flow-control window; its connection is driven by a task of its own.
async fn h2_client(addr: SocketAddr, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (client, connection) =
        within(WAIT, "the HTTP/2 handshake", h2::client::Builder::new().initial_window_size(window).handshake(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);
    within(WAIT, "the HTTP/2 connection to be ready", client.ready()).await.unwrap()
}

/// The rest of an HTTP/2 body, releasing its window as it goes.
async fn h2_read_to_end(mut body: h2::RecvStream) -> Vec<u8> {
    let mut out = Vec::new();
    within(WAIT, "an HTTP/2 body", async {
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            body.flow_control().release_capacity(data.len()).unwrap();
            out.extend_from_slice(&data);
        }
    })
    .await;
    out
}

/// The value of `series` in the server's metrics; 0 before it is first counted.
fn metric(server: &TestServer, series: &str) -> f64 {
    let text = herald_server::metrics::render(&server.state);
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}
