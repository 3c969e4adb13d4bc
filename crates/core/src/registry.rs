//! The registry of topics: which topics are in memory, who is attached to
//! them, and the watermark up to which their rings may be read.
//!
//! Invariants:
//! - Every event at or below the watermark is in its ring (or below that
//!   ring's floor, in the store). [`Registry::apply`] pushes events into the
//!   rings before it raises the watermark, and wakes readers after.
//! - The map is a `DashMap`; a ring is pushed to, and a topic created or
//!   dropped, only under its shard's lock, so a topic is never dropped while
//!   it holds a subscriber or an event above the watermark.
//! - Topics with no subscribers leave the registry: at once when their ring is
//!   empty, after `idle_topic_ttl` otherwise (the store keeps their history).
//! - A pattern subscription is a watcher: topics created later attach it.
//! - The history (epoch and generation) changes only under the `applying`
//!   lock, after the rings are emptied and the watermark is set: a reader
//!   that sees the new history sees its rings and watermark, and one that
//!   read the old history and then took anything of the new one finds the
//!   history changed when it checks again, after its step
//!   ([`Registry::history`]).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use dashmap::{DashMap, mapref::entry::Entry};
use parking_lot::{Mutex, RwLock};
use tokio::{runtime::Handle, sync::Notify};

use crate::{Epoch, Event, HubConfig, RingLimits, Topic, TopicName, TopicPattern, now_ms};

/// Which history the registry serves: the store's epoch, and how many
/// times it changed while the hub ran (an epoch may come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct History {
    pub(crate) epoch: Epoch,
    pub(crate) generation: u32,
}

impl History {
    fn pack(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.epoch.0)
    }

    fn unpack(packed: u64) -> Self {
        Self { epoch: Epoch(packed as u32), generation: (packed >> 32) as u32 }
    }
}

/// Why a subscription could not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The registry holds `max_topics` topics already.
    #[error("the hub holds its maximum of {0} topics; try again later")]
    TooManyTopics(usize),
}

/// A subscription's presence in the registry: its id, its wake-up signal,
/// and the topics that patterns attached it to since it last looked.
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
    /// Every event up to here has been handed to it (its cursor), for
    /// retention to wait for it ([`Registry::readers_at`]).
    pub(crate) handed_through: AtomicU64,
}

/// The topics in memory and the subscriptions attached to them.
#[derive(Debug)]
pub(crate) struct Registry {
    topics: DashMap<TopicName, Arc<Topic>>,
    /// Kept apart from `topics.len()`, which would lock every shard.
    topic_count: AtomicUsize,
    /// Subscriptions with patterns, to attach to topics created later.
    watchers: RwLock<Vec<Arc<Subscriber>>>,
    /// Every event with a sequence up to here is in its ring or its store.
    /// Shared with every topic: a wake must not count an event it cannot see.
    watermark: Arc<AtomicU64>,
    /// The packed [`History`] the rings and the watermark belong to.
    history: AtomicU64,
    /// With a feed (a shared store), events of topics nobody here watches
    /// get no ring: a topic created later starts above the highest of them,
    /// so its first reader asks the store for them.
    lazy_rings: bool,
    skipped_through: AtomicU64,
    /// Held for the whole of one [`Registry::apply`]: callers (the writer, a
    /// cluster's feed) apply one at a time, or one could raise the watermark
    /// past events the other has not put in their rings yet.
    applying: parking_lot::Mutex<()>,
    next_subscriber: AtomicU64,
    /// Open subscriptions, observers not counted.
    subscriptions: AtomicU64,
    /// Open subscriptions (operators' tails aside), for [`Registry::readers_at`].
    readers: DashMap<u64, Arc<Subscriber>>,
    /// Bounds of each topic's ring.
    ring: RingLimits,
    /// Most topics held; see [`HubConfig::max_topics`].
    max_topics: usize,
    /// How long a topic with no subscribers keeps its ring.
    idle_topic_ttl: Duration,
}

