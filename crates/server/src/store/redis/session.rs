//! The writer's session: a connection of its own, the handshake on each new
//! one, one publish script per part of a group commit, and what to answer
//! when Redis does not.
//!
//! While Redis is down the session fails fast (no attempt until the next
//! retry time, or until the feed sees Redis back): publishers get 503 at
//! once. A script whose answer is lost (a timeout or a reset after it was
//! sent) is in doubt: the session reconnects and reads the last batch its
//! node committed (`{P}:n`), which says whether it committed and with which
//! ids; only when that cannot be read either is the publisher told the
//! outcome is unknown.

use std::{
    collections::{HashMap, hash_map::Entry},
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use herald_core::{Appended, Epoch, Event, EventDraft, EventId, Publish, StoreError, now_ms, sse};
use redis::{Value, aio::MultiplexedConnection};

use super::{Durability, Shared, backoff::Backoff, connection_config, keys::hex, scripts, within};

/// Most events, and most frame bytes, in one script: a long script blocks
/// every other client of Redis. A single request larger than that still
/// goes whole (it is all or nothing).
const MAX_SCRIPT_EVENTS: usize = 1000;
const MAX_SCRIPT_BYTES: usize = 1 << 20;

#[derive(Debug)]
pub(crate) struct Session {
    shared: Arc<Shared>,
    connection: Option<MultiplexedConnection>,
    /// The history the connection's handshake found.
    epoch: Epoch,
    batch: u64,
    retry_at: Instant,
    backoff: Backoff,
}

/// How one script call went.
enum Outcome {
    Done(Vec<Appended>),
    /// Redis holds another history: the handshake must run again.
    Epoch,
}

impl Session {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared, connection: None, epoch: Epoch(0), batch: 0, retry_at: Instant::now(), backoff: Backoff::new() }
    }

    /// Stores `requests`, in parts of at most [`MAX_SCRIPT_EVENTS`] events.
    pub(crate) async fn append(&mut self, requests: &[Publish]) -> Result<Vec<Appended>, StoreError> {
        let mut out = Vec::with_capacity(requests.len());
        for part in parts(requests) {
            match self.append_part(part).await {
                Ok(appended) => out.extend(appended),
                // Earlier parts are stored: they keep their answers.
                Err(error) if !out.is_empty() => out.extend(part.iter().map(|_| Appended::Failed(error.clone()))),
                Err(error) => return Err(error),
            }
        }
        Ok(out)
    }

    async fn append_part(&mut self, requests: &[Publish]) -> Result<Vec<Appended>, StoreError> {
        for _ in 0..2 {
            self.connect().await?;
            self.batch += 1;
            let started = Instant::now();
            let result = self.call(requests).await;
            crate::metrics::redis_command("publish").record(started.elapsed().as_secs_f64());
            match result {
                Ok(Outcome::Done(appended)) => {
                    self.shared.took_writes();
                    self.note_acked(&appended);
                    return Ok(appended);
                }
                // Another node (or Redis's restart) moved the history on.
                Ok(Outcome::Epoch) => self.connection = None,
                Err(error) if error.code().is_some() => {
                    // Redis answered with an error: nothing was written. Out
                    // of memory or unable to persist, it refuses every write
                    // for now: the node is not ready meanwhile.
                    if matches!(error.code(), Some("OOM" | "MISCONF")) {
                        self.shared.refuse_writes();
                    }
                    return Err(StoreError::unavailable(format!("redis refused the publish: {error}")));
                }
                Err(error) => {
                    self.down();
                    return self.resolve(requests, self.batch, &error).await;
                }
            }
        }
        Err(StoreError::unavailable("redis changed its history twice during one publish; retry"))
    }

    /// A connection that has run the handshake, or an error at once while
    /// Redis is known to be down.
    async fn connect(&mut self) -> Result<(), StoreError> {
        if self.connection.is_some() {
            return Ok(());
        }
        if !self.shared.session_live.load(Ordering::Acquire) && Instant::now() < self.retry_at {
            return Err(StoreError::unavailable("redis is unreachable; retrying shortly"));
        }
        match within(self.shared.settings.timeout, self.handshake()).await {
            Ok(()) => {
                self.backoff.reset();
                self.shared.set_live(&self.shared.session_live, true);
                Ok(())
            }
            Err(error) => {
                self.down();
                Err(StoreError::unavailable(format!("redis is unreachable: {error}")))
            }
        }
    }

    async fn handshake(&mut self) -> redis::RedisResult<()> {
        let config = connection_config(&self.shared.settings);
        let mut connection = self.shared.client.get_multiplexed_async_connection_with_config(&config).await?;
        let (epoch, _) = hello(&self.shared, &mut connection).await?;
        self.epoch = epoch;
        self.connection = Some(connection);
        Ok(())
    }

    fn down(&mut self) {
        self.connection = None;
        self.retry_at = Instant::now() + self.backoff.next();
        self.shared.set_live(&self.shared.session_live, false);
    }

    fn note_acked(&self, appended: &[Appended]) {
        if self.epoch != self.shared.epoch() {
            return;
        }
        let newest = appended.iter().filter_map(|a| match a {
            Appended::New(events) => events.last().map(|e| e.id.seq),
            _ => None,
        });
        if let Some(newest) = newest.max() {
            self.shared.acked.fetch_max(newest, Ordering::AcqRel);
        }
    }

    /// One script call for `requests`.
    async fn call(&mut self, requests: &[Publish]) -> redis::RedisResult<Outcome> {
        let shared = Arc::clone(&self.shared);
        let keys = &shared.keys;
        let epoch = self.epoch;
        let retention = &shared.settings.retention;
        let ordinary = retention.ordinary_topics();
        let now = now_ms();
        let mut invocation = scripts::PUBLISH.prepare_invoke();
        invocation.key(keys.meta()).key(keys.index(epoch)).key(keys.names(epoch)).key(keys.nodes());
        // One stream key per topic, then one per idempotency key.
        let mut streams: HashMap<&str, usize> = HashMap::new();
        for draft in requests.iter().flat_map(|r| &r.drafts) {
            let next = streams.len();
            if let Entry::Vacant(entry) = streams.entry(draft.topic.as_str()) {
                entry.insert(next);
                invocation.key(keys.stream(epoch, draft.topic.as_str()));
            }
        }
        let mut next_key = 5 + streams.len();
        let mut key_index = Vec::with_capacity(requests.len());
        for request in requests {
            match &request.key {
                Some(key) => {
                    invocation.key(keys.idempotency(epoch, key));
                    key_index.push(next_key);
                    next_key += 1;
                }
                None => key_index.push(0),
            }
        }
        // Then the Mercure ids of each topic with an update that has a publisher's id.
        let mut mercure_ids: HashMap<&str, usize> = HashMap::new();
        for draft in requests.iter().flat_map(|r| &r.drafts) {
            if draft.mercure.as_ref().is_some_and(|meta| meta.id.is_some())
                && let Entry::Vacant(entry) = mercure_ids.entry(draft.topic.as_str())
            {
                entry.insert(next_key);
                invocation.key(keys.mercure_ids(epoch, draft.topic.as_str()));
                next_key += 1;
            }
        }
        let ttl_ms = |d: Option<Duration>| d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        invocation
            .arg(epoch.to_string())
            .arg(&shared.node_id)
            .arg(self.batch)
            .arg(now)
            .arg(ordinary.max_events.max(1))
            .arg(ttl_ms(ordinary.max_age))
            .arg(ttl_ms(Some(retention.idempotency_ttl)).max(1))
            .arg(requests.len())
            .arg(streams.len())
            .arg(keys.feed())
            .arg(mercure_ids.len())
            .arg(retention.hub_topics.max_events.max(1))
            .arg(ttl_ms(retention.hub_topics.max_age));
        // Encoded once: sent to Redis, and the frames of the answer.
        let bodies: Vec<Vec<Bytes>> = requests.iter().map(bodies).collect();
        for ((request, key), bodies) in requests.iter().zip(&key_index).zip(&bodies) {
            let fingerprint = request.key.as_ref().map_or_else(String::new, |k| hex(&k.fingerprint.0));
            invocation.arg(*key).arg(fingerprint).arg(request.drafts.len());
            for (draft, body) in request.drafts.iter().zip(bodies) {
                let stream = 5 + streams.get(draft.topic.as_str()).copied().unwrap_or(0);
                let Some(meta) = &draft.mercure else {
                    invocation.arg(stream).arg(draft.topic.as_str()).arg(body.as_ref());
                    continue;
                };
                // A Mercure update: its index negated, its metadata and publisher's id.
                let ids =
                    if meta.id.is_some() { mercure_ids.get(draft.topic.as_str()).copied().unwrap_or(0) } else { 0 };
                invocation.arg(-(stream as i64)).arg(draft.topic.as_str()).arg(body.as_ref());
                invocation.arg(meta.to_json()).arg(ids).arg(meta.id.as_deref().unwrap_or(""));
            }
        }
        let connection = self.connection.as_mut().ok_or_else(|| {
            redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, "no connection"))
        })?;
        let reply: Vec<Value> = invocation.invoke_async(connection).await?;
        let text = |i: usize| match reply.get(i) {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        if text(0) == "EPOCH" {
            return Ok(Outcome::Epoch);
        }
        let epoch = Epoch(u32::from_str_radix(&text(1), 16).map_err(|_| malformed("epoch"))?);
        let outcomes: Vec<String> = text(2).split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect();
        if outcomes.len() != requests.len() {
            return Err(malformed("outcome count"));
        }
        let answers = requests.iter().zip(&bodies).zip(&outcomes);
        Ok(Outcome::Done(
            answers.map(|((request, bodies), outcome)| appended(request, bodies, outcome, epoch, now)).collect(),
        ))
    }

    /// The answer of batch `batch` was lost: whether it committed, from the
    /// node's record in Redis, read on a new connection within the timeout.
    async fn resolve(
        &mut self,
        requests: &[Publish],
        batch: u64,
        cause: &redis::RedisError,
    ) -> Result<Vec<Appended>, StoreError> {
        let record = tokio::time::timeout(self.shared.settings.timeout, self.batch_record()).await;
        let outcome = match record {
            Ok(Ok(Some(record))) if record.batch == batch => {
                let mut seq = record.first;
                let appended = requests
                    .iter()
                    .enumerate()
                    .map(|(i, request)| {
                        let bodies = bodies(request);
                        match record.exceptions.iter().find(|(r, _)| *r == i + 1) {
                            Some((_, outcome)) => appended(request, &bodies, outcome, record.epoch, record.ms),
                            None => {
                                let outcome = format!("N{seq}");
                                seq += request.drafts.len() as u64;
                                appended(request, &bodies, &outcome, record.epoch, record.ms)
                            }
                        }
                    })
                    .collect();
                Ok(appended)
            }
            // Another batch is the node's last: this one never ran.
            Ok(Ok(_)) => Err(StoreError::unavailable(format!("redis failed during the publish: {cause}"))),
            _ => Err(StoreError::in_doubt(format!("redis failed after the publish was sent ({cause})"))),
        };
        let label = match &outcome {
            Ok(_) => "committed",
            Err(StoreError::InDoubt(_)) => "unknown",
            Err(_) => "not_committed",
        };
        metrics::counter!("herald_redis_in_doubt_total", "outcome" => label).increment(1);
        outcome
    }

    async fn batch_record(&mut self) -> Result<Option<BatchRecord>, StoreError> {
        self.retry_at = Instant::now();
        self.connect().await?;
        let connection = self.connection.as_mut().ok_or_else(|| StoreError::unavailable("no connection"))?;
        let field: Option<String> = redis::cmd("HGET")
            .arg(self.shared.keys.nodes())
            .arg(&self.shared.node_id)
            .query_async(connection)
            .await
            .map_err(super::read_error)?;
        Ok(field.and_then(|f| BatchRecord::parse(&f)))
    }
}

