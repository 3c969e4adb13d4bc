//! Reads of a history in Redis (catch-up, resume, topic lists) and its
//! retention sweep.
//!
//! Each stream entry `<seq>-0` carries `p`, the previous sequence of its
//! topic: the first entry a read finds after its position tells exactly what
//! was trimmed or expired before it, however roughly `MAXLEN ~` trimmed.

use herald_core::{Epoch, Event, EventId, Gap, ReadLimit, Selection, StoreError, StoreRead, StoredTopic, TopicName};
use redis::Value;

use super::{Shared, read_error, reads::Reads};

/// Entries asked for by a stream's first read: later ones are sized by the
/// bytes of those seen, so a read never holds much more than its limit.
const FIRST_COUNT: usize = 16;
/// The `id: …\n` line each frame gets back.
const ID_LINE: usize = 30;
/// Most topics a sweep looks at, and most keys of old histories it deletes.
const SWEEP_BATCH: usize = 1000;
/// How long a node's record of its last batch is kept.
const NODE_RECORD_MS: u64 = 3600 * 1000;

/// One stream entry.
struct Entry {
    seq: u64,
    prev: u64,
    ms: u64,
    body: Vec<u8>,
}

/// What a read of one topic found.
struct TopicRead {
    events: Vec<Event>,
    /// More events up to `upto` follow the last one.
    truncated: bool,
    gap: Option<Gap>,
    /// The stream or the index knows the topic (else it may be forgotten).
    known: bool,
}

pub(crate) async fn read(
    shared: &Shared,
    connection: &mut Reads,
    selection: &Selection,
    after: u64,
    upto: u64,
    limit: ReadLimit,
) -> Result<StoreRead, StoreError> {
    let started = std::time::Instant::now();
    let epoch = shared.epoch();
    let mut topics: Vec<TopicName> = selection.topics.clone();
    if !selection.patterns.is_empty() {
        // Exactly the topics with events after `after`.
        let active: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(shared.keys.index(epoch))
            .arg(format!("({after}"))
            .arg("+inf")
            .query_async(connection)
            .await
            .map_err(read_error)?;
        for name in active {
            if let Ok(name) = TopicName::new(&name)
                && selection.patterns.iter().any(|p| p.matches(name.as_str()))
                && !topics.contains(&name)
            {
                topics.push(name);
            }
        }
    }
    // Each topic's share of the limit; every topic still gives its first event.
    let share =
        ReadLimit { events: (limit.events / topics.len().max(1)).max(1), bytes: limit.bytes / topics.len().max(1) };
    let mut out = StoreRead::default();
    let mut cutoff = upto;
    let mut known = Vec::with_capacity(topics.len());
    for topic in &topics {
        let read = read_topic(shared, connection, epoch, topic, after, upto, share).await?;
        if read.truncated {
            // Past its last event, this topic's later ones are missing.
            cutoff = cutoff.min(read.events.last().map_or(after, |e| e.id.seq));
        }
        known.push(read.known);
        out.gaps.extend(read.gap);
        out.events.extend(read.events);
    }
    out.truncated = cutoff < upto;
    out.events.retain(|e| e.id.seq <= cutoff);
    out.events.sort_unstable_by_key(|e| e.id.seq);
    let fitting = limit.fitting(&out.events);
    if fitting < out.events.len() {
        out.events.truncate(fitting);
        out.truncated = true;
    }
    // Topics the index no longer knows (and, for patterns, any): history
    // up to the highest forgotten topic's may be lost.
    let unknown: Vec<String> = selection
        .topics
        .iter()
        .zip(&known)
        .filter(|(_, known)| !**known)
        .map(|(t, _)| t.to_string())
        .chain(selection.patterns.iter().map(ToString::to_string))
        .collect();
    if !unknown.is_empty() {
        let forgotten: Option<u64> = redis::cmd("HGET")
            .arg(shared.keys.meta())
            .arg("forgotten")
            .query_async(connection)
            .await
            .map_err(read_error)?;
        let forgotten = forgotten.unwrap_or(0);
        if after < forgotten {
            out.gaps.extend(unknown.into_iter().map(|topic| Gap { topic, through: forgotten.min(upto) }));
        }
    }
    crate::metrics::redis_command("read").record(started.elapsed().as_secs_f64());
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn read_topic(
    shared: &Shared,
    connection: &mut Reads,
    epoch: Epoch,
    topic: &TopicName,
    after: u64,
    upto: u64,
    limit: ReadLimit,
) -> Result<TopicRead, StoreError> {
    let key = shared.keys.stream(epoch, topic.as_str());
    let mut read = TopicRead { events: Vec::new(), truncated: false, gap: None, known: false };
    let mut bytes = 0usize;
    let mut from = after.saturating_add(1);
    let mut count = FIRST_COUNT.min(limit.events.saturating_add(1));
    loop {
        let entries = xrange(connection, &key, from, count).await?;
        if from == after.saturating_add(1) {
            let lost_through = match entries.first() {
                Some(first) => first.prev,
                // No entry left: the index says how far the topic reached.
                None => {
                    let last: Option<u64> = redis::cmd("ZSCORE")
                        .arg(shared.keys.index(epoch))
                        .arg(topic.as_str())
                        .query_async(connection)
                        .await
                        .map_err(read_error)?;
                    let Some(last) = last else { return Ok(read) };
                    read.known = true;
                    if last > after {
                        read.gap = Some(Gap { topic: topic.to_string(), through: last.min(upto) });
                    }
                    return Ok(read);
                }
            };
            read.known = true;
            if lost_through > after {
                read.gap = Some(Gap { topic: topic.to_string(), through: lost_through.min(upto) });
            }
        }
        let full = entries.len() == count;
        for entry in entries {
            if entry.seq > upto {
                return Ok(read);
            }
            let size = ID_LINE + entry.body.len();
            if !limit.admits(read.events.len(), bytes, size) {
                read.truncated = true;
                return Ok(read);
            }
            bytes += size;
            from = entry.seq.saturating_add(1);
            read.events.push(Event::from_body(EventId::new(epoch, entry.seq), topic.clone(), entry.ms, &entry.body));
        }
        if !full {
            return Ok(read);
        }
        // Sized by what the entries so far weighed.
        let average = (bytes / read.events.len().max(1)).max(1);
        let room = limit.bytes.saturating_sub(bytes) / average;
        count = room.clamp(1, 1000).min(limit.events.saturating_sub(read.events.len()).saturating_add(1));
    }
}

/// Up to `count` entries of `key` from sequence `from` on.
async fn xrange(connection: &mut Reads, key: &str, from: u64, count: usize) -> Result<Vec<Entry>, StoreError> {
    let reply: Value = redis::cmd("XRANGE")
        .arg(key)
        .arg(format!("{from}-0"))
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(connection)
        .await
        .map_err(read_error)?;
    let Value::Array(items) = reply else { return Ok(Vec::new()) };
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        entries.push(entry(item).ok_or_else(|| StoreError::unavailable(format!("malformed entry in {key}")))?);
    }
    Ok(entries)
}

