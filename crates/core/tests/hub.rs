//! The hub end to end, in process: encoding against an independent SSE
//! parser, concurrent publish and subscribe, stalled readers, topic churn.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use herald_core::{
    Appended, CommitObserver, Delivery, Epoch, Event, EventDraft, EventId, EventStore, EventType, Grants, Hub,
    HubConfig, IdempotencyKey, MemoryStore, Publish, PublishError, Published, ReadLimit, Resume, Retention, RingLimits,
    Selection, StoreError, StoreRead, StoredTopic, Subscription, TopicName, TopicPattern, now_ms, sse,
};
use proptest::prelude::*;

fn topic(name: &str) -> TopicName {
    name.parse().unwrap()
}

fn select(items: &[&str]) -> Selection {
    Selection::new(items.iter().map(|s| s.parse::<TopicPattern>().unwrap()))
}

async fn hub_with(ring: RingLimits, retention: Retention) -> Hub {
    let config = HubConfig { ring, ..HubConfig::default() };
    Hub::start(Arc::new(MemoryStore::new(retention)), config).await.unwrap()
}

/// Parses frames with `eventsource-stream`, a WHATWG parser we did not write.
fn parse(frames: Vec<bytes::Bytes>) -> Vec<eventsource_stream::Event> {
    let chunks = futures::stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>));
    futures::executor::block_on(chunks.eventsource().map(|e| e.unwrap()).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn frames_parse_back_to_the_same_event(
        data in any::<String>(),
        kind in proptest::option::of("[^\r\n\0]{1,24}"),
        epoch in any::<u32>(),
        seq in any::<u64>(),
        retry in proptest::option::of(0u64..1_000_000),
    ) {
        let event_type = kind.as_deref().and_then(|k| EventType::new(k).ok());
        let id = EventId::new(herald_core::Epoch(epoch), seq).to_string();
        let frame = sse::event_frame(Some(&id), event_type.as_ref().map(EventType::as_str), &data, retry);
        let parsed = parse(vec![frame]);
        prop_assert_eq!(parsed.len(), 1);
        let expected_data = data.replace("\r\n", "\n").replace('\r', "\n");
        prop_assert_eq!(&parsed[0].data, &expected_data);
        prop_assert_eq!(&parsed[0].id, &id);
        prop_assert_eq!(parsed[0].event.as_str(), event_type.as_ref().map_or("message", EventType::as_str));
        prop_assert_eq!(parsed[0].retry, retry.map(Duration::from_millis));
    }

    #[test]
    fn unsafe_event_types_are_rejected(prefix in "[a-z]{0,5}", bad in "[\r\n\0]", suffix in "[a-z]{0,5}") {
        let name = format!("{prefix}{bad}{suffix}");
        prop_assert!(EventType::new(&name).is_err());
    }
}

#[test]
fn data_that_looks_like_fields_stays_data() {
    let frame = sse::event_frame(Some("1"), None, "\n\nevent: evil\nid: 666\r\ndata: x", None);
    let parsed = parse(vec![frame]);
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].data, "\n\nevent: evil\nid: 666\ndata: x");
    assert_eq!((parsed[0].event.as_str(), parsed[0].id.as_str()), ("message", "1"));
}

