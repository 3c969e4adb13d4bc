//! Idempotency keys: what makes retrying a publish safe.
//!
//! Invariants:
//! - A key belongs to its caller: it is looked up within a *scope* (the
//!   token's subject), so two callers that pick the same key never see each
//!   other's events, ids or topic names.
//! - A key stands for one whole publish request (one event, or one batch)
//!   and remembers a fingerprint of what was sent. A retry with the same
//!   fingerprint is answered with the first request's ids and stores nothing;
//!   the same key with anything else sent is refused, never replayed.

use sha2::{Digest as _, Sha256};

use crate::{EventDraft, Grants};

/// A publisher's key for one request, within its scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    /// Whose key it is (see [`IdempotencyKey::scope_of`]).
    pub scope: String,
    /// The key as the publisher sent it.
    pub key: String,
    /// What the request held, to tell a retry from a reuse.
    pub fingerprint: Fingerprint,
}

/// A SHA-256 digest of a request's events: topic, type, data, retry and
/// Mercure metadata of each, in order, each field length-prefixed so no two requests share one.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl std::fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0[..6].iter().try_for_each(|b| write!(f, "{b:02x}"))?;
        f.write_str("…")
    }
}

impl Fingerprint {
    /// The fingerprint of `drafts`.
    pub fn of(drafts: &[EventDraft]) -> Self {
        let mut hash = Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        for draft in drafts {
            field(draft.topic.as_str().as_bytes());
            field(draft.event_type.as_ref().map_or(&b""[..], |t| t.as_str().as_bytes()));
            field(draft.data.as_bytes());
            field(&draft.retry_ms.map_or([0; 9], |ms| {
                let mut out = [1; 9];
                out[1..].copy_from_slice(&ms.to_le_bytes());
                out
            }));
            field(draft.mercure.as_ref().map_or(String::new(), |meta| meta.to_json()).as_bytes());
        }
        Self(hash.finalize().into())
    }
}

impl IdempotencyKey {
    /// The key `key` of the caller holding `grants`, for a request of `drafts`.
    pub fn new(grants: &Grants, key: String, drafts: &[EventDraft]) -> Self {
        Self { scope: Self::scope_of(grants), key, fingerprint: Fingerprint::of(drafts) }
    }

    /// The scope of a caller's keys: its token's subject; for a token without
    /// one, the publish patterns it holds (callers allowed exactly the same
    /// topics share keys, and can see nothing through them they could not
    /// publish to). Never empty: the empty scope marks keys stored before
    /// keys were scoped.
    pub fn scope_of(grants: &Grants) -> String {
        match &grants.subject {
            Some(subject) => format!("sub:{subject}"),
            None => {
                let mut patterns: Vec<String> = grants.publish.iter().map(ToString::to_string).collect();
                patterns.sort_unstable();
                patterns.dedup();
                format!("grants:{}", patterns.join(","))
            }
        }
    }
}

/// One publish request as the hub commits it: its events, stored together
/// under consecutive ids, and the key that makes retrying it safe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The events, in order.
    pub drafts: Vec<EventDraft>,
    /// The request's idempotency key, if it sent one.
    pub key: Option<IdempotencyKey>,
}

impl Publish {
    /// A request without a key.
    pub fn new(drafts: Vec<EventDraft>) -> Self {
        Self { drafts, key: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TopicPattern;

    fn draft(topic: &str, data: &str) -> EventDraft {
        EventDraft::new(topic.parse().unwrap(), data)
    }

    #[test]
    fn fingerprints_tell_requests_apart() {
        let one = Fingerprint::of(&[draft("a", "x")]);
        assert_eq!(one, Fingerprint::of(&[draft("a", "x")]));
        assert_ne!(one, Fingerprint::of(&[draft("b", "x")]));
        assert_ne!(one, Fingerprint::of(&[draft("a", "y")]));
        assert_ne!(one, Fingerprint::of(&[draft("a", "x"), draft("a", "x")]));
        // Field boundaries count: topic "ab" + data "c" is not topic "a" + data "bc".
        assert_ne!(Fingerprint::of(&[draft("ab", "c")]), Fingerprint::of(&[draft("a", "bc")]));
        let retried = EventDraft { retry_ms: Some(0), ..draft("a", "x") };
        assert_ne!(one, Fingerprint::of(&[retried]));
    }

    #[test]
    fn scopes_belong_to_callers() {
        let alice = Grants { subject: Some("alice".into()), ..Grants::default() };
        let bob = Grants { subject: Some("bob".into()), ..Grants::default() };
        assert_ne!(IdempotencyKey::scope_of(&alice), IdempotencyKey::scope_of(&bob));
        let p = |s: &str| s.parse::<TopicPattern>().unwrap();
        let a = Grants { publish: vec![p("tenantA.*")], ..Grants::default() };
        let b = Grants { publish: vec![p("tenantB.*")], ..Grants::default() };
        assert_ne!(IdempotencyKey::scope_of(&a), IdempotencyKey::scope_of(&b));
        assert!(!IdempotencyKey::scope_of(&Grants::default()).is_empty());
    }
}
