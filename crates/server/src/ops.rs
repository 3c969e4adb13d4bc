//! The operators' routes: `/metrics` and the `/admin` dashboard, served on
//! the public listener or, with `--internal-listen`, on their own.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use herald_core::{ConnectionSnapshot, Grants, Hub};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::state::AppState;

/// `/metrics` and `/admin`.
pub fn router(state: AppState) -> Router {
    let options = herald_admin::Options {
        rows: state.config.dashboard_rows,
        heartbeat: state.config.heartbeat,
        // `/inspector` belongs to the public API's listener.
        inspector: state.config.internal_listen.is_none(),
    };
    let dashboard = herald_admin::router(Arc::new(Source(state.clone())), options);
    Router::new().route("/metrics", get(metrics)).with_state(state).nest("/admin", dashboard)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::metrics::render(&state);
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    response
}

/// The server as the dashboard sees it.
struct Source(AppState);

impl herald_admin::AdminSource for Source {
    fn hub(&self) -> &Hub {
        &self.0.hub
    }

    fn connections(&self) -> Vec<ConnectionSnapshot> {
        self.0.registry.snapshot()
    }

    fn oldest_connections(&self, limit: usize) -> (usize, Vec<ConnectionSnapshot>) {
        self.0.registry.oldest(limit)
    }

    fn disconnect(&self, id: u64) -> bool {
        self.0.registry.disconnect(id)
    }

    fn tcp_connections(&self) -> usize {
        self.0.connections.open()
    }

    fn metrics_text(&self) -> String {
        crate::metrics::render(&self.0)
    }

    fn delivery_latency(&self) -> Vec<(f64, u64)> {
        crate::metrics::delivery_latency()
    }

    fn authorize(&self, token: &str) -> Result<Grants, String> {
        self.0.verifier.verify(token).map(|grants| (*grants).clone()).map_err(|e| e.to_string())
    }

    fn started_ms(&self) -> u64 {
        self.0.started_ms
    }

    fn shutdown(&self) -> CancellationToken {
        self.0.shutdown.clone()
    }

    fn tasks(&self) -> TaskTracker {
        self.0.tasks.clone()
    }

    fn cluster(&self) -> Option<herald_admin::ClusterNode> {
        self.0.redis.as_ref().map(|redis| herald_admin::ClusterNode {
            node: redis.node_id().to_owned(),
            durability: redis.durability().label(),
        })
    }
}
