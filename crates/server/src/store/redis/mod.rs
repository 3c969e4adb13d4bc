//! The cluster store: several `herald` nodes share one history in Redis.
//!
//! Redis assigns the ids (one script per group commit, a dense hub-wide
//! sequence), keeps each topic's stream and the idempotency keys, and
//! publishes every committed batch on one channel, the feed, which each node
//! applies to its rings in id order ([`feed`]). A node's own events come back
//! through the feed like everyone else's. Loss of history in Redis (a
//! restart without durable persistence, a failover, a rollback) starts a new
//! epoch, which subscribers see as `herald.gap` `history_lost`.
//!
//! Three connections per node: the writer's own ([`session`]), one for
//! reads ([`reads`], made again after a failure) and the feed's.

mod backoff;
mod feed;
mod keys;
mod read;
mod reads;
mod scripts;
mod session;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_trait::async_trait;
use herald_core::{
    Appended, Epoch, EventStore, Hub, Publish, ReadLimit, Retention, Selection, StoreError, StoreRead, StoredTopic,
    TopicName,
};
use parking_lot::Mutex;

pub(crate) use self::keys::Keys;
use self::{reads::Reads, session::Session};

/// How to reach Redis and what to keep there.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://`, `rediss://` or `redis+unix://` URL.
    pub url: String,
    /// Key prefix (`--redis-prefix`): nodes with the same prefix share topics.
    pub prefix: String,
    /// Bound of each command and connection attempt (`--redis-timeout`).
    pub timeout: Duration,
    /// Longest the feed may lag before it is dropped and repaired
    /// (`--redis-feed-max-lag`).
    pub feed_max_lag: Duration,
    /// Trust that a restart or failover keeps acknowledged writes
    /// (`--redis-durable-restarts`).
    pub durable_restarts: bool,
    /// Stream cap, stream TTL and idempotency key TTL.
    pub retention: Retention,
}

/// How Redis keeps acknowledged writes, as `CONFIG GET` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// `appendonly yes` with `appendfsync always`: on disk before the ack.
    Fsync,
    /// `appendfsync everysec`: about a second may be lost.
    Everysec,
    /// No append-only file (snapshots at most).
    None,
    /// `CONFIG GET` refused (a managed Redis).
    Unknown,
}

impl Durability {
    /// The label of `herald_redis_durability`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Fsync => "fsync",
            Self::Everysec => "everysec",
            Self::None => "none",
            Self::Unknown => "unknown",
        }
    }
}

/// How long a node is not ready after Redis refused a write (out of
/// memory): without publishes, nothing else would tell it Redis recovered.
const REFUSAL_HOLD: Duration = Duration::from_secs(5);

/// What every part of the store shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) client: redis::Client,
    pub(crate) settings: RedisSettings,
    pub(crate) keys: Keys,
    /// This node's id in `{P}:n` and on the dashboard.
    pub(crate) node_id: String,
    /// The epoch subscribers are served (set by the feed, before the hub
    /// switches): reads go to its keys.
    epoch: AtomicU32,
    /// The history Redis held before `epoch`, as the handshake last said
    /// (0 if none).
    pub(crate) previous: AtomicU32,
    /// The highest sequence the feed applied in `epoch`.
    pub(crate) applied: AtomicU64,
    /// The highest sequence this node's publishes were given in `epoch`.
    pub(crate) acked: AtomicU64,
    pub(crate) feed_live: AtomicBool,
    pub(crate) session_live: AtomicBool,
    pub(crate) durability: Durability,
    /// Redis's `maxmemory-policy` when it may evict Herald's keys.
    pub(crate) eviction: Option<String>,
    /// When the store last stopped serving (for `/readyz`).
    pub(crate) down_since: Mutex<Option<Instant>>,
    /// Until when Redis is taken to refuse writes (out of memory, or unable
    /// to persist), as its last refusal said.
    refusing_until: Mutex<Option<Instant>>,
}

impl Shared {
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    pub(crate) fn set_epoch(&self, epoch: Epoch) {
        self.epoch.store(epoch.0, Ordering::Release);
    }

    /// The highest sequence of `epoch` this node knows was assigned.
    pub(crate) fn seen(&self) -> u64 {
        self.applied.load(Ordering::Acquire).max(self.acked.load(Ordering::Acquire))
    }

