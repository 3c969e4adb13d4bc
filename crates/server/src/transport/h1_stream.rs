//! The hand-written stream path: event streams served straight on the socket.
//!
//! Open streams are most of what a hub holds, so what one costs decides how
//! many a node keeps. Through hyper a stream holds a 16 KiB read buffer, an
//! 8 KiB write buffer and a large connection state; served here it holds its
//! socket, its subscription and one small task.
//!
//! The first request of every connection is read here. A plain HTTP/1.1
//! `GET` of an event-stream route goes through the same router (auth, limits,
//! CORS, errors) and its response is written by hand. Anything else, and
//! anything this reader does not fully understand, goes to hyper unchanged
//! with the bytes already read, so hyper stays the one full HTTP server.
//! Which routes stream is the router's one list (`routes::events::STREAM_PATHS`),
//! and the Mercure door's (`mercure::PATH`).

use std::{
    io::{self, IoSlice, Write as _},
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderName, HeaderValue, Method, Request, Version, header},
};
use bytes::Bytes;
use http_body::Body as _;
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::{
    connection_close::ConnectionClose,
    h1_response::{encode_head, encode_whole},
    limits::ConnectionPermit,
    stall::{StallReport, Stalled, WriteStall},
};
use crate::routes::events::STREAM_PATHS;

/// The longest request head read here; longer ones go to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// The most headers read here; more go to hyper.
const MAX_HEADERS: usize = 64;

/// What the first request of a connection turned out to be.
pub(super) enum FirstRequest {
    /// A `GET` of an event-stream route, to serve here.
    Stream(Box<Request<Body>>),
    /// Anything else, for hyper, with the bytes read so far.
    Other(Vec<u8>),
    /// The client closed, or sent no complete head in time: why.
    Gone(ConnectionClose),
}

