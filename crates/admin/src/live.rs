//! The dashboard's live feed: a sampler takes a snapshot of the hub every
//! half second, keeps fifteen minutes of samples for the charts, and the
//! dashboard follows it over its own SSE stream (`/admin/live`), encoded by
//! the hub's own SSE encoder. Rates span the last five seconds of samples,
//! so a steady trickle reads steady; lists hold at most `--dashboard-rows`
//! rows and carry the true totals beside them.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::Arc,
    time::Duration,
};

use axum::{extract::State, response::Response};
use herald_core::{ConnectionSnapshot, Hub, TopicName, TopicStats, now_ms, sse};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::watch;

use crate::{
    Admin, AdminSource,
    auth::Operator,
    quantile::quantile,
    session::{self, Session},
};

/// How often the sampler looks.
const INTERVAL: Duration = Duration::from_millis(500);
/// Fifteen minutes of samples.
const HISTORY: usize = 1800;
/// Percentiles and rates span this many sampling intervals (five seconds).
const WINDOW: usize = 10;
/// The store's topics are read every this many samples (five seconds): a
/// read costs the store a query per topic, the registry costs nothing.
const STORED_EVERY: usize = 10;
/// Most of the store's topics read for the lists.
const STORED_TOPICS: usize = 10_000;

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
    /// Events published per second, over the last five seconds.
    pub publish_rate: f64,
    /// Events delivered per second, over the last five seconds.
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
    /// Events the store retains (as of its last read).
    pub(crate) retained: u64,
    /// Events in its ring, in memory.
    pub(crate) buffered: usize,
    pub(crate) last_event_ms: Option<u64>,
    pub(crate) publish_rate: f64,
}

/// What one live update carries.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Snapshot {
    pub(crate) sample: Sample,
    /// The busiest topics, at most `--dashboard-rows`.
    pub(crate) topics: Vec<TopicRow>,
    /// How many topics there are in all.
    pub(crate) topics_total: usize,
    /// The oldest open streams, at most `--dashboard-rows`; `sample.streams`
    /// counts them all.
    pub(crate) connections: Vec<ConnectionSnapshot>,
}

/// The sampler's output, shared with the pages.
pub(crate) struct Live {
    history: Mutex<VecDeque<Sample>>,
    latest: watch::Sender<Arc<Snapshot>>,
}

