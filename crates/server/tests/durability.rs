//! Durability of the SQLite store, with the real `herald` binary as a
//! subprocess: restarts, `kill -9` in the middle of concurrent publishing,
//! idempotency across restarts, start-up errors, and I/O errors at run time.

mod common;

use std::{
    collections::HashMap,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{Herald, token};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;

async fn publish(
    client: &reqwest::Client,
    herald: &Herald,
    topic: &str,
    data: &str,
    key: Option<&str>,
) -> reqwest::Result<reqwest::Response> {
    let mut request = client
        .post(herald.url(&format!("/topics/{topic}/events")))
        .bearer_auth(token())
        .header("content-type", "text/plain")
        .body(data.to_owned());
    if let Some(key) = key {
        request = request.header("idempotency-key", key);
    }
    request.send().await
}

async fn publish_ok(client: &reqwest::Client, herald: &Herald, topic: &str, data: &str) -> String {
    let response = publish(client, herald, topic, data, None).await.unwrap();
    assert_eq!(response.status(), 201);
    response.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// Reads `(id, data)` pairs from a stream until `until` returns true.
async fn read_events(
    client: &reqwest::Client,
    url: String,
    last_id: &str,
    until: impl Fn(&str, &str) -> bool,
) -> Vec<(String, String)> {
    let response = client.get(url).bearer_auth(token()).header("last-event-id", last_id).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream().eventsource();
    let mut got = Vec::new();
    let read = async {
        while let Some(event) = stream.next().await {
            let event = event.unwrap();
            if event.event != "message" {
                continue;
            }
            let done = until(&event.id, &event.data);
            got.push((event.id, event.data));
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read).await.expect("stream ended early or stalled");
    got
}

fn epoch_of(id: &str) -> &str {
    id.split('-').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_by_last_event_id_and_never_reuses_ids() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let herald = Herald::start(dir.path(), &[]);
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(publish_ok(&client, &herald, "restart", &format!("event {n}")).await);
    }
    assert!(herald.stop().success());

    let herald = Herald::start(dir.path(), &[]);
    let last = ids.last().unwrap().clone();
    let got = read_events(&client, herald.url("/topics/restart/events"), &ids[9], |id, _| id == last).await;
    let expected: Vec<(String, String)> = (10..20).map(|n| (ids[n].clone(), format!("event {n}"))).collect();
    assert_eq!(got, expected);
    let next = publish_ok(&client, &herald, "restart", "after").await;
    assert_eq!(epoch_of(&next), epoch_of(&last), "the epoch survives a restart");
    assert!(next > last, "{next} must sort after {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_publishing_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::builder().pool_max_idle_per_host(32).build().unwrap();
    let mut acknowledged: HashMap<String, String> = HashMap::new();
    // A different kill moment each round, from the clock.
    let seed = Instant::now().elapsed().subsec_nanos() as u64 ^ std::process::id() as u64;
    for round in 0..3u64 {
        let herald = Arc::new(Herald::start(dir.path(), &[]));
        let publishers: Vec<_> = (0..16)
            .map(|p| {
                let (client, herald) = (client.clone(), Arc::clone(&herald));
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    for n in 0.. {
                        let data = format!("r{round}-p{p}-n{n}");
                        match publish(&client, &herald, &format!("crash.{}", p % 4), &data, None).await {
                            Ok(response) if response.status() == 201 => {
                                let Ok(body) = response.json::<serde_json::Value>().await else { break };
                                acked.push((body["id"].as_str().unwrap().to_owned(), data));
                            }
                            _ => break,
                        }
                    }
                    acked
                })
            })
            .collect();
        let kill_after = Duration::from_millis(150 + (seed.wrapping_mul(round + 7) % 600));
        tokio::time::sleep(kill_after).await;
        let pid = herald.child.id().to_string();
        assert!(Command::new("kill").args(["-KILL", &pid]).status().unwrap().success());
        for publisher in publishers {
            for (id, data) in publisher.await.unwrap() {
                assert!(acknowledged.insert(id, data).is_none(), "an id was acknowledged twice");
            }
        }
        drop(herald);
        assert!(!acknowledged.is_empty(), "round {round} published nothing before the kill at {kill_after:?}");

        // Restart and replay everything: each acknowledged event, exactly once, intact.
        let herald = Herald::start(dir.path(), &[]);
        let sentinel = publish_ok(&client, &herald, "crash.end", "sentinel").await;
        let epoch = epoch_of(&sentinel).to_owned();
        let start = format!("{epoch}-0000000000000000");
        let got = read_events(&client, herald.url("/events?topic=crash.*"), &start, |id, _| id == sentinel).await;
        let mut seen = HashMap::new();
        let mut previous = String::new();
        for (id, data) in &got {
            assert!(*id > previous, "ids out of order: {id} after {previous}");
            previous.clone_from(id);
            assert!(seen.insert(id.clone(), data.clone()).is_none(), "{id} delivered twice");
        }
        for (id, data) in &acknowledged {
            assert_eq!(
                seen.get(id),
                Some(data),
                "acknowledged event {id} lost or changed after kill -9 (round {round})"
            );
        }
        assert!(herald.stop().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let herald = Herald::start(dir.path(), &[]);
    let first = publish(&client, &herald, "orders", "once", Some("order-42")).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    assert!(herald.stop().success());

    let herald = Herald::start(dir.path(), &[]);
    let again = publish(&client, &herald, "orders", "once", Some("order-42")).await.unwrap();
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    let other = publish_ok(&client, &herald, "orders", "next").await;
    // Only one "once" is stored: replay from the start shows it once, then "next".
    let start = format!("{}-0000000000000000", epoch_of(&other));
    let got = read_events(&client, herald.url("/topics/orders/events"), &start, |id, _| id == other).await;
    assert_eq!(got.iter().map(|(_, d)| d.as_str()).collect::<Vec<_>>(), ["once", "next"]);
}

fn start_fails(dir: &Path) -> String {
    let output = Herald::command(dir, &[]).output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "herald should exit 1; stdout: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn an_unusable_data_dir_or_database_stops_start_up_with_a_clear_message() {
    // A data dir that cannot be created: its parent is a file.
    let scratch = tempfile::tempdir().unwrap();
    let file = scratch.path().join("plain-file");
    std::fs::write(&file, "x").unwrap();
    let stderr = start_fails(&file.join("data"));
    assert!(stderr.contains("cannot create the data dir"), "{stderr}");

    // A read-only data dir (as root, run the server as `nobody`, whom the mode binds).
    let readonly = scratch.path().join("readonly");
    std::fs::create_dir(&readonly).unwrap();
    // `nobody` must be able to reach the directory, and not write in it.
    std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&readonly, std::os::unix::fs::PermissionsExt::from_mode(0o555)).unwrap();
    let mut command = Herald::command(&readonly, &[]);
    if std::fs::write(readonly.join("probe"), "x").is_ok() {
        std::fs::remove_file(readonly.join("probe")).unwrap();
        // A copy of the binary `nobody` can reach wherever the checkout is
        // (a private temporary folder, say).
        let binary = scratch.path().join("herald");
        std::fs::copy(env!("CARGO_BIN_EXE_herald"), &binary).unwrap();
        std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        command = Herald::command_of(&binary, &readonly, &[]);
        std::os::unix::process::CommandExt::uid(&mut command, 65534);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("is not writable"), "{stderr}");

    // A corrupt database.
    let corrupt = scratch.path().join("corrupt");
    std::fs::create_dir(&corrupt).unwrap();
    std::fs::write(corrupt.join("herald.db"), vec![0x5a; 8192]).unwrap();
    let stderr = start_fails(&corrupt);
    assert!(stderr.contains("corrupt") || stderr.contains("not a database"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_from_a_newer_herald_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &[]);
    assert!(herald.stop().success());
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("herald.db"));
    let mut conn = sqlx::ConnectOptions::connect(&options).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES (9999, 'future', 1, x'00', 0)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    drop(conn);
    let stderr = start_fails(dir.path());
    assert!(stderr.contains("newer than this Herald"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_error_answers_503_turns_unready_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let herald = Herald::start(dir.path(), &["--max-event-bytes", "1000000", "--max-body-bytes", "2000000"]);
    let before = publish_ok(&client, &herald, "io", "before").await;
    let pid = herald.child.id().to_string();
    // Writes may not grow any file now: the WAL cannot take a large event.
    assert!(Command::new("prlimit").args(["--pid", &pid, "--fsize=4096:unlimited"]).status().unwrap().success());
    let big = "x".repeat(900_000);
    let failed = publish(&client, &herald, "io", &big, None).await.unwrap();
    assert_eq!(failed.status(), 503);
    let body: serde_json::Value = failed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "store_unavailable");
    let ready = client.get(herald.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);

    assert!(Command::new("prlimit").args(["--pid", &pid, "--fsize=unlimited:unlimited"]).status().unwrap().success());
    let after = publish_ok(&client, &herald, "io", &big).await;
    assert!(after > before);
    assert_eq!(client.get(herald.url("/readyz")).send().await.unwrap().status(), 200);
    // Nothing acknowledged was lost, and the failed publish left no trace.
    let start = format!("{}-0000000000000000", epoch_of(&after));
    let got = read_events(&client, herald.url("/topics/io/events"), &start, |id, _| id == after).await;
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].1.as_str(), got[1].1.len()), ("before", big.len()));
}

