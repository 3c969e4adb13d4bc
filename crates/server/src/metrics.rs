//! Prometheus metrics: one process-wide recorder, every metric described
//! (HELP and unit), histograms with explicit buckets, and no label with
//! unbounded values (no per-topic label; per-topic detail is the dashboard's).

use std::{path::Path, sync::OnceLock};

use metrics::{Counter, Gauge, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{process_stats::ProcessStats, state::AppState, store::DATABASE_FILE};

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0];

/// Handles of the metrics the hot paths touch on every publish or write,
/// looked up once rather than by name each time. Events published and
/// delivered are not here: the hub counts them, and [`render`] reads them.
pub(crate) struct HotPath {
    pub(crate) streams_open: Gauge,
    pub(crate) stream_bytes: Counter,
    pub(crate) delivery_latency: Histogram,
    pub(crate) replayed_events: Counter,
    pub(crate) publish_latency: Histogram,
}

/// The hot paths' handles (the recorder is installed by then: [`handle`]
/// runs when the server's state is made).
pub(crate) fn hot_path() -> &'static HotPath {
    static HOT_PATH: OnceLock<HotPath> = OnceLock::new();
    HOT_PATH.get_or_init(|| HotPath {
        streams_open: metrics::gauge!("herald_streams_open"),
        stream_bytes: metrics::counter!("herald_stream_bytes_total"),
        delivery_latency: metrics::histogram!("herald_delivery_latency_seconds"),
        replayed_events: metrics::counter!("herald_replayed_events_total"),
        publish_latency: metrics::histogram!("herald_publish_latency_seconds"),
    })
}

/// The recorder's handle, installing the recorder on first use.
///
/// The recorder keeps histogram samples until a render folds them into
/// buckets (`install_recorder` leaves that upkeep to us). The dashboard's
/// sampler renders every half second (`herald_admin`'s `live.rs`), which
/// bounds them; a server without it would need `run_upkeep` on a timer.
pub fn handle() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("herald_store_commit_events".into()), BATCH_BUCKETS)
                });
            let handle = match builder {
                Ok(builder) => match builder.install_recorder() {
                    Ok(handle) => handle,
                    Err(error) => {
                        tracing::warn!(%error, "metrics recorder not installed; /metrics will be empty");
                        PrometheusBuilder::new().build_recorder().handle()
                    }
                },
                Err(error) => {
                    tracing::warn!(%error, "metrics buckets rejected");
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
    describe_histogram!("herald_publish_latency_seconds", Unit::Seconds, "Publish request to durable acknowledgement.");
    describe_histogram!(
        "herald_delivery_latency_seconds",
        Unit::Seconds,
        "Durable commit to write on a subscriber's socket, for live events only (the oldest live event of each \
         write); replayed history is counted in herald_replayed_events_total instead."
    );
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
    describe_histogram!("herald_store_commit_events", "Events per store commit (group commit size).");
    describe_histogram!("herald_store_commit_seconds", Unit::Seconds, "Time of one store commit.");
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
        "Size on disk of the SQLite store (herald.db, -wal and -shm); absent with --memory."
    );
    describe_gauge!("herald_build_info", "Always 1; the version label says which Herald runs.");
    metrics::gauge!("herald_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// The exposition, with the hub's, the store's and the process's figures
/// read now.
pub fn render(state: &AppState) -> String {
    if !state.config.memory {
        metrics::gauge!("herald_store_size_bytes").set(store_size(&state.config.data_dir) as f64);
    }
    let mut text = render_hub(state);
    // Written here, not recorded: the recorder's counters hold whole numbers,
    // and CPU seconds need their fractions.
    text.push_str(&ProcessStats::read().exposition());
    text
}

/// The exposition without the process's and the store's figures, which cost
/// reads of `/proc` and the file system: for the dashboard's sampler, which
/// renders twice a second whether anyone looks or not.
pub fn render_hub(state: &AppState) -> String {
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
    metrics::counter!("herald_events_published_total", "result" => "created").absolute(stats.published);
    metrics::counter!("herald_events_published_total", "result" => "duplicate").absolute(stats.duplicates);
    metrics::counter!("herald_events_delivered_total").absolute(stats.delivered);
    metrics::counter!("herald_gaps_total").absolute(stats.gaps);
    state.metrics.render()
}

/// Bytes of the SQLite database and its WAL and shared-memory files.
fn store_size(data_dir: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| std::fs::metadata(data_dir.join(format!("{DATABASE_FILE}{suffix}"))).ok())
        .map(|m| m.len())
        .sum()
}
