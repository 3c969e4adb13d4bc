//! Resuming with Last-Event-ID, and the gap notice when history is gone.

use super::*;

#[tokio::test]
async fn resume_by_header_or_query_and_the_header_wins() {
    let server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 1..=4 {
        ids.push(server.publish_data("r", &format!("e{i}")).await);
    }
    let token = server.root_token();
    let base = server.url("/topics/r/events");

    // Header: everything after e1.
    let mut sse =
        Sse::open(server.client.get(&base).bearer_auth(&token).header("Last-Event-ID", ids[0].as_str())).await;
    assert_eq!(sse.next_data(3).await, ["e2", "e3", "e4"]);
    // Query: everything after e2.
    let mut by_query =
        Sse::open(server.client.get(format!("{base}?last_event_id={}", ids[1])).bearer_auth(&token)).await;
    let event = by_query.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str()), (ids[2].as_str(), "e3"));
    assert_eq!(by_query.next().await.data, "e4");
    // Both: the header (e1) wins over the query (e3).
    let mut both = Sse::open(
        server
            .client
            .get(format!("{base}?last_event_id={}", ids[2]))
            .bearer_auth(&token)
            .header("Last-Event-ID", ids[0].as_str()),
    )
    .await;
    assert_eq!(both.next_data(3).await, ["e2", "e3", "e4"]);

    // Then live, with nothing repeated.
    server.publish_data("r", "e5").await;
    assert_eq!(sse.next().await.data, "e5");
    assert_eq!(by_query.next().await.data, "e5");
    assert_eq!(both.next().await.data, "e5");
}

#[tokio::test]
async fn resuming_before_retained_history_starts_with_a_gap_notice() {
    let server = TestServer::start_with(|c| {
        c.retention.max_events_per_topic = 3;
        c.hub.ring.max_events = 2;
    })
    .await;
    let mut ids = Vec::new();
    for i in 1..=6 {
        ids.push(server.publish_data("g", &format!("e{i}")).await);
    }
    let mut sse = Sse::open(
        server
            .client
            .get(server.url("/topics/g/events"))
            .bearer_auth(server.root_token())
            .header("Last-Event-ID", &ids[0]),
    )
    .await;
    let gap = sse.next().await;
    assert_eq!(gap.event, "herald.gap");
    let notice: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
    assert_eq!(notice["reason"], "history_trimmed", "{notice}");
    assert_eq!(notice["topic"], "g", "{notice}");
    assert_eq!(notice["after"], ids[0].as_str(), "{notice}");
    assert_eq!(notice["through"], ids[2].as_str(), "e2 and e3 were lost: {notice}");
    let rest: Vec<(String, String)> = {
        let mut rest = Vec::new();
        for _ in 0..3 {
            let e = sse.next().await;
            rest.push((e.id, e.data));
        }
        rest
    };
    assert_eq!(rest, vec![(ids[3].clone(), "e4".into()), (ids[4].clone(), "e5".into()), (ids[5].clone(), "e6".into())]);
}

#[tokio::test]
async fn garbage_huge_and_negative_last_event_ids_open_with_a_gap_notice() {
    let server = TestServer::start().await;
    let huge = "7".repeat(4096);
    for (i, bad) in ["garbage", huge.as_str(), "-1", "deadbeef-00000000000000zz"].into_iter().enumerate() {
        let topic = format!("fresh{i}");
        let mut sse = Sse::open(
            server
                .client
                .get(server.url(&format!("/topics/{topic}/events")))
                .bearer_auth(server.root_token())
                .header("Last-Event-ID", bad),
        )
        .await;
        let gap = sse.next().await;
        assert_eq!(gap.event, "herald.gap", "Last-Event-ID {bad:.20}…");
        let notice: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
        assert_eq!(notice["reason"], "unknown_last_event_id", "{notice}");
        assert!(!gap.data.contains(&huge[..100]), "the bad id is not echoed back whole");
        // The stream then works as usual.
        let id = server.publish_data(&topic, "after").await;
        let event = sse.next().await;
        assert_eq!((event.event.as_str(), event.id.as_str(), event.data.as_str()), ("message", id.as_str(), "after"));
    }
    // Also by query parameter.
    let mut sse = Sse::open(
        server.client.get(server.url("/topics/fresh0/events?last_event_id=nope")).bearer_auth(server.root_token()),
    )
    .await;
    let gap = sse.next().await;
    assert_eq!(gap.event, "herald.gap");
    // An unknown id replays everything retained after the notice.
    assert_eq!(sse.next_data(1).await, ["after"]);
    server.assert_still_serving().await;
}