fn entry(item: Value) -> Option<Entry> {
    let Value::Array(mut parts) = item else { return None };
    let Value::Array(fields) = parts.pop()? else { return None };
    let id = text(parts.pop()?)?;
    let seq = id.strip_suffix("-0")?.parse().ok()?;
    let mut entry = Entry { seq, prev: 0, ms: 0, body: Vec::new() };
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match (text(name)?.as_str(), value) {
            ("p", value) => entry.prev = text(value)?.parse().ok()?,
            ("t", value) => entry.ms = text(value)?.parse().ok()?,
            ("f", Value::BulkString(body)) => entry.body = body,
            _ => {}
        }
    }
    Some(entry)
}

fn text(value: Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => String::from_utf8(bytes).ok(),
        Value::SimpleString(text) => Some(text),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(crate) async fn topics(
    shared: &Shared,
    connection: &mut Reads,
    after: Option<&TopicName>,
    limit: usize,
) -> Result<Vec<StoredTopic>, StoreError> {
    let epoch = shared.epoch();
    let names: Vec<String> = redis::cmd("ZRANGEBYLEX")
        .arg(shared.keys.names(epoch))
        .arg(after.map_or_else(|| "-".to_owned(), |a| format!("({a}")))
        .arg("+")
        .arg("LIMIT")
        .arg(0)
        .arg(limit)
        .query_async(connection)
        .await
        .map_err(read_error)?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let Ok(name) = TopicName::new(&name) else { continue };
        out.extend(stored_topic(shared, connection, epoch, &name).await?);
    }
    Ok(out)
}

pub(crate) async fn topic(
    shared: &Shared,
    connection: &mut Reads,
    name: &TopicName,
) -> Result<Option<StoredTopic>, StoreError> {
    stored_topic(shared, connection, shared.epoch(), name).await
}

async fn stored_topic(
    shared: &Shared,
    connection: &mut Reads,
    epoch: Epoch,
    name: &TopicName,
) -> Result<Option<StoredTopic>, StoreError> {
    let key = shared.keys.stream(epoch, name.as_str());
    let (events, newest): (u64, Value) = redis::pipe()
        .cmd("XLEN")
        .arg(&key)
        .cmd("XREVRANGE")
        .arg(&key)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(connection)
        .await
        .map_err(read_error)?;
    let Value::Array(mut newest) = newest else { return Ok(None) };
    let Some(last) = newest.pop().and_then(entry) else { return Ok(None) };
    Ok(Some(StoredTopic { name: name.clone(), events, last_id: EventId::new(epoch, last.seq), last_event_ms: last.ms }))
}