/// A node's last committed batch: `"<batch> <epoch> <first> <count> <ms>
/// <exceptions>"`, exceptions being `<request>=R<first>` or `<request>=K`.
struct BatchRecord {
    batch: u64,
    epoch: Epoch,
    first: u64,
    ms: u64,
    exceptions: Vec<(usize, String)>,
}

impl BatchRecord {
    fn parse(field: &str) -> Option<Self> {
        let mut parts = field.split(' ');
        let batch = parts.next()?.parse().ok()?;
        let epoch = Epoch(u32::from_str_radix(parts.next()?, 16).ok()?);
        let first = parts.next()?.parse().ok()?;
        let _count: u64 = parts.next()?.parse().ok()?;
        let ms = parts.next()?.parse().ok()?;
        let exceptions = parts
            .next()
            .unwrap_or("")
            .split(',')
            .filter(|e| !e.is_empty())
            .filter_map(|e| e.split_once('=').and_then(|(r, o)| Some((r.parse().ok()?, o.to_owned()))))
            .collect();
        Some(Self { batch, epoch, first, ms, exceptions })
    }
}

/// The frames of `request`'s events without their `id:` lines.
fn bodies(request: &Publish) -> Vec<Bytes> {
    let body = |d: &EventDraft| sse::event_frame(None, d.event_type.as_ref().map(|t| t.as_str()), &d.data, d.retry_ms);
    request.drafts.iter().map(body).collect()
}

