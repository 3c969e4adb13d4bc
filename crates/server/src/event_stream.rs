//! The response of an event stream: the subscription's frames, coalesced
//! into one write per wake-up, with heartbeats, token expiry and shutdown.
//!
//! The body is pulled by the connection only as fast as the socket drains,
//! and the subscription buffers nothing, so a client that stops reading costs
//! the hub nothing; the transport's stall guard then disconnects it, and
//! tells the stream through its [`StallReport`].

use std::{
    convert::Infallible,
    pin::Pin,
    sync::atomic::Ordering,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use bytes::{Bytes, BytesMut};
use herald_core::{Delivery, Event, StoreError, Subscription, now_ms, sse};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::{
    metrics::HotPath,
    registry::Registration,
    transport::{StallReport, deadline, limits::StreamPermit},
};

/// The event type sent when the token of an open stream expires.
pub const EXPIRED_EVENT: &str = "herald.expired";

/// Why a stream ended, for the `herald_streams_closed_total` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away.
    ClientGone,
    /// The token expired.
    TokenExpired,
    /// The server is shutting down.
    Shutdown,
    /// The stream reached `--stream-max-duration`.
    MaxDuration,
    /// The store failed while the stream caught up.
    StoreError,
    /// The client stopped reading and its connection was cut.
    Lagged,
    /// An operator disconnected it from the dashboard.
    Admin,
}

impl CloseReason {
    fn label(self) -> &'static str {
        match self {
            Self::ClientGone => "client_gone",
            Self::TokenExpired => "token_expired",
            Self::Shutdown => "shutdown",
            Self::MaxDuration => "max_duration",
            Self::StoreError => "store_error",
            Self::Lagged => "lagged",
            Self::Admin => "admin",
        }
    }
}

/// How a stream behaves.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    /// Idle time before a heartbeat comment.
    pub heartbeat: Duration,
    /// `retry:` sent at the start.
    pub retry: Duration,
    /// When the token expires (seconds since the Unix epoch).
    pub expires_at: Option<u64>,
    /// Longest life of the stream.
    pub max_duration: Option<Duration>,
}

/// Which of a subscription's events a stream sends, for a door whose
/// subscribers select finer than topics (the Mercure door: one topic, each
/// event routed by its own metadata).
pub trait EventFilter: Send + Sync + 'static {
    /// Whether the subscriber receives `event`.
    fn admits(&self, event: &Event) -> bool;
    /// Whether the subscriber receives the hub's notices (`herald.gap`).
    fn notices(&self) -> bool;
}

/// What a stream holds on to while it is open, and drops when it ends.
#[derive(Debug)]
pub struct StreamTies {
    /// Counts the stream against its client IP.
    pub permit: StreamPermit,
    /// Lists it on the dashboard; its token ends it on an operator's disconnect.
    pub registration: Registration,
    /// Whatever else lives as long as the stream (a door's presence, which
    /// says the subscriber left when dropped).
    pub held: Option<Box<dyn std::any::Any + Send>>,
}

/// The `text/event-stream` response streaming `subscription`, only the
/// events `filter` admits (all when `None`). It ends when the registration's
/// disconnect token (a child of the server's shutdown token) is cancelled,
/// among other reasons.
pub fn response(
    subscription: Subscription,
    filter: Option<Box<dyn EventFilter>>,
    options: StreamOptions,
    shutdown: CancellationToken,
    ties: StreamTies,
) -> Response {
    let stall = StallReport::default();
    let body = body(subscription, filter, options, shutdown, ties, stall.clone());
    let mut response = (StatusCode::OK, body).into_response();
    response.extensions_mut().insert(stall);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn body(
    subscription: Subscription,
    filter: Option<Box<dyn EventFilter>>,
    options: StreamOptions,
    shutdown: CancellationToken,
    ties: StreamTies,
    stall: StallReport,
) -> Body {
    let now = Instant::now();
    let expires_at = options.expires_at.map(|exp| {
        let now_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        deadline::after(now, Duration::from_secs(exp.saturating_sub(now_secs)))
    });
    let metrics = crate::metrics::hot_path();
    metrics.streams_open.increment(1.0);
    // Sent at once, so clients and proxies see the stream open.
    let mut opening = BytesMut::from(&sse::retry(u64::try_from(options.retry.as_millis()).unwrap_or(u64::MAX))[..]);
    opening.extend_from_slice(b": herald stream open\n\n");
    let mut stream = EventStream {
        subscription,
        filter,
        heartbeat: options.heartbeat,
        expires_at,
        ends_at: options.max_duration.map(|d| deadline::after(now, d)),
        timer: Box::pin(sleep_until(now)),
        shutdown,
        last_write: now,
        opening: Some(opening.freeze()),
        closed: None,
        ties,
        stall,
        metrics,
    };
    stream.rearm_timer();
    Body::from_stream(futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    }))
}

