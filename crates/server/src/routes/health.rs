//! Liveness and readiness.

use axum::{Json, extract::State, http::StatusCode};
use serde_json::{Value, json};

use crate::state::AppState;

/// `GET /healthz`: the process is up.
pub async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: the store takes writes and the server is not shutting down.
/// With Redis, the answer also says which node this is, how Redis keeps
/// acknowledged events, and since when it has been unreachable.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let (status, text) = if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting_down")
    } else if !state.hub.store_healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable")
    } else {
        (StatusCode::OK, "ready")
    };
    let mut answer = json!({ "status": text, "store": state.hub.store().describe() });
    if let Some(redis) = &state.redis {
        answer["node"] = json!(redis.node_id());
        answer["durability"] = json!(redis.durability().label());
        if let Some(since) = redis.down_since() {
            answer["down_for_seconds"] = json!(since.elapsed().as_secs());
        }
    }
    (status, Json(answer))
}
