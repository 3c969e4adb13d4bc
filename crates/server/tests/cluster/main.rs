//! Several real `herald` processes sharing topics through a real
//! `redis-server` that the tests start (and kill, restart, cut off): the
//! promises of one node, kept across nodes and through Redis's failures.
//! Streams are read with the independent `eventsource-stream` crate.

#[path = "../common/mod.rs"]
mod common;

mod conformance;
mod fanout;
mod outages;

use std::time::Duration;

use common::{
    Herald, WAIT,
    redis::{Persistence, RedisServer},
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

/// A Redis, its temp dir, and `n` nodes on it with a prefix of their own.
struct Cluster {
    redis: RedisServer,
    nodes: Vec<Herald>,
    prefix: String,
    _dir: tempfile::TempDir,
}

impl Cluster {
    fn start(n: usize, persistence: Persistence, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let redis = RedisServer::start(dir.path(), persistence);
        let prefix = format!("t{:08x}", rand_u32());
        let nodes = (0..n).map(|_| node(dir.path(), &redis.url(), &prefix, extra)).collect();
        Self { redis, nodes, prefix, _dir: dir }
    }
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher as _, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

/// Publishes `data` to `topic` on `node`; the answer's status and JSON.
async fn publish(node: &Herald, topic: &str, data: &str, key: Option<&str>) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let mut request = client
        .post(node.url(&format!("/topics/{topic}/events")))
        .bearer_auth(token())
        .header("content-type", "text/plain")
        .body(data.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    let response = within(WAIT, "a publish", request.send()).await.expect("publish request");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

/// Opens a stream of `path` on `node`, resuming after `last_id` if given.
async fn subscribe(node: &Herald, path: &str, last_id: Option<&str>) -> impl Stream<Item = Event> + Unpin {
    let client = reqwest::Client::new();
    let mut request = client.get(node.url(path)).bearer_auth(token());
    if let Some(id) = last_id {
        request = request.header("last-event-id", id);
    }
    let response = within(WAIT, "a stream to open", request.send()).await.expect("subscribe");
    assert_eq!(response.status(), StatusCode::OK, "subscribe {path}");
    Box::pin(response.bytes_stream().eventsource().map(|e| e.expect("a well-formed stream")))
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
