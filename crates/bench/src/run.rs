//! One benchmark run: open N subscribers, wait until all are connected,
//! publish M events, count every delivery, and report.
//!
//! Every phase is bounded by the run's deadline; whatever happens, the run
//! stops then and reports what it got.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    connect::Dialer,
    h2_stream::H2Connection,
    procstat::{self, ProcSample},
    publisher::{self, PublishPlan, PublisherResult},
    report::{ConnectStats, DeliveryStats, Latency, PublishStats, Report, ServerStats},
    subscriber::{self, Carrier, SubscriberResult, SubscriberSpec},
    tally::Tally,
    tls::TlsClient,
    transport::Transport,
    url::{UrlTemplate, spread_source},
};

/// How a single-event publish carries its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    /// `{"data": "…"}` as application/json (Herald's documented form).
    Json,
    /// The payload itself as text/plain (Herald; Nchan's raw body).
    Text,
    /// Mercure's form, `topic=…&data=…`, its topic `--batch-topic`.
    Form,
    /// Pushpin's publish API: one item on channel `--batch-topic` whose
    /// `http-stream` content is the SSE frame `id: SEQ`, `data: PAYLOAD`.
    Pushpin,
}

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// A name for the report.
    pub label: String,
    /// Subscribe URL (`{i}` = topic index of the subscriber).
    pub sub_url: Option<UrlTemplate>,
    /// What carries the subscribers' streams (it agrees with the URL's scheme).
    pub transport: Transport,
    /// Subscribers sharing one connection over HTTP/2.
    pub streams_per_connection: usize,
    /// The TLS client, when a URL is `https://`.
    pub tls: Option<Arc<TlsClient>>,
    /// Subscribers (N).
    pub subscribers: usize,
    /// Topics the subscribers and events are spread over.
    pub topics: usize,
    /// Publish URL (`{i}` = topic index), or the batch URL.
    pub pub_url: Option<UrlTemplate>,
    /// Events (M).
    pub events: u64,
    /// Events per second; 0 = as fast as possible.
    pub rate: f64,
    /// Concurrent publishing connections (K).
    pub publishers: usize,
    /// 0 = one event per request; B = JSON arrays of B events.
    pub batch: usize,
    /// Topic name in batch items (`{i}` = topic index).
    pub batch_topic: String,
    /// Single-event body format.
    pub body: BodyFormat,
    /// Payload size in bytes.
    pub payload_size: usize,
    /// Header lines for subscribers (each ends in CRLF).
    pub sub_headers: String,
    /// Header lines for publishers (each ends in CRLF).
    pub pub_headers: String,
    /// Subscribers per local source address (127.0.0.1, .2, …).
    pub subscribers_per_ip: usize,
    /// Client `SO_RCVBUF` for subscribers.
    pub recv_buffer: Option<usize>,
    /// Connection attempts in flight at once.
    pub connect_concurrency: usize,
    /// The whole run's deadline.
    pub timeout: Duration,
    /// How long to wait for deliveries after the last publish answer.
    pub drain_timeout: Duration,
    /// Pause after all subscribers connected, before sampling the server's
    /// memory and publishing.
    pub settle: Duration,
    /// Keep the subscribers open this long after connecting (idle runs).
    pub hold: Duration,
    /// Server processes to sample (their children are included).
    pub server_pids: Vec<u32>,
    /// Check that ids increase as byte strings.
    pub id_order: bool,
    /// A progress line per second on stderr.
    pub progress: bool,
}

