//! One conformance suite for every `EventStore`: memory, SQLite and Redis
//! keep the same promises (ids, reads, limits, gaps, idempotency, topic
//! lists). Each check is written once against `&dyn EventStore`; the macro
//! at the end runs it on each store, as `conformance::<store>::<check>`.
//!
//! Where the stores legitimately differ, the assertion holds for all and a
//! comment says why: Redis trims with `MAXLEN ~` (it keeps at least the cap,
//! in whole stream nodes), trims on append where SQLite trims when retention
//! runs, and expires a topic's whole stream (its TTL, renewed by each
//! append) instead of single old events.

use std::{sync::Arc, time::Duration};

use herald_core::{
    Appended, Event, EventDraft, EventStore, Fingerprint, Gap, IdempotencyKey, MemoryStore, MercureMeta, Publish,
    ReadLimit, Retention, Selection, StoreRead, TopicName, TopicPattern, TopicRetention, now_ms,
};
use herald_server::store::{RedisSettings, RedisStore, SqliteStore, Synchronous};

use super::{
    common::redis::{Persistence, RedisServer},
    rand_u32, store_settings,
};

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Memory,
    Sqlite,
    Redis,
}

/// A store under test, and what it lives on (dropped with it).
struct Subject {
    store: Box<dyn EventStore>,
    _redis: Option<RedisServer>,
    _dir: tempfile::TempDir,
}

/// A fresh, empty store of `kind` keeping `retention`.
async fn open(kind: Kind, retention: Retention) -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, redis): (Box<dyn EventStore>, _) = match kind {
        Kind::Memory => (Box::new(MemoryStore::new(retention)), None),
        Kind::Sqlite => {
            let store = SqliteStore::open(dir.path(), retention, Synchronous::Normal).await.expect("open sqlite");
            (Box::new(store), None)
        }
        Kind::Redis => {
            let redis = RedisServer::start(dir.path(), Persistence::None);
            // Store-level calls need no feed: it only brings commits to a hub.
            let settings = store_settings(redis.url(), format!("c{:08x}", rand_u32()), retention);
            let store = RedisStore::connect(settings).await.expect("connect to redis");
            (Box::new(store), Some(redis))
        }
    };
    Subject { store, _redis: redis, _dir: dir }
}

fn topic(name: &str) -> TopicName {
    name.parse().unwrap()
}

fn select(items: &[&str]) -> Selection {
    Selection::new(items.iter().map(|s| s.parse::<TopicPattern>().unwrap()))
}

fn draft(topic_name: &str, data: &str) -> EventDraft {
    EventDraft::new(topic(topic_name), data)
}

/// Reads without a limit that matters.
const ALL: ReadLimit = ReadLimit { events: 100_000, bytes: usize::MAX };

/// Appends one request per element of `requests`, none keyed; their events.
async fn append(store: &dyn EventStore, requests: Vec<Vec<EventDraft>>) -> Vec<Event> {
    let publishes: Vec<Publish> = requests.into_iter().map(Publish::new).collect();
    let appended = store.append(&publishes).await.expect("append");
    assert_eq!(appended.len(), publishes.len(), "one answer per request");
    appended
        .into_iter()
        .flat_map(|a| match a {
            Appended::New(events) => events,
            other => panic!("a request without a key is stored: {other:?}"),
        })
        .collect()
}

/// One request of one event per `(topic, data)`.
async fn append_each(store: &dyn EventStore, events: &[(&str, String)]) -> Vec<Event> {
    append(store, events.iter().map(|(t, d)| vec![draft(t, d)]).collect()).await
}

async fn read(store: &dyn EventStore, selection: &Selection, after: u64, upto: u64, limit: ReadLimit) -> StoreRead {
    store.read(selection, after, upto, limit).await.expect("read")
}

fn seqs(events: &[Event]) -> Vec<u64> {
    events.iter().map(|e| e.id.seq).collect()
}

fn keyed(scope: &str, key: &str, drafts: Vec<EventDraft>) -> Publish {
    let key = IdempotencyKey { scope: scope.to_owned(), key: key.to_owned(), fingerprint: Fingerprint::of(&drafts) };
    Publish { drafts, key: Some(key) }
}

/// Every event of `expected` a read of `after` should have returned is
/// either returned, byte for byte, or under a gap of its topic (or of the
/// pattern that selected it): nothing is lost silently.
fn assert_nothing_silently_lost(read: &StoreRead, expected: &[Event], selection: &Selection, after: u64) {
    for event in expected.iter().filter(|e| e.id.seq > after && selection.matches(e.topic.as_str())) {
        if read.events.contains(event) {
            continue;
        }
        let covered = read.gaps.iter().any(|gap| {
            let names_it = gap.topic == event.topic.as_str()
                || gap.topic.parse::<TopicPattern>().is_ok_and(|p| p.matches(event.topic.as_str()));
            names_it && gap.through >= event.id.seq
        });
        assert!(covered, "{event:?} is neither read nor under a gap: {read:?}");
    }
}

// ---- ids ---------------------------------------------------------------

async fn ids_are_consecutive_within_and_across_requests(store: &dyn EventStore) {
    assert_eq!(store.last_seq().await.unwrap(), 0, "a new store has assigned nothing");
    assert!(store.append(&[]).await.unwrap().is_empty());
    let first = store
        .append(&[
            Publish::new(vec![draft("a", "1"), draft("b", "2"), draft("a", "3")]),
            Publish::new(vec![draft("c", "4")]),
        ])
        .await
        .unwrap();
    let [Appended::New(one), Appended::New(two)] = &first[..] else { panic!("two new requests: {first:?}") };
    assert_eq!(seqs(one), [1, 2, 3]);
    assert_eq!(seqs(two), [4]);
    let second = append(store, vec![vec![draft("b", "5"), draft("c", "6")]]).await;
    assert_eq!(seqs(&second), [5, 6], "the next append goes on from the last id");
    assert_eq!(store.last_seq().await.unwrap(), 6);

    let all: Vec<Event> = one.iter().chain(two).chain(&second).cloned().collect();
    assert!(all.iter().all(|e| e.id.epoch == store.epoch()), "ids are of the store's history");
    let topics: Vec<&str> = all.iter().map(|e| e.topic.as_str()).collect();
    assert_eq!(topics, ["a", "b", "a", "c", "b", "c"]);
    // What an append answers is what a read returns: same ids, times, frames.
    let read = read(store, &select(&["a", "b", "c"]), 0, 6, ALL).await;
    assert_eq!(read.events, all);
    assert!(!read.truncated && read.gaps.is_empty(), "{read:?}");
    let frame = String::from_utf8_lossy(&all[3].frame).into_owned();
    assert_eq!(frame, format!("id: {}\ndata: 4\n\n", all[3].id));
}

