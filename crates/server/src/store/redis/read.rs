//! Reads of a history in Redis (catch-up, resume, topic lists) and its
//! retention sweep.
//!
//! Each stream entry `<seq>-0` carries `p`, the previous sequence of its
//! topic: the first entry a read finds after its position tells exactly what
//! was trimmed or expired before it, however roughly `MAXLEN ~` trimmed.

use std::sync::Arc;

use herald_core::{
    Epoch, Event, EventId, Gap, MercureMeta, ReadLimit, Selection, StoreError, StoreRead, StoredTopic, TopicName,
};
use redis::Value;

use super::{Shared, read_error, reads::Reads};

/// Entries asked for by a stream's first read: later ones are sized by the
/// bytes of those seen, so a read never holds much more than its limit.
const FIRST_COUNT: usize = 16;
/// Most topics a sweep looks at, and most keys of old histories it deletes.
const SWEEP_BATCH: usize = 1000;
/// How long a node's record of its last batch is kept.
const NODE_RECORD_MS: u64 = 3600 * 1000;

/// The newest sequence Redis assigned in its history (0 if none).
pub(crate) async fn last_seq(shared: &Shared, connection: &mut Reads) -> redis::RedisResult<u64> {
    let seq: Option<u64> = redis::cmd("HGET").arg(shared.keys.meta()).arg("seq").query_async(connection).await?;
    Ok(seq.unwrap_or(0))
}

/// Up to `count` topic names of `epoch` after `cursor` (a `ZRANGEBYLEX`
/// bound: `-` for the first), in name order.
async fn names_after(
    shared: &Shared,
    connection: &mut Reads,
    epoch: Epoch,
    cursor: &str,
    count: usize,
) -> Result<Vec<String>, StoreError> {
    redis::cmd("ZRANGEBYLEX")
        .arg(shared.keys.names(epoch))
        .arg(cursor)
        .arg("+")
        .arg("LIMIT")
        .arg(0)
        .arg(count)
        .query_async(connection)
        .await
        .map_err(read_error)
}