async fn next_within(sub: &mut Subscription, wait: Duration) -> Option<Delivery> {
    tokio::time::timeout(wait, sub.next()).await.ok().map(|d| d.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_publishers_four_topics_fifty_subscribers_exactly_once_in_order() {
    // Small rings so resuming and lagging readers also take the store path.
    let hub = hub_with(RingLimits { max_events: 64, max_bytes: 1 << 20 }, Retention::default()).await;
    let topics = ["t.0", "t.1", "t.2", "t.3"];
    let mut selections: Vec<(Selection, bool)> = Vec::new();
    for i in 0..50 {
        let selection = match i % 5 {
            0 | 1 => select(&[topics[i % 4]]),
            2 => select(&["t.*"]),
            3 => select(&["t.0", "t.2"]),
            _ => select(&["t.1", "t.3*"]),
        };
        selections.push((selection, i % 10 >= 7)); // 15 of them resume mid-stream
    }
    let live: Vec<_> = selections
        .iter()
        .filter(|(_, resumes)| !resumes)
        .map(|(s, _)| (s.clone(), Subscription::open(&hub, s.clone(), Resume::Live).unwrap(), 0))
        .collect();

    const PER_PUBLISHER: usize = 300;
    let mut publishers = Vec::new();
    for p in 0..8 {
        let hub = hub.clone();
        publishers.push(tokio::spawn(async move {
            let mut published = Vec::new();
            for n in 0..PER_PUBLISHER {
                let draft = EventDraft::new(topic(topics[(p + n) % 4]), format!("{p}/{n}"));
                published.push(hub.publish(draft).await.unwrap());
            }
            published
        }));
    }
    // Resumers join mid-stream with the id of an event already published.
    while hub.last_id().seq < 1000 {
        tokio::task::yield_now().await;
    }
    let resume_at = hub.last_id();
    let resumers: Vec<_> = selections
        .iter()
        .filter(|(_, resumes)| *resumes)
        .map(|(s, _)| {
            (s.clone(), Subscription::open(&hub, s.clone(), Resume::After(resume_at)).unwrap(), resume_at.seq)
        })
        .collect();

    let mut all: Vec<Published> = Vec::new();
    for publisher in publishers {
        all.extend(publisher.await.unwrap());
    }
    let last = hub.last_id().seq;
    assert_eq!(all.len(), 8 * PER_PUBLISHER);

    let mut readers = Vec::new();
    for (selection, mut sub, start) in live.into_iter().chain(resumers) {
        let expected: Vec<u64> = {
            let mut ids: Vec<u64> = all
                .iter()
                .filter(|p| p.id.seq > start && selection.matches(p.topic.as_str()))
                .map(|p| p.id.seq)
                .collect();
            ids.sort_unstable();
            ids
        };
        readers.push(tokio::spawn(async move {
            let mut got = Vec::new();
            while sub.cursor().seq < last {
                let delivery = next_within(&mut sub, Duration::from_secs(10)).await.expect("stalled");
                assert!(delivery.notices.is_empty(), "no history was lost, yet a gap was reported");
                got.extend(delivery.events.iter().map(|e| e.id.seq));
            }
            assert_eq!(got, expected, "{selection:?} from {start}");
        }));
    }
    for reader in readers {
        reader.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_slows_no_one_and_resumes_or_learns_of_the_gap() {
    let ring = RingLimits { max_events: 1024, max_bytes: 256 << 10 };
    // No hold past the count bound: the stalled reader (which a server's
    // stall guard would cut) must learn of the gap.
    let retention = Retention { max_events_per_topic: 20_000, hold_bytes: 0, ..Retention::default() };
    let hub = hub_with(ring, retention).await;
    let name = topic("busy");
    let mut stalled = Subscription::open(&hub, select(&["busy"]), Resume::Live).unwrap();
    let mut active = Subscription::open(&hub, select(&["busy"]), Resume::Live).unwrap();
    let reader = tokio::spawn(async move {
        let mut got = 0u64;
        let mut last = 0;
        while got < 100_000 {
            let delivery = next_within(&mut active, Duration::from_secs(10)).await.expect("active reader got nothing");
            assert!(delivery.notices.is_empty(), "the active reader was never behind");
            for event in delivery.events.iter() {
                assert!(event.id.seq > last);
                last = event.id.seq;
            }
            got += delivery.events.len() as u64;
        }
        got
    });

    let mut batch_times = Vec::new();
    for batch in 0..1000 {
        let drafts = (0..100).map(|n| EventDraft::new(name.clone(), format!("{batch}-{n}"))).collect();
        let started = Instant::now();
        hub.publish_batch(drafts).await.unwrap();
        batch_times.push(started.elapsed());
        let stats = hub.stats();
        assert!(stats.ring_events <= 1024 && stats.ring_bytes <= 256 << 10, "ring bound broken: {stats:?}");
    }
    assert_eq!(reader.await.unwrap(), 100_000);

    // Publish cost does not grow while the stalled reader falls behind:
    // compare the slowest tenth of the first and of the last hundred batches.
    let p90 = |times: &[Duration]| {
        let mut t = times.to_vec();
        t.sort();
        t[t.len() * 9 / 10]
    };
    let (early, late) = (p90(&batch_times[..100]), p90(&batch_times[900..]));
    assert!(late < early * 5 + Duration::from_millis(2), "publish slowed from {early:?} to {late:?}");

    // The stalled reader held no buffer; now it learns what was lost, then gets the rest.
    let mut gaps = 0;
    let mut got = Vec::new();
    while stalled.cursor().seq < hub.last_id().seq {
        let delivery = next_within(&mut stalled, Duration::from_secs(10)).await.expect("stalled reader got nothing");
        gaps += delivery.notices.len();
        for notice in &delivery.notices {
            assert!(String::from_utf8_lossy(notice).starts_with("event: herald.gap\n"));
        }
        got.extend(delivery.events.iter().map(|e| e.id.seq));
    }
    assert_eq!(gaps, 1);
    assert_eq!(got.len(), 20_000, "the store's retained tail");
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(*got.last().unwrap(), hub.last_id().seq);
}

#[tokio::test]
async fn a_hundred_thousand_short_lived_topics_leave_the_registry_empty() {
    let hub = hub_with(RingLimits::default(), Retention::default()).await;
    for i in 0..100_000 {
        let name = format!("churn.{i}");
        let sub = Subscription::open(&hub, select(&[&name]), Resume::Live).unwrap();
        if i % 10 == 0 {
            hub.publish(EventDraft::new(topic(&name), "x")).await.unwrap();
        }
        drop(sub);
    }
    // Topics that never held an event left at once; the rest linger as cache.
    assert_eq!(hub.topic_count(), 10_000);
    let later = now_ms() + HubConfig::default().idle_topic_ttl.as_millis() as u64;
    assert_eq!(hub.sweep_idle_topics(later), 10_000);
    assert_eq!(hub.topic_count(), 0);
    assert!(hub.all_topic_stats().is_empty());
    assert_eq!(hub.stats().subscriptions, 0);
}

#[tokio::test]
async fn patterns_match_topics_created_later_and_resume_through_the_store() {
    let hub = hub_with(RingLimits::default(), Retention::default()).await;
    let early = hub.publish(EventDraft::new(topic("orders.eu"), "1")).await.unwrap();
    let mut live = Subscription::open(&hub, select(&["orders.*"]), Resume::Live).unwrap();
    hub.publish(EventDraft::new(topic("orders.us"), "2")).await.unwrap();
    hub.publish(EventDraft::new(topic("other"), "x")).await.unwrap();
    let d = next_within(&mut live, Duration::from_secs(5)).await.unwrap();
    assert_eq!(d.events.iter().map(|e| e.topic.as_str()).collect::<Vec<_>>(), ["orders.us"]);

    // Drop every topic from the registry; a pattern resume must still find them.
    drop(live);
    hub.sweep_idle_topics(now_ms() + 3_600_000);
    assert_eq!(hub.topic_count(), 0);
    let mut resumed = Subscription::open(&hub, select(&["orders.*"]), Resume::After(early.id)).unwrap();
    let d = next_within(&mut resumed, Duration::from_secs(5)).await.unwrap();
    let data: Vec<_> = d.events.iter().map(|e| String::from_utf8_lossy(&e.frame).into_owned()).collect();
    assert_eq!(data.len(), 1);
    assert!(data[0].ends_with("data: 2\n\n"));
}

#[tokio::test]
async fn unknown_and_foreign_ids_get_a_gap_notice_then_everything_retained() {
    let hub = hub_with(RingLimits::default(), Retention::default()).await;
    for n in 0..3 {
        hub.publish(EventDraft::new(topic("a"), n.to_string())).await.unwrap();
    }
    let other_epoch = EventId::new(herald_core::Epoch(hub.epoch().0.wrapping_add(1)), 2);
    let ahead = EventId::new(hub.epoch(), 1_000);
    for resume in [Resume::Unknown, Resume::After(other_epoch), Resume::After(ahead)] {
        let mut sub = Subscription::open(&hub, select(&["a"]), resume.clone()).unwrap();
        let d = next_within(&mut sub, Duration::from_secs(5)).await.unwrap();
        assert_eq!(d.notices.len(), 1, "{resume:?}");
        let notice = parse(d.notices.clone());
        assert_eq!(notice[0].event, "herald.gap");
        assert!(notice[0].data.contains("unknown_last_event_id"));
        assert_eq!(d.events.len(), 3, "{resume:?}");
    }
}

fn keyed(grants: &Grants, key: &str, drafts: Vec<EventDraft>) -> Publish {
    Publish { key: Some(IdempotencyKey::new(grants, key.into(), &drafts)), drafts }
}

fn caller(subject: &str) -> Grants {
    Grants { subject: Some(subject.into()), publish: vec!["*".parse().unwrap()], ..Grants::default() }
}

#[tokio::test]
async fn idempotency_keys_return_the_first_ids_and_store_nothing() {
    let hub = hub_with(RingLimits::default(), Retention::default()).await;
    let alice = caller("alice");
    let batch = || vec![EventDraft::new(topic("a"), "x"), EventDraft::new(topic("b"), "y")];
    let first = hub.submit(keyed(&alice, "k1", batch())).await.unwrap();
    let again = hub.submit(keyed(&alice, "k1", batch())).await.unwrap();
    let ids = |p: &[Published]| p.iter().map(|p| (p.id, p.topic.clone())).collect::<Vec<_>>();
    assert_eq!(ids(&first), ids(&again));
    assert!(again.iter().all(|p| p.duplicate) && first.iter().all(|p| !p.duplicate));
    assert_eq!(hub.stats().published, 2);
    assert_eq!(hub.topic_stats("a").unwrap().buffered, 1);
}

#[tokio::test]
async fn a_key_belongs_to_its_caller_and_to_what_it_first_sent() {
    let hub = hub_with(RingLimits::default(), Retention::default()).await;
    let (a, b) = (caller("tenant-a"), caller("tenant-b"));
    let first = hub.submit(keyed(&a, "order-1", vec![EventDraft::new(topic("tenantA"), "pay")])).await.unwrap();
    // Another caller's same key is its own: a new event, nothing of A's.
    let other = hub.submit(keyed(&b, "order-1", vec![EventDraft::new(topic("tenantB"), "pay")])).await.unwrap();
    assert!(!other[0].duplicate);
    assert_ne!(other[0].id, first[0].id);
    assert_eq!(other[0].topic.as_str(), "tenantB");
    // The same caller reusing the key for another topic or body is refused.
    for reuse in [EventDraft::new(topic("tenantA2"), "pay"), EventDraft::new(topic("tenantA"), "refund")] {
        let refused = hub.submit(keyed(&a, "order-1", vec![reuse])).await;
        assert!(matches!(refused, Err(PublishError::KeyReused)), "{refused:?}");
    }
    // Within one commit too: the second use of a key sees the first.
    let (x, y, z) = tokio::join!(
        hub.submit(keyed(&a, "k2", vec![EventDraft::new(topic("t"), "1")])),
        hub.submit(keyed(&a, "k2", vec![EventDraft::new(topic("t"), "1")])),
        hub.submit(keyed(&a, "k2", vec![EventDraft::new(topic("t"), "2")])),
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x[0].id, y[0].id);
    assert!(matches!(z, Err(PublishError::KeyReused)));
    assert_eq!(hub.stats().published, 3);
}

/// Events whose topic found the registry full go to no ring; a pattern
/// subscriber must still receive them, from the store.
#[tokio::test]
async fn pattern_subscribers_get_events_of_topics_the_full_registry_had_no_room_for() {
    let config = HubConfig { max_topics: 3, ..HubConfig::default() };
    let hub = Hub::start(Arc::new(MemoryStore::new(Retention::default())), config).await.unwrap();
    let mut all = Subscription::open(&hub, select(&["*"]), Resume::Live).unwrap();
    let mut mixed = Subscription::open(&hub, select(&["t1", "t4*"]), Resume::Live).unwrap();
    for name in ["t1", "t2", "t3", "t4", "t5", "t1"] {
        hub.publish(EventDraft::new(topic(name), name)).await.unwrap();
    }
    assert_eq!(hub.topic_count(), 3);
    let mut seqs = Vec::new();
    while seqs.len() < 6 {
        let delivery = next_within(&mut all, Duration::from_secs(5)).await.expect("every event arrives");
        assert!(delivery.notices.is_empty(), "nothing was lost");
        seqs.extend(delivery.events.iter().map(|e| e.id.seq));
    }
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let mut seqs = Vec::new();
    while seqs.len() < 3 {
        let delivery = next_within(&mut mixed, Duration::from_secs(5)).await.expect("every event arrives");
        seqs.extend(delivery.events.iter().map(|e| e.id.seq));
    }
    assert_eq!(seqs, vec![1, 4, 6]);
    // And live again: an event published now arrives once.
    let later = hub.publish(EventDraft::new(topic("t9"), "late")).await.unwrap();
    let delivery = next_within(&mut all, Duration::from_secs(5)).await.unwrap();
    assert_eq!(delivery.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![later.id]);
}

/// One step hands a reader at most the configured bytes (and always at least
/// one event), from the rings and from the store alike.
#[tokio::test]
async fn delivery_steps_are_bounded_in_bytes() {
    let config = HubConfig {
        ring: RingLimits { max_events: 1024, max_bytes: 64 << 20 },
        max_delivery_bytes: 50_000,
        ..HubConfig::default()
    };
    let hub = Hub::start(Arc::new(MemoryStore::new(Retention::default())), config).await.unwrap();
    let ring_reader = Subscription::open(&hub, select(&["big", "big2"]), Resume::Live).unwrap();
    // Newlines encode to seven bytes each (`data: ` and a line break).
    let drafts: Vec<EventDraft> =
        (0..40).map(|n| EventDraft::new(topic(if n % 2 == 0 { "big" } else { "big2" }), "\n".repeat(4_000))).collect();
    hub.publish_batch(drafts).await.unwrap();
    let store_reader = Subscription::open(&hub, select(&["big", "big2"]), Resume::Unknown).unwrap();
    for mut reader in [ring_reader, store_reader] {
        let mut got = 0;
        while got < 40 {
            let delivery = next_within(&mut reader, Duration::from_secs(5)).await.unwrap();
            let bytes: usize = delivery.events.iter().map(Event::size).sum();
            assert!(delivery.events.len() == 1 || bytes <= 50_000, "{bytes} bytes in one step");
            assert!(!delivery.events.is_empty() || !delivery.notices.is_empty());
            got += delivery.events.len();
        }
        assert_eq!(got, 40);
    }
}

#[tokio::test]
async fn shutdown_commits_queued_publishes_then_refuses_new_ones() {
    let hub = hub_with(RingLimits::default(), Retention::default()).await;
    let pending: Vec<_> = (0..100)
        .map(|n| {
            let hub = hub.clone();
            tokio::spawn(async move { hub.publish(EventDraft::new(topic("a"), n.to_string())).await })
        })
        .collect();
    tokio::task::yield_now().await;
    hub.shutdown().await;
    let ok = futures::future::join_all(pending).await.into_iter().filter(|r| r.as_ref().unwrap().is_ok()).count();
    assert_eq!(hub.stats().published as usize, ok, "every acknowledged publish is stored");
    assert!(hub.publish(EventDraft::new(topic("a"), "late")).await.is_err());
}

#[test]
fn events_carry_their_frame() {
    let e = Event::new(EventId::new(herald_core::Epoch(1), 1), &EventDraft::new(topic("a"), "hi"), 0);
    assert_eq!(&e.frame[..], b"id: 00000001-0000000000000001\ndata: hi\n\n");
}

/// Wakes of large audiences run on a task of their own, concurrently with
/// the next commit. Such a wake must not take a reader for an event still
/// above the watermark: the reader would find nothing, sleep, and miss the
/// wake of that event's own commit (found by the fan-out benchmark as
/// streams stalling until their next heartbeat).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_of_a_large_audience_never_sleep_through_a_visible_event() {
    let hub = hub_with(RingLimits { max_events: 4096, max_bytes: 8 << 20 }, Retention::default()).await;
    let readers: Vec<_> = (0..300)
        .map(|_| {
            let mut sub = Subscription::open(&hub, select(&["crowd"]), Resume::Live).unwrap();
            tokio::spawn(async move {
                let mut got = 0;
                while got < 2000 {
                    let delivery =
                        next_within(&mut sub, Duration::from_secs(5)).await.expect("a reader slept through events");
                    got += delivery.events.len();
                }
                got
            })
        })
        .collect();
    let publishers: Vec<_> = (0..4)
        .map(|p| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for n in 0..500 {
                    hub.publish(EventDraft::new(topic("crowd"), format!("{p}-{n}"))).await.unwrap();
                }
            })
        })
        .collect();
    for publisher in publishers {
        publisher.await.unwrap();
    }
    for reader in readers {
        assert_eq!(reader.await.unwrap(), 2000);
    }
}

