//! An [`EventStore`] in memory: for `--memory` and for tests.
//!
//! History lasts as long as the process. Each topic keeps its newest events
//! up to the retention bounds; frames are shared with the rings, so keeping
//! both costs one `Event` handle per event, not a second copy of its bytes.

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use async_trait::async_trait;
use parking_lot::Mutex;

use crate::{
    Appended, Epoch, Event, EventId, EventStore, Gap, Publish, ReadLimit, Selection, StoreError, StoreRead,
    StoredTopic, TopicName, idempotency::Fingerprint, name::is_hub_owned, now_ms,
};

/// How much history a store keeps.
///
/// Stores ask [`Retention::events_for`] and [`Retention::age_for`] (or
/// [`Retention::of`]) rather than reading the fields: hub-owned topics
/// (`$…`, such as the Mercure door's `$mercure`) have bounds of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most events kept per topic.
    pub max_events_per_topic: usize,
    /// Events older than this are removed; `None` keeps them.
    pub max_age: Option<Duration>,
    /// The bounds of hub-owned topics (`$…`).
    pub hub_topics: TopicRetention,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: Duration,
    /// Bytes of one topic's events kept past the bounds above while a
    /// connected subscriber has not been handed them (a burst that outruns
    /// its readers): within this, retention waits for them.
    pub hold_bytes: u64,
}

/// How much history one class of topics keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRetention {
    /// Most events kept per topic.
    pub max_events: usize,
    /// Events older than this are removed; `None` keeps them.
    pub max_age: Option<Duration>,
}

impl TopicRetention {
    /// The publish time (ms) before which events are removed at `now_ms`;
    /// `None` when age removes nothing.
    pub fn cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        let max_age = self.max_age?;
        Some(now_ms.saturating_sub(u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX)))
    }
}

const DEFAULT_EVENTS: usize = 10_000;
const DEFAULT_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
const DEFAULT_HOLD_BYTES: u64 = 16 << 20;

/// The server's defaults (`--retention-events`, `--retention-age`,
/// `--idempotency-ttl`, `--retention-hold-bytes`) are these: defined here, once. Hub-owned topics
/// keep the same unless told otherwise.
impl Default for Retention {
    fn default() -> Self {
        Self {
            max_events_per_topic: DEFAULT_EVENTS,
            max_age: Some(DEFAULT_AGE),
            hub_topics: TopicRetention { max_events: DEFAULT_EVENTS, max_age: Some(DEFAULT_AGE) },
            idempotency_ttl: Duration::from_secs(24 * 3600),
            hold_bytes: DEFAULT_HOLD_BYTES,
        }
    }
}

impl Retention {
    /// The bounds of ordinary (not hub-owned) topics.
    pub fn ordinary_topics(&self) -> TopicRetention {
        TopicRetention { max_events: self.max_events_per_topic, max_age: self.max_age }
    }

    /// The bounds of `topic`'s class.
    pub fn of(&self, topic: &str) -> TopicRetention {
        if is_hub_owned(topic) { self.hub_topics } else { self.ordinary_topics() }
    }

    /// Most events kept of `topic`.
    pub fn events_for(&self, topic: &str) -> usize {
        self.of(topic).max_events
    }

    /// Age after which events of `topic` are removed; `None` keeps them.
    pub fn age_for(&self, topic: &str) -> Option<Duration> {
        self.of(topic).max_age
    }
}

/// History kept in memory, lost when the process ends (a new epoch each start).
#[derive(Debug)]
pub struct MemoryStore {
    epoch: Epoch,
    retention: Retention,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    last_seq: u64,
    logs: HashMap<TopicName, TopicLog>,
    /// Highest `floor` of any topic whose log was removed entirely: for a
    /// topic the store no longer knows, events up to here may be lost.
    forgotten_through: u64,
    /// Where the slowest connected reader is, as the last retention sweep
    /// said (`None`: no reader); until one says, everything is held.
    readers_at: Option<u64>,
    /// Idempotency keys by (scope, key).
    keys: HashMap<(String, String), KeyRecord>,
    key_expiry: VecDeque<(u64, (String, String))>,
}

