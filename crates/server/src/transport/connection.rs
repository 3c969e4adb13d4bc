//! One client connection: HTTP/1.1 or HTTP/2 over a socket guarded against
//! slow clients. A first request that opens an event stream is answered by
//! the hand-written stream path (`h1_stream`); everything else by hyper.
//!
//! - A request head must be whole within `--header-timeout` of its first
//!   byte (slowloris); a new connection's first head, of the connection. The
//!   time the first-request reader spent counts: hyper gets what is left.
//! - A request body must be whole within `--body-timeout` of its head, or the
//!   request is answered 408 and the connection closed (`request_body`).
//! - A keep-alive connection with no request in flight for
//!   `--idle-timeout` is closed; the wait for the next request is timed by
//!   this alone. An open event stream is a request in flight, so streams are
//!   never closed as idle. An HTTP/2 peer that sends nothing for
//!   `--idle-timeout` is pinged, and cut if it does not answer within
//!   `--stall-timeout`.
//! - A write that cannot make progress for `--stall-timeout` (a client that
//!   stopped reading) fails the connection and is counted as lagged; an
//!   HTTP/2 stream whose window stays shut that long is cut alone
//!   (`h2_stream`). Both are the stall guard's (`stall`).
//! - At shutdown, or when idle, the connection finishes in-flight requests
//!   and closes, within `--shutdown-grace` even if the client ignores it.

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
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo};
use hyper::{Request, body::Incoming};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep, sleep_until},
};
use tower::ServiceExt as _;

use super::{
    connection_close::ConnectionClose,
    deadline,
    h1_stream::{self, FirstRequest},
    h2_stream::{Pull, StreamExecutor},
    limits::ConnectionPermit,
    request_body,
    stall::{StallReport, Stalled, WriteStall},
    stream_runtime::StreamTasks,
    tls_stream,
};
use crate::state::AppState;

/// Handles one accepted connection until it ends, or hands it to `streams`.
pub(super) async fn handle(
    mut stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    state: AppState,
    permit: ConnectionPermit,
    streams: StreamTasks,
) {
    let head_deadline = deadline::after(Instant::now(), state.config.header_timeout);
    let reason = match h1_stream::read_first(&mut stream, head_deadline, &state.shutdown).await {
        FirstRequest::Stream(request) => {
            // Moved to the streams' runtime: the socket re-registers with its reactor.
            let Ok(stream) = stream.into_std() else { return ConnectionClose::Error.record() };
            let open = move || TcpStream::from_std(stream);
            return spawn_stream(&streams, open, peer, request, router, &state, permit);
        }
        // Boxed: only connections that need hyper carry its state.
        FirstRequest::Other(read) => {
            Box::pin(with_hyper(stream, read, false, head_deadline, peer, router, state)).await
        }
        FirstRequest::Gone(reason) => reason,
    };
    drop(permit);
    reason.record();
}

/// Serves an event stream on the connection `open` gives, as a task of the
/// streams' runtime.
fn spawn_stream<S, F>(
    streams: &StreamTasks,
    open: F,
    peer: SocketAddr,
    request: Box<axum::http::Request<Body>>,
    router: Router,
    state: &AppState,
    permit: ConnectionPermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce() -> io::Result<S> + Send + 'static,
{
    let (stall_timeout, shutdown) = (state.config.stall_timeout, state.shutdown.clone());
    let stream = h1_stream::serve(open, peer, request, router, stall_timeout, shutdown, permit);
    streams.runtime.spawn(streams.tracker.track_future(stream));
}

/// Handles one accepted HTTPS connection: the TLS handshake, within the
/// head deadline; then HTTP/2 (as ALPN chose) through hyper, or HTTP/1.1
/// as a plain connection is (an event stream on the hand-written path,
/// anything else through hyper).
pub(super) async fn handle_tls(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    state: AppState,
    permit: ConnectionPermit,
    tls_config: Arc<rustls::ServerConfig>,
    streams: StreamTasks,
) {
    let head_deadline = deadline::after(Instant::now(), state.config.header_timeout);
    let shutdown = state.shutdown.clone();
    let handshake = tokio::time::timeout_at(head_deadline, tls_stream::accept(stream, tls_config));
    let reason = tokio::select! {
        accepted = handshake => match accepted {
            Ok(Ok(tls)) if tls.alpn_protocol() == Some(b"h2".as_slice()) => {
                Box::pin(with_hyper(tls, Vec::new(), true, head_deadline, peer, router, state)).await
            }
            // An ACME CA's validator: it is done once it saw the challenge
            // certificate, and goes.
            Ok(Ok(tls)) if tls.alpn_protocol() == Some(crate::tls::ACME_TLS_ALPN) => {
                ConnectionClose::ClientGone
            }
            Ok(Ok(mut tls)) => match h1_stream::read_first(&mut tls, head_deadline, &shutdown).await {
                // As a plain stream is, on the hand-written path; its socket
                // stays with this runtime's reactor.
                FirstRequest::Stream(request) => {
                    return spawn_stream(&streams, move || Ok(tls), peer, request, router, &state, permit);
                }
                FirstRequest::Other(read) => {
                    Box::pin(with_hyper(tls, read, false, head_deadline, peer, router, state)).await
                }
                FirstRequest::Gone(reason) => reason,
            },
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "TLS handshake failed");
                ConnectionClose::Error
            }
            Err(_) => ConnectionClose::Error,
        },
        () = shutdown.cancelled() => ConnectionClose::Shutdown,
    };
    drop(permit);
    reason.record();
}