    /// Redis refused a write for want of memory or persistence: the node is
    /// not ready for [`REFUSAL_HOLD`] (the next refusal extends it, the
    /// next commit ends it).
    pub(crate) fn refuse_writes(&self) {
        *self.refusing_until.lock() = Some(Instant::now() + REFUSAL_HOLD);
    }

    /// A commit went through: Redis takes writes again.
    pub(crate) fn took_writes(&self) {
        *self.refusing_until.lock() = None;
    }

    /// Whether the feed and the writer's session are live and Redis takes writes.
    fn serving(&self) -> bool {
        self.feed_live.load(Ordering::Acquire)
            && self.session_live.load(Ordering::Acquire)
            && self.refusing_until.lock().is_none_or(|until| Instant::now() >= until)
    }

    pub(crate) fn set_live(&self, flag: &AtomicBool, live: bool) {
        flag.store(live, Ordering::Release);
        let up = self.feed_live.load(Ordering::Acquire) && self.session_live.load(Ordering::Acquire);
        metrics::gauge!("herald_redis_up").set(if up { 1.0 } else { 0.0 });
        let mut since = self.down_since.lock();
        match (up, since.is_some()) {
            (true, _) => *since = None,
            (false, false) => *since = Some(Instant::now()),
            (false, true) => {}
        }
    }
}

/// Redis behind herald-core's `EventStore`.
#[derive(Debug)]
pub struct RedisStore {
    shared: Arc<Shared>,
    session: tokio::sync::Mutex<Session>,
    reads: Reads,
    /// The feed's first handshake, until [`RedisStore::start_feed`] takes it.
    first_sync: Mutex<Option<feed::Synced>>,
}

impl RedisStore {
    /// Connects to Redis, subscribes to the feed and learns the history
    /// (starting one if Redis holds none). Fails when Redis cannot be
    /// reached within the timeout.
    pub async fn connect(settings: RedisSettings) -> Result<Self, StoreError> {
        let client = redis::Client::open(settings.url.as_str())
            .map_err(|e| StoreError::unavailable(format!("--store {}: {e}", redacted(&settings.url))))?;
        let reads =
            Reads::connect(client.clone(), &settings).await.map_err(|e| unreachable(&settings, &e.to_string()))?;
        // Before the first handshake, which trusts a restarted Redis only
        // if it keeps acknowledged writes.
        let (durability, eviction) = server_config(&mut reads.clone()).await;
        metrics::gauge!("herald_redis_durability", "level" => durability.label()).set(1.0);
        let shared = Arc::new(Shared {
            client,
            keys: Keys::new(&settings.prefix),
            node_id: format!("{:08x}", rand::random::<u32>()),
            epoch: AtomicU32::new(0),
            previous: AtomicU32::new(0),
            applied: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            feed_live: AtomicBool::new(false),
            session_live: AtomicBool::new(true),
            durability,
            eviction,
            down_since: Mutex::new(Some(Instant::now())),
            refusing_until: Mutex::new(None),
            settings,
        });
        let synced = feed::Synced::connect(&shared, &mut reads.clone())
            .await
            .map_err(|e| unreachable(&shared.settings, &e.to_string()))?;
        shared.set_epoch(synced.epoch);
        shared.applied.store(synced.seq, Ordering::Release);
        Ok(Self {
            session: tokio::sync::Mutex::new(Session::new(Arc::clone(&shared))),
            shared,
            reads,
            first_sync: Mutex::new(Some(synced)),
        })
    }

    /// Starts the feed, which applies every committed event to `hub` from
    /// now on, on a thread of its own.
    pub fn start_feed(&self, hub: Hub) -> Result<(), StoreError> {
        let synced = self.first_sync.lock().take();
        feed::start(Arc::clone(&self.shared), self.reads.clone(), hub, synced)
    }

    /// How Redis keeps acknowledged writes.
    pub fn durability(&self) -> Durability {
        self.shared.durability
    }

    /// Redis's `maxmemory-policy`, when it may evict Herald's keys (and so
    /// lose history, or the history's very epoch).
    pub fn eviction(&self) -> Option<&str> {
        self.shared.eviction.as_deref()
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.shared.node_id
    }

