//! Idempotency keys: retries are safe, and a key belongs to its caller.

use super::*;

#[tokio::test]
async fn idempotency_key_returns_the_first_id_and_delivers_once() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/topics/idem/events").await;
    let send = |data: &str| {
        server
            .client
            .post(server.url("/topics/idem/events"))
            .bearer_auth(server.root_token())
            .header("Idempotency-Key", "order-42")
            .json(&json!({"data": data}))
            .send()
    };
    let first = send("once").await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    assert!(first.headers().get("idempotent-replayed").is_none());
    let first: Value = first.json().await.unwrap();
    let again = send("once").await.unwrap();
    assert_eq!(again.status(), StatusCode::CREATED);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again, "the retry answers with the first receipt");
    // The same key for another body is a new request, refused: not a replay.
    let reused = send("something else").await.unwrap();
    let message = expect_error(reused, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    assert!(message.contains("Idempotency-Key"), "{message}");

    let sentinel = server.publish_data("idem", "sentinel").await;
    let event = sse.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (first["id"].as_str().unwrap(), "once"));
    let event = sse.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (sentinel.as_str(), "sentinel"), "no second event");

    let bad = server
        .client
        .post(server.url("/topics/idem/events"))
        .bearer_auth(server.root_token())
        .header("Idempotency-Key", "x".repeat(300))
        .json(&json!({"data": 1}))
        .send()
        .await
        .unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "invalid_idempotency_key").await;
}

/// A token that may publish to and subscribe to `topic` only, for `sub`.
fn tenant_token(sub: &str, topic: &str) -> String {
    sign_hs256(&claims(json!({"sub": sub, "herald": {"publish": [topic], "subscribe": [topic]}})), SECRET)
}

/// The outside review's finding: keys were global, so tenant B's publish
/// with A's key was answered with A's id and topic, and never stored.
#[tokio::test]
async fn idempotency_keys_belong_to_their_caller_for_single_and_batch_publishes() {
    let server = TestServer::start().await;
    let (a, b) = (tenant_token("tenant-a", "tenantA"), tenant_token("tenant-b", "tenantB"));
    let mut b_stream = Sse::open(server.client.get(server.url("/topics/tenantB/events")).bearer_auth(&b)).await;
    let publish = |token: &str, topic: &str, data: &str| {
        server
            .client
            .post(server.url(&format!("/topics/{topic}/events")))
            .bearer_auth(token)
            .header("Idempotency-Key", "order-1")
            .json(&json!({"data": data}))
            .send()
    };
    let from_a = publish(&a, "tenantA", "a's order").await.unwrap();
    assert_eq!(from_a.status(), StatusCode::CREATED);
    let from_a: Value = from_a.json().await.unwrap();
    let from_b = publish(&b, "tenantB", "b's order").await.unwrap();
    assert_eq!(from_b.status(), StatusCode::CREATED);
    assert!(from_b.headers().get("idempotent-replayed").is_none(), "B's publish is not a replay of A's");
    let from_b: Value = from_b.json().await.unwrap();
    assert_eq!(from_b["topic"], "tenantB", "B learns nothing of A's topic: {from_b}");
    assert_ne!(from_b["id"], from_a["id"]);
    let event = b_stream.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (from_b["id"].as_str().unwrap(), "b's order"));

    // Batches: a key stands for the whole batch, within its caller's keys.
    let batch = |token: &str, key: &str, body: Value| {
        server.client.post(server.url("/publish")).bearer_auth(token).header("Idempotency-Key", key).json(&body).send()
    };
    let body = json!([{"topic": "tenantB", "data": "1"}, {"topic": "tenantB", "data": "2"}]);
    let first = batch(&b, "batch-1", body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    let retried = batch(&b, "batch-1", body.clone()).await.unwrap();
    assert_eq!(retried.status(), StatusCode::CREATED);
    assert_eq!(retried.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(retried.json::<Value>().await.unwrap(), first, "the retry answers with the first receipts");
    let changed = batch(&b, "batch-1", json!([{"topic": "tenantB", "data": "1"}])).await.unwrap();
    expect_error(changed, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    // B's single-publish key is not B's batch key's business either way.
    let other_shape = batch(&b, "order-1", body).await.unwrap();
    expect_error(other_shape, StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").await;
    // A's batch with B's batch key is A's own.
    let a_batch = batch(&a, "batch-1", json!([{"topic": "tenantA", "data": "x"}])).await.unwrap();
    assert_eq!(a_batch.status(), StatusCode::CREATED);
    assert!(a_batch.headers().get("idempotent-replayed").is_none());

    // B's stream got each of B's events once, and nothing else.
    server.publish_data("tenantB", "sentinel").await;
    assert_eq!(b_stream.next_data(3).await, ["1", "2", "sentinel"]);
}
