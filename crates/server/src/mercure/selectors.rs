//! Compiled selectors, shared by the subscribers that send the same text:
//! a thousand browsers on one page's template compile it once. Bounded: past
//! [`MAX_SELECTORS`] entries the cache starts over, as selectors are
//! clients' input and their variety is theirs to choose.

use std::{collections::HashMap, sync::Arc};

use herald_core::{SelectorError, TopicSelector};
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

/// Compiled selectors by their kind and text.
#[derive(Debug)]
pub struct SelectorCache {
    /// What relative topics and URL patterns are resolved against.
    base: Url,
    compiled: Mutex<HashMap<SelectorKey, Arc<TopicSelector>>>,
}

impl SelectorCache {
    /// An empty cache resolving URL patterns against `base`.
    pub fn new(base: Url) -> Self {
        Self { base, compiled: Mutex::default() }
    }

    /// The selector `text` stands for as a `kind`; only a URL pattern can
    /// be malformed.
    pub fn get(&self, kind: SelectorKind, text: &str) -> Result<Arc<TopicSelector>, SelectorError> {
        let key = (kind, Box::from(text));
        if let Some(selector) = self.compiled.lock().get(&key) {
            return Ok(Arc::clone(selector));
        }
        // Compiled outside the lock: a template takes microseconds.
        let selector = Arc::new(match kind {
            SelectorKind::Topic => TopicSelector::parse(text),
            SelectorKind::Exact => TopicSelector::exact(text),
            SelectorKind::UrlPattern => TopicSelector::url_pattern(text, &self.base)?,
        });
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
    fn one_text_compiles_once_and_kinds_stay_apart() {
        let cache = SelectorCache::new(Url::parse("http://mercure.invalid/").unwrap());
        let a = cache.get(SelectorKind::Topic, "/books/{id}").unwrap();
        let b = cache.get(SelectorKind::Topic, "/books/{id}").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.matches("/books/1"));
        let exact = cache.get(SelectorKind::Exact, "/books/{id}").unwrap();
        assert!(!exact.matches("/books/1") && exact.matches("/books/{id}"));
        let pattern = cache.get(SelectorKind::UrlPattern, "/books/:id").unwrap();
        assert!(pattern.matches("/books/1") && pattern.matches("http://mercure.invalid/books/2"));
        assert!(cache.get(SelectorKind::UrlPattern, "/books/(").is_err());
        for i in 0..=MAX_SELECTORS {
            cache.get(SelectorKind::Exact, &i.to_string()).unwrap();
        }
        assert!(cache.compiled.lock().len() <= MAX_SELECTORS);
    }
}
