//! Helpers of the integration tests: a real server on a real socket
//! ([`TestServer`]), an SSE reader built on the independent
//! `eventsource-stream` crate ([`Sse`]), raw TCP clients, token crafting and
//! the `herald` binary as a subprocess ([`Herald`], in `herald.rs`).
//!
//! Every wait here is bounded, so a bug fails a test instead of hanging it.

#![allow(dead_code)]

pub mod certs;
mod herald;
pub mod pebble;
pub mod redis;

// Each test binary uses a part of these.
#[allow(unused_imports)]
pub use herald::{Herald, herald_command, token, token_with};

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use eventsource_stream::{Event, EventStreamError, Eventsource as _};
use futures::{Stream, StreamExt as _};
use herald_core::{Hub, MemoryStore};
use herald_server::{AppState, Config, auth::Verifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::{RequestBuilder, Response, StatusCode, header};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};

/// The HMAC secret of every in-process test server.
pub const SECRET: &str = "integration-test-secret-0123456789abcdef";

/// The longest any single wait in a test may take before it fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `future` for at most `limit`, failing the test with `what` after.
pub async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// Reads an HTTP/2 stream whose window is never opened again until the
/// server cuts it (the stall guard), within [`WAIT`]: the reset, or `None`
/// if it ended as if complete.
pub async fn h2_until_cut(body: &mut h2::RecvStream) -> Option<h2::Error> {
    within(WAIT, "the stream with a shut window to be cut", async {
        loop {
            match body.data().await {
                Some(Ok(_)) => {}
                Some(Err(error)) => return Some(error),
                None => return None,
            }
        }
    })
    .await
}

/// A test configuration: the defaults of `Config::for_tests`, with short
/// timeouts so that a shutdown never waits long.
pub fn test_config() -> Config {
    let mut config = Config::for_tests(SECRET);
    config.shutdown_grace = Duration::from_secs(2);
    config
}

/// A herald server running in this process on 127.0.0.1 and a port of its own.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its state (hub, config, limits), to look inside.
    pub state: AppState,
    /// An HTTP client for it.
    pub client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// A server with the test configuration.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A server with the test configuration as changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let mut config = test_config();
        adjust(&mut config);
        let verifier = Verifier::new(&config, None).expect("verifier");
        Self::start_config(config, verifier).await
    }

    /// A server with `config` and `verifier` exactly.
    pub async fn start_config(config: Config, verifier: Verifier) -> Self {
        let store = Arc::new(MemoryStore::new(config.retention));
        let hub = Hub::start(store, config.hub.clone()).await.expect("hub starts");
        let state = AppState::new(hub, config, verifier).with_mercure().expect("the Mercure door's keys");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (shutdown, signal) = oneshot::channel::<()>();
        let task = tokio::spawn(herald_server::serve(listener, state.clone(), async move {
            let _ = signal.await;
        }));
        Self { addr, state, client: client(), shutdown: Some(shutdown), task: Some(task) }
    }

    /// The URL of `path` (which starts with `/`) on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A token signed with the server's secret.
    pub fn token(&self, publish: &[&str], subscribe: &[&str], admin: bool, ttl: Duration) -> String {
        token_with("tester", publish, subscribe, admin, ttl)
    }

    /// A token that may publish and subscribe to everything for an hour.
    pub fn root_token(&self) -> String {
        self.token(&["*"], &["*"], false, Duration::from_secs(3600))
    }

    /// Publishes `body` (JSON) to `topic` and returns the new event's id.
    pub async fn publish(&self, topic: &str, body: Value) -> String {
        let response = self
            .client
            .post(self.url(&format!("/topics/{topic}/events")))
            .bearer_auth(self.root_token())
            .json(&body)
            .send()
            .await
            .expect("publish request");
        let status = response.status();
        let receipt: Value = response.json().await.expect("publish receipt is JSON");
        assert_eq!(status, StatusCode::CREATED, "publish to {topic}: {receipt}");
        assert_eq!(receipt["topic"], topic, "{receipt}");
        receipt["id"].as_str().expect("receipt has an id").to_owned()
    }

    /// Publishes `{"data": data}` to `topic`.
    pub async fn publish_data(&self, topic: &str, data: &str) -> String {
        self.publish(topic, json!({ "data": data })).await
    }

    /// Checks that the server still takes publishes (after a bad request).
    pub async fn assert_still_serving(&self) {
        let id = within(WAIT, "a publish after a bad request", self.publish_data("still.up", "yes")).await;
        assert!(!id.is_empty());
    }

    /// Opens an event stream at `path` with a token that may subscribe to
    /// everything, and waits for its first bytes.
    pub async fn subscribe(&self, path: &str) -> Sse {
        let token = self.root_token();
        Sse::open(self.client.get(self.url(path)).bearer_auth(token)).await
    }

    /// Triggers shutdown, waits for `serve` to return, then shuts the hub
    /// down (it flushes the store), as `herald` does.
    pub async fn shutdown(&mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        let task = self.task.take().expect("serve is running");
        let served = within(WAIT, "serve() to return after shutdown", task).await.expect("serve task panicked");
        within(WAIT, "the hub to shut down", self.state.hub.shutdown()).await;
        served
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A reqwest client that talks to loopback directly. No read waits longer
/// than [`WAIT`], so an unanswered request fails instead of hanging (an
/// open stream's reads are each bounded too; tests keep streams busy).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().connect_timeout(WAIT).read_timeout(WAIT).build().expect("reqwest client")
}

