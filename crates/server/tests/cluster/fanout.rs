//! Events published on one node reach every node, with the same ids and
//! bytes, in order; a client resumes exactly on any node.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_published_on_one_node_reaches_subscribers_of_every_node_with_the_same_id() {
    let cluster = Cluster::start(3, Persistence::Always, &[]);
    let mut streams = Vec::new();
    for node in &cluster.nodes {
        streams.push(subscribe(node, "/topics/news/events", None).await);
    }
    let mut ids = Vec::new();
    for i in 0..20 {
        let (status, body) = publish(&cluster.nodes[i % 3], "news", &format!("line {i}\nsecond"), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().expect("an id").to_owned());
    }
    for stream in &mut streams {
        let events = take(stream, 20, WAIT).await;
        let got: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(got, ids, "every node delivers every event once, in id order");
        assert!(events.iter().enumerate().all(|(i, e)| e.data == format!("line {i}\nsecond")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_topic_and_pattern_streams_on_one_node_get_what_another_node_published() {
    let cluster = Cluster::start(2, Persistence::Always, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut multi = subscribe(b, "/events?topic=a&topic=b", None).await;
    let mut pattern = subscribe(b, "/events?topic=news.*", None).await;
    let (mut want_multi, mut want_pattern) = (Vec::new(), Vec::new());
    for i in 0..30 {
        let topic = ["a", "b", "c", "news.x", "news.y", "newsy"][i % 6];
        let (status, body) = publish(a, topic, &format!("{topic} {i}"), None).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        let id = body["id"].as_str().expect("an id").to_owned();
        match topic {
            "a" | "b" => want_multi.push(id),
            "news.x" | "news.y" => want_pattern.push(id),
            _ => {}
        }
    }
    assert_eq!(plain_ids(&take(&mut multi, want_multi.len(), WAIT).await), want_multi);
    assert_eq!(plain_ids(&take(&mut pattern, want_pattern.len(), WAIT).await), want_pattern);
    next_is_fresh(&mut multi, a, "b").await;
    next_is_fresh(&mut pattern, a, "news.z").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_resumes_on_another_node_exactly_where_it_left_off() {
    let cluster = Cluster::start(2, Persistence::Always, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = subscribe(a, "/topics/news/events", None).await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(try_publish(a, "news", &format!("{i}"), None).await.expect("publish").id());
    }
    let read = plain_ids(&take(&mut on_a, 4, WAIT).await);
    assert_eq!(read, ids[..4]);
    drop(on_a);
    let mut on_b = subscribe(b, "/topics/news/events", Some(&read[3])).await;
    assert_eq!(plain_ids(&take(&mut on_b, 6, WAIT).await), ids[4..]);
    next_is_fresh(&mut on_b, a, "news").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_a_node_whose_feed_lags_is_exact_not_an_unknown_id() {
    let cluster = Cluster::start(2, Persistence::Always, &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = subscribe(a, "/events?topic=burst.*", None).await;
    let items: Vec<(&str, String)> = (0..200).map(|i| (["burst.x", "burst.y"][i % 2], format!("{i}"))).collect();
    let ids = publish_batch(a, &items).await;
    // At once, with the last id A gave: B's feed may not have it yet.
    let mut from_last = subscribe(b, "/events?topic=burst.*", Some(&ids[199])).await;
    let read = plain_ids(&take(&mut on_a, 150, WAIT).await);
    assert_eq!(read, ids[..150]);
    drop(on_a);
    let mut from_middle = subscribe(b, "/events?topic=burst.*", Some(&read[149])).await;
    assert_eq!(plain_ids(&take(&mut from_middle, 50, WAIT).await), ids[150..]);
    next_is_fresh(&mut from_last, a, "burst.x").await;
    // The one event `from_last` just got follows the 50 here too.
    let (status, body) = publish(a, "burst.y", "last", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let tail = plain_ids(&take(&mut from_middle, 2, WAIT).await);
    assert_eq!(tail[1], body["id"].as_str().expect("an id"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_past_the_retained_history_starts_with_an_exact_gap_notice() {
    // Events of 1 KiB: Redis's `MAXLEN ~` trims whole stream nodes (at most
    // 4 KiB each by default), so a cap of 10 then trims close to 10.
    let cluster = Cluster::start(2, Persistence::Always, &["--retention-events", "10", "--ring-events", "4"]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = subscribe(a, "/topics/log/events", None).await;
    let first = try_publish(a, "log", "first", None).await.expect("publish").id();
    assert_eq!(plain_ids(&take(&mut on_a, 1, WAIT).await), [first.as_str()]);
    drop(on_a);
    let items: Vec<(&str, String)> = (0..100).map(|i| ("log", format!("{i:04}{}", "x".repeat(1020)))).collect();
    let mut ids = Vec::new();
    for chunk in items.chunks(10) {
        ids.extend(publish_batch(a, chunk).await);
    }
    let kept = usize::try_from(retained(b, "log").await).expect("a count");
    assert!((10..100).contains(&kept), "the stream is capped near 10 events, it keeps {kept}");
    let mut resumed = subscribe(b, "/topics/log/events", Some(&first)).await;
    let events = take(&mut resumed, 1 + kept, WAIT).await;
    let notice = gap(&events[0]);
    assert_eq!(notice["reason"], "history_trimmed", "{notice}");
    assert_eq!(notice["topic"], "log", "{notice}");
    assert_eq!(notice["after"], first.as_str(), "{notice}");
    // Exact: the last event not retained, so the next delivered is the first retained.
    assert_eq!(notice["through"], ids[99 - kept].as_str(), "{notice}");
    assert_eq!(plain_ids(&events[1..]), ids[100 - kept..]);
    assert!(events[1..].iter().zip(&items[100 - kept..]).all(|(e, (_, data))| e.data == *data));
    next_is_fresh(&mut resumed, a, "log").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_a_node_is_killed_its_clients_resume_and_retry_on_another_exactly_once() {
    let mut cluster = Cluster::start(2, Persistence::Always, &[]);
    let mut on_a = subscribe(&cluster.nodes[0], "/topics/orders/events", None).await;
    // A publish A answered, retried on B after A dies: the same event.
    let answered = try_publish(&cluster.nodes[0], "orders", "answered", Some("key-answered")).await.expect("publish");
    let answered_id = answered.id();
    // Publishes to A until it dies, each retried on B under its key.
    let publisher = {
        let a_url = cluster.nodes[0].base.clone();
        tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0.. {
                let key = format!("key-{i}");
                let request = common::client()
                    .post(format!("{a_url}/topics/orders/events"))
                    .bearer_auth(token())
                    .header("idempotency-key", &key)
                    .header("content-type", "text/plain")
                    .body(format!("order {i}"));
                let status = request.send().await.map(|r| r.status());
                sent.push(key);
                if !matches!(status, Ok(StatusCode::CREATED)) {
                    return sent;
                }
            }
            unreachable!()
        })
    };
    let before = take(&mut on_a, 11, WAIT).await;
    cluster.nodes[0].child.kill().expect("SIGKILL node A");
    let _ = cluster.nodes[0].child.wait();
    let sent = within(WAIT, "the publisher to notice A died", publisher).await.expect("publisher");
    let b = &cluster.nodes[1];
    let mut retried = Vec::new();
    for (i, key) in sent.iter().enumerate() {
        let answer = try_publish(b, "orders", &format!("order {i}"), Some(key)).await.expect("publish on B");
        retried.push(answer.id());
        assert!(answer.replayed || i + 1 == sent.len(), "{key} was answered 201 by A: B replays it");
    }
    let again = try_publish(b, "orders", "answered", Some("key-answered")).await.expect("publish on B");
    assert!(again.replayed, "the retry is a replay");
    assert_eq!(again.id(), answered_id, "the retry gets the id A gave");

    // The subscriber of A resumes on B: everything after what it read, no gap.
    let last = before.last().expect("events").id.clone();
    let mut on_b = subscribe(b, "/topics/orders/events", Some(&last)).await;
    let rest_len = 1 + sent.len() - before.len();
    let rest = plain_ids(&take(&mut on_b, rest_len, WAIT).await);
    let mut all = plain_ids(&before);
    all.extend(rest);
    let mut want = vec![answered_id.clone()];
    want.extend(retried);
    assert_eq!(all, want, "every key's event once, in order");
    next_is_fresh(&mut on_b, b, "orders").await;
    // And the store holds each exactly once.
    let mut from_start = subscribe(b, "/topics/orders/events", Some(&epoch_start(&answered_id))).await;
    let stored = plain_ids(&take(&mut from_start, want.len() + 1, WAIT).await);
    assert_eq!(stored[..want.len()], want);
    assert_eq!(retained(b, "orders").await, want.len() as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_topics_through_redis_over_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = common::certs::authority(dir.path(), "ca");
    let (cert, key) = common::certs::certificate(dir.path(), "ca", "redis");
    let [ca, cert, key] = [ca, cert, key].map(|path| path.display().to_string());
    let tls_port = common::redis::free_port().to_string();
    let tls = [
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
    ];
    let _redis = RedisServer::start_with(dir.path(), Persistence::None, &tls);
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let nodes: Vec<Herald> = (0..2)
        .map(|_| {
            let mut command = Herald::command(dir.path(), &["--store", &url, "--redis-prefix", "tls"]);
            // The CA the nodes trust, in place of the system's roots.
            command.env("SSL_CERT_FILE", &ca);
            Herald::launch(command)
        })
        .collect();
    let mut stream = subscribe(&nodes[1], "/topics/news/events", None).await;
    let (status, body) = publish(&nodes[0], "news", "over tls", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let events = take(&mut stream, 1, WAIT).await;
    assert_eq!((events[0].id.as_str(), events[0].data.as_str()), (body["id"].as_str().unwrap_or_default(), "over tls"));

    // A node that does not trust the certificate refuses to start, and says why.
    let output = Herald::command(dir.path(), &["--store", &url, "--redis-prefix", "tls"])
        .env("SSL_CERT_FILE", &cert)
        .env("HERALD_REDIS_TIMEOUT", "1s")
        .output()
        .expect("run herald");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot reach Redis at rediss://127.0.0.1"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_share_topics_through_redis_on_a_unix_socket() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("redis.sock").display().to_string();
    let _redis = RedisServer::start_with(dir.path(), Persistence::None, &["--unixsocket", &socket]);
    let url = format!("redis+unix://{socket}");
    let nodes: Vec<Herald> = (0..2).map(|_| node(dir.path(), &url, "unix", &[])).collect();
    let mut stream = subscribe(&nodes[1], "/topics/news/events", None).await;
    let (status, body) = publish(&nodes[0], "news", "over a socket", None).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let events = take(&mut stream, 1, WAIT).await;
    assert_eq!(plain_ids(&events), [body["id"].as_str().unwrap_or_default()]);
}

/// Mercure updates cross nodes with their metadata: the node that did not
/// publish one builds, from the feed and from Redis's streams, the very
/// frame (with the update's id line) that the publishing node built.
/// (Store level: the HTTP door for Mercure updates is not there yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mercure_update_reaches_another_node_with_the_same_frame_and_metadata() {
    use herald_core::{
        EventDraft, EventStore, Hub, HubConfig, MercureMeta, Resume, Retention, Selection, Subscription, TopicPattern,
    };
    use herald_server::store::RedisStore;

    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path(), Persistence::None);
    let prefix = format!("f{:08x}", rand_u32());
    let mut nodes = Vec::new();
    for _ in 0..2 {
        let settings = store_settings(redis.url(), prefix.clone(), Retention::default());
        let store = Arc::new(RedisStore::connect(settings).await.expect("connect to redis"));
        let hub = Hub::start(Arc::clone(&store) as Arc<dyn EventStore>, HubConfig::default()).await.expect("hub");
        store.start_feed(hub.clone()).expect("feed");
        nodes.push((store, hub));
    }
    let ((store_a, hub_a), (store_b, hub_b)) = (&nodes[0], &nodes[1]);
    let selection = || Selection::new(["door".parse::<TopicPattern>().expect("a topic")]);
    let mut on_b = Subscription::open(hub_b, selection(), Resume::Live).expect("subscribe on B");
    let update = |data: &str, id: Option<&str>| {
        let meta = MercureMeta::new(vec![format!("https://example.com/{data}")], true, id.map(Into::into));
        EventDraft { mercure: Some(Arc::new(meta)), ..EventDraft::new("door".parse().expect("a topic"), data) }
    };
    let published = hub_a
        .publish_batch(vec![
            update("custom", Some("urn:uuid:7")),
            EventDraft::new("door".parse().expect("a topic"), "plain"),
            update("hub's", None),
        ])
        .await
        .expect("publish on A");
    let mut delivered = Vec::new();
    within(WAIT, "B to deliver the updates", async {
        while delivered.len() < 3 {
            delivered.extend(on_b.next().await.expect("deliver").events.iter().cloned());
        }
    })
    .await;
    let ids: Vec<_> = published.iter().map(|p| p.id).collect();
    assert_eq!(delivered.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
    let frames: Vec<String> = delivered.iter().map(|e| String::from_utf8_lossy(&e.frame).into_owned()).collect();
    assert_eq!(
        frames,
        [
            "id: urn:uuid:7\ndata: custom\n\n".to_owned(),
            format!("id: {}\ndata: plain\n\n", ids[1]),
            format!("id: urn:herald:{}\ndata: hub's\n\n", ids[2]),
        ]
    );
    assert_eq!(delivered[0].mercure, update("custom", Some("urn:uuid:7")).mercure);
    assert_eq!(delivered[2].mercure, update("hub's", None).mercure);
    // What both nodes read back from Redis is what B's feed built.
    let last = ids[2].seq;
    let limit = herald_core::ReadLimit { events: 100, bytes: usize::MAX };
    for store in [store_a, store_b] {
        let read = store.read(&selection(), 0, last, limit).await.expect("read");
        assert_eq!(read.events, delivered);
    }
    assert_eq!(store_b.find_mercure_id(&"door".parse().expect("a topic"), "urn:uuid:7").await.unwrap(), Some(ids[0]));
    // And a subscriber that resumes on B from before them replays them alike.
    let mut replay = Subscription::open(hub_b, selection(), Resume::Earliest).expect("subscribe on B");
    let mut replayed = Vec::new();
    within(WAIT, "B to replay the updates", async {
        while replayed.len() < 3 {
            replayed.extend(replay.next().await.expect("deliver").events.iter().cloned());
        }
    })
    .await;
    assert_eq!(replayed, delivered);
}

/// Publishes a Mercure update of `fields` on `node`; its id.
async fn publish_update(node: &Herald, fields: &[(&str, &str)]) -> String {
    let token = common::sign_hs256(&serde_json::json!({ "mercure": { "publish": ["*"] } }), common::SECRET);
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        form.append_pair(key, value);
    }
    let request = common::client().post(node.url("/.well-known/mercure")).bearer_auth(token).body(form.finish());
    let response = within(WAIT, "a Mercure publish", request.send()).await.expect("publish");
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.expect("the update's id")
}

#[tokio::test]
async fn a_mercure_update_on_one_node_reaches_mercure_subscribers_on_another_and_resumes_there() {
    let cluster = Cluster::start(2, Persistence::Always, &["--mercure"]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let books = "/.well-known/mercure?topic=https%3A%2F%2Fexample.com%2Fbooks%2F%7Bid%7D";
    let mut on_b = subscribe(b, books, None).await;
    let private = [("topic", "https://example.com/books/1"), ("private", "on"), ("data", "secret")];
    publish_update(a, &private).await;
    let custom = [("topic", "https://example.com/books/1"), ("data", "one\ntwo"), ("id", "book-1-v2")];
    let first = publish_update(a, &custom).await;
    let second = publish_update(a, &[("topic", "https://example.com/books/2"), ("data", "three")]).await;
    let got = take(&mut on_b, 2, WAIT).await;
    assert_eq!(first, "book-1-v2");
    assert_eq!((got[0].id.as_str(), got[0].data.as_str()), (first.as_str(), "one\ntwo"), "not the private one");
    assert_eq!((got[1].id.as_str(), got[1].data.as_str()), (second.as_str(), "three"));

    // A client of node A resumes on node B from the publisher's id.
    let mut resumed = subscribe(b, books, Some(&first)).await;
    let got = take(&mut resumed, 1, WAIT).await;
    assert_eq!(got[0].id, second);
}