/// A SQLite store in `dir`, in process, fsyncing every commit.
async fn sqlite_store(dir: &Path, retention: herald_core::Retention) -> herald_server::store::SqliteStore {
    herald_server::store::SqliteStore::open(dir, retention, herald_server::store::Synchronous::Full).await.unwrap()
}

/// A hub on a SQLite store in `dir`, in process.
async fn sqlite_hub(
    dir: &Path,
    retention: herald_core::Retention,
) -> (herald_core::Hub, Arc<herald_server::store::SqliteStore>) {
    let store = Arc::new(sqlite_store(dir, retention).await);
    let config = herald_core::HubConfig {
        ring: herald_core::RingLimits { max_events: 4, max_bytes: 1 << 20 },
        ..herald_core::HubConfig::default()
    };
    let hub = herald_core::Hub::start(Arc::clone(&store) as Arc<dyn herald_core::EventStore>, config).await.unwrap();
    (hub, store)
}

async fn replay_all(hub: &herald_core::Hub, topic: &str) -> (Vec<String>, Vec<String>) {
    let selection = herald_core::Selection::new([topic.parse().unwrap()]);
    let start = herald_core::EventId::new(hub.epoch(), 0);
    let mut sub = herald_core::Subscription::open(hub, selection, herald_core::Resume::After(start)).unwrap();
    let (mut notices, mut data) = (Vec::new(), Vec::new());
    while sub.cursor().seq < hub.last_id().seq {
        let delivery = tokio::time::timeout(Duration::from_secs(5), sub.next()).await.unwrap().unwrap();
        notices.extend(delivery.notices.iter().map(|n| String::from_utf8_lossy(n).into_owned()));
        data.extend(delivery.events.iter().map(|e| {
            let frame = String::from_utf8_lossy(&e.frame).into_owned();
            frame.lines().find_map(|l| l.strip_prefix("data: ")).unwrap_or_default().to_owned()
        }));
    }
    (notices, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_by_count_and_by_age_trims_history_and_reports_the_gap() {
    let dir = tempfile::tempdir().unwrap();
    let retention = herald_core::Retention {
        max_events_per_topic: 5,
        max_age: Some(Duration::from_secs(3600)),
        idempotency_ttl: Duration::from_secs(60),
        ..Default::default()
    };
    let (hub, store) = sqlite_hub(dir.path(), retention).await;
    let drafts = |topic: &str, n: usize| -> Vec<herald_core::EventDraft> {
        (0..n).map(|i| herald_core::EventDraft::new(topic.parse().unwrap(), format!("{topic}-{i}"))).collect()
    };
    hub.publish_batch(drafts("kept", 20)).await.unwrap();
    hub.publish_batch(drafts("other", 3)).await.unwrap();
    let removed = hub.enforce_retention(herald_core::now_ms()).await.unwrap();
    assert_eq!(removed, 15, "20 - 5 events of `kept`; `other` is under the bound");
    let (notices, data) = replay_all(&hub, "kept").await;
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert!(notices[0].starts_with("event: herald.gap\n") && notices[0].contains("\"topic\":\"kept\""));
    assert_eq!(data, (15..20).map(|i| format!("kept-{i}")).collect::<Vec<_>>());
    let (notices, data) = replay_all(&hub, "other").await;
    assert!(notices.is_empty());
    assert_eq!(data.len(), 3);

    // An hour and a bit later, everything has aged out; ids still go on.
    let later = herald_core::now_ms() + 3_700_000;
    assert_eq!(hub.enforce_retention(later).await.unwrap(), 8);
    let (notices, data) = replay_all(&hub, "other").await;
    assert_eq!((notices.len(), data.len()), (1, 0));
    let next = hub.publish(drafts("other", 1).remove(0)).await.unwrap();
    assert_eq!(next.id.seq, 24, "sequence numbers are never reused after retention");
    hub.shutdown().await;
    store.close().await;
    let (hub, _store) = sqlite_hub(dir.path(), retention).await;
    assert_eq!(hub.last_id().seq, 24);
}

/// A request of `drafts` with `key` in `scope`.
fn keyed(scope: &str, key: &str, drafts: Vec<herald_core::EventDraft>) -> herald_core::Publish {
    let grants = herald_core::Grants { subject: Some(scope.into()), ..herald_core::Grants::default() };
    herald_core::Publish { key: Some(herald_core::IdempotencyKey::new(&grants, key.into(), &drafts)), drafts }
}

fn draft(topic: &str, data: &str) -> herald_core::EventDraft {
    herald_core::EventDraft::new(topic.parse().unwrap(), data)
}

/// Every event, and at most this many.
const ALL: herald_core::ReadLimit = herald_core::ReadLimit { events: 100_000, bytes: usize::MAX };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_commit_maps_repeated_keys_to_their_first_request_and_stores_every_row() {
    use herald_core::{Appended, EventStore as _, Publish};
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path(), herald_core::Retention::default()).await;
    let first = store.append(&[keyed("alice", "k0", vec![draft("a", "stored earlier")])]).await.unwrap();
    let Appended::New(stored) = &first[0] else { panic!("{first:?}") };
    let stored = stored[0].id;

    // 3,000 requests over three topics, with keys repeated inside the commit
    // (the same request again, and another request under the same key), a
    // key from the earlier commit, another caller's same key, and a batch.
    let mut requests: Vec<Publish> =
        (0..3_000).map(|i| Publish::new(vec![draft(["a", "b", "c"][i % 3], &format!("e{i}"))])).collect();
    requests.insert(10, keyed("alice", "k1", vec![draft("b", "first k1")]));
    requests.insert(20, keyed("alice", "k1", vec![draft("b", "first k1")]));
    requests.insert(25, keyed("alice", "k1", vec![draft("c", "another k1")]));
    requests.insert(30, keyed("alice", "k0", vec![draft("a", "stored earlier")]));
    requests.insert(40, keyed("bob", "k1", vec![draft("b", "bob's k1")]));
    requests.insert(50, keyed("alice", "batch", vec![draft("a", "x"), draft("b", "y"), draft("c", "z")]));
    requests.insert(60, keyed("alice", "batch", vec![draft("a", "x"), draft("b", "y"), draft("c", "z")]));
    let appended = store.append(&requests).await.unwrap();
    assert_eq!(appended.len(), requests.len());
    let first_id = |a: &Appended| match a {
        Appended::New(events) => events[0].id,
        other => panic!("{other:?}"),
    };
    let k1 = first_id(&appended[10]);
    assert_eq!(appended[20], Appended::Replayed { first: k1 });
    assert_eq!(appended[25], Appended::KeyReused);
    assert_eq!(appended[30], Appended::Replayed { first: stored });
    assert_ne!(first_id(&appended[40]), k1, "another caller's key is its own");
    let batch = first_id(&appended[50]);
    assert_eq!(appended[60], Appended::Replayed { first: batch });
    let new: Vec<u64> = appended
        .iter()
        .filter_map(|a| if let Appended::New(e) = a { Some(e.iter().map(|e| e.id.seq)) } else { None })
        .flatten()
        .collect();
    assert_eq!(new, (stored.seq + 1..=stored.seq + 3_005).collect::<Vec<_>>(), "ids follow on, none skipped");
    assert_eq!(store.last_seq().await.unwrap(), stored.seq + 3_005);

    let all = herald_core::Selection::new(["a", "b", "c"].map(|t| t.parse().unwrap()));
    let read = store.read(&all, 0, u64::MAX, ALL).await.unwrap();
    assert_eq!(read.events.len(), 3_006);
    assert!(read.events.windows(2).all(|w| w[0].id.seq < w[1].id.seq));

    // The keys were stored with their requests: a later commit maps to them too.
    let later = store
        .append(&[
            keyed("alice", "k1", vec![draft("b", "first k1")]),
            keyed("alice", "batch", vec![draft("a", "x"), draft("b", "y"), draft("c", "z")]),
            keyed("alice", "batch", vec![draft("a", "x")]),
        ])
        .await
        .unwrap();
    assert_eq!(later, [Appended::Replayed { first: k1 }, Appended::Replayed { first: batch }, Appended::KeyReused]);
    store.close().await;

    // Per-topic counts (what retention by count reads) took every new event.
    let db = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
    let counts: Vec<(String, i64)> = db
        .prepare("SELECT name, events FROM topics ORDER BY name")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(counts, [("a".to_owned(), 1_002), ("b".to_owned(), 1_003), ("c".to_owned(), 1_001)]);
}

/// Keys stored before keys were scoped keep a retry of the same single
/// publish safe after the upgrade, and answer nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_stored_before_scoping_migrate_safely() {
    use herald_core::{Appended, EventStore as _};
    let dir = tempfile::tempdir().unwrap();
    // A database as the previous schema left it, with one key in it.
    let old = dir.path().join("old-migrations");
    std::fs::create_dir(&old).unwrap();
    let migrations = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    for file in ["0001_events.sql", "0002_idempotency_keys.sql"] {
        std::fs::copy(migrations.join(file), old.join(file)).unwrap();
    }
    let options =
        sqlx::sqlite::SqliteConnectOptions::new().filename(dir.path().join("herald.db")).create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
    let far = herald_core::now_ms() as i64 + 3_600_000;
    for statement in [
        "INSERT INTO meta (key, value) VALUES ('epoch', '77'), ('last_seq', '7')".to_owned(),
        "INSERT INTO events (seq, topic, data, time_ms) VALUES (7, 'orders', 'paid', 0)".to_owned(),
        "INSERT INTO topics (name, events) VALUES ('orders', 1)".to_owned(),
        format!("INSERT INTO idempotency_keys (key, seq, topic, expires_ms) VALUES ('order-42', 7, 'orders', {far})"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(statement)).execute(&pool).await.unwrap();
    }
    pool.close().await;

    let store = sqlite_store(dir.path(), herald_core::Retention::default()).await;
    let replay = store.append(&[keyed("alice", "order-42", vec![draft("orders", "paid")])]).await.unwrap();
    assert_eq!(replay[0], Appended::Replayed { first: herald_core::EventId::new(herald_core::Epoch(77), 7) });
    // Elsewhere, with another body, or as a batch, the old key is not this
    // request's: a new request, stored (never answered with the old event).
    let elsewhere = store
        .append(&[
            keyed("mallory", "order-42", vec![draft("tenantB", "mine")]),
            keyed("bob", "order-42", vec![draft("orders", "refund")]),
            keyed("carol", "order-42", vec![draft("orders", "a"), draft("orders", "b")]),
        ])
        .await
        .unwrap();
    assert!(elsewhere.iter().all(|a| matches!(a, Appended::New(_))), "{elsewhere:?}");
    assert_eq!(store.last_seq().await.unwrap(), 11);
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_stores_nothing_and_the_next_one_continues_the_ids() {
    use herald_core::{Appended, EventDraft, EventStore as _, Publish};
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_store(dir.path(), herald_core::Retention::default()).await;
    let draft = |data: &str| Publish::new(vec![EventDraft::new("t".parse().unwrap(), data)]);
    let first = store.append(&[draft("kept")]).await.unwrap();
    let Appended::New(kept) = &first[0] else { panic!("{first:?}") };
    let kept = &kept[0];

    // Another connection makes SQLite refuse one row: the whole commit fails.
    let side = rusqlite::Connection::open(dir.path().join("herald.db")).unwrap();
    side.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.data = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .unwrap();
    let failed = store.append(&[draft("lost"), draft("refused"), draft("lost too")]).await;
    assert!(failed.is_err(), "{failed:?}");
    assert_eq!(store.last_seq().await.unwrap(), kept.id.seq);

    side.execute_batch("DROP TRIGGER refuse").unwrap();
    let next = store.append(&[draft("after")]).await.unwrap();
    let Appended::New(after) = &next[0] else { panic!("{next:?}") };
    let after = &after[0];
    assert_eq!(after.id.seq, kept.id.seq + 1, "the failed commit used no id");
    let read = store.read(&herald_core::Selection::new(["t".parse().unwrap()]), 0, u64::MAX, ALL).await.unwrap();
    let data: Vec<String> = read
        .events
        .iter()
        .map(|e| String::from_utf8_lossy(&e.frame).lines().find_map(|l| l.strip_prefix("data: ")).unwrap().to_owned())
        .collect();
    assert_eq!(data, ["kept", "after"]);
    store.close().await;
}

/// Resident memory of process `pid`, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().trim().trim_end_matches(" kB");
    kb.trim().parse::<u64>().unwrap() * 1024
}