struct EventStream {
    subscription: Subscription,
    filter: Option<Box<dyn EventFilter>>,
    heartbeat: Duration,
    expires_at: Option<Instant>,
    ends_at: Option<Instant>,
    /// One timer for the earliest of the next heartbeat, the token's expiry
    /// and the stream's end; set again only when it fires.
    timer: Pin<Box<Sleep>>,
    /// Told apart from an operator's disconnect by this, when the
    /// registration's token is cancelled.
    shutdown: CancellationToken,
    last_write: Instant,
    opening: Option<Bytes>,
    closed: Option<CloseReason>,
    ties: StreamTies,
    /// Says, once the stream is dropped, whether the transport cut it for stalling.
    stall: StallReport,
    metrics: &'static HotPath,
}

impl EventStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.closed.is_some() {
            return None;
        }
        let chunk = match self.opening.take() {
            Some(opening) => opening,
            None => self.wait_for_chunk().await,
        };
        self.last_write = Instant::now();
        self.metrics.stream_bytes.increment(chunk.len() as u64);
        Some(chunk)
    }

    async fn wait_for_chunk(&mut self) -> Bytes {
        loop {
            tokio::select! {
                biased;
                () = self.ties.registration.entry.disconnect.cancelled() => {
                    return if self.shutdown.is_cancelled() {
                        self.close(CloseReason::Shutdown, sse::comment("server shutting down; reconnect"))
                    } else {
                        self.close(CloseReason::Admin, sse::comment("disconnected by an operator"))
                    };
                }
                () = self.timer.as_mut() => {
                    if let Some(chunk) = self.on_timer() {
                        return chunk;
                    }
                }
                delivery = self.subscription.next() => {
                    if let Some(chunk) = self.encode(delivery) {
                        return chunk;
                    }
                }
            }
        }
    }

    /// What is due when the timer fires, if anything; then sets it again.
    fn on_timer(&mut self) -> Option<Bytes> {
        let now = Instant::now();
        let due = if self.expires_at.is_some_and(|at| at <= now) {
            let data = r#"{"reason":"token_expired","message":"the token expired; reconnect with a fresh token"}"#;
            Some(self.close(CloseReason::TokenExpired, sse::event_frame(None, Some(EXPIRED_EVENT), data, None)))
        } else if self.ends_at.is_some_and(|at| at <= now) {
            Some(self.close(CloseReason::MaxDuration, sse::comment("stream time limit reached; reconnect")))
        } else if self.next_heartbeat() <= now {
            self.last_write = now;
            Some(Bytes::from_static(b":\n"))
        } else {
            None
        };
        self.rearm_timer();
        due
    }

    fn rearm_timer(&mut self) {
        let next = [self.expires_at, self.ends_at].into_iter().flatten().fold(self.next_heartbeat(), Instant::min);
        self.timer.as_mut().reset(next);
    }

    fn next_heartbeat(&self) -> Instant {
        deadline::after(self.last_write, self.heartbeat)
    }

    /// A delivery's frames as one chunk, counted; `None` when the filter
    /// left nothing of it.
    fn encode(&mut self, delivery: Result<Delivery, StoreError>) -> Option<Bytes> {
        let mut delivery = match delivery {
            Ok(delivery) => delivery,
            Err(error) => {
                tracing::warn!(%error, "stream ended: the store failed while catching up");
                let last_words = sse::comment("store unavailable; reconnect to resume");
                return Some(self.close(CloseReason::StoreError, last_words));
            }
        };
        if let Some(filter) = &self.filter {
            delivery.events.retain(|event| filter.admits(event));
            if !filter.notices() {
                delivery.notices.clear();
            }
            if delivery.is_empty() {
                return None;
            }
        }
        let size = delivery.frames().map(Bytes::len).sum();
        let mut out = BytesMut::with_capacity(size);
        delivery.frames().for_each(|frame| out.extend_from_slice(frame));
        let events = delivery.events.len() as u64;
        let entry = &self.ties.registration.entry;
        entry.events_sent.fetch_add(events, Ordering::Relaxed);
        entry.lag.store(self.subscription.lag(), Ordering::Relaxed);
        // Replayed history is counted, not timed: its age is how long the
        // client was away, not how fast the hub delivers.
        let opened_at = self.subscription.opened_at();
        let replayed = delivery.events.iter().take_while(|e| e.id.seq <= opened_at).count();
        if replayed > 0 {
            // Only then: a counter every stream shares is a contended write.
            self.metrics.replayed_events.increment(replayed as u64);
        }
        if let Some(first_live) = delivery.events.get(replayed) {
            let age = now_ms().saturating_sub(first_live.time_ms);
            self.metrics.delivery_latency.record(age as f64 / 1000.0);
        }
        Some(out.freeze())
    }

    fn close(&mut self, reason: CloseReason, last_words: Bytes) -> Bytes {
        self.closed = Some(reason);
        last_words
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let cut = if self.stall.stalled() { CloseReason::Lagged } else { CloseReason::ClientGone };
        let reason = self.closed.unwrap_or(cut);
        self.metrics.streams_open.decrement(1.0);
        metrics::counter!("herald_streams_closed_total", "reason" => reason.label()).increment(1);
    }
}

