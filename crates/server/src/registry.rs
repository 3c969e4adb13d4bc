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
        let mut all: Vec<ConnectionSnapshot> = self
            .entries
            .iter()
            .map(|e| ConnectionSnapshot {
                id: e.id,
                remote: e.remote.to_string(),
                user_agent: e.user_agent.clone(),
                subject: e.subject.clone(),
                topics: e.topics.clone(),
                connected_ms: e.connected_ms,
                events_sent: e.events_sent.load(Ordering::Relaxed),
                lag: e.lag.load(Ordering::Relaxed),
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
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
