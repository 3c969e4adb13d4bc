//! The hub: the registry of topics and the one writer that sequences publishes.
//!
//! Invariants:
//! - Every publish goes through one writer task. It takes everything queued
//!   at that moment, makes it durable in one store commit (group commit), then
//!   pushes the events into the rings in id order, raises the watermark, and
//!   wakes the topics touched. No subscriber can see an event the store does
//!   not have, and every event at or below the watermark is in its ring (or
//!   below that ring's floor, in the store).
//! - The registry is a `DashMap`; a ring is pushed to, and a topic created or
//!   dropped, only under its shard's lock, so a topic is never dropped while
//!   it holds a subscriber or an event above the watermark.
//! - Topics with no subscribers leave the registry: at once when their ring is
//!   empty, after `idle_topic_ttl` otherwise (the store keeps their history).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::{DashMap, mapref::entry::Entry};
use parking_lot::{Mutex, RwLock};
use tokio::{
    runtime::Handle,
    sync::{Notify, mpsc, oneshot, watch},
};

use crate::{
    Appended, Epoch, Event, EventDraft, EventId, EventStore, LOG_REPEAT_INTERVAL, LogThrottle, Publish, ReadLimit,
    RingLimits, StoreError, StoredTopic, Topic, TopicName, TopicPattern, catch_up::CatchUp, now_ms,
};

/// Settings of a hub. Each bound has a default that suits one node.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Bounds of each topic's ring.
    pub ring: RingLimits,
    /// Most topics held in the registry. Past it, publishes still succeed
    /// (the store keeps them) but new subscriptions to unseen topics fail.
    pub max_topics: usize,
    /// How long a topic with no subscribers keeps its ring.
    pub idle_topic_ttl: Duration,
    /// Publish requests that may wait for the writer before publishers wait.
    pub publish_queue: usize,
    /// Most publish requests folded into one store commit.
    pub max_commit_requests: usize,
    /// Most events handed to a subscriber at once.
    pub max_delivery_events: usize,
    /// Most frame bytes handed to a subscriber at once (one write, one
    /// catch-up page); a single larger event still goes whole.
    pub max_delivery_bytes: usize,
    /// Most frame bytes kept in the catch-up pages shared by readers.
    pub catch_up_cache_bytes: usize,
}

impl HubConfig {
    /// The default of `max_delivery_bytes` (1 MiB).
    pub const DEFAULT_DELIVERY_BYTES: usize = 1 << 20;
    /// The default of `catch_up_cache_bytes` (32 MiB).
    pub const DEFAULT_CATCH_UP_CACHE_BYTES: usize = 32 << 20;

    /// How much one delivery step may hand out.
    pub fn delivery_limit(&self) -> ReadLimit {
        ReadLimit { events: self.max_delivery_events.max(1), bytes: self.max_delivery_bytes }
    }
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ring: RingLimits::default(),
            max_topics: 100_000,
            idle_topic_ttl: Duration::from_secs(60),
            publish_queue: 65_536,
            max_commit_requests: 1024,
            max_delivery_events: 1024,
            max_delivery_bytes: Self::DEFAULT_DELIVERY_BYTES,
            catch_up_cache_bytes: Self::DEFAULT_CATCH_UP_CACHE_BYTES,
        }
    }
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

/// Why a subscription could not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The registry holds `max_topics` topics already.
    #[error("the hub holds its maximum of {0} topics; try again later")]
    TooManyTopics(usize),
}

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
    }
}

/// Figures about one topic, read without blocking publishes for long.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicStats {
    /// Its name.
    pub name: TopicName,
    /// Subscribers now.
    pub subscribers: usize,
    /// Events in its ring.
    pub buffered: usize,
    /// Bytes in its ring.
    pub buffered_bytes: usize,
    /// The newest event's id, if the ring holds one.
    pub last_id: Option<EventId>,
    /// When the newest event was published (ms since the Unix epoch).
    pub last_event_ms: Option<u64>,
    /// Events published since the topic entered the registry.
    pub published: u64,
    /// Events of it the store retains (0 when only the registry was asked).
    pub retained: u64,
}

