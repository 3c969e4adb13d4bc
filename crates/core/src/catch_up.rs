//! Catch-up reads, shared between the subscribers of a topic.
//!
//! A reader that falls behind its topic's ring reads the history from the
//! store. Under overload a large audience falls behind together, at nearly
//! the same position, and a thousand identical queries would each rebuild
//! the same events: the store's work and the memory held grow with the
//! audience, and the readers fall further behind. So a reader of one topic
//! reads history a page at a time through this cache: the first reader of a
//! stretch loads it from the store (one load at a time), the others take the
//! same events, their frames shared. A page is bounded like any delivery
//! step (events and bytes); the pages together stay within the cache's byte
//! budget (a page that alone exceeds it is handed out and not kept); all are
//! dropped whenever retention runs (through [`crate::Hub::enforce_retention`]).

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use parking_lot::Mutex;

use crate::{EventStore, Gap, ReadLimit, Selection, StoreError, TopicName, events::Events};

/// Most pages kept, over all topics.
const MAX_PAGES: usize = 256;
/// Most pages kept for one topic: readers far apart need pages of their own,
/// but one topic must not push every other topic's pages out.
const MAX_PAGES_PER_TOPIC: usize = 16;

/// What a catch-up step hands a reader.
#[derive(Debug, Default)]
pub(crate) struct CaughtUp {
    /// Events after the reader's cursor, in sequence order.
    pub(crate) events: Events,
    /// Topics whose history no longer reaches back to the cursor.
    pub(crate) gaps: Vec<Gap>,
    /// The cursor may move here: every selected event up to it was handed out.
    pub(crate) through: u64,
}

/// The shared pages.
#[derive(Debug)]
pub(crate) struct CatchUp {
    /// Most frame bytes kept in pages, over all topics.
    max_bytes: usize,
    /// Oldest first; the newest page that serves a reader wins.
    pages: Mutex<VecDeque<Arc<Page>>>,
    /// Per topic, one load at a time: readers that missed together wait for
    /// the first one's page instead of querying the store each. Topics load
    /// in parallel. Emptied with the pages.
    loading: Mutex<HashMap<TopicName, Arc<tokio::sync::Mutex<()>>>>,
    /// Bumped when the pages are dropped: a load that began before keeps
    /// nothing, as it may hold trimmed history.
    generation: AtomicU64,
    /// Steps served from a page another reader loaded.
    shared_reads: AtomicU64,
    /// Steps that loaded a page from the store.
    store_reads: AtomicU64,
}

/// Every event of one topic in `(after, covered]`, as the store had them.
#[derive(Debug)]
struct Page {
    topic: TopicName,
    /// The position the page was read from.
    after: u64,
    /// The page holds every event of its topic up to here.
    covered: u64,
    /// Shared by every reader the page serves.
    events: Events,
    /// What the store reported lost after `after`.
    gaps: Vec<Gap>,
    /// Frame bytes held, for the cache's bound.
    bytes: usize,
}

impl Page {
    fn serves(&self, topic: &TopicName, after: u64) -> bool {
        self.topic == *topic && self.after <= after && after < self.covered
    }

    /// Events in `(after, min(upto, covered)]`, within `limit`.
    fn answer(&self, after: u64, upto: u64, limit: ReadLimit) -> CaughtUp {
        let end = upto.min(self.covered);
        let start = self.events.partition_point(|e| e.id.seq <= after);
        let wanted = self.events.partition_point(|e| e.id.seq <= end).max(start);
        let fitting = limit.fitting(self.events.iter().skip(start).take(wanted - start));
        let events = self.events.slice(start, start + fitting);
        let through = if fitting < wanted - start { events.last().map_or(end, |e| e.id.seq) } else { end };
        let gaps = self.gaps.iter().filter(|gap| gap.through > after).cloned().collect();
        CaughtUp { events, gaps, through }
    }
}