/// State shared by the tasks of a run.
#[derive(Debug)]
pub struct Shared {
    /// The run's clock: payload send times are µs since this instant.
    pub clock: Instant,
    /// Tells this run's payloads from any other's.
    pub nonce: u32,
    /// Ends every task.
    pub cancel: CancellationToken,
    /// Bounds connection attempts in flight.
    pub connect_slots: Semaphore,
    /// Streams open.
    pub connected: AtomicUsize,
    /// Subscribers that could not open their stream.
    pub connect_failed: AtomicUsize,
    /// Subscribers that received every expected event.
    pub completed: AtomicUsize,
    /// Distinct expected events received, all subscribers together.
    pub delivered: AtomicU64,
    /// When the last new event arrived (µs on the run clock).
    pub last_delivery_us: AtomicU64,
    /// Next request number to send.
    pub next_request: AtomicU64,
    /// Requests answered (either way).
    pub finished_requests: AtomicU64,
    /// Events acknowledged with 2xx.
    pub acked_events: AtomicU64,
    /// When the last acknowledgement arrived (µs on the run clock).
    pub last_ack_us: AtomicU64,
    /// Publish → receive latency, µs.
    pub delivery_latency: Mutex<Histogram<u64>>,
    /// Time to open one stream (connect, request, response head), µs.
    pub connect_latency: Mutex<Histogram<u64>>,
}

impl Shared {
    /// The state of a run that opens at most `connect_concurrency` streams at once.
    pub fn new(connect_concurrency: usize) -> Self {
        Self {
            clock: Instant::now(),
            nonce: nonce(),
            cancel: CancellationToken::new(),
            connect_slots: Semaphore::new(connect_concurrency.max(1)),
            connected: AtomicUsize::new(0),
            connect_failed: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            next_request: AtomicU64::new(0),
            finished_requests: AtomicU64::new(0),
            acked_events: AtomicU64::new(0),
            last_ack_us: AtomicU64::new(0),
            delivery_latency: Mutex::new(new_histogram()),
            connect_latency: Mutex::new(new_histogram()),
        }
    }

    /// µs since the run's clock started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.clock.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// A latency histogram in µs, up to an hour, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// A nonce that differs between runs.
fn nonce() -> u32 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    (nanos as u32) ^ (std::process::id().rotate_left(16))
}

