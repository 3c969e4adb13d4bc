//! The writer: the one task that makes publishes durable, in groups.
//!
//! Invariants:
//! - Every publish goes through the writer's bounded queue. Each wake-up
//!   takes everything queued at that moment (up to `max_commit_requests`) and
//!   makes it durable in one store commit (group commit); then it applies the
//!   new events through the hub's one fan-out entry ([`crate::Hub::apply`])
//!   and only then answers the publishers. No subscriber can see an event the
//!   store does not have, and no publisher hears of one a reader cannot see.
//! - The writer runs on a thread of its own, so a publish never waits in a
//!   run queue behind thousands of subscriber tasks.
//! - On shutdown it refuses new publishes and commits those already queued.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{Appended, EventId, LOG_REPEAT_INTERVAL, LogThrottle, Publish, StoreError, TopicName, hub::HubInner};

/// An event of a publish the store accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The event's id (the first request's, for a repeated idempotency key).
    pub id: EventId,
    /// Its topic.
    pub topic: TopicName,
    /// The idempotency key was seen before and nothing new was stored.
    pub duplicate: bool,
}

/// Why a publish failed. Nothing was stored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// The store failed; the publisher may retry.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The hub is shutting down.
    #[error("the hub is shutting down")]
    ShuttingDown,
    /// The request's idempotency key was used before, by the same caller,
    /// for other events.
    #[error("this Idempotency-Key was used before for a different request")]
    KeyReused,
}

/// Told of every store commit, failed ones too, by the writer's thread: how
/// many events it held and how long the store took. The server installs one
/// ([`crate::Hub::observe_commits`]) to export them; it must return quickly,
/// as the next commit waits for it.
pub trait CommitObserver: Send + Sync + fmt::Debug {
    /// One commit of `events` events took `elapsed`.
    fn commit_ended(&self, events: usize, elapsed: Duration);
}

/// The handle of the writer: its queue, and how to stop it.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    queue: mpsc::Sender<PublishRequest>,
    closing: Arc<watch::Sender<bool>>,
    /// Taken by the first shutdown, which waits for the writer to finish.
    finished: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

struct PublishRequest {
    publish: Publish,
    reply: oneshot::Sender<Result<Vec<Published>, PublishError>>,
}

impl fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishRequest").field("drafts", &self.publish.drafts.len()).finish()
    }
}

impl Writer {
    /// Starts the writer of `hub` on a thread of its own.
    pub(crate) fn start(hub: Arc<HubInner>) -> Result<Self, StoreError> {
        let (queue, requests) = mpsc::channel(hub.config.publish_queue.max(1));
        let (closing, closed) = watch::channel(false);
        let (finished_tx, finished) = oneshot::channel();
        std::thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(write_loop(hub, requests, closed)),
                    Err(error) => tracing::error!(%error, "cannot start the hub writer"),
                }
                let _ = finished_tx.send(());
            })
            .map_err(|e| StoreError::unavailable(format!("cannot start the hub writer thread: {e}")))?;
        Ok(Self { queue, closing: Arc::new(closing), finished: Arc::new(Mutex::new(Some(finished))) })
    }

    /// Queues `publish` and waits for its answer.
    pub(crate) async fn submit(&self, publish: Publish) -> Result<Vec<Published>, PublishError> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(PublishRequest { publish, reply }).await.map_err(|_| PublishError::ShuttingDown)?;
        answer.await.map_err(|_| PublishError::ShuttingDown)?
    }

    /// Refuses new publishes, lets those queued commit, and waits for the
    /// writer to finish.
    pub(crate) async fn shutdown(&self) {
        self.closing.send_replace(true);
        let finished = self.finished.lock().take();
        if let Some(finished) = finished {
            let _ = finished.await;
        }
    }
}

/// One commit per wake-up, holding every request queued by then.
async fn write_loop(
    hub: Arc<HubInner>,
    mut requests: mpsc::Receiver<PublishRequest>,
    mut closing: watch::Receiver<bool>,
) {
    let max = hub.config.max_commit_requests.max(1);
    let mut group = Vec::with_capacity(max);
    let mut closed = false;
    loop {
        let received = if closed {
            requests.recv_many(&mut group, max).await
        } else {
            tokio::select! {
                received = requests.recv_many(&mut group, max) => received,
                _ = closing.wait_for(|closing| *closing) => {
                    // Refuse new publishes; those already queued still commit.
                    requests.close();
                    closed = true;
                    continue;
                }
            }
        };
        if received == 0 {
            break;
        }
        commit(&hub, &mut group).await;
    }
}