/// The memory store, counting the reads that reach it, and refusing
/// commits while `failing` is set.
#[derive(Debug, Default)]
struct CountingStore {
    inner: MemoryStore,
    reads: AtomicUsize,
    failing: AtomicBool,
}

#[async_trait::async_trait]
impl EventStore for CountingStore {
    fn epoch(&self) -> Epoch {
        self.inner.epoch()
    }
    async fn last_seq(&self) -> Result<u64, StoreError> {
        self.inner.last_seq().await
    }
    async fn append(&self, requests: &[Publish]) -> Result<Vec<Appended>, StoreError> {
        if self.failing.load(Ordering::Relaxed) {
            return Err(StoreError::unavailable("the disk is full"));
        }
        self.inner.append(requests).await
    }
    async fn read(
        &self,
        selection: &Selection,
        after: u64,
        upto: u64,
        limit: ReadLimit,
    ) -> Result<StoreRead, StoreError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        self.inner.read(selection, after, upto, limit).await
    }
    async fn topics(&self, after: Option<&TopicName>, limit: usize) -> Result<Vec<StoredTopic>, StoreError> {
        self.inner.topics(after, limit).await
    }
    async fn topic(&self, topic: &TopicName) -> Result<Option<StoredTopic>, StoreError> {
        self.inner.topic(topic).await
    }
    async fn find_mercure_id(&self, topic: &TopicName, id: &str) -> Result<Option<EventId>, StoreError> {
        self.inner.find_mercure_id(topic, id).await
    }
    async fn enforce_retention(&self, now_ms: u64, readers_at: Option<u64>) -> Result<u64, StoreError> {
        self.inner.enforce_retention(now_ms, readers_at).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_audience_behind_the_ring_catches_up_through_shared_reads() {
    let store = Arc::new(CountingStore::default());
    let config = HubConfig {
        ring: RingLimits { max_events: 16, max_bytes: 1 << 20 },
        max_delivery_events: 100,
        ..HubConfig::default()
    };
    let hub = Hub::start(Arc::clone(&store) as Arc<dyn EventStore>, config).await.unwrap();
    let readers: Vec<_> =
        (0..200).map(|_| Subscription::open(&hub, select(&["late"]), Resume::Live).unwrap()).collect();
    // Every reader is 1,000 events behind a 16-event ring before it reads.
    let drafts = (0..1000).map(|n| EventDraft::new(topic("late"), n.to_string())).collect();
    let published: Vec<u64> = hub.publish_batch(drafts).await.unwrap().iter().map(|p| p.id.seq).collect();
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|mut sub| {
            tokio::spawn(async move {
                let mut seqs = Vec::new();
                while seqs.len() < 1000 {
                    let delivery = next_within(&mut sub, Duration::from_secs(5)).await.expect("a reader stalled");
                    assert!(delivery.notices.is_empty(), "nothing was lost");
                    seqs.extend(delivery.events.iter().map(|e| e.id.seq));
                }
                seqs
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap(), published, "every event once, in order");
    }
    // Ten pages of 100 events, each read once for everyone: not once per reader.
    let reads = store.reads.load(Ordering::Relaxed);
    assert!(reads <= 20, "{reads} store reads for 200 readers catching up on 1,000 events");
    let stats = hub.stats();
    assert!(stats.catch_up_store as usize <= reads, "{stats:?}: catch-up loads are store reads");
    assert!(stats.catch_up_shared > stats.catch_up_store, "{stats:?}: most steps shared a page");
}

#[tokio::test]
async fn events_committed_elsewhere_reach_subscribers_through_apply() {
    let store = Arc::new(MemoryStore::new(Retention::default()));
    let hub = Hub::start(Arc::clone(&store) as Arc<dyn EventStore>, HubConfig::default()).await.unwrap();
    let mut exact = Subscription::open(&hub, select(&["feed"]), Resume::Live).unwrap();
    let mut pattern = Subscription::open(&hub, select(&["fe*"]), Resume::Live).unwrap();
    // Another node's commit: durable in the shared store, unknown to this hub's writer.
    let drafts = vec![EventDraft::new(topic("feed"), "a"), EventDraft::new(topic("feed"), "b")];
    let appended = store.append(&[Publish::new(drafts)]).await.unwrap();
    let [Appended::New(events)] = &appended[..] else { panic!("two new events expected: {appended:?}") };
    assert_eq!(hub.last_id().seq, 0, "nothing is visible before it is applied");
    assert!(next_within(&mut exact, Duration::from_millis(50)).await.is_none());

    hub.apply(events);
    assert_eq!(hub.last_id(), events[1].id);
    for sub in [&mut exact, &mut pattern] {
        let delivery = next_within(sub, Duration::from_secs(5)).await.expect("woken by apply");
        assert_eq!(&delivery.events.iter().cloned().collect::<Vec<_>>(), events);
    }
    // Announced again (a feed that repeats itself): nothing is delivered twice.
    hub.apply(events);
    assert_eq!(hub.topic_stats("feed").unwrap().buffered, 2);
    assert!(next_within(&mut exact, Duration::from_millis(50)).await.is_none());
    // The hub's own publishes follow on the same path.
    let next = hub.publish(EventDraft::new(topic("feed"), "c")).await.unwrap();
    assert!(next.id.seq > events[1].id.seq);
    let delivery = next_within(&mut exact, Duration::from_secs(5)).await.unwrap();
    assert_eq!(delivery.events.iter().map(|e| e.id).collect::<Vec<_>>(), vec![next.id]);
}

/// Commit sizes, as the writer reports them.
#[derive(Debug, Default)]
struct Commits(parking_lot::Mutex<Vec<usize>>);

impl CommitObserver for Commits {
    fn commit_ended(&self, events: usize, _elapsed: Duration) {
        self.0.lock().push(events);
    }
}

#[tokio::test]
async fn every_commit_is_reported_to_the_observer_and_failures_are_counted() {
    let store = Arc::new(CountingStore::default());
    let hub = Hub::start(Arc::clone(&store) as Arc<dyn EventStore>, HubConfig::default()).await.unwrap();
    let commits = Arc::new(Commits::default());
    hub.observe_commits(Arc::clone(&commits) as Arc<dyn CommitObserver>);
    let drafts = (0..3).map(|n| EventDraft::new(topic("c"), n.to_string())).collect();
    hub.publish_batch(drafts).await.unwrap();
    hub.publish(EventDraft::new(topic("c"), "one")).await.unwrap();
    assert_eq!(hub.stats().store_errors, 0);

    store.failing.store(true, Ordering::Relaxed);
    let refused = hub.publish(EventDraft::new(topic("c"), "refused")).await;
    assert!(matches!(refused, Err(PublishError::Store(_))), "{refused:?}");
    assert_eq!(*commits.0.lock(), vec![3, 1, 1], "failed commits are reported too");
    assert_eq!(hub.stats().store_errors, 1);
    assert!(!hub.store_healthy());
}

#[tokio::test]
async fn an_observer_receives_events_but_is_not_counted_and_keeps_its_topic() {
    let hub = hub_with(RingLimits::default(), Retention::default()).await;
    let mut watcher = Subscription::observe(&hub, select(&["watched"]), Resume::Live).unwrap();
    let stats = hub.topic_stats("watched").expect("the observed topic is in the registry");
    assert_eq!(stats.subscribers, 0);
    assert_eq!(hub.stats().subscriptions, 0);
    let subscriber = Subscription::open(&hub, select(&["watched"]), Resume::Live).unwrap();
    assert_eq!(hub.topic_stats("watched").unwrap().subscribers, 1);
    assert_eq!(hub.stats().subscriptions, 1);
    drop(subscriber);

    // Idle for long: an observed topic stays, so the observer sees what comes next.
    assert_eq!(hub.sweep_idle_topics(now_ms() + 3_600_000), 0);
    hub.publish(EventDraft::new(topic("watched"), "seen")).await.unwrap();
    let d = next_within(&mut watcher, Duration::from_secs(5)).await.unwrap();
    assert_eq!(d.events.len(), 1);
    assert_eq!(hub.topic_stats("watched").unwrap().subscribers, 0);
    drop(watcher);
    assert_eq!(hub.sweep_idle_topics(now_ms() + 3_600_000), 1);
    assert_eq!(hub.stats().subscriptions, 0);
}

// ---- a feed's repairs: skip_to and switch_history ----------------------
//
// A store with a feed (Redis) brings commits to the hub through `apply`,
// `skip_to` when the feed lost some, and `switch_history` when the store's
// history changed. These drive a hub on a `MemoryStore` the same way.

/// Deliveries of `sub` until `n` events came (each wait bounded), then
/// nothing more: its notices and events.
async fn take_events(sub: &mut Subscription, n: usize) -> (Vec<bytes::Bytes>, Vec<Event>) {
    let (mut notices, mut events) = (Vec::new(), Vec::new());
    while events.len() < n {
        let delivery = next_within(sub, Duration::from_secs(5)).await.expect("the events to come");
        notices.extend(delivery.notices);
        events.extend(delivery.events.iter().cloned());
    }
    assert!(next_within(sub, Duration::from_millis(100)).await.is_none(), "nothing more");
    (notices, events)
}

/// Appends one request per draft to `store` (as another node would); the events.
async fn commit_elsewhere(store: &MemoryStore, topics: &[&str]) -> Vec<Event> {
    let requests: Vec<Publish> =
        topics.iter().map(|t| Publish::new(vec![EventDraft::new(topic(t), format!("to {t}"))])).collect();
    let appended = store.append(&requests).await.unwrap();
    appended
        .into_iter()
        .flat_map(|a| match a {
            Appended::New(events) => events,
            other => panic!("{other:?}"),
        })
        .collect()
}

fn of(events: &[Event], keep: impl Fn(&Event) -> bool) -> Vec<Event> {
    events.iter().filter(|e| keep(e)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_skip_to_every_subscriber_gets_every_event_once_in_order_from_the_store() {
    let store = Arc::new(MemoryStore::new(Retention::default()));
    let hub = Hub::start(Arc::clone(&store) as Arc<dyn EventStore>, HubConfig::default()).await.unwrap();
    let mut exact_live = Subscription::open(&hub, select(&["a"]), Resume::Live).unwrap();
    let mut pattern_live = Subscription::open(&hub, select(&["a*"]), Resume::Live).unwrap();
    let cycle = ["a", "b", "a.x"];
    let committed = commit_elsewhere(&store, &(0..10).map(|i| cycle[i % 3]).collect::<Vec<_>>()).await;
    // The feed brought the first three, then lost the rest.
    hub.apply(&committed[..3]);
    let (_, first) = take_events(&mut exact_live, 1).await;
    assert_eq!(first, committed[..1]);
    let mut exact_resumed = Subscription::open(&hub, select(&["b"]), Resume::After(committed[1].id)).unwrap();
    let mut pattern_resumed = Subscription::open(&hub, select(&["a.*"]), Resume::After(committed[2].id)).unwrap();

    hub.skip_to(10);
    assert_eq!(hub.last_id(), committed[9].id);
    // A late repeat of what was skipped, and a skip below the watermark: no effect.
    hub.apply(&committed[3..]);
    hub.skip_to(5);
    assert_eq!(hub.last_id(), committed[9].id);
    let mut late_live = Subscription::open(&hub, select(&["a", "b"]), Resume::Live).unwrap();
    // Then the feed goes on: these are served by the rings.
    let next = commit_elsewhere(&store, &["b", "a.x", "a"]).await;
    hub.apply(&next);
    let all: Vec<Event> = committed.iter().chain(&next).cloned().collect();

    let expectations = [
        (&mut exact_live, of(&all, |e| e.topic.as_str() == "a" && e.id.seq > 1)),
        (&mut pattern_live, of(&all, |e| e.topic.as_str().starts_with('a'))),
        (&mut exact_resumed, of(&all, |e| e.topic.as_str() == "b" && e.id.seq > 2)),
        (&mut pattern_resumed, of(&all, |e| e.topic.as_str() == "a.x" && e.id.seq > 3)),
        (&mut late_live, of(&all, |e| e.topic.as_str() != "a.x" && e.id.seq > 10)),
    ];
    for (sub, expected) in expectations {
        let (notices, events) = take_events(sub, expected.len()).await;
        assert!(notices.is_empty(), "nothing was lost: {notices:?}");
        assert_eq!(events, expected, "every event once, in order");
        assert_eq!(sub.cursor(), all[12].id);
    }
    assert!(hub.stats().replays_store > 0 || hub.stats().catch_up_store > 0, "the skipped events came from the store");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_switch_history_subscribers_get_history_lost_then_the_new_history() {
    let store = Arc::new(MemoryStore::new(Retention::default()));
    let hub = Hub::start(Arc::clone(&store) as Arc<dyn EventStore>, HubConfig::default()).await.unwrap();
    let old_epoch = hub.epoch();
    let mut exact = Subscription::open(&hub, select(&["a"]), Resume::Live).unwrap();
    let mut pattern = Subscription::open(&hub, select(&["a*"]), Resume::Live).unwrap();
    let mut idle = Subscription::open(&hub, select(&["b"]), Resume::Live).unwrap();
    let old = commit_elsewhere(&store, &["a", "b", "a.x", "a"]).await;
    hub.apply(&old);
    assert_eq!(take_events(&mut exact, 2).await.1, of(&old, |e| e.topic.as_str() == "a"));
    assert_eq!(take_events(&mut pattern, 3).await.1, of(&old, |e| e.topic.as_str() != "b"));
    // `idle` has not read its event when the history goes.

    let new_epoch = Epoch(old_epoch.0.wrapping_add(1));
    hub.switch_history(new_epoch, 0);
    assert_eq!(hub.last_id(), EventId::new(new_epoch, 0));
    // The same epoch again: nothing changes.
    hub.switch_history(new_epoch, 99);
    assert_eq!(hub.last_id(), EventId::new(new_epoch, 0));
    // The pattern subscriber learns of the loss before the new history has events.
    let alone = next_within(&mut pattern, Duration::from_secs(5)).await.expect("the notice");
    assert!(alone.events.is_empty(), "{alone:?}");
    let notice_alone = alone.notices;
    // Events of the new history, as the feed brings them (rings serve them).
    let now = now_ms();
    let new: Vec<Event> = ["a", "a.x", "b"]
        .iter()
        .zip(1..)
        .map(|(t, seq)| Event::new(EventId::new(new_epoch, seq), &EventDraft::new(topic(t), format!("new {t}")), now))
        .collect();
    hub.apply(&new);
    let (exact_notices, exact_events) = take_events(&mut exact, 1).await;
    let (pattern_notices, pattern_events) = take_events(&mut pattern, 2).await;
    let (idle_notices, idle_events) = take_events(&mut idle, 1).await;
    assert!(pattern_notices.is_empty(), "one notice each: {pattern_notices:?}");
    assert_eq!(exact_events, of(&new, |e| e.topic.as_str() == "a"));
    assert_eq!(pattern_events, of(&new, |e| e.topic.as_str() != "b"));
    assert_eq!(idle_events, of(&new, |e| e.topic.as_str() == "b"), "the old history's unread event is gone");
    let cases = [(exact_notices, "a", 4), (notice_alone, "a*", 4), (idle_notices, "b", 0)];
    for (notices, selected, cursor) in cases {
        let parsed = parse(notices);
        assert_eq!(parsed.len(), 1, "{selected}: one notice");
        assert_eq!(parsed[0].event, "herald.gap");
        let data: serde_json::Value = serde_json::from_str(&parsed[0].data).unwrap();
        assert_eq!(data["reason"], "history_lost", "{data}");
        assert_eq!(data["epoch_before"], old_epoch.to_string(), "{data}");
        assert_eq!(data["after"], EventId::new(old_epoch, cursor).to_string(), "{selected}: {data}");
        assert_eq!(data["topics"], serde_json::json!([selected]), "{data}");
    }
    assert_eq!(exact.cursor(), EventId::new(new_epoch, 3));
    // An id of the old history is unknown to the new one: a notice, then everything.
    let mut resumed = Subscription::open(&hub, select(&["a", "b"]), Resume::After(old[3].id)).unwrap();
    let (notices, events) = take_events(&mut resumed, 2).await;
    let parsed = parse(notices);
    assert_eq!(parsed.len(), 1);
    assert!(parsed[0].data.contains("unknown_last_event_id"), "{:?}", parsed[0].data);
    assert_eq!(events, of(&new, |e| e.topic.as_str() != "a.x"));
}
