//! Herald's server: the `herald` binary's HTTP API over the core hub.
//!
//! [`app`] builds the router; [`serve`] runs it on an already bound listener
//! until a shutdown future completes, so tests bind port 0 and embedders
//! choose their own signal. The hub is the caller's: started before
//! [`serve`], shut down after it returns.
//!
//! Layers, each a module: `transport` (sockets, HTTP/1.1 and HTTP/2, slow
//! clients, the drain), `routes` (the public API) over `event_stream` (the
//! SSE body) and `extract`/`auth` (who is calling), `ops` (metrics and the
//! dashboard), `store` (SQLite), `config` and `state`.

pub mod auth;
pub mod config;
pub mod error;
pub mod event_stream;
pub mod extract;
mod https_redirect;
pub mod mercure;
pub mod metrics;
mod ops;
mod process_stats;
pub mod registry;
mod routes;
pub mod secret;
pub mod state;
pub mod store;
mod sweep;
pub mod tls;
pub mod transport;
mod verified_tokens;

use axum::{
    Router,
    http::{HeaderName, HeaderValue, Method, header},
    routing::{get, post},
};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use config::Config;
pub use state::AppState;

/// The public API's router, with `/metrics` and `/admin` unless they have
/// a listener of their own (`--internal-listen`).
pub fn app(state: AppState) -> Router {
    let router = api(state.clone()).merge(herald_admin::inspector());
    if state.config.internal_listen.is_some() { router } else { router.merge(ops::router(state)) }
}

/// `/metrics` and `/admin` alone, for the internal listener.
pub fn ops_app(state: AppState) -> Router {
    ops::router(state)
}

fn api(state: AppState) -> Router {
    let router = Router::new()
        .route("/", get(routes::index::index))
        .route(routes::events::ONE_TOPIC_PATH, get(routes::events::one_topic).post(routes::publish::one))
        .route(routes::events::MANY_TOPICS_PATH, get(routes::events::many))
        .route("/publish", post(routes::publish::batch))
        .route("/topics", get(routes::topics::list))
        .route("/topics/{topic}", get(routes::topics::one))
        .route("/healthz", get(routes::health::live))
        .route("/readyz", get(routes::health::ready))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let router = match cors(&state.config.cors_origins, state.config.cors_credentials) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    // Merged after the API's CORS layer: the door has its own.
    let router = match mercure::router(&state) {
        Some(door) => router.merge(door),
        None => router,
    };
    router.with_state(state)
}

/// Runs the API on `listener` until `shutdown` completes, then drains; the
/// hub stays open for the caller to shut down.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let listeners = Listeners { public: vec![listener], internal: None, redirect: Vec::new(), tls: None };
    serve_all(listeners, state, shutdown).await
}

/// Where a server listens, and how.
#[derive(Debug)]
pub struct Listeners {
    /// Each serves the API (over HTTPS with `tls`); at least one.
    pub public: Vec<tokio::net::TcpListener>,
    /// Serves `/metrics` and `/admin` alone, in plain HTTP.
    pub internal: Option<tokio::net::TcpListener>,
    /// Plain HTTP that redirects to HTTPS on the first public listener.
    pub redirect: Vec<tokio::net::TcpListener>,
    /// The certificate of the public listeners.
    pub tls: Option<tls::Tls>,
}

/// Runs the API on `listeners` with the hub's upkeep until `shutdown`
/// completes; then drains them all. The hub stays open: shut it down once
/// this returns.
pub async fn serve_all(
    listeners: Listeners,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let Listeners { public, internal, redirect, tls } = listeners;
    let api = app(state.clone());
    let tls_config = tls.as_ref().map(|tls| std::sync::Arc::clone(&tls.config));
    if let Some(tls) = tls {
        state.tasks.spawn(tls.keep_current(state.shutdown.clone()));
    }
    let https_port = public.first().map(|l| l.local_addr()).transpose()?.map_or(443, |a| a.port());
    let mut listeners: Vec<_> =
        public.into_iter().map(|listener| (listener, api.clone(), tls_config.clone())).collect();
    if let Some(internal) = internal {
        listeners.push((internal, ops_app(state.clone()), None));
    }
    let redirecting = https_redirect::router(https_port);
    listeners.extend(redirect.into_iter().map(|listener| (listener, redirecting.clone(), None)));
    state.tasks.spawn(sweep::sweep(state.clone()));
    transport::run(listeners, &state, shutdown).await
}

/// CORS for the configured origins. Cookies cross only with
/// `--cors-credentials`: `*` alone answers `Access-Control-Allow-Origin: *`,
/// which browsers never combine with cookies, so no site can read streams
/// with its visitors' cookies unless the operator asked for it.
fn cors(origins: &[String], credentials: bool) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let allow = match (any, credentials) {
        (true, false) => AllowOrigin::any(),
        // `*` cannot carry credentials: echo the caller's origin instead.
        (true, true) => AllowOrigin::mirror_request(),
        (false, _) => AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok())),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_credentials(credentials)
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
