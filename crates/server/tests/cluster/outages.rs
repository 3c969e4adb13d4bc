//! Redis restarts, loses its data, or is cut off from a node: nothing
//! acknowledged is lost without a `herald.gap` saying so.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_redis_without_a_shared_signing_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let redis = RedisServer::start(dir.path(), Persistence::None);
    let mut command = common::herald_command();
    command.args(["serve", "--listen", "127.0.0.1:0", "--store", &redis.url()]).current_dir(dir.path());
    let output = command.output().expect("run herald");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--jwt-secret or --jwt-public-key"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_starts_after_a_durable_redis_restarted_keeps_its_history() {
    let mut cluster = Cluster::start(1, Persistence::Always, &[]);
    let kept = try_publish(&cluster.nodes[0], "news", "kept", None).await.expect("publish").id();
    // No node runs while Redis restarts: the first handshake after it must
    // know that Redis keeps acknowledged writes.
    cluster.nodes.clear();
    cluster.redis.restart();
    let url = cluster.redis.url();
    let node = cluster.add_node(&url, &[]);
    let mut stream = subscribe(node, "/topics/news/events", Some(&epoch_start(&kept))).await;
    assert_eq!(plain_ids(&take(&mut stream, 1, WAIT).await), [kept.as_str()], "the history, no gap notice");
    assert_eq!(epoch_of(&next_is_fresh(&mut stream, node, "news").await), epoch_of(&kept));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_redis_is_out_of_memory_refuses_publishes_and_is_not_ready_until_redis_has_room() {
    let redis = ["--maxmemory", "3mb", "--maxmemory-policy", "noeviction"];
    let cluster = Cluster::start_with(1, Persistence::None, &redis, &[]);
    let node = &cluster.nodes[0];
    let data = "x".repeat(60_000);
    let mut refused = None;
    for i in 0..200 {
        let answer = try_publish(node, &format!("big{i}"), &data, None).await.expect("an answer");
        if answer.status != StatusCode::CREATED {
            refused = Some(answer);
            break;
        }
    }
    let refused = refused.expect("Redis ran out of memory within 12 MB of events");
    assert_eq!((refused.status, refused.code()), (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"), "{refused:?}");
    assert_eq!(get(node, "/readyz").await.0, StatusCode::SERVICE_UNAVAILABLE, "not ready while Redis refuses writes");
    assert_eq!(get(node, "/healthz").await.0, StatusCode::OK);

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("0")
        .query(&mut cluster.redis.connection())
        .expect("lift the memory limit");
    let answer = try_publish(node, "big", &data, None).await.expect("an answer");
    assert_eq!(answer.status, StatusCode::CREATED, "{answer:?}");
    assert_eq!(get(node, "/readyz").await.0, StatusCode::OK, "ready once a write went through");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_warns_at_start_when_redis_may_lose_or_evict_what_it_acknowledged() {
    let cluster = Cluster::start_with(1, Persistence::None, &["--maxmemory-policy", "allkeys-lru"], &[]);
    let node = &cluster.nodes[0];
    let log = node.output();
    assert!(log.contains("maxmemory-policy allkeys-lru") && log.contains("noeviction"), "{log}");
    assert!(log.contains("redis is not `appendonly yes` + `appendfsync always`"), "{log}");
    let (status, ready) = get(node, "/readyz").await;
    assert_eq!((status, ready["durability"].as_str()), (StatusCode::OK, Some("none")), "{ready}");
    assert_eq!(metric(node, "herald_redis_durability{level=\"none\"}").await, 1.0);
    // The dashboard says which node this is and warns of the durability.
    let (status, page) = get(node, "/admin").await;
    let page = page.as_str().unwrap_or_default().to_owned();
    assert_eq!(status, StatusCode::OK, "{page}");
    let id = ready["node"].as_str().expect("a node id");
    assert!(page.contains(&format!("node {id}")) && page.contains("redis durability: none"), "{page}");
    assert!(page.contains(&cluster.redis.url()), "the store it uses: {page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_goes_back_in_its_history_streams_are_told_history_was_lost() {
    let cluster = Cluster::start(1, Persistence::Always, &[]);
    let node = &cluster.nodes[0];
    let mut stream = subscribe(node, "/topics/news/events", None).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(try_publish(node, "news", &format!("event {i}"), None).await.expect("publish").id());
    }
    assert_eq!(plain_ids(&take(&mut stream, 3, WAIT).await), ids);

    // Redis forgets the last two events it acknowledged (as a replica
    // promoted before they reached it would), and the node reconnects.
    let mut redis = cluster.redis.connection();
    let meta = format!("{{{}}}:meta", cluster.prefix);
    let _: () = redis::cmd("HSET").arg(&meta).arg("seq").arg(1).query(&mut redis).expect("roll back");
    let _: () = redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("pubsub").query(&mut redis).expect("kill the feed");
    let notice = gap(&take(&mut stream, 1, WAIT).await[0]);
    assert_eq!(notice["reason"], "history_lost", "{notice}");
    assert_eq!(notice["after"], ids[2].as_str(), "{notice}");
    let fresh = next_is_fresh(&mut stream, node, "news").await;
    assert_ne!(epoch_of(&fresh), epoch_of(&ids[0]), "a new history: {fresh}");
    assert_eq!(metric(node, "herald_redis_epoch_changes_total{reason=\"rollback\"}").await, 1.0);
}

/// Whether `answer` is a 503 telling the client to retry: `store_unavailable`
/// with `Retry-After`, or `store_in_doubt` (an attempt Redis did not answer).
fn refused(answer: &Answer) -> bool {
    answer.status == StatusCode::SERVICE_UNAVAILABLE
        && (answer.code() == "store_in_doubt" || answer.code() == "store_unavailable" && answer.retry_after.is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_durable_redis_is_down_publishes_are_refused_and_streams_wait_then_go_on_in_the_same_history() {
    let mut cluster = Cluster::start(2, Persistence::Always, &[]);
    let mut stream = subscribe(&cluster.nodes[1], "/topics/news/events", None).await;
    let before = try_publish(&cluster.nodes[0], "news", "before", None).await.expect("publish").id();
    assert_eq!(plain_ids(&take(&mut stream, 1, WAIT).await), [before.as_str()]);

    cluster.redis.kill();
    let a = &cluster.nodes[0];
    // The first attempt may find the connection dead mid-request (in doubt);
    // from then on the node knows: 503 store_unavailable, Retry-After.
    let first = try_publish(a, "news", "during 0", Some("during-0")).await.expect("an answer");
    assert!(refused(&first), "{first:?}");
    let second = try_publish(a, "news", "during 1", Some("during-1")).await.expect("an answer");
    assert_eq!(second.status, StatusCode::SERVICE_UNAVAILABLE, "{second:?}");
    assert_eq!(second.code(), "store_unavailable", "{second:?}");
    assert_eq!(second.retry_after.as_deref(), Some("1"), "{second:?}");
    for node in &cluster.nodes {
        until_status(node, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
        assert_eq!(get(node, "/healthz").await.0, StatusCode::OK, "a process that works is healthy");
    }
    // The stream stays open on heartbeats (every 200 ms).
    let comments = stream.comments();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(stream.comments() >= comments + 2, "heartbeats while Redis is down");

    cluster.redis.restart();
    let mut after = Vec::new();
    for i in 0..2 {
        after.push(publish_when_back(&cluster.nodes[i], "news", &format!("during {i}"), &format!("during-{i}")).await);
    }
    for i in 0..3 {
        after
            .push(try_publish(&cluster.nodes[i % 2], "news", &format!("after {i}"), None).await.expect("publish").id());
    }
    assert!(after.iter().all(|id| epoch_of(id) == epoch_of(&before)), "the same history: {before} then {after:?}");
    for node in &cluster.nodes {
        until_status(node, "/readyz", StatusCode::OK).await;
    }
    assert_eq!(plain_ids(&take(&mut stream, after.len(), WAIT).await), after, "no gap, nothing twice");
    next_is_fresh(&mut stream, &cluster.nodes[0], "news").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_comes_back_empty_streams_are_told_history_was_lost_and_go_on_in_a_new_one() {
    let mut cluster = Cluster::start(2, Persistence::None, &[]);
    let mut stream = subscribe(&cluster.nodes[1], "/topics/news/events", None).await;
    let before = try_publish(&cluster.nodes[0], "news", "before", None).await.expect("publish").id();
    assert_eq!(plain_ids(&take(&mut stream, 1, WAIT).await), [before.as_str()]);

    cluster.redis.restart();
    let mut after = vec![publish_when_back(&cluster.nodes[0], "news", "after 0", "after-0").await];
    after.push(try_publish(&cluster.nodes[1], "news", "after 1", None).await.expect("publish").id());
    assert!(after.iter().all(|id| epoch_of(id) != epoch_of(&before)), "a new history: {before} then {after:?}");
    let events = take(&mut stream, 1 + after.len(), WAIT).await;
    let notice = gap(&events[0]);
    assert_eq!(notice["reason"], "history_lost", "{notice}");
    assert_eq!(notice["epoch_before"], epoch_of(&before), "{notice}");
    assert_eq!(plain_ids(&events[1..]), after);
    after.push(next_is_fresh(&mut stream, &cluster.nodes[0], "news").await);

    // A client that comes back later with an id of the lost history is told
    // it was lost (Redis keeps the previous epoch), then gets every event of
    // the new one.
    for node in &cluster.nodes {
        let mut late = subscribe(node, "/topics/news/events", Some(&before)).await;
        let events = take(&mut late, 1 + after.len(), WAIT).await;
        let notice = gap(&events[0]);
        assert_eq!(notice["reason"], "history_lost", "{notice}");
        assert_eq!(
            (notice["epoch_before"].as_str(), notice["after"].as_str()),
            (Some(epoch_of(&before)), Some(before.as_str()))
        );
        assert_eq!(plain_ids(&events[1..]), after);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_redis_refuses_publishes_and_its_streams_get_everything_once_healed() {
    let (cluster, proxy) = Cluster::with_node_behind_a_proxy().await;
    let (b, a) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = subscribe(a, "/events?topic=news&topic=sport", None).await;
    let before = try_publish(b, "news", "before", None).await.expect("publish").id();
    assert_eq!(plain_ids(&take(&mut on_a, 1, WAIT).await), [before]);

    proxy.blackhole();
    let first = try_publish(a, "news", "cut 0", Some("cut-0")).await.expect("an answer");
    assert!(refused(&first), "{first:?}");
    until_status(a, "/readyz", StatusCode::SERVICE_UNAVAILABLE).await;
    let refused_again = try_publish(a, "news", "cut 1", Some("cut-1")).await.expect("an answer");
    assert!(refused(&refused_again), "{refused_again:?}");
    let mut during = Vec::new();
    for i in 0..20 {
        let topic = ["news", "sport", "other"][i % 3];
        let id = try_publish(b, topic, &format!("during {i}"), None).await.expect("publish").id();
        if topic != "other" {
            during.push(id);
        }
    }
    let comments = on_a.comments();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(on_a.comments() > comments, "A's stream stays open on heartbeats");
    assert_eq!(get(b, "/readyz").await.0, StatusCode::OK, "B is not cut off");

    proxy.pass();
    until_status(a, "/readyz", StatusCode::OK).await;
    let got = take(&mut on_a, during.len(), WAIT).await;
    // Publishes A refused with store_unavailable are not there; in doubt ones
    // (Redis never saw them: the proxy swallowed them) are not either.
    assert_eq!(plain_ids(&got), during, "everything B published meanwhile, in order, once");
    next_is_fresh(&mut on_a, a, "sport").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stalls_past_redis_output_buffer_limit_catches_up_from_the_streams() {
    let cluster =
        Cluster::start_with(2, Persistence::Always, &["--client-output-buffer-limit", "pubsub 256kb 64kb 1"], &[]);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_a = subscribe(a, "/topics/bulk/events", None).await;
    let pid = rustix::process::Pid::from_raw(i32::try_from(a.child.id()).expect("pid")).expect("a pid");
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).expect("SIGSTOP A");
    // SIGCONT however the test ends, so the node can be killed and reaped.
    struct Resume(rustix::process::Pid);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = rustix::process::kill_process(self.0, rustix::process::Signal::CONT);
        }
    }
    let resume = Resume(pid);
    let mut ids = Vec::new();
    for batch in 0..10 {
        let items: Vec<(&str, String)> =
            (0..50).map(|i| ("bulk", format!("{batch:02}{i:02}{}", "y".repeat(10_000)))).collect();
        ids.extend(publish_batch(b, &items).await);
    }
    drop(resume);
    let got = take(&mut on_a, ids.len(), WAIT).await;
    assert_eq!(plain_ids(&got), ids, "everything, in order, once");
    next_is_fresh(&mut on_a, b, "bulk").await;
    let resyncs = metric(a, "herald_redis_resyncs_total").await;
    assert!(resyncs > 0.0, "Redis dropped A's feed and A repaired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_cut_off_mid_request_is_never_refused_if_it_was_stored() {
    let (cluster, proxy) = Cluster::with_node_behind_a_proxy().await;
    let (b, a) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_b = subscribe(b, "/topics/pay/events", None).await;
    let warm = try_publish(a, "pay", "warm", None).await.expect("publish").id();
    assert_eq!(plain_ids(&take(&mut on_b, 1, WAIT).await), [warm]);

    proxy.blackhole();
    let a_url = a.base.clone();
    let publish = tokio::spawn(async move {
        let request = common::client()
            .post(format!("{a_url}/topics/pay/events"))
            .bearer_auth(token())
            .header("idempotency-key", "pay-1")
            .header("content-type", "text/plain")
            .body("pay 1");
        answer(request.send().await.expect("an answer")).await.expect("a body")
    });
    // Healed within the node's wait (--redis-timeout 500ms).
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.pass();
    let answer = within(WAIT, "the publish's answer", publish).await.expect("publisher");
    // Whatever happened, a retry on B says what exists.
    let retry = try_publish(b, "pay", "pay 1", Some("pay-1")).await.expect("publish on B");
    match (answer.status, answer.code()) {
        (StatusCode::CREATED, _) => {
            assert!(retry.replayed, "a 201 event exists: the retry replays it");
            assert_eq!(retry.id(), answer.id());
        }
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable") => {
            assert!(!retry.replayed, "refused as not published, so it must not exist: {answer:?}");
        }
        (StatusCode::SERVICE_UNAVAILABLE, "store_in_doubt") => {}
        _ => panic!("unexpected answer {answer:?}"),
    }
    // Exactly one event for the key, whatever A answered.
    let id = retry.id();
    assert_eq!(plain_ids(&take(&mut on_b, 1, WAIT).await), [id]);
    next_is_fresh(&mut on_b, b, "pay").await;
    assert_eq!(retained(b, "pay").await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_whose_reply_is_lost_is_resolved_from_redis_as_published() {
    let (cluster, proxy) = Cluster::with_node_behind_a_proxy().await;
    let (b, a) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut on_b = subscribe(b, "/topics/pay/events", None).await;
    let warm = try_publish(a, "pay", "warm", None).await.expect("publish").id();
    assert_eq!(plain_ids(&take(&mut on_b, 1, WAIT).await), [warm]);

    // Redis runs the script; A never hears back, and must find out.
    proxy.lose_replies();
    let answer = try_publish(a, "pay", "pay 1", Some("pay-1")).await.expect("an answer");
    let stored = plain_ids(&take(&mut on_b, 1, WAIT).await);
    assert_eq!(answer.status, StatusCode::CREATED, "the node read its batch back from Redis: {answer:?}");
    assert_eq!(stored, [answer.id()]);
    let retry = try_publish(b, "pay", "pay 1", Some("pay-1")).await.expect("publish on B");
    assert!(retry.replayed, "{retry:?}");
    assert_eq!(retry.id(), answer.id());
    next_is_fresh(&mut on_b, a, "pay").await;
    assert_eq!(retained(b, "pay").await, 3);
    assert_eq!(metric(a, "herald_redis_in_doubt_total{outcome=\"committed\"}").await, 1.0);
}
