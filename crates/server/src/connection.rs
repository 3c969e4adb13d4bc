//! One client connection: HTTP/1.1 or HTTP/2 over a socket guarded against
//! slow clients. A first request that opens an event stream is served
//! directly (see `direct`); everything else by hyper.
//!
//! - A request head must arrive within `--header-timeout` (slowloris).
//! - A keep-alive connection with no request in flight for
//!   `--idle-timeout` is closed; an open event stream is a request in flight,
//!   so streams are never closed as idle.
//! - A write that cannot make progress for `--stall-timeout` (a client that
//!   stopped reading) fails the connection and is counted as lagged.
//! - At shutdown the connection finishes in-flight requests and closes.

use std::{
    future::Future as _,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll, ready},
    time::{Duration, Instant},
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::Sleep,
};
use tower::ServiceExt as _;

use crate::{
    direct::{self, FirstRequest},
    limits::ConnectionPermit,
    state::AppState,
    stream_runtime::StreamTasks,
};

/// Serves one accepted connection until it ends, or hands it to `streams`.
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    state: AppState,
    permit: ConnectionPermit,
    streams: StreamTasks,
) {
    let reason = match direct::read_first(&mut stream, state.config.header_timeout, &state.shutdown).await {
        FirstRequest::Stream(request) => {
            // Moved to the streams' runtime: the socket re-registers with its reactor.
            let Ok(stream) = stream.into_std() else { return closed("error") };
            let stall_timeout = state.config.stall_timeout;
            let shutdown = state.shutdown.clone();
            let task = streams.tracker.track_future(async move {
                let _permit = permit;
                let reason = match TcpStream::from_std(stream) {
                    Ok(stream) => direct::serve(stream, peer, request, router, stall_timeout, &shutdown).await,
                    Err(_) => "error",
                };
                closed(reason);
            });
            streams.runtime.spawn(task);
            return;
        }
        // Boxed: only connections that need hyper carry its state.
        FirstRequest::Other(read) => Box::pin(serve_with_hyper(stream, read, peer, router, state)).await,
        FirstRequest::Gone(reason) => reason,
    };
    drop(permit);
    closed(reason);
}

fn closed(reason: &'static str) {
    metrics::counter!("herald_connections_closed_total", "reason" => reason).increment(1);
}

/// Serves a connection with hyper; `read` is what was read of it already.
async fn serve_with_hyper(
    stream: TcpStream,
    read: Vec<u8>,
    peer: SocketAddr,
    router: Router,
    state: AppState,
) -> &'static str {
    let activity = Arc::new(Activity::new());
    let requests = Arc::clone(&activity);
    let stalled = Stalled::default();
    let stall_flag = stalled.clone();
    let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(stall_flag.clone());
        let busy = Busy::new(&requests);
        let response = router.clone().oneshot(request.map(Body::new));
        async move {
            let response = response.await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| Body::new(Tracked { body, _busy: busy })))
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(state.config.header_timeout);
    builder.http2().timer(TokioTimer::new());
    let io = TokioIo::new(StallGuard::new(stream, read, state.config.stall_timeout, stalled.clone()));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = None;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                return match result {
                    _ if stalled.is_set() => "lagged",
                    Err(error) => {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                        closing.unwrap_or("error")
                    }
                    Ok(()) => closing.unwrap_or("client_gone"),
                };
            }
            () = state.shutdown.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some("shutdown");
            }
            () = idle_for(&activity, state.config.idle_timeout), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing = Some("idle");
            }
        }
    }
}

/// Requests in flight on one connection, and since when it has had none.
/// Atomics rather than a channel: a request costs two increments, not a
/// wake-up of the connection's task and a timer each.
struct Activity {
    in_flight: AtomicUsize,
    /// When the last request ended, in ms after `start`.
    idle_since_ms: AtomicU64,
    start: Instant,
}

impl Activity {
    fn new() -> Self {
        Self { in_flight: AtomicUsize::new(0), idle_since_ms: AtomicU64::new(0), start: Instant::now() }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long until the connection has been idle for `timeout`; `None`
    /// while a request is in flight.
    fn idle_left(&self, timeout: Duration) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle = Duration::from_millis(self.elapsed_ms().saturating_sub(self.idle_since_ms.load(Ordering::Acquire)));
        Some(timeout.saturating_sub(idle))
    }
}

/// Completes once no request has been in flight for `timeout`. Checks when
/// the timeout could first have passed, so requests never wake it.
async fn idle_for(activity: &Activity, timeout: Duration) {
    loop {
        match activity.idle_left(timeout) {
            Some(Duration::ZERO) => return,
            Some(left) => tokio::time::sleep(left).await,
            None => tokio::time::sleep(timeout).await,
        }
    }
}

/// Counts a request as in flight until its response body is done.
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let activity = &self.0;
        // The time first, so a check that sees no request in flight sees it.
        activity.idle_since_ms.store(activity.elapsed_ms(), Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight.
struct Tracked {
    body: Body,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Set when a connection is cut for stalling, so its stream can say why it ended.
#[derive(Debug, Clone, Default)]
pub struct Stalled(Arc<std::sync::atomic::AtomicBool>);

impl Stalled {
    /// Whether the connection was cut because the client stopped reading.
    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set(&self) {
        metrics::counter!("herald_lagged_disconnects_total").increment(1);
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A socket whose writes fail once they have made no progress for `timeout`;
/// reads start with the bytes read before hyper took it over.
struct StallGuard {
    stream: TcpStream,
    unread: Vec<u8>,
    consumed: usize,
    timeout: Duration,
    stalled_since: Option<Pin<Box<Sleep>>>,
    stalled: Stalled,
}

impl StallGuard {
    fn new(stream: TcpStream, unread: Vec<u8>, timeout: Duration, stalled: Stalled) -> Self {
        Self { stream, unread, consumed: 0, timeout, stalled_since: None, stalled }
    }

    fn guard<T>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match result {
            Poll::Ready(result) => {
                self.stalled_since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self.stalled_since.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                ready!(timer.as_mut().poll(cx));
                self.stalled.set();
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")))
            }
        }
    }
}

impl AsyncRead for StallGuard {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.consumed < self.unread.len() && buf.remaining() > 0 {
            let n = buf.remaining().min(self.unread.len() - self.consumed);
            buf.put_slice(&self.unread[self.consumed..self.consumed + n]);
            self.consumed += n;
            if self.consumed == self.unread.len() {
                self.unread = Vec::new();
                self.consumed = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for StallGuard {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.guard(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.guard(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
