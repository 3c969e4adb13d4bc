//! Several real `herald` processes sharing topics through a real
//! `redis-server` that the tests start (and kill, restart, cut off): the
//! promises of one node, kept across nodes and through Redis's failures.
//! Streams are read with the independent `eventsource-stream` crate.

#[path = "../common/mod.rs"]
mod common;

mod conformance;
mod fanout;
mod outages;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{
    Herald, WAIT,
    redis::{CutProxy, Persistence, RedisServer},
    token, within,
};
use eventsource_stream::{Event, Eventsource as _};
use futures::{Stream, StreamExt as _};
use reqwest::StatusCode;
use serde_json::Value;

/// A node on `redis_url` with key prefix `prefix`, short heartbeats and
/// timeouts, and the `extra` flags.
fn node(dir: &std::path::Path, redis_url: &str, prefix: &str, extra: &[&str]) -> Herald {
    let mut args = vec![
        "--store",
        redis_url,
        "--redis-prefix",
        prefix,
        "--heartbeat",
        "200ms",
        "--retry",
        "100ms",
        "--redis-timeout",
        "500ms",
    ];
    args.extend_from_slice(extra);
    Herald::start(dir, &args)
}

/// A Redis store's settings for store-level tests: `url`, key `prefix`,
/// `retention`, 5 s timeouts, no durable restarts.
fn store_settings(
    url: String,
    prefix: String,
    retention: herald_core::Retention,
) -> herald_server::store::RedisSettings {
    herald_server::store::RedisSettings {
        url,
        prefix,
        timeout: Duration::from_secs(5),
        feed_max_lag: Duration::from_secs(5),
        durable_restarts: false,
        retention,
    }
}

/// A Redis, its temp dir, and `n` nodes on it with a prefix of their own.
struct Cluster {
    redis: RedisServer,
    nodes: Vec<Herald>,
    prefix: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start(n: usize, persistence: Persistence, extra: &[&str]) -> Self {
        Self::start_with(n, persistence, &[], extra)
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

impl Cluster {
    /// As [`Cluster::start`], Redis getting the `redis_extra` settings.
    fn start_with(n: usize, persistence: Persistence, redis_extra: &[&str], extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let redis = RedisServer::start_with(dir.path(), persistence, redis_extra);
        let prefix = format!("t{:08x}", rand_u32());
        let nodes = (0..n).map(|_| node(dir.path(), &redis.url(), &prefix, extra)).collect();
        Self { redis, nodes, prefix, dir }
    }

    /// Two nodes on a durable Redis: node 0 reaches it directly, node 1
    /// through a proxy that can cut it off.
    async fn with_node_behind_a_proxy() -> (Self, CutProxy) {
        let mut cluster = Self::start(1, Persistence::Always, &[]);
        let proxy = CutProxy::start(format!("127.0.0.1:{}", cluster.redis.port).parse().expect("addr")).await;
        cluster.add_node(&proxy.url(), &[]);
        (cluster, proxy)
    }

    /// One more node on `redis_url` (a proxy to this cluster's Redis, say),
    /// sharing the cluster's topics.
    fn add_node(&mut self, redis_url: &str, extra: &[&str]) -> &Herald {
        let node = node(self.dir.path(), redis_url, &self.prefix, extra);
        self.nodes.push(node);
        self.nodes.last().expect("the node just added")
    }
}

/// A publish's answer: status, JSON body and the headers tests look at.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
    replayed: bool,
    retry_after: Option<String>,
}

impl Answer {
    /// The id of a 201, failing the test otherwise.
    fn id(&self) -> String {
        assert_eq!(self.status, StatusCode::CREATED, "{}", self.body);
        self.body["id"].as_str().expect("an id").to_owned()
    }