/// Figures about the whole hub.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct HubStats {
    /// Topics in the registry.
    pub topics: usize,
    /// Open subscriptions.
    pub subscriptions: u64,
    /// Events stored (not counting repeated idempotency keys).
    pub published: u64,
    /// Publishes answered from an idempotency key.
    pub duplicates: u64,
    /// Events handed to subscribers.
    pub delivered: u64,
    /// Replays served from rings alone.
    pub replays_ring: u64,
    /// Replays that read the store.
    pub replays_store: u64,
    /// `herald.gap` notices handed out.
    pub gaps: u64,
    /// Events and bytes held in all rings.
    pub ring_events: u64,
    /// Bytes held in all rings.
    pub ring_bytes: u64,
    /// The newest sequence number visible to subscribers.
    pub watermark: u64,
}

/// One open event stream, as the dashboard lists it. The server fills it;
/// the dashboard reads it without knowing about sockets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionSnapshot {
    /// The stream's id, for the disconnect action.
    pub id: u64,
    /// The client's address.
    pub remote: String,
    /// The client's `User-Agent`.
    pub user_agent: String,
    /// The token's subject, if a token was used.
    pub subject: Option<String>,
    /// What it subscribed to.
    pub topics: Vec<String>,
    /// When it connected (ms since the Unix epoch).
    pub connected_ms: u64,
    /// Events written to it.
    pub events_sent: u64,
    /// Events published hub-wide that it has not caught up with.
    pub lag: u64,
}

/// Counters kept by the hub and its subscriptions.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) subscriptions: AtomicU64,
    pub(crate) published: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) replays_ring: AtomicU64,
    pub(crate) replays_store: AtomicU64,
    pub(crate) gaps: AtomicU64,
}

/// A subscription's presence in the hub: its id, its wake-up signal, and the
/// topics that patterns attached it to since it last looked.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) id: u64,
    pub(crate) signal: Arc<Notify>,
    pub(crate) patterns: Vec<TopicPattern>,
    pub(crate) joined: Mutex<Vec<Arc<Topic>>>,
    /// An operator watching (`Subscription::observe`): not counted as a
    /// subscriber of its topics nor among the open subscriptions.
    pub(crate) observer: bool,
    /// A pattern subscription reads the store while its cursor is below
    /// this: events of a topic it selects went to no ring up to here.
    pub(crate) bypassed_through: AtomicU64,
}

/// State shared by the hub handle, its writer task and every subscription.
#[derive(Debug)]
pub(crate) struct HubInner {
    pub(crate) topics: DashMap<TopicName, Arc<Topic>>,
    /// Kept apart from `topics.len()`, which would lock every shard.
    topic_count: AtomicUsize,
    /// Subscriptions with patterns, to attach to topics created later.
    watchers: RwLock<Vec<Arc<Subscriber>>>,
    pub(crate) store: Arc<dyn EventStore>,
    pub(crate) epoch: Epoch,
    /// Every event with a sequence up to here is in its ring or its store.
    /// Shared with every topic: a wake must not count an event it cannot see.
    watermark: Arc<AtomicU64>,
    pub(crate) config: HubConfig,
    next_subscriber: AtomicU64,
    pub(crate) counters: Counters,
    /// Whether the last commit succeeded (readiness).
    store_ok: AtomicBool,
    /// History pages shared by readers catching up on one topic.
    pub(crate) catch_up: CatchUp,
}

struct PublishRequest {
    publish: Publish,
    reply: oneshot::Sender<Result<Vec<Published>, PublishError>>,
}

/// The hub: publish into it, subscribe from it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
    queue: mpsc::Sender<PublishRequest>,
    closing: Arc<watch::Sender<bool>>,
    writer: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

impl std::fmt::Debug for PublishRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishRequest").field("drafts", &self.publish.drafts.len()).finish()
    }
}