// ---- reads -------------------------------------------------------------

/// Events on five topics, interleaved, with data of varied sizes.
async fn mixed_history(store: &dyn EventStore) -> Vec<Event> {
    let names = ["news.a", "sports", "news.b", "weather", "newsroom"];
    let events: Vec<(&str, String)> =
        (0..30).map(|i| (names[i % names.len()], format!("{i}:{}", "x".repeat(i * 37 % 200)))).collect();
    // A batch request in the middle, and single ones around it.
    let mut out = append_each(store, &events[..10]).await;
    out.extend(append(store, vec![events[10..20].iter().map(|(t, d)| draft(t, d)).collect()]).await);
    out.extend(append_each(store, &events[20..]).await);
    assert_eq!(seqs(&out), (1..=30).collect::<Vec<_>>());
    out
}

async fn reads_take_what_is_after_and_up_to_their_bounds(store: &dyn EventStore) {
    let all = mixed_history(store).await;
    for selection in [select(&["sports"]), select(&["sports", "weather"]), select(&["news.*"])] {
        for (after, upto) in [(0, 30), (7, 30), (7, 19), (19, 19), (30, 30), (0, 1), (29, 30)] {
            let read = read(store, &selection, after, upto, ALL).await;
            let expected: Vec<Event> = all
                .iter()
                .filter(|e| e.id.seq > after && e.id.seq <= upto && selection.matches(e.topic.as_str()))
                .cloned()
                .collect();
            assert_eq!(read.events, expected, "{selection:?} in ({after}, {upto}]");
            assert!(!read.truncated && read.gaps.is_empty(), "{selection:?} in ({after}, {upto}]: {read:?}");
        }
    }
}

async fn topics_and_patterns_are_read_merged_in_id_order(store: &dyn EventStore) {
    let all = mixed_history(store).await;
    // `news.*` is a prefix pattern: `newsroom` does not match it, `news.a` and `news.b` do.
    let selection = select(&["news.*", "weather", "sports"]);
    let read = read(store, &selection, 0, 30, ALL).await;
    let expected: Vec<Event> = all.iter().filter(|e| e.topic.as_str() != "newsroom").cloned().collect();
    assert_eq!(read.events, expected);
    assert!(seqs(&read.events).windows(2).all(|w| w[0] < w[1]), "merged in id order");
    // A pattern and one of the topics it matches: each event once.
    let overlapping = read_all(store, &select(&["news.*", "news.a"]), 0, 30).await;
    let news: Vec<Event> = all.iter().filter(|e| e.topic.as_str().starts_with("news.")).cloned().collect();
    assert_eq!(overlapping, news);
    // The empty prefix matches every topic; an unknown topic nothing.
    assert_eq!(read_all(store, &select(&["*"]), 0, 30).await, all);
    assert!(read_all(store, &select(&["nothing", "nothing.*"]), 0, 30).await.is_empty());
}

async fn read_all(store: &dyn EventStore, selection: &Selection, after: u64, upto: u64) -> Vec<Event> {
    let read = read(store, selection, after, upto, ALL).await;
    assert!(!read.truncated && read.gaps.is_empty(), "{read:?}");
    read.events
}

/// A limited read is a prefix of the unlimited one, never empty, and
/// `truncated` exactly when it is shorter. (How many events a store packs
/// under a limit varies: Redis gives each topic of a read its share of it.)
fn assert_prefix(limited: &StoreRead, full: &[Event], context: &str) {
    assert!(!limited.events.is_empty(), "{context}: the first event always goes");
    assert!(limited.events.len() <= full.len(), "{context}");
    assert_eq!(limited.events[..], full[..limited.events.len()], "{context}: a prefix, in order");
    assert_eq!(limited.truncated, limited.events.len() < full.len(), "{context}: truncated iff more follow");
}

async fn event_limits_truncate_reads_that_page_through_everything(store: &dyn EventStore) {
    mixed_history(store).await;
    for items in [&["sports"][..], &["news.*", "weather"], &["*"]] {
        let selection = select(items);
        for events in [1, 2, 5, 7] {
            let limit = ReadLimit { events, bytes: usize::MAX };
            let full = read_all(store, &selection, 0, 30).await;
            let first = read(store, &selection, 0, 30, limit).await;
            assert_prefix(&first, &full, &format!("{items:?} limited to {events}"));
            assert!(first.events.len() <= events, "{items:?}: at most {events} events: {first:?}");
            // Paging on from where each read reaches gets everything, once.
            let (mut after, mut paged, mut pages) = (0, Vec::new(), 0);
            while after < 30 {
                let page = read(store, &selection, after, 30, limit).await;
                let rest = read_all(store, &selection, after, 30).await;
                if rest.is_empty() {
                    assert!(page.events.is_empty() && !page.truncated, "{page:?}");
                } else {
                    assert_prefix(&page, &rest, &format!("{items:?} after {after}"));
                }
                after = page.reaches(30);
                paged.extend(page.events);
                pages += 1;
                assert!(pages <= 30, "paging makes progress");
            }
            assert_eq!(paged, full, "{items:?} paged by {events}");
        }
    }
}

