//! HTTP/2 streams, each run by hyper as a task of its own, cut alone when the
//! peer keeps its flow-control window shut.
//!
//! A response body waiting for window is not polled, so nothing inside it can
//! notice; the stream's task can. When the body last handed hyper data and
//! the stream's task is still waiting, hyper is holding that data for want of
//! window. When that lasts `--stall-timeout` with no data going out (hyper
//! polls the body again only once the previous data had window), the task
//! ends: its stream is reset (the other streams of the connection go on), the
//! response body is dropped, and the stream counts as lagged. A reader that
//! opens its window slowly, but opens it, is never cut. Normal delivery costs
//! two relaxed atomic operations per body poll; a timer exists only while a
//! stream waits.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    task::futures::TaskLocalFuture,
    time::{Sleep, sleep},
};
use tokio_util::task::TaskTracker;

use super::{deadline, stall::Stalled};

tokio::task_local! {
    /// The stream whose task is running: its service and body find it here.
    static STREAM: Arc<Pull>;
}

/// What an HTTP/2 stream's task and its response body share.
#[derive(Debug)]
pub(super) struct Pull {
    /// The body's last poll yielded data: until hyper polls it again, that
    /// data waits for window.
    owed: AtomicBool,
    /// Polls that yielded data so far: a change means data went out.
    sent: AtomicU64,
    /// Set when the stream is cut for waiting too long.
    pub(super) stalled: Stalled,
}

impl Pull {
    /// The stream of the running task, if it is an HTTP/2 stream.
    pub(super) fn current() -> Option<Arc<Self>> {
        STREAM.try_with(Arc::clone).ok()
    }

    /// Notes what a poll of the response body gave hyper.
    pub(super) fn note<T>(&self, poll: &Poll<Option<T>>) {
        let data = matches!(poll, Poll::Ready(Some(_)));
        if data {
            self.sent.fetch_add(1, Ordering::Relaxed);
        }
        self.owed.store(data, Ordering::Relaxed);
    }
}

/// Runs a connection's HTTP/2 streams as tokio tasks, each watched for a
/// shut window.
#[derive(Debug, Clone)]
pub(super) struct StreamExecutor {
    /// The connection's flag: a stream's own flag also reads it.
    pub(super) stalled: Stalled,
    /// How long a stream may wait for window.
    pub(super) stall_timeout: Duration,
    /// The server's tasks, which the drain waits for.
    pub(super) tasks: TaskTracker,
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        let pull = Arc::new(Pull {
            owed: AtomicBool::new(false),
            sent: AtomicU64::new(0),
            stalled: self.stalled.for_stream(),
        });
        let stream = STREAM.scope(Arc::clone(&pull), stream);
        self.tasks.spawn(Watched { stream: Box::pin(stream), pull, stall_timeout: self.stall_timeout, waiting: None });
    }
}

/// A stream's task: ends the stream once its data has waited for window for
/// the stall timeout.
struct Watched<F: Future> {
    stream: Pin<Box<TaskLocalFuture<Arc<Pull>, F>>>,
    pull: Arc<Pull>,
    stall_timeout: Duration,
    /// Runs out `stall_timeout` after data last went out while some waits,
    /// with the count of polls that yielded data when it was set.
    waiting: Option<(Pin<Box<Sleep>>, u64)>,
}

impl<F: Future<Output = ()>> Future for Watched<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.stream.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        if !self.pull.owed.load(Ordering::Relaxed) {
            self.waiting = None;
            return Poll::Pending;
        }
        let (timeout, sent) = (self.stall_timeout, self.pull.sent.load(Ordering::Relaxed));
        let (timer, since) = self.waiting.get_or_insert_with(|| (Box::pin(sleep(timeout)), sent));
        if *since != sent {
            // Data went out since: the wait starts again.
            timer.as_mut().reset(deadline::after(tokio::time::Instant::now(), timeout));
            *since = sent;
        }
        ready!(timer.as_mut().poll(cx));
        // Ending the task drops the stream: hyper's handle resets it, and the
        // response body, dropped, says why it ended.
        self.pull.stalled.set();
        Poll::Ready(())
    }
}
