//! `herald-bench grip-origin`: the smallest GRIP origin Pushpin needs to
//! hold Server-Sent Events streams.
//!
//! Pushpin is a proxy: a subscriber's `GET` goes through it (and its `zurl`
//! client) to an origin, and the origin's answer tells Pushpin what to do.
//! This one answers every `GET /ANY/PATH/CHANNEL` with `200`,
//! `Content-Type: text/event-stream`, `Grip-Hold: stream`,
//! `Grip-Channel: CHANNEL` and an empty body, then closes the connection;
//! Pushpin keeps the subscriber's stream open on that channel, and what is
//! published to the channel is written to it. Loopback only.

use std::{net::SocketAddr, time::Duration};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

/// Longest request head read; a longer one is answered 431.
const MAX_HEAD: usize = 8 << 10;
/// Longest channel name accepted.
const MAX_CHANNEL: usize = 128;
/// A client that has not sent its whole head by then is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// Serves on `listen` until the process is stopped.
pub fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    if !listen.ip().is_loopback() {
        bail!("--listen {listen}: the GRIP origin listens on a loopback address only (127.0.0.1:PORT)");
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream));
                }
                Err(error) => {
                    eprintln!("grip-origin: accept failed: {error}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    })
}

/// Reads one request head and answers it; the connection then closes.
async fn answer(mut stream: TcpStream) {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let complete = tokio::time::timeout(HEAD_TIMEOUT, async {
        while memchr::memmem::find(&head, b"\r\n\r\n").is_none() && head.len() <= MAX_HEAD {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    if complete != Ok(true) {
        return;
    }
    let _ = stream.write_all(respond(&head).as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The whole response to the request whose head starts `head`.
fn respond(head: &[u8]) -> String {
    if head.len() > MAX_HEAD {
        return plain(431, "Request Header Fields Too Large", &format!("request head over {MAX_HEAD} bytes"));
    }
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut headers);
    let (method, path) = match request.parse(head) {
        Ok(httparse::Status::Complete(_)) => (request.method.unwrap_or(""), request.path.unwrap_or("")),
        _ => return plain(400, "Bad Request", "not an HTTP/1.1 request head"),
    };
    if method != "GET" {
        return plain(405, "Method Not Allowed", "only GET: the origin holds streams, it takes no publishes");
    }
    match channel(path) {
        Some(channel) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n\
             Grip-Hold: stream\r\nGrip-Channel: {channel}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        None => plain(
            404,
            "Not Found",
            &format!(
                "no channel in `{}`: GET /ANY/PATH/CHANNEL, the channel 1 to {MAX_CHANNEL} of A-Z a-z 0-9 . _ ~ -",
                path.escape_debug()
            ),
        ),
    }
}

/// The channel a path names: its last segment, query left out.
fn channel(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let last = path.rsplit('/').next().unwrap_or("");
    let valid = (1..=MAX_CHANNEL).contains(&last.len())
        && last.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    valid.then_some(last)
}

fn plain(status: u16, reason: &str, text: &str) -> String {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}\n",
        text.len() + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head_of(response: &str) -> (u16, Vec<(String, String)>) {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut parsed = httparse::Response::new(&mut headers);
        assert!(parsed.parse(response.as_bytes()).unwrap().is_complete(), "{response}");
        let fields = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        (parsed.code.unwrap(), fields)
    }

    #[test]
    fn holds_a_stream_on_the_paths_last_segment() {
        let request = b"GET /sub/bench-7?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nGrip-Sig: abc\r\n\r\n";
        let (status, headers) = head_of(&respond(request));
        assert_eq!(status, 200);
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("content-type"), Some("text/event-stream"));
        assert_eq!(get("grip-hold"), Some("stream"));
        assert_eq!(get("grip-channel"), Some("bench-7"));
        assert_eq!(get("content-length"), Some("0"));
    }

    #[test]
    fn refuses_what_it_cannot_hold() {
        let status = |request: &[u8]| head_of(&respond(request)).0;
        assert_eq!(status(b"POST /sub/bench HTTP/1.1\r\nContent-Length: 0\r\n\r\n"), 405);
        assert_eq!(status(b"GET /sub/ HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET /sub/a%20b HTTP/1.1\r\n\r\n"), 404);
        assert_eq!(status(b"GET /sub/a\"b HTTP/1.1\r\n\r\n"), 404, "not a channel Pushpin takes in a header as is");
        assert_eq!(status(b"GET /sub/a b HTTP/1.1\r\n\r\n"), 400, "not a request line");
        assert_eq!(status(b"\x01\x02 nonsense\r\n\r\n"), 400);
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(status(long.as_bytes()), 431);
        assert_eq!(channel(&format!("/{}", "c".repeat(MAX_CHANNEL))).map(str::len), Some(MAX_CHANNEL));
        assert_eq!(channel(&format!("/{}", "c".repeat(MAX_CHANNEL + 1))), None);
    }

    #[test]
    fn answers_over_a_socket() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(async move {
                let (stream, _) = listener.accept().await.unwrap();
                answer(stream).await;
            });
            let mut client = TcpStream::connect(addr).await.unwrap();
            // The head arrives in two pieces, as it may from a proxy.
            client.write_all(b"GET /sub/chan HTTP/1.1\r\nHost: x\r\n").await.unwrap();
            tokio::task::yield_now().await;
            client.write_all(b"\r\n").await.unwrap();
            let mut response = String::new();
            client.read_to_string(&mut response).await.unwrap();
            server.await.unwrap();
            let (status, headers) = head_of(&response);
            assert_eq!(status, 200);
            assert!(headers.contains(&("grip-channel".into(), "chan".into())), "{response}");
        });
    }
}
