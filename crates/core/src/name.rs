//! Topic names and the patterns that select them.
//!
//! Invariants: a [`TopicName`] is 1–200 bytes of `A–Z a–z 0–9 . _ - : ~ @`, so
//! it is safe in a URL path segment, a log line and an SQL parameter alike,
//! possibly after a leading `$` that marks a topic the hub itself owns (the
//! Mercure door's `$mercure`). A [`TopicPattern`] is an exact name or a
//! prefix followed by one trailing `*`; no prefix selects a hub-owned topic,
//! so `*` never reaches what the hub keeps apart.

use std::{borrow::Borrow, fmt, str::FromStr, sync::Arc};

/// The longest topic name, in bytes.
pub const MAX_TOPIC_NAME_LEN: usize = 200;

/// What a hub-owned topic's name starts with.
pub const HUB_TOPIC_MARK: char = '$';

/// Why a string is not a topic name or pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    /// The name was empty.
    #[error("topic name is empty; use 1 to 200 of A-Z a-z 0-9 . _ - : ~ @")]
    Empty,
    /// The name was longer than [`MAX_TOPIC_NAME_LEN`].
    #[error("topic name is {0} bytes long; the limit is 200")]
    TooLong(usize),
    /// The name held a character outside the allowed set.
    #[error("topic name contains {0:?}; only A-Z a-z 0-9 . _ - : ~ @ are allowed")]
    BadChar(char),
    /// A `*` stood somewhere other than at the end of a pattern.
    #[error("a pattern may hold one `*`, and only at its end (like `orders.*`)")]
    MisplacedWildcard,
}

fn is_topic_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'~' | b'@')
}

/// Checks `s` against the topic-name rules without allocating.
/// `allow_empty` is for the prefix of a pattern such as `*`.
fn validate(s: &str, allow_empty: bool) -> Result<(), TopicError> {
    if s.is_empty() && !allow_empty {
        return Err(TopicError::Empty);
    }
    if s.len() > MAX_TOPIC_NAME_LEN {
        return Err(TopicError::TooLong(s.len()));
    }
    let unmarked = if allow_empty { s } else { s.strip_prefix(HUB_TOPIC_MARK).unwrap_or(s) };
    if unmarked.is_empty() && !allow_empty {
        return Err(TopicError::Empty);
    }
    if let Some(c) = unmarked.chars().find(|c| !c.is_ascii() || !is_topic_byte(*c as u8)) {
        return Err(if c == '*' { TopicError::MisplacedWildcard } else { TopicError::BadChar(c) });
    }
    Ok(())
}

/// A validated topic name. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(Arc<str>);

impl TopicName {
    /// Validates and wraps `name`.
    pub fn new(name: &str) -> Result<Self, TopicError> {
        validate(name, false)?;
        Ok(Self(Arc::from(name)))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the hub owns it (`$…`): publishers cannot write to it, and
    /// no pattern selects it.
    pub fn is_hub_owned(&self) -> bool {
        is_hub_owned(&self.0)
    }
}

/// Whether the hub owns the topic named `name` (`$…`), for a name held as
/// text (a store's key or row): as [`TopicName::is_hub_owned`].
pub fn is_hub_owned(name: &str) -> bool {
    name.starts_with(HUB_TOPIC_MARK)
}

impl FromStr for TopicName {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Borrow<str> for TopicName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl serde::Serialize for TopicName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// An exact topic name, or a prefix with a trailing `*` that matches any
/// topic starting with it (`orders.*`, and `*` for every topic).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum TopicPattern {
    /// Matches this one topic.
    Exact(TopicName),
    /// Matches every topic starting with this prefix (possibly empty).
    Prefix(Arc<str>),
}

impl TopicPattern {
    /// Whether `topic` is selected by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Self::Exact(name) => name.as_str() == topic,
            Self::Prefix(prefix) => topic.starts_with(&**prefix) && !is_hub_owned(topic),
        }
    }

    /// Whether every topic `other` matches is also matched by `self`.
    /// Used by grants: a token for `orders.*` may subscribe to `orders.eu.*`.
    pub fn covers(&self, other: &TopicPattern) -> bool {
        match (self, other) {
            (Self::Exact(a), Self::Exact(b)) => a == b,
            (Self::Exact(_), Self::Prefix(_)) => false,
            (Self::Prefix(p), Self::Exact(name)) => Self::Prefix(Arc::clone(p)).matches(name.as_str()),
            (Self::Prefix(p), Self::Prefix(q)) => q.starts_with(&**p),
        }
    }
}

impl FromStr for TopicPattern {
    type Err = TopicError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_suffix('*') {
            Some(prefix) => {
                validate(prefix, true)?;
                Ok(Self::Prefix(Arc::from(prefix)))
            }
            None => Ok(Self::Exact(TopicName::new(s)?)),
        }
    }
}

impl From<TopicName> for TopicPattern {
    fn from(name: TopicName) -> Self {
        Self::Exact(name)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name.as_str()),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl serde::Serialize for TopicPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for TopicPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        for ok in ["a", "orders.eu-1", "A_b:c~d@e", &"x".repeat(200)] {
            assert!(TopicName::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(TopicName::new(""), Err(TopicError::Empty));
        assert_eq!(TopicName::new(&"x".repeat(201)), Err(TopicError::TooLong(201)));
        assert_eq!(TopicName::new("a/b"), Err(TopicError::BadChar('/')));
        assert_eq!(TopicName::new("a b"), Err(TopicError::BadChar(' ')));
        assert_eq!(TopicName::new("é"), Err(TopicError::BadChar('é')));
        assert_eq!(TopicName::new("a*"), Err(TopicError::MisplacedWildcard));
    }

    #[test]
    fn hub_owned_topics_are_marked_and_no_pattern_selects_them() {
        let door = TopicName::new("$mercure").unwrap();
        assert!(door.is_hub_owned() && !TopicName::new("mercure").unwrap().is_hub_owned());
        assert_eq!(TopicName::new("$"), Err(TopicError::Empty));
        assert_eq!(TopicName::new("a$"), Err(TopicError::BadChar('$')));
        assert_eq!(TopicName::new("$$a"), Err(TopicError::BadChar('$')));
        assert_eq!("$mer*".parse::<TopicPattern>(), Err(TopicError::BadChar('$')));
        let all: TopicPattern = "*".parse().unwrap();
        assert!(!all.matches("$mercure") && !all.covers(&TopicPattern::Exact(door.clone())));
        assert!(TopicPattern::Exact(door).matches("$mercure"));
    }

    #[test]
    fn patterns_match_and_cover() {
        let p: TopicPattern = "orders.*".parse().unwrap();
        assert!(p.matches("orders.eu") && p.matches("orders.") && !p.matches("order"));
        let all: TopicPattern = "*".parse().unwrap();
        assert!(all.matches("anything") && all.covers(&p));
        assert!(p.covers(&"orders.eu.*".parse().unwrap()));
        assert!(p.covers(&"orders.eu".parse().unwrap()));
        assert!(!p.covers(&"*".parse().unwrap()));
        let exact: TopicPattern = "orders".parse().unwrap();
        assert!(exact.matches("orders") && !exact.matches("orders.eu"));
        assert_eq!("a*b*".parse::<TopicPattern>(), Err(TopicError::MisplacedWildcard));
        assert_eq!("**".parse::<TopicPattern>(), Err(TopicError::MisplacedWildcard));
        assert_eq!(p.to_string(), "orders.*");
    }
}