async fn byte_limits_truncate_reads_but_the_first_event_goes_whole(store: &dyn EventStore) {
    let all = mixed_history(store).await;
    for items in [&["newsroom"][..], &["news.*", "sports"], &["*"]] {
        let selection = select(items);
        let full = read_all(store, &selection, 0, 30).await;
        for bytes in [0, 100, 400, 1500] {
            let limit = ReadLimit { events: 1000, bytes };
            let read = read(store, &selection, 0, 30, limit).await;
            assert_prefix(&read, &full, &format!("{items:?} limited to {bytes} bytes"));
            let size: usize = read.events.iter().map(Event::size).sum();
            assert!(read.events.len() == 1 || size <= bytes, "{items:?}: {size} bytes over {bytes}");
        }
    }
    // Sizes count whole frames: two of them fit exactly.
    let newsroom: Vec<Event> = all.iter().filter(|e| e.topic.as_str() == "newsroom").cloned().collect();
    let two = ReadLimit { events: 1000, bytes: newsroom[0].size() + newsroom[1].size() };
    let read = read(store, &select(&["newsroom"]), 0, 30, two).await;
    assert_eq!((&read.events[..], read.truncated), (&newsroom[..2], true));
}

// ---- gaps --------------------------------------------------------------

/// A cap of 50 events per topic, nothing lost by age.
fn capped() -> Retention {
    Retention { max_events_per_topic: 50, max_age: None, ..Retention::default() }
}