    /// Since when the store has not been serving, if it is not.
    pub fn down_since(&self) -> Option<Instant> {
        *self.shared.down_since.lock()
    }
}

/// How Redis keeps acknowledged writes, and its eviction policy when it
/// may evict keys, from `CONFIG GET` (`Unknown` and `None` when refused).
async fn server_config(connection: &mut Reads) -> (Durability, Option<String>) {
    let config: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .arg("appendfsync")
        .arg("maxmemory-policy")
        .query_async(connection)
        .await;
    let Ok(config) = config else { return (Durability::Unknown, None) };
    let value = |name: &str| config.chunks(2).find(|kv| kv[0] == name).and_then(|kv| kv.get(1)).cloned();
    let durability = match (value("appendonly").as_deref(), value("appendfsync").as_deref()) {
        (Some("yes"), Some("always")) => Durability::Fsync,
        (Some("yes"), _) => Durability::Everysec,
        (Some(_), _) => Durability::None,
        _ => Durability::Unknown,
    };
    (durability, value("maxmemory-policy").filter(|policy| policy != "noeviction"))
}

fn unreachable(settings: &RedisSettings, why: &str) -> StoreError {
    StoreError::unavailable(format!(
        "cannot reach Redis at {} (--store): {why}; start Redis or fix the URL",
        redacted(&settings.url)
    ))
}

/// `url` without its password, for logs and the dashboard.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or("");
            let hidden = if credentials.contains(':') { format!("{user}:***") } else { "***".to_owned() };
            format!("{}{hidden}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[async_trait]
impl EventStore for RedisStore {
    fn epoch(&self) -> Epoch {
        self.shared.epoch()
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        read::last_seq(&self.shared, &mut self.reads.clone()).await.map_err(read_error)
    }

    async fn append(&self, requests: &[Publish]) -> Result<Vec<Appended>, StoreError> {
        self.session.lock().await.append(requests).await
    }

    async fn read(
        &self,
        selection: &Selection,
        after: u64,
        upto: u64,
        limit: ReadLimit,
    ) -> Result<StoreRead, StoreError> {
        read::read(&self.shared, &mut self.reads.clone(), selection, after, upto, limit).await
    }

    async fn topics(&self, after: Option<&TopicName>, limit: usize) -> Result<Vec<StoredTopic>, StoreError> {
        read::topics(&self.shared, &mut self.reads.clone(), after, limit).await
    }

    async fn topic(&self, topic: &TopicName) -> Result<Option<StoredTopic>, StoreError> {
        read::topic(&self.shared, &mut self.reads.clone(), topic).await
    }

    async fn find_mercure_id(&self, topic: &TopicName, id: &str) -> Result<Option<herald_core::EventId>, StoreError> {
        read::find_mercure_id(&self.shared, &mut self.reads.clone(), topic, id).await
    }

    /// Streams are capped as they are written (`XADD MAXLEN`), so readers
    /// that fall past `--retention-events` in a burst get a gap notice here;
    /// `readers_at` is not used.
    async fn enforce_retention(&self, now_ms: u64, _readers_at: Option<u64>) -> Result<u64, StoreError> {
        read::sweep(&self.shared, &mut self.reads.clone(), now_ms).await
    }

    fn describe(&self) -> String {
        redacted(&self.shared.settings.url)
    }

    fn feeds_commits(&self) -> bool {
        true
    }

    fn previous_epoch(&self) -> Option<Epoch> {
        Some(Epoch(self.shared.previous.load(Ordering::Acquire))).filter(|e| e.0 != 0)
    }

    fn available(&self) -> Option<bool> {
        Some(self.shared.serving())
    }
}

/// How every connection to Redis is made: connecting and each answer
/// bounded by `--redis-timeout`.
pub(crate) fn connection_config(settings: &RedisSettings) -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.timeout))
        .set_response_timeout(Some(settings.timeout))
}

/// `work`, failed with a timeout past `limit`.
pub(crate) async fn within<T>(
    limit: Duration,
    work: impl Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
        Err(redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out")))
    })
}

/// A failed read: the store is unavailable for now.
pub(crate) fn read_error(error: redis::RedisError) -> StoreError {
    StoreError::unavailable(format!("redis: {error}"))
}