/// Runs a connection with hyper; `read` is what was read of it already,
/// `h2` whether TLS chose HTTP/2 for it, and `head_deadline` when the head
/// begun there must be whole.
async fn with_hyper<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    stream: S,
    read: Vec<u8>,
    h2: bool,
    head_deadline: Instant,
    peer: SocketAddr,
    router: Router,
    state: AppState,
) -> ConnectionClose {
    let config = &state.config;
    let activity = Arc::new(Activity::new());
    let requests = Arc::clone(&activity);
    let stalled = Stalled::default();
    let stall_flag = stalled.clone();
    let body_timeout = config.body_timeout;
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        // The head is whole: from here the body's time runs.
        let busy = Busy::new(&requests);
        let (request, body) = request.into_parts();
        let (body, late) = request_body::with_deadline(body, body_timeout);
        let mut request = Request::from_parts(request, body);
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        let connection_stalled = stall_flag.clone();
        async move {
            let mut response = router.oneshot(request).await?;
            // Run by the stream's own task under HTTP/2, which knows it.
            let pull = Pull::current();
            let stalled = pull.as_ref().map_or(&connection_stalled, |pull| &pull.stalled);
            StallReport::attach(response.extensions_mut(), stalled);
            let response = match late {
                Some(late) if late.is_set() => request_body::late_response(body_timeout),
                _ => response,
            };
            Ok::<_, std::convert::Infallible>(response.map(|body| Body::new(Tracked { body, pull, _busy: busy })))
        }
    });
    let executor =
        StreamExecutor { stalled: stalled.clone(), stall_timeout: config.stall_timeout, tasks: state.tasks.clone() };
    let mut builder = auto::Builder::new(executor);
    // Heads are timed by the `GuardedSocket`: hyper's timer would also time the
    // wait between requests, which is the idle timeout's.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(deadline::bounded(config.idle_timeout))
        .keep_alive_timeout(deadline::bounded(config.stall_timeout))
        .max_concurrent_streams(config.max_streams_per_connection);
    let heads = (!h2 && !read.starts_with(H2_PREFACE))
        .then(|| Heads::new(&activity, config.header_timeout, head_deadline, &read));
    let writes = WriteStall::new(config.stall_timeout, stalled.clone());
    let io = TokioIo::new(GuardedSocket { stream, unread: read, consumed: 0, heads, writes });
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    let mut closing = None;
    // Armed by a graceful shutdown: a client that ignores it (an HTTP/2 peer
    // that never answers GOAWAY's PING) does not keep the connection.
    let hard_stop = tokio::time::sleep(Duration::ZERO);
    tokio::pin!(hard_stop);
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                return match result {
                    _ if stalled.is_set() => ConnectionClose::Lagged,
                    Err(error) => {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                        closing.unwrap_or(ConnectionClose::Error)
                    }
                    Ok(()) => closing.unwrap_or(ConnectionClose::ClientGone),
                };
            }
            () = state.shutdown.cancelled(), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                hard_stop.as_mut().reset(deadline::after(Instant::now(), config.shutdown_grace));
                closing = Some(ConnectionClose::Shutdown);
            }
            () = idle_for(&activity, config.idle_timeout), if closing.is_none() => {
                connection.as_mut().graceful_shutdown();
                hard_stop.as_mut().reset(deadline::after(Instant::now(), config.shutdown_grace));
                closing = Some(ConnectionClose::Idle);
            }
            () = hard_stop.as_mut(), if closing.is_some() => {
                tracing::debug!(%peer, "connection did not close within the grace period; dropping it");
                return closing.unwrap_or(ConnectionClose::Shutdown);
            }
        }
    }
}