async fn trimmed_history_is_a_gap_through_the_last_lost_event(store: &dyn EventStore) {
    // 200 events of each of `a` and `b`, interleaved (so a topic's lost
    // sequences are not contiguous), in four appends of 100.
    let mut all = Vec::new();
    for round in 0..4 {
        let drafts = (0..100).map(|i| draft(if i % 2 == 0 { "a" } else { "b" }, &format!("{round}.{i}"))).collect();
        all.extend(append(store, vec![drafts]).await);
    }
    // SQLite trims when retention runs; the others as they append.
    store.enforce_retention(now_ms(), None).await.unwrap();
    let last = store.last_seq().await.unwrap();
    assert_eq!(last, 400);
    for name in ["a", "b"] {
        let of_topic: Vec<&Event> = all.iter().filter(|e| e.topic.as_str() == name).collect();
        let read = read(store, &select(&[name]), 0, last, ALL).await;
        // Redis trims with `MAXLEN ~`: whole stream nodes, keeping at least
        // the cap; memory and SQLite keep exactly the cap. Either way the
        // newest events are kept, some are gone, and the gap is exact for
        // what was kept.
        let kept = read.events.len();
        assert!((50..200).contains(&kept), "{name}: {kept} events kept of 200 with a cap of 50");
        let retained: Vec<Event> = of_topic[200 - kept..].iter().map(|e| (*e).clone()).collect();
        assert_eq!(read.events, retained, "{name}: the newest events are kept");
        let lost_through = of_topic[200 - kept - 1].id.seq;
        assert_eq!(read.gaps, [Gap { topic: name.into(), through: lost_through }], "{name}");
        assert!(!read.truncated);
        // From inside the lost stretch: the same gap; from its end or later, none.
        let inside = read_topic(store, name, of_topic[10].id.seq, last).await;
        assert_eq!((inside.events, inside.gaps), (retained.clone(), read.gaps.clone()));
        let at_end = read_topic(store, name, lost_through, last).await;
        assert_eq!((at_end.events, at_end.gaps), (retained.clone(), vec![]));
        let later = read_topic(store, name, retained[0].id.seq, last).await;
        assert_eq!((later.events, later.gaps), (retained[1..].to_vec(), vec![]));
    }
    // Both topics at once: one gap each, events merged in order.
    let both = read(store, &select(&["a", "b"]), 0, last, ALL).await;
    let mut gaps = both.gaps.clone();
    gaps.sort_by(|x, y| x.topic.cmp(&y.topic));
    assert_eq!(gaps.iter().map(|g| g.topic.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    assert_nothing_silently_lost(&both, &all, &select(&["a", "b"]), 0);
    assert!(seqs(&both.events).windows(2).all(|w| w[0] < w[1]));
}

async fn read_topic(store: &dyn EventStore, name: &str, after: u64, upto: u64) -> StoreRead {
    read(store, &select(&[name]), after, upto, ALL).await
}

/// How long events are kept in the age checks.
const MAX_AGE: Duration = Duration::from_secs(1);

fn aging() -> Retention {
    Retention { max_age: Some(MAX_AGE), ..Retention::default() }
}

/// Events of `old` topics, then (once they are past the age) of `fresh`
/// ones: every event, and the time from which the fresh ones were published.
async fn old_then_fresh(store: &dyn EventStore, old: &[&str], fresh: &[&str]) -> (Vec<Event>, u64) {
    let mut all = Vec::new();
    for name in old {
        all.extend(append_each(store, &[(name, "old 1".into()), (name, "old 2".into())]).await);
    }
    // Past the age: Redis expired the streams of the old topics (their TTL).
    tokio::time::sleep(MAX_AGE + Duration::from_millis(200)).await;
    let fresh_events = append(store, vec![fresh.iter().map(|name| draft(name, "fresh")).collect()]).await;
    let fresh_from = fresh_events[0].time_ms;
    all.extend(fresh_events);
    (all, fresh_from)
}

/// Retention, run as of a moment that puts exactly the fresh events within
/// the age (memory and SQLite drop events by their time; Redis ignores the
/// time, its streams expired by themselves, and its sweep forgets them).
async fn retain_fresh(store: &dyn EventStore, fresh_from: u64) {
    store.enforce_retention(fresh_from + MAX_AGE.as_millis() as u64, None).await.unwrap();
}

async fn expired_topics_are_gaps_for_names_and_patterns(store: &dyn EventStore) {
    // A store that forgets topics remembers only the highest sequence of
    // any it forgot (a pattern read cannot tell which matched): `news.old`
    // goes last, so that the gaps below are exact for every store.
    let (all, fresh_from) = old_then_fresh(store, &["other", "news.old"], &["news.fresh"]).await;
    let last = store.last_seq().await.unwrap();
    let old_last = all.iter().filter(|e| e.topic.as_str() == "news.old").map(|e| e.id.seq).max().unwrap();
    let news = select(&["news.*"]);
    // Before retention runs, stores differ in what is left (Redis's streams
    // expired, the others' events wait for retention), never in honesty.
    for selection in [&news, &select(&["news.old"])] {
        let read = read(store, selection, 0, last, ALL).await;
        assert_nothing_silently_lost(&read, &all, selection, 0);
    }

    retain_fresh(store, fresh_from).await;
    // The topic by name: nothing left, a gap through its last event.
    let by_name = read(store, &select(&["news.old"]), 0, last, ALL).await;
    assert!(by_name.events.is_empty(), "{by_name:?}");
    assert_eq!(by_name.gaps, [Gap { topic: "news.old".into(), through: old_last }]);
    // Through the pattern: the fresh event, and one gap through the old
    // topic's last event. A store that forgot the topic (memory, Redis after
    // its sweep) names the pattern; SQLite still knows the topic's name.
    let read = read(store, &news, 0, last, ALL).await;
    let fresh: Vec<Event> = all.iter().filter(|e| e.topic.as_str() == "news.fresh").cloned().collect();
    assert_eq!(read.events, fresh);
    let [gap] = &read.gaps[..] else { panic!("one gap expected: {read:?}") };
    assert!(["news.old", "news.*"].contains(&gap.topic.as_str()), "{gap:?}");
    assert_eq!(gap.through, old_last);
    // From past the lost events: nothing lost.
    let after_loss = read_topic(store, "news.*", old_last, last).await;
    assert_eq!((after_loss.events, after_loss.gaps), (fresh.clone(), vec![]));
    assert_eq!(read_all(store, &select(&["news.fresh"]), 0, last).await, fresh);
    assert_eq!(store.topic(&topic("news.old")).await.unwrap(), None, "an expired topic holds nothing");
}

async fn a_topic_published_again_after_expiring_still_reports_its_loss(store: &dyn EventStore) {
    let (all, fresh_from) = old_then_fresh(store, &["t"], &["other"]).await;
    retain_fresh(store, fresh_from).await;
    assert_eq!(store.topic(&topic("t")).await.unwrap(), None);
    let again = append(store, vec![vec![draft("t", "again")]]).await;
    // A reader of `t` that had its first event: the second is lost, and
    // must be reported even though `t` has history again.
    let resumed = read_topic(store, "t", 1, again[0].id.seq).await;
    assert_eq!(resumed.events, again);
    assert_nothing_silently_lost(&resumed, &all, &select(&["t"]), 1);
    assert_eq!(resumed.gaps, [Gap { topic: "t".into(), through: 2 }], "{resumed:?}");
    // A reader that had both: nothing lost.
    let current = read_topic(store, "t", 2, again[0].id.seq).await;
    assert_eq!((current.events, current.gaps), (again, vec![]));
}

// ---- hub-owned topics' own retention -----------------------------------

/// Ordinary topics keep 300 events, hub-owned ones (`$…`) 10; nothing is
/// lost by age.
fn hub_capped() -> Retention {
    let hub_topics = TopicRetention { max_events: 10, max_age: None };
    Retention { max_events_per_topic: 300, max_age: None, hub_topics, ..Retention::default() }
}

/// Only ordinary topics age.
fn ordinary_aging() -> Retention {
    let hub_topics = TopicRetention { max_events: 10_000, max_age: None };
    Retention { max_age: Some(MAX_AGE), hub_topics, ..Retention::default() }
}

/// Only hub-owned topics age.
fn hub_aging() -> Retention {
    let hub_topics = TopicRetention { max_events: 10_000, max_age: Some(MAX_AGE) };
    Retention { max_age: None, hub_topics, ..Retention::default() }
}

/// What is left of `name` is its newest events, their number within
/// `kept`, and a gap through the last one lost.
async fn assert_trimmed_to(store: &dyn EventStore, all: &[Event], name: &str, kept: std::ops::Range<usize>) {
    let of_topic: Vec<Event> = all.iter().filter(|e| e.topic.as_str() == name).cloned().collect();
    let last = store.last_seq().await.unwrap();
    let read = read_topic(store, name, 0, last).await;
    let count = read.events.len();
    assert!(kept.contains(&count), "{name}: {count} events kept of {}, expected {kept:?}", of_topic.len());
    assert_eq!(read.events, of_topic[of_topic.len() - count..], "{name}: the newest events are kept");
    let lost_through = of_topic[of_topic.len() - count - 1].id.seq;
    assert_eq!(read.gaps, [Gap { topic: name.into(), through: lost_through }], "{name}");
}

async fn hub_owned_and_ordinary_topics_are_trimmed_by_their_own_count(store: &dyn EventStore) {
    // 400 events of each, interleaved, in four appends of 200.
    let mut all = Vec::new();
    for round in 0..4 {
        let drafts = (0..200).map(|i| draft(if i % 2 == 0 { "$door" } else { "plain" }, &format!("{round}.{i}")));
        all.extend(append(store, vec![drafts.collect()]).await);
    }
    store.enforce_retention(now_ms(), None).await.unwrap();
    // Memory and SQLite keep exactly the cap; Redis at least the cap, and
    // at most a stream node (100 entries) more: each its own.
    assert_trimmed_to(store, &all, "$door", 10..300).await;
    assert_trimmed_to(store, &all, "plain", 300..400).await;
}

async fn ordinary_topics_expire_by_their_own_age(store: &dyn EventStore) {
    // `plain` goes last: a store that forgets it reports its last event exactly.
    let (all, fresh_from) = old_then_fresh(store, &["$door", "plain"], &["fresh"]).await;
    let last = store.last_seq().await.unwrap();
    retain_fresh(store, fresh_from).await;
    let of = |name: &str| all.iter().filter(|e| e.topic.as_str() == name).cloned().collect::<Vec<_>>();
    let plain = read_topic(store, "plain", 0, last).await;
    assert!(plain.events.is_empty(), "{plain:?}");
    assert_eq!(plain.gaps, [Gap { topic: "plain".into(), through: of("plain")[1].id.seq }]);
    assert_eq!(read_all(store, &select(&["$door"]), 0, last).await, of("$door"), "the door keeps its history");
    assert_eq!(read_all(store, &select(&["fresh"]), 0, last).await, of("fresh"));
}

async fn hub_owned_topics_expire_by_their_own_age(store: &dyn EventStore) {
    // `$door` goes last: a store that forgets it reports its last event exactly.
    let (all, fresh_from) = old_then_fresh(store, &["plain", "$door"], &["fresh"]).await;
    let last = store.last_seq().await.unwrap();
    retain_fresh(store, fresh_from).await;
    let of = |name: &str| all.iter().filter(|e| e.topic.as_str() == name).cloned().collect::<Vec<_>>();
    let door = read_topic(store, "$door", 0, last).await;
    assert!(door.events.is_empty(), "{door:?}");
    assert_eq!(door.gaps, [Gap { topic: "$door".into(), through: of("$door")[1].id.seq }]);
    assert_eq!(read_all(store, &select(&["plain"]), 0, last).await, of("plain"), "ordinary topics keep theirs");
    assert_eq!(read_all(store, &select(&["fresh"]), 0, last).await, of("fresh"));
}

// ---- idempotency -------------------------------------------------------

async fn a_repeated_key_replays_and_a_reused_key_is_refused(store: &dyn EventStore) {
    let drafts = vec![draft("orders", "one"), draft("orders", "two")];
    append(store, vec![vec![draft("x", "before")]]).await;
    let first = store.append(&[keyed("sub:alice", "k1", drafts.clone())]).await.unwrap();
    let [Appended::New(events)] = &first[..] else { panic!("{first:?}") };
    assert_eq!(seqs(events), [2, 3]);
    // Later appends: the same request is replayed, other events refused.
    let again = store
        .append(&[
            keyed("sub:alice", "k1", drafts.clone()),
            keyed("sub:alice", "k1", vec![draft("orders", "other")]),
            keyed("sub:alice", "k1", vec![draft("orders", "one")]),
        ])
        .await
        .unwrap();
    assert_eq!(again, [Appended::Replayed { first: events[0].id }, Appended::KeyReused, Appended::KeyReused]);
    // Within one append: the second use of a key sees the first.
    let same_batch = store
        .append(&[
            keyed("sub:alice", "k2", vec![draft("orders", "three")]),
            keyed("sub:alice", "k2", vec![draft("orders", "three")]),
            keyed("sub:alice", "k2", vec![draft("orders", "four")]),
        ])
        .await
        .unwrap();
    let [Appended::New(three), replayed, reused] = &same_batch[..] else { panic!("{same_batch:?}") };
    assert_eq!(seqs(three), [4], "replays took no ids");
    assert_eq!((replayed, reused), (&Appended::Replayed { first: three[0].id }, &Appended::KeyReused));
    // Nothing was stored twice, and ids stay dense.
    assert_eq!(append(store, vec![vec![draft("x", "after")]]).await[0].id.seq, 5);
    let orders = read_all(store, &select(&["orders"]), 0, 5).await;
    assert_eq!(orders.iter().map(|e| e.id.seq).collect::<Vec<_>>(), [2, 3, 4]);
}

async fn keys_belong_to_their_scope(store: &dyn EventStore) {
    let alice = store.append(&[keyed("sub:alice", "same", vec![draft("t", "alice's")])]).await.unwrap();
    let bob = store.append(&[keyed("sub:bob", "same", vec![draft("t", "bob's")])]).await.unwrap();
    let ([Appended::New(a)], [Appended::New(b)]) = (&alice[..], &bob[..]) else { panic!("{alice:?} {bob:?}") };
    assert_eq!((a[0].id.seq, b[0].id.seq), (1, 2), "another scope's key is another key");
    // Each retry is answered in its own scope.
    let retries = store
        .append(&[
            keyed("sub:bob", "same", vec![draft("t", "bob's")]),
            keyed("sub:alice", "same", vec![draft("t", "alice's")]),
            keyed("grants:t", "same", vec![draft("t", "alice's")]),
        ])
        .await
        .unwrap();
    let [bob_again, alice_again, Appended::New(third)] = &retries[..] else { panic!("{retries:?}") };
    assert_eq!(bob_again, &Appended::Replayed { first: b[0].id });
    assert_eq!(alice_again, &Appended::Replayed { first: a[0].id });
    assert_eq!(seqs(third), [3]);
}

/// Idempotency keys are remembered this long in the expiry check.
const KEY_TTL: Duration = Duration::from_millis(600);

fn short_keys() -> Retention {
    Retention { idempotency_ttl: KEY_TTL, ..Retention::default() }
}

async fn keys_expire_after_their_ttl(store: &dyn EventStore) {
    let request = || keyed("sub:alice", "k", vec![draft("t", "once")]);
    let first = store.append(&[request()]).await.unwrap();
    let [Appended::New(events)] = &first[..] else { panic!("{first:?}") };
    assert_eq!(store.append(&[request()]).await.unwrap(), [Appended::Replayed { first: events[0].id }]);
    tokio::time::sleep(KEY_TTL + Duration::from_millis(200)).await;
    // Memory and SQLite forget keys when retention runs (and ignore expired
    // ones before); Redis keys expire by themselves.
    store.enforce_retention(now_ms(), None).await.unwrap();
    let later = store.append(&[request()]).await.unwrap();
    let [Appended::New(again)] = &later[..] else { panic!("an expired key is a new request: {later:?}") };
    assert_eq!(seqs(again), [2]);
    // From now on the key stands for the new request.
    assert_eq!(store.append(&[request()]).await.unwrap(), [Appended::Replayed { first: again[0].id }]);
}

// ---- Mercure updates ---------------------------------------------------

/// A draft of a Mercure update on `topic_name`, with the publisher's `id` if any.
fn update(topic_name: &str, data: &str, id: Option<&str>) -> EventDraft {
    let meta = MercureMeta::new(vec![format!("https://example.com/{data}"), "/alt".into()], true, None);
    let meta = MercureMeta { id: id.map(str::to_owned), private: id.is_none(), ..meta };
    EventDraft { mercure: Some(Arc::new(meta)), ..draft(topic_name, data) }
}

async fn find(store: &dyn EventStore, topic_name: &str, id: &str) -> Option<herald_core::EventId> {
    store.find_mercure_id(&topic(topic_name), id).await.expect("find a Mercure id")
}

async fn updates_read_back_with_their_metadata_and_frames(store: &dyn EventStore) {
    let mut typed = update("door", "typed", Some("urn:uuid:1"));
    typed.event_type = Some("kind".parse().unwrap());
    typed.retry_ms = Some(5);
    let appended = append(
        store,
        vec![
            vec![update("door", "custom", Some("my-id")), draft("door", "plain"), update("door", "hubs", None)],
            vec![typed, update("other", "multi\nline", Some("x"))],
        ],
    )
    .await;
    let frames: Vec<String> = appended.iter().map(|e| String::from_utf8_lossy(&e.frame).into_owned()).collect();
    assert_eq!(frames[0], "id: my-id\ndata: custom\n\n");
    assert_eq!(frames[1], format!("id: {}\ndata: plain\n\n", appended[1].id));
    assert_eq!(frames[2], format!("id: urn:herald:{}\ndata: hubs\n\n", appended[2].id));
    assert_eq!(frames[3], "id: urn:uuid:1\nevent: kind\nretry: 5\ndata: typed\n\n");
    assert_eq!(frames[4], "id: x\ndata: multi\ndata: line\n\n");
    assert_eq!(appended[1].mercure, None);
    assert_eq!(appended[2].mercure.as_ref().map(|m| (m.private, m.topics.len())), Some((true, 2)));
    // Reads give the same events, metadata and frames, by name and by pattern.
    assert_eq!(read_all(store, &select(&["door", "other"]), 0, 5).await, appended);
    assert_eq!(read_all(store, &select(&["*"]), 1, 5).await, appended[1..]);
    // Byte limits count the frames' real id lines.
    let two = ReadLimit { events: 100, bytes: appended[0].size() + appended[1].size() };
    let read = read(store, &select(&["door"]), 0, 5, two).await;
    assert_eq!((&read.events[..], read.truncated), (&appended[..2], true));
}

async fn a_reused_mercure_id_finds_its_newest_event(store: &dyn EventStore) {
    assert_eq!(find(store, "door", "a").await, None, "nothing published yet");
    let first = append(store, vec![vec![update("door", "1", Some("a")), update("door", "2", Some("b"))]]).await;
    assert_eq!(find(store, "door", "a").await, Some(first[0].id));
    assert_eq!(find(store, "door", "b").await, Some(first[1].id));
    // Reused, in later appends and within one: the latest wins.
    let second = append(
        store,
        vec![
            vec![draft("door", "plain"), update("door", "3", Some("a"))],
            vec![update("door", "4", Some("b")), update("door", "5", Some("b"))],
        ],
    )
    .await;
    assert_eq!(find(store, "door", "a").await, Some(second[1].id));
    assert_eq!(find(store, "door", "b").await, Some(second[3].id));
    // Ids are per topic; unknown ids, hub ids and other topics find nothing.
    let elsewhere = append(store, vec![vec![update("other", "6", Some("a"))]]).await;
    assert_eq!(find(store, "other", "a").await, Some(elsewhere[0].id));
    assert_eq!(find(store, "door", "a").await, Some(second[1].id));
    assert_eq!(find(store, "door", "unknown").await, None);
    assert_eq!(find(store, "door", "").await, None);
    assert_eq!(find(store, "door", &format!("urn:herald:{}", first[0].id)).await, None);
    assert_eq!(find(store, "nowhere", "a").await, None);
}

async fn a_mercure_id_whose_event_was_trimmed_is_not_found(store: &dyn EventStore) {
    let old = append(store, vec![vec![update("door", "old", Some("old")), update("door", "kept", Some("kept"))]]).await;
    assert_eq!(find(store, "door", "old").await, Some(old[0].id));
    // Far past the cap, by events without ids (so nothing else names the topic's ids).
    for round in 0..4 {
        append(store, vec![(0..100).map(|i| draft("door", &format!("{round}.{i}"))).collect()]).await;
    }
    store.enforce_retention(now_ms(), None).await.unwrap();
    let last = store.last_seq().await.unwrap();
    let first_kept = read(store, &select(&["door"]), 0, last, ALL).await.events[0].id.seq;
    assert!(first_kept > old[1].id.seq, "the updates were trimmed (kept from {first_kept})");
    assert_eq!(find(store, "door", "old").await, None, "a trimmed event's id is not found");
    assert_eq!(find(store, "door", "kept").await, None);
    // The id published again is found again.
    let again = append(store, vec![vec![update("door", "new", Some("old"))]]).await;
    assert_eq!(find(store, "door", "old").await, Some(again[0].id));
    assert_eq!(find(store, "door", "kept").await, None);
}

async fn a_mercure_id_whose_topic_expired_is_not_found(store: &dyn EventStore) {
    let old = append(store, vec![vec![update("door", "old", Some("a"))]]).await;
    assert_eq!(find(store, "door", "a").await, Some(old[0].id));
    tokio::time::sleep(MAX_AGE + Duration::from_millis(200)).await;
    let fresh = append(store, vec![vec![update("fresh", "new", Some("a"))]]).await;
    // Before retention runs, Redis's stream already expired; after it, none has the event.
    retain_fresh(store, fresh[0].time_ms).await;
    assert_eq!(find(store, "door", "a").await, None);
    assert_eq!(find(store, "fresh", "a").await, Some(fresh[0].id));
}

// ---- topic lists -------------------------------------------------------

async fn topics_are_listed_in_name_order_page_by_page(store: &dyn EventStore) {
    // Byte order: '-' < '.' < digits < 'A' < '_' < 'a' < '~'.
    let names = ["a~", "a_b", "A", "a-b", "0", "a.b", "a_b", "a~", "a~"];
    let events = append_each(store, &names.iter().map(|n| (*n, format!("to {n}"))).collect::<Vec<_>>()).await;
    let listed = store.topics(None, 100).await.unwrap();
    let sorted = ["0", "A", "a-b", "a.b", "a_b", "a~"];
    assert_eq!(listed.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(), sorted);
    for stored in &listed {
        let of_topic: Vec<&Event> = events.iter().filter(|e| e.topic == stored.name).collect();
        let newest = of_topic.last().unwrap();
        assert_eq!(stored.events, of_topic.len() as u64, "{stored:?}");
        assert_eq!((stored.last_id, stored.last_event_ms), (newest.id, newest.time_ms), "{stored:?}");
        assert_eq!(store.topic(&stored.name).await.unwrap().as_ref(), Some(stored));
    }
    // Pages of two, each starting after the last one's end.
    let mut after: Option<TopicName> = None;
    let mut pages = Vec::new();
    loop {
        let page = store.topics(after.as_ref(), 2).await.unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        after = page.last().map(|t| t.name.clone());
        pages.push(page.iter().map(|t| t.name.to_string()).collect::<Vec<_>>().join(" "));
    }
    assert_eq!(pages, ["0 A", "a-b a.b", "a_b a~"]);
    assert_eq!(store.topics(Some(&topic("a.b")), 1).await.unwrap()[0].name.as_str(), "a_b");
    assert!(store.topics(Some(&topic("zzz")), 10).await.unwrap().is_empty());
    assert_eq!(store.topic(&topic("unknown")).await.unwrap(), None);
}

async fn topic_pages_are_full_until_the_last_despite_expired_topics(store: &dyn EventStore) {
    let (_, fresh_from) = old_then_fresh(store, &["a0", "a1", "a2"], &["b", "c"]).await;
    // Before retention runs: memory and SQLite still list the old topics,
    // Redis no longer has their streams. Either way a page short of its
    // limit says the list ended, so none may be short while topics with
    // events follow.
    let mut after: Option<TopicName> = None;
    let mut listed = Vec::new();
    for _ in 0..10 {
        let page = store.topics(after.as_ref(), 1).await.unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.name.clone());
        listed.extend(page.into_iter().map(|t| t.name.to_string()));
    }
    assert!(
        listed.ends_with(&["b".to_owned(), "c".to_owned()]),
        "paging by one lists every topic with events, the fresh ones last: {listed:?}"
    );
    assert!(listed.windows(2).all(|w| w[0] < w[1]), "{listed:?}");
    retain_fresh(store, fresh_from).await;
    let names: Vec<String> = store.topics(None, 10).await.unwrap().into_iter().map(|t| t.name.to_string()).collect();
    assert_eq!(names, ["b", "c"], "after retention only topics with events are listed");
    assert_eq!(store.topic(&topic("a1")).await.unwrap(), None);
}

/// One test per check and store: `conformance::memory::<check>`, ….
macro_rules! conformance {
    ($($check:ident => $retention:expr),* $(,)?) => {
        conformance!(@kind memory, Memory, $($check => $retention),*);
        conformance!(@kind sqlite, Sqlite, $($check => $retention),*);
        conformance!(@kind redis, Redis, $($check => $retention),*);
    };
    (@kind $module:ident, $kind:ident, $($check:ident => $retention:expr),*) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $check() {
                    let subject = open(Kind::$kind, $retention).await;
                    super::$check(&*subject.store).await;
                }
            )*
        }
    };
}

