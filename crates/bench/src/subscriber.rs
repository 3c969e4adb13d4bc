//! One SSE subscriber, whatever carries its stream: open it (within the
//! run's bound on connection attempts in flight, retrying what a busy
//! loopback throws), count it as connected or failed, then count its events
//! until the run ends.
//!
//! An idle subscriber costs its socket (or its share of an HTTP/2
//! connection), its task and a few small vectors: 15,000 of them fit easily.

use std::{
    io,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use h2::RecvStream;

use crate::{
    connect::Dialer, event_counter::EventCounter, h1_stream::H1Stream, h2_stream, h2_stream::H2Connection, run::Shared,
    tally::Tally, url::Target,
};

/// Connection attempts before a subscriber gives up.
const CONNECT_ATTEMPTS: u32 = 4;

/// How to open one subscriber's stream.
pub struct SubscriberSpec {
    /// Where and what to GET.
    pub target: Target,
    /// What carries the stream.
    pub carrier: Carrier,
}

/// What carries a subscriber's stream.
pub enum Carrier {
    /// HTTP/1.1 on a connection of its own (plain or TLS), with these extra
    /// header lines (each ending in CRLF).
    Own { dialer: Dialer, headers: Arc<str> },
    /// A stream on an HTTP/2 connection shared with other subscribers.
    Shared(Arc<H2Connection>),
}

/// An open stream.
enum Stream {
    H1(H1Stream),
    H2(RecvStream),
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
    let stream = match opened {
        Ok(stream) => stream,
        Err(error) => {
            shared.connect_failed.fetch_add(1, Ordering::Relaxed);
            return SubscriberResult { tally, connected: false, error: Some(format!("{error:#}")) };
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    let mut counter = EventCounter::default();
    counter.settle(shared.now_us(), &tally, &shared);
    let counted = match stream {
        Stream::H1(stream) => stream.count(&mut counter, &mut tally, &shared).await,
        Stream::H2(body) => h2_stream::count(body, &mut counter, &mut tally, &shared).await,
    };
    SubscriberResult { tally, connected: true, error: counted.err().map(|e| format!("{e:#}")) }
}

/// Opens the stream, retrying errors that a busy loopback produces
/// (refused while the accept queue is full, address in use, reset).
async fn open_with_retries(spec: &SubscriberSpec) -> anyhow::Result<Stream> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let opened = match &spec.carrier {
            Carrier::Own { dialer, headers } => H1Stream::open(dialer, &spec.target, headers).await.map(Stream::H1),
            Carrier::Shared(connection) => connection.open_stream(&spec.target.path).await.map(Stream::H2),
        };
        match opened {
            Ok(stream) => return Ok(stream),
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