/// Stores one group of publish requests in one commit, applies the new
/// events, and answers the requests.
async fn commit(hub: &HubInner, requests: &mut Vec<PublishRequest>) {
    let publishes: Vec<Publish> = requests
        .iter_mut()
        .map(|r| Publish { drafts: std::mem::take(&mut r.publish.drafts), key: r.publish.key.take() })
        .collect();
    let events: usize = publishes.iter().map(|p| p.drafts.len()).sum();
    let started = Instant::now();
    let appended = hub.store.append(&publishes).await;
    if let Some(observer) = hub.commit_observer.get() {
        observer.commit_ended(events, started.elapsed());
    }
    let result = match appended {
        Ok(appended) if appended.len() == publishes.len() => Ok(appended),
        Ok(appended) => Err(StoreError::unavailable(format!(
            "store returned {} results for {} requests",
            appended.len(),
            publishes.len()
        ))),
        Err(error) => Err(error),
    };
    hub.store_ok.store(result.is_ok(), Ordering::Relaxed);
    match result {
        Ok(appended) => {
            let (mut stored, mut replayed) = (0, 0);
            for (outcome, publish) in appended.iter().zip(&publishes) {
                match outcome {
                    Appended::New(events) => stored += events.len() as u64,
                    Appended::Replayed { .. } => replayed += publish.drafts.len() as u64,
                    Appended::KeyReused | Appended::Failed(_) => {}
                }
            }
            hub.counters.duplicates.fetch_add(replayed, Ordering::Relaxed);
            hub.counters.published.fetch_add(stored, Ordering::Relaxed);
            let new_events = appended.iter().flat_map(|a| match a {
                Appended::New(events) => events.as_slice(),
                _ => &[],
            });
            if hub.store.feeds_commits() {
                // The feed applies them, in the store's order; a resume
                // from an id this node acknowledged is still exact.
                let epoch = hub.registry.history().epoch;
                let newest = new_events.filter(|e| e.id.epoch == epoch).map(|e| e.id.seq).max();
                hub.committed.fetch_max(newest.unwrap_or(0), Ordering::AcqRel);
            } else {
                hub.apply(new_events);
            }
            for ((request, outcome), publish) in requests.drain(..).zip(appended).zip(&publishes) {
                let _ = request.reply.send(answer(outcome, publish));
            }
        }
        Err(error) => {
            // Counted every time, logged once per interval: a full disk
            // refuses every publish, and each would be a line.
            static FAILURES: LogThrottle = LogThrottle::new(LOG_REPEAT_INTERVAL);
            hub.counters.store_errors.fetch_add(1, Ordering::Relaxed);
            if let Some(unlogged) = FAILURES.admit() {
                tracing::error!(
                    %error,
                    events,
                    unlogged,
                    "store commit failed: publishes answer 503 until it recovers \
                     (repeats logged at most every {LOG_REPEAT_INTERVAL:?}; `unlogged` failed since the last line)"
                );
            }
            for request in requests.drain(..) {
                let _ = request.reply.send(Err(PublishError::Store(error.clone())));
            }
        }
    }
}

/// What a publisher hears of its request: one entry per event.
fn answer(appended: Appended, request: &Publish) -> Result<Vec<Published>, PublishError> {
    match appended {
        Appended::New(events) => Ok(events
            .into_iter()
            .map(|event| Published { id: event.id, topic: event.topic, duplicate: false })
            .collect()),
        Appended::Replayed { first } => Ok(request
            .drafts
            .iter()
            .zip(first.seq..)
            .map(|(draft, seq)| Published {
                id: EventId::new(first.epoch, seq),
                topic: draft.topic.clone(),
                duplicate: true,
            })
            .collect()),
        Appended::KeyReused => Err(PublishError::KeyReused),
        Appended::Failed(error) => Err(PublishError::Store(error)),
    }
}
