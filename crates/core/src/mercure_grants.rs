//! What a Mercure token allows: the `mercure` claim (0.x, also under its
//! namespaced name `https://mercure.rocks/`) read into topic selectors.
//!
//! The claim is `{publish?: [selector], subscribe?: [selector], payload?}`.
//! A missing `publish` list is not an empty one: a token without it is no
//! publisher token at all (401), where an empty list matches nothing (403).

use serde_json::Value;

use crate::TopicSelector;

/// Most selectors in one of a token's lists, as Mercure's hub allows.
pub const MAX_TOKEN_SELECTORS: usize = 1000;

/// The permissions a Mercure token grants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MercureGrants {
    /// Topics it may publish to; `None` when the token has no publish list.
    pub publish: Option<Vec<TopicSelector>>,
    /// Topics whose private updates it may receive (and, for the
    /// subscriptions API, which subscriptions it may see).
    pub subscribe: Option<Vec<TopicSelector>>,
    /// Data the hub attaches to the subscriber's subscription events.
    pub payload: Option<Value>,
}

/// Why a token's claims grant nothing usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MercureClaimError {
    /// The claim is not an object, or a list is not a list of strings.
    #[error("the `mercure` claim is malformed: {0}")]
    Malformed(&'static str),
    /// A list holds more selectors than the hub accepts.
    #[error("the `mercure` claim's `{0}` list holds more than {MAX_TOKEN_SELECTORS} selectors")]
    TooMany(&'static str),
}

impl MercureGrants {
    /// The grants of a token's (verified) claims: from `mercure`, or else
    /// from `https://mercure.rocks/`; none when neither is there.
    pub fn from_claims(claims: &Value) -> Result<Self, MercureClaimError> {
        let Some(claim) = claims.get("mercure").or_else(|| claims.get("https://mercure.rocks/")) else {
            return Ok(Self::default());
        };
        let Value::Object(claim) = claim else { return Err(MercureClaimError::Malformed("not an object")) };
        Ok(Self {
            publish: selectors(claim.get("publish"), "publish")?,
            subscribe: selectors(claim.get("subscribe"), "subscribe")?,
            payload: claim.get("payload").cloned(),
        })
    }

    /// Whether it may publish an update to every one of `topics`.
    pub fn may_publish<'a>(&self, mut topics: impl Iterator<Item = &'a str>) -> bool {
        let Some(grants) = &self.publish else { return false };
        topics.all(|topic| grants.iter().any(|grant| grant.matches(topic)))
    }

    /// Whether it may receive a private update with any of `topics`.
    pub fn may_receive_private<'a>(&self, mut topics: impl Iterator<Item = &'a str>) -> bool {
        let Some(grants) = &self.subscribe else { return false };
        topics.any(|topic| grants.iter().any(|grant| grant.matches(topic)))
    }
}

/// One list of selectors; `None` when the key is absent (or null).
fn selectors(list: Option<&Value>, name: &'static str) -> Result<Option<Vec<TopicSelector>>, MercureClaimError> {
    let items = match list {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(MercureClaimError::Malformed("a selector list is not an array")),
    };
    if items.len() > MAX_TOKEN_SELECTORS {
        return Err(MercureClaimError::TooMany(name));
    }
    let parsed = items.iter().map(|item| item.as_str().map(TopicSelector::parse));
    parsed.collect::<Option<Vec<_>>>().map(Some).ok_or(MercureClaimError::Malformed("a selector is not a string"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_claim_is_read_under_either_name_and_a_missing_list_is_not_an_empty_one() {
        let grants =
            MercureGrants::from_claims(&json!({"mercure": {"publish": ["*"], "payload": {"user": 7}}})).unwrap();
        assert!(grants.may_publish(["https://example.com/a", "b"].into_iter()));
        assert_eq!(grants.subscribe, None);
        assert!(!grants.may_receive_private(["b"].into_iter()));
        assert_eq!(grants.payload, Some(json!({"user": 7})));

        let namespaced = json!({"https://mercure.rocks/": {"subscribe": ["https://example.com/books/{id}"]}});
        let grants = MercureGrants::from_claims(&namespaced).unwrap();
        assert!(grants.may_receive_private(["https://example.com/books/1", "x"].into_iter()));
        assert!(!grants.may_receive_private(["https://example.com/authors/1"].into_iter()));
        assert_eq!(grants.publish, None, "no publish list: not a publisher");

        let empty = MercureGrants::from_claims(&json!({"mercure": {"publish": []}})).unwrap();
        assert_eq!(empty.publish, Some(Vec::new()));
        assert!(!empty.may_publish(["a"].into_iter()));
        assert_eq!(MercureGrants::from_claims(&json!({"sub": "x"})).unwrap(), MercureGrants::default());
    }

    #[test]
    fn publishing_needs_every_topic_and_private_delivery_any() {
        let claims = json!({"mercure": {"publish": ["https://example.com/books/{id}"], "subscribe": ["/users/1"]}});
        let grants = MercureGrants::from_claims(&claims).unwrap();
        assert!(grants.may_publish(["https://example.com/books/1", "https://example.com/books/2"].into_iter()));
        assert!(!grants.may_publish(["https://example.com/books/1", "/users/1"].into_iter()));
        assert!(grants.may_receive_private(["/other", "/users/1"].into_iter()));
    }

    #[test]
    fn malformed_claims_are_refused_with_their_reason() {
        let refused = |claims: Value| MercureGrants::from_claims(&claims).unwrap_err();
        assert_eq!(refused(json!({"mercure": ["*"]})), MercureClaimError::Malformed("not an object"));
        assert!(matches!(refused(json!({"mercure": {"publish": "*"}})), MercureClaimError::Malformed(_)));
        assert!(matches!(refused(json!({"mercure": {"subscribe": [1]}})), MercureClaimError::Malformed(_)));
        let many: Vec<String> = (0..=MAX_TOKEN_SELECTORS).map(|i| format!("/t/{i}")).collect();
        assert_eq!(refused(json!({"mercure": {"publish": many}})), MercureClaimError::TooMany("publish"));
    }
}