type EventResult = Result<Event, EventStreamError<reqwest::Error>>;

/// An open SSE stream, parsed by `eventsource-stream`.
pub struct Sse {
    /// The response's headers.
    pub headers: header::HeaderMap,
    /// The first bytes the server sent (the `retry:` line and the opening comment).
    pub opening: Bytes,
    events: Pin<Box<dyn Stream<Item = EventResult> + Send>>,
}

impl Sse {
    /// Sends `request`, expects 200, and waits for the stream's first bytes,
    /// so the subscription is in place once this returns.
    pub async fn open(request: RequestBuilder) -> Self {
        let response = within(WAIT, "the stream's response", request.send()).await.expect("stream request");
        Self::from_response(response).await
    }

    /// As [`Sse::open`], from a response already received.
    pub async fn from_response(response: Response) -> Self {
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.text().await.unwrap_or_default();
            panic!("stream answered {status}: {body}");
        }
        let headers = response.headers().clone();
        let mut bytes = response.bytes_stream();
        let opening = within(WAIT, "the stream's first bytes", bytes.next())
            .await
            .expect("the stream ended before its first bytes")
            .expect("the stream failed before its first bytes");
        let replay = futures::stream::iter([Ok::<_, reqwest::Error>(opening.clone())]);
        let events = replay.chain(bytes).eventsource().boxed();
        Self { headers, opening, events }
    }

    /// The next event, within [`WAIT`]; fails the test if the stream ends.
    pub async fn next(&mut self) -> Event {
        match within(WAIT, "the next event", self.events.next()).await {
            Some(Ok(event)) => event,
            Some(Err(error)) => panic!("the stream failed: {error}"),
            None => panic!("the stream ended while an event was expected"),
        }
    }

    /// The next `n` events' data.
    pub async fn next_data(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next().await.data);
        }
        out
    }

    /// Waits for the stream to end, cleanly (no error), within `limit`;
    /// returns the events that came before the end.
    pub async fn until_end(&mut self, limit: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        within(limit, "the stream to end", async {
            while let Some(item) = self.events.next().await {
                match item {
                    Ok(event) => events.push(event),
                    Err(error) => panic!("the stream ended with an error instead of cleanly: {error}"),
                }
            }
        })
        .await;
        events
    }
}

/// Asserts that `response` is the JSON error `{"error":{"code","message"}}`
/// with `status` and `code`, and returns its message.
pub async fn expect_error(response: Response, status: StatusCode, code: &str) -> String {
    let got = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = response.text().await.expect("error body");
    assert_eq!(got, status, "status (body: {text})");
    assert!(content_type.starts_with("application/json"), "content-type `{content_type}` (body: {text})");
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let error = body.get("error").and_then(Value::as_object).unwrap_or_else(|| panic!("no `error` object: {text}"));
    assert_eq!(body.as_object().map(serde_json::Map::len), Some(1), "only `error` at the top: {text}");
    assert_eq!(error.get("code").and_then(Value::as_str), Some(code), "error code: {text}");
    let message = error.get("message").and_then(Value::as_str).unwrap_or_default();
    assert!(!message.is_empty(), "the error has a message: {text}");
    assert_eq!(error.len(), 2, "error has code and message only: {text}");
    message.to_owned()
}

/// Asserts that `response` is a 401 for an invalid token: the JSON error and
/// `WWW-Authenticate: Bearer … error="invalid_token"`.
pub async fn expect_invalid_token(response: Response) -> String {
    let challenge =
        response.headers().get(header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(
        challenge.starts_with("Bearer") && challenge.contains("error=\"invalid_token\""),
        "WWW-Authenticate: `{challenge}`"
    );
    expect_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await
}

/// Sends `request` over a new TCP connection and reads until the server
/// closes it (within [`WAIT`]).
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    read_to_close(&mut stream, WAIT).await
}

/// Reads from `stream` until EOF or a reset, within `limit`.
pub async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    within(limit, "the server to close the connection", async {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    out
}

/// Reads from `stream` until what was read contains `needle`, within [`WAIT`].
pub async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    within(WAIT, "expected bytes on a raw connection", async {
        let mut buf = [0u8; 4096];
        while !contains(&out, needle) {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "connection closed before {:?}: {}", String::from_utf8_lossy(needle), show(&out));
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    out
}

/// Whether `haystack` contains `needle`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len().max(1)).any(|w| w == needle)
}

/// Bytes as text, for messages.
pub fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Unpadded base64url, as JWTs use.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    herald_server::auth::now_secs()
}

/// Claims that may publish and subscribe to everything for an hour, with
/// `extra` fields merged in (or overriding).
pub fn claims(extra: Value) -> Value {
    let mut claims = json!({
        "sub": "crafted",
        "exp": now() + 3600,
        "herald": { "publish": ["*"], "subscribe": ["*"] },
    });
    if let (Some(base), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            base.insert(key.clone(), value.clone());
        }
    }
    claims
}

/// Signs `claims` with `alg` and `key`.
pub fn sign(claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).expect("sign")
}

/// Signs `claims` with HS256 and `secret`.
pub fn sign_hs256(claims: &Value, secret: &str) -> String {
    sign(claims, Algorithm::HS256, &EncodingKey::from_secret(secret.as_bytes()))
}

/// A test key file under `tests/keys/`.
pub fn key_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys").join(name)
}

/// A test key's PEM bytes.
pub fn key_pem(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap_or_else(|e| panic!("read key {name}: {e}"))
}
