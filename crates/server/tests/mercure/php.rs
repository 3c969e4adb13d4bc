//! A Mercure publisher written by others: Symfony's Mercure component
//! (Debian's php-symfony-mercure, 0.6.x) under php-cli, through its
//! `Hub`/`Update` API with a token it mints itself (`publish.php`).

use super::*;

/// The door's publisher key, apart from Herald's own (which signs the
/// subscribers' tokens), as Mercure deployments often have it.
const PUBLISHER_SECRET: &str = "php-publisher-key-of-the-mercure-door-0123";
const BOOK: &str = "https://example.com/books/1";
const BOOK_ALTERNATE: &str = "/api/books/1";
const INBOX: &str = "https://example.com/users/42/inbox";
/// Several lines, an empty one among them, and text beyond ASCII.
const PUBLIC_DATA: &str = "{\"title\":\"Germinal\"}\nby Émile Zola\n\n— a novel in seven parts";
const PRIVATE_DATA: &str = "for user 42 only\nsecond line";
const PRIVATE_ID: &str = "inbox-message-1";
const PRIVATE_TYPE: &str = "inbox";

/// Runs `publish.php` against `server`'s door and returns the ids it printed
/// (`private`, `public`).
async fn publish_with_php(server: &TestServer) -> (String, String) {
    let selectors = json!(["https://example.com/books/{id}", BOOK_ALTERNATE, INBOX]).to_string();
    let run = command("php")
        .arg(test_file("mercure/publish.php"))
        .env("HUB_URL", door_url(server, ""))
        .env("PUBLISHER_SECRET", PUBLISHER_SECRET)
        .env("PUBLISH_SELECTORS", selectors)
        .env("PUBLIC_TOPIC", BOOK)
        .env("ALTERNATE_TOPIC", BOOK_ALTERNATE)
        .env("PRIVATE_TOPIC", INBOX)
        .env("PUBLIC_DATA", PUBLIC_DATA)
        .env("PRIVATE_DATA", PRIVATE_DATA)
        .env("PRIVATE_ID", PRIVATE_ID)
        .env("PRIVATE_TYPE", PRIVATE_TYPE)
        .output();
    let output = within(PROGRAM_LIMIT, "publish.php", run).await.unwrap_or_else(|e| panic!("{}", missing("php", &e)));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "publish.php exited with {}:\n{stdout}\n{stderr}", output.status);
    let ids: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("publish.php printed ({e}): {stdout}"));
    let id = |key: &str| ids[key].as_str().unwrap_or_else(|| panic!("no `{key}` id: {ids}")).to_owned();
    (id("private"), id("public"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symfony_mercure_component_publishes_to_the_door_and_private_updates_reach_only_entitled_subscribers() {
    let server = door_server(|s| s.mercure.mercure_publisher_jwt_key = Some(PUBLISHER_SECRET.into())).await;
    // Both route the two updates here (one by the alternate topic); only the
    // first may receive the private one.
    let entitled_token = mercure_token(json!({ "subscribe": ["https://example.com/users/{user}/inbox"] }));
    let query = format!("?topic={}&topic={}", q("/api/books/{id}"), q(INBOX));
    let mut entitled = subscribe(&server, &query, Some(&entitled_token)).await;
    let other_token = mercure_token(json!({ "subscribe": ["https://example.com/books/{id}"] }));
    let query = format!("?topic={}&topic={}", q("https://example.com/books/{id}"), q(INBOX));
    let mut other = subscribe(&server, &query, Some(&other_token)).await;

    // The component publishes the private update first, then the public one.
    let (private_id, public_id) = publish_with_php(&server).await;
    assert_eq!(private_id, PRIVATE_ID, "the hub returns the publisher's id");
    assert!(public_id.starts_with("urn:herald:"), "a generated id is an IRI: {public_id}");

    let private = entitled.next().await;
    assert_eq!(
        (private.id.as_str(), private.event.as_str(), private.data.as_str()),
        (PRIVATE_ID, PRIVATE_TYPE, PRIVATE_DATA),
        "the entitled subscriber's first update"
    );
    for (who, stream) in [("entitled", &mut entitled), ("unentitled", &mut other)] {
        // For the unentitled one this is its first update: the private one,
        // published before, never reached it.
        let public = stream.next().await;
        assert_eq!(
            (public.id.as_str(), public.event.as_str(), public.data.as_str()),
            (public_id.as_str(), "message", PUBLIC_DATA),
            "the {who} subscriber's public update"
        );
    }

    // Nothing else came: the next update either receives is a later one.
    let publisher = sign_hs256(&json!({ "mercure": { "publish": [BOOK, BOOK_ALTERNATE] } }), PUBLISHER_SECRET);
    let end = [("topic", BOOK), ("topic", BOOK_ALTERNATE), ("data", "the end")];
    let response = post_form(&server, &publisher, &end).await;
    assert_eq!(response.status(), StatusCode::OK, "a publish signed with the publisher key");
    let last = response.text().await.expect("the update's id");
    for (who, stream) in [("entitled", &mut entitled), ("unentitled", &mut other)] {
        let next = stream.next().await;
        assert_eq!((next.id.as_str(), next.data.as_str()), (last.as_str(), "the end"), "the {who} subscriber's next");
    }
}