/// How an HTTP/2 connection with prior knowledge begins.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Requests in flight on one connection, and since when it has had none.
/// Atomics rather than a channel: a request costs three increments, not a
/// wake-up of the connection's task and a timer each.
struct Activity {
    in_flight: AtomicUsize,
    /// Requests whose head was whole, ever: tells a head timer its head is done.
    started: AtomicU64,
    /// When the last request ended (or the next one's head began), in ms after `start`.
    idle_since_ms: AtomicU64,
    start: std::time::Instant,
}

impl Activity {
    fn new() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            idle_since_ms: AtomicU64::new(0),
            start: std::time::Instant::now(),
        }
    }

    /// Restarts the idle clock: a head has begun, and the header timeout times it.
    fn touch(&self) {
        self.idle_since_ms.store(self.elapsed_ms(), Ordering::Release);
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
        activity.started.fetch_add(1, Ordering::AcqRel);
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

/// A response body that keeps its request counted as in flight, and tells
/// an HTTP/2 stream's task what it gave hyper.
struct Tracked {
    body: Body,
    pull: Option<Arc<Pull>>,
    _busy: Busy,
}

impl http_body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        if let Some(pull) = &self.pull {
            pull.note(&poll);
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

/// Times HTTP/1.1 request heads: each must be whole within the header
/// timeout of its first byte. Only reads look at it; a request costs one
/// clock read and no timer unless its head arrives in pieces.
struct Heads {
    activity: Arc<Activity>,
    timeout: Duration,
    /// The head being read, if one has begun and not been handed to the service.
    current: Option<Head>,
}

struct Head {
    deadline: Instant,
    /// `Activity::started` when it began: once that moves, the head is whole.
    started: u64,
    /// Made only when the head does not arrive in one read.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Heads {
    /// Heads of a connection; `read` (the bytes the first-request reader took),
    /// if any, began a head that is due by `deadline`.
    fn new(activity: &Arc<Activity>, timeout: Duration, deadline: Instant, read: &[u8]) -> Self {
        let current = (!read.is_empty()).then_some(Head { deadline, started: 0, timer: None });
        Self { activity: Arc::clone(activity), timeout, current }
    }

    /// Fails once the head being read is overdue.
    fn poll_overdue(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let started = self.activity.started.load(Ordering::Acquire);
        if self.current.as_ref().is_some_and(|head| head.started != started) {
            self.current = None;
        }
        let Some(head) = &mut self.current else { return Poll::Pending };
        let deadline = head.deadline;
        head.timer.get_or_insert_with(|| Box::pin(sleep_until(deadline))).as_mut().poll(cx)
    }

    /// Bytes arrived: with no request in flight, they begin a head.
    fn on_bytes(&mut self) {
        if self.current.is_some() || self.activity.in_flight.load(Ordering::Acquire) > 0 {
            return;
        }
        let now = Instant::now();
        let started = self.activity.started.load(Ordering::Acquire);
        self.current = Some(Head { deadline: deadline::after(now, self.timeout), started, timer: None });
        self.activity.touch();
    }
}

/// The socket as hyper sees it: writes under the stall guard; reads start
/// with the bytes read before hyper took it over, and fail once an HTTP/1.1
/// head is overdue.
struct GuardedSocket<S> {
    stream: S,
    unread: Vec<u8>,
    consumed: usize,
    /// `None` for HTTP/2, whose requests are frames.
    heads: Option<Heads>,
    writes: WriteStall,
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedSocket<S> {
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
        if let Some(heads) = &mut self.heads
            && heads.poll_overdue(cx).is_ready()
        {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "request head not whole in time")));
        }
        let filled = buf.filled().len();
        ready!(Pin::new(&mut self.stream).poll_read(cx, buf))?;
        if let Some(heads) = &mut self.heads
            && buf.filled().len() > filled
        {
            heads.on_bytes();
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedSocket<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.writes.guard(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.writes.guard(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.stream).poll_flush(cx);
        self.writes.guard(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