/// Reads the first request head, by `deadline`, unless the server shuts down first.
pub(super) async fn read_first<S: AsyncRead + Unpin>(
    stream: &mut S,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> FirstRequest {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout_at(deadline, async {
        loop {
            match stream.read_buf(&mut head).await {
                Ok(0) if head.is_empty() => return FirstRequest::Gone(ConnectionClose::ClientGone),
                Ok(0) => return FirstRequest::Other(std::mem::take(&mut head)),
                Ok(_) => {}
                Err(_) => return FirstRequest::Gone(ConnectionClose::Error),
            }
            match parse(&head) {
                Parsed::Stream(request) => return FirstRequest::Stream(request),
                Parsed::Other => return FirstRequest::Other(std::mem::take(&mut head)),
                Parsed::Partial if head.len() >= MAX_HEAD => return FirstRequest::Other(std::mem::take(&mut head)),
                Parsed::Partial => {}
            }
        }
    });
    tokio::select! {
        // Out of time: hyper would close such a connection too.
        read = read => read.unwrap_or(FirstRequest::Gone(ConnectionClose::Error)),
        () = shutdown.cancelled() => FirstRequest::Gone(ConnectionClose::Shutdown),
    }
}

enum Parsed {
    Stream(Box<Request<Body>>),
    Other,
    Partial,
}

fn parse(bytes: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut head = httparse::Request::new(&mut headers);
    let length = match head.parse(bytes) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    // Pipelined bytes after the head would need hyper's buffering.
    if length != bytes.len() || head.method != Some("GET") || head.version != Some(1) {
        return Parsed::Other;
    }
    let Some(target) = head.path.filter(|target| is_stream_route(target)) else {
        return Parsed::Other;
    };
    let mut request = Request::builder().method(Method::GET).version(Version::HTTP_11).uri(target);
    for field in head.headers.iter() {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else { return Parsed::Other };
        // A body, or a protocol switch, is hyper's to handle.
        let bodyless = match name {
            header::CONTENT_LENGTH => field.value == b"0",
            header::TRANSFER_ENCODING | header::UPGRADE | header::EXPECT => false,
            _ => true,
        };
        let Ok(value) = HeaderValue::from_bytes(field.value) else { return Parsed::Other };
        if !bodyless {
            return Parsed::Other;
        }
        request = request.header(name, value);
    }
    request.body(Body::empty()).map_or(Parsed::Other, |request| Parsed::Stream(Box::new(request)))
}

/// Whether `target` is one of the router's stream routes (the Mercure door's
/// included: the router answers 404 when it is off): a `{…}` segment
/// of a route matches any one segment.
fn is_stream_route(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    STREAM_PATHS.iter().chain([&crate::mercure::PATH]).any(|route| {
        let (mut route, mut path) = (route.split('/'), path.split('/'));
        loop {
            match (route.next(), path.next()) {
                (None, None) => return true,
                (Some(wanted), Some(got)) if wanted == got || wanted.starts_with('{') => {}
                _ => return false,
            }
        }
    })
}

/// Answers one event-stream request on the connection `open` gives (a plain
/// socket moved to the streams' runtime, or a TLS one), then closes it and
/// records why it closed; `permit` counts the connection until then.
pub(super) fn serve<S, F>(
    open: F,
    peer: SocketAddr,
    request: Box<Request<Body>>,
    router: Router,
    stall_timeout: Duration,
    shutdown: CancellationToken,
    permit: ConnectionPermit,
) -> impl Future<Output = ()> + Send + 'static
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    F: FnOnce() -> io::Result<S> + Send + 'static,
{
    let stalled = Stalled::default();
    // Boxed, and made here: the request, the router's future and the
    // arguments only they need stay out of the stream's task, which an open
    // stream keeps for its whole life.
    let answer = Box::pin(answer(*request, peer, stalled.clone(), router));
    respond(open, answer, stalled, stall_timeout, shutdown, permit)
}

async fn respond<S: AsyncRead + AsyncWrite + Unpin>(
    open: impl FnOnce() -> io::Result<S>,
    answer: Pin<Box<impl Future<Output = Answer>>>,
    stalled: Stalled,
    stall_timeout: Duration,
    shutdown: CancellationToken,
    _permit: ConnectionPermit,
) {
    // Opened here, on the runtime that runs the stream: a plain socket
    // registers with its reactor.
    let Ok(mut stream) = open() else { return ConnectionClose::Error.record() };
    let answer = answer.await;
    let mut out = Writer { stream: &mut stream, writes: WriteStall::new(stall_timeout, stalled) };
    let result = match answer {
        Answer::Stream(head, body) => match out.write(&mut [IoSlice::new(&head)]).await {
            Ok(()) => {
                drop(head);
                pump(&mut out, body).await
            }
            Err(error) => Err(error),
        },
        Answer::Whole(response) => out.write(&mut [IoSlice::new(&response)]).await,
        Answer::Failed(error) => Err(error),
    };
    let reason = match result {
        _ if out.writes.stalled().is_set() => ConnectionClose::Lagged,
        Ok(()) => {
            let _ = stream.shutdown().await;
            if shutdown.is_cancelled() { ConnectionClose::Shutdown } else { ConnectionClose::StreamEnded }
        }
        Err(error) if error.kind() == io::ErrorKind::Other => ConnectionClose::Error,
        Err(_) => ConnectionClose::ClientGone,
    };
    reason.record();
}

/// The router's answer, ready to write.
enum Answer {
    /// The head of a stream, and its body.
    Stream(Vec<u8>, Body),
    /// A whole response with `connection: close`.
    Whole(Vec<u8>),
    /// The body failed before it was whole.
    Failed(io::Error),
}

async fn answer(mut request: Request<Body>, peer: SocketAddr, stalled: Stalled, router: Router) -> Answer {
    request.extensions_mut().insert(ConnectInfo(peer));
    let Ok(response) = router.oneshot(request).await;
    let (mut parts, body) = response.into_parts();
    StallReport::attach(&mut parts.extensions, &stalled);
    if body.size_hint().exact().is_none() {
        return Answer::Stream(encode_head(&parts, None), body);
    }
    match encode_whole(&parts, body).await {
        Ok(response) => Answer::Whole(response),
        Err(error) => Answer::Failed(io::Error::other(error)),
    }
}

/// Copies the body to the socket as HTTP/1.1 chunks until it ends or the
/// client goes away.
///
/// Written without `select!`: this future lives inside every open stream's
/// task, and a task's size is rounded up to 128 bytes.
async fn pump<S: AsyncRead + AsyncWrite + Unpin>(out: &mut Writer<'_, S>, mut body: Body) -> io::Result<()> {
    loop {
        let next = std::future::poll_fn(|cx| poll_data(&mut body, &mut *out.stream, cx)).await?;
        let Some(data) = next else {
            return out.write(&mut [IoSlice::new(b"0\r\n\r\n")]).await;
        };
        let mut size = [0u8; 20];
        let size = chunk_size(data.len(), &mut size);
        out.write(&mut [IoSlice::new(size), IoSlice::new(&data), IoSlice::new(b"\r\n")]).await?;
    }
}

/// The body's next data (`None` once it ends), noticing meanwhile a
/// client that hangs up, at once rather than at the next write.
fn poll_data<S: AsyncRead + Unpin>(
    body: &mut Body,
    stream: &mut S,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<Bytes>>> {
    loop {
        match Pin::new(&mut *body).poll_frame(cx) {
            Poll::Ready(None) => return Poll::Ready(Ok(None)),
            Poll::Ready(Some(Err(error))) => return Poll::Ready(Err(io::Error::other(error))),
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if !data.is_empty() => return Poll::Ready(Ok(Some(data))),
                _ => continue,
            },
            Poll::Pending => {}
        }
        let mut discard = [0u8; 256];
        let mut read = ReadBuf::new(&mut discard);
        ready!(Pin::new(&mut *stream).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
        }
        // Sent something (it has no business to): ignored; poll again.
    }
}

/// `{len:x}\r\n`, written into `buf`.
fn chunk_size(len: usize, buf: &mut [u8; 20]) -> &[u8] {
    let mut cursor = io::Cursor::new(&mut buf[..]);
    // 16 hex digits and CRLF always fit.
    let _ = write!(cursor, "{len:x}\r\n");
    let end = usize::try_from(cursor.position()).unwrap_or(0);
    &buf[..end]
}

/// The socket, with writes that fail once they make no progress for the stall timeout.
struct Writer<'a, S> {
    stream: &'a mut S,
    writes: WriteStall,
}

