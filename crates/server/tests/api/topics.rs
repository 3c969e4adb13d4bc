//! What the hub reports about topics, and health.

use super::*;

#[tokio::test]
async fn topics_list_and_one_follow_grants() {
    let server = TestServer::start().await;
    let alpha = server.publish_data("alpha", "a").await;
    server.publish_data("beta", "b").await;
    let _sse = server.subscribe("/topics/alpha/events").await;

    let reader = server.token(&[], &["alpha"], false, HOUR);
    let list: Vec<Value> =
        server.client.get(server.url("/topics")).bearer_auth(&reader).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1, "only the topics the token may subscribe to: {list:?}");
    assert_eq!(list[0]["name"], "alpha");
    assert_eq!(list[0]["subscribers"], 1);
    assert_eq!(list[0]["buffered"], 1);
    assert_eq!(list[0]["last_id"], alpha.as_str());

    let admin = server.token(&[], &[], true, HOUR);
    let list: Vec<Value> =
        server.client.get(server.url("/topics")).bearer_auth(&admin).send().await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"], "admin sees every topic, sorted");
    let anonymous = server.client.get(server.url("/topics")).send().await.unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_token").await;

    let one: Value =
        server.client.get(server.url("/topics/alpha")).bearer_auth(&reader).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["name"], "alpha");
    assert_eq!(one["last_id"], alpha.as_str());
    let forbidden = server.client.get(server.url("/topics/beta")).bearer_auth(&reader).send().await.unwrap();
    expect_error(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
    let missing = server.client.get(server.url("/topics/beta")).send().await.unwrap();
    expect_error(missing, StatusCode::UNAUTHORIZED, "missing_token").await;
    let unknown = server.client.get(server.url("/topics/nobody.here")).bearer_auth(&admin).send().await.unwrap();
    expect_error(unknown, StatusCode::NOT_FOUND, "not_found").await;
    let invalid = server.client.get(server.url("/topics/a%20b")).bearer_auth(&admin).send().await.unwrap();
    expect_error(invalid, StatusCode::BAD_REQUEST, "invalid_topic").await;
}

/// Topics stay listed, with what the store holds, after they leave memory.
#[tokio::test]
async fn topics_are_reported_from_the_store_after_they_leave_memory() {
    let server = TestServer::start().await;
    for n in 0..3 {
        server.publish_data("user@42", &n.to_string()).await;
    }
    let last = server.publish_data("user@42", "last").await;
    for name in ["a.1", "a.2", "a.3"] {
        server.publish_data(name, "x").await;
    }
    // Long after anyone listened, the registry lets them go; the store keeps them.
    let later = herald_core::now_ms() + 3_600_000;
    assert!(server.state.hub.sweep_idle_topics(later) >= 4);
    assert!(server.state.hub.topic_stats("user@42").is_none(), "out of memory");
    let admin = server.token(&[], &[], true, HOUR);
    let get = |path: &str| server.client.get(server.url(path)).bearer_auth(&admin).send();
    let one: Value = get("/topics/user@42").await.unwrap().json().await.unwrap();
    assert_eq!((one["retained"].as_u64(), one["last_id"].as_str()), (Some(4), Some(last.as_str())), "{one}");
    assert_eq!((one["subscribers"].as_u64(), one["buffered"].as_u64()), (Some(0), Some(0)), "{one}");
    let list: Vec<Value> = get("/topics").await.unwrap().json().await.unwrap();
    let names: Vec<&str> = list.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a.1", "a.2", "a.3", "user@42"]);
    // Page by page, following the `next` links, as the admin and as a token
    // that may see only the last topic (its pages skip what it may not see).
    let narrow = server.token(&[], &["user@*"], false, HOUR);
    for (token, expected) in [(&admin, vec!["a.1", "a.2", "a.3", "user@42"]), (&narrow, vec!["user@42"])] {
        let (mut names, mut next) = (Vec::new(), Some("/topics?limit=2".to_owned()));
        while let Some(path) = next.take() {
            assert!(names.len() < 10, "the links end");
            let response = server.client.get(server.url(&path)).bearer_auth(token).send().await.unwrap();
            next = response.headers().get("link").map(|link| {
                let link = link.to_str().unwrap();
                assert!(link.ends_with(">; rel=\"next\""), "{link}");
                link.trim_start_matches('<').split('>').next().unwrap().to_owned()
            });
            let page: Vec<Value> = response.json().await.unwrap();
            assert!(page.len() <= 2);
            names.extend(page.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        }
        assert_eq!(names, expected);
    }
    expect_error(get("/topics?limit=0").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_limit").await;
    expect_error(get("/topics?after=a%20b").await.unwrap(), StatusCode::BAD_REQUEST, "invalid_topic").await;

    // The dashboard lists it too, with what is stored (its sampler reads the
    // store every few seconds).
    let page = get("/admin/topics/user@42").await.unwrap().text().await.unwrap();
    assert!(page.contains("id=\"t-retained\">4<"), "{page}");
    let row = "<a href=\"/admin/topics/user@42\">user@42</a></td><td class=\"num\">0</td><td class=\"num\">4</td>";
    within(WAIT, "the dashboard to list the stored topic", async {
        while !get("/admin").await.unwrap().text().await.unwrap().contains(row) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

/// With the registry full, events of topics that found no room reach pattern
/// subscribers from the store: no silent hole (the outside review saw ids
/// 1, 2, 3, 6 of six).
#[tokio::test]
async fn a_full_topic_registry_loses_nothing_for_pattern_subscribers() {
    let server = TestServer::start_with(|config| config.hub.max_topics = 3).await;
    let mut all = server.subscribe("/events?topic=*").await;
    let mut ids = Vec::new();
    for name in ["t1", "t2", "t3", "t4", "t5", "t1"] {
        ids.push(server.publish_data(name, name).await);
    }
    assert_eq!(server.state.hub.topic_count(), 3, "the registry is full");
    for (id, name) in ids.iter().zip(["t1", "t2", "t3", "t4", "t5", "t1"]) {
        let event = all.next().await;
        assert_eq!((event.id.as_str(), event.data.as_str(), event.event.as_str()), (id.as_str(), name, "message"));
    }
}

#[tokio::test]
async fn the_topic_list_needs_a_token_even_with_public_patterns() {
    let server = TestServer::start_with(|c| c.public_subscribe = vec!["news".parse().unwrap()]).await;
    server.publish_data("news", "n").await;
    let anonymous = server.client.get(server.url("/topics")).send().await.unwrap();
    expect_error(anonymous, StatusCode::UNAUTHORIZED, "missing_token").await;
    let one: Value = server.client.get(server.url("/topics/news")).send().await.unwrap().json().await.unwrap();
    assert_eq!(one["name"], "news", "one public topic's figures stay public");
    let reader = server.token(&[], &["other"], false, HOUR);
    let list: Vec<Value> =
        server.client.get(server.url("/topics")).bearer_auth(&reader).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1, "with a token, public topics are listed too: {list:?}");
}

#[tokio::test]
async fn healthz_and_readyz() {
    let server = TestServer::start().await;
    let health = server.client.get(server.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(health.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    let ready = server.client.get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert!(ready["store"].is_string(), "{ready}");
}
