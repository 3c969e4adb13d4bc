//! Compiled selectors, shared by the subscribers that send the same text:
//! a thousand browsers on one page's template compile it once. Bounded: past
//! [`MAX_SELECTORS`] entries the cache starts over, as selectors are
//! clients' input and their variety is theirs to choose.

use std::{collections::HashMap, sync::Arc};

use herald_core::TopicSelector;
use parking_lot::Mutex;

/// Most compiled selectors kept.
pub const MAX_SELECTORS: usize = 10_000;

/// How a subscriber's text selects topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SelectorKind {
    /// 0.x `topic=`: `*`, an exact topic or an RFC 6570 template.
    Topic,
    /// 1.0 `match=` / `match_exact=`: the very string.
    Exact,
}

/// A selector's kind and text.
type SelectorKey = (SelectorKind, Box<str>);

/// Compiled selectors by their kind and text.
#[derive(Debug, Default)]
pub struct SelectorCache {
    compiled: Mutex<HashMap<SelectorKey, Arc<TopicSelector>>>,
}

impl SelectorCache {
    /// The selector `text` stands for as a `kind`.
    pub fn get(&self, kind: SelectorKind, text: &str) -> Arc<TopicSelector> {
        let key = (kind, Box::from(text));
        if let Some(selector) = self.compiled.lock().get(&key) {
            return Arc::clone(selector);
        }
        // Compiled outside the lock: a template takes microseconds.
        let selector = Arc::new(match kind {
            SelectorKind::Topic => TopicSelector::parse(text),
            SelectorKind::Exact => TopicSelector::Exact(text.to_owned()),
        });
        let mut compiled = self.compiled.lock();
        if compiled.len() >= MAX_SELECTORS {
            compiled.clear();
        }
        Arc::clone(compiled.entry(key).or_insert(selector))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_text_compiles_once_and_kinds_stay_apart() {
        let cache = SelectorCache::default();
        let a = cache.get(SelectorKind::Topic, "/books/{id}");
        let b = cache.get(SelectorKind::Topic, "/books/{id}");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(a.matches("/books/1"));
        let exact = cache.get(SelectorKind::Exact, "/books/{id}");
        assert!(!exact.matches("/books/1") && exact.matches("/books/{id}"));
        for i in 0..=MAX_SELECTORS {
            cache.get(SelectorKind::Exact, &i.to_string());
        }
        assert!(cache.compiled.lock().len() <= MAX_SELECTORS);
    }
}