/// What `outcome` (`N<first>`, `R<first>`, `K`) means for `request`, whose
/// frames' bodies are `bodies`.
fn appended(request: &Publish, bodies: &[Bytes], outcome: &str, epoch: Epoch, ms: u64) -> Appended {
    let first = outcome.get(1..).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    match outcome.as_bytes().first() {
        Some(b'N') => Appended::New(
            request
                .drafts
                .iter()
                .zip(bodies)
                .zip(first..)
                .map(|((draft, body), seq)| {
                    Event::from_body(EventId::new(epoch, seq), draft.topic.clone(), ms, body, draft.mercure.clone())
                })
                .collect(),
        ),
        Some(b'R') => Appended::Replayed { first: EventId::new(epoch, first) },
        _ => Appended::KeyReused,
    }
}

/// Runs the handshake on `connection`: the history Redis holds now, and
/// its newest sequence.
pub(crate) async fn hello(
    shared: &Shared,
    connection: &mut impl redis::aio::ConnectionLike,
) -> redis::RedisResult<(Epoch, u64)> {
    let started = Instant::now();
    let candidate = Epoch::random();
    let durable = shared.settings.durable_restarts || shared.durability == Durability::Fsync;
    let known = shared.epoch();
    let (epoch, seq, why, previous): (String, u64, String, String) = scripts::HELLO
        .key(shared.keys.meta())
        .arg(if known.0 == 0 { String::new() } else { known.to_string() })
        .arg(shared.seen())
        .arg(candidate.to_string())
        .arg(if durable { "1" } else { "0" })
        .invoke_async(connection)
        .await?;
    let epoch = Epoch(u32::from_str_radix(&epoch, 16).map_err(|_| malformed("epoch"))?);
    if let Ok(previous) = u32::from_str_radix(&previous, 16) {
        shared.previous.store(previous, Ordering::Release);
    }
    if why != "ok" && known.0 != 0 {
        tracing::warn!(reason = %why, old = %known, new = %epoch, "redis history changed: a new epoch starts");
        metrics::counter!("herald_redis_epoch_changes_total", "reason" => why).increment(1);
    }
    crate::metrics::redis_command("hello").record(started.elapsed().as_secs_f64());
    Ok((epoch, seq))
}

