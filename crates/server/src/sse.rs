//! The body of an event stream: the subscription's frames, coalesced into
//! one write per wake-up, with heartbeats, token expiry and shutdown.
//!
//! The body is pulled by the connection only as fast as the socket drains,
//! and the subscription buffers nothing, so a client that stops reading costs
//! the hub nothing; the connection's stall timeout then disconnects it.

use std::{
    convert::Infallible,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use herald_core::{Subscription, now_ms, sse};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::{connection::Stalled, limits::StreamPermit, registry::Registration};

/// The event type sent when the token of an open stream expires.
pub const EXPIRED_EVENT: &str = "herald.expired";

/// Why a stream ended, for the `herald_streams_closed_total` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client went away (or its connection was cut for stalling).
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

/// What a stream holds on to while it is open, and drops when it ends.
#[derive(Debug)]
pub struct StreamTies {
    /// Counts the stream against its client IP.
    pub permit: StreamPermit,
    /// Lists it on the dashboard; its token ends it on an operator's disconnect.
    pub registration: Registration,
    /// Set if the connection is cut for stalling.
    pub stalled: Option<Stalled>,
}

/// The response body streaming `subscription`.
pub fn body(subscription: Subscription, options: StreamOptions, shutdown: CancellationToken, ties: StreamTies) -> Body {
    let now = Instant::now();
    let expires_at = options.expires_at.map(|exp| {
        let now_secs = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        now + Duration::from_secs(exp.saturating_sub(now_secs))
    });
    metrics::gauge!("herald_streams_open").increment(1.0);
    let stream = EventStream {
        subscription,
        heartbeat: options.heartbeat,
        retry: options.retry,
        expires_at,
        ends_at: options.max_duration.map(|d| now + d),
        shutdown,
        last_write: now,
        started: false,
        closed: None,
        ties,
    };
    Body::from_stream(futures_util::stream::unfold(stream, |mut stream| async move {
        let chunk = stream.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), stream))
    }))
}

struct EventStream {
    subscription: Subscription,
    heartbeat: Duration,
    retry: Duration,
    expires_at: Option<Instant>,
    ends_at: Option<Instant>,
    shutdown: CancellationToken,
    last_write: Instant,
    started: bool,
    closed: Option<CloseReason>,
    ties: StreamTies,
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl EventStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.closed.is_some() {
            return None;
        }
        if !self.started {
            self.started = true;
            // Sent at once, so clients and proxies see the stream open.
            let mut open = BytesMut::from(&sse::retry(u64::try_from(self.retry.as_millis()).unwrap_or(u64::MAX))[..]);
            open.extend_from_slice(b": herald stream open\n\n");
            return Some(open.freeze());
        }
        let chunk = tokio::select! {
            biased;
            () = self.shutdown.cancelled() => self.close(CloseReason::Shutdown, sse::comment("server shutting down; reconnect")),
            () = self.ties.registration.entry.disconnect.cancelled() => self.close(CloseReason::Admin, sse::comment("disconnected by an operator")),
            () = sleep_until_some(self.expires_at) => {
                let data = r#"{"reason":"token_expired","message":"the token expired; reconnect with a fresh token"}"#;
                self.close(CloseReason::TokenExpired, sse::event_frame(None, Some(EXPIRED_EVENT), data, None))
            }
            () = sleep_until_some(self.ends_at) => self.close(CloseReason::MaxDuration, sse::comment("stream time limit reached; reconnect")),
            delivery = self.subscription.next() => match delivery {
                Ok(delivery) => {
                    let size = delivery.frames().map(Bytes::len).sum();
                    let mut out = BytesMut::with_capacity(size);
                    delivery.frames().for_each(|frame| out.extend_from_slice(frame));
                    metrics::counter!("herald_events_delivered_total").increment(delivery.events.len() as u64);
                    let entry = &self.ties.registration.entry;
                    entry.events_sent.fetch_add(delivery.events.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    entry.lag.store(self.subscription.lag(), std::sync::atomic::Ordering::Relaxed);
                    metrics::counter!("herald_gaps_total").increment(delivery.notices.len() as u64);
                    if let Some(first) = delivery.events.first() {
                        let age = now_ms().saturating_sub(first.time_ms);
                        metrics::histogram!("herald_delivery_latency_seconds").record(age as f64 / 1000.0);
                    }
                    out.freeze()
                }
                Err(error) => {
                    tracing::warn!(%error, "stream ended: the store failed while catching up");
                    self.close(CloseReason::StoreError, sse::comment("store unavailable; reconnect to resume"))
                }
            },
            () = sleep_until(self.last_write + self.heartbeat) => Bytes::from_static(b":\n"),
        };
        self.last_write = Instant::now();
        metrics::counter!("herald_stream_bytes_total").increment(chunk.len() as u64);
        Some(chunk)
    }

    fn close(&mut self, reason: CloseReason, last_words: Bytes) -> Bytes {
        self.closed = Some(reason);
        last_words
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        let stalled = self.ties.stalled.as_ref().is_some_and(Stalled::is_set);
        let reason = self.closed.unwrap_or(if stalled { CloseReason::Lagged } else { CloseReason::ClientGone });
        metrics::gauge!("herald_streams_open").decrement(1.0);
        metrics::counter!("herald_streams_closed_total", "reason" => reason.label()).increment(1);
    }
}
