//! Prometheus metrics: one process-wide recorder for counters and gauges,
//! every metric described (HELP and unit), histograms with explicit buckets,
//! and no label with unbounded values (no per-topic label; per-topic detail
//! is the dashboard's).
//!
//! Histograms are not the recorder's: each is an atomic-bucket
//! [`Histogram`] here, recorded once, written into the exposition at render
//! and read as it is by the dashboard (its latency percentiles). They keep
//! no samples, so nothing needs a render on a timer to stay bounded.

mod histogram;

use std::{
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use herald_core::{CommitObserver, Hub};
use metrics::{Counter, Gauge, Unit, describe_counter, describe_gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

pub(crate) use self::histogram::Histogram;
use crate::{config::StoreKind, process_stats::ProcessStats, state::AppState, store::DATABASE_FILE};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

/// Handles of the metrics the hot paths touch on every publish, commit or
/// write, looked up once rather than by name each time. Events published and
/// delivered are not here: the hub counts them, and [`render`] reads them.
pub(crate) struct HotPath {
    pub(crate) streams_open: Gauge,
    pub(crate) stream_bytes: Counter,
    pub(crate) replayed_events: Counter,
    pub(crate) delivery_latency: Histogram,
    pub(crate) publish_latency: Histogram,
    pub(crate) commit_seconds: Histogram,
    pub(crate) commit_events: Histogram,
}

impl HotPath {
    fn histograms(&self) -> [&Histogram; 4] {
        [&self.publish_latency, &self.delivery_latency, &self.commit_events, &self.commit_seconds]
    }
}

/// The hot paths' handles (the recorder is installed by then: [`handle`]
/// runs when the server's state is made).
pub(crate) fn hot_path() -> &'static HotPath {
    static HOT_PATH: OnceLock<HotPath> = OnceLock::new();
    HOT_PATH.get_or_init(|| HotPath {
        streams_open: metrics::gauge!("herald_streams_open"),
        stream_bytes: metrics::counter!("herald_stream_bytes_total"),
        replayed_events: metrics::counter!("herald_replayed_events_total"),
        delivery_latency: Histogram::seconds(
            "herald_delivery_latency_seconds",
            "Durable commit to write on a subscriber's socket, for live events only (the oldest live event of each \
             write); replayed history is counted in herald_replayed_events_total instead.",
            LATENCY_BUCKETS,
        ),
        publish_latency: Histogram::seconds(
            "herald_publish_latency_seconds",
            "Publish request to durable acknowledgement.",
            LATENCY_BUCKETS,
        ),
        commit_seconds: Histogram::seconds("herald_store_commit_seconds", "Time of one store commit.", LATENCY_BUCKETS),
        commit_events: Histogram::counts(
            "herald_store_commit_events",
            "Events per store commit (group commit size).",
            BATCH_BUCKETS,
        ),
    })
}

static REDIS: OnceLock<[Histogram; 3]> = OnceLock::new();

/// The latency of Redis commands by operation (`publish`, `read`, `hello`),
/// made on first use: only a node on Redis exports them.
pub(crate) fn redis_command(op: &str) -> &'static Histogram {
    let [publish, read, hello] = REDIS.get_or_init(redis_histograms);
    match op {
        "publish" => publish,
        "hello" => hello,
        _ => read,
    }
}

fn redis_histograms() -> [Histogram; 3] {
    const HELP: &str = "Time of one Redis command, by operation (publish: one script per group commit; read: \
                        catch-up and topic reads; hello: a connection's handshake).";
    [
        Histogram::seconds_labelled("herald_redis_command_seconds", HELP, LATENCY_BUCKETS, "op", "publish"),
        Histogram::seconds_labelled("herald_redis_command_seconds", HELP, LATENCY_BUCKETS, "op", "read"),
        Histogram::seconds_labelled("herald_redis_command_seconds", HELP, LATENCY_BUCKETS, "op", "hello"),
    ]
}

