//! One SSE subscriber: a raw TCP connection, a hand-written GET, and a
//! streaming parse of the response (dechunk → SSE lines → payload → tally).
//!
//! Reads go into one buffer per thread, so an idle subscriber costs its
//! socket, its task and a few small vectors: 15,000 of them fit easily.

use std::{
    cell::RefCell,
    io,
    net::{IpAddr, SocketAddr},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

use crate::{
    http::{self, BodyDecoder},
    payload,
    run::Shared,
    sse::SseParser,
    tally::{Tally, Verdict},
    url::Target,
};

/// Bytes read per `read` call (one buffer per runtime thread).
const READ_BUFFER: usize = 64 << 10;

/// Connection attempts before a subscriber gives up.
const CONNECT_ATTEMPTS: u32 = 4;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// How to open one subscriber's connection.
#[derive(Debug, Clone)]
pub struct SubscriberSpec {
    /// Where and what to GET.
    pub target: Target,
    /// The source address to bind, when subscribers are spread over several.
    pub source: Option<IpAddr>,
    /// `SO_RCVBUF` to set before connecting.
    pub recv_buffer: Option<usize>,
    /// Extra header lines, each ending in CRLF.
    pub headers: Arc<str>,
}

/// How a subscriber ended.
#[derive(Debug)]
pub struct SubscriberResult {
    /// What it received.
    pub tally: Tally,
    /// Whether the stream opened.
    pub connected: bool,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// Opens the stream, then counts events until cancelled or the stream ends.
pub async fn run(spec: SubscriberSpec, mut tally: Tally, shared: Arc<Shared>) -> SubscriberResult {
    let opened = {
        let Ok(_permit) = shared.connect_slots.acquire().await else {
            return SubscriberResult { tally, connected: false, error: Some("cancelled".into()) };
        };
        let started = Instant::now();
        let opened = tokio::select! {
            biased;
            () = shared.cancel.cancelled() => Err(anyhow::anyhow!("cancelled before the stream opened")),
            opened = open_with_retries(&spec) => opened,
        };
        if opened.is_ok() {
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            shared.connect_latency.lock().saturating_record(micros.max(1));
        }
        opened
    };
    let (stream, decoder, leftover) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            shared.connect_failed.fetch_add(1, Ordering::Relaxed);
            return SubscriberResult { tally, connected: false, error: Some(format!("{error:#}")) };
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut reader = Reader { decoder, parser: SseParser::default(), latencies: Vec::new(), reported_complete: false };
    reader.note_completion(&tally, &shared);
    let mut error = reader.process(&leftover, &mut tally, &shared).err().map(|e| format!("{e:#}"));
    if error.is_none() && !reader.decoder.is_done() {
        error = reader.read_loop(&stream, &mut tally, &shared).await.err().map(|e| format!("{e:#}"));
    }
    // Closing with linger 0 sends RST: no TIME_WAIT left to exhaust ports in the next run.
    drop(stream);
    SubscriberResult { tally, connected: true, error }
}

struct Reader {
    decoder: BodyDecoder,
    parser: SseParser,
    /// Latencies of the current read, recorded under one lock.
    latencies: Vec<u64>,
    reported_complete: bool,
}

impl Reader {
    async fn read_loop(&mut self, stream: &TcpStream, tally: &mut Tally, shared: &Shared) -> anyhow::Result<()> {
        loop {
            tokio::select! {
                biased;
                () = shared.cancel.cancelled() => return Ok(()),
                ready = stream.readable() => ready?,
            }
            let result = READ_BUF.with_borrow_mut(|buf| match stream.try_read(buf) {
                Ok(0) => Ok(true),
                Ok(n) => self.process(&buf[..n], tally, shared).map(|()| false),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                Err(e) => Err(anyhow::Error::from(e)),
            });
            if result? {
                bail!("the server closed the stream");
            }
            if self.decoder.is_done() {
                bail!("the server ended the stream");
            }
        }
    }

    /// Decodes `bytes` and records every event in it.
    fn process(&mut self, bytes: &[u8], tally: &mut Tally, shared: &Shared) -> anyhow::Result<()> {
        let now_us = shared.now_us();
        let nonce = shared.nonce;
        let mut fresh = 0u64;
        let mut parse_error = None;
        let parser = &mut self.parser;
        let latencies = &mut self.latencies;
        self.decoder.feed(bytes, &mut |body| {
            if parse_error.is_some() {
                return;
            }
            let result = parser.feed(body, &mut |event| match payload::parse(event.data) {
                Some(p) if p.nonce == nonce => {
                    if tally.record(event.id, p.seq) == Verdict::New {
                        fresh += 1;
                        latencies.push(now_us.saturating_sub(p.sent_us));
                    }
                }
                _ => tally.record_foreign(event.event_type.is_some_and(|t| t.starts_with(b"herald."))),
            });
            if let Err(e) = result {
                parse_error = Some(e);
            }
        })?;
        if fresh > 0 {
            shared.delivered.fetch_add(fresh, Ordering::Relaxed);
            shared.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
            let mut histogram = shared.delivery_latency.lock();
            for &micros in latencies.iter() {
                histogram.saturating_record(micros.max(1));
            }
            drop(histogram);
            latencies.clear();
            self.note_completion(tally, shared);
        }
        match parse_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn note_completion(&mut self, tally: &Tally, shared: &Shared) {
        if !self.reported_complete && tally.complete() {
            self.reported_complete = true;
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Opens the stream, retrying errors that a busy loopback produces
/// (refused while the accept queue is full, address in use, reset).
async fn open_with_retries(spec: &SubscriberSpec) -> anyhow::Result<(TcpStream, BodyDecoder, Vec<u8>)> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match open(spec).await {
            Ok(opened) => return Ok(opened),
            Err(error) if attempt < CONNECT_ATTEMPTS && is_transient(&error) => {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
            }
            Err(error) => return Err(error.context(format!("after {attempt} attempt(s)"))),
        }
    }
}

fn is_transient(error: &anyhow::Error) -> bool {
    error.downcast_ref::<io::Error>().is_some_and(|e| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::AddrInUse
                | io::ErrorKind::AddrNotAvailable
                | io::ErrorKind::TimedOut
                | io::ErrorKind::UnexpectedEof
        )
    })
}

async fn open(spec: &SubscriberSpec) -> anyhow::Result<(TcpStream, BodyDecoder, Vec<u8>)> {
    let mut stream = connect(spec.target.addr, spec.source, spec.recv_buffer).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{}\r\n",
        spec.target.path, spec.target.host_header, spec.headers
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 2048];
    loop {
        stream.readable().await?;
        let n = match stream.try_read(&mut buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e.into()),
        };
        head.extend_from_slice(&buf[..n]);
        if let Some((response, len)) = http::parse_head(&head)? {
            if response.status != 200 {
                let body = String::from_utf8_lossy(&head[len..head.len().min(len + 300)]).into_owned();
                bail!("GET {}: status {} {}", spec.target.path, response.status, body.trim());
            }
            let leftover = head.split_off(len);
            return Ok((stream, BodyDecoder::new(response.framing), leftover));
        }
    }
}

/// A TCP connection to `addr`, from `source` if given, with `SO_RCVBUF` set
/// before the handshake (it fixes the window scale) and linger 0.
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    recv_buffer: Option<usize>,
) -> anyhow::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_linger(Some(Duration::ZERO))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = source {
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::new(ip, 0).into()).with_context(|| format!("bind {ip}"))?;
    }
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    Ok(socket.connect(addr).await?)
}