impl CatchUp {
    /// An empty cache that keeps at most `max_bytes` of frames.
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            pages: Mutex::default(),
            loading: Mutex::default(),
            generation: AtomicU64::new(0),
            shared_reads: AtomicU64::new(0),
            store_reads: AtomicU64::new(0),
        }
    }

    /// Steps served so far: `(from shared pages, from the store)`.
    pub(crate) fn reads(&self) -> (u64, u64) {
        (self.shared_reads.load(Ordering::Relaxed), self.store_reads.load(Ordering::Relaxed))
    }

    /// Events of `topic` after `after`, up to `upto`, within `limit`: from a
    /// page that covers `after`, else from a page loaded from `store` now.
    pub(crate) async fn read(
        &self,
        store: &dyn EventStore,
        topic: &TopicName,
        after: u64,
        upto: u64,
        limit: ReadLimit,
    ) -> Result<CaughtUp, StoreError> {
        if let Some(page) = self.find(topic, after) {
            self.shared_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(page.answer(after, upto, limit));
        }
        let slot = Arc::clone(self.loading.lock().entry(topic.clone()).or_default());
        let _loading = slot.lock().await;
        if let Some(page) = self.find(topic, after) {
            self.shared_reads.fetch_add(1, Ordering::Relaxed);
            return Ok(page.answer(after, upto, limit));
        }
        self.store_reads.fetch_add(1, Ordering::Relaxed);
        let generation = self.generation.load(Ordering::Acquire);
        let selection = Selection { topics: vec![topic.clone()], patterns: Vec::new() };
        let read = store.read(&selection, after, upto, limit).await?;
        let covered = read.reaches(upto);
        let bytes = read.events.iter().map(|e| e.frame.len()).sum();
        let events = Events::from(read.events);
        let page = Arc::new(Page { topic: topic.clone(), after, covered, events, gaps: read.gaps, bytes });
        if self.generation.load(Ordering::Acquire) == generation {
            self.keep(Arc::clone(&page));
        }
        Ok(page.answer(after, upto, limit))
    }

    /// Forgets every page: history may have been trimmed under them.
    pub(crate) fn clear(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.pages.lock().clear();
        self.loading.lock().clear();
    }

    fn find(&self, topic: &TopicName, after: u64) -> Option<Arc<Page>> {
        self.pages.lock().iter().rev().find(|page| page.serves(topic, after)).cloned()
    }

    fn keep(&self, page: Arc<Page>) {
        if page.bytes > self.max_bytes {
            return;
        }
        let mut pages = self.pages.lock();
        if pages.iter().filter(|p| p.topic == page.topic).count() >= MAX_PAGES_PER_TOPIC
            && let Some(oldest) = pages.iter().position(|p| p.topic == page.topic)
        {
            pages.remove(oldest);
        }
        pages.push_back(page);
        while pages.len() > MAX_PAGES || pages.iter().map(|p| p.bytes).sum::<usize>() > self.max_bytes {
            pages.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventDraft, MemoryStore, Publish, Retention};

    fn count(events: usize) -> ReadLimit {
        ReadLimit { events, bytes: usize::MAX }
    }

    async fn store_with(events: usize) -> (MemoryStore, TopicName) {
        let store = MemoryStore::new(Retention::default());
        let topic: TopicName = "t".parse().unwrap();
        let other: TopicName = "u".parse().unwrap();
        let drafts: Vec<EventDraft> = (0..events)
            .flat_map(|i| {
                [EventDraft::new(topic.clone(), i.to_string()), EventDraft::new(other.clone(), format!("other {i}"))]
            })
            .collect();
        store.append(&[Publish::new(drafts)]).await.unwrap();
        (store, topic)
    }

    fn seqs(caught: &CaughtUp) -> Vec<u64> {
        caught.events.iter().map(|e| e.id.seq).collect()
    }

    #[tokio::test]
    async fn readers_near_one_position_share_one_page() {
        let (store, topic) = store_with(100).await;
        let catch_up = CatchUp::new(32 << 20);
        // Topic t holds the odd sequence numbers 1..=199.
        let first = catch_up.read(&store, &topic, 0, 200, count(10)).await.unwrap();
        assert_eq!(seqs(&first), (0..10).map(|i| 2 * i + 1).collect::<Vec<_>>());
        assert_eq!(first.through, 19);
        // A reader a little ahead is served from the same page.
        let second = catch_up.read(&store, &topic, 7, 200, count(10)).await.unwrap();
        assert_eq!(seqs(&second), vec![9, 11, 13, 15, 17, 19]);
        assert_eq!(second.through, 19, "it may move only as far as the page covers");
        assert_eq!(catch_up.pages.lock().len(), 1);
        // Past the page, the next page is loaded.
        let third = catch_up.read(&store, &topic, 19, 200, count(10)).await.unwrap();
        assert_eq!(seqs(&third).first(), Some(&21));
        assert_eq!(catch_up.pages.lock().len(), 2);
        assert_eq!(catch_up.reads(), (1, 2), "one step shared a page, two loaded one");
    }

    #[tokio::test]
    async fn a_page_never_hands_out_more_than_asked() {
        let (store, topic) = store_with(50).await;
        let catch_up = CatchUp::new(32 << 20);
        catch_up.read(&store, &topic, 0, 100, count(1000)).await.unwrap();
        // Up to a lower watermark only, and within the limit.
        let capped = catch_up.read(&store, &topic, 0, 20, count(1000)).await.unwrap();
        assert_eq!(seqs(&capped), (0..10).map(|i| 2 * i + 1).collect::<Vec<_>>());
        assert_eq!(capped.through, 20);
        let limited = catch_up.read(&store, &topic, 10, 100, count(3)).await.unwrap();
        assert_eq!(seqs(&limited), vec![11, 13, 15]);
        assert_eq!(limited.through, 15);
    }

    #[tokio::test]
    async fn pages_are_bounded_per_topic_and_dropped_with_retention() {
        let (store, topic) = store_with(200).await;
        let catch_up = CatchUp::new(32 << 20);
        let mut after = 0;
        for _ in 0..(MAX_PAGES_PER_TOPIC + 5) {
            after = catch_up.read(&store, &topic, after, 400, count(2)).await.unwrap().through;
        }
        assert_eq!(catch_up.pages.lock().len(), MAX_PAGES_PER_TOPIC);
        let other: TopicName = "u".parse().unwrap();
        catch_up.read(&store, &other, 0, 400, count(2)).await.unwrap();
        assert_eq!(catch_up.pages.lock().len(), MAX_PAGES_PER_TOPIC + 1, "another topic keeps its own");
        catch_up.clear();
        assert!(catch_up.pages.lock().is_empty());
    }

    #[tokio::test]
    async fn pages_are_bounded_in_bytes_and_the_cache_keeps_within_its_budget() {
        let store = MemoryStore::new(Retention::default());
        let topic: TopicName = "big".parse().unwrap();
        let drafts: Vec<EventDraft> = (0..20).map(|_| EventDraft::new(topic.clone(), "x".repeat(10_000))).collect();
        store.append(&[Publish::new(drafts)]).await.unwrap();
        let frame = store
            .read(&Selection::new([crate::TopicPattern::Exact(topic.clone())]), 0, 20, count(1))
            .await
            .unwrap()
            .events[0]
            .size();
        let catch_up = CatchUp::new(5 * frame);
        // Three frames' worth per step: three events, never more.
        let step = catch_up.read(&store, &topic, 0, 20, ReadLimit { events: 1000, bytes: 3 * frame }).await.unwrap();
        assert_eq!(seqs(&step), vec![1, 2, 3]);
        assert_eq!(step.through, 3);
        // A limit below one event still hands out that one event.
        let tiny = catch_up.read(&store, &topic, 3, 20, ReadLimit { events: 1000, bytes: 1 }).await.unwrap();
        assert_eq!(seqs(&tiny), vec![4]);
        let kept: usize = catch_up.pages.lock().iter().map(|p| p.bytes).sum();
        assert!(kept <= 5 * frame, "the cache holds {kept} bytes, over its budget of {}", 5 * frame);
        // A page larger than the whole budget is handed out but not kept.
        let before = catch_up.pages.lock().len();
        let huge = catch_up.read(&store, &topic, 4, 20, ReadLimit { events: 1000, bytes: 10 * frame }).await.unwrap();
        assert_eq!(huge.events.len(), 10);
        assert_eq!(catch_up.pages.lock().len(), before);
    }
}