/// Records the hub writer's commits into the commit histograms.
#[derive(Debug)]
struct CommitMetrics;

impl CommitObserver for CommitMetrics {
    fn commit_ended(&self, events: usize, elapsed: Duration) {
        let metrics = hot_path();
        metrics.commit_seconds.record(elapsed.as_secs_f64());
        metrics.commit_events.record(events as f64);
    }
}

/// Has `hub` report its commits to the commit histograms.
pub(crate) fn observe_commits(hub: &Hub) {
    hub.observe_commits(Arc::new(CommitMetrics));
}

/// The recorder's handle, installing the recorder on first use.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let handle = match PrometheusBuilder::new().install_recorder() {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                    PrometheusBuilder::new().build_recorder().handle()
                }
            };
            describe();
            handle
        })
        .clone()
}

fn describe() {
    describe_gauge!("herald_connections_open", "Open TCP connections.");
    describe_counter!("herald_connections_opened_total", "TCP connections accepted.");
    describe_counter!(
        "herald_connections_closed_total",
        "TCP connections closed, by reason (client_gone, idle, lagged, shutdown, error, stream_ended: an event stream or its error answer ended and the server closed the connection)."
    );
    describe_gauge!("herald_streams_open", "Open event streams.");
    describe_counter!(
        "herald_streams_closed_total",
        "Event streams ended, by reason (client_gone, lagged, token_expired, shutdown, max_duration, store_error, admin)."
    );
    describe_counter!(
        "herald_lagged_disconnects_total",
        "Connections cut because the client stopped reading for the stall timeout."
    );
    describe_gauge!("herald_subscriptions", "Open subscriptions in the hub.");
    describe_gauge!("herald_topics", "Topics held in memory.");
    describe_counter!(
        "herald_events_published_total",
        "Publish outcomes by result: events created or duplicate (idempotent repeats); requests rejected (4xx: \
         bad request, token, size, content type) or failed (5xx: store unavailable, shutting down)."
    );
    describe_counter!("herald_events_delivered_total", "Events written to subscribers' streams.");
    describe_counter!("herald_stream_bytes_total", Unit::Bytes, "Bytes written to event streams.");
    describe_counter!(
        "herald_replayed_events_total",
        "Events written to streams that were published before the stream opened (a resume's catch-up)."
    );
    describe_counter!("herald_replays_total", "Resumed subscriptions caught up, by source (ring or store).");
    describe_counter!(
        "herald_catch_up_reads_total",
        "Steps of readers behind their topic's ring, by source: a page another reader loaded (shared) or the store."
    );
    describe_counter!(
        "herald_gaps_total",
        "herald.gap notices sent (history no longer retained or unknown Last-Event-ID)."
    );
    describe_counter!("herald_auth_failures_total", "Rejected tokens, by reason.");
    describe_counter!("herald_rejected_total", "Requests refused by a limit, by limit.");
    describe_gauge!("herald_ring_events", "Events buffered in all topics' rings.");
    describe_gauge!("herald_ring_bytes", Unit::Bytes, "Bytes buffered in all topics' rings.");
    describe_gauge!("herald_store_healthy", "1 when the last store commit succeeded, else 0.");
    describe_counter!(
        "herald_store_errors_total",
        "Store commits that failed (each refused its publishes with 503); logged at most once per interval."
    );
    describe_gauge!(
        "herald_store_size_bytes",
        Unit::Bytes,
        "Size on disk of the SQLite store (herald.db, -wal and -shm); absent with another store."
    );
    describe_gauge!(
        "herald_tls_certificate_expiry_timestamp_seconds",
        Unit::Seconds,
        "With HTTPS: when the certificate new connections get expires (Unix time); absent until there is one."
    );
    describe_counter!("herald_mercure_updates_total", "With --mercure: updates published through the Mercure door.");
    describe_gauge!("herald_redis_up", "With --store redis://: 1 while the feed and the writer's session are live.");
    describe_gauge!(
        "herald_redis_durability",
        "With --store redis://: 1 for the level Redis keeps acknowledged writes at (fsync: appendfsync always; \
         everysec; none: no append-only file; unknown: CONFIG refused)."
    );
    describe_counter!("herald_redis_feed_events_total", "Events this node learned from the Redis feed.");
    describe_gauge!("herald_redis_feed_lag_events", "Events committed in Redis that the feed has not brought yet.");
    describe_gauge!("herald_redis_feed_lag_seconds", "Commit to arrival on the feed, of the last batch.");
    describe_counter!(
        "herald_redis_resyncs_total",
        "Times the feed was repaired from the streams, by reason (reconnect, hole, lag, stale, malformed)."
    );
    describe_counter!(
        "herald_redis_epoch_changes_total",
        "New histories started because Redis lost (or may have lost) acknowledged events, by reason (data_lost, \
         restart, rollback)."
    );
    describe_counter!(
        "herald_redis_in_doubt_total",
        "Publishes whose answer from Redis was lost, by how they were resolved (committed, not_committed, unknown)."
    );
    describe_gauge!("herald_build_info", "Always 1; the version label says which Herald runs.");
    metrics::gauge!("herald_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The exposition, with the hub's, the store's and the process's figures
/// read now.
pub fn render(state: &AppState) -> String {
    if state.config.store == StoreKind::Sqlite {
        metrics::gauge!("herald_store_size_bytes").set(store_size(&state.config.data_dir) as f64);
    }
    let hub = &state.hub;
    let stats = hub.stats();
    metrics::gauge!("herald_connections_open").set(state.connections.open() as f64);
    metrics::gauge!("herald_subscriptions").set(stats.subscriptions as f64);
    metrics::gauge!("herald_topics").set(stats.topics as f64);
    metrics::gauge!("herald_ring_events").set(stats.ring_events as f64);
    metrics::gauge!("herald_ring_bytes").set(stats.ring_bytes as f64);
    metrics::gauge!("herald_store_healthy").set(if hub.store_healthy() { 1.0 } else { 0.0 });
    metrics::counter!("herald_replays_total", "source" => "ring").absolute(stats.replays_ring);
    metrics::counter!("herald_replays_total", "source" => "store").absolute(stats.replays_store);
    metrics::counter!("herald_catch_up_reads_total", "source" => "shared").absolute(stats.catch_up_shared);
    metrics::counter!("herald_catch_up_reads_total", "source" => "store").absolute(stats.catch_up_store);
    metrics::counter!("herald_events_published_total", "result" => "created").absolute(stats.published);
    metrics::counter!("herald_events_published_total", "result" => "duplicate").absolute(stats.duplicates);
    metrics::counter!("herald_events_delivered_total").absolute(stats.delivered);
    metrics::counter!("herald_gaps_total").absolute(stats.gaps);
    metrics::counter!("herald_store_errors_total").absolute(stats.store_errors);
    let mut text = state.metrics.render();
    hot_path().histograms().iter().for_each(|histogram| histogram.render(&mut text));
    if let Some([first, rest @ ..]) = REDIS.get() {
        // One family: one HELP and TYPE, then every member's series.
        first.render(&mut text);
        rest.iter().for_each(|histogram| histogram.render_series(&mut text));
    }
    // Written here, not recorded: the recorder's counters hold whole numbers,
    // and CPU seconds need their fractions.
    text.push_str(&ProcessStats::read().exposition());
    text
}

/// The delivery latency distribution the dashboard reads: cumulative counts
/// by upper bound in seconds, from the histogram `/metrics` exports.
pub(crate) fn delivery_latency() -> Vec<(f64, u64)> {
    hot_path().delivery_latency.cumulative()
}

/// Bytes of the SQLite database and its WAL and shared-memory files.
fn store_size(data_dir: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(data_dir.join(format!("{DATABASE_FILE}{suffix}"))).ok())
        .map(|m| m.len())
        .sum()
}
