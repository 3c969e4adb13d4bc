//! Herald's server: the `herald` binary's HTTP API over the core hub.
//!
//! [`app`] builds the router; [`serve`] runs it on an already bound listener
//! until a shutdown future completes, so tests bind port 0 and embedders
//! choose their own signal.

pub mod auth;
pub mod config;
mod connection;
pub mod error;
pub mod extract;
pub mod limits;
mod routes;
pub mod secret;
mod server;
pub mod store;
pub mod sse;
pub mod state;

use axum::{
    Router,
    http::{HeaderName, HeaderValue, Method, header},
    routing::{get, post},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::Config;
pub use state::AppState;

/// The public API's router.
pub fn app(state: AppState) -> Router {
    let router = Router::new()
        .route("/topics/{topic}/events", get(routes::events::one_topic).post(routes::publish::one))
        .route("/events", get(routes::events::many))
        .route("/publish", post(routes::publish::batch))
        .route("/topics", get(routes::topics::list))
        .route("/topics/{topic}", get(routes::topics::one))
        .route("/healthz", get(routes::health::live))
        .route("/readyz", get(routes::health::ready))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let router = match cors(&state.config.cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    router.with_state(state)
}

/// Runs the API on `listener` until `shutdown` completes, then drains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let router = app(state.clone());
    server::serve(listener, state, router, shutdown).await
}

/// CORS for the configured origins; credentials allowed for the cookie.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(true)
            .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
                HeaderName::from_static("idempotency-key"),
            ])
            .max_age(std::time::Duration::from_secs(3600)),
    )
}
