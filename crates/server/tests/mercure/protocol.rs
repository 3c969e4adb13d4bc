//! The protocol as Mercure's clients speak it: publish, subscribe,
//! selectors, private updates, tokens and where they come from, ids.

use super::*;

#[tokio::test]
async fn a_form_update_reaches_subscribers_with_its_id_type_retry_and_every_line() {
    let server = door_server(|_| {}).await;
    let mut books = subscribe(&server, "?topic=https://example.com/books/{id}", Some(&publisher())).await;
    assert_eq!(books.headers["content-type"], "text/event-stream");
    assert_eq!(books.headers["cache-control"], "private, no-cache, no-store, must-revalidate, max-age=0");
    assert!(books.headers.get("last-event-id").is_none(), "no id asked, none said");

    let id = publish(
        &server,
        &[
            ("topic", "https://example.com/books/1"),
            ("data", "line one\r\nline two\rline three\nline four"),
            ("type", "book.updated"),
            ("retry", "2500"),
        ],
    )
    .await;
    assert!(id.starts_with("urn:herald:"), "{id}");
    let event = books.next().await;
    assert_eq!(event.id, id);
    assert_eq!(event.event, "book.updated");
    assert_eq!(event.data, "line one\nline two\nline three\nline four");
    assert_eq!(event.retry, Some(Duration::from_millis(2500)));

    // Empty data still dispatches; a custom id is the event's id.
    let custom = publish(&server, &[("topic", "https://example.com/books/2"), ("id", "book-2-v1")]).await;
    assert_eq!(custom, "book-2-v1");
    let event = books.next().await;
    assert_eq!((event.id.as_str(), event.data.as_str(), event.event.as_str()), ("book-2-v1", "", "message"));
}

#[tokio::test]
async fn templates_match_as_mercure_matches_them() {
    let server = door_server(|s| s.mercure.mercure_anonymous = "true".into()).await;
    // (selector, topics it must receive, topics it must not)
    let cases: &[(&str, &[&str], &[&str])] = &[
        (
            "https://example.com/books/{id}",
            &["https://example.com/books/1", "https://example.com/books/"],
            &["https://example.com/books/1/reviews", "https://example.com/books/a:b"],
        ),
        ("/chat{/room}", &["/chat/lobby", "/chat"], &["/chat/a/b"]),
        ("/search{?q,lang}", &["/search?q=x&lang=en", "/search?q=%C3%A9"], &["/search?q=é"]),
        ("/files/{+path}", &["/files/a/b/c.txt"], &[]),
        ("*", &["anything at all"], &[]),
        ("plain", &["plain"], &["plain/1"]),
    ];
    for (selector, yes, no) in cases {
        let mut stream = subscribe(&server, &format!("?topic={}", q(selector)), None).await;
        let mut expected = Vec::new();
        for topic in no.iter().chain(yes.iter()) {
            let id = publish(&server, &[("topic", topic), ("data", topic)]).await;
            if yes.contains(topic) {
                expected.push((id, (*topic).to_owned()));
            }
        }
        for (id, topic) in expected {
            let event = stream.next().await;
            assert_eq!((event.id, event.data), (id, topic), "selector {selector}");
        }
    }
}

#[tokio::test]
async fn private_updates_go_only_to_tokens_whose_grants_match_one_of_their_topics() {
    let server = door_server(|s| s.mercure.mercure_anonymous = "true".into()).await;
    let topics = "?topic=https://example.com/alt/{id}";
    let entitled = mercure_token(json!({ "subscribe": ["https://example.com/alt/{id}"] }));
    let other = mercure_token(json!({ "subscribe": ["https://example.com/other"] }));
    let mut entitled = subscribe(&server, topics, Some(&entitled)).await;
    let mut other = subscribe(&server, topics, Some(&other)).await;
    let mut anonymous = subscribe(&server, topics, None).await;

    // Canonical topic elsewhere; the alternate routes and authorises it.
    let private = publish(
        &server,
        &[
            ("topic", "https://example.com/canonical/1"),
            ("topic", "https://example.com/alt/1"),
            ("data", "secret"),
            ("private", "on"),
        ],
    )
    .await;
    let public = publish(&server, &[("topic", "https://example.com/alt/2"), ("data", "open")]).await;
    let event = entitled.next().await;
    assert_eq!((event.id, event.data), (private, "secret".to_owned()));
    assert_eq!(entitled.next().await.id, public);
    // The others' next event is the public one: the private one never came.
    assert_eq!(other.next().await.id, public);
    assert_eq!(anonymous.next().await.id, public);

    // The selector routes but never authorises: `*` does not open private updates.
    let mut everything = subscribe(&server, "?topic=*", Some(&mercure_token(json!({ "subscribe": [] })))).await;
    publish(&server, &[("topic", "https://example.com/alt/3"), ("private", "")]).await;
    let last = publish(&server, &[("topic", "https://example.com/alt/4")]).await;
    assert_eq!(everything.next().await.id, last);
}

