//! Event streams over HTTP/2 on TLS, many to a connection, as a browser's
//! `EventSource`s of one site share one: the first stream of a connection
//! opens it, the others wait for it, and the connection closes when its last
//! stream is gone. A stream's DATA frames go to its [`EventCounter`] as they
//! come (HTTP/2 frames the body itself: no chunked coding).

use anyhow::{Context as _, bail};
use bytes::Bytes;
use h2::{RecvStream, client::SendRequest};
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use tokio::sync::OnceCell;
use tokio_util::task::AbortOnDropHandle;

use crate::{connect::Dialer, event_counter::EventCounter, run::Shared, tally::Tally, tls::Alpn, url::Target};

/// Flow-control windows the client grants, a browser's (Chrome's: 6 MiB per
/// stream, 15 MiB per connection): a lagging reader is held back by TCP as
/// it would be over HTTP/1.1, not by a window a real client would not set.
const STREAM_WINDOW: u32 = 6 << 20;
/// See [`STREAM_WINDOW`].
const CONNECTION_WINDOW: u32 = 15 << 20;

/// One HTTP/2 connection, opened by the first of its streams.
pub struct H2Connection {
    /// The server (address, TLS name, `:authority`).
    target: Target,
    dialer: Dialer,
    /// Extra request headers of every stream.
    headers: HeaderMap,
    open: OnceCell<Open>,
}

/// An open connection.
struct Open {
    send: SendRequest<Bytes>,
    /// Drives the connection (all of its streams' I/O); ends with it.
    _driver: AbortOnDropHandle<()>,
}

impl H2Connection {
    /// A connection to `target`'s server opened with `dialer`, whose streams
    /// carry `header_lines` (each `Name: value` and CRLF).
    pub fn new(target: Target, dialer: Dialer, header_lines: &str) -> anyhow::Result<Self> {
        Ok(Self { target, dialer, headers: header_map(header_lines)?, open: OnceCell::new() })
    }

    /// Opens the event stream at `path` (with its query) on this connection.
    pub async fn open_stream(&self, path: &str) -> anyhow::Result<RecvStream> {
        let open = self.open.get_or_try_init(|| self.connect()).await?;
        let mut request = Request::get(format!("https://{}{path}", self.target.host_header))
            .header("accept", "text/event-stream")
            .header("cache-control", "no-cache")
            .body(())?;
        request.headers_mut().extend(self.headers.clone());
        let (response, _) = open.send.clone().ready().await?.send_request(request, true)?;
        let response = response.await?;
        if response.status() != 200 {
            bail!("GET {path}: status {}", response.status());
        }
        Ok(response.into_body())
    }

    async fn connect(&self) -> anyhow::Result<Open> {
        let io = self.dialer.dial(&self.target, Alpn::H2).await?;
        let (send, connection) = client().handshake(io).await?;
        let driver = AbortOnDropHandle::new(tokio::spawn(async move {
            // Its end (or error) reaches every stream as theirs.
            let _ = connection.await;
        }));
        Ok(Open { send, _driver: driver })
    }
}

/// The client's settings. Its windows also size h2's allowance of small
/// DATA frames buffered unread (half the connection window): a reader that
/// falls behind a server writing one event a frame is slowed, not cut.
fn client() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder.initial_window_size(STREAM_WINDOW).initial_connection_window_size(CONNECTION_WINDOW).enable_push(false);
    builder
}

/// Counts the events of `body` until the run is cancelled (`Ok`) or the
/// stream ends or fails.
pub async fn count(
    mut body: RecvStream,
    counter: &mut EventCounter,
    tally: &mut Tally,
    shared: &Shared,
) -> anyhow::Result<()> {
    loop {
        let data = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => return Ok(()),
            data = body.data() => data,
        };
        let Some(data) = data else { bail!("the server ended the stream") };
        let data = data?;
        // Read at once: the window reopens as fast as a browser's would.
        body.flow_control().release_capacity(data.len())?;
        let now_us = shared.now_us();
        counter.feed(&data, now_us, shared.nonce, tally)?;
        counter.settle(now_us, tally, shared);
    }
}

