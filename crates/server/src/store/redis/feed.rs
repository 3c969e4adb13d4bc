//! The feed: how a node learns of every event committed by any node.
//!
//! One PUB/SUB channel carries each committed batch, in sequence order, with
//! dense sequence numbers; the feed applies them through the hub's one
//! fan-out entry ([`Hub::apply`]) on a thread of its own, so it never waits
//! in a run queue behind thousands of stream tasks. A hole (a batch whose
//! first sequence is not the next one) or a reconnection is repaired from the
//! streams: [`Hub::skip_to`] has the readers below it read Redis. On every
//! (re)connection the feed subscribes first and then runs the handshake, so
//! every event is either at or below the handshake's sequence (in Redis) or
//! comes on the channel.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures_util::StreamExt as _;
use herald_core::{
    Epoch, Event, EventId, Hub, LOG_REPEAT_INTERVAL, LogThrottle, MercureMeta, StoreError, TopicName, now_ms,
};
use redis::aio::PubSubStream;

use super::{Shared, backoff::Backoff, read, reads::Reads, session, within};

/// How often an idle feed checks that Redis has nothing it has not brought.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A subscribed feed and the history Redis held once it was.
pub(crate) struct Synced {
    pub(crate) epoch: Epoch,
    pub(crate) seq: u64,
    messages: PubSubStream,
}

impl std::fmt::Debug for Synced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Synced").field("epoch", &self.epoch).field("seq", &self.seq).finish()
    }
}

impl Synced {
    /// Subscribes, then runs the handshake on `reads` (in that order),
    /// within the timeout.
    pub(crate) async fn connect(shared: &Shared, reads: &mut Reads) -> redis::RedisResult<Self> {
        within(shared.settings.timeout, async {
            let mut pubsub = shared.client.get_async_pubsub().await?;
            pubsub.subscribe(shared.keys.feed()).await?;
            let (epoch, seq) = session::hello(shared, reads).await?;
            Ok(Self { epoch, seq, messages: pubsub.into_on_message() })
        })
        .await
    }
}

/// Starts the feed of `hub` on a thread of its own.
pub(crate) fn start(shared: Arc<Shared>, reads: Reads, hub: Hub, first: Option<Synced>) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("herald-feed".into())
        .spawn(move || match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime.block_on(run(shared, reads, hub, first)),
            Err(error) => tracing::error!(%error, "cannot start the redis feed"),
        })
        .map(|_| ())
        .map_err(|e| StoreError::unavailable(format!("cannot start the redis feed thread: {e}")))
}

async fn run(shared: Arc<Shared>, mut reads: Reads, hub: Hub, mut first: Option<Synced>) {
    static FAILURES: LogThrottle = LogThrottle::new(LOG_REPEAT_INTERVAL);
    let mut backoff = Backoff::new();
    loop {
        let synced = match first.take() {
            Some(synced) => synced,
            None => match Synced::connect(&shared, &mut reads).await {
                Ok(synced) => synced,
                Err(error) => {
                    if let Some(unlogged) = FAILURES.admit() {
                        tracing::error!(%error, unlogged, "redis feed down: publishes answer 503, streams wait");
                    }
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            },
        };
        backoff.reset();
        adopt(&shared, &hub, synced.epoch, synced.seq);
        shared.set_live(&shared.session_live, true);
        shared.set_live(&shared.feed_live, true);
        let why = live(&shared, &mut reads, &hub, synced.messages).await;
        shared.set_live(&shared.feed_live, false);
        tracing::warn!(reason = why, "redis feed lost; reconnecting and repairing from the streams");
        metrics::counter!("herald_redis_resyncs_total", "reason" => why).increment(1);
    }
}

/// Redis holds `epoch` up to `seq`: a new history is switched to; events of
/// this one that the feed did not bring are read from the streams.
fn adopt(shared: &Shared, hub: &Hub, epoch: Epoch, seq: u64) {
    if epoch != hub.epoch() {
        shared.set_epoch(epoch);
        shared.applied.store(seq, Ordering::Release);
        shared.acked.store(0, Ordering::Release);
        hub.switch_history(epoch, seq);
    } else if seq > shared.applied.load(Ordering::Acquire) {
        shared.applied.store(seq, Ordering::Release);
        hub.skip_to(seq);
    }
}

/// Applies messages until the feed fails; returns why.
async fn live(shared: &Shared, reads: &mut Reads, hub: &Hub, mut messages: PubSubStream) -> &'static str {
    let mut behind_checks = 0;
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { return "reconnect" };
                match apply(shared, hub, message.get_payload_bytes()) {
                    Ok(lag) if lag > shared.settings.feed_max_lag => return "lag",
                    Ok(_) => behind_checks = 0,
                    Err(why) => {
                        tracing::error!(why, "malformed message on the redis feed");
                        return "malformed";
                    }
                }
            }
            () = tokio::time::sleep(IDLE_CHECK) => {
                let Ok(seq) = read::last_seq(shared, reads).await else { return "reconnect" };
                let behind = seq.saturating_sub(shared.applied.load(Ordering::Acquire));
                metrics::gauge!("herald_redis_feed_lag_events").set(behind as f64);
                metrics::gauge!("herald_redis_feed_lag_seconds").set(0.0);
                // Two checks in a row: one may race a batch on its way.
                behind_checks = if behind > 0 { behind_checks + 1 } else { 0 };
                if behind_checks >= 2 {
                    return "stale";
                }
            }
        }
    }
}

