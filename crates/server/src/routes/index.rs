//! `GET /`: what this server is and where to go from here, so that a first
//! visit does not end on a bare 404. It names public routes only; `/admin`
//! and `/metrics` are listed only when this listener serves them.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, header},
    response::{Html, IntoResponse, Response},
};
use serde_json::{Map, Value, json};

use crate::state::AppState;

/// The links, as `(name, target, what it is)`.
fn links(state: &AppState) -> Vec<(&'static str, &'static str, &'static str)> {
    let mut links = vec![("inspector", "/inspector", "watch a topic's events live")];
    if state.config.internal_listen.is_none() {
        links.push(("admin", "/admin", "the operators' dashboard (admin token)"));
        links.push(("metrics", "/metrics", "Prometheus metrics"));
    }
    links.push(("health", "/healthz", "liveness"));
    links.push(("ready", "/readyz", "readiness"));
    // The package's repository, whose README is the manual.
    let docs = env!("CARGO_PKG_REPOSITORY");
    if !docs.is_empty() {
        links.push(("docs", docs, "documentation (the README)"));
    }
    links
}

/// HTML for a browser, JSON for everything else.
pub async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let links = links(&state);
    let version = env!("CARGO_PKG_VERSION");
    let wants_html = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
    if wants_html {
        let items: String = links
            .iter()
            .map(|(_, target, what)| format!("<li><a href=\"{target}\">{target}</a> — {what}</li>"))
            .collect();
        return Html(format!(
            "<!doctype html><html lang=\"en\"><meta charset=\"utf-8\"><title>Herald</title>\
             <h1>Herald {version}</h1><p>A Server-Sent Events pub/sub hub.</p><ul>{items}</ul></html>"
        ))
        .into_response();
    }
    let links: Map<String, Value> = links.iter().map(|(name, target, _)| ((*name).to_owned(), json!(target))).collect();
    Json(json!({ "name": "herald", "version": version, "links": links })).into_response()
}
