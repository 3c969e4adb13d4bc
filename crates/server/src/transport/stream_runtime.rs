//! The runtime that hand-written event streams (`h1_stream`) run on, apart
//! from the one that serves requests: a large fan-out's writes then queue
//! behind each other, not in front of publishes and new connections, and its
//! threads run at a lower priority, so the OS runs publishes and commits
//! first when the machine is saturated.

use std::io;

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

/// The nice value of the streams' threads.
#[cfg(target_os = "linux")]
const STREAM_NICE: i32 = 10;

/// Where hand-written event streams run, and what tracks them for the drain.
#[derive(Debug, Clone)]
pub struct StreamTasks {
    /// The streams' runtime.
    pub runtime: Handle,
    /// Tracks them for the graceful drain.
    pub tracker: TaskTracker,
}

impl StreamTasks {
    /// Starts the streams' runtime; it stops, abandoning what still runs on
    /// it, when the returned guard drops.
    pub fn start(tracker: TaskTracker) -> io::Result<(Self, StreamRuntime)> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("herald-streams")
            .on_thread_start(|| {
                // Under full load, publishes, commits and new connections go
                // first; streams take the rest, and their writes then carry
                // more events each. On Linux this sets the calling thread's
                // nice (elsewhere it would set the whole process's).
                #[cfg(target_os = "linux")]
                if let Err(error) = rustix::process::setpriority_process(None, STREAM_NICE) {
                    tracing::debug!(%error, "cannot lower the stream threads' priority");
                }
            })
            .enable_all()
            .build()?;
        Ok((Self { runtime: runtime.handle().clone(), tracker }, StreamRuntime(Some(runtime))))
    }
}

/// Owns the streams' runtime; dropping it (in async code too) stops it.
#[derive(Debug)]
pub struct StreamRuntime(Option<tokio::runtime::Runtime>);

impl Drop for StreamRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
