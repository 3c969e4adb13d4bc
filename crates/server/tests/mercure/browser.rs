//! A real browser: Debian's headless Chromium, driven by playwright-core
//! (`tests/browser/mercure.mjs`), subscribes with its own `EventSource` from
//! a page of Herald's origin.

use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};

use super::*;

const CHROMIUM: &str = "/usr/bin/chromium";
/// The pages' selector; both updates' topics match it.
const SELECTOR: &str = "https://example.com/books/{id}";
const TOPIC: &str = "https://example.com/books/7";
const PUBLIC_ID: &str = "https://example.com/books/7#revision-3";
const PRIVATE_ID: &str = "private-note-1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_eventsource_receives_a_form_update_exactly_and_a_private_one_only_with_its_token() {
    assert!(std::path::Path::new(CHROMIUM).exists(), "{CHROMIUM} is missing: run scripts/install-test-deps");
    assert!(
        test_file("browser/node_modules/playwright-core").exists(),
        "npm packages of tests/browser are missing: run scripts/install-test-deps"
    );
    let server = door_server(|s| s.mercure.mercure_anonymous = "true".into()).await;
    let cookie_token = mercure_token(json!({ "subscribe": [TOPIC] }));
    let mut node = command("node")
        .arg(test_file("browser/mercure.mjs"))
        .env("HERALD_URL", server.url(""))
        .env("TOPIC", SELECTOR)
        .env("SUBSCRIBER_TOKEN", cookie_token)
        .env("PUBLIC_ID", PUBLIC_ID)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}", missing("node", &e)));
    let mut stderr = node.stderr.take().expect("piped stderr");
    let errors = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text).await;
        text
    });
    let mut lines = BufReader::new(node.stdout.take().expect("piped stdout")).lines();
    let mut printed = Vec::new();
    // Each line the script prints, until it ends; `None` then.
    let mut next_line = async || {
        let line = within(PROGRAM_LIMIT, "mercure.mjs to print a line", lines.next_line()).await.expect("read stdout");
        printed.extend(line.clone());
        line
    };

    let ready = next_line().await;
    if ready.as_deref() != Some("ready") {
        let status = within(WAIT, "node to exit", node.wait()).await;
        let errors = errors.await.unwrap_or_default();
        panic!("mercure.mjs did not get ready ({status:?}): {ready:?}\n{errors}");
    }
    // The private update first: were it delivered where it must not be, it
    // would come before the public one.
    let private = [("topic", TOPIC), ("data", "only with a token"), ("private", "on"), ("id", PRIVATE_ID)];
    assert_eq!(publish(&server, &private).await, PRIVATE_ID);
    let public = [("topic", TOPIC), ("data", "a\nb\nc"), ("id", PUBLIC_ID)];
    assert_eq!(publish(&server, &public).await, PUBLIC_ID);

    let result = next_line().await;
    let status = within(PROGRAM_LIMIT, "node to exit", node.wait()).await.expect("wait for node");
    let errors = errors.await.unwrap_or_default();
    assert!(status.success(), "mercure.mjs exited with {status}: {printed:?}\n{errors}");
    let received = result.as_deref().and_then(|line| line.strip_prefix("result ")).unwrap_or_else(|| {
        panic!("mercure.mjs printed no result: {printed:?}\n{errors}");
    });
    let received: Value = serde_json::from_str(received).unwrap_or_else(|e| panic!("result ({e}): {received}"));
    let public = json!({ "lastEventId": PUBLIC_ID, "data": "a\nb\nc", "type": "message" });
    let private = json!({ "lastEventId": PRIVATE_ID, "data": "only with a token", "type": "message" });
    assert_eq!(received["anonymous"], json!([public]), "the anonymous page got the public update only");
    assert_eq!(received["entitled"], json!([private, public]), "the page with the cookie's token got both");
}