#[cfg(test)]
mod tests {
    //! The stream's timers on tokio's paused clock: exact, whatever the load.

    use std::{net::IpAddr, sync::Arc};

    use herald_core::{Hub, HubConfig, MemoryStore, Resume, Selection};
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::{registry::StreamRegistry, transport::limits::StreamLimits};

    /// A stream of topic `t` with `options`, and its hub.
    async fn open(options: StreamOptions) -> (Body, Hub) {
        let hub = Hub::start(Arc::new(MemoryStore::default()), HubConfig::default()).await.unwrap();
        let subscription = Subscription::open(&hub, Selection::new(["t".parse().unwrap()]), Resume::Live).unwrap();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let permit = Arc::new(StreamLimits::new(1)).acquire(ip).unwrap();
        let shutdown = CancellationToken::new();
        let registration = Arc::new(StreamRegistry::default()).register(&shutdown, ip, String::new(), None, Vec::new());
        let ties = StreamTies { permit, registration, held: None };
        let body = body(subscription, None, options, shutdown, ties, StallReport::default());
        (body, hub)
    }

    async fn next_frame(body: &mut Body) -> Option<String> {
        let frame = body.frame().await?.unwrap();
        Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
    }

    fn options(heartbeat: u64, expires_in: Option<u64>, max_duration: Option<u64>) -> StreamOptions {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        StreamOptions {
            heartbeat: Duration::from_secs(heartbeat),
            retry: Duration::from_secs(3),
            expires_at: expires_in.map(|s| now + s),
            max_duration: max_duration.map(Duration::from_secs),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_come_after_idle_time_and_expiry_ends_the_stream() {
        let (mut body, _hub) = open(options(15, Some(40), None)).await;
        let start = Instant::now();
        assert!(next_frame(&mut body).await.unwrap().starts_with("retry: 3000\n"));
        assert_eq!(next_frame(&mut body).await.unwrap(), ":\n");
        assert_eq!(start.elapsed(), Duration::from_secs(15));
        assert_eq!(next_frame(&mut body).await.unwrap(), ":\n");
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        // The token expires 40 s after the start (its `exp` is whole seconds).
        let last = next_frame(&mut body).await.unwrap();
        assert!(last.starts_with("event: herald.expired\n"), "{last}");
        assert!(start.elapsed() <= Duration::from_secs(40) && start.elapsed() > Duration::from_secs(38));
        assert!(next_frame(&mut body).await.is_none(), "the stream ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_at_its_maximum_duration_with_a_comment() {
        let (mut body, _hub) = open(options(15, None, Some(20))).await;
        let start = Instant::now();
        next_frame(&mut body).await.unwrap();
        assert_eq!(next_frame(&mut body).await.unwrap(), ":\n");
        let last = next_frame(&mut body).await.unwrap();
        assert!(last.starts_with(": stream time limit reached"), "{last}");
        assert_eq!(start.elapsed(), Duration::from_secs(20));
        assert!(next_frame(&mut body).await.is_none());
    }
}