    /// The error code of a failure.
    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

/// Publishes `data` to `topic` on `node`; the answer's status and JSON.
async fn publish(node: &Herald, topic: &str, data: &str, key: Option<&str>) -> (StatusCode, Value) {
    let answer = try_publish(node, topic, data, key).await.expect("publish request");
    (answer.status, answer.body)
}

/// Publishes `data` to `topic` on `node`, or the transport's error (a node
/// that is gone).
async fn try_publish(node: &Herald, topic: &str, data: &str, key: Option<&str>) -> reqwest::Result<Answer> {
    let mut request = common::client()
        .post(node.url(&format!("/topics/{topic}/events")))
        .bearer_auth(token())
        .header("content-type", "text/plain")
        .body(data.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    answer(within(WAIT, "a publish", request.send()).await?).await
}

/// Publishes each `(topic, data)` of `items` in one `POST /publish`; their ids.
async fn publish_batch(node: &Herald, items: &[(&str, String)]) -> Vec<String> {
    let body: Vec<Value> =
        items.iter().map(|(topic, data)| serde_json::json!({"topic": topic, "data": data})).collect();
    let request = common::client().post(node.url("/publish")).bearer_auth(token()).json(&body);
    let response = within(WAIT, "a batch publish", request.send()).await.expect("batch request");
    let answer = answer(response).await.expect("batch answer");
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.body);
    let receipts = answer.body.as_array().expect("one receipt per event");
    assert_eq!(receipts.len(), items.len());
    receipts.iter().map(|r| r["id"].as_str().expect("an id").to_owned()).collect()
}

async fn answer(response: reqwest::Response) -> reqwest::Result<Answer> {
    let status = response.status();
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let replayed = header("idempotent-replayed").as_deref() == Some("true");
    let retry_after = header("retry-after");
    let text = response.text().await?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { status, body, replayed, retry_after })
}

/// Publishes until `node` answers 201 (Redis coming back), every attempt of
/// the one event under the same idempotency key, within [`WAIT`]; its id.
/// Attempts refused meanwhile must say so truthfully (checked by the caller
/// through the stream: one event per key).
async fn publish_when_back(node: &Herald, topic: &str, data: &str, key: &str) -> String {
    within(WAIT, "publishes to be taken again", async {
        loop {
            if let Ok(answer) = try_publish(node, topic, data, Some(key)).await {
                if answer.status == StatusCode::CREATED {
                    return answer.id();
                }
                assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{}", answer.body);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// `GET path` on `node`: its status and JSON.
async fn get(node: &Herald, path: &str) -> (StatusCode, Value) {
    let request = common::client().get(node.url(path)).bearer_auth(token());
    let response = within(WAIT, "a GET", request.send()).await.expect("GET");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Polls `GET path` on `node` until it answers `status`, within [`WAIT`].
async fn until_status(node: &Herald, path: &str, status: StatusCode) {
    within(WAIT, &format!("{path} to answer {status}"), async {
        while get(node, path).await.0 != status {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// How many events `node`'s store retains of `topic`.
async fn retained(node: &Herald, topic: &str) -> u64 {
    let (status, body) = get(node, &format!("/topics/{topic}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["retained"].as_u64().unwrap_or_else(|| panic!("no retained count: {body}"))
}

/// The sum of the samples of `name` (a metric, or a metric with labels) on
/// `node`'s `/metrics`.
async fn metric(node: &Herald, name: &str) -> f64 {
    let (status, text) = get(node, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let text = text.as_str().unwrap_or_default().to_owned();
    text.lines()
        .filter(|line| line.starts_with(name) && line[name.len()..].starts_with([' ', '{']))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// An open stream: its events, parsed by `eventsource-stream`, and a count
/// of the comment lines (heartbeats) that arrived, read by a task of its own
/// so they are counted while the test does not read events.
struct Sub {
    events: std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>,
    comments: Arc<AtomicUsize>,
    reader: tokio::task::JoinHandle<()>,
}

impl Sub {
    /// Comment lines received so far.
    fn comments(&self) -> usize {
        self.comments.load(Ordering::SeqCst)
    }
}

impl Stream for Sub {
    type Item = Event;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.events.as_mut().poll_next(cx)
    }
}

impl Drop for Sub {
    /// Closes the connection.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Opens a stream of `path` on `node`, resuming after `last_id` if given.
async fn subscribe(node: &Herald, path: &str, last_id: Option<&str>) -> Sub {
    let client = reqwest::Client::builder().no_proxy().build().expect("client");
    let mut request = client.get(node.url(path)).bearer_auth(token());
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = within(WAIT, "a stream to open", request.send()).await.expect("subscribe");
    assert_eq!(response.status(), StatusCode::OK, "subscribe {path}");
    let comments = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&comments);
    let (tx, rx) = futures::channel::mpsc::unbounded::<reqwest::Result<bytes::Bytes>>();
    let reader = tokio::spawn(async move {
        let mut bytes = response.bytes_stream();
        // A line that starts with `:` is a comment: no field name does.
        let mut line_start = true;
        while let Some(chunk) = bytes.next().await {
            if let Ok(chunk) = &chunk {
                for &byte in chunk.iter() {
                    if line_start && byte == b':' {
                        counter.fetch_add(1, Ordering::SeqCst);
                    }
                    line_start = byte == b'\n';
                }
            }
            if tx.unbounded_send(chunk).is_err() {
                return;
            }
        }
    });
    let events = Box::pin(rx.eventsource().map(|e| e.expect("a well-formed stream")));
    Sub { events, comments, reader }
}

/// The next `n` events (heartbeat comments are not events), within `limit`.
async fn take(stream: &mut (impl Stream<Item = Event> + Unpin), n: usize, limit: Duration) -> Vec<Event> {
    within(limit, &format!("{n} events"), async {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(stream.next().await.expect("the stream ended"));
        }
        out
    })
    .await
}

/// The ids of `events`, which must all be plain events (no `herald.gap`).
fn plain_ids(events: &[Event]) -> Vec<String> {
    for event in events {
        assert_eq!(event.event, "message", "an event, not a notice: {} {}", event.event, event.data);
    }
    events.iter().map(|e| e.id.clone()).collect()
}

/// Publishes one more event to `topic` on `node` and checks that it is the
/// very next thing `stream` delivers: nothing repeated, nothing extra. Its id.
async fn next_is_fresh(stream: &mut Sub, node: &Herald, topic: &str) -> String {
    let (status, body) = publish(node, topic, "sentinel", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let next = take(stream, 1, WAIT).await;
    let id = body["id"].as_str().expect("an id").to_owned();
    assert_eq!(plain_ids(&next), [id.as_str()], "nothing before the next event");
    id
}

/// The epoch part of an id (`EEEEEEEE-SSSS…`).
fn epoch_of(id: &str) -> &str {
    id.split('-').next().unwrap_or_default()
}

/// The id before every event of `id`'s epoch: a resume from it replays all.
fn epoch_start(id: &str) -> String {
    format!("{}-{:016x}", epoch_of(id), 0)
}

/// A `herald.gap` notice's data.
fn gap(event: &Event) -> Value {
    assert_eq!(event.event, "herald.gap", "a gap notice, not {}: {}", event.event, event.data);
    serde_json::from_str(&event.data).expect("a gap notice's data is JSON")
}
