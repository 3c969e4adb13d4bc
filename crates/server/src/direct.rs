//! Event streams served straight on the socket.
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

use std::{
    future::Future as _,
    io::{self, IoSlice, Write as _},
    net::SocketAddr,
    pin::Pin,
    task::{Poll, ready},
    time::{Duration, SystemTime},
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{HeaderName, HeaderValue, Method, Request, Version, header, response::Parts},
};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
    time::{Instant, Sleep, sleep},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::connection::Stalled;

/// The longest request head read here; longer ones go to hyper.
const MAX_HEAD: usize = 16 * 1024;
/// The most headers read here; more go to hyper.
const MAX_HEADERS: usize = 64;

/// What the first request of a connection turned out to be.
pub enum FirstRequest {
    /// A `GET` of an event-stream route, to serve here.
    Stream(Box<Request<Body>>),
    /// Anything else, for hyper, with the bytes read so far.
    Other(Vec<u8>),
    /// The client closed, or sent no complete head in time: why.
    Gone(&'static str),
}

/// Reads the first request head, by `deadline`, unless the server shuts down first.
pub async fn read_first(stream: &mut TcpStream, deadline: Instant, shutdown: &CancellationToken) -> FirstRequest {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout_at(deadline, async {
        loop {
            match stream.read_buf(&mut head).await {
                Ok(0) if head.is_empty() => return FirstRequest::Gone("client_gone"),
                Ok(0) => return FirstRequest::Other(std::mem::take(&mut head)),
                Ok(_) => {}
                Err(_) => return FirstRequest::Gone("error"),
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
        read = read => read.unwrap_or(FirstRequest::Gone("error")),
        () = shutdown.cancelled() => FirstRequest::Gone("shutdown"),
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

/// `/events…` or `/topics/{topic}/events…`: the routes that answer with a stream.
fn is_stream_route(target: &str) -> bool {
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    path == "/events" || (path.starts_with("/topics/") && path.ends_with("/events"))
}

/// Serves one event-stream request, then closes the connection; returns why
/// it closed (for `herald_connections_closed_total`).
pub async fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    request: Box<Request<Body>>,
    router: Router,
    stall_timeout: Duration,
    shutdown: &CancellationToken,
) -> &'static str {
    let stalled = Stalled::default();
    // Boxed: the request and the router's future stay out of the task's
    // size, which an open stream keeps for its whole life.
    let answer = Box::pin(answer(*request, peer, &stalled, router)).await;
    let mut out = Writer { stream: &mut stream, stall_timeout, stalled: &stalled };
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
    match result {
        _ if stalled.is_set() => "lagged",
        Ok(()) => {
            let _ = stream.shutdown().await;
            if shutdown.is_cancelled() { "shutdown" } else { "stream_ended" }
        }
        Err(error) if error.kind() == io::ErrorKind::Other => "error",
        Err(_) => "client_gone",
    }
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

async fn answer(mut request: Request<Body>, peer: SocketAddr, stalled: &Stalled, router: Router) -> Answer {
    request.extensions_mut().insert(ConnectInfo(peer));
    request.extensions_mut().insert(stalled.clone());
    let Ok(response) = router.oneshot(request).await;
    let (parts, body) = response.into_parts();
    if body.size_hint().exact().is_none() {
        return Answer::Stream(encode_head(&parts, None), body);
    }
    match body.collect().await {
        Ok(whole) => {
            let whole = whole.to_bytes();
            let mut response = encode_head(&parts, Some(whole.len()));
            response.extend_from_slice(&whole);
            Answer::Whole(response)
        }
        Err(error) => Answer::Failed(io::Error::other(error)),
    }
}

/// Copies the body to the socket as HTTP/1.1 chunks until it ends or the
/// client goes away.
async fn pump(out: &mut Writer<'_>, mut body: Body) -> io::Result<()> {
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                None => return out.write(&mut [IoSlice::new(b"0\r\n\r\n")]).await,
                Some(Err(error)) => return Err(io::Error::other(error)),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    let mut size = [0u8; 20];
                    let size = chunk_size(data.len(), &mut size);
                    out.write(&mut [IoSlice::new(size), IoSlice::new(&data), IoSlice::new(b"\r\n")]).await?;
                }
            },
            // A client that hangs up is noticed at once, not at the next write.
            ready = std::future::poll_fn(|cx| out.stream.poll_read_ready(cx)) => {
                ready?;
                let mut discard = [0u8; 256];
                match out.stream.try_read(&mut discard) {
                    Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => return Err(error),
                }
            }
        }
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
struct Writer<'a> {
    stream: &'a mut TcpStream,
    stall_timeout: Duration,
    stalled: &'a Stalled,
}

impl Writer<'_> {
    async fn write(&mut self, mut slices: &mut [IoSlice<'_>]) -> io::Result<()> {
        // Made only when a write cannot go through at once.
        let mut stall: Option<Pin<Box<Sleep>>> = None;
        std::future::poll_fn(|cx| {
            while !slices.is_empty() {
                match Pin::new(&mut *self.stream).poll_write_vectored(cx, slices) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(written)) => {
                        IoSlice::advance_slices(&mut slices, written);
                        stall = None;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {
                        let timeout = self.stall_timeout;
                        ready!(stall.get_or_insert_with(|| Box::pin(sleep(timeout))).as_mut().poll(cx));
                        self.stalled.set();
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")));
                    }
                }
            }
            Poll::Ready(Ok(()))
        })
        .await
    }
}

/// The status line and headers, with `date`, `connection: close`, and the
/// body's framing: chunked for a stream, else its length.
fn encode_head(response: &Parts, length: Option<usize>) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let status = response.status;
    let _ = write!(head, "HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or(""));
    for (name, value) in &response.headers {
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING || name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let _ = write!(head, "date: {}\r\n", httpdate::fmt_http_date(SystemTime::now()));
    match length {
        // The connection ends with the stream: say so, or a keep-alive client
        // would send its next request into a closing socket.
        None => head.extend_from_slice(b"transfer-encoding: chunked\r\nconnection: close\r\n\r\n"),
        Some(length) => {
            let _ = write!(head, "connection: close\r\ncontent-length: {length}\r\n\r\n");
        }
    }
    head
}

#[cfg(test)]
mod tests {
    use axum::http::{Response, StatusCode};

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
    }

    #[test]
    fn heads_close_the_connection_and_frame_the_body() {
        let (mut parts, ()) = Response::new(()).into_parts();
        parts.status = StatusCode::OK;
        parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("99"));
        let stream = String::from_utf8(encode_head(&parts, None)).unwrap();
        assert!(stream.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ndate: "), "{stream}");
        assert!(stream.ends_with("transfer-encoding: chunked\r\nconnection: close\r\n\r\n"), "{stream}");
        assert!(!stream.contains("content-length"), "{stream}");
        let whole = String::from_utf8(encode_head(&parts, Some(12))).unwrap();
        assert!(whole.ends_with("connection: close\r\ncontent-length: 12\r\n\r\n"), "{whole}");
        let mut size = [0u8; 20];
        assert_eq!(chunk_size(0x1f3, &mut size), b"1f3\r\n");
        assert_eq!(chunk_size(usize::MAX, &mut size), b"ffffffffffffffff\r\n");
    }
}
