//! Compiled selectors, shared by the subscribers that send the same text:
//! a thousand browsers on one page's template compile it once, and match it
//! once per update ([`SharedSelector::routes`]). Bounded: past
//! [`MAX_SELECTORS`] entries the cache starts over, as selectors are
//! clients' input and their variety is theirs to choose.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering, fence},
    },
};

use herald_core::{Event, EventId, MercureMeta, SelectorError, TopicSelector};
use parking_lot::Mutex;
use url::Url;

/// Most compiled selectors kept.
pub const MAX_SELECTORS: usize = 10_000;

/// How a subscriber's text selects topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectorKind {
    /// 0.x `topic=`: `*`, an exact topic or an RFC 6570 template.
    Topic,
    /// 1.0 `match=` / `match_exact=`: the very string.
    Exact,
    /// 1.0 `match_urlpattern=`: a WHATWG URL Pattern over topics as URLs.
    UrlPattern,
}

/// A selector's kind and text.
type SelectorKey = (SelectorKind, Box<str>);

/// A compiled selector and its last answer. Every stream of one selector
/// asks about the same update in turn: a template or URL pattern is matched
/// once per update, not once per stream.
#[derive(Debug)]
pub struct SharedSelector {
    /// The selector.
    pub selector: TopicSelector,
    last: LastAnswer,
}

impl SharedSelector {
    fn new(selector: TopicSelector) -> Self {
        Self { selector, last: LastAnswer::default() }
    }

    /// Whether one of the topics of `event` (an update, with `meta`) matches.
    pub fn routes(&self, event: &Event, meta: &MercureMeta) -> bool {
        let any_topic = |selector: &TopicSelector| meta.topics.iter().any(|topic| selector.matches(topic));
        match &self.selector {
            // Cheaper than asking the memo.
            TopicSelector::Any | TopicSelector::Exact(_) => any_topic(&self.selector),
            selector => self.last.get(event.id).unwrap_or_else(|| {
                let routed = any_topic(selector);
                self.last.set(event.id, routed);
                routed
            }),
        }
    }

    /// The selector as given.
    pub fn as_str(&self) -> &str {
        self.selector.as_str()
    }
}

/// The last update a selector was asked about (its id names it within the
/// hub's history) and the answer, read by every stream of the selector on
/// every core: readers only load (a sequence lock), so a hit moves no cache
/// line between cores; one writer at a time, and a busy writer skips.
#[derive(Debug, Default)]
struct LastAnswer {
    /// Even when stable, odd while written.
    version: AtomicU64,
    epoch: AtomicU32,
    /// `seq << 1 | routed`; 0 before any answer (sequence numbers start at 1).
    seq_routed: AtomicU64,
    writer: Mutex<()>,
}

impl LastAnswer {
    fn get(&self, id: EventId) -> Option<bool> {
        let before = self.version.load(Ordering::Acquire);
        if before & 1 == 1 {
            return None;
        }
        let epoch = self.epoch.load(Ordering::Relaxed);
        let seq_routed = self.seq_routed.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        let stable = self.version.load(Ordering::Relaxed) == before;
        (stable && epoch == id.epoch.0 && seq_routed >> 1 == id.seq && id.seq != 0).then_some(seq_routed & 1 == 1)
    }

    fn set(&self, id: EventId, routed: bool) {
        // A sequence number above 2^63 cannot be packed: not remembered.
        let Some(_writing) = self.writer.try_lock().filter(|_| id.seq >> 63 == 0) else { return };
        let version = self.version.load(Ordering::Relaxed);
        self.version.store(version.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.epoch.store(id.epoch.0, Ordering::Relaxed);
        self.seq_routed.store(id.seq << 1 | u64::from(routed), Ordering::Relaxed);
        self.version.store(version.wrapping_add(2), Ordering::Release);
    }
}

/// Compiled selectors by their kind and text.
#[derive(Debug)]
pub struct SelectorCache {
    /// What relative topics and URL patterns are resolved against.
    base: Url,
    compiled: Mutex<HashMap<SelectorKey, Arc<SharedSelector>>>,
}

impl SelectorCache {
    /// An empty cache resolving URL patterns against `base`.
    pub fn new(base: Url) -> Self {
        Self { base, compiled: Mutex::default() }
    }

