//! The embedded default store: SQLite in WAL mode, under `--data-dir`.
//!
//! Invariants:
//! - One commit per call to `append`, which the hub makes with every publish
//!   queued meanwhile (group commit). `synchronous=FULL` by default, so a
//!   commit is on disk before any publisher hears 201.
//! - Commits run on the hub's writer thread, on a connection of their own
//!   (rusqlite, synchronous): no hand-off to another thread per commit.
//!   Reads, retention and migrations go through sqlx's async pool.
//! - `meta.last_seq` is written in the same transaction as the events, so
//!   sequence numbers are never reused across restarts, whatever retention
//!   deletes.
//! - Retention deletes in small transactions, so a sweep never holds the
//!   write lock for long in front of publishes.
//! - Start-up reads two rows, not the history: the hub's rings warm lazily.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    str::FromStr as _,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};

use async_trait::async_trait;
use herald_core::{
    Appended, Epoch, Event, EventDraft, EventId, EventStore, EventType, Fingerprint, Gap, IdempotencyKey, MercureMeta,
    Publish, ReadLimit, Retention, Selection, StoreError, StoreRead, StoredTopic, TopicName, TopicPattern,
    is_hub_owned, now_ms,
};
use sqlx::{
    AssertSqlSafe, Row as _, SqlitePool,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};

/// The database file inside the data dir.
pub const DATABASE_FILE: &str = "herald.db";

/// Connections for reads and retention (appends have their own).
const READ_CONNECTIONS: u32 = 4;

/// Rows deleted per retention transaction.
const RETENTION_CHUNK: i64 = 5_000;

/// How long a statement waits for a lock another connection holds
/// (retention's deletes) before it fails.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// WAL pages after which a commit copies the WAL into the database (SQLite's
/// default is 1,000). The copy happens inside the commit that crosses the
/// threshold and pauses every publish queued behind it: smaller, more
/// frequent copies cut the p99 of durable batches at half their peak rate
/// from about 9 ms to 4 ms, for 3% of their throughput. A background
/// checkpoint was tried and was worse here: its syncs of the database file
/// queue in front of the commits' syncs of the WAL.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 250;

const SELECT_LAST_SEQ: &str = "SELECT value FROM meta WHERE key = 'last_seq'";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// How hard SQLite syncs a commit to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// fsync on every commit: nothing acknowledged is lost, even on power loss.
    #[default]
    Full,
    /// An opt-in trade: in WAL mode a process crash loses nothing, but a power
    /// loss or kernel crash may lose the last commits that were acknowledged.
    Normal,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
        }
    }
}

/// The setting's text, as `FromStr` reads it.
impl std::fmt::Display for Synchronous {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Full => "full",
            Self::Normal => "normal",
        })
    }
}

impl std::str::FromStr for Synchronous {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "full" => Ok(Self::Full),
            "normal" => Ok(Self::Normal),
            _ => Err(format!("`{s}` is not full or normal")),
        }
    }
}

/// Events in a SQLite database.
///
/// `append` commits synchronously on the calling thread, which is the hub's
/// writer thread: call it from a thread that may block, not from a task on
/// a runtime shared with other work.
#[derive(Debug)]
pub struct SqliteStore {
    /// Reads and retention.
    pool: SqlitePool,
    /// Appends: only the hub's writer thread appends, so taking it never
    /// waits. `None` once closed, or after a failed commit (it is opened
    /// again for the next one).
    writer: parking_lot::Mutex<Option<rusqlite::Connection>>,
    synchronous: Synchronous,
    closed: AtomicBool,
    path: PathBuf,
    epoch: Epoch,
    retention: Retention,
    /// The highest sequence number committed. Only the hub's writer appends.
    last_seq: AtomicU64,
    /// A commit failed: re-read `last_seq` from the database before the next.
    resync: AtomicBool,
}

