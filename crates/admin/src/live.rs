//! The dashboard's live feed: a sampler takes a snapshot of the hub every
//! half second, keeps fifteen minutes of samples for the charts, and the
//! dashboard follows it over its own SSE stream (`/admin/live`), encoded by
//! the hub's own SSE encoder.

use std::{
    collections::{HashMap, VecDeque},
    convert::Infallible,
    sync::Arc,
    time::Duration,
};

use axum::{
    body::Body,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use herald_core::{ConnectionSnapshot, now_ms, sse};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::{
    Admin, AdminSource,
    auth::Operator,
    exposition::{buckets, parse_exposition, quantile},
};

/// How often the sampler looks.
const INTERVAL: Duration = Duration::from_millis(500);
/// Fifteen minutes of samples.
const HISTORY: usize = 1800;
/// Percentiles span this many samples (five seconds).
const LATENCY_WINDOW: usize = 10;
/// At most this many topics and connections in one update.
const LIST_LIMIT: usize = 500;

/// The hub at one moment.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// When (ms since the Unix epoch).
    pub t: u64,
    /// Open event streams.
    pub streams: usize,
    /// Open TCP connections.
    pub connections: usize,
    /// Topics in memory.
    pub topics: usize,
    /// Events published per second (since the last sample).
    pub publish_rate: f64,
    /// Events delivered per second.
    pub delivery_rate: f64,
    /// Median delivery latency over the last five seconds, in ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile delivery latency, in ms.
    pub p99_ms: Option<f64>,
    /// Whether the store took the last commit.
    pub store_healthy: bool,
    /// Events published since start.
    pub published: u64,
    /// Events delivered since start.
    pub delivered: u64,
}

/// A topic's row on the overview.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TopicRow {
    pub(crate) name: String,
    pub(crate) subscribers: usize,
    pub(crate) buffered: usize,
    pub(crate) last_event_ms: Option<u64>,
    pub(crate) publish_rate: f64,
}

/// What one live update carries.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) sample: Sample,
    pub(crate) topics: Vec<TopicRow>,
    pub(crate) connections: Vec<ConnectionSnapshot>,
}

/// The sampler's output, shared with the pages.
pub(crate) struct Live {
    history: Mutex<VecDeque<Sample>>,
    latest: watch::Sender<Arc<Snapshot>>,
}

impl Live {
    pub(crate) fn start(source: Arc<dyn AdminSource>) -> Arc<Self> {
        let live = Arc::new(Self { history: Mutex::default(), latest: watch::Sender::new(Arc::default()) });
        let sampler = Arc::clone(&live);
        let shutdown = source.shutdown();
        tokio::spawn(async move {
            let mut state = SamplerState::default();
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let snapshot = state.take(source.as_ref());
                {
                    let mut history = sampler.history.lock();
                    if history.len() == HISTORY {
                        history.pop_front();
                    }
                    history.push_back(snapshot.sample.clone());
                }
                sampler.latest.send_replace(Arc::new(snapshot));
            }
        });
        live
    }

    /// The newest snapshot.
    pub(crate) fn latest(&self) -> Arc<Snapshot> {
        self.latest.borrow().clone()
    }

    fn history(&self) -> Vec<Sample> {
        self.history.lock().iter().cloned().collect()
    }
}

#[derive(Default)]
struct SamplerState {
    last: Option<Sample>,
    topic_published: HashMap<String, u64>,
    latency: VecDeque<Vec<(f64, f64)>>,
}

impl SamplerState {
    fn take(&mut self, source: &dyn AdminSource) -> Snapshot {
        let hub = source.hub();
        let stats = hub.stats();
        let now = now_ms();
        let connections = source.connections();
        let rows = parse_exposition(&source.metrics_text());
        self.latency.push_back(buckets(&rows, "herald_delivery_latency_seconds"));
        if self.latency.len() > LATENCY_WINDOW {
            self.latency.pop_front();
        }
        let oldest = self.latency.front().cloned().unwrap_or_default();
        let newest = self.latency.back().cloned().unwrap_or_default();
        let elapsed = self.last.as_ref().map_or(0.0, |l| now.saturating_sub(l.t) as f64 / 1000.0);
        let rate = |now_total: u64, then: Option<u64>| match then {
            Some(then) if elapsed > 0.0 => now_total.saturating_sub(then) as f64 / elapsed,
            _ => 0.0,
        };
        let sample = Sample {
            t: now,
            streams: connections.len(),
            connections: source.tcp_connections(),
            topics: stats.topics,
            publish_rate: rate(stats.published, self.last.as_ref().map(|l| l.published)),
            delivery_rate: rate(stats.delivered, self.last.as_ref().map(|l| l.delivered)),
            p50_ms: quantile(&oldest, &newest, 0.5).map(|s| s * 1000.0),
            p99_ms: quantile(&oldest, &newest, 0.99).map(|s| s * 1000.0),
            store_healthy: hub.store_healthy(),
            published: stats.published,
            delivered: stats.delivered,
        };
        let mut topics: Vec<TopicRow> = hub
            .all_topic_stats()
            .into_iter()
            .map(|t| {
                let name = t.name.to_string();
                let before = self.topic_published.insert(name.clone(), t.published);
                TopicRow {
                    publish_rate: rate(t.published, before),
                    name,
                    subscribers: t.subscribers,
                    buffered: t.buffered,
                    last_event_ms: t.last_event_ms,
                }
            })
            .collect();
        self.topic_published.retain(|name, _| topics.iter().any(|t| &t.name == name));
        topics.sort_by(|a, b| b.subscribers.cmp(&a.subscribers).then_with(|| a.name.cmp(&b.name)));
        topics.truncate(LIST_LIMIT);
        let mut connections = connections;
        connections.truncate(LIST_LIMIT);
        self.last = Some(sample.clone());
        Snapshot { sample, topics, connections }
    }
}

/// `GET /admin/live`: the history once, then a snapshot every half second.
pub(crate) async fn stream(State(admin): State<Admin>, _operator: Operator) -> Response {
    let history = serde_json::to_string(&admin.live.history()).unwrap_or_else(|_| "[]".into());
    let first = sse::event_frame(None, Some("history"), &history, None);
    let updates = admin.live.latest.subscribe();
    let shutdown = admin.source.shutdown();
    let state = (Some(first), updates, shutdown);
    let body = futures_util::stream::unfold(state, |(first, mut updates, shutdown)| async move {
        if let Some(first) = first {
            return Some((Ok::<_, Infallible>(first), (None, updates, shutdown)));
        }
        tokio::select! {
            () = shutdown.cancelled() => None,
            changed = updates.changed() => {
                changed.ok()?;
                let snapshot = updates.borrow_and_update().clone();
                let data = serde_json::to_string(&*snapshot).ok()?;
                Some((Ok(sse::event_frame(None, Some("snapshot"), &data, None)), (None, updates, shutdown)))
            }
        }
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