/// One stream entry.
struct Entry {
    seq: u64,
    prev: u64,
    ms: u64,
    body: Vec<u8>,
    /// A Mercure update's metadata (field `m`).
    mercure: Option<Arc<MercureMeta>>,
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
            let event =
                Event::from_body(EventId::new(epoch, entry.seq), topic.clone(), entry.ms, &entry.body, entry.mercure);
            let size = event.size();
            if !limit.admits(read.events.len(), bytes, size) {
                read.truncated = true;
                return Ok(read);
            }
            bytes += size;
            from = entry.seq.saturating_add(1);
            read.events.push(event);
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
    let mut entry = Entry { seq, prev: 0, ms: 0, body: Vec::new(), mercure: None };
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        match (text(name)?.as_str(), value) {
            ("p", value) => entry.prev = text(value)?.parse().ok()?,
            ("t", value) => entry.ms = text(value)?.parse().ok()?,
            ("f", Value::BulkString(body)) => entry.body = body,
            // Metadata that is not an update's makes the entry malformed.
            ("m", value) => entry.mercure = Some(MercureMeta::from_json(&text(value)?)?),
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

/// The newest retained event of `topic` whose Mercure update carries the
/// publisher's id `id`: the topic's Mercure ids say which, its stream
/// whether it is still retained (ids of trimmed or expired events linger
/// until the next update of the topic, or the sweep, drops them).
pub(crate) async fn find_mercure_id(
    shared: &Shared,
    connection: &mut Reads,
    topic: &TopicName,
    id: &str,
) -> Result<Option<EventId>, StoreError> {
    let epoch = shared.epoch();
    let seq: Option<u64> = super::scripts::FIND_MERCURE_ID
        .key(shared.keys.mercure_ids(epoch, topic.as_str()))
        .key(shared.keys.stream(epoch, topic.as_str()))
        .arg(id)
        .invoke_async(connection)
        .await
        .map_err(read_error)?;
    Ok(seq.map(|seq| EventId::new(epoch, seq)))
}

pub(crate) async fn topics(
    shared: &Shared,
    connection: &mut Reads,
    after: Option<&TopicName>,
    limit: usize,
) -> Result<Vec<StoredTopic>, StoreError> {
    let epoch = shared.epoch();
    let mut out = Vec::with_capacity(limit.min(1000));
    let mut cursor = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
    // The names outlive a topic's expired stream until the sweep: those are
    // skipped, and the page filled from later names, as a short page means
    // the list ended.
    while out.len() < limit {
        let wanted = limit - out.len();
        let names = names_after(shared, connection, epoch, &cursor, wanted).await?;
        let Some(last) = names.last() else { break };
        cursor = format!("({last}");
        let exhausted = names.len() < wanted;
        let names: Vec<TopicName> = names.iter().filter_map(|name| TopicName::new(name).ok()).collect();
        out.extend(stored_topics(shared, connection, epoch, &names).await?.into_iter().flatten());
        if exhausted {
            break;
        }
    }
    Ok(out)
}

pub(crate) async fn topic(
    shared: &Shared,
    connection: &mut Reads,
    name: &TopicName,
) -> Result<Option<StoredTopic>, StoreError> {
    let mut stored = stored_topics(shared, connection, shared.epoch(), std::slice::from_ref(name)).await?;
    Ok(stored.pop().flatten())
}

/// What the streams of `names` hold (`None` for one that expired), in one
/// round trip.
async fn stored_topics(
    shared: &Shared,
    connection: &mut Reads,
    epoch: Epoch,
    names: &[TopicName],
) -> Result<Vec<Option<StoredTopic>>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for name in names {
        let key = shared.keys.stream(epoch, name.as_str());
        pipe.cmd("XLEN").arg(&key).cmd("XREVRANGE").arg(&key).arg("+").arg("-").arg("COUNT").arg(1);
    }
    let replies: Vec<Value> = pipe.query_async(connection).await.map_err(read_error)?;
    let stored = names.iter().zip(replies.chunks(2)).map(|(name, reply)| {
        let [Value::Int(events), Value::Array(newest)] = reply else { return None };
        let last = newest.first().cloned().and_then(entry)?;
        Some(StoredTopic {
            name: name.clone(),
            events: u64::try_from(*events).unwrap_or(0),
            last_id: EventId::new(epoch, last.seq),
            last_event_ms: last.ms,
        })
    });
    Ok(stored.collect())
}

/// One node at a time: forgets topics whose stream expired (raising
/// `forgotten` to the highest of them), drops old nodes' batch records and
/// deletes keys of past histories. Streams trim themselves (`MAXLEN`, TTL),
/// each by its class's bounds (hub-owned topics' own: see `PUBLISH`).
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
    // Topics whose stream is gone, a batch at a time.
    let mut cursor = "-".to_owned();
    let mut dropped = 0u64;
    loop {
        let names = names_after(shared, connection, epoch, &cursor, SWEEP_BATCH).await?;
        let Some(last) = names.last() else { break };
        cursor = format!("({last}");
        let mut invocation = super::scripts::FORGET.prepare_invoke();
        invocation.key(keys.meta()).key(keys.index(epoch)).key(keys.names(epoch));
        for name in &names {
            invocation.key(keys.stream(epoch, name)).key(keys.mercure_ids(epoch, name)).arg(name);
        }
        let forgot: u64 = invocation.invoke_async(connection).await.map_err(read_error)?;
        dropped += forgot;
        if names.len() < SWEEP_BATCH {
            break;
        }
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

/// Deletes keys of other histories than `epoch`'s, at most [`SWEEP_BATCH`]
/// per sweep, found in one pass over the prefix's keys.
async fn delete_past_histories(shared: &Shared, connection: &mut Reads, epoch: Epoch) -> Result<(), StoreError> {
    let mut cursor = 0u64;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(shared.keys.all())
            .arg("COUNT")
            .arg(SWEEP_BATCH)
            .query_async(connection)
            .await
            .map_err(read_error)?;
        let past: Vec<&String> = keys.iter().filter(|key| shared.keys.is_of_past_history(key, epoch)).collect();
        if !past.is_empty() {
            let _: () = redis::cmd("UNLINK").arg(&past).query_async(connection).await.map_err(read_error)?;
            deleted += past.len();
        }
        cursor = next;
        if cursor == 0 || deleted >= SWEEP_BATCH {
            return Ok(());
        }
    }
}