/// The outside review took the server from 31 MiB to gigabytes with a few
/// readers catching up on large events (newlines encode to seven bytes each)
/// that never read: every step of theirs was bounded by count only. Each
/// step is now bounded by --max-delivery-bytes, so readers that stall hold
/// at most about that much each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_of_large_events_hold_memory_within_the_delivery_bound() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    // 200 events of 64 KiB of newlines: about 90 MB of frames in all.
    let data = "\n".repeat(64 << 10);
    let mut ids = Vec::new();
    for n in 0..200 {
        ids.push(publish_ok(&client, &herald, ["big.a", "big.b"][n % 2], &data).await);
    }
    let pid = herald.child.id();
    let before = resident_bytes(pid);
    // Eight readers of both topics from an unknown position, which never read.
    let request = format!(
        "GET /events?topic=big.a&topic=big.b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nLast-Event-ID: nowhere\r\n\r\n",
        token()
    );
    let address = herald.base.trim_start_matches("http://").to_owned();
    let mut stalled = Vec::new();
    for _ in 0..8 {
        let mut socket = tokio::net::TcpStream::connect(&address).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        stalled.push(socket);
    }
    // Each fills its socket's buffers and then waits on the next write.
    let mut peak = before;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(resident_bytes(pid));
    }
    // Unbounded, each reader would hold every frame at once, and a copy:
    // over 700 MB for the eight. Bounded, each holds about a step (here one
    // 450 KB event, and its copy in the write), plus what SQLite's reads
    // buffer: about 25 MB for the eight on this machine.
    let grown = peak.saturating_sub(before);
    assert!(grown < 128 << 20, "8 stalled readers grew the server by {} MiB", grown >> 20);
    // The server still serves the same history to a reader that reads.
    let (before_last, last) = (ids[198].clone(), ids[199].clone());
    let got =
        read_events(&client, herald.url("/events?topic=big.a&topic=big.b"), &before_last, |id, _| id == last).await;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.as_str(), got[0].1.len()), (last.as_str(), data.len()));
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_keeps_failing_is_logged_a_few_times_and_counted_every_time() {
    const PUBLISHES: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let herald = Herald::start(dir.path(), &[]);
    publish_ok(&client, &herald, "full", "before").await;
    let pid = herald.child.id().to_string();
    let logged_before = herald.log.lock().unwrap().len();
    // No file may grow past 4 KiB: every commit of a 20 KB event fails, as on a full disk.
    assert!(Command::new("prlimit").args(["--pid", &pid, "--fsize=4096:unlimited"]).status().unwrap().success());
    let event = "x".repeat(20_000);
    for _ in 0..PUBLISHES {
        let response = publish(&client, &herald, "full", &event, None).await.unwrap();
        assert_eq!(response.status(), 503);
    }
    let lines: Vec<String> = herald.log.lock().unwrap()[logged_before..]
        .iter()
        .filter(|l| l.contains("ERROR") || l.contains("WARN"))
        .cloned()
        .collect();
    assert!(!lines.is_empty(), "the failure is logged");
    assert!(lines.len() <= 5, "{} lines for {PUBLISHES} failed publishes:\n{}", lines.len(), lines.join("\n"));
    let metrics = client.get(herald.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .unwrap_or_else(|| panic!("no {series} in:\n{metrics}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(value("herald_store_errors_total"), PUBLISHES as f64, "every failed commit counted");
    assert_eq!(value("herald_events_published_total{result=\"failed\"}"), PUBLISHES as f64);
    assert!(Command::new("prlimit").args(["--pid", &pid, "--fsize=unlimited:unlimited"]).status().unwrap().success());
    publish_ok(&client, &herald, "full", "after").await;
}

/// The SQLite store reports each topic's retained events and newest event,
/// one by its name or all in name order, and forgets topics retention emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reports_what_it_holds_of_each_topic() {
    let dir = tempfile::tempdir().unwrap();
    let retention = herald_core::Retention { max_age: Some(Duration::from_secs(60)), ..Default::default() };
    let (hub, _store) = sqlite_hub(dir.path(), retention).await;
    let mut last = None;
    for n in 0..3 {
        last = Some(hub.publish(draft("user@42", &n.to_string())).await.unwrap().id);
    }
    hub.publish(draft("a.1", "x")).await.unwrap();
    let user: herald_core::TopicName = "user@42".parse().unwrap();
    let one = hub.topic(&user).await.unwrap().expect("stored");
    assert_eq!((one.retained, one.last_id), (3, last));
    let names: Vec<String> =
        hub.topic_list(None, 10).await.unwrap().iter().map(|t| format!("{}:{}", t.name, t.retained)).collect();
    assert_eq!(names, ["a.1:1", "user@42:3"]);
    let after: Vec<String> =
        hub.topic_list(Some(&"a.1".parse().unwrap()), 10).await.unwrap().iter().map(|t| t.name.to_string()).collect();
    assert_eq!(after, ["user@42"]);
    assert!(hub.topic(&"nobody".parse().unwrap()).await.unwrap().is_none());
    // Once retention has removed every event, the registry alone knows them.
    hub.enforce_retention(herald_core::now_ms() + 3_600_000).await.unwrap();
    hub.sweep_idle_topics(herald_core::now_ms() + 3_600_000);
    assert!(hub.topic_list(None, 10).await.unwrap().is_empty());
    assert!(hub.topic(&user).await.unwrap().is_none());
}

/// The overload guarantee: a burst past `--retention-events` waits for the
/// connected subscribers that have not had it, within the hold's bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_waits_for_connected_readers_within_the_hold() {
    for (hold_bytes, lost) in [(1 << 20, false), (0, true)] {
        let dir = tempfile::tempdir().unwrap();
        let retention = herald_core::Retention { max_events_per_topic: 5, hold_bytes, ..Default::default() };
        let (hub, _store) = sqlite_hub(dir.path(), retention).await;
        // A subscriber is connected, and behind: it has been handed nothing yet.
        let selection = herald_core::Selection::new(["burst".parse().unwrap()]);
        let mut reader = herald_core::Subscription::open(&hub, selection, herald_core::Resume::Live).unwrap();
        let drafts: Vec<_> =
            (0..50).map(|i| herald_core::EventDraft::new("burst".parse().unwrap(), format!("e{i}"))).collect();
        hub.publish_batch(drafts).await.unwrap();
        let removed = hub.enforce_retention(herald_core::now_ms()).await.unwrap();
        assert_eq!(removed, if lost { 45 } else { 0 }, "hold {hold_bytes}");
        let (mut notices, mut delivered) = (Vec::new(), 0);
        while reader.cursor().seq < hub.last_id().seq {
            let delivery = tokio::time::timeout(Duration::from_secs(5), reader.next()).await.unwrap().unwrap();
            notices.extend(delivery.notices.iter().map(|n| String::from_utf8_lossy(n).into_owned()));
            delivered += delivery.events.len();
        }
        if lost {
            assert_eq!(delivered, 5, "past the hold, the bound wins");
            assert!(notices.iter().any(|n| n.contains("history_trimmed")), "{notices:?}");
        } else {
            assert_eq!((delivered, notices.len()), (50, 0), "every event of the burst, no gap");
            // Once the reader has had them, the bound applies again.
            assert_eq!(hub.enforce_retention(herald_core::now_ms()).await.unwrap(), 45);
        }
    }
}
