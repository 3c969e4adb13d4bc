//! Batch publishes: one commit, all or nothing.

use super::*;

#[tokio::test]
async fn batch_publish_is_in_order_and_seen_by_one_subscriber() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/events?topic=x&topic=y").await;
    let batch = json!([
        {"topic": "x", "data": "1"},
        {"topic": "y", "data": {"n": 2}, "event": "two"},
        {"topic": "x", "data": "3"},
        {"topic": "y", "data": "4"},
    ]);
    let response =
        server.client.post(server.url("/publish")).bearer_auth(server.root_token()).json(&batch).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    let receipts: Vec<Value> = response.json().await.unwrap();
    assert_eq!(receipts.len(), 4);
    let topics: Vec<&str> = receipts.iter().map(|r| r["topic"].as_str().unwrap()).collect();
    assert_eq!(topics, ["x", "y", "x", "y"]);
    let ids: Vec<String> = receipts.iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids in batch order: {ids:?}");
    for (i, expected) in [("1", "message"), ("{\"n\":2}", "two"), ("3", "message"), ("4", "message")].iter().enumerate()
    {
        let event = sse.next().await;
        assert_eq!(
            (event.id.as_str(), event.data.as_str(), event.event.as_str()),
            (ids[i].as_str(), expected.0, expected.1)
        );
    }
}

#[tokio::test]
async fn batch_with_one_forbidden_item_publishes_nothing() {
    let server = TestServer::start().await;
    let mut sse = server.subscribe("/events?topic=a.*&topic=b").await;
    let token = server.token(&["a.*"], &[], false, HOUR);
    let batch = json!([{"topic": "a.1", "data": "x"}, {"topic": "b", "data": "y"}, {"topic": "a.2", "data": "z"}]);
    let response = server.client.post(server.url("/publish")).bearer_auth(&token).json(&batch).send().await.unwrap();
    let message = expect_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(message.contains("item 1"), "{message}");

    for (body, status, code) in [
        (json!([]), StatusCode::BAD_REQUEST, "empty_batch"),
        (json!([{"topic": "a.1"}]), StatusCode::BAD_REQUEST, "missing_data"),
        (json!([{"topic": "a 1", "data": "x"}]), StatusCode::BAD_REQUEST, "invalid_topic"),
        (json!({"topic": "a.1", "data": "x"}), StatusCode::BAD_REQUEST, "invalid_json"),
        (
            json!([{"topic": "a.1", "data": "x", "event": "herald.fake"}]),
            StatusCode::BAD_REQUEST,
            "reserved_event_type",
        ),
    ] {
        let response = server.client.post(server.url("/publish")).bearer_auth(&token).json(&body).send().await.unwrap();
        expect_error(response, status, code).await;
    }
    // Nothing of the refused batches reached the stream: the next event is this one.
    let after = server.publish_data("a.1", "after").await;
    let event = sse.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (after.as_str(), "after"));
}
