//! Integration tests of the Mercure door (`/.well-known/mercure`): the real
//! server on a real socket, real HTTP clients, SSE parsed by the independent
//! `eventsource-stream` crate; and clients written for Mercure by others:
//! Symfony's Mercure component under php-cli publishing (`php.rs`), headless
//! Chromium's own `EventSource` subscribing (`browser.rs`). Their programs
//! come from Debian and npm (`scripts/install-test-deps`); a missing one
//! fails its test, it is not skipped.

#[path = "../common/mod.rs"]
mod common;

mod browser;
mod form;
mod php;
mod presence;
mod protocol;

use std::{ffi::OsStr, path::PathBuf, time::Duration};

use common::*;
use herald_server::{
    auth::Verifier,
    config::{Config, Settings},
};
use reqwest::{RequestBuilder, Response, StatusCode, header};
use serde_json::{Value, json};

/// A server with the door on, with `adjust` applied to its settings.
pub async fn door_server(adjust: impl FnOnce(&mut Settings)) -> TestServer {
    let mut settings = Settings::defaults();
    settings.memory = "true".into();
    settings.token.jwt_secret = Some(SECRET.into());
    settings.mercure.mercure = "true".into();
    adjust(&mut settings);
    let mut config = Config::from_settings(&settings).unwrap_or_else(|errors| panic!("settings: {errors:?}"));
    config.shutdown_grace = Duration::from_secs(2);
    let verifier = Verifier::new(&config, None).expect("verifier");
    TestServer::start_config(config, verifier).await
}

/// A 0.x token with `claim` as its `mercure` claim and no `exp` (as
/// Mercure's own publishers mint them), signed with the server's secret.
pub fn mercure_token(claim: Value) -> String {
    sign_hs256(&json!({ "mercure": claim }), SECRET)
}

/// A token that may publish anything.
pub fn publisher() -> String {
    mercure_token(json!({ "publish": ["*"] }))
}

/// The door's URL with `query`.
pub fn door_url(server: &TestServer, query: &str) -> String {
    server.url(&format!("/.well-known/mercure{query}"))
}

/// Posts the form `fields` with `token` in the header.
pub async fn post_form(server: &TestServer, token: &str, fields: &[(&str, &str)]) -> Response {
    let body = form(fields);
    let request = server.client.post(door_url(server, "")).bearer_auth(token);
    let request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
    within(WAIT, "the publish", request.send()).await.expect("publish request")
}

/// Publishes `fields` as any publisher; returns the update's id.
pub async fn publish(server: &TestServer, fields: &[(&str, &str)]) -> String {
    let response = post_form(server, &publisher(), fields).await;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = response.text().await.expect("publish body");
    assert_eq!(status, StatusCode::OK, "publish: {body}");
    assert_eq!(content_type.unwrap(), "text/plain; charset=utf-8");
    body
}

/// `fields` urlencoded.
pub fn form(fields: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (key, value) in fields {
        form.append_pair(key, value);
    }
    form.finish()
}

/// A subscription request for `query` (`?topic=…`).
pub fn subscription(server: &TestServer, query: &str) -> RequestBuilder {
    server.client.get(door_url(server, query))
}

/// An open stream of `query` with `token` in the header (or none).
pub async fn subscribe(server: &TestServer, query: &str, token: Option<&str>) -> Sse {
    let request = subscription(server, query);
    Sse::open(match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    })
    .await
}

/// `text` as a query parameter value.
pub fn q(text: &str) -> String {
    form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// The longest a program of others (php, node and Chromium) may run; they
/// start slowly on a busy machine.
pub const PROGRAM_LIMIT: Duration = Duration::from_secs(90);

/// A file of this crate's tests.
pub fn test_file(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests").join(path)
}

/// `program` as a command that is killed when dropped and sees no proxy
/// (the server is on loopback).
pub fn command(program: impl AsRef<OsStr>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    for proxy in ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(proxy);
    }
    command.kill_on_drop(true);
    command
}

/// What to say when `program` cannot be started.
pub fn missing(program: &str, error: &std::io::Error) -> String {
    format!("cannot run `{program}` ({error}): run scripts/install-test-deps")
}

/// A 1.0 token (`typ: at+jwt`) granting `details` as its
/// `authorization_details`, valid for an hour.
pub fn at_jwt(details: Value) -> String {
    let mut head = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    head.typ = Some("at+jwt".into());
    let claims = json!({ "authorization_details": details, "exp": now() + 3600, "sub": "someone" });
    jsonwebtoken::encode(&head, &claims, &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes())).expect("sign")
}