/// One node at a time: forgets topics whose stream expired (raising
/// `forgotten` to the highest of them), drops old nodes' batch records and
/// deletes keys of past histories. Streams trim themselves (`MAXLEN`, TTL).
pub(crate) async fn sweep(shared: &Shared, connection: &mut Reads, now_ms: u64) -> Result<u64, StoreError> {
    let keys = &shared.keys;
    let locked: Option<String> = redis::cmd("SET")
        .arg(keys.sweep_lock())
        .arg(&shared.node_id)
        .arg("NX")
        .arg("PX")
        .arg(60_000)
        .query_async(connection)
        .await
        .map_err(read_error)?;
    if locked.is_none() {
        return Ok(0);
    }
    let epoch = shared.epoch();
    // Topics whose stream is gone.
    let mut forgotten = 0u64;
    let mut cursor = "-".to_owned();
    let mut dropped = 0u64;
    loop {
        let names: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(keys.names(epoch))
            .arg(&cursor)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH)
            .query_async(connection)
            .await
            .map_err(read_error)?;
        let Some(last) = names.last() else { break };
        cursor = format!("({last}");
        let mut exists = redis::pipe();
        for name in &names {
            exists.cmd("EXISTS").arg(keys.stream(epoch, name)).cmd("ZSCORE").arg(keys.index(epoch)).arg(name);
        }
        let found: Vec<Option<u64>> = exists.query_async(connection).await.map_err(read_error)?;
        let mut forget = redis::pipe();
        for (name, pair) in names.iter().zip(found.chunks(2)) {
            if pair[0] == Some(0) {
                forgotten = forgotten.max(pair[1].unwrap_or(0));
                forget.cmd("ZREM").arg(keys.index(epoch)).arg(name).cmd("ZREM").arg(keys.names(epoch)).arg(name);
                dropped += 1;
            }
        }
        // Only the topics still gone: one published meanwhile keeps its place.
        let _: () = forget.query_async(connection).await.map_err(read_error)?;
        if names.len() < SWEEP_BATCH {
            break;
        }
    }
    if forgotten > 0 {
        let script = redis::Script::new(
            "local f = tonumber(redis.call('HGET', KEYS[1], 'forgotten') or '0') \
             if tonumber(ARGV[1]) > f then redis.call('HSET', KEYS[1], 'forgotten', ARGV[1]) end return 0",
        );
        let _: i64 = script.key(keys.meta()).arg(forgotten).invoke_async(connection).await.map_err(read_error)?;
    }
    // Nodes gone for an hour.
    let records: Vec<(String, String)> =
        redis::cmd("HGETALL").arg(keys.nodes()).query_async(connection).await.map_err(read_error)?;
    for (node, record) in records {
        let ms = record.split(' ').nth(4).and_then(|ms| ms.parse::<u64>().ok()).unwrap_or(0);
        if now_ms.saturating_sub(ms) > NODE_RECORD_MS {
            let _: () =
                redis::cmd("HDEL").arg(keys.nodes()).arg(node).query_async(connection).await.map_err(read_error)?;
        }
    }
    delete_past_histories(shared, connection, epoch).await?;
    if dropped > 0 {
        tracing::info!(topics = dropped, "redis retention: forgot topics whose history expired");
    }
    Ok(0)
}

/// Deletes keys of other epochs than `epoch` (a bounded number per sweep).
async fn delete_past_histories(shared: &Shared, connection: &mut Reads, epoch: Epoch) -> Result<(), StoreError> {
    let current = format!(":{epoch}");
    let tag = shared.keys.meta().trim_end_matches(":meta").to_owned();
    let mut cursor = 0u64;
    let mut deleted = 0;
    for kind in ["s", "i", "names", "k"] {
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{tag}:{kind}:*"))
                .arg("COUNT")
                .arg(SWEEP_BATCH)
                .query_async(connection)
                .await
                .map_err(read_error)?;
            let old: Vec<&String> =
                keys.iter().filter(|k| !k[tag.len() + kind.len() + 1..].starts_with(&current)).collect();
            if !old.is_empty() {
                let _: () = redis::cmd("UNLINK").arg(&old).query_async(connection).await.map_err(read_error)?;
                deleted += old.len();
            }
            cursor = next;
            if cursor == 0 || deleted >= SWEEP_BATCH {
                break;
            }
        }
        if deleted >= SWEEP_BATCH {
            break;
        }
    }
    Ok(())
}