impl Hub {
    /// Opens a hub on `store` and starts its writer task (needs a Tokio runtime).
    pub async fn start(store: Arc<dyn EventStore>, config: HubConfig) -> Result<Self, StoreError> {
        let watermark = store.last_seq().await?;
        let inner = Arc::new(HubInner {
            topics: DashMap::new(),
            topic_count: AtomicUsize::new(0),
            watchers: RwLock::default(),
            epoch: store.epoch(),
            store,
            watermark: Arc::new(AtomicU64::new(watermark)),
            next_subscriber: AtomicU64::new(1),
            counters: Counters::default(),
            store_ok: AtomicBool::new(true),
            catch_up: CatchUp::new(config.catch_up_cache_bytes),
            config,
        });
        let (queue, requests) = mpsc::channel(inner.config.publish_queue.max(1));
        let (closing, closed) = watch::channel(false);
        let (finished, writer) = oneshot::channel();
        let writer_inner = Arc::clone(&inner);
        let fan_out = tokio::runtime::Handle::current();
        // The writer has a thread of its own, so a publish never waits in a
        // run queue behind thousands of subscriber tasks.
        std::thread::Builder::new()
            .name("herald-writer".into())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(runtime) => runtime.block_on(write_loop(writer_inner, requests, closed, fan_out)),
                    Err(error) => tracing::error!(%error, "cannot start the hub writer"),
                }
                let _ = finished.send(());
            })
            .map_err(|e| StoreError::unavailable(format!("cannot start the hub writer thread: {e}")))?;
        Ok(Self { inner, queue, closing: Arc::new(closing), writer: Arc::new(Mutex::new(Some(writer))) })
    }

    /// Publishes one event; returns once it is durable.
    pub async fn publish(&self, draft: EventDraft) -> Result<Published, PublishError> {
        let mut published = self.publish_batch(vec![draft]).await?;
        published.pop().ok_or(PublishError::ShuttingDown)
    }

    /// Publishes several events in one commit; returns once all are durable.
    pub async fn publish_batch(&self, drafts: Vec<EventDraft>) -> Result<Vec<Published>, PublishError> {
        self.submit(Publish::new(drafts)).await
    }

    /// Publishes a request's events in one commit, all or none, under its
    /// idempotency key if it has one; returns once they are durable.
    pub async fn submit(&self, publish: Publish) -> Result<Vec<Published>, PublishError> {
        if publish.drafts.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.queue.send(PublishRequest { publish, reply }).await.map_err(|_| PublishError::ShuttingDown)?;
        answer.await.map_err(|_| PublishError::ShuttingDown)?
    }

    /// Stops taking publishes, commits those already queued, and waits for
    /// the writer to finish. Open subscriptions keep working.
    pub async fn shutdown(&self) {
        self.closing.send_replace(true);
        let writer = self.writer.lock().take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    /// Applies the store's retention, and drops the catch-up pages that may
    /// hold trimmed history. Returns the events removed.
    pub async fn enforce_retention(&self, now_ms: u64) -> Result<u64, StoreError> {
        let removed = self.inner.store.enforce_retention(now_ms).await;
        self.inner.catch_up.clear();
        removed
    }

    /// The store behind this hub.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Whether the store took the last commit; false from a failed commit
    /// until the next one succeeds.
    pub fn store_healthy(&self) -> bool {
        self.inner.store_ok.load(Ordering::Relaxed)
    }

    /// The store's epoch.
    pub fn epoch(&self) -> Epoch {
        self.inner.epoch
    }

    /// The id of the newest event visible to subscribers.
    pub fn last_id(&self) -> EventId {
        EventId::new(self.inner.epoch, self.inner.watermark())
    }

    /// Topics in the registry now.
    pub fn topic_count(&self) -> usize {
        self.inner.topic_count.load(Ordering::Relaxed)
    }

    /// Figures about one topic, if it is in the registry.
    pub fn topic_stats(&self, name: &str) -> Option<TopicStats> {
        self.inner.topics.get(name).map(|t| topic_stats(t.value()))
    }

    /// Figures about every topic in the registry.
    pub fn all_topic_stats(&self) -> Vec<TopicStats> {
        let topics: Vec<Arc<Topic>> = self.inner.topics.iter().map(|t| Arc::clone(t.value())).collect();
        topics.iter().map(|t| topic_stats(t)).collect()
    }

    /// Figures about the topics the store holds events of and those in the
    /// registry, in name order, after `after` (when given), at most `limit`
    /// of them; the store's retained count and newest event, the registry's
    /// subscribers and ring.
    pub async fn topic_list(&self, after: Option<&TopicName>, limit: usize) -> Result<Vec<TopicStats>, StoreError> {
        let stored = self.inner.store.topics(after, limit).await?;
        // The registry's topics in the same stretch of names (all past
        // `after` when the store's page is not full).
        let end = (stored.len() == limit).then(|| stored.last().map(|t| t.name.clone())).flatten();
        let in_range = |name: &TopicName| after.is_none_or(|a| name > a) && end.as_ref().is_none_or(|e| name <= e);
        let mut list: Vec<TopicStats> = stored.into_iter().map(|stored| self.with_registry(stored)).collect();
        let known: std::collections::HashSet<TopicName> = list.iter().map(|t| t.name.clone()).collect();
        let in_memory: Vec<Arc<Topic>> = self
            .inner
            .topics
            .iter()
            .filter(|t| in_range(t.key()) && !known.contains(t.key()))
            .map(|t| Arc::clone(t.value()))
            .collect();
        list.extend(in_memory.iter().map(|t| topic_stats(t)));
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list.truncate(limit);
        Ok(list)
    }

    /// Figures about one topic: from the store, with the registry's when it
    /// is in memory; `None` when neither knows it.
    pub async fn topic(&self, name: &TopicName) -> Result<Option<TopicStats>, StoreError> {
        Ok(match self.inner.store.topic(name).await? {
            Some(stored) => Some(self.with_registry(stored)),
            None => self.topic_stats(name.as_str()),
        })
    }

    fn with_registry(&self, stored: StoredTopic) -> TopicStats {
        let mut stats = self.topic_stats(stored.name.as_str()).unwrap_or_else(|| TopicStats {
            name: stored.name.clone(),
            subscribers: 0,
            buffered: 0,
            buffered_bytes: 0,
            last_id: None,
            last_event_ms: None,
            published: 0,
            retained: 0,
        });
        stats.retained = stored.events;
        // The newer of the two: the registry may have seen events since.
        if stats.last_id.is_none_or(|id| id.seq < stored.last_id.seq) {
            stats.last_id = Some(stored.last_id);
            stats.last_event_ms = Some(stored.last_event_ms);
        }
        stats
    }

    /// Figures about the whole hub.
    pub fn stats(&self) -> HubStats {
        let c = &self.inner.counters;
        let (mut ring_events, mut ring_bytes) = (0, 0);
        let topics: Vec<Arc<Topic>> = self.inner.topics.iter().map(|t| Arc::clone(t.value())).collect();
        for topic in &topics {
            let ring = topic.ring();
            ring_events += ring.len() as u64;
            ring_bytes += ring.bytes() as u64;
        }
        HubStats {
            topics: self.topic_count(),
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            published: c.published.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            replays_ring: c.replays_ring.load(Ordering::Relaxed),
            replays_store: c.replays_store.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            ring_events,
            ring_bytes,
            watermark: self.inner.watermark(),
        }
    }

    /// Drops topics that have had no subscribers for `idle_topic_ttl`, as of
    /// `now_ms`. Returns how many were dropped. Run it periodically.
    pub fn sweep_idle_topics(&self, now_ms: u64) -> usize {
        let inner = &self.inner;
        let ttl = u64::try_from(inner.config.idle_topic_ttl.as_millis()).unwrap_or(u64::MAX);
        let idle = |t: &Arc<Topic>| {
            !t.is_attached()
                && now_ms.saturating_sub(t.last_activity_ms()) >= ttl
                // An event above the watermark belongs to a commit in flight.
                && t.ring().last().is_none_or(|e| e.id.seq <= inner.watermark())
        };
        let candidates: Vec<TopicName> =
            inner.topics.iter().filter(|t| idle(t.value())).map(|t| t.key().clone()).collect();
        candidates.iter().filter(|name| inner.remove_topic_if(name, idle)).count()
    }
}