/// Requests in parts of at most [`MAX_SCRIPT_EVENTS`] events and
/// [`MAX_SCRIPT_BYTES`] bytes, each request whole.
fn parts(requests: &[Publish]) -> Vec<&[Publish]> {
    let mut parts = Vec::new();
    let (mut start, mut events, mut bytes) = (0, 0, 0);
    for (i, request) in requests.iter().enumerate() {
        let size: usize = request.drafts.iter().map(draft_size).sum();
        if i > start && (events + request.drafts.len() > MAX_SCRIPT_EVENTS || bytes + size > MAX_SCRIPT_BYTES) {
            parts.push(&requests[start..i]);
            (start, events, bytes) = (i, 0, 0);
        }
        events += request.drafts.len();
        bytes += size;
    }
    if start < requests.len() {
        parts.push(&requests[start..]);
    }
    parts
}

/// About what `draft` weighs in a script call.
fn draft_size(draft: &EventDraft) -> usize {
    let meta = draft
        .mercure
        .as_ref()
        .map_or(0, |meta| meta.topics.iter().map(String::len).sum::<usize>() + meta.id.as_ref().map_or(0, String::len));
    draft.data.len() + draft.topic.as_str().len() + meta
}

fn malformed(what: &str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::UnexpectedReturnType, "malformed script reply", what.to_owned()))
}
