//! The durable side of the hub: where ids are assigned and history is kept.
//!
//! A store is the source of truth. The hub's rings only cache its newest
//! events, and nothing reaches a ring before the store has it, so a reader
//! that falls behind a ring can always ask the store, and a crash can never
//! take back an event a subscriber has seen.

use std::{error::Error, sync::Arc};

use async_trait::async_trait;

use crate::{Epoch, Event, EventId, Publish, TopicName, TopicPattern};

/// The store could not do what was asked. Publishes answer 503 with this;
/// nothing was acknowledged, so nothing is lost.
///
/// Cloneable, as the hub hands one failed commit to every publisher in it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backing storage failed (I/O error, disk full, server down). The
    /// store's own error is kept, for a caller that looks into it; it shows
    /// in this error's message, so it is not also its `source()` (a chain
    /// would say it twice).
    #[error("storage unavailable: {0}")]
    Unavailable(Arc<dyn Error + Send + Sync>),
    /// The request reached the storage, whose answer was lost: the events
    /// may or may not be stored. Only a retry with the same idempotency key
    /// can tell without publishing twice.
    #[error("the outcome is unknown: {0}")]
    InDoubt(Arc<dyn Error + Send + Sync>),
}

/// Errors are equal when they say the same (the sources cannot be compared).
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other) && self.to_string() == other.to_string()
    }
}

impl Eq for StoreError {}

impl StoreError {
    /// The storage failed with `error` (a typed error, or a message).
    pub fn unavailable(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::Unavailable(Arc::from(error.into()))
    }

    /// The storage may or may not have taken the request (`error` lost its
    /// answer).
    pub fn in_doubt(error: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self::InDoubt(Arc::from(error.into()))
    }
}

/// What happened to one publish request of an append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Appended {
    /// Stored under new, consecutive ids.
    New(Vec<Event>),
    /// Its idempotency key was used before for the same events: nothing was
    /// stored, and the first request's events have consecutive ids from this
    /// one.
    Replayed {
        /// The id of the first request's first event.
        first: EventId,
    },
    /// Its idempotency key was used before for other events: nothing was
    /// stored, and the request is refused.
    KeyReused,
    /// This request failed while others of the same append were stored
    /// (a store that commits a large group in parts).
    Failed(StoreError),
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

/// How much one read or delivery step may hand out: at most `events`
/// events, and at most `bytes` of frames, except that the first event always
/// goes whole (so a reader always makes progress, whatever an event's size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadLimit {
    /// Most events.
    pub events: usize,
    /// Most frame bytes, past the first event.
    pub bytes: usize,
}

impl ReadLimit {
    /// Whether a step holding `events` events of `bytes` frame bytes may take
    /// one more of `next` bytes.
    pub fn admits(&self, events: usize, bytes: usize, next: usize) -> bool {
        events == 0 || (events < self.events && bytes.saturating_add(next) <= self.bytes)
    }

    /// How many of `events` (in order) fit.
    pub fn fitting<'a>(&self, events: impl IntoIterator<Item = &'a Event>) -> usize {
        let mut bytes = 0;
        events
            .into_iter()
            .enumerate()
            .take_while(|(taken, event)| {
                let fits = self.admits(*taken, bytes, event.size());
                bytes += event.size();
                fits
            })
            .count()
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

/// What a store holds of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTopic {
    /// The topic.
    pub name: TopicName,
    /// Events of it retained.
    pub events: u64,
    /// Its newest event's id.
    pub last_id: EventId,
    /// When its newest event was published (ms since the Unix epoch).
    pub last_event_ms: u64,
}

/// Storage of the hub's history, and its sequencer.
///
/// `append` is called by one writer task at a time, with every publish that
/// queued up meanwhile: an implementation should make the whole slice durable
/// in one commit (group commit) before it returns. Each request's events get
/// consecutive ids, all or none of them stored. The hub calls it from a
/// thread of its own, so it may block that thread rather than hand the work
/// to another.
#[async_trait]
pub trait EventStore: Send + Sync + std::fmt::Debug + 'static {
    /// The history this store holds; ids of other epochs are unknown to it.
    fn epoch(&self) -> Epoch;

    /// The highest sequence number ever assigned (0 if none).
    async fn last_seq(&self) -> Result<u64, StoreError>;

    /// Durably stores the requests' events in order, assigning each the next
    /// id, except requests whose idempotency key was already used (in its
    /// scope, and not expired): one answer per request.
    async fn append(&self, requests: &[Publish]) -> Result<Vec<Appended>, StoreError>;

    /// Events of the selected topics with `after < seq <= upto`, in order,
    /// within `limit` (`truncated` when more follow). The events read are
    /// held in memory at once: a store that copies them out of storage must
    /// stop at the limit, not copy more and drop the rest.
    async fn read(
        &self,
        selection: &Selection,
        after: u64,
        upto: u64,
        limit: ReadLimit,
    ) -> Result<StoreRead, StoreError>;

    /// The topics with retained events, in name order, after `after` (when
    /// given), at most `limit` of them.
    async fn topics(&self, after: Option<&TopicName>, limit: usize) -> Result<Vec<StoredTopic>, StoreError>;

    /// What the store holds of `topic`; `None` when it holds no event of it.
    async fn topic(&self, topic: &TopicName) -> Result<Option<StoredTopic>, StoreError>;

    /// The newest retained event of `topic` whose Mercure update carries
    /// the publisher's id `id` (ids may be reused); `None` when there is none.
    async fn find_mercure_id(&self, topic: &TopicName, id: &str) -> Result<Option<EventId>, StoreError>;

    /// Applies the retention policy (and expires idempotency keys).
    /// Events with a sequence above `readers_at` have not been handed to
    /// every connected subscriber: a store keeps those of a topic past the
    /// policy's bounds while they total at most the policy's `hold_bytes`
    /// (`None`: no one is connected). Returns how many events it removed.
    async fn enforce_retention(&self, now_ms: u64, readers_at: Option<u64>) -> Result<u64, StoreError>;

    /// A short description for logs and the dashboard (`memory`, `sqlite:/path`).
    fn describe(&self) -> String;

    /// Whether committed events come back to the hub through a feed of the
    /// store's own (a store shared by several nodes), which calls
    /// [`crate::Hub::apply`] in id order: then the writer does not apply
    /// its commits itself, or a node's own events could overtake another
    /// node's earlier ones.
    fn feeds_commits(&self) -> bool {
        false
    }

    /// The history before this one, when the store started a new one
    /// because it lost (or may have lost) the old: a resume from the old
    /// one's ids is told so, rather than that the id is unknown.
    fn previous_epoch(&self) -> Option<Epoch> {
        None
    }

    /// Whether the store can serve now, when it can tell without a commit
    /// (a connection to a server); `None` leaves it to the last commit.
    fn available(&self) -> Option<bool> {
        None
    }
}