#[tokio::test]
async fn both_dialects_select_in_one_stream() {
    let server = door_server(|s| s.mercure.mercure_anonymous = "true".into()).await;
    let query = format!("?topic={}&match={}", q("/a/{x}"), q("/b/{x}"));
    let mut stream = subscribe(&server, &query, None).await;
    let a = publish(&server, &[("topic", "/a/1")]).await;
    publish(&server, &[("topic", "/b/1")]).await; // `match` is exact: no template
    let b = publish(&server, &[("topic", "/b/{x}")]).await;
    assert_eq!(stream.next().await.id, a);
    assert_eq!(stream.next().await.id, b);

    let bad = subscription(&server, "?matchAll=x").send().await.unwrap();
    expect_error(bad, StatusCode::BAD_REQUEST, "invalid_request").await;
    let none = subscription(&server, "").send().await.unwrap();
    expect_error(none, StatusCode::BAD_REQUEST, "missing_topic").await;
}

#[tokio::test]
async fn publishing_answers_401_without_a_publisher_token_and_403_outside_its_grants() {
    let server = door_server(|_| {}).await;
    let fields = [("topic", "https://example.com/books/1"), ("data", "x")];
    let request = server.client.post(door_url(&server, "")).body(form(&fields));
    expect_error(request.send().await.unwrap(), StatusCode::UNAUTHORIZED, "missing_token").await;
    let forged = sign_hs256(&json!({ "mercure": { "publish": ["*"] } }), "another-secret-that-is-long-enough-0123");
    expect_error(post_form(&server, &forged, &fields).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let subscriber_only = mercure_token(json!({ "subscribe": ["*"] }));
    expect_error(post_form(&server, &subscriber_only, &fields).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let narrow = mercure_token(json!({ "publish": ["https://example.com/books/{id}"] }));
    assert_eq!(post_form(&server, &narrow, &fields).await.status(), StatusCode::OK);
    // Every topic must be granted, alternates included.
    let both = [("topic", "https://example.com/books/1"), ("topic", "https://example.com/authors/1")];
    expect_error(post_form(&server, &narrow, &both).await, StatusCode::FORBIDDEN, "forbidden").await;
    let expired = sign_hs256(&json!({ "mercure": { "publish": ["*"] }, "exp": now() - 600 }), SECRET);
    expect_error(post_form(&server, &expired, &fields).await, StatusCode::UNAUTHORIZED, "invalid_token").await;
}

#[tokio::test]
async fn bad_updates_are_refused_with_what_is_wrong() {
    let server = door_server(|s| {
        s.max_body_bytes = "2048".into();
        s.max_event_bytes = "1024".into();
    })
    .await;
    let token = publisher();
    type Case<'a> = (&'a [(&'a str, &'a str)], StatusCode, &'a str);
    let cases: &[Case] = &[
        (&[("data", "no topic")], StatusCode::BAD_REQUEST, "missing_topic"),
        (&[("topic", "t"), ("retry", "soon")], StatusCode::BAD_REQUEST, "invalid_retry"),
        (&[("topic", "t"), ("id", "#fragment")], StatusCode::BAD_REQUEST, "invalid_id"),
        (&[("topic", "t"), ("id", "a\nb")], StatusCode::BAD_REQUEST, "invalid_id"),
        (&[("topic", "t"), ("id", "earliest")], StatusCode::BAD_REQUEST, "invalid_id"),
        (&[("topic", "t"), ("id", "urn:herald:00000001-0000000000000001")], StatusCode::BAD_REQUEST, "invalid_id"),
        (&[("topic", "t"), ("type", "a\rb")], StatusCode::BAD_REQUEST, "invalid_event_type"),
        (&[("topic", "t"), ("type", "herald.gap")], StatusCode::BAD_REQUEST, "reserved_event_type"),
        (&[("topic", "/.well-known/mercure/subscriptions/x/y")], StatusCode::FORBIDDEN, "forbidden"),
    ];
    for (fields, status, code) in cases {
        expect_error(post_form(&server, &token, fields).await, *status, code).await;
    }
    let big = "x".repeat(4096);
    expect_error(
        post_form(&server, &token, &[("topic", "t"), ("data", &big)]).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    )
    .await;
    // Older Symfony clients send no Content-Type: still a form.
    let request = server.client.post(door_url(&server, "")).bearer_auth(&token).body("topic=t&data=plain");
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn tokens_come_from_the_header_the_query_or_either_cookie_the_header_first() {
    let server = door_server(|s| s.mercure.mercure_cookie_name = "appAuth".into()).await;
    let entitled = mercure_token(json!({ "subscribe": ["/private"] }));
    let query = "?topic=/private";
    let private = [("topic", "/private"), ("private", "on")];

    let mut streams = [
        Sse::open(subscription(&server, query).bearer_auth(&entitled)).await,
        Sse::open(subscription(&server, &format!("{query}&authorization={entitled}"))).await,
        Sse::open(subscription(&server, query).header(header::COOKIE, format!("appAuth={entitled}"))).await,
        Sse::open(
            subscription(&server, query)
                .header(header::COOKIE, format!("x=1; __Secure-mercure_access_token={entitled}")),
        )
        .await,
        // The header wins: this stream's token is the one without grants.
        Sse::open(
            subscription(&server, query)
                .bearer_auth(mercure_token(json!({ "subscribe": [] })))
                .header(header::COOKIE, format!("appAuth={entitled}")),
        )
        .await,
    ];
    let secret = publish(&server, &private).await;
    let open = publish(&server, &[("topic", "/private")]).await;
    for (i, stream) in streams.iter_mut().enumerate() {
        let want = if i == 4 { &open } else { &secret };
        assert_eq!(&stream.next().await.id, want, "stream {i}");
    }

    // The default cookie name is not this server's; without a token, 401.
    let wrong_cookie = subscription(&server, query).header(header::COOKIE, format!("mercureAuthorization={entitled}"));
    expect_error(wrong_cookie.send().await.unwrap(), StatusCode::UNAUTHORIZED, "missing_token").await;
    // A malformed header is refused even beside a good cookie.
    let malformed = subscription(&server, query)
        .header(header::AUTHORIZATION, "Token abc")
        .header(header::COOKIE, format!("appAuth={entitled}"));
    expect_error(malformed.send().await.unwrap(), StatusCode::UNAUTHORIZED, "invalid_token").await;

    // Query tokens can be turned off.
    let strict = door_server(|s| s.mercure.mercure_query_token = "false".into()).await;
    let request = subscription(&strict, &format!("{query}&authorization={entitled}"));
    expect_error(request.send().await.unwrap(), StatusCode::UNAUTHORIZED, "missing_token").await;
}

#[tokio::test]
async fn anonymous_subscribers_get_public_updates_only_when_allowed_and_a_bad_token_is_never_anonymous() {
    let closed = door_server(|_| {}).await;
    expect_error(subscription(&closed, "?topic=x").send().await.unwrap(), StatusCode::UNAUTHORIZED, "missing_token")
        .await;
    let open = door_server(|s| s.mercure.mercure_anonymous = "true".into()).await;
    let forged = sign_hs256(&json!({ "mercure": { "subscribe": ["*"] } }), "another-secret-that-is-long-enough-0123");
    let bad = subscription(&open, "?topic=x").bearer_auth(forged);
    expect_error(bad.send().await.unwrap(), StatusCode::UNAUTHORIZED, "invalid_token").await;
    let mut anonymous = subscribe(&open, "?topic=x", None).await;
    publish(&open, &[("topic", "x"), ("private", "on")]).await;
    let public = publish(&open, &[("topic", "x")]).await;
    assert_eq!(anonymous.next().await.id, public);
}

#[tokio::test]
async fn a_publish_with_the_cookie_must_come_from_an_allowed_origin() {
    let server = door_server(|s| s.mercure.mercure_publish_origins = vec!["https://app.example".into()]).await;
    let cookie = format!("mercureAuthorization={}", publisher());
    let post = |origin: Option<&str>| {
        let request = server.client.post(door_url(&server, "")).header(header::COOKIE, &cookie).body("topic=t");
        match origin {
            Some(origin) => request.header(header::ORIGIN, origin),
            None => request,
        }
    };
    expect_error(post(None).send().await.unwrap(), StatusCode::FORBIDDEN, "forbidden").await;
    expect_error(post(Some("https://evil.example")).send().await.unwrap(), StatusCode::FORBIDDEN, "forbidden").await;
    assert_eq!(post(Some("https://app.example")).send().await.unwrap().status(), StatusCode::OK);
    // The header's token needs no origin: it is not sent by the browser on its own.
    assert_eq!(post_form(&server, &publisher(), &[("topic", "t")]).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn resume_by_any_id_spelling_and_earliest_with_the_headers_mercure_clients_read() {
    let server = door_server(|s| s.mercure.mercure_anonymous = "true".into()).await;
    let first = publish(&server, &[("topic", "r"), ("data", "1")]).await;
    let custom = publish(&server, &[("topic", "r"), ("data", "2"), ("id", "two")]).await;
    let third = publish(&server, &[("topic", "r"), ("data", "3")]).await;
    // Reuse: the latest event with that id wins.
    let reused = publish(&server, &[("topic", "r"), ("data", "4"), ("id", "two")]).await;
    assert_eq!((custom.as_str(), reused.as_str()), ("two", "two"));
    let fifth = publish(&server, &[("topic", "r"), ("data", "5")]).await;

    // The header, each query spelling, a bare Herald id.
    let bare = first.trim_start_matches("urn:herald:").to_owned();
    let requests = [
        subscription(&server, "?topic=r").header("last-event-id", &first),
        subscription(&server, &format!("?topic=r&lastEventID={}", q(&first))),
        subscription(&server, &format!("?topic=r&Last-Event-ID={}", q(&first))),
        subscription(&server, &format!("?topic=r&lastEventId={}", q(&first))),
        subscription(&server, &format!("?topic=r&last_event_id={bare}")),
    ];
    for request in requests {
        let mut stream = Sse::open(request).await;
        let said = stream.headers["last-event-id"].to_str().unwrap().to_owned();
        assert!(said == first || said == bare, "{said}");
        assert_eq!(stream.headers["mercure-last-event-id"], stream.headers["last-event-id"]);
        assert_eq!(stream.next_data(4).await, ["2", "3", "4", "5"]);
    }
    let mut after_custom = Sse::open(subscription(&server, "?topic=r&lastEventID=two")).await;
    assert_eq!(after_custom.headers["last-event-id"], "two");
    assert_eq!(after_custom.next().await.id, fifth, "after the latest `two`");

    let mut earliest = Sse::open(subscription(&server, "?topic=r&lastEventID=earliest")).await;
    assert_eq!(earliest.headers["last-event-id"], "earliest");
    let ids: Vec<String> = [earliest.next().await, earliest.next().await].into_iter().map(|e| e.id).collect();
    assert_eq!(ids, [first.clone(), "two".to_owned()]);
    assert_eq!(earliest.next().await.id, third);

    // An unknown id: `earliest`, a gap notice without an id, then everything.
    let mut unknown = Sse::open(subscription(&server, "?topic=r").header("last-event-id", "never-published")).await;
    assert_eq!(unknown.headers["last-event-id"], "earliest");
    let notice = unknown.next().await;
    assert_eq!(notice.event, "herald.gap");
    assert_eq!(notice.id, "", "a notice leaves the client's last event id alone");
    assert_eq!(unknown.next().await.id, first);
}

/// Publishes updates 1 to 4 on topic `e`, then resumes after the first.
async fn resume_after_the_first_of_four(server: &TestServer) -> Sse {
    let first = publish(server, &[("topic", "e"), ("data", "1")]).await;
    for data in ["2", "3", "4"] {
        publish(server, &[("topic", "e"), ("data", data)]).await;
    }
    Sse::open(subscription(server, "?topic=e").header("last-event-id", &first)).await
}

#[tokio::test]
async fn an_evicted_id_says_earliest_and_the_gap_event_can_be_turned_off() {
    for gap_event in [true, false] {
        let server = door_server(|s| {
            s.mercure.mercure_anonymous = "true".into();
            s.mercure.mercure_gap_event = gap_event.to_string();
            s.retention_events = "2".into();
            s.ring_events = "2".into();
        })
        .await;
        let mut stream = resume_after_the_first_of_four(&server).await;
        assert_eq!(stream.headers["last-event-id"], "earliest");
        if gap_event {
            let notice = stream.next().await;
            assert_eq!((notice.event.as_str(), notice.id.as_str()), ("herald.gap", ""));
            assert!(notice.data.contains("history_trimmed"), "{}", notice.data);
        }
        assert_eq!(stream.next_data(2).await, ["3", "4"], "2 is lost");
    }
}

#[tokio::test]
async fn the_doors_history_keeps_its_own_number_of_updates() {
    let server = door_server(|s| {
        s.mercure.mercure_anonymous = "true".into();
        s.mercure.mercure_retention_events = Some("2".into());
        s.retention_events = "100".into();
        // Small enough that resumes read the store, not the ring.
        s.ring_events = "2".into();
    })
    .await;
    let mut stream = resume_after_the_first_of_four(&server).await;
    assert_eq!(stream.headers["last-event-id"], "earliest", "the door kept 2 updates");
    assert_eq!(stream.next().await.event, "herald.gap");
    assert_eq!(stream.next_data(2).await, ["3", "4"], "2 is lost");
    // A native topic keeps its 100: a resume from its first event misses nothing.
    let native_first = server.publish_data("plain", "1").await;
    for data in ["2", "3", "4"] {
        server.publish_data("plain", data).await;
    }
    let native = server.client.get(server.url("/events?topic=plain")).bearer_auth(server.root_token());
    let mut native = Sse::open(native.header("Last-Event-ID", &native_first)).await;
    assert_eq!(native.next_data(3).await, ["2", "3", "4"]);
}

#[tokio::test]
async fn the_door_is_closed_unless_turned_on_and_its_topic_is_the_hubs() {
    let server = TestServer::start().await;
    let response = server.client.get(server.url("/.well-known/mercure?topic=x")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let door = door_server(|_| {}).await;
    let native = door.client.post(door.url("/topics/$mercure/events")).bearer_auth(door.root_token());
    let response = native.json(&json!({ "data": "forged" })).send().await.unwrap();
    expect_error(response, StatusCode::BAD_REQUEST, "invalid_topic").await;
    // A native `*` subscriber never sees the door's updates (private ones included).
    let mut everything = door.subscribe("/events?topic=*").await;
    publish(&door, &[("topic", "x"), ("private", "on")]).await;
    let native_id = door.publish_data("plain", "native").await;
    assert_eq!(everything.next().await.id, native_id);
}

#[tokio::test]
async fn the_1_0_dialect_matches_url_patterns_with_at_jwt_tokens() {
    let server = door_server(|_| {}).await;
    let detail = |actions: &[&str], topics: Value| json!([{ "type": "https://mercure.rocks/authorization-detail", "actions": actions, "topics": topics }]);
    let subscriber = at_jwt(detail(&["subscribe"], json!([{ "match": "/books/:id", "match_type": "urlpattern" }])));
    let publisher = at_jwt(detail(&["publish"], json!([{ "match": "/books/*", "match_type": "urlpattern" }])));
    let query = format!("?match_urlpattern={}", q("/books/:id"));
    let mut stream = Sse::open(subscription(&server, &query).bearer_auth(&subscriber)).await;

    let private = post_form(&server, &publisher, &[("topic", "/books/1"), ("private", "on"), ("data", "p")]).await;
    assert_eq!(private.status(), StatusCode::OK);
    let private = private.text().await.unwrap();
    let elsewhere = post_form(&server, &publisher, &[("topic", "/authors/1")]).await;
    expect_error(elsewhere, StatusCode::FORBIDDEN, "forbidden").await;
    post_form(&server, &publisher, &[("topic", "/books/1/reviews")]).await;
    let event = stream.next().await;
    assert_eq!((event.id, event.data), (private, "p".to_owned()));

    // Never in the query string; exp is required.
    let in_query = subscription(&server, &format!("{query}&authorization={subscriber}"));
    expect_error(in_query.send().await.unwrap(), StatusCode::UNAUTHORIZED, "invalid_token").await;
    let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    head.typ = Some("at+jwt".into());
    let claims = json!({ "authorization_details": detail(&["subscribe"], json!([{ "match": "/x" }])) });
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let no_exp = jsonwebtoken::encode(&head, &claims, &key).unwrap();
    let request = subscription(&server, "?match=/x").bearer_auth(no_exp);
    expect_error(request.send().await.unwrap(), StatusCode::UNAUTHORIZED, "invalid_token").await;
    let bad = subscription(&server, &format!("?match_urlpattern={}", q("/books/("))).bearer_auth(&subscriber);
    expect_error(bad.send().await.unwrap(), StatusCode::BAD_REQUEST, "invalid_request").await;
}