/// `Name: value` lines as HTTP/2 headers (names lowercased, as HTTP/2 wants).
fn header_map(lines: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for line in lines.split("\r\n").filter(|line| !line.is_empty()) {
        let Some((name, value)) = line.split_once(':') else { bail!("header `{line}` is not `Name: value`") };
        let name = HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes())
            .with_context(|| format!("header name `{name}`"))?;
        let value = HeaderValue::from_str(value.trim()).with_context(|| format!("header `{name}`'s value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{self, Payload};

    /// The SSE body of events `seqs` of the run with `nonce`, heartbeats
    /// between them, CRLF line ends on the odd ones.
    fn wire(nonce: u32, seqs: std::ops::Range<u64>) -> Vec<u8> {
        let mut out = String::from("retry: 3000\n: herald stream open\n\n");
        for seq in seqs {
            let mut data = String::new();
            payload::encode(&mut data, Payload { nonce, seq, sent_us: 1 }, 100);
            let end = if seq % 2 == 1 { "\r\n" } else { "\n" };
            out.push_str(&format!("id: {seq:08}{end}data: {data}{end}{end}: heartbeat{end}"));
        }
        out.into_bytes()
    }

    /// Serves one stream whose body is `body` in DATA frames of `frame`
    /// bytes over an in-memory HTTP/2 connection, and counts it as a
    /// subscriber of a run of `events` events would.
    async fn count_over_h2(shared: &Shared, body: Vec<u8>, frame: usize, events: u64) -> (Tally, anyhow::Result<()>) {
        let (client_io, server_io) = tokio::io::duplex(64 << 10);
        let server = tokio::spawn(async move {
            let mut connection = h2::server::handshake(server_io).await.unwrap();
            let (_, mut respond) = connection.accept().await.unwrap().unwrap();
            let mut stream = respond.send_response(http::Response::new(()), false).unwrap();
            for piece in body.chunks(frame) {
                stream.send_data(Bytes::copy_from_slice(piece), false).unwrap();
            }
            stream.send_data(Bytes::new(), true).unwrap();
            // Drives the connection until the client goes.
            while connection.accept().await.is_some() {}
        });
        let (send, connection) = client().handshake::<_, Bytes>(client_io).await.unwrap();
        let driver = tokio::spawn(connection);
        let request = Request::get("https://localhost/topics/t/events").body(()).unwrap();
        let (response, _) = send.ready().await.unwrap().send_request(request, true).unwrap();
        let body = response.await.unwrap().into_body();
        let mut tally = Tally::new(0, 1, events, true);
        let counted = count(body, &mut EventCounter::default(), &mut tally, shared).await;
        driver.abort();
        server.abort();
        (tally, counted)
    }

    #[tokio::test]
    async fn events_split_across_data_frames_are_each_counted_once() {
        for frame in [1, 7, 100, 16 << 10] {
            let shared = Shared::new(1);
            let (tally, counted) = count_over_h2(&shared, wire(shared.nonce, 0..50), frame, 50).await;
            let error = counted.unwrap_err().to_string();
            assert!(error.contains("ended the stream"), "frame {frame}: {error}");
            assert!(!tally.has_errors(), "frame {frame}: {tally:?}");
            assert_eq!(shared.delivered.load(std::sync::atomic::Ordering::Relaxed), 50, "frame {frame}");
            assert_eq!(shared.completed.load(std::sync::atomic::Ordering::Relaxed), 1, "frame {frame}");
        }
    }

    #[tokio::test]
    async fn another_runs_events_and_missing_ones_are_errors() {
        let shared = Shared::new(1);
        // Events 0..40 of this run, then two of another run.
        let mut body = wire(shared.nonce, 0..40);
        body.extend(wire(shared.nonce ^ 1, 40..42));
        let (tally, _) = count_over_h2(&shared, body, 333, 50).await;
        assert_eq!((tally.unique, tally.missing(), tally.unexpected), (40, 10, 2));
        assert!(tally.has_errors());
        assert_eq!(shared.completed.load(std::sync::atomic::Ordering::Relaxed), 0);
    }

    #[test]
    fn header_lines_become_lowercase_headers() {
        let headers = header_map("Authorization: Bearer abc\r\nX-Two: a\r\nX-Two: b\r\n").unwrap();
        assert_eq!(headers["authorization"], "Bearer abc");
        assert_eq!(headers.get_all("x-two").iter().count(), 2);
        assert!(header_map("").unwrap().is_empty());
        assert!(header_map("No colon here\r\n").is_err());
        assert!(header_map("Bad Name: x\r\n").is_err(), "a space is not allowed in a header name");
    }
}