/// Opens the writer's connection. The database exists and is migrated, and
/// WAL mode is a property of the file, set when the pool opened it.
fn open_writer(path: &Path, synchronous: Synchronous) -> rusqlite::Result<rusqlite::Connection> {
    let connection = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    connection.busy_timeout(BUSY_TIMEOUT)?;
    connection.pragma_update(None, "synchronous", synchronous.pragma())?;
    connection.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(connection)
}

/// Why the SQLite store could not open: each message names the directory or
/// file, and says what to do. The cause shows in the message.
#[derive(Debug, thiserror::Error)]
pub enum SqliteOpenError {
    /// The data dir cannot be made.
    #[error("cannot create the data dir {}: {error}", dir.display())]
    CreateDir {
        /// The data dir.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The data dir cannot be written to.
    #[error("the data dir {} is not writable: {error}", dir.display())]
    NotWritable {
        /// The data dir.
        dir: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The database cannot be opened by the readers' pool.
    #[error("cannot open the database {}: {error}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        error: sqlx::Error,
    },
    /// The database cannot be opened by the writer.
    #[error("cannot open the database {}: {error}", path.display())]
    OpenWriter {
        /// The database file.
        path: PathBuf,
        /// Why.
        error: rusqlite::Error,
    },
    /// A newer Herald has migrated the database.
    #[error(
        "the database {} has schema version {version}, newer than this Herald knows: run a newer herald, or point \
         --data-dir elsewhere",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Its schema version.
        version: i64,
    },
    /// The migrations cannot be applied.
    #[error(
        "the database {} cannot be used ({error}); it may be corrupt: restore it from a backup or move it away",
        path.display()
    )]
    Unusable {
        /// The database file.
        path: PathBuf,
        /// Why.
        error: sqlx::migrate::MigrateError,
    },
    /// The store's epoch and last sequence cannot be read.
    #[error("cannot read {}: {error}", path.display())]
    Unreadable {
        /// The database file.
        path: PathBuf,
        /// Why.
        error: sqlx::Error,
    },
}

