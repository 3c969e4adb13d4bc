//! Integration tests of the Mercure door (`/.well-known/mercure`): the real
//! server on a real socket (in this process), with clients written by others:
//! Symfony's Mercure component under php-cli publishing (`php.rs`), and
//! headless Chromium's own `EventSource` subscribing (`browser.rs`).
//!
//! Their programs come from Debian and npm: `scripts/install-test-deps`
//! installs them. A missing one fails its test (it is not skipped).

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod php;

use std::{ffi::OsStr, path::PathBuf, time::Duration};

use common::*;
use herald_server::config::{Config, Settings, mercure::MercureSettings};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};

/// Where the door is.
const DOOR: &str = "/.well-known/mercure";

/// The longest a program of others (php, node and Chromium) may run; they
/// start slowly on a busy machine.
const PROGRAM_LIMIT: Duration = Duration::from_secs(90);

/// A server with the Mercure door open, its `--mercure*` settings as
/// `adjust` leaves them (parsed and validated as the command line's are).
async fn door_server(adjust: impl FnOnce(&mut MercureSettings)) -> TestServer {
    let mut settings = Settings::defaults();
    settings.memory = "true".into();
    settings.token.jwt_secret = Some(SECRET.into());
    settings.mercure.mercure = "true".into();
    adjust(&mut settings.mercure);
    let mercure = match Config::from_settings(&settings) {
        Ok(config) => config.mercure,
        Err(errors) => panic!("invalid Mercure settings: {errors:?}"),
    };
    assert!(mercure.is_some(), "--mercure opens the door");
    TestServer::start_with(|config| config.mercure = mercure).await
}

/// A token carrying Mercure's 0.x claim `mercure` = `grants`, signed with
/// the server's own secret (the door's key unless one is set), without `exp`.
fn mercure_token(grants: Value) -> String {
    sign_hs256(&json!({ "mercure": grants }), SECRET)
}

/// The door's URL subscribing to `selectors`.
fn subscribe_url(server: &TestServer, selectors: &[&str]) -> String {
    let query =
        form_urlencoded::Serializer::new(String::new()).extend_pairs(selectors.iter().map(|s| ("topic", s))).finish();
    server.url(&format!("{DOOR}?{query}"))
}

/// Publishes the form `fields` with `token`, expects 200 `text/plain`, and
/// returns the body: the update's id.
async fn publish_form(server: &TestServer, token: &str, fields: &[(&str, &str)]) -> String {
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let response = server
        .client
        .post(server.url(DOOR))
        .bearer_auth(token)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("publish request");
    let status = response.status();
    let content_type =
        response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let text = response.text().await.expect("publish body");
    assert_eq!(status, StatusCode::OK, "publish {fields:?}: {text}");
    assert!(content_type.starts_with("text/plain"), "publish answered `{content_type}`: {text}");
    text
}

/// A file of this crate's tests.
fn test_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(path)
}

/// `program` as a command that is killed when dropped, and sees no proxy
/// (the server is on loopback).
fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    for proxy in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(proxy);
    }
    command.kill_on_drop(true);
    command
}

/// What to say when `program` cannot be started.
fn missing(program: &str, error: &std::io::Error) -> String {
    format!("cannot run `{program}` ({error}): run scripts/install-test-deps")
}