impl Live {
    pub(crate) fn start(source: Arc<dyn AdminSource>, rows: usize) -> Arc<Self> {
        let live = Arc::new(Self { history: Mutex::default(), latest: watch::Sender::new(Arc::default()) });
        let sampler = Arc::clone(&live);
        let shutdown = source.shutdown();
        source.tasks().spawn(async move {
            let mut state = SamplerState { rows, ..SamplerState::default() };
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for taken in 0usize.. {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if taken % STORED_EVERY == 0 {
                    state.read_store(source.hub()).await;
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
    /// Rows per list.
    rows: usize,
    /// When the last `WINDOW + 1` samples were taken, oldest first.
    times: VecDeque<u64>,
    /// Hub-wide published and delivered totals at those times.
    totals: VecDeque<(u64, u64)>,
    /// Each topic's published total at those times (the newest ones only,
    /// for a topic seen in fewer samples).
    topic_published: HashMap<String, VecDeque<u64>>,
    /// The delivery latency histogram's cumulative buckets at those times.
    latency: VecDeque<Vec<(f64, u64)>>,
    /// The topics the store held at its last read, with their figures.
    stored: HashMap<TopicName, TopicStats>,
}

/// Keeps the newest `WINDOW + 1` values of `values`, with `value` last.
fn push_windowed<T>(values: &mut VecDeque<T>, value: T) {
    values.push_back(value);
    while values.len() > WINDOW + 1 {
        values.pop_front();
    }
}

impl SamplerState {
    /// Reads the store's topics, which stay listed after they leave memory.
    async fn read_store(&mut self, hub: &Hub) {
        match hub.topic_list(None, STORED_TOPICS).await {
            Ok(stored) => self.stored = stored.into_iter().map(|t| (t.name.clone(), t)).collect(),
            Err(error) => tracing::debug!(%error, "dashboard: the store's topics could not be read"),
        }
    }

    /// Per second over the window: between the oldest of `values` and the
    /// newest, whose times are the newest of `self.times`. Spread over the
    /// whole window at least, so a topic seen for one interval does not read
    /// as a burst.
    fn rate(&self, values: &VecDeque<u64>) -> f64 {
        let (Some(first), Some(last)) = (values.front(), values.back()) else { return 0.0 };
        let Some(since) = self.times.len().checked_sub(values.len()).and_then(|at| self.times.get(at)) else {
            return 0.0;
        };
        let elapsed = self.times.back().map_or(0, |now| now.saturating_sub(*since)) as f64 / 1000.0;
        let window = INTERVAL.as_secs_f64() * WINDOW as f64;
        last.saturating_sub(*first) as f64 / elapsed.max(window)
    }

    fn take(&mut self, source: &dyn AdminSource) -> Snapshot {
        let hub = source.hub();
        let stats = hub.stats();
        let now = now_ms();
        let (streams, connections) = source.oldest_connections(self.rows);
        push_windowed(&mut self.latency, source.delivery_latency());
        let oldest = self.latency.front().cloned().unwrap_or_default();
        let newest = self.latency.back().cloned().unwrap_or_default();
        push_windowed(&mut self.times, now);
        push_windowed(&mut self.totals, (stats.published, stats.delivered));
        let published = self.totals.iter().map(|t| t.0).collect();
        let delivered = self.totals.iter().map(|t| t.1).collect();
        let sample = Sample {
            t: now,
            streams,
            connections: source.tcp_connections(),
            topics: stats.topics,
            publish_rate: self.rate(&published),
            delivery_rate: self.rate(&delivered),
            p50_ms: quantile(&oldest, &newest, 0.5).map(|s| s * 1000.0),
            p99_ms: quantile(&oldest, &newest, 0.99).map(|s| s * 1000.0),
            store_healthy: hub.store_healthy(),
            published: stats.published,
            delivered: stats.delivered,
        };
        let mut seen = HashMap::with_capacity(self.topic_published.len());
        let live = hub.all_topic_stats();
        let mut topics: Vec<TopicRow> = live
            .iter()
            .map(|t| {
                let name = t.name.to_string();
                let mut history = self.topic_published.remove(&name).unwrap_or_default();
                push_windowed(&mut history, t.published);
                let stored = self.stored.get(&t.name);
                let row = TopicRow {
                    publish_rate: self.rate(&history),
                    name: name.clone(),
                    subscribers: t.subscribers,
                    retained: stored.map_or(0, |s| s.retained),
                    buffered: t.buffered,
                    last_event_ms: t.last_event_ms.max(stored.and_then(|s| s.last_event_ms)),
                };
                seen.insert(name, history);
                row
            })
            .collect();
        // Topics out of memory are listed as the store last saw them.
        let in_memory: HashSet<&TopicName> = live.iter().map(|t| &t.name).collect();
        topics.extend(self.stored.values().filter(|s| !in_memory.contains(&s.name)).map(|s| TopicRow {
            name: s.name.to_string(),
            subscribers: 0,
            retained: s.retained,
            buffered: 0,
            last_event_ms: s.last_event_ms,
            publish_rate: 0.0,
        }));
        // Rates of topics that left the registry are forgotten.
        self.topic_published = seen;
        let topics_total = topics.len();
        topics.sort_by(|a, b| b.subscribers.cmp(&a.subscribers).then_with(|| a.name.cmp(&b.name)));
        topics.truncate(self.rows);
        Snapshot { sample, topics, topics_total, connections }
    }
}

/// `GET /admin/live`: the history once, then a snapshot every half second,
/// until the operator's token expires.
pub(crate) async fn stream(State(admin): State<Admin>, Operator(grants): Operator) -> Response {
    let history = serde_json::to_string(&admin.live.history()).unwrap_or_else(|_| "[]".into());
    let first = sse::event_frame(None, Some("history"), &history, None);
    let updates = admin.live.latest.subscribe();
    let snapshots = futures_util::stream::unfold(updates, |mut updates| async move {
        updates.changed().await.ok()?;
        let snapshot = updates.borrow_and_update().clone();
        let data = serde_json::to_string(&*snapshot).ok()?;
        Some((sse::event_frame(None, Some("snapshot"), &data, None), updates))
    });
    let frames = futures_util::StreamExt::chain(futures_util::stream::iter([first]), snapshots);
    let session = Session::new(&grants, admin.source.shutdown(), admin.options.heartbeat);
    session::respond(Box::pin(frames), session)
}
