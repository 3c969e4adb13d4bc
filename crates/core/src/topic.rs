//! One topic in the hub's registry: its ring and who is waiting on it.
//!
//! Waking is O(waiting readers), not O(subscribers): a reader *arms* a topic
//! with its cursor before it sleeps, a wake takes only the armed readers that
//! are behind the new event, and a reader re-arms a topic after taking its
//! events. Busy readers cost a publish nothing.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
};

use parking_lot::Mutex;
use tokio::{runtime::Handle, sync::Notify};

use crate::{Event, RingBuffer, RingLimits, TopicName};

/// Waking more readers than this is handed to a task of its own, so a
/// publish costs the same whether a topic has ten readers or ten thousand.
const INLINE_WAKE_LIMIT: usize = 32;

/// A topic: the ring of its newest events and the readers to wake.
#[derive(Debug)]
pub struct Topic {
    name: TopicName,
    ring: Mutex<RingBuffer>,
    /// Ids of the subscriptions attached to this topic, observers included.
    subscribers: Mutex<HashSet<u64>>,
    /// How many of those are observers (an operator's tail), changed only
    /// under the `subscribers` lock: not counted as subscribers.
    observers: AtomicUsize,
    /// Readers to wake on the next event above their cursor: id → (signal,
    /// cursor when armed). A signal keeps one permit, so a wake between a
    /// reader's check and its sleep is never lost.
    armed: Mutex<HashMap<u64, (Arc<Notify>, u64)>>,
    /// A deferred wake is scheduled and has not started yet.
    wake_pending: AtomicBool,
    latest_seq: AtomicU64,
    /// The hub's watermark: events above it are not visible to readers yet.
    visible: Arc<AtomicU64>,
    published: AtomicU64,
    last_activity_ms: AtomicU64,
}

impl Topic {
    pub(crate) fn new(name: TopicName, limits: RingLimits, floor: u64, now_ms: u64, visible: Arc<AtomicU64>) -> Self {
        Self {
            name,
            ring: Mutex::new(RingBuffer::new(limits, floor)),
            subscribers: Mutex::default(),
            observers: AtomicUsize::new(0),
            armed: Mutex::default(),
            wake_pending: AtomicBool::new(false),
            latest_seq: AtomicU64::new(floor),
            visible,
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
        self.latest_seq.store(event.id.seq, Ordering::Release);
        self.published.fetch_add(1, Ordering::Relaxed);
        self.ring.lock().push(event);
    }

    /// Empties the ring, which from now on holds only events after `floor`
    /// (those up to it are in the store): the history moved under it
    /// ([`crate::Hub::skip_to`], a new epoch). Its readers are woken by
    /// [`Topic::wake_all`] once the move is complete.
    pub(crate) fn restart(&self, floor: u64) {
        let mut ring = self.ring.lock();
        ring.restart(floor);
        self.latest_seq.store(floor, Ordering::Release);
    }

    /// Wakes every armed reader, who stays armed.
    pub(crate) fn wake_all(&self) {
        let armed: Vec<Arc<Notify>> = self.armed.lock().values().map(|(signal, _)| Arc::clone(signal)).collect();
        armed.iter().for_each(|signal| signal.notify_one());
    }

    /// Attaches a subscription, armed to wake on any event.
    pub(crate) fn attach(&self, subscriber: u64, signal: &Arc<Notify>, observer: bool) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.insert(subscriber) && observer {
            self.observers.fetch_add(1, Ordering::Relaxed);
        }
        drop(subscribers);
        self.arm(subscriber, signal, 0);
    }

    /// Asks to be woken by the next event after `cursor`.
    pub(crate) fn arm(&self, subscriber: u64, signal: &Arc<Notify>, cursor: u64) {
        self.armed.lock().insert(subscriber, (Arc::clone(signal), cursor));
    }

    pub(crate) fn detach(&self, subscriber: u64, observer: bool, now_ms: u64) {
        let mut subscribers = self.subscribers.lock();
        if subscribers.remove(&subscriber) && observer {
            self.observers.fetch_sub(1, Ordering::Relaxed);
        }
        drop(subscribers);
        self.armed.lock().remove(&subscriber);
        self.last_activity_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Subscriptions attached to this topic now, observers left out.
    pub fn subscriber_count(&self) -> usize {
        let subscribers = self.subscribers.lock();
        subscribers.len().saturating_sub(self.observers.load(Ordering::Relaxed))
    }

    /// Whether any subscription, observers included, is attached: the topic
    /// must stay in the registry, or they would miss its next events.
    pub(crate) fn is_attached(&self) -> bool {
        !self.subscribers.lock().is_empty()
    }

    /// Events published here since the topic entered the registry.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }

    pub(crate) fn last_activity_ms(&self) -> u64 {
        self.last_activity_ms.load(Ordering::Relaxed)
    }

    /// Wakes the armed readers behind the newest event. Few are woken here;
    /// many, by a task on the `fan_out` runtime, so the publisher's cost does
    /// not grow with the audience.
    pub(crate) fn wake(self: &Arc<Self>, fan_out: &Handle) {
        if self.armed.lock().len() <= INLINE_WAKE_LIMIT {
            self.wake_armed();
        } else if !self.wake_pending.swap(true, Ordering::AcqRel) {
            let topic = Arc::clone(self);
            fan_out.spawn(async move {
                // Cleared first: a publish from now on schedules its own wake.
                topic.wake_pending.store(false, Ordering::Release);
                topic.wake_armed();
            });
        }
    }

    fn wake_armed(&self) {
        // Only readers behind an event they can see now: a reader woken for
        // one still above the watermark would find nothing, sleep, and no
        // longer be armed for it (the wake that follows its commit would
        // then pass it by).
        let visible = self.visible.load(Ordering::Acquire);
        let latest = self.latest_seq.load(Ordering::Acquire).min(visible);
        let ready: Vec<Arc<Notify>> =
            self.armed.lock().extract_if(|_, (_, cursor)| *cursor < latest).map(|(_, (signal, _))| signal).collect();
        ready.iter().for_each(|signal| signal.notify_one());
    }
}
