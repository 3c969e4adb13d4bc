//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store takes writes and the server is not shutting down.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let store = state.hub.store().describe();
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "shutting_down", "store": store })))
    } else if !state.hub.store_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "store_unavailable", "store": store })))
    } else {
        (StatusCode::OK, Json(json!({ "status": "ready", "store": store })))
    }
}
