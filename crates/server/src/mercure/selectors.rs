//! Compiled selectors, shared by the subscribers that send the same text:
//! a thousand browsers on one page's template compile it once, and match it
//! once per update ([`SharedSelector::routes`]). Bounded: past
//! [`MAX_SELECTORS`] entries the cache starts over, as selectors are
//! clients' input and their variety is theirs to choose.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use herald_core::{MercureMeta, SelectorError, TopicSelector};
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

/// A compiled selector, with an id of its own under which updates remember
/// its answers ([`herald_core::RouteMemo`]): the thousand streams of one
/// template match it against an update once, not once each.
#[derive(Debug)]
pub struct SharedSelector {
    /// The selector.
    pub selector: TopicSelector,
    /// Never 0, never reused.
    id: u64,
}

impl SharedSelector {
    fn new(selector: TopicSelector) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self { selector, id: NEXT.fetch_add(1, Ordering::Relaxed) }
    }

    /// Whether one of the topics of `meta` (an update's) matches.
    pub fn routes(&self, meta: &MercureMeta) -> bool {
        let any_topic = |selector: &TopicSelector| meta.topics.iter().any(|topic| selector.matches(topic));
        match &self.selector {
            // Cheaper than asking the memo.
            TopicSelector::Any | TopicSelector::Exact(_) => any_topic(&self.selector),
            selector => meta.routes.get(self.id).unwrap_or_else(|| {
                let routed = any_topic(selector);
                meta.routes.set(self.id, routed);
                routed
            }),
        }
    }

    /// The selector as given.
    pub fn as_str(&self) -> &str {
        self.selector.as_str()
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
    use super::*;

    #[test]
    fn a_template_is_asked_once_per_update_and_each_update_answers_for_itself() {
        let cache = SelectorCache::new(Url::parse("http://mercure.invalid/").unwrap());
        let books = cache.get(SelectorKind::Topic, "/books/{id}").unwrap();
        let authors = cache.get(SelectorKind::Topic, "/authors/{id}").unwrap();
        let book = MercureMeta::new(vec!["/books/1".into()], false, None);
        let author = MercureMeta::new(vec!["/x".into(), "/authors/1".into()], false, None);
        for _ in 0..2 {
            assert!(books.routes(&book) && !books.routes(&author));
            assert!(!authors.routes(&book) && authors.routes(&author));
        }
        assert_eq!(book.routes.get(books.id), Some(true), "remembered");
        assert_eq!(author.routes.get(books.id), Some(false));
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
