//! Publish cost with 10 and with 10,000 subscribers on the topic.
//!
//! - `publish_cost`: the publisher's own cost. Subscribers are real tasks
//!   waiting on the topic; during the timed publishes they take at most one
//!   delivery and then wait at a gate, so the figure holds what the publish
//!   path does (commit, ring push, waking), not the subscribers' work. After
//!   each sample the gate opens and they drain, untimed.
//! - `publish_with_fanout`: subscribers drain while the publisher publishes
//!   one event at a time, on this machine's cores: the publisher's latency
//!   then includes waiting for CPU behind the fan-out itself.
//!
//! Run: `cargo bench -p herald-core --bench publish`

#![allow(missing_docs)] // criterion_group! generates an undocumented fn

use std::{sync::Arc, time::Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use herald_core::{EventDraft, Hub, HubConfig, MemoryStore, Resume, Retention, RingLimits, Selection, Subscription};
use tokio::{runtime::Runtime, sync::RwLock};

const AUDIENCES: [usize; 2] = [10, 10_000];

struct Setup {
    hub: Hub,
    gate: Arc<RwLock<()>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

fn setup(runtime: &Runtime, subscribers: usize) -> Setup {
    let hub = runtime.block_on(async {
        let retention = Retention { max_events_per_topic: 1024, ..Retention::default() };
        let config = HubConfig { ring: RingLimits { max_events: 1024, max_bytes: 1 << 20 }, ..HubConfig::default() };
        Hub::start(Arc::new(MemoryStore::new(retention)), config).await.unwrap()
    });
    let gate = Arc::new(RwLock::new(()));
    let selection = Selection::new(["bench".parse().unwrap()]);
    let readers = (0..subscribers)
        .map(|_| {
            let mut sub = Subscription::open(&hub, selection.clone(), Resume::Live).unwrap();
            let gate = Arc::clone(&gate);
            runtime.spawn(async move {
                while let Ok(delivery) = sub.next().await {
                    std::hint::black_box(delivery.events.len());
                    drop(gate.read().await);
                }
            })
        })
        .collect();
    Setup { hub, gate, readers }
}

fn bench(c: &mut Criterion, name: &str, gated: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    let topic: herald_core::TopicName = "bench".parse().unwrap();
    let payload = "x".repeat(100);
    for subscribers in AUDIENCES {
        let Setup { hub, gate, readers } = setup(&runtime, subscribers);
        group.bench_with_input(BenchmarkId::from_parameter(subscribers), &subscribers, |b, _| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let closed = if gated { Some(gate.write().await) } else { None };
                    let started = Instant::now();
                    for _ in 0..iters {
                        hub.publish(EventDraft::new(topic.clone(), payload.as_str())).await.unwrap();
                    }
                    let elapsed = started.elapsed();
                    drop(closed);
                    elapsed
                })
            });
        });
        readers.iter().for_each(tokio::task::JoinHandle::abort);
    }
    group.finish();
}

fn publish_cost(c: &mut Criterion) {
    bench(c, "publish_cost", true);
}

fn publish_with_fanout(c: &mut Criterion) {
    bench(c, "publish_with_fanout", false);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = publish_cost, publish_with_fanout
}
criterion_main!(benches);
