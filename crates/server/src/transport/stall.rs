//! The stall guard: a client that stops reading is cut once a write has made
//! no progress for `--stall-timeout`, and the cut is recorded so that the
//! connection and its event stream close as `lagged`.
//!
//! Both ways a response reaches a socket use it: hyper's, through the
//! socket it is given (`connection`) and its HTTP/2 streams' tasks
//! (`h2_stream`), and the hand-written stream path (`h1_stream`). A response
//! body that wants to know whether it was cut (an event stream, for its close
//! reason) puts a [`StallReport`] in its response's extensions; the transport
//! attaches the flag that covers it, so no handler ever sees the flag.

use std::{
    future::Future as _,
    io,
    pin::Pin,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::time::{Sleep, sleep};

/// Set when a connection, or one HTTP/2 stream of it, is cut for stalling.
#[derive(Debug, Clone, Default)]
pub(super) struct Stalled {
    own: Arc<AtomicBool>,
    /// For one stream of a connection: the connection's flag.
    connection: Option<Arc<AtomicBool>>,
}

impl Stalled {
    /// Whether the connection, or this stream, was cut because the client stopped reading.
    pub(super) fn is_set(&self) -> bool {
        self.own.load(Ordering::Relaxed) || self.connection.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Records the cut; counted in `herald_lagged_disconnects_total`.
    pub(super) fn set(&self) {
        metrics::counter!("herald_lagged_disconnects_total").increment(1);
        self.own.store(true, Ordering::Relaxed);
    }

    /// A flag for one stream of this connection: set if the stream or the
    /// connection is cut.
    pub(super) fn for_stream(&self) -> Self {
        Self { own: Arc::default(), connection: Some(Arc::clone(&self.own)) }
    }
}

/// What a response body learns of a cut for stalling: whether the transport
/// that wrote it cut it. Filled by the transport once it takes the response
/// (see the module doc); read when the body is dropped.
#[derive(Debug, Clone, Default)]
pub struct StallReport(Arc<OnceLock<Stalled>>);

impl StallReport {
    /// Whether the body's connection (or HTTP/2 stream) was cut because the
    /// client stopped reading.
    pub fn stalled(&self) -> bool {
        self.0.get().is_some_and(Stalled::is_set)
    }

    /// Takes the report out of `extensions`, if the response carries one,
    /// and ties it to `stalled`.
    pub(super) fn attach(extensions: &mut axum::http::Extensions, stalled: &Stalled) {
        if let Some(report) = extensions.remove::<Self>() {
            let _ = report.0.set(stalled.clone());
        }
    }
}

/// Times the writes of one socket or stream: a write still pending after the
/// stall timeout fails, and sets the flag. A timer exists only while a write
/// waits.
#[derive(Debug)]
pub(super) struct WriteStall {
    timeout: Duration,
    since: Option<Pin<Box<Sleep>>>,
    stalled: Stalled,
}

impl WriteStall {
    /// Writes that may wait `timeout`; a cut sets `stalled`.
    pub(super) fn new(timeout: Duration, stalled: Stalled) -> Self {
        Self { timeout, since: None, stalled }
    }

    /// The flag a cut sets.
    pub(super) fn stalled(&self) -> &Stalled {
        &self.stalled
    }

    /// Passes a write's `poll` through: progress restarts the clock; waiting
    /// past the timeout becomes an error.
    pub(super) fn guard<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.since = None;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let timeout = self.timeout;
                ready!(self.since.get_or_insert_with(|| Box::pin(sleep(timeout))).as_mut().poll(cx));
                self.stalled.set();
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client stopped reading")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Extensions;

    use super::*;

    #[test]
    fn a_report_sees_its_stream_and_its_connection() {
        let connection = Stalled::default();
        let (one, two) = (connection.for_stream(), connection.for_stream());
        let (report_one, report_two) = (StallReport::default(), StallReport::default());
        for (report, stalled) in [(&report_one, &one), (&report_two, &two)] {
            let mut extensions = Extensions::new();
            extensions.insert(report.clone());
            StallReport::attach(&mut extensions, stalled);
            assert!(extensions.get::<StallReport>().is_none(), "taken out of the response");
        }
        one.set();
        assert!(report_one.stalled() && !report_two.stalled());
        connection.set();
        assert!(report_two.stalled());
        assert!(!StallReport::default().stalled(), "a report never attached");
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_out_the_timeout_fails_and_sets_the_flag() {
        let mut writes = WriteStall::new(Duration::from_secs(1), Stalled::default());
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let pending = Poll::<io::Result<usize>>::Pending;
        assert!(writes.guard(&mut cx, pending).is_pending());
        tokio::time::advance(Duration::from_millis(900)).await;
        // Progress restarts the clock.
        assert!(matches!(writes.guard(&mut cx, Poll::Ready(Ok(1))), Poll::Ready(Ok(1))));
        assert!(writes.guard(&mut cx, Poll::<io::Result<usize>>::Pending).is_pending());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert!(writes.guard(&mut cx, Poll::<io::Result<usize>>::Pending).is_pending());
        assert!(!writes.stalled().is_set());
        tokio::time::advance(Duration::from_millis(100)).await;
        match writes.guard(&mut cx, Poll::<io::Result<usize>>::Pending) {
            Poll::Ready(Err(error)) => assert_eq!(error.kind(), io::ErrorKind::TimedOut),
            other => panic!("not cut at the timeout: {other:?}"),
        }
        assert!(writes.stalled().is_set());
    }
}
