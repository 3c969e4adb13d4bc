//! The hub: the public handle on the registry of topics and the writer that
//! sequences publishes.
//!
//! Invariants:
//! - Events reach the rings through one entry, [`Hub::apply`], and only once
//!   they are durable: the writer applies each commit after the store took
//!   it, and a store that assigns ids itself (a cluster's feed of events
//!   committed on other nodes) applies them the same way. No subscriber can
//!   see an event the store does not have.
//! - The registry ([`crate::registry`]) holds the topics and the watermark,
//!   the writer ([`crate::writer`]) the publish queue and group commit, and
//!   [`crate::stats`] the figures; `Hub` only ties them together.

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::runtime::Handle;

use crate::{
    CommitObserver, Epoch, Event, EventDraft, EventId, EventStore, HubStats, Publish, PublishError, Published,
    ReadLimit, RingLimits, StoreError, StoredTopic, TopicName, TopicStats, catch_up::CatchUp, registry::Registry,
    stats::Counters, writer::Writer,
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

/// State shared by the hub handle, its writer and every subscription.
#[derive(Debug)]
pub(crate) struct HubInner {
    pub(crate) registry: Registry,
    pub(crate) store: Arc<dyn EventStore>,
    /// The highest sequence of the current history this hub knows the
    /// store assigned (its own acks, the store's answers): with a feed it
    /// may run ahead of the watermark, and a resume from an id up to it is
    /// exact, not unknown.
    pub(crate) committed: AtomicU64,
    pub(crate) config: HubConfig,
    pub(crate) counters: Counters,
    /// Whether the last commit succeeded (readiness).
    pub(crate) store_ok: AtomicBool,
    /// Told of every commit, once the server installs it.
    pub(crate) commit_observer: OnceLock<Arc<dyn CommitObserver>>,
    /// History pages shared by readers catching up on one topic.
    pub(crate) catch_up: CatchUp,
    /// The runtime that wakes the readers of busy topics (the subscribers'
    /// runtime, not the writer's thread).
    fan_out: Handle,
}

impl HubInner {
    /// [`Hub::apply`], for the writer, which holds no `Hub`: a `Hub` keeps
    /// the writer's queue open.
    pub(crate) fn apply<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        self.registry.apply(events, &self.fan_out);
    }
}

/// The hub: publish into it, subscribe from it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
    writer: Writer,
}

impl Hub {
    /// Opens a hub on `store` and starts its writer (needs a Tokio runtime,
    /// whose tasks then wake the readers of busy topics).
    pub async fn start(store: Arc<dyn EventStore>, config: HubConfig) -> Result<Self, StoreError> {
        let watermark = store.last_seq().await?;
        let inner = Arc::new(HubInner {
            registry: Registry::new(store.epoch(), watermark, store.feeds_commits(), &config),
            committed: AtomicU64::new(watermark),
            store,
            counters: Counters::default(),
            store_ok: AtomicBool::new(true),
            commit_observer: OnceLock::new(),
            catch_up: CatchUp::new(config.catch_up_cache_bytes),
            fan_out: Handle::current(),
            config,
        });
        let writer = Writer::start(Arc::clone(&inner))?;
        Ok(Self { inner, writer })
    }

    /// Installs the observer of store commits (the first one installed
    /// stays).
    pub fn observe_commits(&self, observer: Arc<dyn CommitObserver>) {
        let _ = self.inner.commit_observer.set(observer);
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
        self.writer.submit(publish).await
    }