/// Runs the benchmark described by `config`.
pub async fn execute(config: RunConfig) -> Report {
    let shared = Arc::new(Shared::new(config.connect_concurrency));
    let deadline = shared.clock + config.timeout;
    let server_pids = procstat::with_children(&config.server_pids);
    let server_before = procstat::sample(&server_pids);
    let client_before = procstat::own();
    let mut errors = Vec::new();
    let progress = config.progress.then(|| tokio::spawn(progress_lines(Arc::clone(&shared), config.clone())));

    // Subscribers.
    let subscribers = if config.sub_url.is_some() { config.subscribers } else { 0 };
    let mut subscriber_tasks = Vec::with_capacity(subscribers);
    let headers: Arc<str> = config.sub_headers.clone().into();
    let mut expected_total = 0u64;
    let spread = config.subscribers_per_ip > 0 && subscribers > config.subscribers_per_ip;
    let streams_per_h2_connection = config.streams_per_connection.max(1);
    // The HTTP/2 connection the next subscribers share.
    let mut h2_connection: Option<Arc<H2Connection>> = None;
    if let Some(url) = &config.sub_url {
        for i in 0..subscribers {
            let topic = i % config.topics.max(1);
            let source = if spread && url.addr().is_ipv4() {
                match spread_source(i, config.subscribers_per_ip) {
                    Ok(ip) => Some(ip.into()),
                    Err(error) => {
                        errors.push(format!("{error:#}"));
                        break;
                    }
                }
            } else {
                None
            };
            let dialer = Dialer { source, recv_buffer: config.recv_buffer, tls: config.tls.clone() };
            let carrier = match config.transport {
                Transport::Plain | Transport::H1 => Carrier::Own { dialer, headers: Arc::clone(&headers) },
                Transport::H2 => {
                    if i % streams_per_h2_connection == 0 {
                        match H2Connection::new(url.expand(topic), dialer, &config.sub_headers) {
                            Ok(connection) => h2_connection = Some(Arc::new(connection)),
                            Err(error) => {
                                errors.push(format!("{error:#}"));
                                break;
                            }
                        }
                    }
                    let Some(connection) = &h2_connection else { break };
                    Carrier::Shared(Arc::clone(connection))
                }
            };
            let spec = SubscriberSpec { target: url.expand(topic), carrier };
            let tally = Tally::new(topic, config.topics, config.events, config.id_order);
            expected_total += tally.expected();
            subscriber_tasks.push(tokio::spawn(subscriber::run(spec, tally, Arc::clone(&shared))));
        }
    }
    // Each stream holds its connection: the last one gone closes it.
    drop(h2_connection);
    let spawned = subscriber_tasks.len();
    while shared.connected.load(Ordering::Relaxed) + shared.connect_failed.load(Ordering::Relaxed) < spawned
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let connect_seconds = shared.clock.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    if !config.settle.is_zero() {
        sleep_until_deadline(config.settle, deadline).await;
    }
    let server_connected = procstat::sample(&server_pids);
    if !config.hold.is_zero() {
        sleep_until_deadline(config.hold, deadline).await;
    }

    // Publishers.
    let publish_start = Instant::now();
    let publish_start_us = shared.now_us();
    let mut publisher_tasks = Vec::new();
    let plan = config.pub_url.as_ref().filter(|_| config.events > 0).map(|url| {
        Arc::new(PublishPlan {
            url: url.clone(),
            events: config.events,
            batch: config.batch,
            batch_topic: config.batch_topic.clone(),
            topics: config.topics,
            rate: config.rate,
            body: config.body,
            payload_size: config.payload_size,
            headers: config.pub_headers.clone(),
            dialer: Dialer { source: None, recv_buffer: None, tls: config.tls.clone() },
        })
    });
    // Publishers get a thread of their own: queued behind a thousand busy
    // subscriber tasks, each next request would wait for the load
    // generator, and the figure would measure it instead of the server.
    let publisher_runtime = plan.as_ref().and_then(|_| {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(1).thread_name("bench-publishers").enable_all();
        builder.build().map_err(|error| errors.push(format!("cannot start the publishers' runtime: {error}"))).ok()
    });
    if let Some(plan) = &plan {
        for _ in 0..config.publishers.max(1) {
            let task = publisher::run(Arc::clone(plan), Arc::clone(&shared), publish_start);
            publisher_tasks.push(match &publisher_runtime {
                Some(runtime) => runtime.spawn(task),
                None => tokio::spawn(task),
            });
        }
    }
    let requests = plan.as_ref().map_or(0, |p| p.requests());
    let mut published_at: Option<Instant> = None;
    let mut timed_out = false;
    let mut drain_timed_out = false;
    // When 99% of the deliveries had arrived (µs, count): a throughput
    // figure that a few stragglers do not hide.
    let mut bulk: Option<(u64, u64)> = None;
    let bulk_target = expected_total - expected_total / 100;
    loop {
        if bulk.is_none() && expected_total > 0 {
            let delivered = shared.delivered.load(Ordering::Relaxed);
            if delivered >= bulk_target {
                bulk = Some((shared.now_us(), delivered));
            }
        }
        let publishing_done = shared.finished_requests.load(Ordering::Relaxed) >= requests;
        let delivery_done = shared.completed.load(Ordering::Relaxed) >= connected;
        if publishing_done && (delivery_done || plan.is_none()) {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        if publishing_done {
            let at = *published_at.get_or_insert(now);
            if now.duration_since(at) >= config.drain_timeout {
                drain_timed_out = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // A short grace to catch duplicates that trail the last expected event.
    if connected > 0 && plan.is_some() && !timed_out {
        sleep_until_deadline(Duration::from_millis(100), deadline).await;
    }
    shared.cancel.cancel();
    let mut publishers = Vec::new();
    for task in publisher_tasks {
        if let Ok(result) = task.await {
            publishers.push(result);
        }
    }
    if let Some(runtime) = publisher_runtime {
        runtime.shutdown_background();
    }
    let mut results = Vec::with_capacity(subscriber_tasks.len());
    for task in subscriber_tasks {
        if let Ok(result) = task.await {
            results.push(result);
        }
    }
    if let Some(progress) = progress {
        progress.abort();
    }
    let server_end = procstat::sample(&server_pids);
    let client_end = procstat::own();

    if timed_out {
        errors.push(format!("the run hit its {:?} deadline before finishing", config.timeout));
    }
    if drain_timed_out {
        errors.push(format!("deliveries still missing {:?} after the last publish answer", config.drain_timeout));
    }
    let connect = connect_stats(&shared, subscribers, connected, connect_seconds, &results, &mut errors);
    let publish = publish_stats(&shared, &publishers, publish_start_us, requests, &mut errors);
    let mut delivery = delivery_stats(&shared, &results, publish_start_us, &mut errors);
    if let Some((at_us, delivered)) = bulk {
        delivery.seconds_to_99_percent = at_us.saturating_sub(publish_start_us) as f64 / 1e6;
        delivery.deliveries_per_second_99_percent = rate(delivered, delivery.seconds_to_99_percent);
    }
    let server = (!server_pids.is_empty()).then(|| ServerStats {
        pids: server_pids.clone(),
        cpu_seconds: server_end.cpu_seconds - server_before.cpu_seconds,
        rss_before_bytes: server_before.rss_bytes,
        rss_connected_bytes: server_connected.rss_bytes,
        pss_before_bytes: server_before.pss_bytes,
        pss_connected_bytes: server_connected.pss_bytes,
        rss_end_bytes: server_end.rss_bytes,
        peak_rss_bytes: server_end.peak_rss_bytes,
        rss_per_connection_bytes: per_connection(server_before, server_connected, connected),
    });
    let _ = publish_start;
    Report {
        label: config.label.clone(),
        ok: errors.is_empty(),
        errors,
        timed_out,
        sub_url: config.sub_url.as_ref().map(|u| u.as_str().to_owned()),
        transport: config.transport,
        streams_per_connection: (config.transport == Transport::H2).then_some(streams_per_h2_connection),
        pub_url: config.pub_url.as_ref().map(|u| u.as_str().to_owned()),
        subscribers,
        topics: config.topics,
        events: config.events,
        rate: config.rate,
        publishers: if plan.is_some() { config.publishers.max(1) } else { 0 },
        batch: config.batch,
        payload_bytes: config.payload_size,
        body: config.body,
        connect,
        publish,
        delivery,
        server,
        client_cpu_seconds: client_end.cpu_seconds - client_before.cpu_seconds,
        client_peak_rss_bytes: client_end.peak_rss_bytes,
        wall_seconds: shared.clock.elapsed().as_secs_f64(),
    }
}

async fn sleep_until_deadline(pause: Duration, deadline: Instant) {
    let until = (Instant::now() + pause).min(deadline);
    tokio::time::sleep_until(until.into()).await;
}

fn per_connection(before: ProcSample, connected: ProcSample, n: usize) -> Option<f64> {
    (n > 0 && connected.processes > 0).then(|| {
        let (start, end) = if before.pss_bytes > 0 && connected.pss_bytes > 0 {
            (before.pss_bytes, connected.pss_bytes)
        } else {
            (before.rss_bytes, connected.rss_bytes)
        };
        (end as f64 - start as f64) / n as f64
    })
}

fn connect_stats(
    shared: &Shared,
    subscribers: usize,
    connected: usize,
    seconds: f64,
    results: &[SubscriberResult],
    errors: &mut Vec<String>,
) -> ConnectStats {
    let failed: Vec<&SubscriberResult> = results.iter().filter(|r| !r.connected).collect();
    if connected < subscribers {
        let first = failed.iter().find_map(|r| r.error.as_deref()).unwrap_or("still connecting at the deadline");
        errors.push(format!(
            "{} of {subscribers} subscribers did not connect; first error: {first}",
            subscribers - connected
        ));
    }
    let histogram = shared.connect_latency.lock();
    ConnectStats { connected, failed: failed.len(), seconds, latency: Latency::from_histogram(&histogram) }
}

fn publish_stats(
    shared: &Shared,
    publishers: &[PublisherResult],
    start_us: u64,
    requests: u64,
    errors: &mut Vec<String>,
) -> PublishStats {
    let mut latency = new_histogram();
    let mut failures: Vec<(String, u64)> = Vec::new();
    let (mut ok, mut failed, mut connections) = (0, 0, 0);
    for p in publishers {
        latency.add(&p.latency).ok();
        ok += p.ok_requests;
        failed += p.failed_requests;
        connections += p.connections;
        for (reason, n) in &p.failures {
            match failures.iter_mut().find(|(r, _)| r == reason) {
                Some((_, total)) => *total += n,
                None => failures.push((reason.clone(), *n)),
            }
        }
    }
    if failed > 0 {
        let reasons: Vec<String> = failures.iter().map(|(r, n)| format!("{n}× {r}")).collect();
        errors.push(format!("{failed} publish requests failed: {}", reasons.join("; ")));
    }
    if ok + failed < requests {
        errors.push(format!("{} of {requests} publish requests were not sent", requests - ok - failed));
    }
    let acked = shared.acked_events.load(Ordering::Relaxed);
    let last = shared.last_ack_us.load(Ordering::Relaxed);
    let seconds = last.saturating_sub(start_us) as f64 / 1e6;
    PublishStats {
        requests: ok,
        failed_requests: failed,
        events_acked: acked,
        connections,
        seconds,
        events_per_second: rate(acked, seconds),
        requests_per_second: rate(ok, seconds),
        latency: Latency::from_histogram(&latency),
    }
}

fn delivery_stats(
    shared: &Shared,
    results: &[SubscriberResult],
    start_us: u64,
    errors: &mut Vec<String>,
) -> DeliveryStats {
    let mut stats = DeliveryStats::default();
    let mut stream_errors = Vec::new();
    for r in results.iter().filter(|r| r.connected) {
        let t = &r.tally;
        stats.expected += t.expected();
        stats.delivered += t.unique;
        stats.missing += t.missing();
        stats.duplicates += t.duplicates;
        stats.unexpected += t.unexpected;
        stats.id_errors += t.id_errors;
        stats.notices += t.notices;
        if let Some(error) = &r.error {
            stats.stream_errors += 1;
            if stream_errors.len() < 3 {
                stream_errors.push(error.clone());
            }
        }
        if t.has_errors() {
            stats.subscribers_with_errors += 1;
        }
    }
    let last = shared.last_delivery_us.load(Ordering::Relaxed);
    stats.seconds = last.saturating_sub(start_us) as f64 / 1e6;
    stats.deliveries_per_second = rate(stats.delivered, stats.seconds);
    stats.latency = Latency::from_histogram(&shared.delivery_latency.lock());
    let s = &stats;
    for (n, what) in [
        (s.missing, "events missing"),
        (s.duplicates, "duplicated events"),
        (s.unexpected, "unexpected events (another topic, another run, or not a bench payload)"),
        (s.id_errors, "event ids repeated or out of order"),
        (s.notices, "hub notices (herald.* events such as herald.gap)"),
    ] {
        if n > 0 {
            errors.push(format!("{n} {what}, in {} subscribers", s.subscribers_with_errors));
        }
    }
    if s.stream_errors > 0 {
        errors.push(format!("{} streams ended with an error, e.g. {}", s.stream_errors, stream_errors.join(" | ")));
    }
    stats
}

fn rate(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 { count as f64 / seconds } else { 0.0 }
}

/// Prints a progress line every second until aborted.
async fn progress_lines(shared: Arc<Shared>, config: RunConfig) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut last_delivered = 0;
    let mut last_acked = 0;
    loop {
        tick.tick().await;
        let delivered = shared.delivered.load(Ordering::Relaxed);
        let acked = shared.acked_events.load(Ordering::Relaxed);
        eprintln!(
            "[{:6.1}s] {}: connected {}/{} (failed {}) | acked {}/{} (+{}/s) | delivered {} (+{}/s) | complete {}",
            shared.clock.elapsed().as_secs_f64(),
            config.label,
            shared.connected.load(Ordering::Relaxed),
            config.subscribers,
            shared.connect_failed.load(Ordering::Relaxed),
            acked,
            config.events,
            acked - last_acked,
            delivered,
            delivered - last_delivered,
            shared.completed.load(Ordering::Relaxed),
        );
        last_delivered = delivered;
        last_acked = acked;
    }
}
