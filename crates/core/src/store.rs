//! The durable side of the hub: where ids are assigned and history is kept.
//!
//! A store is the source of truth. The hub's rings only cache its newest
//! events, and nothing reaches a ring before the store has it, so a reader
//! that falls behind a ring can always ask the store, and a crash can never
//! take back an event a subscriber has seen.

use async_trait::async_trait;

use crate::{Epoch, Event, EventDraft, EventId, TopicName, TopicPattern};

/// The store could not do what was asked. Publishes answer 503 with this;
/// nothing was acknowledged, so nothing is lost.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backing storage failed (I/O error, disk full, server down).
    #[error("storage unavailable: {0}")]
    Unavailable(String),
}

/// What happened to one draft of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored under a new id.
    New(Event),
    /// Its idempotency key was seen before: nothing was stored, and this is
    /// the event the key first created.
    Duplicate {
        /// The id the key first got.
        id: EventId,
        /// The topic it went to.
        topic: TopicName,
    },
}

impl Appended {
    /// The id, new or first.
    pub fn id(&self) -> EventId {
        match self {
            Self::New(event) => event.id,
            Self::Duplicate { id, .. } => *id,
        }
    }
}

/// Which topics a read or a subscription covers: names and patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Exact topics.
    pub topics: Vec<TopicName>,
    /// Prefix patterns (exact patterns are kept in `topics`).
    pub patterns: Vec<TopicPattern>,
}

impl Selection {
    /// Splits patterns into exact names and prefix patterns, without duplicates.
    pub fn new(items: impl IntoIterator<Item = TopicPattern>) -> Self {
        let mut selection = Self::default();
        for item in items {
            match item {
                TopicPattern::Exact(name) if !selection.topics.contains(&name) => selection.topics.push(name),
                p @ TopicPattern::Prefix(_) if !selection.patterns.contains(&p) => selection.patterns.push(p),
                _ => {}
            }
        }
        selection
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str) -> bool {
        self.topics.iter().any(|t| t.as_str() == topic) || self.patterns.iter().any(|p| p.matches(topic))
    }

    /// Every name and pattern, for messages.
    pub fn describe(&self) -> Vec<String> {
        let names = self.topics.iter().map(ToString::to_string);
        names.chain(self.patterns.iter().map(ToString::to_string)).collect()
    }
}

/// Lost history found by a read: events of `topic` up to and including
/// sequence `through` are no longer retained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The topic (or, when the store no longer knows which topic, the pattern).
    pub topic: String,
    /// The highest sequence number that may have been lost.
    pub through: u64,
}

/// The answer to a read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreRead {
    /// Matching events in sequence order.
    pub events: Vec<Event>,
    /// The limit was hit: more events may follow the last one.
    pub truncated: bool,
    /// Topics whose retained history does not reach back to `after`.
    pub gaps: Vec<Gap>,
}

impl StoreRead {
    /// How far the read reaches, for a read up to `upto`: every selected
    /// event up to the returned position is in `events`.
    pub fn reaches(&self, upto: u64) -> u64 {
        match self.events.last() {
            Some(last) if self.truncated => last.id.seq,
            _ => upto,
        }
    }
}

/// Storage of the hub's history, and its sequencer.
///
/// `append` is called by one writer task at a time, with every publish that
/// queued up meanwhile: an implementation should make the whole slice durable
/// in one commit (group commit) before it returns. The hub calls it from a
/// thread of its own, so it may block that thread rather than hand the work
/// to another.
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// The history this store holds; ids of other epochs are unknown to it.
    fn epoch(&self) -> Epoch;

    /// The highest sequence number ever assigned (0 if none).
    async fn last_seq(&self) -> Result<u64, StoreError>;

    /// Durably stores `drafts` in order, assigning each the next id, except
    /// drafts whose idempotency key was already used.
    async fn append(&self, drafts: &[EventDraft]) -> Result<Vec<Appended>, StoreError>;

    /// Events of the selected topics with `after < seq <= upto`, in order,
    /// at most `limit` of them.
    async fn read(&self, selection: &Selection, after: u64, upto: u64, limit: usize) -> Result<StoreRead, StoreError>;

    /// Applies the retention policy (and expires idempotency keys).
    /// Returns how many events it removed.
    async fn enforce_retention(&self, now_ms: u64) -> Result<u64, StoreError>;

    /// A short description for logs and the dashboard (`memory`, `sqlite:/path`).
    fn describe(&self) -> String;
}
