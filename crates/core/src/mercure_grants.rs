//! What a Mercure token allows: the `mercure` claim (0.x, also under its
//! namespaced name `https://mercure.rocks/`) or the `authorization_details`
//! claim (1.0) read into topic selectors.
//!
//! The 0.x claim is `{publish?: [selector], subscribe?: [selector],
//! payload?}`. A missing `publish` list is not an empty one: a token without
//! it is no publisher token at all (401), where an empty list matches
//! nothing (403).
//!
//! The 1.0 claim is a list of authorization details; those of type
//! [`MERCURE_AUTHORIZATION_DETAIL`] read `{actions: ["publish" |
//! "subscribe"], topics: [{match, match_type?: "exact" | "urlpattern"}],
//! payload?}`, and the others are another resource's business. Each list is
//! the union over the entries that grant its action, and stays `None` when
//! none does. One invalid entry invalidates the token: a token that does
//! not say what it means grants nothing.

use serde_json::{Map, Value};
use url::Url;

use crate::TopicSelector;

/// The `type` of Mercure's entries in `authorization_details`.
pub const MERCURE_AUTHORIZATION_DETAIL: &str = "https://mercure.rocks/authorization-detail";

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
    #[error("the token's `{0}` selectors number more than {MAX_TOKEN_SELECTORS}")]
    TooMany(&'static str),
    /// The `authorization_details` claim, or one of its Mercure entries,
    /// does not have the expected shape.
    #[error("the `authorization_details` claim is malformed: {0}")]
    MalformedDetail(&'static str),
    /// A Mercure entry names an action other than `publish` or `subscribe`.
    #[error("the `authorization_details` claim names an unknown action `{0}` (expected `publish` or `subscribe`)")]
    UnknownAction(String),
    /// A topic's `match_type` is neither `exact` nor `urlpattern`.
    #[error("the `authorization_details` claim names an unknown match_type `{0}` (expected `exact` or `urlpattern`)")]
    UnknownMatchType(String),
    /// A `urlpattern` topic that is not a URL pattern.
    #[error("the `authorization_details` claim holds a bad URL pattern: {0}")]
    BadPattern(String),
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

    /// The grants of a Mercure 1.0 token's (verified) claims: the union of
    /// its `authorization_details` entries of Mercure's type; none when it
    /// has no such claim. `urlpattern` topics resolve against `base`, the
    /// hub's URL.
    pub fn from_authorization_details(claims: &Value, base: &Url) -> Result<Self, MercureClaimError> {
        let details = match claims.get("authorization_details") {
            None | Some(Value::Null) => return Ok(Self::default()),
            Some(Value::Array(details)) => details,
            Some(_) => return Err(MercureClaimError::MalformedDetail("not an array")),
        };
        let mut grants = Self::default();
        for detail in details {
            let Value::Object(detail) = detail else {
                return Err(MercureClaimError::MalformedDetail("an entry is not an object"));
            };
            match detail.get("type") {
                Some(Value::String(kind)) if kind == MERCURE_AUTHORIZATION_DETAIL => grants.add_detail(detail, base)?,
                Some(Value::String(_)) => {}
                _ => return Err(MercureClaimError::MalformedDetail("an entry has no `type` string")),
            }
        }
        Ok(grants)
    }

    /// Adds one Mercure entry's grants.
    fn add_detail(&mut self, detail: &Map<String, Value>, base: &Url) -> Result<(), MercureClaimError> {
        let Some(Value::Array(actions)) = detail.get("actions") else {
            return Err(MercureClaimError::MalformedDetail("an entry's `actions` is not an array"));
        };
        let (mut publish, mut subscribe) = (false, false);
        for action in actions {
            match action.as_str() {
                Some("publish") => publish = true,
                Some("subscribe") => subscribe = true,
                Some(other) => return Err(MercureClaimError::UnknownAction(other.to_owned())),
                None => return Err(MercureClaimError::MalformedDetail("an action is not a string")),
            }
        }
        let Some(Value::Array(topics)) = detail.get("topics") else {
            return Err(MercureClaimError::MalformedDetail("an entry's `topics` is not an array"));
        };
        // Counted before compiling: patterns cost work to compile.
        let mut lists = Vec::new();
        if publish {
            lists.push((self.publish.get_or_insert_default(), "publish"));
        }
        if subscribe {
            lists.push((self.subscribe.get_or_insert_default(), "subscribe"));
        }
        for (list, name) in &lists {
            if list.len().saturating_add(topics.len()) > MAX_TOKEN_SELECTORS {
                return Err(MercureClaimError::TooMany(name));
            }
        }
        let selectors = topics.iter().map(|topic| matcher(topic, base)).collect::<Result<Vec<_>, _>>()?;
        for (list, _) in lists {
            list.extend(selectors.iter().cloned());
        }
        if self.payload.is_none() {
            self.payload = detail.get("payload").cloned();
        }
        Ok(())
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

/// One 1.0 matcher, `{match, match_type?}`.
fn matcher(topic: &Value, base: &Url) -> Result<TopicSelector, MercureClaimError> {
    let Value::Object(topic) = topic else {
        return Err(MercureClaimError::MalformedDetail("a topic is not an object"));
    };
    let Some(Value::String(text)) = topic.get("match") else {
        return Err(MercureClaimError::MalformedDetail("a topic has no `match` string"));
    };
    match topic.get("match_type") {
        None | Some(Value::Null) => Ok(TopicSelector::exact(text)),
        Some(Value::String(kind)) if kind == "exact" => Ok(TopicSelector::exact(text)),
        Some(Value::String(kind)) if kind == "urlpattern" => {
            TopicSelector::url_pattern(text, base).map_err(|error| MercureClaimError::BadPattern(error.to_string()))
        }
        Some(Value::String(kind)) => Err(MercureClaimError::UnknownMatchType(kind.clone())),
        Some(_) => Err(MercureClaimError::MalformedDetail("a topic's `match_type` is not a string")),
    }
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

    fn hub() -> Url {
        Url::parse("https://hub.example.com/.well-known/mercure").unwrap()
    }

    fn detail(actions: Value, topics: Value) -> Value {
        json!({"type": MERCURE_AUTHORIZATION_DETAIL, "actions": actions, "topics": topics})
    }

    fn details(entries: Value) -> Result<MercureGrants, MercureClaimError> {
        MercureGrants::from_authorization_details(&json!({"authorization_details": entries}), &hub())
    }

    #[test]
    fn mercure_entries_grant_the_union_of_their_topics_per_action() {
        let grants = details(json!([
            detail(json!(["publish", "subscribe"]), json!([{"match": "/books/{id}"}])),
            {"type": "https://example.com/other", "actions": ["fly"], "topics": 7},
            detail(json!(["subscribe"]), json!([{"match": "/users/:id", "match_type": "urlpattern"}, {"match": "*", "match_type": "exact"}])),
        ]))
        .unwrap();
        let publish = grants.publish.as_ref().unwrap();
        assert_eq!(publish, &[TopicSelector::exact("/books/{id}")], "exact by default, even with braces");
        assert!(grants.may_publish(["/books/{id}"].into_iter()));
        assert!(!grants.may_publish(["/books/1"].into_iter()));
        assert_eq!(grants.subscribe.as_ref().unwrap().len(), 3);
        assert!(grants.may_receive_private(["https://hub.example.com/users/7"].into_iter()));
        assert!(grants.may_receive_private(["/users/7"].into_iter()), "relative topics resolve against the hub");
        assert!(grants.may_receive_private(["*"].into_iter()));
        assert!(!grants.may_receive_private(["/other"].into_iter()), "an exact `*` is no wildcard");
        assert_eq!(grants.payload, None);
    }

    #[test]
    fn a_list_stays_absent_when_no_entry_grants_its_action() {
        let subscriber = details(json!([detail(json!(["subscribe"]), json!([]))])).unwrap();
        assert_eq!(subscriber.publish, None, "no publish entry: not a publisher");
        assert_eq!(subscriber.subscribe, Some(Vec::new()));
        let with_payload =
            json!([{"type": MERCURE_AUTHORIZATION_DETAIL, "actions": [], "topics": [], "payload": {"u": 1}}]);
        let grants = details(with_payload).unwrap();
        assert_eq!((grants.publish, grants.subscribe, grants.payload), (None, None, Some(json!({"u": 1}))));
        assert_eq!(details(json!([{"type": "https://example.com/other"}])).unwrap(), MercureGrants::default());
        let no_claim = MercureGrants::from_authorization_details(&json!({"mercure": {"publish": ["*"]}}), &hub());
        assert_eq!(no_claim.unwrap(), MercureGrants::default(), "the 0.x claim is not read here");
    }

    #[test]
    fn one_invalid_mercure_entry_invalidates_the_claim() {
        let topics = json!([{"match": "/a"}]);
        assert_eq!(
            details(json!([detail(json!(["publish", "delete"]), topics.clone())])).unwrap_err(),
            MercureClaimError::UnknownAction("delete".into())
        );
        assert_eq!(
            details(json!([detail(json!(["publish"]), json!([{"match": "/a", "match_type": "regex"}]))])).unwrap_err(),
            MercureClaimError::UnknownMatchType("regex".into())
        );
        let pattern =
            details(json!([detail(json!(["subscribe"]), json!([{"match": "/a/:id(", "match_type": "urlpattern"}]))]));
        assert!(matches!(pattern.unwrap_err(), MercureClaimError::BadPattern(_)));
        for malformed in [
            json!({"type": MERCURE_AUTHORIZATION_DETAIL}),
            json!([detail(json!(["publish"]), json!([{"match_type": "exact"}]))]),
            json!([detail(json!(["publish"]), json!([{"match": 1}]))]),
            json!([detail(json!(["publish"]), json!(["/a"]))]),
            json!([detail(json!(["publish"]), json!({"match": "/a"}))]),
            json!([detail(json!("publish"), topics.clone())]),
            json!([detail(json!([1]), topics.clone())]),
            json!([{"type": MERCURE_AUTHORIZATION_DETAIL, "topics": topics.clone()}]),
            json!([{"actions": ["publish"], "topics": topics.clone()}]),
            json!(["x"]),
        ] {
            assert!(matches!(details(malformed.clone()), Err(MercureClaimError::MalformedDetail(_))), "{malformed}");
        }
    }

    #[test]
    fn too_many_selectors_over_all_entries_are_refused() {
        let half: Vec<Value> = (0..MAX_TOKEN_SELECTORS / 2 + 1).map(|i| json!({"match": format!("/t/{i}")})).collect();
        let one = detail(json!(["subscribe"]), json!(half));
        assert!(details(json!([one.clone()])).is_ok());
        assert_eq!(details(json!([one.clone(), one])).unwrap_err(), MercureClaimError::TooMany("subscribe"));
        let all: Vec<Value> = (0..=MAX_TOKEN_SELECTORS).map(|i| json!({"match": format!("/t/{i}")})).collect();
        assert_eq!(
            details(json!([detail(json!(["publish"]), json!(all))])).unwrap_err(),
            MercureClaimError::TooMany("publish")
        );
    }
}