    /// The one way events reach subscribers: pushes each into its topic's
    /// ring (creating the topic while the registry has room; past it, the
    /// pattern subscriptions that select the event read it from the store),
    /// raises the watermark to the last, then wakes the readers of the
    /// topics touched.
    ///
    /// The hub's writer calls it after each commit. A store that assigns
    /// ids itself and learns of events committed elsewhere (a cluster's
    /// feed) calls it with those. Calls are applied one at a time, and
    /// events at or below the watermark ([`Hub::last_id`]) are skipped (they
    /// were applied before). The caller guarantees, unchecked in release
    /// builds:
    /// - the events are durable: a read of the store returns them;
    /// - they come in id order, and none above the watermark is left out:
    ///   the watermark passes every event up to the last, and readers trust
    ///   the rings below it.
    pub fn apply<'a>(&self, events: impl IntoIterator<Item = &'a Event>) {
        self.inner.apply(events);
    }

    /// Events up to `seq` are committed in the store, but some above the
    /// watermark never came to [`Hub::apply`] (a feed lost them): readers
    /// get them from the store, and the watermark moves to `seq`. Nothing
    /// happens if the watermark is there already.
    pub fn skip_to(&self, seq: u64) {
        self.inner.committed.fetch_max(seq, Ordering::AcqRel);
        self.inner.registry.skip_to(seq);
    }

    /// The store's history is now `epoch`, whose newest event is `seq`
    /// (it lost history, or may have): every open subscription gets a
    /// `herald.gap` notice with reason `history_lost` and continues from
    /// the start of the new history. Nothing happens if `epoch` is the
    /// current one.
    pub fn switch_history(&self, epoch: Epoch, seq: u64) {
        if self.epoch() == epoch {
            return;
        }
        self.inner.committed.store(seq, Ordering::Release);
        self.inner.registry.switch_history(epoch, seq);
        self.inner.catch_up.clear();
    }

    /// Makes sure a resume from `id` is judged against everything the store
    /// committed: asks the store when `id` is of the current history and
    /// above what this hub knows of (another node acknowledged it and this
    /// one's feed has not brought it yet).
    pub async fn learn_committed(&self, id: EventId) -> Result<(), StoreError> {
        let ahead = id.epoch == self.epoch() && id.seq > self.inner.committed.load(Ordering::Acquire);
        // Without a feed, what the store committed is visible already.
        if ahead && self.inner.store.feeds_commits() {
            let last = self.inner.store.last_seq().await?;
            if self.inner.store.epoch() == id.epoch {
                self.inner.committed.fetch_max(last, Ordering::AcqRel);
            }
        }
        Ok(())
    }

    /// Stops taking publishes, commits those already queued, and waits for
    /// the writer to finish. Open subscriptions keep working.
    pub async fn shutdown(&self) {
        self.writer.shutdown().await;
    }

    /// Applies the store's retention, and drops the catch-up pages that may
    /// hold trimmed history. Returns the events removed.
    pub async fn enforce_retention(&self, now_ms: u64) -> Result<u64, StoreError> {
        let readers_at = self.inner.registry.readers_at();
        let removed = self.inner.store.enforce_retention(now_ms, readers_at).await;
        self.inner.catch_up.clear();
        removed
    }

    /// The store behind this hub.
    pub fn store(&self) -> &Arc<dyn EventStore> {
        &self.inner.store
    }

    /// Whether the store is serving: as the store itself says when it can
    /// tell (a connection to a server), else whether it took the last
    /// commit (false from a failed commit until the next one succeeds).
    pub fn store_healthy(&self) -> bool {
        self.inner.store.available().unwrap_or_else(|| self.inner.store_ok.load(Ordering::Relaxed))
    }

    /// The epoch of the history subscribers are served.
    pub fn epoch(&self) -> Epoch {
        self.inner.registry.history().epoch
    }

    /// The id of the newest event visible to subscribers.
    pub fn last_id(&self) -> EventId {
        EventId::new(self.epoch(), self.inner.registry.watermark())
    }

    /// Topics in the registry now.
    pub fn topic_count(&self) -> usize {
        self.inner.registry.topic_count()
    }

    /// Figures about one topic, if it is in the registry.
    pub fn topic_stats(&self, name: &str) -> Option<TopicStats> {
        self.inner.registry.topic(name).map(|t| TopicStats::of(&t))
    }

    /// Figures about every topic in the registry.
    pub fn all_topic_stats(&self) -> Vec<TopicStats> {
        self.inner.registry.topics_where(|_| true).iter().map(|t| TopicStats::of(t)).collect()
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
        let in_memory = self.inner.registry.topics_where(|name| in_range(name) && !known.contains(name));
        list.extend(in_memory.iter().map(|t| TopicStats::of(t)));
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
        let inner = &self.inner;
        let c = &inner.counters;
        let (mut ring_events, mut ring_bytes) = (0, 0);
        for topic in &inner.registry.topics_where(|_| true) {
            let ring = topic.ring();
            ring_events += ring.len() as u64;
            ring_bytes += ring.bytes() as u64;
        }
        let (catch_up_shared, catch_up_store) = inner.catch_up.reads();
        HubStats {
            topics: self.topic_count(),
            subscriptions: inner.registry.subscriptions(),
            published: c.published.load(Ordering::Relaxed),
            duplicates: c.duplicates.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            replays_ring: c.replays_ring.load(Ordering::Relaxed),
            replays_store: c.replays_store.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            catch_up_shared,
            catch_up_store,
            store_errors: c.store_errors.load(Ordering::Relaxed),
            ring_events,
            ring_bytes,
            watermark: inner.registry.watermark(),
        }
    }

    /// Drops topics that have had no subscribers for `idle_topic_ttl`, as of
    /// `now_ms`. Returns how many were dropped. Run it periodically.
    pub fn sweep_idle_topics(&self, now_ms: u64) -> usize {
        self.inner.registry.sweep_idle_topics(now_ms)
    }
}