impl<S: AsyncWrite + Unpin> Writer<'_, S> {
    async fn write(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            while !slices.is_empty() {
                let poll = Pin::new(&mut *self.stream).poll_write_vectored(cx, slices);
                match ready!(self.writes.guard(cx, poll))? {
                    0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    written => IoSlice::advance_slices(&mut slices, written),
                }
            }
            // TLS keeps what it encrypted until flushed; a plain socket has nothing to flush.
            let flushed = Pin::new(&mut *self.stream).poll_flush(cx);
            self.writes.guard(cx, flushed)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> &'static str {
        match parse(head.as_bytes()) {
            Parsed::Stream(_) => "stream",
            Parsed::Other => "other",
            Parsed::Partial => "partial",
        }
    }

    #[test]
    fn only_whole_plain_stream_gets_are_served_here() {
        assert_eq!(parsed("GET /topics/a/events HTTP/1.1\r\nHost: x\r\n\r\n"), "stream");
        assert_eq!(parsed("GET /events?topic=a&topic=b HTTP/1.1\r\nHost: x\r\n\r\n"), "stream");
        assert_eq!(parsed("GET /topics/a/events HTTP/1.1\r\nHost: x\r\n"), "partial");
        for other in [
            "POST /topics/a/events HTTP/1.1\r\nHost: x\r\n\r\n",
            "HEAD /topics/a/events HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /topics/a/events HTTP/1.0\r\nHost: x\r\n\r\n",
            "GET /topics HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /topics/a/events HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            "GET /topics/a/events HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /topics/a/events HTTP/1.1\r\nUpgrade: h2c\r\n\r\n",
            "GET /topics/a/events HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "\u{1}\u{2} not http at all\r\n\r\n",
        ] {
            assert_eq!(parsed(other), "other", "{other:?}");
        }
    }

    #[test]
    fn stream_routes_are_the_two_event_paths() {
        assert!(is_stream_route("/events"));
        assert!(is_stream_route("/events?topic=a"));
        assert!(is_stream_route("/topics/orders.eu/events?last_event_id=x"));
        assert!(!is_stream_route("/topics/a"));
        assert!(!is_stream_route("/eventsx"));
        assert!(!is_stream_route("/admin/live"));
        assert!(!is_stream_route("/topics/a/b/events"));
        assert!(is_stream_route("/.well-known/mercure?topic=%2Fa"));
        assert!(!is_stream_route("/.well-known/mercure/subscriptions"));
    }

    #[test]
    fn chunks_are_framed_by_their_hex_size() {
        let mut size = [0u8; 20];
        assert_eq!(chunk_size(0x1f3, &mut size), b"1f3\r\n");
        assert_eq!(chunk_size(usize::MAX, &mut size), b"ffffffffffffffff\r\n");
    }
}
