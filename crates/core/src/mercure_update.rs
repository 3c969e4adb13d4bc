//! What a Mercure update carries beside its frame.
//!
//! The Mercure door stores every update as one event of one topic of its own
//! (the door's "firehose"), so that an update with several topics has one id
//! and one place in the hub-wide order. What Mercure needs to route and
//! authorise it travels with the event: all of its topics (the canonical one
//! first), whether it is private, and the id its publisher chose. Stores keep
//! it beside the event, and the event's frame carries the update's own id:
//! the publisher's, or `urn:herald:` and the hub's id.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use serde::{Deserialize, Serialize};

use crate::EventId;

/// The prefix of the ids the hub gives Mercure updates: a valid IRI, as
/// Mercure's protocol asks, that survives being pasted into a URL.
pub const MERCURE_ID_PREFIX: &str = "urn:herald:";

/// The routing facts of one Mercure update.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MercureMeta {
    /// Its topics, the canonical one first; at least one.
    pub topics: Vec<String>,
    /// Only subscribers whose token grants one of its topics receive it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub private: bool,
    /// The id its publisher chose, if any (ids may be reused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Routing answers about this update, shared by every stream that asks.
    #[serde(skip)]
    pub routes: RouteMemo,
}

/// Answers about one update, kept with it so that the thousand streams of
/// one selector match the selector against it once: up to [`ROUTE_MEMO_SLOTS`]
/// askers, each by an id of its own. Readers only load, so a hit moves no
/// cache line between cores; an asker past the slots just asks again.
#[derive(Debug, Default)]
pub struct RouteMemo {
    /// `asker << 1 | answer`; 0 is an empty slot (askers are never 0).
    slots: [AtomicU64; ROUTE_MEMO_SLOTS],
}

/// How many askers one update remembers.
pub const ROUTE_MEMO_SLOTS: usize = 4;

impl RouteMemo {
    /// The answer `asker` gave, if remembered.
    pub fn get(&self, asker: u64) -> Option<bool> {
        for slot in &self.slots {
            match slot.load(Ordering::Relaxed) {
                0 => return None,
                value if value >> 1 == asker => return Some(value & 1 == 1),
                _ => {}
            }
        }
        None
    }

    /// Remembers `answer` of `asker` (an id from 1 to 2^63 - 1), if a slot is free.
    pub fn set(&self, asker: u64, answer: bool) {
        if asker == 0 || asker >> 63 != 0 {
            return;
        }
        let value = asker << 1 | u64::from(answer);
        for slot in &self.slots {
            match slot.compare_exchange(0, value, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(held) if held >> 1 == asker => return,
                Err(_) => {}
            }
        }
    }
}

/// A copy starts with no answers: they belong to the instance asked.
impl Clone for RouteMemo {
    fn clone(&self) -> Self {
        Self::default()
    }
}

/// Answers are a cache, not part of what an update is.
impl PartialEq for RouteMemo {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for RouteMemo {}

impl std::hash::Hash for RouteMemo {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl MercureMeta {
    /// An update's facts (`topics` holds at least one, the canonical first).
    pub fn new(topics: Vec<String>, private: bool, id: Option<String>) -> Self {
        Self { topics, private, id, routes: RouteMemo::default() }
    }

    /// The update's id on the wire: the publisher's, or the hub's under
    /// [`MERCURE_ID_PREFIX`].
    pub fn wire_id(&self, id: EventId) -> String {
        match &self.id {
            Some(custom) => custom.clone(),
            None => format!("{MERCURE_ID_PREFIX}{id}"),
        }
    }

    /// How stores keep it.
    pub fn to_json(&self) -> String {
        // A struct of strings and a bool always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// What a store kept; `None` when it is not an update's metadata.
    pub fn from_json(text: &str) -> Option<Arc<Self>> {
        serde_json::from_str::<Self>(text).ok().filter(|meta| !meta.topics.is_empty()).map(Arc::new)
    }
}

/// Parses an id given to a Mercure subscriber back into the hub's id: one
/// under [`MERCURE_ID_PREFIX`], or a bare native id.
pub fn parse_mercure_id(text: &str) -> Option<EventId> {
    text.strip_prefix(MERCURE_ID_PREFIX).unwrap_or(text).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Epoch;

    #[test]
    fn metadata_round_trips_and_names_its_id() {
        let meta = MercureMeta::new(vec!["https://a/1".into(), "/b".into()], true, None);
        let json = meta.to_json();
        assert_eq!(json, r#"{"topics":["https://a/1","/b"],"private":true}"#);
        assert_eq!(MercureMeta::from_json(&json).as_deref(), Some(&meta));
        let id = EventId::new(Epoch(1), 2);
        assert_eq!(meta.wire_id(id), "urn:herald:00000001-0000000000000002");
        assert_eq!(parse_mercure_id(&meta.wire_id(id)), Some(id));
        assert_eq!(parse_mercure_id("00000001-0000000000000002"), Some(id));
        assert_eq!(parse_mercure_id("urn:herald:x"), None);
        let custom = MercureMeta { id: Some("my-id".into()), private: false, ..meta };
        assert_eq!(custom.wire_id(id), "my-id");
        assert_eq!(custom.to_json(), r#"{"topics":["https://a/1","/b"],"id":"my-id"}"#);
        assert_eq!(MercureMeta::from_json(r#"{"topics":[]}"#), None);
        assert_eq!(MercureMeta::from_json("not json"), None);
    }

    #[test]
    fn routing_answers_are_kept_per_asker_while_slots_last() {
        let memo = RouteMemo::default();
        assert_eq!(memo.get(1), None);
        memo.set(1, true);
        memo.set(2, false);
        memo.set(1, false); // the first answer stays
        assert_eq!((memo.get(1), memo.get(2), memo.get(3)), (Some(true), Some(false), None));
        for asker in 3..=6 {
            memo.set(asker, true);
        }
        assert_eq!((memo.get(4), memo.get(5)), (Some(true), None), "four slots");
        memo.set(0, true);
        memo.set(u64::MAX, true);
        assert_eq!(memo.get(0), None);
        assert_eq!(memo.clone().get(1), None);
    }
}
