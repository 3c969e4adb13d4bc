//! One topic in the hub's registry: its ring and who is waiting on it.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::{Event, RingBuffer, RingLimits, TopicName};

/// Waking more subscribers than this is handed to a task of its own, so a
/// publish costs the same whether a topic has ten readers or ten thousand.
const INLINE_WAKE_LIMIT: usize = 32;

/// A topic: the ring of its newest events and the subscribers to wake.
#[derive(Debug)]
pub struct Topic {
    name: TopicName,
    ring: Mutex<RingBuffer>,
    /// Each subscriber's signal, by subscriber id. A signal keeps one permit,
    /// so a wake between a reader's check and its wait is never lost.
    subscribers: RwLock<HashMap<u64, Arc<Notify>>>,
    /// A deferred wake is scheduled and has not started yet.
    wake_pending: AtomicBool,
    published: AtomicU64,
    last_activity_ms: AtomicU64,
}

impl Topic {
    pub(crate) fn new(name: TopicName, limits: RingLimits, floor: u64, now_ms: u64) -> Self {
        Self {
            name,
            ring: Mutex::new(RingBuffer::new(limits, floor)),
            subscribers: RwLock::default(),
            wake_pending: AtomicBool::new(false),
            published: AtomicU64::new(0),
            last_activity_ms: AtomicU64::new(now_ms),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &TopicName {
        &self.name
    }

    pub(crate) fn ring(&self) -> parking_lot::MutexGuard<'_, RingBuffer> {
        self.ring.lock()
    }

    pub(crate) fn push(&self, event: Event) {
        self.last_activity_ms.store(event.time_ms, Ordering::Relaxed);
        self.published.fetch_add(1, Ordering::Relaxed);
        self.ring.lock().push(event);
    }

    pub(crate) fn attach(&self, subscriber: u64, signal: Arc<Notify>) {
        self.subscribers.write().insert(subscriber, signal);
    }

    pub(crate) fn detach(&self, subscriber: u64, now_ms: u64) {
        self.subscribers.write().remove(&subscriber);
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Subscribers waiting on this topic now.
    pub fn subscriber_count(&self) -> usize {
        self.subscribers.read().len()
    }

    /// Events published here since the topic entered the registry.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    pub(crate) fn last_activity_ms(&self) -> u64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    /// Wakes every subscriber. Few are woken here; many, by a spawned task,
    /// so the publisher's cost does not grow with the audience. Must run
    /// inside a Tokio runtime.
    pub(crate) fn wake(self: &Arc<Self>) {
        let subscribers = self.subscribers.read();
        if subscribers.len() <= INLINE_WAKE_LIMIT {
            subscribers.values().for_each(|s| s.notify_one());
            return;
        }
        drop(subscribers);
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let topic = Arc::clone(self);
            tokio::spawn(async move {
                // Cleared before waking: a publish from now on schedules its own wake.
                topic.wake_pending.store(false, Ordering::Release);
                topic.subscribers.read().values().for_each(|s| s.notify_one());
            });
        }
    }
}
