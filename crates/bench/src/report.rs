//! What a run measured: a serde struct written as JSON, and a human table.

use std::fmt::{self, Write as _};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::{run::BodyFormat, transport::Transport};

/// The result of one run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The run's name.
    pub label: String,
    /// No error at all: every expected event arrived exactly once.
    pub ok: bool,
    /// Everything that went wrong, one line each.
    pub errors: Vec<String>,
    /// The run was stopped by its deadline.
    pub timed_out: bool,
    /// Subscribe URL template.
    pub sub_url: Option<String>,
    /// What carried the subscribers' streams.
    pub transport: Transport,
    /// Streams per connection, over HTTP/2.
    pub streams_per_connection: Option<usize>,
    /// Publish URL template.
    pub pub_url: Option<String>,
    /// Subscribers asked for.
    pub subscribers: usize,
    /// Topics spread over.
    pub topics: usize,
    /// Events to publish.
    pub events: u64,
    /// Target rate (events/s), 0 = as fast as possible.
    pub rate: f64,
    /// Publishing connections.
    pub publishers: usize,
    /// Events per batch request (0 = single-event requests).
    pub batch: usize,
    /// Payload size.
    pub payload_bytes: usize,
    /// Single-event body format.
    pub body: BodyFormat,
    /// Opening the streams.
    pub connect: ConnectStats,
    /// Publishing.
    pub publish: PublishStats,
    /// Receiving.
    pub delivery: DeliveryStats,
    /// The server's processes, if `--server-pid` was given.
    pub server: Option<ServerStats>,
    /// This tool's own CPU seconds during the run.
    pub client_cpu_seconds: f64,
    /// This tool's peak resident memory.
    pub client_peak_rss_bytes: u64,
    /// The run's duration.
    pub wall_seconds: f64,
}

/// Opening the streams.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ConnectStats {
    /// Streams opened.
    pub connected: usize,
    /// Subscribers that gave up.
    pub failed: usize,
    /// From the start until every subscriber connected or failed.
    pub seconds: f64,
    /// Time to open one stream (connect, request, response head).
    pub latency: Latency,
}

/// Publishing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PublishStats {
    /// Requests answered 2xx.
    pub requests: u64,
    /// Requests that failed.
    pub failed_requests: u64,
    /// Events acknowledged.
    pub events_acked: u64,
    /// Connections opened by the publishers.
    pub connections: u64,
    /// From the first request to the last acknowledgement.
    pub seconds: f64,
    /// Acknowledged events per second.
    pub events_per_second: f64,
    /// Acknowledged requests per second.
    pub requests_per_second: f64,
    /// Per-request latency (send → full answer).
    pub latency: Latency,
}

/// Receiving.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DeliveryStats {
    /// Deliveries due (events × their topic's subscribers).
    pub expected: u64,
    /// Distinct expected deliveries received.
    pub delivered: u64,
    /// Expected deliveries not received.
    pub missing: u64,
    /// Deliveries received more than once.
    pub duplicates: u64,
    /// Events not due to the subscriber that got them.
    pub unexpected: u64,
    /// Ids repeated (or, with --id-order, not increasing).
    pub id_errors: u64,
    /// `herald.*` events received (e.g. `herald.gap`).
    pub notices: u64,
    /// Streams that ended with an error before the run did.
    pub stream_errors: u64,
    /// Subscribers with any error.
    pub subscribers_with_errors: u64,
    /// From the first publish to the last delivery.
    pub seconds: f64,
    /// Deliveries per second over that time.
    pub deliveries_per_second: f64,
    /// From the first publish until 99% of the deliveries had arrived.
    pub seconds_to_99_percent: f64,
    /// Deliveries per second over that time: the bulk rate, which a few
    /// stalled streams do not hide.
    pub deliveries_per_second_99_percent: f64,
    /// Publish (send time) → receive latency.
    pub latency: Latency,
}

/// The server's processes.
#[derive(Debug, Clone, Serialize)]
pub struct ServerStats {
    /// The processes sampled (children included).
    pub pids: Vec<u32>,
    /// CPU seconds used during the run.
    pub cpu_seconds: f64,
    /// Resident memory at the start.
    pub rss_before_bytes: u64,
    /// Resident memory once every subscriber connected.
    pub rss_connected_bytes: u64,
    /// Proportional set size at the start (shared pages counted once).
    pub pss_before_bytes: u64,
    /// Proportional set size once every subscriber connected.
    pub pss_connected_bytes: u64,
    /// Resident memory at the end.
    pub rss_end_bytes: u64,
    /// Peak resident memory (VmHWM, summed over the processes).
    pub peak_rss_bytes: u64,
    /// (connected − start) memory per open stream: PSS where the kernel
    /// reports it, else RSS.
    pub rss_per_connection_bytes: Option<f64>,
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
}

