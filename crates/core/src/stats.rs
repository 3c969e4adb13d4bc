//! Figures the hub keeps about itself, for the server to export and the
//! dashboard to show.
//!
//! The core emits no metrics: it counts in atomics (relaxed: a figure may
//! lag an event, never lose one) and the server reads the totals when it
//! renders. Snapshots take no lock a publish needs for longer than a ring's.

use std::sync::atomic::AtomicU64;

use crate::{EventId, Topic, TopicName};

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

impl TopicStats {
    /// The registry's figures about `topic` (the store's are left at 0).
    pub(crate) fn of(topic: &Topic) -> Self {
        let ring = topic.ring();
        Self {
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
    /// Catch-up steps served from a page another reader loaded.
    pub catch_up_shared: u64,
    /// Catch-up steps that loaded a page from the store.
    pub catch_up_store: u64,
    /// Store commits that failed.
    pub store_errors: u64,
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

/// Counters kept by the hub's writer and its subscriptions. Open
/// subscriptions are the registry's to count, catch-up reads the cache's.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) published: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) replays_ring: AtomicU64,
    pub(crate) replays_store: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) store_errors: AtomicU64,
}
