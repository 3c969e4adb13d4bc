//! The operators' side, against the real binary (a process of its own, so
//! the metrics recorder holds this test's figures only): the Prometheus
//! exposition checked by `promtool`, dashboard access control, the
//! disconnect action, `--internal-listen`, and the dashboard in headless
//! Chromium.

mod common;

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::Duration,
};

use common::{Herald, token, token_with};
use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

async fn wait_for(mut check: impl AsyncFnMut() -> bool, what: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_passes_promtool_and_counts_what_subscribers_received() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &["--memory", "--max-event-bytes", "1000"]);
    let client = reqwest::Client::new();
    let mut readers = Vec::new();
    for _ in 0..3 {
        let response = client.get(herald.url("/topics/m/events")).bearer_auth(token()).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let mut events = response.bytes_stream().eventsource();
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < 50 {
                let event =
                    tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap().unwrap();
                if event.event == "message" {
                    got += 1;
                }
            }
            (got, events)
        }));
    }
    wait_for(
        async || {
            let text = client.get(herald.url("/metrics")).send().await.unwrap().text().await.unwrap();
            text.contains("herald_streams_open 3")
        },
        "three open streams",
    )
    .await;
    for n in 0..50 {
        publish_as(&client, &herald, "m", "text/plain", &n.to_string()).await;
    }
    let mut open = Vec::new();
    for reader in readers {
        let (got, events) = reader.await.unwrap();
        assert_eq!(got, 50);
        open.push(events);
    }
    // A bad token, to see the auth failure counted.
    let denied = client.get(herald.url("/topics/m/events")).bearer_auth("not-a-token").send().await.unwrap();
    assert_eq!(denied.status(), 401);
    // Publishes refused for the request's fault: 400, 403, 413, 415.
    let reader = token_with("reader", &[], &["*"], false, Duration::from_secs(600));
    for (token, content_type, body, status) in [
        (token(), "application/json", "\"hello\"".to_owned(), 400),
        (reader, "text/plain", "x".to_owned(), 403),
        (token(), "text/plain", "x".repeat(1001), 413),
        (token(), "text/html", "x".to_owned(), 415),
    ] {
        let r = client
            .post(herald.url("/topics/m/events"))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status);
    }

    let response = client.get(herald.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = response.text().await.unwrap();
    assert_eq!(metric(&text, "herald_events_delivered_total"), 150.0, "delivered = what the subscribers received");
    assert_eq!(metric(&text, "herald_events_published_total{result=\"created\"}"), 50.0);
    assert_eq!(metric(&text, "herald_events_published_total{result=\"rejected\"}"), 4.0);
    assert_eq!(metric(&text, &format!("herald_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    for series in ["process_resident_memory_bytes", "process_open_fds", "process_max_fds"] {
        assert!(metric(&text, series) > 0.0, "{series}");
    }
    assert!(metric(&text, "process_cpu_seconds_total") >= 0.0);
    let started = metric(&text, "process_start_time_seconds");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(started > now - 3600.0 && started <= now + 1.0, "started {started}, now {now}");
    assert!(!text.contains("herald_store_size_bytes "), "no store size with --memory");
    assert_eq!(metric(&text, "herald_streams_open"), 3.0);
    assert_eq!(metric(&text, "herald_subscriptions"), 3.0);
    assert_eq!(metric(&text, "herald_auth_failures_total{reason=\"malformed\"}"), 1.0);
    assert_eq!(metric(&text, "herald_publish_latency_seconds_count"), 50.0);
    assert!(metric(&text, "herald_store_commit_events_sum") >= 50.0);
    assert!(metric(&text, "herald_delivery_latency_seconds_count") >= 3.0);
    assert_eq!(metric(&text, "herald_store_errors_total"), 0.0);
    assert_eq!(metric(&text, "herald_catch_up_reads_total{source=\"store\"}"), 0.0);
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split(' ').nth(2).unwrap();
        assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
    }
    assert!(!text.contains("topic=\""), "no per-topic labels");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed by scripts/install-test-deps");
    promtool.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    assert!(
        checked.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_needs_an_admin_token_and_disconnects_on_confirmation() {
    let dir = tempfile::tempdir().unwrap();
    // No leeway, so that a token expires a second after it is minted.
    let herald = Herald::start(dir.path(), &["--memory", "--jwt-leeway", "0"]);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();

    let anonymous = client.get(herald.url("/admin")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let page = anonymous.text().await.unwrap();
    assert!(page.contains("action=\"/admin/login\""), "a login page: {page}");

    let user = token_with("user", &["*"], &["*"], false, Duration::from_secs(600));
    let forbidden = client.get(herald.url("/admin")).bearer_auth(&user).send().await.unwrap();
    assert_eq!(forbidden.status(), 403);
    let page = forbidden.text().await.unwrap();
    assert!(page.contains("no admin grant") && page.contains("herald token --sub you --admin"), "{page}");

    let expired = token_with("ops", &[], &[], true, Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2_100)).await; // past exp
    let refused = client.get(herald.url("/admin")).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("expired"));
    for path in ["/admin/connections", "/admin/metrics", "/admin/live", "/admin/topics/x"] {
        assert_eq!(client.get(herald.url(path)).send().await.unwrap().status(), 401, "{path}");
    }

    // ?access_token= once: moved into an HttpOnly cookie, and the address cleaned.
    let admin = token_with("ops", &["*"], &["*"], true, Duration::from_secs(600));
    let moved = client.get(herald.url(&format!("/admin/connections?access_token={admin}"))).send().await.unwrap();
    assert_eq!(moved.status(), 303);
    assert_eq!(moved.headers()["location"], "/admin/connections");
    let cookie = moved.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("herald_admin=") && cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("Path=/admin;") && cookie.contains("SameSite=Strict"), "{cookie}");
    let cookie = cookie.split(';').next().unwrap().to_owned();

    // The dashboard's cookie is its own: the public API never takes it.
    for path in ["/topics/private/events", "/events?topic=private"] {
        let refused = client.get(herald.url(path)).header("cookie", &cookie).send().await.unwrap();
        assert_eq!(refused.status(), 401, "{path} with the dashboard's cookie");
    }
    let publish = client
        .post(herald.url("/topics/private/events"))
        .header("cookie", &cookie)
        .header("content-type", "text/plain")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(publish.status(), 401, "a publish with the dashboard's cookie");

    // Signing in with the form sets that cookie alone.
    let form = client
        .post(herald.url("/admin/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={admin}"))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    let set: Vec<&str> = form.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert!(set.len() == 1 && set[0].starts_with("herald_admin=") && set[0].contains("Path=/admin;"), "{set:?}");
    let overview = client.get(herald.url("/admin")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(overview.status(), 200);
    assert!(overview.text().await.unwrap().contains("id=\"m-streams\""));
    // Signing out forgets it, and the site-wide cookie earlier versions kept
    // the dashboard's token in.
    let out = client.get(herald.url("/admin/logout")).header("cookie", &cookie).send().await.unwrap();
    let cleared: Vec<&str> = out.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    for name in ["herald_admin=;", "herald_token=;"] {
        assert!(cleared.iter().any(|c| c.starts_with(name) && c.contains("Max-Age=0")), "{cleared:?}");
    }

    // A stream to disconnect: listed with its subject and user agent.
    let stream = client
        .get(herald.url("/topics/d/events"))
        .bearer_auth(&user)
        .header("user-agent", "ops-test/1")
        .send()
        .await
        .unwrap();
    let mut events = stream.bytes_stream();
    let _opened = events.next().await;
    let list = client
        .get(herald.url("/admin/connections"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(list.contains("ops-test/1") && list.contains(">user<"), "{list}");
    let id = list.split("data-disconnect=\"").nth(1).unwrap().split('"').next().unwrap().to_owned();
    let unconfirmed = client
        .post(herald.url(&format!("/admin/connections/{id}/disconnect")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(unconfirmed.status(), 400);
    let done = client
        .post(herald.url(&format!("/admin/connections/{id}/disconnect")))
        .header("cookie", &cookie)
        .header("x-herald-confirm", "disconnect")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 204);
    let rest = tokio::time::timeout(Duration::from_secs(5), async {
        let mut text = String::new();
        while let Some(Ok(chunk)) = events.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        text
    })
    .await
    .expect("the stream ends after a disconnect");
    assert!(rest.contains("disconnected by an operator"), "{rest}");
    let text = client.get(herald.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "herald_streams_closed_total{reason=\"admin\"}"), 1.0);
}

/// The dashboard finds its token by the API's rule (herald-core's
/// `find_token`), with its own cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_the_authorization_header_as_the_api_does() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &["--memory"]);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let admin = token_with("ops", &[], &[], true, Duration::from_secs(600));

    // Any case of the scheme, and spaces around the token.
    let page = client.get(herald.url("/admin")).header("authorization", format!("bearer  {admin} ")).send();
    assert_eq!(page.await.unwrap().status(), 200);

    // An Authorization header of another scheme is a proxy's own sign-in in
    // front of the dashboard: the dashboard goes by its cookie then; the
    // API refuses such a header.
    let behind_basic_auth = |path: &str| {
        client
            .get(herald.url(path))
            .header("authorization", "Basic dXNlcjpwYXNz")
            .header("cookie", format!("herald_admin={admin}; herald_token={admin}"))
            .send()
    };
    assert_eq!(behind_basic_auth("/admin").await.unwrap().status(), 200);
    let refused = behind_basic_auth("/topics/t").await.unwrap();
    assert_eq!(refused.status(), 401);
    let text = refused.text().await.unwrap();
    assert!(text.contains("the Authorization header must be `Bearer"), "{text}");
    // A malformed Bearer header is refused by both.
    let empty = client.get(herald.url("/admin")).header("authorization", "Bearer ").send().await.unwrap();
    assert_eq!(empty.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_listen_moves_metrics_and_the_dashboard_off_the_public_listener() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let internal = format!("127.0.0.1:{port}");
    let herald = Herald::start(dir.path(), &["--memory", "--internal-listen", &internal]);
    let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    assert_eq!(client.get(herald.url("/metrics")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(herald.url("/admin")).send().await.unwrap().status(), 404);
    assert_eq!(client.get(herald.url("/healthz")).send().await.unwrap().status(), 200);
    let metrics = client.get(format!("http://{internal}/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.text().await.unwrap().contains("# HELP herald_subscriptions "));
    assert_eq!(client.get(format!("http://{internal}/admin")).send().await.unwrap().status(), 401);

    // Every link and asset of every dashboard page resolves on the internal listener.
    let admin = token_with("ops", &[], &[], true, Duration::from_secs(600));
    for page in ["/admin", "/admin/connections", "/admin/metrics", "/admin/topics/t"] {
        let html = client
            .get(format!("http://{internal}{page}"))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let targets: Vec<&str> = ["href=\"", "src=\""]
            .iter()
            .flat_map(|attr| html.split(attr).skip(1).filter_map(|rest| rest.split('"').next()))
            .filter(|target| target.starts_with('/'))
            .collect();
        assert!(targets.contains(&"/admin/assets/admin.js"), "{page}: {targets:?}");
        for target in targets {
            let status =
                client.get(format!("http://{internal}{target}")).bearer_auth(&admin).send().await.unwrap().status();
            assert_ne!(status, 404, "{page} links to {target}, which the internal listener does not serve");
        }
    }
    // The inspector stays on the public listener, with its assets beside it.
    for path in ["/inspector", "/inspector/assets/admin.css", "/inspector/assets/sse.js"] {
        assert_eq!(client.get(herald.url(path)).send().await.unwrap().status(), 200, "{path}");
    }

    // A topic's tail on the dashboard's listener sees what the public one publishes.
    let tail = client.get(format!("http://{internal}/admin/topics/t/tail")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(tail.status(), 200);
    assert_eq!(tail.headers()["content-type"], "text/event-stream");
    let mut events = tail.bytes_stream().eventsource();
    publish(&client, &herald, "t", r#"{"data":"over the wall","event":"note"}"#).await;
    let event = next_event(&mut events).await;
    assert_eq!((event.event.as_str(), event.data.as_str()), ("note", "over the wall"));
}

async fn publish(client: &reqwest::Client, herald: &Herald, topic: &str, body: &str) -> String {
    publish_as(client, herald, topic, "application/json", body).await
}

/// Publishes `body` as `content_type` to `topic`; the new event's id.
async fn publish_as(client: &reqwest::Client, herald: &Herald, topic: &str, content_type: &str, body: &str) -> String {
    let r = client
        .post(herald.url(&format!("/topics/{topic}/events")))
        .bearer_auth(token())
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "publish to {topic}");
    r.json::<serde_json::Value>().await.unwrap()["id"].as_str().unwrap().to_owned()
}

/// The next event of an SSE stream, within ten seconds.
async fn next_event<S, E>(events: &mut S) -> eventsource_stream::Event
where
    S: futures::Stream<Item = Result<eventsource_stream::Event, E>> + Unpin,
    E: std::fmt::Debug,
{
    tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within ten seconds")
        .expect("the stream went on")
        .unwrap()
}

async fn subscribers(client: &reqwest::Client, herald: &Herald, topic: &str) -> u64 {
    let r = client.get(herald.url(&format!("/topics/{topic}"))).bearer_auth(token()).send().await.unwrap();
    let body: serde_json::Value = r.json().await.unwrap();
    body["subscribers"].as_u64().unwrap_or_else(|| panic!("no subscribers in {body}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topic_tail_is_the_operators_own_and_not_a_subscriber() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &["--memory"]);
    let client = reqwest::Client::new();
    let admin = token_with("ops", &[], &[], true, Duration::from_secs(600));

    // The public API does not serve the tail, with an admin token or not.
    assert_eq!(client.get(herald.url("/admin/topics/t/tail")).send().await.unwrap().status(), 401);
    let tail = client.get(herald.url("/admin/topics/t/tail")).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(tail.status(), 200);
    let mut events = tail.bytes_stream().eventsource();
    publish(&client, &herald, "t", r#"{"data":"first","event":"invoice.paid"}"#).await;
    let event = next_event(&mut events).await;
    assert_eq!((event.event.as_str(), event.data.as_str()), ("invoice.paid", "first"));

    // Not a subscriber: not counted on the topic nor in the hub, not listed.
    assert_eq!(subscribers(&client, &herald, "t").await, 0);
    let text = client.get(herald.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert_eq!(metric(&text, "herald_subscriptions"), 0.0);
    let list =
        client.get(herald.url("/admin/connections")).bearer_auth(&admin).send().await.unwrap().text().await.unwrap();
    assert!(!list.contains("data-disconnect="), "the tail is listed as a stream: {list}");
    let real = client.get(herald.url("/topics/t/events")).bearer_auth(token()).send().await.unwrap();
    let mut real = real.bytes_stream();
    let _opened = real.next().await;
    assert_eq!(subscribers(&client, &herald, "t").await, 1);

    // It resumes from Last-Event-ID like any stream.
    let second = client.get(herald.url("/admin/topics/t/tail")).bearer_auth(&admin).header("last-event-id", &event.id);
    publish(&client, &herald, "t", r#"{"data":"second"}"#).await;
    let mut resumed = second.send().await.unwrap().bytes_stream().eventsource();
    assert_eq!(next_event(&mut resumed).await.data, "second");
    drop(real);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_streams_end_when_the_admin_token_expires() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &["--memory", "--jwt-leeway", "0"]);
    let client = reqwest::Client::new();
    let short = token_with("ops", &[], &[], true, Duration::from_secs(3));
    let mut streams = Vec::new();
    for path in ["/admin/live", "/admin/topics/t/tail"] {
        let response = client.get(herald.url(path)).bearer_auth(&short).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        streams.push((path, response.bytes_stream().eventsource()));
    }
    for (path, mut events) in streams {
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            let mut last = None;
            while let Some(event) = events.next().await {
                last = Some(event.unwrap());
            }
            last
        })
        .await
        .unwrap_or_else(|_| panic!("{path} went on after the token expired"));
        let last = ended.unwrap_or_else(|| panic!("{path} ended without a word"));
        assert_eq!(last.event, "herald.expired", "{path}: {last:?}");
        assert!(last.data.contains("sign in again"), "{path}: {last:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_counts_every_stream_says_when_lists_are_cut_and_keeps_rates_steady() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &["--memory", "--dashboard-rows", "2"]);
    let client = reqwest::Client::new();
    let admin = token_with("ops", &[], &[], true, Duration::from_secs(600));
    let mut open = Vec::new();
    for topic in ["r1", "r2", "r3"] {
        let response =
            client.get(herald.url(&format!("/topics/{topic}/events"))).bearer_auth(token()).send().await.unwrap();
        let mut stream = response.bytes_stream();
        let _opened = stream.next().await;
        open.push(stream);
    }
    let page =
        client.get(herald.url("/admin/connections")).bearer_auth(&admin).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"c-count\">3<"), "{page}");
    assert!(page.contains("showing 2 of 3 streams"), "{page}");
    assert_eq!(page.matches("data-disconnect=").count(), 2, "{page}");

    // One event a second on r1, slower than the sampler looks: the rate reads 1/s, not 2 and 0 by turns.
    let live = client.get(herald.url("/admin/live")).bearer_auth(&admin).send().await.unwrap();
    let mut live = live.bytes_stream().eventsource();
    let start = tokio::time::Instant::now();
    let mut next_publish = start;
    let mut rates = Vec::new();
    while start.elapsed() < Duration::from_secs(10) {
        if tokio::time::Instant::now() >= next_publish {
            publish(&client, &herald, "r1", r#"{"data":"tick"}"#).await;
            next_publish += Duration::from_secs(1);
        }
        let event = next_event(&mut live).await;
        if event.event != "snapshot" {
            continue;
        }
        let snapshot: serde_json::Value = serde_json::from_str(&event.data).unwrap();
        assert_eq!(snapshot["sample"]["streams"], 3, "{snapshot}");
        assert_eq!(snapshot["connections"].as_array().unwrap().len(), 2, "{snapshot}");
        assert_eq!(snapshot["topics_total"], 3, "{snapshot}");
        assert_eq!(snapshot["topics"].as_array().unwrap().len(), 2, "{snapshot}");
        if start.elapsed() > Duration::from_secs(6) {
            let topic = snapshot["topics"].as_array().unwrap().iter().find(|t| t["name"] == "r1").cloned();
            rates
                .push((snapshot["sample"]["publish_rate"].as_f64().unwrap(), topic.map(|t| t["publish_rate"].clone())));
            // r1's subscriber got an event in every five seconds: the percentiles come from the
            // delivery latency histogram the server records.
            for percentile in ["p50_ms", "p99_ms"] {
                let value = snapshot["sample"][percentile].as_f64();
                assert!(value.is_some_and(|ms| ms >= 0.0), "{percentile} of recent deliveries: {snapshot}");
            }
        }
    }
    assert!(rates.len() >= 4, "{rates:?}");
    for (hub, topic) in &rates {
        assert!((0.4..=1.6).contains(hub), "publishes/s at a steady 1/s: {rates:?}");
        let topic = topic.as_ref().and_then(serde_json::Value::as_f64).expect("r1 is listed");
        assert!((0.4..=1.6).contains(&topic), "r1's publishes/s at a steady 1/s: {rates:?}");
    }
    let overview = client.get(herald.url("/admin")).bearer_auth(&admin).send().await.unwrap().text().await.unwrap();
    assert!(overview.contains("showing 2 of 3 topics"), "{overview}");
    drop(open);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_headless_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &["--memory", "--dashboard-rows", "3"]);
    let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.mjs");
    let admin = token_with("ops", &[], &[], true, Duration::from_secs(600));
    let user = token_with("browser-test", &["*"], &["*"], false, Duration::from_secs(600));
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .env("HERALD_URL", &herald.base)
        .env("ADMIN_TOKEN", admin)
        .env("USER_TOKEN", user)
        .env("JWT_SECRET", common::SECRET)
        .env("DASHBOARD_ROWS", "3")
        .env("SCREENSHOT_DIR", &shots)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run).await.expect("the browser test hung").unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "dashboard e2e failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("dashboard e2e: ok"), "{stdout}");
    for page in [
        "overview",
        "topic",
        "connections",
        "metrics",
        "inspector",
        "inspector-refused",
        "signed-out",
        "overview-dark",
        "overview-phone",
        "login",
    ] {
        let file = shots.join(format!("{page}.png"));
        let size = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        assert!(size > 5_000, "{} missing or empty", file.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_peer_at_the_per_ip_stream_limit_warns_once_about_trusted_proxies() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &["--memory", "--max-streams-per-ip", "1"]);
    let client = reqwest::Client::new();
    let open = client.get(herald.url("/topics/p/events")).bearer_auth(token()).send().await.unwrap();
    assert_eq!(open.status(), 200);
    for _ in 0..3 {
        let refused = client.get(herald.url("/topics/p/events")).bearer_auth(token()).send().await.unwrap();
        assert_eq!(refused.status(), 429);
    }
    let said = |log: &[String]| log.iter().filter(|l| l.contains("WARN") && l.contains("--trusted-proxies")).count();
    wait_for(async || said(&herald.log.lock().unwrap()) > 0, "the warning").await;
    assert_eq!(said(&herald.log.lock().unwrap()), 1, "{:?}", herald.log.lock().unwrap());
    drop(open);
}

fn metric_or_zero(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_after_a_pause_counts_as_replay_not_as_delivery_latency() {
    let dir = tempfile::tempdir().unwrap();
    let herald = Herald::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let publish = async |data: &str| publish_as(&client, &herald, "away", "text/plain", data).await;
    let scrape = async || client.get(herald.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let missed = publish("while away").await;
    // The client is away for a while; its resume replays what it missed.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let before = scrape().await;
    let count = "herald_delivery_latency_seconds_count";
    let start = format!("{}-0000000000000000", missed.split('-').next().unwrap());
    let response = client
        .get(herald.url("/topics/away/events"))
        .bearer_auth(token())
        .header("last-event-id", start)
        .send()
        .await
        .unwrap();
    let mut events = response.bytes_stream().eventsource();
    let mut next = async || loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next()).await.unwrap().unwrap().unwrap();
        if event.event == "message" {
            return event;
        }
    };
    assert_eq!(next().await.id, missed);
    let replayed = scrape().await;
    assert_eq!(
        metric_or_zero(&replayed, count),
        metric_or_zero(&before, count),
        "a replayed event adds no sample (it would be the pause, not the hub's latency)"
    );
    assert_eq!(metric_or_zero(&replayed, "herald_replayed_events_total"), 1.0);

    let live = publish("live").await;
    assert_eq!(next().await.id, live);
    let after = scrape().await;
    assert_eq!(metric_or_zero(&after, count), metric_or_zero(&before, count) + 1.0, "a live event is timed");
    assert_eq!(metric_or_zero(&after, "herald_replayed_events_total"), 1.0);
    let size = metric(&after, "herald_store_size_bytes");
    let on_disk: u64 = ["herald.db", "herald.db-wal", "herald.db-shm"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    assert!(size > 0.0 && on_disk > 0, "store size {size}, files {on_disk}");
}