impl Registry {
    /// An empty registry of history `epoch` whose watermark starts at
    /// `watermark` (the store's newest event). With `lazy_rings`, only
    /// watched topics get rings.
    pub(crate) fn new(epoch: Epoch, watermark: u64, lazy_rings: bool, config: &HubConfig) -> Self {
        Self {
            history: AtomicU64::new(History { epoch, generation: 0 }.pack()),
            lazy_rings,
            skipped_through: AtomicU64::new(0),
            topics: DashMap::new(),
            topic_count: AtomicUsize::new(0),
            watchers: RwLock::default(),
            watermark: Arc::new(AtomicU64::new(watermark)),
            applying: parking_lot::Mutex::new(()),
            next_subscriber: AtomicU64::new(1),
            subscriptions: AtomicU64::new(0),
            readers: DashMap::new(),
            ring: config.ring,
            max_topics: config.max_topics,
            idle_topic_ttl: config.idle_topic_ttl,
        }
    }

    /// The newest sequence number visible to subscribers.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
    }

    /// The history the rings and the watermark belong to now.
    pub(crate) fn history(&self) -> History {
        History::unpack(self.history.load(Ordering::SeqCst))
    }

    /// Events up to `seq` are committed, but this registry was not given
    /// those above the watermark (a feed lost them): the store serves them
    /// ([`Registry::restart_at`]).
    pub(crate) fn skip_to(&self, seq: u64) {
        let _one_at_a_time = self.applying.lock();
        if seq > self.watermark() {
            self.restart_at(seq, None);
        }
    }

    /// The store now serves another history (`epoch`), whose newest event is
    /// `seq`: every subscription finds the history changed at its next step,
    /// and reads the new one from the store up to `seq`.
    pub(crate) fn switch_history(&self, epoch: Epoch, seq: u64) {
        let _one_at_a_time = self.applying.lock();
        let generation = self.history().generation.wrapping_add(1);
        self.skipped_through.store(0, Ordering::SeqCst);
        self.restart_at(seq, Some(History { epoch, generation }));
    }

    /// Under the `applying` lock: the store alone holds the events up to
    /// `seq` (of a new `history`, if given). Every ring is emptied to start
    /// above it, pattern subscribers read the store up to it (under the
    /// watchers' lock, as in [`Registry::mark_bypassed`]), the watermark
    /// moves there, then the history changes, and then everyone is woken:
    /// a reader that sees the new history sees its rings and watermark.
    fn restart_at(&self, seq: u64, history: Option<History>) {
        let topics = self.topics_where(|_| true);
        topics.iter().for_each(|topic| topic.restart(seq));
        let watchers = self.watchers.write();
        for watcher in watchers.iter() {
            watcher.bypassed_through.store(seq, Ordering::Release);
        }
        self.watermark.store(seq, Ordering::SeqCst);
        if let Some(history) = history {
            self.history.store(history.pack(), Ordering::SeqCst);
        }
        drop(watchers);
        topics.iter().for_each(|topic| topic.wake_all());
        self.wake_watchers();
    }

    fn wake_watchers(&self) {
        let signals: Vec<Arc<Notify>> = self.watchers.read().iter().map(|w| Arc::clone(&w.signal)).collect();
        signals.iter().for_each(|signal| signal.notify_one());
    }

    /// Topics in the registry now.
    pub(crate) fn topic_count(&self) -> usize {
        self.topic_count.load(Ordering::Relaxed)
    }

    /// Open subscriptions, observers not counted.
    pub(crate) fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Topic `name`, if it is in the registry.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.get(name).map(|t| Arc::clone(t.value()))
    }

    /// The topics whose names pass `keep`, taken out of the map so that no
    /// shard stays locked while the caller reads them.
    pub(crate) fn topics_where(&self, keep: impl Fn(&TopicName) -> bool) -> Vec<Arc<Topic>> {
        self.topics.iter().filter(|t| keep(t.key())).map(|t| Arc::clone(t.value())).collect()
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
            handed_through: AtomicU64::new(0),
        });
        if !observer {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
            self.readers.insert(id, Arc::clone(&subscriber));
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
                    return Err(SubscribeError::TooManyTopics(self.max_topics));
                }
                // The ring holds what comes after now; older events are in
                // the store (and so are skipped ones, below the watermark).
                let floor = self.watermark().max(self.skipped_through.load(Ordering::Acquire));
                let topic = self.create_topic(name.clone(), floor);
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
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
            self.readers.remove(&subscriber.id);
        }
    }

    /// The lowest position handed to every open subscription (operators'
    /// tails aside); `None` when there is none.
    pub(crate) fn readers_at(&self) -> Option<u64> {
        self.readers.iter().map(|reader| reader.handed_through.load(Ordering::Relaxed)).min()
    }

    /// The watermark, read so that [`Registry::mark_bypassed`] either marks
    /// the pattern subscriber `subscriber` or has raised it already.
    pub(crate) fn watermark_for(&self, subscriber: &Subscriber) -> u64 {
        if subscriber.patterns.is_empty() {
            return self.watermark();
        }
        let _watchers = self.watchers.read();
        self.watermark()
    }

    /// Puts durable events into their rings in order, raises the watermark,
    /// then wakes the topics touched (after, so a woken reader sees them).
    /// The contract is [`crate::Hub::apply`]'s.
    pub(crate) fn apply<'a>(&self, events: impl IntoIterator<Item = &'a Event>, fan_out: &Handle) {
        let _one_at_a_time = self.applying.lock();
        let mut touched: Vec<Arc<Topic>> = Vec::new();
        let mut bypassed: Vec<&Event> = Vec::new();
        let mut last_seq = None;
        // Events already visible were applied before (a feed that announces
        // one twice): applying them again would deliver them twice.
        let visible = self.watermark();
        for event in events.into_iter().filter(|e| e.id.seq > visible) {
            debug_assert!(event.id.seq > last_seq.unwrap_or(visible), "events are applied in id order");
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

    /// Drops topics that have had no subscribers for `idle_topic_ttl`, as of
    /// `now_ms`. Returns how many were dropped.
    pub(crate) fn sweep_idle_topics(&self, now_ms: u64) -> usize {
        let ttl = u64::try_from(self.idle_topic_ttl.as_millis()).unwrap_or(u64::MAX);
        let idle = |t: &Arc<Topic>| {
            !t.is_attached()
                && now_ms.saturating_sub(t.last_activity_ms()) >= ttl
                // An event above the watermark belongs to a commit in flight.
                && t.ring().last().is_none_or(|e| e.id.seq <= self.watermark())
        };
        let candidates: Vec<TopicName> =
            self.topics.iter().filter(|t| idle(t.value())).map(|t| t.key().clone()).collect();
        candidates.iter().filter(|name| self.remove_topic_if(name, idle)).count()
    }

    /// Events that went to no ring (the registry was full, or their topic
    /// unwatched) can only have pattern readers: a topic with an exact
    /// subscriber is in the registry.
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

    /// The topic whose ring took `event`; `None` when it went to no ring
    /// (the registry is full, or, with lazy rings, nobody here watches its
    /// topic): the caller has pattern subscribers that select it (one may
    /// have begun since) read the store.
    fn push_to_ring(&self, event: &Event) -> Option<Arc<Topic>> {
        match self.topics.entry(event.topic.clone()) {
            Entry::Occupied(entry) => {
                entry.get().push(event.clone());
                Some(Arc::clone(entry.get()))
            }
            // A topic created later starts above it (raised before the shard
            // lock is let go, so `attach` sees it).
            Entry::Vacant(_) if self.lazy_rings && !self.watched(&event.topic) => {
                self.skipped_through.fetch_max(event.id.seq, Ordering::AcqRel);
                None
            }
            Entry::Vacant(entry) if self.reserve_topic_slot() => {
                let topic = self.create_topic(event.topic.clone(), event.id.seq.saturating_sub(1));
                topic.push(event.clone());
                entry.insert(Arc::clone(&topic));
                Some(topic)
            }
            Entry::Vacant(_) => None,
        }
    }

    fn watched(&self, topic: &TopicName) -> bool {
        self.watchers.read().iter().any(|w| w.patterns.iter().any(|p| p.matches(topic.as_str())))
    }

    fn reserve_topic_slot(&self) -> bool {
        let max = self.max_topics;
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
        let topic = Arc::new(Topic::new(name, self.ring, floor, now_ms(), Arc::clone(&self.watermark)));
        for watcher in self.watchers.read().iter() {
            if watcher.patterns.iter().any(|p| p.matches(topic.name().as_str())) {
                topic.attach(watcher.id, &watcher.signal, watcher.observer);
                watcher.joined.lock().push(Arc::clone(&topic));
            }
        }
        topic
    }
}
