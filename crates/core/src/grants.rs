//! What a token allows: the topics it may publish to and subscribe to.

use crate::{TopicName, TopicPattern};

/// The permissions of one caller, from a verified token or from the public
/// subscribe patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Who the token names (`sub`), for logs and the dashboard.
    pub subject: Option<String>,
    /// Topics it may publish to.
    pub publish: Vec<TopicPattern>,
    /// Topics it may subscribe to.
    pub subscribe: Vec<TopicPattern>,
    /// Operator access: the dashboard, every topic's figures, and subscribing
    /// to any topic. Publishing still needs a publish grant.
    pub admin: bool,
    /// When the token stops being valid (seconds since the Unix epoch).
    pub expires_at: Option<u64>,
}

impl Grants {
    /// Grants of a caller without a token: the public subscribe patterns.
    pub fn anonymous(public_subscribe: &[TopicPattern]) -> Self {
        Self { subscribe: public_subscribe.to_vec(), ..Self::default() }
    }

    /// Whether it may publish to `topic`.
    pub fn may_publish(&self, topic: &TopicName) -> bool {
        self.publish.iter().any(|grant| grant.matches(topic.as_str()))
    }

    /// Whether it may subscribe to everything `wanted` selects.
    pub fn may_subscribe(&self, wanted: &TopicPattern) -> bool {
        self.admin || self.subscribe.iter().any(|grant| grant.covers(wanted))
    }

    /// Adds another source's grants (a token's on top of the public ones).
    pub fn merge(mut self, other: Grants) -> Self {
        self.subject = other.subject.or(self.subject);
        self.publish.extend(other.publish);
        self.subscribe.extend(other.subscribe);
        self.admin |= other.admin;
        self.expires_at = other.expires_at.or(self.expires_at);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> TopicPattern {
        s.parse().unwrap()
    }

    #[test]
    fn grants_cover_topics_and_narrower_patterns() {
        let g = Grants { publish: vec![p("orders.*")], subscribe: vec![p("orders.*"), p("news")], ..Grants::default() };
        assert!(g.may_publish(&"orders.eu".parse().unwrap()));
        assert!(!g.may_publish(&"news".parse().unwrap()));
        assert!(g.may_subscribe(&p("orders.eu.*")) && g.may_subscribe(&p("news")));
        assert!(!g.may_subscribe(&p("*")) && !g.may_subscribe(&p("news.*")));
        let admin = Grants { admin: true, ..Grants::default() };
        assert!(admin.may_subscribe(&p("*")) && !admin.may_publish(&"x".parse().unwrap()));
    }
}