impl Latency {
    /// From a histogram of µs.
    pub fn from_histogram(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return f.write_str("-");
        }
        write!(
            f,
            "p50 {} · p99 {} · p99.9 {} · max {}",
            ms(self.p50_ms),
            ms(self.p99_ms),
            ms(self.p999_ms),
            ms(self.max_ms)
        )
    }
}

/// A duration in ms, readable.
pub fn ms(v: f64) -> String {
    if v < 1.0 {
        format!("{:.0} µs", v * 1000.0)
    } else if v < 100.0 {
        format!("{v:.2} ms")
    } else {
        format!("{v:.0} ms")
    }
}

/// A count per second, readable.
pub fn per_second(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M/s", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.1} k/s", v / 1e3)
    } else {
        format!("{v:.0}/s")
    }
}

/// Bytes, readable.
pub fn bytes(v: f64) -> String {
    if v.abs() >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", v / (1u64 << 30) as f64)
    } else if v.abs() >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", v / (1u64 << 20) as f64)
    } else if v.abs() >= 1024.0 {
        format!("{:.1} KiB", v / 1024.0)
    } else {
        format!("{v:.0} B")
    }
}

impl Report {
    /// The transport, as a reader would name it.
    fn transport_text(&self) -> String {
        match (self.transport, self.streams_per_connection) {
            (Transport::Plain, _) => "HTTP/1.1".into(),
            (Transport::H1, _) => "HTTPS/1.1".into(),
            (Transport::H2, per) => format!("HTTPS/2 ({} streams a connection)", per.unwrap_or(1)),
        }
    }

    /// The human table.
    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = Vec::new();
        let c = &self.connect;
        if self.subscribers > 0 {
            rows.push((
                "subscribers",
                format!(
                    "{} of {} connected ({} failed) over {} in {:.2} s; per stream {}",
                    c.connected,
                    self.subscribers,
                    c.failed,
                    self.transport_text(),
                    c.seconds,
                    c.latency
                ),
            ));
        }
        let p = &self.publish;
        if self.events > 0 {
            let rate = if self.rate > 0.0 { format!("{:.0}/s", self.rate) } else { "max".into() };
            let unit = if self.batch > 0 { format!(", batches of {}", self.batch) } else { String::new() };
            rows.push((
                "publish",
                format!(
                    "{} of {} events acked in {:.2} s over {} connections (rate {rate}{unit}, {}-byte payloads)",
                    p.events_acked, self.events, p.seconds, self.publishers, self.payload_bytes
                ),
            ));
            rows.push((
                "publish rate",
                format!("{} events, {} requests", per_second(p.events_per_second), per_second(p.requests_per_second)),
            ));
            rows.push(("publish latency", p.latency.to_string()));
        }
        let d = &self.delivery;
        if self.subscribers > 0 && self.events > 0 {
            rows.push((
                "deliveries",
                format!(
                    "{} of {} in {:.2} s: {} (99% in {:.2} s: {})",
                    d.delivered,
                    d.expected,
                    d.seconds,
                    per_second(d.deliveries_per_second),
                    d.seconds_to_99_percent,
                    per_second(d.deliveries_per_second_99_percent)
                ),
            ));
            rows.push((
                "delivery checks",
                format!(
                    "missing {} · duplicates {} · unexpected {} · id errors {} · notices {} · stream errors {}",
                    d.missing, d.duplicates, d.unexpected, d.id_errors, d.notices, d.stream_errors
                ),
            ));
            rows.push(("delivery latency", d.latency.to_string()));
        }
        if let Some(s) = &self.server {
            let mut text = format!(
                "cpu {:.2} s · rss {} → {} (connected) → {} · peak {}",
                s.cpu_seconds,
                bytes(s.rss_before_bytes as f64),
                bytes(s.rss_connected_bytes as f64),
                bytes(s.rss_end_bytes as f64),
                bytes(s.peak_rss_bytes as f64)
            );
            if let Some(per) = s.rss_per_connection_bytes {
                let _ = write!(text, " · {} per stream", bytes(per));
            }
            rows.push(("server", text));
        }
        rows.push((
            "client",
            format!(
                "cpu {:.2} s · peak rss {} · wall {:.2} s",
                self.client_cpu_seconds,
                bytes(self.client_peak_rss_bytes as f64),
                self.wall_seconds
            ),
        ));
        let verdict = if self.ok { "OK".to_owned() } else { format!("FAILED: {}", self.errors.join("; ")) };
        rows.push(("result", verdict));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = format!("herald-bench · {}\n", self.label);
        for (key, value) in rows {
            let _ = writeln!(out, "  {key:<width$}  {value}");
        }
        out
    }
}