impl SqliteStore {
    /// Opens (creating if need be) the database in `dir` and applies the
    /// migrations.
    pub async fn open(dir: &Path, retention: Retention, synchronous: Synchronous) -> Result<Self, SqliteOpenError> {
        std::fs::create_dir_all(dir).map_err(|error| SqliteOpenError::CreateDir { dir: dir.into(), error })?;
        let probe = dir.join(".herald-write-check");
        std::fs::write(&probe, b"ok")
            .and_then(|()| std::fs::remove_file(&probe))
            .map_err(|error| SqliteOpenError::NotWritable { dir: dir.into(), error })?;
        let path = dir.join(DATABASE_FILE);
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match synchronous {
                Synchronous::Full => SqliteSynchronous::Full,
                Synchronous::Normal => SqliteSynchronous::Normal,
            })
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("temp_store", "memory");
        let cannot_open = |error| SqliteOpenError::Open { path: path.clone(), error };
        let pool = SqlitePoolOptions::new()
            .max_connections(READ_CONNECTIONS)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await
            .map_err(cannot_open)?;
        MIGRATOR.run(&pool).await.map_err(|error| match error {
            sqlx::migrate::MigrateError::VersionMissing(version) => {
                SqliteOpenError::NewerSchema { path: path.clone(), version }
            }
            error => SqliteOpenError::Unusable { path: path.clone(), error },
        })?;
        let (epoch, last_seq) =
            Self::identity(&pool).await.map_err(|error| SqliteOpenError::Unreadable { path: path.clone(), error })?;
        let writer = open_writer(&path, synchronous)
            .map_err(|error| SqliteOpenError::OpenWriter { path: path.clone(), error })?;
        // Every read connection opened now, one at a time (opening them
        // together can find the database locked), from this thread, and kept:
        // one opened on demand by a stream thread would give SQLite's worker
        // thread that stream thread's lower priority.
        let mut opened = Vec::new();
        for _ in 0..READ_CONNECTIONS {
            opened.push(pool.acquire().await.map_err(cannot_open)?);
        }
        drop(opened);
        Ok(Self {
            pool,
            writer: parking_lot::Mutex::new(Some(writer)),
            synchronous,
            closed: AtomicBool::new(false),
            path,
            epoch,
            retention,
            last_seq: AtomicU64::new(last_seq),
            resync: AtomicBool::new(false),
        })
    }

    /// The store's epoch (drawn on first use) and last sequence number.
    async fn identity(pool: &SqlitePool) -> Result<(Epoch, u64), sqlx::Error> {
        let fresh = Epoch::random().0.to_string();
        sqlx::query("INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', ?), ('last_seq', '0')")
            .bind(fresh)
            .execute(pool)
            .await?;
        let epoch: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = 'epoch'").fetch_one(pool).await?;
        let epoch = epoch.parse::<u32>().map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok((Epoch(epoch), Self::stored_last_seq(pool).await?))
    }

    async fn stored_last_seq(db: impl sqlx::SqliteExecutor<'_>) -> Result<u64, sqlx::Error> {
        let text: String = sqlx::query_scalar(SELECT_LAST_SEQ).fetch_one(db).await?;
        text.parse::<u64>().map_err(|e| sqlx::Error::Decode(Box::new(e)))
    }

    /// Flushes the WAL into the database and closes every connection.
    pub async fn close(&self) {
        let writer = {
            let mut writer = self.writer.lock();
            self.closed.store(true, Ordering::Release);
            writer.take()
        };
        if let Some(Err((_, error))) = writer.map(rusqlite::Connection::close) {
            tracing::warn!(%error, "closing the writer connection failed");
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&self.pool).await {
            tracing::warn!(%error, "WAL checkpoint at close failed");
        }
        self.pool.close().await;
    }

    fn event_from_row(&self, row: &SqliteRow) -> Result<Event, sqlx::Error> {
        let seq: i64 = row.try_get(0)?;
        let topic: String = row.try_get(1)?;
        let event_type: Option<String> = row.try_get(2)?;
        let data: String = row.try_get(3)?;
        let retry_ms: Option<i64> = row.try_get(4)?;
        let time_ms: i64 = row.try_get(5)?;
        let mercure: Option<String> = row.try_get(6)?;
        let decode = |e: String| sqlx::Error::Decode(e.into());
        let mercure = mercure
            .map(|json| {
                MercureMeta::from_json(&json).ok_or_else(|| decode(format!("event {seq}: bad Mercure metadata")))
            })
            .transpose()?;
        let topic = TopicName::from_str(&topic).map_err(|e| decode(e.to_string()))?;
        let event_type = event_type.map(|t| EventType::new(&t).map_err(|e| decode(e.to_string()))).transpose()?;
        Ok(Event::from_parts(
            EventId::new(self.epoch, seq as u64),
            topic,
            event_type.as_ref(),
            &data,
            retry_ms.map(|r| r as u64),
            time_ms as u64,
            mercure,
        ))
    }

    /// Appends the requests in one transaction on the writer connection.
    /// After a failure the connection is closed (rolling back whatever was
    /// open) and the next commit opens it again.
    fn append_in_transaction(&self, requests: &[Publish]) -> rusqlite::Result<Vec<Appended>> {
        let mut writer = self.writer.lock();
        if self.closed.load(Ordering::Acquire) {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_MISUSE),
                Some("the store is closed".into()),
            ));
        }
        let connection = match writer.as_mut() {
            Some(connection) => connection,
            None => writer.insert(open_writer(&self.path, self.synchronous)?),
        };
        let appended = self.append_on(connection, requests);
        if appended.is_err() {
            *writer = None;
        }
        appended
    }

    fn append_on(&self, writer: &mut rusqlite::Connection, requests: &[Publish]) -> rusqlite::Result<Vec<Appended>> {
        let now = now_ms();
        let ttl = u64::try_from(self.retention.idempotency_ttl.as_millis()).unwrap_or(u64::MAX);
        let expires = now.saturating_add(ttl).min(i64::MAX as u64) as i64;
        let tx = writer.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if self.resync.load(Ordering::Acquire) {
            let stored: String = tx.query_row(SELECT_LAST_SEQ, [], |row| row.get(0))?;
            let stored = stored
                .parse::<u64>()
                .map_err(|e| rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e)))?;
            self.last_seq.store(stored, Ordering::Release);
        }
        let mut seq = self.last_seq.load(Ordering::Acquire);
        let mut results = Vec::with_capacity(requests.len());
        // Keys first used in this commit: what they stand for.
        let mut new_keys: HashMap<(&str, &str), (u64, Fingerprint)> = HashMap::new();
        let mut per_topic: HashMap<&str, i64> = HashMap::new();
        {
            let mut insert_event = tx.prepare_cached(
                "INSERT INTO events (seq, topic, event_type, data, retry_ms, time_ms, mercure) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut insert_mercure_id =
                tx.prepare_cached("INSERT OR REPLACE INTO mercure_ids (topic, id, seq) VALUES (?1, ?2, ?3)")?;
            for request in requests {
                if let Some(key) = &request.key {
                    if let Some(earlier) = self.earlier_use(&tx, key, request, now, &new_keys)? {
                        results.push(earlier);
                        continue;
                    }
                    let first = seq + 1;
                    new_keys.insert((&key.scope, &key.key), (first, key.fingerprint));
                    let topic = request.drafts.first().map_or("", |d| d.topic.as_str());
                    tx.prepare_cached(
                        "INSERT OR REPLACE INTO idempotency_keys (scope, key, seq, events, topic, fingerprint, expires_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )?
                    .execute(rusqlite::params![
                        key.scope,
                        key.key,
                        first as i64,
                        request.drafts.len() as i64,
                        topic,
                        &key.fingerprint.0[..],
                        expires
                    ])?;
                }
                let mut events = Vec::with_capacity(request.drafts.len());
                for draft in &request.drafts {
                    seq += 1;
                    insert_event.execute(rusqlite::params![
                        seq as i64,
                        draft.topic.as_str(),
                        draft.event_type.as_ref().map(|t| t.as_str()),
                        draft.data,
                        draft.retry_ms.map(|r| r as i64),
                        now as i64,
                        draft.mercure.as_ref().map(|meta| meta.to_json()),
                    ])?;
                    if let Some(id) = draft.mercure.as_ref().and_then(|meta| meta.id.as_ref()) {
                        insert_mercure_id.execute(rusqlite::params![draft.topic.as_str(), id, seq as i64])?;
                    }
                    *per_topic.entry(draft.topic.as_str()).or_default() += 1;
                    events.push(Event::new(EventId::new(self.epoch, seq), draft, now));
                }
                results.push(Appended::New(events));
            }
            let mut count_topic = tx.prepare_cached(
                "INSERT INTO topics (name, events) VALUES (?1, ?2) ON CONFLICT (name) DO UPDATE SET events = events + excluded.events",
            )?;
            for (topic, count) in per_topic {
                count_topic.execute(rusqlite::params![topic, count])?;
            }
            tx.prepare_cached("UPDATE meta SET value = ?1 WHERE key = 'last_seq'")?.execute([seq.to_string()])?;
        }
        tx.commit()?;
        self.last_seq.store(seq, Ordering::Release);
        self.resync.store(false, Ordering::Release);
        Ok(results)
    }

    /// What a request's idempotency key already stands for, if it was used
    /// earlier in this commit or is stored and unexpired: a replay of the
    /// same request, or a refused reuse.
    fn earlier_use(
        &self,
        tx: &rusqlite::Transaction<'_>,
        key: &IdempotencyKey,
        request: &Publish,
        now: u64,
        new_keys: &HashMap<(&str, &str), (u64, Fingerprint)>,
    ) -> rusqlite::Result<Option<Appended>> {
        let verdict = |first: u64, fingerprint: Fingerprint| {
            if fingerprint == key.fingerprint {
                Appended::Replayed { first: EventId::new(self.epoch, first) }
            } else {
                Appended::KeyReused
            }
        };
        if let Some(&(first, fingerprint)) = new_keys.get(&(key.scope.as_str(), key.key.as_str())) {
            return Ok(Some(verdict(first, fingerprint)));
        }
        let single_topic = match &request.drafts[..] {
            [draft] => draft.topic.as_str(),
            _ => "",
        };
        let mut find = tx.prepare_cached(
            "SELECT seq, fingerprint FROM idempotency_keys WHERE key = ?1 AND expires_ms > ?2 AND (scope = ?3 OR (scope = '' AND topic = ?4)) ORDER BY scope = '' LIMIT 1",
        )?;
        let mut rows = find.query(rusqlite::params![key.key, now as i64, key.scope, single_topic])?;
        let Some(row) = rows.next()? else { return Ok(None) };
        let first: i64 = row.get(0)?;
        let stored: Option<Vec<u8>> = row.get(1)?;
        let Some(stored) = stored else {
            // A key stored before keys were scoped has no caller and no
            // fingerprint: it answers only a publish of the very event it
            // stands for (a retry; anyone else allowed to publish that event
            // to that topic learns nothing new). Anything else, or a key
            // whose event retention took, is a new request.
            let same = self.stored_draft(tx, first)?.is_some_and(|draft| Fingerprint::of(&[draft]) == key.fingerprint);
            return Ok(same.then(|| verdict(first as u64, key.fingerprint)));
        };
        let fingerprint = Fingerprint(stored.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Blob, "not a SHA-256 digest".into())
        })?);
        Ok(Some(verdict(first as u64, fingerprint)))
    }

    /// The draft that event `seq` was stored from, if it is still stored.
    fn stored_draft(&self, tx: &rusqlite::Transaction<'_>, seq: i64) -> rusqlite::Result<Option<EventDraft>> {
        let mut find =
            tx.prepare_cached("SELECT topic, event_type, data, retry_ms, mercure FROM events WHERE seq = ?1")?;
        let mut rows = find.query([seq])?;
        let Some(row) = rows.next()? else { return Ok(None) };
        let invalid = |column, e: String| {
            rusqlite::Error::FromSqlConversionFailure(column, rusqlite::types::Type::Text, e.into())
        };
        let topic: String = row.get(0)?;
        let event_type: Option<String> = row.get(1)?;
        let retry_ms: Option<i64> = row.get(3)?;
        let mercure: Option<String> = row.get(4)?;
        let mercure = mercure
            .map(|json| MercureMeta::from_json(&json).ok_or_else(|| invalid(4, "bad Mercure metadata".into())))
            .transpose()?;
        Ok(Some(EventDraft {
            topic: TopicName::from_str(&topic).map_err(|e| invalid(0, e.to_string()))?,
            event_type: event_type.map(|t| EventType::new(&t).map_err(|e| invalid(1, e.to_string()))).transpose()?,
            data: row.get(2)?,
            retry_ms: retry_ms.map(|r| r as u64),
            mercure,
        }))
    }

    /// `(sql, binds)` selecting the topics of `selection` in column `column`.
    fn topic_filter(selection: &Selection, column: &str) -> (String, Vec<String>) {
        let mut terms = Vec::new();
        let mut binds = Vec::new();
        if !selection.topics.is_empty() {
            terms.push(format!("{column} IN ({})", vec!["?"; selection.topics.len()].join(", ")));
            binds.extend(selection.topics.iter().map(ToString::to_string));
        }
        for pattern in &selection.patterns {
            if let TopicPattern::Prefix(prefix) = pattern {
                if prefix.is_empty() {
                    // Every topic but the hub's own (`$…`), which no pattern selects.
                    terms.push(format!("substr({column}, 1, 1) <> '$'"));
                } else {
                    // Topic names are ASCII below 0x7f, so this range is the prefix.
                    terms.push(format!("({column} >= ? AND {column} < ?)"));
                    binds.push(prefix.to_string());
                    binds.push(format!("{prefix}\u{7f}"));
                }
            }
        }
        if terms.is_empty() {
            terms.push("0".into());
        }
        (format!("({})", terms.join(" OR ")), binds)
    }

    async fn read_rows(
        &self,
        selection: &Selection,
        after: u64,
        upto: u64,
        limit: ReadLimit,
    ) -> Result<StoreRead, sqlx::Error> {
        use futures_util::TryStreamExt as _;
        // One topic is read along its index, in order. Several would come
        // off that index out of order, and SQLite would sort every matching
        // row, data and all, in memory before returning the first (hundreds
        // of MiB for large events): they are read along `seq` instead (the
        // unary `+` keeps the planner off the topic index), which stops at
        // the limit. Patterns are read that way already.
        let column = match (&selection.topics[..], &selection.patterns[..]) {
            ([_], []) => "topic",
            _ => "+topic",
        };
        let (filter, binds) = Self::topic_filter(selection, column);
        let sql = format!(
            "SELECT seq, topic, event_type, data, retry_ms, time_ms, mercure FROM events WHERE seq > ? AND seq <= ? AND {filter} ORDER BY seq LIMIT ?"
        );
        // Sequence numbers are stored as SQLite's signed 64-bit integers.
        let (after, upto) = (after.min(i64::MAX as u64) as i64, upto.min(i64::MAX as u64) as i64);
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(after).bind(upto);
        for bind in binds {
            query = query.bind(bind);
        }
        let max_rows = i64::try_from(limit.events).unwrap_or(i64::MAX).saturating_add(1);
        let mut read = StoreRead::default();
        // Row by row, stopping at the limit: events can be large, and only
        // what one step hands out may be held at once.
        let mut rows = query.bind(max_rows).fetch(&self.pool);
        let mut bytes = 0usize;
        while let Some(row) = rows.try_next().await? {
            let event = self.event_from_row(&row)?;
            if !limit.admits(read.events.len(), bytes, event.size()) {
                read.truncated = true;
                break;
            }
            bytes += event.size();
            read.events.push(event);
        }
        drop(rows);
        let (filter, binds) = Self::topic_filter(selection, "name");
        let sql = format!("SELECT name, trimmed_through FROM topics WHERE trimmed_through > ? AND {filter}");
        let mut query = sqlx::query(AssertSqlSafe(sql)).bind(after);
        for bind in binds {
            query = query.bind(bind);
        }
        for row in query.fetch_all(&self.pool).await? {
            let topic: String = row.try_get(0)?;
            let through: i64 = row.try_get(1)?;
            read.gaps.push(Gap { topic, through: through as u64 });
        }
        Ok(read)
    }

    /// Topics with retained events, with their newest event: after
    /// `after`, in name order, at most `limit`; or only `only`, looked up by
    /// its key.
    async fn stored_topics(
        &self,
        after: Option<&str>,
        only: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StoredTopic>, sqlx::Error> {
        const COLUMNS: &str = "SELECT t.name, t.events, e.seq, e.time_ms FROM topics t \
             JOIN events e ON e.seq = (SELECT max(seq) FROM events WHERE topic = t.name)";
        let rows = match only {
            Some(name) => {
                let sql = format!("{COLUMNS} WHERE t.name = ? AND t.events > 0");
                sqlx::query(AssertSqlSafe(sql)).bind(name.to_owned()).fetch_all(&self.pool).await?
            }
            None => {
                let sql = format!("{COLUMNS} WHERE t.name > ? AND t.events > 0 ORDER BY t.name LIMIT ?");
                sqlx::query(AssertSqlSafe(sql))
                    .bind(after.unwrap_or("").to_owned())
                    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter()
            .map(|row| {
                let name: String = row.try_get(0)?;
                let events: i64 = row.try_get(1)?;
                let seq: i64 = row.try_get(2)?;
                let time_ms: i64 = row.try_get(3)?;
                Ok(StoredTopic {
                    name: TopicName::from_str(&name).map_err(|e| sqlx::Error::Decode(e.to_string().into()))?,
                    events: events as u64,
                    last_id: EventId::new(self.epoch, seq as u64),
                    last_event_ms: time_ms as u64,
                })
            })
            .collect()
    }

    /// Deletes the oldest events of `topic` up to `through`, in chunks.
    async fn trim_topic(&self, topic: &str, through: i64) -> Result<u64, sqlx::Error> {
        let mut removed = 0;
        loop {
            let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
            let chunk = sqlx::query(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE topic = ? AND seq <= ? ORDER BY seq LIMIT ?)",
            )
            .bind(topic.to_owned())
            .bind(through)
            .bind(RETENTION_CHUNK)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            sqlx::query("DELETE FROM mercure_ids WHERE topic = ? AND seq <= ?")
                .bind(topic.to_owned())
                .bind(through)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE topics SET events = max(events - ?, 0), trimmed_through = max(trimmed_through, ?) WHERE name = ?",
            )
            .bind(chunk as i64)
            .bind(through)
            .bind(topic.to_owned())
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            removed += chunk;
            if chunk < RETENTION_CHUNK as u64 {
                return Ok(removed);
            }
        }
    }

    /// How far the count bound may trim `topic`, at most `through`: not
    /// past `readers_at` (what every connected reader has had) while the
    /// events held back for them total at most the hold's bytes.
    async fn held_back(&self, topic: &str, through: i64, readers_at: Option<u64>) -> Result<i64, sqlx::Error> {
        let Some(readers_at) = readers_at.map(|at| at.min(i64::MAX as u64) as i64).filter(|at| *at < through) else {
            return Ok(through);
        };
        let held: Option<i64> = sqlx::query_scalar(
            "SELECT sum(length(CAST(data AS BLOB))) FROM events WHERE topic = ? AND seq > ? AND seq <= ?",
        )
        .bind(topic.to_owned())
        .bind(readers_at)
        .bind(through)
        .fetch_one(&self.pool)
        .await?;
        let within = u64::try_from(held.unwrap_or(0)).unwrap_or(u64::MAX) <= self.retention.hold_bytes;
        Ok(if within { readers_at } else { through })
    }

    async fn retain(&self, now: u64, readers_at: Option<u64>) -> Result<u64, sqlx::Error> {
        sqlx::query("DELETE FROM idempotency_keys WHERE expires_ms <= ?").bind(now as i64).execute(&self.pool).await?;
        let ordinary = self.retention.ordinary_topics();
        let hub = self.retention.hub_topics;
        let mut removed = 0;
        // By count: topics over their class's share. Ordinary topics as
        // ever (hub-owned ones it finds are left to their own pass), then
        // the hub-owned topics along the primary key: `$` is U+0024, so
        // exactly the names from '$' up to '%' start with it.
        let over_ordinary: Vec<(String, i64)> = sqlx::query_as("SELECT name, events FROM topics WHERE events > ?")
            .bind(count_bound(ordinary.max_events))
            .fetch_all(&self.pool)
            .await?;
        let over_hub: Vec<(String, i64)> =
            sqlx::query_as("SELECT name, events FROM topics WHERE name >= '$' AND name < '%' AND events > ?")
                .bind(count_bound(hub.max_events))
                .fetch_all(&self.pool)
                .await?;
        let over = over_ordinary.into_iter().filter(|(name, _)| !is_hub_owned(name)).chain(over_hub);
        for (topic, count) in over {
            let max = count_bound(self.retention.events_for(&topic));
            let through: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM events WHERE topic = ? ORDER BY seq LIMIT 1 OFFSET ?")
                    .bind(topic.clone())
                    .bind(count - max - 1)
                    .fetch_optional(&self.pool)
                    .await?;
            if let Some(through) = through {
                let through = self.held_back(&topic, through, readers_at).await?;
                removed += self.trim_topic(&topic, through).await?;
            }
        }
        // By age: events are in time order by seq, so the expired ones are a
        // prefix. Ordinary topics: the table's prefix, grouped by topic (it
        // also walks the hub-owned events older than the ordinary age that
        // their own age keeps: at most their count bound per topic).
        if let Some(cutoff) = ordinary.cutoff_ms(now) {
            let expired: Vec<(String, i64)> = sqlx::query_as(
                "SELECT topic, MAX(seq) FROM events WHERE seq < coalesce((SELECT seq FROM events WHERE time_ms >= ? ORDER BY seq LIMIT 1), 9223372036854775807) GROUP BY topic",
            )
            .bind(cutoff as i64)
            .fetch_all(&self.pool)
            .await?;
            for (topic, through) in expired.into_iter().filter(|(topic, _)| !is_hub_owned(topic)) {
                removed += self.trim_topic(&topic, through).await?;
            }
        }
        // Hub-owned topics: each one's prefix, along its own index.
        if let Some(cutoff) = hub.cutoff_ms(now) {
            let expired: Vec<(String, Option<i64>)> = sqlx::query_as(
                "SELECT t.name, (SELECT MAX(seq) FROM events WHERE topic = t.name AND seq < coalesce((SELECT seq FROM events WHERE topic = t.name AND time_ms >= ?1 ORDER BY seq LIMIT 1), 9223372036854775807)) FROM topics t WHERE t.name >= '$' AND t.name < '%'",
            )
            .bind(cutoff as i64)
            .fetch_all(&self.pool)
            .await?;
            for (topic, through) in expired {
                if let Some(through) = through {
                    removed += self.trim_topic(&topic, through).await?;
                }
            }
        }
        Ok(removed)
    }
}

