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

use crate::{Event, HubConfig, RingLimits, Topic, TopicName, TopicPattern, now_ms};

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
    /// Held for the whole of one [`Registry::apply`]: callers (the writer, a
    /// cluster's feed) apply one at a time, or one could raise the watermark
    /// past events the other has not put in their rings yet.
    applying: parking_lot::Mutex<()>,
    next_subscriber: AtomicU64,
    /// Open subscriptions, observers not counted.
    subscriptions: AtomicU64,
    /// Bounds of each topic's ring.
    ring: RingLimits,
    /// Most topics held; see [`HubConfig::max_topics`].
    max_topics: usize,
    /// How long a topic with no subscribers keeps its ring.
    idle_topic_ttl: Duration,
}

impl Registry {
    /// An empty registry whose watermark starts at `watermark` (the store's
    /// newest event).
    pub(crate) fn new(watermark: u64, config: &HubConfig) -> Self {
        Self {
            topics: DashMap::new(),
            topic_count: AtomicUsize::new(0),
            watchers: RwLock::default(),
            watermark: Arc::new(AtomicU64::new(watermark)),
            applying: parking_lot::Mutex::new(()),
            next_subscriber: AtomicU64::new(1),
            subscriptions: AtomicU64::new(0),
            ring: config.ring,
            max_topics: config.max_topics,
            idle_topic_ttl: config.idle_topic_ttl,
        }
    }

    /// The newest sequence number visible to subscribers.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark.load(Ordering::Acquire)
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
        });
        if !observer {
            self.subscriptions.fetch_add(1, Ordering::Relaxed);
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
            self.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
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

    fn push_to_ring(&self, event: &Event) -> Option<Arc<Topic>> {
        match self.topics.entry(event.topic.clone()) {
            Entry::Occupied(entry) => {
                entry.get().push(event.clone());
                Some(Arc::clone(entry.get()))
            }
            // A full registry skips the ring; the store has the event.
            Entry::Vacant(entry) if self.reserve_topic_slot() => {
                let topic = self.create_topic(event.topic.clone(), event.id.seq.saturating_sub(1));
                topic.push(event.clone());
                entry.insert(Arc::clone(&topic));
                Some(topic)
            }
            Entry::Vacant(_) => None,
        }
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
