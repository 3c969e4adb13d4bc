//! The open event streams, for the dashboard's connections page and its
//! disconnect action. Entries are added and removed by the streams
//! themselves; counters are atomics the stream bumps as it writes.

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use dashmap::DashMap;
use herald_core::ConnectionSnapshot;
use tokio_util::sync::CancellationToken;

/// Every open stream, by id.
#[derive(Debug, Default)]
pub struct StreamRegistry {
    next_id: AtomicU64,
    entries: DashMap<u64, Arc<StreamEntry>>,
}

/// One open stream.
#[derive(Debug)]
pub struct StreamEntry {
    /// Its id.
    pub id: u64,
    remote: IpAddr,
    user_agent: String,
    subject: Option<String>,
    topics: Vec<String>,
    connected_ms: u64,
    /// Events written so far.
    pub events_sent: AtomicU64,
    /// Backlog at the last write.
    pub lag: AtomicU64,
    /// Cancelled by an operator's disconnect, and at shutdown.
    pub disconnect: CancellationToken,
}

/// Removes its entry from the registry when dropped.
#[derive(Debug)]
pub struct Registration {
    registry: Arc<StreamRegistry>,
    /// The entry, for the stream to update.
    pub entry: Arc<StreamEntry>,
}

impl StreamRegistry {
    /// Adds a stream; its disconnect token is a child of `shutdown`.
    pub fn register(
        self: &Arc<Self>,
        shutdown: &CancellationToken,
        remote: IpAddr,
        user_agent: String,
        subject: Option<String>,
        topics: Vec<String>,
    ) -> Registration {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let entry = Arc::new(StreamEntry {
            id,
            remote,
            user_agent,
            subject,
            topics,
            connected_ms: herald_core::now_ms(),
            events_sent: AtomicU64::new(0),
            lag: AtomicU64::new(0),
            disconnect: shutdown.child_token(),
        });
        self.entries.insert(id, Arc::clone(&entry));
        Registration { registry: Arc::clone(self), entry }
    }

    /// Every open stream, oldest first.
    pub fn snapshot(&self) -> Vec<ConnectionSnapshot> {
        let mut all: Vec<ConnectionSnapshot> = self.entries.iter().map(|e| Self::snapshot_of(&e)).collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// How many streams are open, and the `limit` oldest: only those are
    /// copied (the dashboard samples every second, whatever the count).
    pub fn oldest(&self, limit: usize) -> (usize, Vec<ConnectionSnapshot>) {
        let mut ids: Vec<u64> = self.entries.iter().map(|e| *e.key()).collect();
        let total = ids.len();
        if limit < ids.len() {
            ids.select_nth_unstable(limit);
            ids.truncate(limit);
        }
        ids.sort_unstable();
        let oldest = ids.iter().filter_map(|id| self.entries.get(id).map(|e| Self::snapshot_of(&e))).collect();
        (total, oldest)
    }

    fn snapshot_of(e: &StreamEntry) -> ConnectionSnapshot {
        ConnectionSnapshot {
            id: e.id,
            remote: e.remote.to_string(),
            user_agent: e.user_agent.clone(),
            subject: e.subject.clone(),
            topics: e.topics.clone(),
            connected_ms: e.connected_ms,
            events_sent: e.events_sent.load(Ordering::Relaxed),
            lag: e.lag.load(Ordering::Relaxed),
        }
    }

    /// Ends stream `id`; false if there is no such stream.
    pub fn disconnect(&self, id: u64) -> bool {
        self.entries.get(&id).map(|e| e.disconnect.cancel()).is_some()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.entries.remove(&self.entry.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_streams_are_listed_and_all_are_counted() {
        let registry = Arc::new(StreamRegistry::default());
        let shutdown = CancellationToken::new();
        let ip = IpAddr::from([127, 0, 0, 1]);
        let open: Vec<Registration> =
            (0..5).map(|_| registry.register(&shutdown, ip, String::new(), None, Vec::new())).collect();
        let (total, oldest) = registry.oldest(2);
        assert_eq!((total, oldest.iter().map(|c| c.id).collect::<Vec<_>>()), (5, vec![1, 2]));
        let (total, all) = registry.oldest(10);
        assert_eq!((total, all.len()), (5, 5));
        assert_eq!(
            all.iter().map(|c| c.id).collect::<Vec<_>>(),
            registry.snapshot().iter().map(|c| c.id).collect::<Vec<_>>()
        );
        drop(open);
        assert_eq!(registry.oldest(2).0, 0);
    }
}