/// A count bound as SQLite's integer.
fn count_bound(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

#[async_trait]
impl EventStore for SqliteStore {
    fn epoch(&self) -> Epoch {
        self.epoch
    }

    async fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.last_seq.load(Ordering::Acquire))
    }

    async fn append(&self, requests: &[Publish]) -> Result<Vec<Appended>, StoreError> {
        // Synchronous: the hub calls this from its writer thread, which is
        // there for it.
        // Not logged here: the hub reports failed commits, throttled.
        self.append_in_transaction(requests).map_err(|error| {
            self.resync.store(true, Ordering::Release);
            StoreError::unavailable(error)
        })
    }

    async fn read(
        &self,
        selection: &Selection,
        after: u64,
        upto: u64,
        limit: ReadLimit,
    ) -> Result<StoreRead, StoreError> {
        self.read_rows(selection, after, upto, limit).await.map_err(StoreError::unavailable)
    }

    async fn topics(&self, after: Option<&TopicName>, limit: usize) -> Result<Vec<StoredTopic>, StoreError> {
        self.stored_topics(after.map(TopicName::as_str), None, limit).await.map_err(StoreError::unavailable)
    }

    async fn topic(&self, topic: &TopicName) -> Result<Option<StoredTopic>, StoreError> {
        let mut found = self.stored_topics(None, Some(topic.as_str()), 1).await.map_err(StoreError::unavailable)?;
        Ok(found.pop())
    }

    async fn find_mercure_id(&self, topic: &TopicName, id: &str) -> Result<Option<EventId>, StoreError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM mercure_ids WHERE topic = ? AND id = ?")
            .bind(topic.as_str())
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::unavailable)?;
        Ok(seq.map(|seq| EventId::new(self.epoch, seq as u64)))
    }

    async fn enforce_retention(&self, now_ms: u64, readers_at: Option<u64>) -> Result<u64, StoreError> {
        self.retain(now_ms, readers_at).await.map_err(StoreError::unavailable)
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}
