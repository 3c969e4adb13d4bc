//! The dashboard's own event streams (`/admin/live`, a topic's tail) last
//! no longer than the operator's sign-in: at the token's `exp` they end with
//! `event: herald.expired`, which the page turns into a sign-in prompt. They
//! also end at shutdown, and send a comment line when idle so proxies keep
//! them open.

use std::{
    convert::Infallible,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use herald_core::{Grants, sse};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The event type that ends a stream when the operator's token expires.
pub(crate) const EXPIRED_EVENT: &str = "herald.expired";

/// What bounds a dashboard stream.
pub(crate) struct Session {
    /// When the operator's token expires.
    pub(crate) ends_at: Option<Instant>,
    /// Cancelled at shutdown.
    pub(crate) shutdown: CancellationToken,
    /// Idle time before a comment line.
    pub(crate) heartbeat: Duration,
}

impl Session {
    /// A session ending when `grants` expire.
    pub(crate) fn new(grants: &Grants, shutdown: CancellationToken, heartbeat: Duration) -> Self {
        // An `exp` too far off for the clock (up to 2^64 - 1 is accepted)
        // means no end within the process's life.
        let ends_at = grants.expires_at.and_then(|exp| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            Instant::now().checked_add(Duration::from_secs(exp.saturating_sub(now)))
        });
        Self { ends_at, shutdown, heartbeat }
    }
}

/// An SSE response of `frames`, ended as `session` says.
pub(crate) fn respond<S>(frames: S, session: Session) -> Response
where
    S: Stream<Item = Bytes> + Send + Unpin + 'static,
{
    let body = futures_util::stream::unfold(Some((frames, session)), |state| async move {
        let (mut frames, session) = state?;
        let expiry = async {
            match session.ends_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = session.shutdown.cancelled() => None,
            () = expiry => {
                let data = r#"{"reason":"token_expired","message":"Your admin token expired; sign in again."}"#;
                Some((Ok::<_, Infallible>(sse::event_frame(None, Some(EXPIRED_EVENT), data, None)), None))
            }
            () = tokio::time::sleep(session.heartbeat) => Some((Ok(sse::comment("")), Some((frames, session)))),
            // Cancel-safe: an unfinished step stays inside `frames`.
            frame = frames.next() => frame.map(|frame| (Ok(frame), Some((frames, session)))),
        }
    });
    let mut response = Body::from_stream(body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
