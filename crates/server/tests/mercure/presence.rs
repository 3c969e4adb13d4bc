//! Presence: subscription events and the subscriptions API.

use super::*;

const WATCH: &str = "/.well-known/mercure/subscriptions{/topic}{/subscriber}";

#[tokio::test]
async fn connects_and_disconnects_are_private_updates_and_the_api_lists_open_subscriptions() {
    let server = door_server(|s| s.mercure.mercure_subscriptions = "true".into()).await;
    let watcher = mercure_token(json!({ "subscribe": [WATCH] }));
    let mut watching = subscribe(&server, &format!("?topic={}", q(WATCH)), Some(&watcher)).await;
    // The watcher's own connect comes first.
    let own = serde_json::from_str::<Value>(&watching.next().await.data).unwrap();
    assert_eq!(own["topic"], WATCH);

    let reader = mercure_token(json!({ "subscribe": [], "payload": { "user": "ada" } }));
    let selector = "https://example.com/books/{id}";
    let reading = subscribe(&server, &format!("?topic={}", q(selector)), Some(&reader)).await;
    let connect = watching.next().await;
    assert!(connect.id.starts_with("urn:herald:"), "resumable: {}", connect.id);
    let body: Value = serde_json::from_str(&connect.data).unwrap();
    let subscriber = body["subscriber"].as_str().unwrap().to_owned();
    assert!(subscriber.starts_with("urn:uuid:"), "{subscriber}");
    let encoded = |text: &str| -> String { form_urlencoded::byte_serialize(text.as_bytes()).collect() };
    let topic = format!(
        "/.well-known/mercure/subscriptions/{}/{}",
        encoded(selector).replace('+', "%20"),
        encoded(&subscriber)
    );
    assert_eq!(
        body,
        json!({
            "@context": "https://mercure.rocks/",
            "id": topic,
            "type": "Subscription",
            "topic": selector,
            "subscriber": subscriber,
            "active": true,
            "payload": { "user": "ada" },
        })
    );

    // The API: the collection, one selector's, one subscription; ETag and 304.
    let get = |path: &str| server.client.get(server.url(path)).bearer_auth(&watcher);
    let all = get("/.well-known/mercure/subscriptions").send().await.unwrap();
    assert_eq!(all.status(), StatusCode::OK);
    assert_eq!(all.headers()[header::CONTENT_TYPE], "application/ld+json");
    let etag = all.headers()[header::ETAG].clone();
    let all: Value = all.json().await.unwrap();
    assert_eq!(all["type"], "Subscriptions");
    assert!(all["lastEventID"].as_str().unwrap().starts_with("urn:herald:"));
    let listed = all["subscriptions"].as_array().unwrap();
    assert_eq!(listed.len(), 2, "the watcher and the reader: {all}");
    assert!(listed.iter().any(|s| s["subscriber"] == subscriber && s["payload"]["user"] == "ada"));
    let one = get(&topic).send().await.unwrap();
    assert_eq!(one.status(), StatusCode::OK);
    let one: Value = one.json().await.unwrap();
    assert_eq!((&one["id"], &one["active"]), (&json!(topic), &json!(true)));
    let unchanged = get("/.well-known/mercure/subscriptions").header(header::IF_NONE_MATCH, etag).send().await.unwrap();
    assert_eq!(unchanged.status(), StatusCode::NOT_MODIFIED);
    let missing = get(&format!("{topic}x")).send().await.unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // Without a grant for the path, 403; without a token, 401.
    let stranger = server.client.get(server.url("/.well-known/mercure/subscriptions")).bearer_auth(&reader);
    assert_eq!(stranger.send().await.unwrap().status(), StatusCode::FORBIDDEN);
    let nobody = server.client.get(server.url("/.well-known/mercure/subscriptions"));
    assert_eq!(nobody.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);

    // The reader leaves: its disconnect follows, and the API forgets it.
    drop(reading);
    let disconnect: Value = serde_json::from_str(&watching.next().await.data).unwrap();
    assert_eq!((&disconnect["subscriber"], &disconnect["active"]), (&json!(subscriber), &json!(false)));
    assert_eq!(get(&topic).send().await.unwrap().status(), StatusCode::NOT_FOUND);

    // The reader never saw any of it: subscription events are private.
    let mut plain = subscribe(&server, "?topic=*", Some(&mercure_token(json!({})))).await;
    let last = publish(&server, &[("topic", "https://example.com/books/9")]).await;
    assert_eq!(plain.next().await.id, last);
}

#[tokio::test]
async fn presence_is_off_unless_asked_for() {
    let server = door_server(|_| {}).await;
    let watcher = mercure_token(json!({ "subscribe": [WATCH] }));
    let api = server.client.get(server.url("/.well-known/mercure/subscriptions")).bearer_auth(&watcher);
    expect_error(api.send().await.unwrap(), StatusCode::NOT_FOUND, "not_found").await;
    let query = format!("?topic={}&topic=x", q(WATCH));
    let mut watching = subscribe(&server, &query, Some(&watcher)).await;
    let _reader = subscribe(&server, "?topic=y", Some(&watcher)).await;
    let update = publish(&server, &[("topic", "x")]).await;
    assert_eq!(watching.next().await.id, update, "no connect update came first");
}

#[tokio::test]
async fn a_head_request_answers_as_a_stream_would_and_announces_nothing() {
    let server = door_server(|s| s.mercure.mercure_subscriptions = "true".into()).await;
    let watcher = mercure_token(json!({ "subscribe": [WATCH] }));
    let query = format!("?topic={}&topic=x", q(WATCH));
    let mut watching = subscribe(&server, &query, Some(&watcher)).await;
    // Its own connect, one update per selector.
    for _ in 0..2 {
        let own = watching.next().await;
        assert!(own.data.contains("\"active\":true"), "{}", own.data);
    }
    let head = server.client.head(door_url(&server, "?topic=y")).bearer_auth(&watcher).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()[header::CONTENT_TYPE], "text/event-stream");
    let unauthorised = server.client.head(door_url(&server, "?topic=y")).send().await.unwrap();
    assert_eq!(unauthorised.status(), StatusCode::UNAUTHORIZED);
    let update = publish(&server, &[("topic", "x")]).await;
    assert_eq!(watching.next().await.id, update, "no presence update for a HEAD");
}