/// Applies one feed message; returns how long after its commit it came.
fn apply(shared: &Shared, hub: &Hub, payload: &[u8]) -> Result<Duration, &'static str> {
    let batch = Batch::parse(payload)?;
    if batch.epoch != hub.epoch() {
        // A new history, which this node learns of from its first batch.
        adopt(shared, hub, batch.epoch, batch.first.saturating_sub(1));
    }
    let applied = shared.applied.load(Ordering::Acquire);
    let last = batch.first.saturating_add(batch.count).saturating_sub(1);
    if last <= applied {
        return Ok(Duration::ZERO);
    }
    if batch.first > applied + 1 {
        // Batches were lost on the way: the streams have them.
        metrics::counter!("herald_redis_resyncs_total", "reason" => "hole").increment(1);
        adopt(shared, hub, batch.epoch, batch.first - 1);
    }
    let mut events = Vec::with_capacity(batch.records.len());
    for record in &batch.records {
        let topic = TopicName::new(record.topic).map_err(|_| "a topic name is invalid")?;
        let mercure = match record.mercure {
            Some(json) => {
                Some(std::str::from_utf8(json).ok().and_then(MercureMeta::from_json).ok_or("bad Mercure metadata")?)
            }
            None => None,
        };
        events.push(Event::from_body(EventId::new(batch.epoch, record.seq), topic, batch.ms, record.body, mercure));
    }
    hub.apply(&events);
    shared.applied.store(last, Ordering::Release);
    metrics::counter!("herald_redis_feed_events_total").increment(batch.count);
    let lag = Duration::from_millis(now_ms().saturating_sub(batch.ms));
    metrics::gauge!("herald_redis_feed_lag_seconds").set(lag.as_secs_f64());
    Ok(lag)
}

/// A feed message: `"<epoch> <first> <count> <ms>\n"`, then per event
/// `"<seq> <topic length> <body length>\n<topic><body>"`; a Mercure
/// update's has its metadata's length last in the header, and its metadata
/// (JSON) after its body: `"<seq> <tl> <bl> <ml>\n<topic><body><meta>"`.
struct Batch<'a> {
    epoch: Epoch,
    first: u64,
    count: u64,
    ms: u64,
    records: Vec<Record<'a>>,
}

/// One event of a feed message.
#[derive(Debug, PartialEq, Eq)]
struct Record<'a> {
    seq: u64,
    topic: &'a str,
    body: &'a [u8],
    /// A Mercure update's metadata, as JSON.
    mercure: Option<&'a [u8]>,
}