conformance! {
    ids_are_consecutive_within_and_across_requests => Retention::default(),
    reads_take_what_is_after_and_up_to_their_bounds => Retention::default(),
    topics_and_patterns_are_read_merged_in_id_order => Retention::default(),
    event_limits_truncate_reads_that_page_through_everything => Retention::default(),
    byte_limits_truncate_reads_but_the_first_event_goes_whole => Retention::default(),
    trimmed_history_is_a_gap_through_the_last_lost_event => capped(),
    expired_topics_are_gaps_for_names_and_patterns => aging(),
    a_topic_published_again_after_expiring_still_reports_its_loss => aging(),
    a_repeated_key_replays_and_a_reused_key_is_refused => Retention::default(),
    keys_belong_to_their_scope => Retention::default(),
    keys_expire_after_their_ttl => short_keys(),
    topics_are_listed_in_name_order_page_by_page => Retention::default(),
    topic_pages_are_full_until_the_last_despite_expired_topics => aging(),
    updates_read_back_with_their_metadata_and_frames => Retention::default(),
    a_reused_mercure_id_finds_its_newest_event => Retention::default(),
    a_mercure_id_whose_event_was_trimmed_is_not_found => capped(),
    a_mercure_id_whose_topic_expired_is_not_found => aging(),
    hub_owned_and_ordinary_topics_are_trimmed_by_their_own_count => hub_capped(),
    ordinary_topics_expire_by_their_own_age => ordinary_aging(),
    hub_owned_topics_expire_by_their_own_age => hub_aging(),
}