/// What an idempotency key stands for.
#[derive(Debug)]
struct KeyRecord {
    first: EventId,
    fingerprint: Fingerprint,
    expires_ms: u64,
}

impl Default for State {
    fn default() -> Self {
        Self {
            last_seq: 0,
            logs: HashMap::new(),
            forgotten_through: 0,
            readers_at: Some(0),
            keys: HashMap::new(),
            key_expiry: VecDeque::new(),
        }
    }
}

#[derive(Debug)]
struct TopicLog {
    events: VecDeque<Event>,
    /// Every event of the topic above this sequence is in `events`.
    floor: u64,
    /// Frame bytes of the events past the topic's count bound, kept for
    /// readers that have not had them.
    held_bytes: u64,
}

impl TopicLog {
    fn above(floor: u64) -> Self {
        Self { events: VecDeque::new(), floor, held_bytes: 0 }
    }

    /// Appends `event` to a log of at most `max` events (past it, held).
    fn push(&mut self, event: Event, max: usize) {
        self.events.push_back(event);
        if let Some(newly_held) = self.events.len().checked_sub(max + 1).and_then(|i| self.events.get(i)) {
            self.held_bytes += newly_held.size() as u64;
        }
    }

    fn stored(&self, name: &TopicName) -> Option<StoredTopic> {
        let last = self.events.back()?;
        Some(StoredTopic {
            name: name.clone(),
            events: self.events.len() as u64,
            last_id: last.id,
            last_event_ms: last.time_ms,
        })
    }

    /// Removes the oldest event of a log of at most `max` events.
    fn evict_front(&mut self, max: usize) {
        let held = self.events.len() > max;
        if let Some(old) = self.events.pop_front() {
            self.floor = old.id.seq;
            if held {
                self.held_bytes = self.held_bytes.saturating_sub(old.size() as u64);
            }
        }
    }

    /// Removes the oldest events past `max`, but those a connected reader
    /// has not had (above `readers_at`) while they total at most
    /// `hold_bytes`; how many it removed.
    fn trim(&mut self, max: usize, readers_at: Option<u64>, hold_bytes: u64) -> u64 {
        let mut removed = 0;
        while let Some(oldest) = self.events.front().filter(|_| self.events.len() > max) {
            if readers_at.is_some_and(|at| oldest.id.seq > at) && self.held_bytes <= hold_bytes {
                break;
            }
            self.evict_front(max);
            removed += 1;
        }
        removed
    }
}

impl MemoryStore {
    /// An empty store with a fresh epoch.
    pub fn new(retention: Retention) -> Self {
        Self { epoch: Epoch::random(), retention, state: Mutex::default() }
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new(Retention::default())
    }
}