fn topic_stats(topic: &Topic) -> TopicStats {
    let ring = topic.ring();
    TopicStats {
        name: topic.name().clone(),
        subscribers: topic.subscriber_count(),
        buffered: ring.len(),
        buffered_bytes: ring.bytes(),
        last_id: ring.last().map(|e| e.id),
        last_event_ms: ring.last().map(|e| e.time_ms),
        published: topic.published(),
        retained: 0,
    }
}

impl HubInner {
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
    }

    fn reserve_topic_slot(&self) -> bool {
        let max = self.config.max_topics;
        self.topic_count.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).is_ok()
    }

    fn remove_topic_if(&self, name: &TopicName, condition: impl FnOnce(&Arc<Topic>) -> bool) -> bool {
        let removed = self.topics.remove_if(name, |_, topic| condition(topic)).is_some();
        if removed {
            self.topic_count.fetch_sub(1, Ordering::AcqRel);
        }
        removed
    }

    /// A new topic, attached to every pattern subscription that selects it.
    /// Called under the topic's shard lock, before it is visible.
    fn create_topic(&self, name: TopicName, floor: u64) -> Arc<Topic> {
        let topic = Arc::new(Topic::new(name, self.config.ring, floor, now_ms(), Arc::clone(&self.watermark)));
        for watcher in self.watchers.read().iter() {
            if watcher.patterns.iter().any(|p| p.matches(topic.name().as_str())) {
                topic.attach(watcher.id, &watcher.signal, watcher.observer);
                watcher.joined.lock().push(Arc::clone(&topic));
            }
        }
        topic
    }

    pub(crate) fn new_subscriber(&self, patterns: Vec<TopicPattern>, observer: bool) -> Arc<Subscriber> {
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let subscriber = Arc::new(Subscriber {
            id,
            signal: Arc::new(Notify::new()),
            patterns,
            joined: Mutex::default(),
            observer,
            bypassed_through: AtomicU64::new(0),
        });
        if !observer {
            self.counters.subscriptions.fetch_add(1, Ordering::Relaxed);
        }
        if !subscriber.patterns.is_empty() {
            self.watchers.write().push(Arc::clone(&subscriber));
            // Topics that exist already; one created meanwhile may attach twice,
            // which the subscription ignores.
            let existing: Vec<TopicName> = self
                .topics
                .iter()
                .filter(|t| subscriber.patterns.iter().any(|p| p.matches(t.key().as_str())))
                .map(|t| t.key().clone())
                .collect();
            for name in existing {
                if let Some(topic) = self.topics.get(&name) {
                    topic.attach(id, &subscriber.signal, observer);
                    subscriber.joined.lock().push(Arc::clone(topic.value()));
                }
            }
        }
        subscriber
    }

    /// Attaches `subscriber` to `name`, creating the topic if need be. Done
    /// under the shard lock, so the topic cannot be dropped in between.
    pub(crate) fn attach(&self, name: &TopicName, subscriber: &Subscriber) -> Result<Arc<Topic>, SubscribeError> {
        let topic = match self.topics.entry(name.clone()) {
            Entry::Occupied(entry) => {
                entry.get().attach(subscriber.id, &subscriber.signal, subscriber.observer);
                Arc::clone(entry.get())
            }
            Entry::Vacant(entry) => {
                if !self.reserve_topic_slot() {
                    return Err(SubscribeError::TooManyTopics(self.config.max_topics));
                }
                // The ring holds what comes after now; older events are in the store.
                let topic = self.create_topic(name.clone(), self.watermark());
                topic.attach(subscriber.id, &subscriber.signal, subscriber.observer);
                entry.insert(Arc::clone(&topic));
                topic
            }
        };
        Ok(topic)
    }

    /// Detaches a finished subscription from its topics and drops those left
    /// with neither subscribers nor buffered events.
    pub(crate) fn release(&self, subscriber: &Subscriber, topics: impl IntoIterator<Item = Arc<Topic>>) {
        if !subscriber.patterns.is_empty() {
            self.watchers.write().retain(|w| w.id != subscriber.id);
        }
        let now = now_ms();
        let joined = std::mem::take(&mut *subscriber.joined.lock());
        for topic in topics.into_iter().chain(joined) {
            topic.detach(subscriber.id, subscriber.observer, now);
            self.remove_topic_if(topic.name(), |t| Arc::ptr_eq(t, &topic) && !t.is_attached() && t.ring().is_empty());
        }
        if !subscriber.observer {
            self.counters.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Puts durable events into their rings in order, raises the watermark,
    /// then wakes the topics touched (after, so a woken reader sees them).
    fn deliver<'a>(&self, events: impl IntoIterator<Item = &'a Event>, fan_out: &Handle) {
        let mut touched: Vec<Arc<Topic>> = Vec::new();
        let mut bypassed: Vec<&Event> = Vec::new();
        let mut last_seq = None;
        for event in events {
            last_seq = Some(event.id.seq);
            match self.push_to_ring(event) {
                Some(topic) => touched.push(topic),
                None => bypassed.push(event),
            }
        }
        if let Some(seq) = last_seq {
            if bypassed.is_empty() {
                self.watermark.fetch_max(seq, Ordering::AcqRel);
            } else {
                self.mark_bypassed(&bypassed, seq);
            }
        }
        touched.sort_unstable_by_key(|t| Arc::as_ptr(t) as usize);
        touched.dedup_by(|a, b| Arc::ptr_eq(a, b));
        touched.iter().for_each(|topic| topic.wake(fan_out));
    }

    /// Events that went to no ring (the registry was full) can only have
    /// pattern readers: a topic with an exact subscriber is in the registry.
    /// Each pattern subscriber that selects one reads the store until its
    /// cursor passes it, and is woken, as no topic of its would wake it.
    /// Marked before the watermark passes the events, under the watchers'
    /// lock, which a pattern subscription holds while it reads the watermark
    /// at its start: it is either marked, or starts after the events.
    fn mark_bypassed(&self, bypassed: &[&Event], watermark: u64) {
        let watchers = self.watchers.write();
        let mut woken = Vec::new();
        for watcher in watchers.iter() {
            let selected = bypassed.iter().rev().find(|e| watcher.patterns.iter().any(|p| p.matches(e.topic.as_str())));
            if let Some(last) = selected {
                watcher.bypassed_through.fetch_max(last.id.seq, Ordering::AcqRel);
                woken.push(Arc::clone(&watcher.signal));
            }
        }
        self.watermark.fetch_max(watermark, Ordering::AcqRel);
        drop(watchers);
        woken.iter().for_each(|signal| signal.notify_one());
    }

    /// The watermark, read so that [`HubInner::mark_bypassed`] either marks
    /// the pattern subscriber `subscriber` or has raised it already.
    pub(crate) fn watermark_for(&self, subscriber: &Subscriber) -> u64 {
        if subscriber.patterns.is_empty() {
            return self.watermark();
        }
        let _watchers = self.watchers.read();
        self.watermark()
    }

    fn push_to_ring(&self, event: &Event) -> Option<Arc<Topic>> {
        match self.topics.entry(event.topic.clone()) {
            Entry::Occupied(entry) => {
                entry.get().push(event.clone());
                Some(Arc::clone(entry.get()))
            }
            // A full registry skips the ring; the store has the event.
            Entry::Vacant(entry) if self.reserve_topic_slot() => {
                let topic = self.create_topic(event.topic.clone(), event.id.seq - 1);
                topic.push(event.clone());
                entry.insert(Arc::clone(&topic));
                Some(topic)
            }
            Entry::Vacant(_) => None,
        }
    }

    /// Stores one group of publish requests in one commit and answers them.
    async fn commit(&self, requests: &mut Vec<PublishRequest>, fan_out: &Handle) {
        let publishes: Vec<Publish> = requests
            .iter_mut()
            .map(|r| Publish { drafts: std::mem::take(&mut r.publish.drafts), key: r.publish.key.take() })
            .collect();
        let events: usize = publishes.iter().map(|p| p.drafts.len()).sum();
        let started = std::time::Instant::now();
        let appended = self.store.append(&publishes).await;
        metrics::histogram!("herald_store_commit_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("herald_store_commit_events").record(events as f64);
        let result = match appended {
            Ok(appended) if appended.len() == publishes.len() => Ok(appended),
            Ok(appended) => Err(StoreError::unavailable(format!(
                "store returned {} results for {} requests",
                appended.len(),
                publishes.len()
            ))),
            Err(error) => Err(error),
        };
        self.store_ok.store(result.is_ok(), Ordering::Relaxed);
        match result {
            Ok(appended) => {
                let (mut stored, mut replayed) = (0, 0);
                for (outcome, publish) in appended.iter().zip(&publishes) {
                    match outcome {
                        Appended::New(events) => stored += events.len() as u64,
                        Appended::Replayed { .. } => replayed += publish.drafts.len() as u64,
                        Appended::KeyReused => {}
                    }
                }
                self.counters.duplicates.fetch_add(replayed, Ordering::Relaxed);
                self.counters.published.fetch_add(stored, Ordering::Relaxed);
                let new_events = appended.iter().flat_map(|a| match a {
                    Appended::New(events) => events.as_slice(),
                    _ => &[],
                });
                self.deliver(new_events, fan_out);
                for ((request, outcome), publish) in requests.drain(..).zip(appended).zip(&publishes) {
                    let _ = request.reply.send(answer(outcome, publish));
                }
            }
            Err(error) => {
                // Counted every time, logged once per interval: a full disk
                // refuses every publish, and each would be a line.
                static FAILURES: LogThrottle = LogThrottle::new(LOG_REPEAT_INTERVAL);
                metrics::counter!("herald_store_errors_total").increment(1);
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
}

/// The writer: one commit per wake-up, holding every request queued by then.
async fn write_loop(
    inner: Arc<HubInner>,
    mut requests: mpsc::Receiver<PublishRequest>,
    mut closing: watch::Receiver<bool>,
    fan_out: Handle,
) {
    let max = inner.config.max_commit_requests.max(1);
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
        inner.commit(&mut group, &fan_out).await;
    }
}