/// Redis only (the one store whose history can change under it): a new
/// history forgot nothing, so the old history's forgotten topics put no
/// gap on the new one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_a_new_history_starts_with_nothing_forgotten() {
    use super::common::{WAIT, within};
    let dir = tempfile::tempdir().expect("temp dir");
    // Kept across a restart, which (not trusted to keep acknowledged
    // writes) still starts a new history.
    let mut redis = RedisServer::start(dir.path(), Persistence::Everysec);
    let settings = RedisSettings {
        url: redis.url(),
        prefix: format!("c{:08x}", rand_u32()),
        timeout: Duration::from_secs(2),
        feed_max_lag: Duration::from_secs(5),
        durable_restarts: false,
        retention: aging(),
    };
    let store = Arc::new(RedisStore::connect(settings).await.expect("connect"));
    let hub = herald_core::Hub::start(Arc::clone(&store) as Arc<dyn EventStore>, herald_core::HubConfig::default())
        .await
        .unwrap();
    store.start_feed(hub.clone()).unwrap();
    let (_, fresh_from) = old_then_fresh(&*store, &["old"], &["fresh"]).await;
    retain_fresh(&*store, fresh_from).await;
    let old_epoch = store.epoch();

    redis.restart();
    within(WAIT, "the feed to adopt the new history", async {
        while hub.epoch() == old_epoch {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The writer's connection died with Redis: the first tries may fail.
    let event = within(WAIT, "a publish to the new history", async {
        loop {
            if let Ok(appended) = store.append(&[Publish::new(vec![draft("new", "first")])]).await
                && let [Appended::New(events)] = &appended[..]
            {
                break events[0].clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(event.id.epoch, hub.epoch());
    for selection in [select(&["new"]), select(&["n*"]), select(&["unknown"])] {
        // The reads' connection reconnects on its first use since the restart.
        let read = within(WAIT, "a read of the new history", async {
            loop {
                match store.read(&selection, 0, event.id.seq, ALL).await {
                    Ok(read) => break read,
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        })
        .await;
        assert!(read.gaps.is_empty(), "{selection:?}: nothing of the new history is lost: {read:?}");
    }
}

/// Redis only (the one store with an index to keep bounded by hand): a
/// topic's Mercure ids hold exactly its retained updates' ids, lose those of
/// updates trimmed by later events once the sweep runs, and go with the
/// topic when it expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_mercure_ids_hold_only_retained_updates_and_go_with_their_topic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path(), Persistence::None);
    let prefix = format!("c{:08x}", rand_u32());
    let settings = store_settings(
        redis.url(),
        prefix.clone(),
        Retention { max_events_per_topic: 50, max_age: Some(MAX_AGE), ..Retention::default() },
    );
    let store = RedisStore::connect(settings).await.expect("connect to redis");
    let mut redis_connection = redis.connection();
    let (ids, stream) =
        (format!("{{{prefix}}}:mi:{}:door", store.epoch()), format!("{{{prefix}}}:s:{}:door", store.epoch()));
    let mut count = |command: &str, key: &str| -> usize {
        ::redis::cmd(command).arg(key).query(&mut redis_connection).expect("count")
    };
    // Updates with ids of their own, far past the cap: as the stream is
    // trimmed, so are its ids.
    for round in 0..3 {
        let drafts = (0..100).map(|i| update("door", &format!("{round}.{i}"), Some(&format!("id-{round}-{i}"))));
        append(&store, vec![drafts.collect()]).await;
    }
    let kept = count("XLEN", &stream);
    assert!((50..300).contains(&kept), "{kept}");
    assert_eq!(count("ZCARD", &ids), kept, "one id per retained update");
    // Events without ids trim the rest; the sweep drops their ids.
    append(&store, vec![(0..300).map(|i| draft("door", &format!("plain {i}"))).collect()]).await;
    store.enforce_retention(now_ms(), None).await.unwrap();
    assert_eq!(count("ZCARD", &ids), 0, "no id of a trimmed update is kept");
    assert_eq!(find(&store, "door", "id-2-99").await, None);
    // Expired: the sweep leaves nothing of the topic.
    append(&store, vec![vec![update("door", "last", Some("id-last"))]]).await;
    assert_eq!(count("ZCARD", &ids), 1);
    tokio::time::sleep(MAX_AGE + Duration::from_millis(200)).await;
    // A sweep runs at most once a minute (its lock): released to sweep again.
    count("DEL", &format!("{{{prefix}}}:sweep"));
    store.enforce_retention(now_ms(), None).await.unwrap();
    let left: Vec<String> =
        ::redis::cmd("KEYS").arg(format!("{{{prefix}}}:*door*")).query(&mut redis.connection()).expect("keys");
    assert!(left.is_empty(), "{left:?}");
}

/// Redis only: the least-privilege user of the README's "A Redis user for
/// Herald" may do all a store does, Mercure updates and their ids included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_the_readmes_user_may_do_all_a_store_does() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).expect("README");
    let acl = readme.lines().find(|line| line.starts_with("ACL SETUSER herald ")).expect("the README's ACL");
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path(), Persistence::None);
    let prefix = format!("c{:08x}", rand_u32());
    let acl = acl.replace("LONG-PASSWORD", "secret").replace("{herald}", &format!("{{{prefix}}}"));
    let mut command = ::redis::cmd("ACL");
    for word in acl.split_whitespace().skip(1) {
        command.arg(word);
    }
    let () = command.query(&mut redis.connection()).expect("the README's ACL applies");
    let settings = RedisSettings {
        url: redis.url().replace("redis://", "redis://herald:secret@"),
        prefix,
        timeout: Duration::from_secs(5),
        feed_max_lag: Duration::from_secs(5),
        durable_restarts: false,
        retention: Retention { max_events_per_topic: 50, ..Retention::default() },
    };
    let store = RedisStore::connect(settings).await.expect("connect as the README's user");
    let keyed_update = keyed("sub:a", "k", vec![update("door", "0", Some("first"))]);
    store.append(&[keyed_update]).await.expect("append");
    let events = append(&store, vec![(0..200).map(|i| update("door", &i.to_string(), Some("id"))).collect()]).await;
    assert_eq!(find(&store, "door", "id").await, events.last().map(|e| e.id));
    assert_eq!(find(&store, "door", "first").await, None, "trimmed");
    let last = store.last_seq().await.unwrap();
    assert!(read(&store, &select(&["door", "d*"]), 0, last, ALL).await.events.ends_with(&events[150..]));
    assert_eq!(store.topics(None, 10).await.unwrap().len(), 1);
    store.enforce_retention(now_ms(), None).await.expect("the sweep");
}