#[async_trait]
impl EventStore for MemoryStore {
    fn epoch(&self) -> Epoch {
        self.epoch
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.state.lock().last_seq)
    }

    async fn append(&self, requests: &[Publish]) -> Result<Vec<Appended>, StoreError> {
        let now = now_ms();
        let ttl = u64::try_from(self.retention.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
        let mut state = self.state.lock();
        let state = &mut *state;
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            if let Some(key) = &request.key {
                let id = (key.scope.clone(), key.key.clone());
                if let Some(record) = state.keys.get(&id).filter(|r| r.expires_ms > now) {
                    out.push(if record.fingerprint == key.fingerprint {
                        Appended::Replayed { first: record.first }
                    } else {
                        Appended::KeyReused
                    });
                    continue;
                }
                let expires_ms = now.saturating_add(ttl);
                let first = EventId::new(self.epoch, state.last_seq + 1);
                state.keys.insert(id.clone(), KeyRecord { first, fingerprint: key.fingerprint, expires_ms });
                state.key_expiry.push_back((expires_ms, id));
            }
            let mut events = Vec::with_capacity(request.drafts.len());
            for draft in &request.drafts {
                state.last_seq += 1;
                let event = Event::new(EventId::new(self.epoch, state.last_seq), draft, now);
                // A topic forgotten earlier may be this one: its events up
                // to there may be lost, as for a topic the store does not know.
                let floor = state.forgotten_through;
                let log = state.logs.entry(event.topic.clone()).or_insert_with(|| TopicLog::above(floor));
                let max = self.retention.events_for(event.topic.as_str());
                log.push(event.clone(), max);
                let _ = log.trim(max, state.readers_at, self.retention.hold_bytes);
                events.push(event);
            }
            out.push(Appended::New(events));
        }
        Ok(out)
    }

    async fn read(
        &self,
        selection: &Selection,
        after: u64,
        upto: u64,
        limit: ReadLimit,
    ) -> Result<StoreRead, StoreError> {
        let state = self.state.lock();
        let mut read = StoreRead::default();
        for (name, log) in state.logs.iter().filter(|(name, _)| selection.matches(name.as_str())) {
            if after < log.floor {
                read.gaps.push(Gap { topic: name.to_string(), through: log.floor });
            }
            let start = log.events.partition_point(|e| e.id.seq <= after);
            let matching = log.events.range(start..).take_while(|e| e.id.seq <= upto);
            read.events.extend(matching.take(limit.events.saturating_add(1)).cloned());
        }
        if after < state.forgotten_through {
            let known = |t: &TopicName| state.logs.contains_key(t);
            let forgotten = selection.topics.iter().filter(|t| !known(t)).map(ToString::to_string);
            let all = forgotten.chain(selection.patterns.iter().map(ToString::to_string));
            read.gaps.extend(all.map(|topic| Gap { topic, through: state.forgotten_through }));
        }
        read.events.sort_unstable_by_key(|e| e.id.seq);
        let fitting = limit.fitting(&read.events);
        if fitting < read.events.len() {
            read.events.truncate(fitting);
            read.truncated = true;
        }
        Ok(read)
    }

    async fn topics(&self, after: Option<&TopicName>, limit: usize) -> Result<Vec<StoredTopic>, StoreError> {
        let state = self.state.lock();
        let mut names: Vec<&TopicName> =
            state.logs.keys().filter(|name| after.is_none_or(|after| *name > after)).collect();
        names.sort_unstable();
        names.truncate(limit);
        Ok(names.into_iter().filter_map(|name| state.logs.get(name).and_then(|log| log.stored(name))).collect())
    }

    async fn topic(&self, name: &TopicName) -> Result<Option<StoredTopic>, StoreError> {
        Ok(self.state.lock().logs.get(name).and_then(|log| log.stored(name)))
    }

    async fn find_mercure_id(&self, topic: &TopicName, id: &str) -> Result<Option<EventId>, StoreError> {
        // A scan of one topic's retained events: this store is for tests and
        // small deployments, and the scan needs no index to keep bounded.
        let state = self.state.lock();
        let Some(log) = state.logs.get(topic) else { return Ok(None) };
        let custom = |e: &&Event| e.mercure.as_ref().is_some_and(|meta| meta.id.as_deref() == Some(id));
        Ok(log.events.iter().rev().find(custom).map(|e| e.id))
    }

    async fn enforce_retention(&self, now: u64, readers_at: Option<u64>) -> Result<u64, StoreError> {
        let mut state = self.state.lock();
        let state = &mut *state;
        state.readers_at = readers_at;
        // What the readers had since the last sweep may go now.
        let mut removed = 0;
        for (name, log) in &mut state.logs {
            removed += log.trim(self.retention.events_for(name.as_str()), readers_at, self.retention.hold_bytes);
        }
        while state.key_expiry.front().is_some_and(|(at, _)| *at <= now) {
            if let Some((at, key)) = state.key_expiry.pop_front() {
                // A key used again after expiring has a later expiry of its own.
                if state.keys.get(&key).is_some_and(|record| record.expires_ms == at) {
                    state.keys.remove(&key);
                }
            }
        }
        let ordinary = self.retention.ordinary_topics().cutoff_ms(now);
        let hub = self.retention.hub_topics.cutoff_ms(now);
        if ordinary.is_none() && hub.is_none() {
            return Ok(removed);
        }
        let mut forgotten = state.forgotten_through;
        state.logs.retain(|name, log| {
            let Some(cutoff) = (if name.is_hub_owned() { hub } else { ordinary }) else { return true };
            let max = self.retention.events_for(name.as_str());
            while log.events.front().is_some_and(|e| e.time_ms < cutoff) {
                log.evict_front(max);
                removed += 1;
            }
            let keep = !log.events.is_empty();
            if !keep {
                forgotten = forgotten.max(log.floor);
            }
            keep
        });
        state.forgotten_through = forgotten;
        Ok(removed)
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_owned_topics_have_bounds_of_their_own() {
        let hub_topics = TopicRetention { max_events: 2, max_age: None };
        let retention = Retention {
            max_events_per_topic: 5,
            max_age: Some(Duration::from_secs(1)),
            hub_topics,
            ..Retention::default()
        };
        assert_eq!((retention.events_for("$mercure"), retention.age_for("$mercure")), (2, None));
        assert_eq!((retention.events_for("mercure"), retention.age_for("mercure")), (5, Some(Duration::from_secs(1))));
        assert_eq!(retention.of("news").cutoff_ms(10_000), Some(9_000));
        assert_eq!(retention.of("news").cutoff_ms(10), Some(0), "no underflow");
        assert_eq!(retention.of("$mercure").cutoff_ms(10_000), None);
        let default = Retention::default();
        assert_eq!(default.hub_topics, default.ordinary_topics(), "the same unless told otherwise");
    }

    fn store(hold_bytes: u64) -> MemoryStore {
        MemoryStore::new(Retention { max_events_per_topic: 10, hold_bytes, ..Retention::default() })
    }

    async fn publish(store: &MemoryStore, n: usize) {
        let drafts = (0..n).map(|i| crate::EventDraft::new("t".parse().unwrap(), i.to_string())).collect();
        store.append(&[Publish::new(drafts)]).await.unwrap();
    }

    async fn retained(store: &MemoryStore) -> Vec<u64> {
        let selection = Selection::new(["t".parse().unwrap()]);
        let read = store.read(&selection, 0, u64::MAX, ReadLimit { events: 1000, bytes: usize::MAX }).await.unwrap();
        read.events.iter().map(|e| e.id.seq).collect()
    }

    #[tokio::test]
    async fn events_past_the_count_bound_wait_for_readers_within_the_hold() {
        let store = store(1 << 20);
        store.enforce_retention(0, Some(0)).await.unwrap();
        publish(&store, 30).await;
        assert_eq!(retained(&store).await, (1..=30).collect::<Vec<_>>(), "a reader is at 0: all held");
        // The reader has had 25: what it had goes, down to the bound.
        store.enforce_retention(0, Some(25)).await.unwrap();
        assert_eq!(retained(&store).await, (21..=30).collect::<Vec<_>>());
        // No reader: the bound holds at once.
        store.enforce_retention(0, None).await.unwrap();
        publish(&store, 5).await;
        assert_eq!(retained(&store).await, (26..=35).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn the_hold_is_bounded_in_bytes() {
        let store = store(0);
        store.enforce_retention(0, Some(0)).await.unwrap();
        publish(&store, 30).await;
        // Any event held would pass a bound of 0 bytes: the count bound wins.
        assert_eq!(retained(&store).await, (21..=30).collect::<Vec<_>>());
    }
}
