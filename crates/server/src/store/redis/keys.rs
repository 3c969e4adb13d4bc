//! Where Herald keeps a history in Redis: every key under one hash tag
//! (`{prefix}`), so the scripts may touch them all at once, even on a Redis
//! Cluster (where they share one slot). Streams, index and idempotency keys
//! carry the epoch in their names: a new history starts in a fresh key space.

use herald_core::{Epoch, IdempotencyKey};
use sha2::{Digest, Sha256};

/// The key names of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    tag: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self { tag: format!("{{{prefix}}}") }
    }

    /// The hash of the history's epoch, its last sequence and the run id of
    /// the Redis that last vouched for it.
    pub(crate) fn meta(&self) -> String {
        format!("{}:meta", self.tag)
    }

    /// Topic → its last sequence (a sorted set): which topics changed after
    /// a position, and how far each reached.
    pub(crate) fn index(&self, epoch: Epoch) -> String {
        format!("{}:i:{epoch}", self.tag)
    }

    /// Every topic with score 0, for listing topics in name order.
    pub(crate) fn names(&self, epoch: Epoch) -> String {
        format!("{}:names:{epoch}", self.tag)
    }

    /// One topic's stream of events.
    pub(crate) fn stream(&self, epoch: Epoch, topic: &str) -> String {
        format!("{}:s:{epoch}:{topic}", self.tag)
    }

    /// Publisher's id → the sequence of the newest event of `topic` that
    /// carries it (a sorted set, scored by sequence: the entries of events
    /// no longer retained are the lowest, and go in one range removal).
    pub(crate) fn mercure_ids(&self, epoch: Epoch, topic: &str) -> String {
        format!("{}:mi:{epoch}:{topic}", self.tag)
    }

    /// An idempotency key, hashed: callers choose scopes and keys freely.
    pub(crate) fn idempotency(&self, epoch: Epoch, key: &IdempotencyKey) -> String {
        let mut hash = Sha256::new();
        hash.update(key.scope.as_bytes());
        hash.update([0]);
        hash.update(key.key.as_bytes());
        format!("{}:k:{epoch}:{}", self.tag, hex(&hash.finalize()))
    }

    /// Node id → the last batch it committed (resolves in-doubt publishes).
    pub(crate) fn nodes(&self) -> String {
        format!("{}:n", self.tag)
    }

    /// The lock of the retention sweep (one node at a time).
    pub(crate) fn sweep_lock(&self) -> String {
        format!("{}:sweep", self.tag)
    }

    /// The pattern of every key of this prefix.
    pub(crate) fn all(&self) -> String {
        format!("{}:*", self.tag)
    }

    /// Whether `key` belongs to a history other than `epoch`'s (streams,
    /// indexes, Mercure ids and idempotency keys carry their epoch after
    /// their kind).
    pub(crate) fn is_of_past_history(&self, key: &str, epoch: Epoch) -> bool {
        let Some(rest) = key.strip_prefix(&self.tag).and_then(|rest| rest.strip_prefix(':')) else { return false };
        let Some((kind, rest)) = rest.split_once(':') else { return false };
        let of_epoch = matches!(kind, "s" | "i" | "names" | "k" | "mi");
        of_epoch && rest.get(..8).is_some_and(|e| e != epoch.to_string())
    }

    /// The channel every committed batch is published on.
    pub(crate) fn feed(&self) -> String {
        format!("{}:feed", self.tag)
    }
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_of_other_histories_are_past() {
        let keys = Keys::new("h");
        let (now, old) = (Epoch(1), Epoch(2));
        assert!(keys.is_of_past_history(&keys.stream(old, "a:b"), now));
        assert!(keys.is_of_past_history(&keys.index(old), now));
        assert!(keys.is_of_past_history(&keys.names(old), now));
        assert!(keys.is_of_past_history(&keys.mercure_ids(old, "a:b"), now));
        assert!(!keys.is_of_past_history(&keys.stream(now, "a:b"), now));
        assert!(!keys.is_of_past_history(&keys.mercure_ids(now, "a:b"), now));
        for kept in [keys.meta(), keys.nodes(), keys.sweep_lock(), "{hh}:s:00000002:x".to_owned()] {
            assert!(!keys.is_of_past_history(&kept, now), "{kept}");
        }
    }
}