impl<'a> Batch<'a> {
    fn parse(payload: &'a [u8]) -> Result<Self, &'static str> {
        let (header, mut rest) = line(payload).ok_or("no header")?;
        let mut fields = header.split(' ');
        let mut next = || fields.next().ok_or("short header");
        let epoch = Epoch(u32::from_str_radix(next()?, 16).map_err(|_| "bad epoch")?);
        let first: u64 = next()?.parse().map_err(|_| "bad first")?;
        let count: u64 = next()?.parse().map_err(|_| "bad count")?;
        let ms: u64 = next()?.parse().map_err(|_| "bad time")?;
        let mut records = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(4096));
        for expected in first..first.saturating_add(count) {
            let (head, data) = line(rest).ok_or("no record header")?;
            let (seq, topic_len, body_len, meta_len) = record_header(head).ok_or("bad record header")?;
            if seq != expected {
                return Err("records out of order");
            }
            let body_end = topic_len.checked_add(body_len).ok_or("short record")?;
            let end =
                body_end.checked_add(meta_len.unwrap_or(0)).filter(|end| *end <= data.len()).ok_or("short record")?;
            let topic = std::str::from_utf8(&data[..topic_len]).map_err(|_| "topic not UTF-8")?;
            let mercure = meta_len.map(|_| &data[body_end..end]);
            records.push(Record { seq, topic, body: &data[topic_len..body_end], mercure });
            rest = &data[end..];
        }
        Ok(Self { epoch, first, count, ms, records })
    }
}

/// A record's header: its sequence, the lengths of its topic and body, and
/// of its metadata if it has any.
fn record_header(head: &str) -> Option<(u64, usize, usize, Option<usize>)> {
    let mut fields = head.split(' ');
    let seq = fields.next()?.parse().ok()?;
    let topic_len = fields.next()?.parse().ok()?;
    let body_len = fields.next()?.parse().ok()?;
    let meta_len = match fields.next() {
        Some(field) => Some(field.parse().ok()?),
        None => None,
    };
    fields.next().is_none().then_some((seq, topic_len, body_len, meta_len))
}

/// The first line of `bytes` (as text) and what follows it.
fn line(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    Some((std::str::from_utf8(&bytes[..end]).ok()?, &bytes[end + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_parse_and_bad_ones_are_refused() {
        let payload = b"0000002a 7 2 99\n7 1 9\nadata: x\n\n8 2 3\nbbxyz";
        let batch = Batch::parse(payload).unwrap();
        assert_eq!((batch.epoch, batch.first, batch.count, batch.ms), (Epoch(42), 7, 2, 99));
        let record = |seq, topic, body, mercure| Record { seq, topic, body, mercure };
        assert_eq!(batch.records, vec![record(7, "a", &b"data: x\n\n"[..], None), record(8, "bb", b"xyz", None)]);
        assert!(Batch::parse(b"0000002a 7 2 99\n7 1 9\nadata: x\n\n").is_err(), "a record missing");
        assert!(Batch::parse(b"0000002a 7 1 99\n7 1 80\nadata").is_err(), "lengths past the end");
        assert!(Batch::parse(b"0000002a 7 1 99\n9 1 1\nab").is_err(), "out of order");
        assert!(Batch::parse(b"zz 7 1 99\n").is_err());
    }

    #[test]
    fn updates_carry_their_metadata_after_their_body() {
        let payload = b"0000002a 7 3 99\n7 1 3 2\naxyz{}8 1 1\nbc9 1 2 3\ncde[1]";
        let batch = Batch::parse(payload).unwrap();
        let record = |seq, topic, body, mercure| Record { seq, topic, body, mercure };
        assert_eq!(
            batch.records,
            vec![
                record(7, "a", &b"xyz"[..], Some(&b"{}"[..])),
                record(8, "b", b"c", None),
                record(9, "c", b"de", Some(b"[1]")),
            ]
        );
        assert!(Batch::parse(b"0000002a 7 1 99\n7 1 1 9\nab{}").is_err(), "metadata past the end");
        assert!(Batch::parse(b"0000002a 7 1 99\n7 1 1 2 2\nab{}{}").is_err(), "a field too many");
        assert!(Batch::parse(b"0000002a 7 1 99\n7 1 1 x\nab{}").is_err(), "a bad length");
        let huge = format!("0000002a 7 1 99\n7 1 1 {}\nab{{}}", u64::MAX);
        assert!(Batch::parse(huge.as_bytes()).is_err(), "lengths that overflow");
    }
}