    /// The selector `text` stands for as a `kind`; only a URL pattern can
    /// be malformed.
    pub fn get(&self, kind: SelectorKind, text: &str) -> Result<Arc<SharedSelector>, SelectorError> {
        let key = (kind, Box::from(text));
        if let Some(selector) = self.compiled.lock().get(&key) {
            return Ok(Arc::clone(selector));
        }
        // Compiled outside the lock: a template takes microseconds.
        let selector = Arc::new(SharedSelector::new(match kind {
            SelectorKind::Topic => TopicSelector::parse(text),
            SelectorKind::Exact => TopicSelector::exact(text),
            SelectorKind::UrlPattern => TopicSelector::url_pattern(text, &self.base)?,
        }));
        let mut compiled = self.compiled.lock();
        if compiled.len() >= MAX_SELECTORS {
            compiled.clear();
        }
        Ok(Arc::clone(compiled.entry(key).or_insert(selector)))
    }
}

#[cfg(test)]
mod tests {
    use herald_core::{Epoch, EventDraft};

    use super::*;

    fn update(seq: u64, epoch: u32, topic: &str) -> Event {
        let mut draft = EventDraft::new("$mercure".parse().unwrap(), "");
        draft.mercure = Some(Arc::new(MercureMeta { topics: vec![topic.into()], private: false, id: None }));
        Event::new(EventId::new(Epoch(epoch), seq), &draft, 0)
    }

    #[test]
    fn a_template_answers_each_update_by_its_id_whatever_was_asked_before() {
        let cache = SelectorCache::new(Url::parse("http://mercure.invalid/").unwrap());
        let books = cache.get(SelectorKind::Topic, "/books/{id}").unwrap();
        for (seq, epoch, topic, routed) in
            [(1, 1, "/books/1", true), (1, 1, "/books/1", true), (2, 1, "/authors/1", false), (2, 2, "/books/2", true)]
        {
            let event = update(seq, epoch, topic);
            let meta = event.mercure.clone().unwrap();
            assert_eq!(books.routes(&event, &meta), routed, "{topic} in epoch {epoch}");
        }
        let answer = LastAnswer::default();
        assert_eq!(answer.get(EventId::new(Epoch(0), 0)), None, "nothing before the first answer");
        answer.set(EventId::new(Epoch(3), 7), true);
        assert_eq!(answer.get(EventId::new(Epoch(3), 7)), Some(true));
        assert_eq!(answer.get(EventId::new(Epoch(4), 7)), None);
        answer.set(EventId::new(Epoch(3), u64::MAX), false);
        assert_eq!(
            answer.get(EventId::new(Epoch(3), 7)),
            Some(true),
            "an id it cannot pack leaves the answer as it was"
        );
    }

    #[test]
    fn one_text_compiles_once_and_kinds_stay_apart() {
        let cache = SelectorCache::new(Url::parse("http://mercure.invalid/").unwrap());
        let a = cache.get(SelectorKind::Topic, "/books/{id}").unwrap();
        let b = cache.get(SelectorKind::Topic, "/books/{id}").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.selector.matches("/books/1"));
        let exact = cache.get(SelectorKind::Exact, "/books/{id}").unwrap();
        assert!(!exact.selector.matches("/books/1") && exact.selector.matches("/books/{id}"));
        let pattern = cache.get(SelectorKind::UrlPattern, "/books/:id").unwrap();
        assert!(pattern.selector.matches("/books/1") && pattern.selector.matches("http://mercure.invalid/books/2"));
        assert!(cache.get(SelectorKind::UrlPattern, "/books/(").is_err());
        for i in 0..=MAX_SELECTORS {
            cache.get(SelectorKind::Exact, &i.to_string()).unwrap();
        }
        assert!(cache.compiled.lock().len() <= MAX_SELECTORS);
    }
}
