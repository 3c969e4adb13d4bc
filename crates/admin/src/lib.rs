//! Herald's operator dashboard, mounted at `/admin`.
//!
//! It reads the hub's snapshots, the metrics exposition and the delivery
//! latency histogram through [`AdminSource`]; it knows nothing about sockets
//! or SQL. Rendering takes no lock that publishing needs: every figure comes
//! from a snapshot.
//!
//! Access needs a token with the admin grant, from `Authorization: Bearer`,
//! from `?access_token=` once (it is then kept in the `herald_admin` cookie,
//! sent to `/admin` only and never accepted by the public API), or from that
//! cookie. The one write action, disconnecting a stream, asks
//! for confirmation in the page and is logged.

mod assets;
mod auth;
mod exposition;
mod live;
mod pages;
mod quantile;
mod session;
mod tail;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, post},
};
use herald_core::{ConnectionSnapshot, Grants, Hub};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use exposition::{MetricRow, parse_exposition};
pub use live::Sample;

/// What the dashboard reads from the server.
pub trait AdminSource: Send + Sync + 'static {
    /// The hub, for its snapshots.
    fn hub(&self) -> &Hub;
    /// The open event streams.
    fn connections(&self) -> Vec<ConnectionSnapshot>;
    /// How many streams are open, and the `limit` oldest of them.
    fn oldest_connections(&self, limit: usize) -> (usize, Vec<ConnectionSnapshot>) {
        let mut all = self.connections();
        let total = all.len();
        all.truncate(limit);
        (total, all)
    }
    /// Ends stream `id`; false if there is none.
    fn disconnect(&self, id: u64) -> bool;
    /// Open TCP connections now.
    fn tcp_connections(&self) -> usize;
    /// The Prometheus exposition, as `/metrics` serves it.
    fn metrics_text(&self) -> String;
    /// The delivery latency distribution, read from the histogram that
    /// `/metrics` exports: cumulative counts of deliveries by upper bound in
    /// seconds, ascending, the last `+∞` (the total). The sampler reads it
    /// twice a second.
    fn delivery_latency(&self) -> Vec<(f64, u64)>;
    /// Verifies a token; the error says why it was refused.
    fn authorize(&self, token: &str) -> Result<Grants, String>;
    /// When the server started (ms since the Unix epoch).
    fn started_ms(&self) -> u64;
    /// Cancelled at shutdown: the sampler and live streams stop.
    fn shutdown(&self) -> CancellationToken;
    /// The server's tasks: the sampler runs as one, so the server's drain
    /// waits for it.
    fn tasks(&self) -> TaskTracker;
    /// With a store shared by several nodes: which node this is, and how
    /// the store keeps acknowledged events (`fsync`, `everysec`, `none`,
    /// `unknown`).
    fn cluster(&self) -> Option<ClusterNode> {
        None
    }
}

/// This node of a cluster, as the dashboard shows it.
#[derive(Debug, Clone)]
pub struct ClusterNode {
    /// The node's id.
    pub node: String,
    /// How the shared store keeps acknowledged events.
    pub durability: &'static str,
}

/// How the dashboard behaves; the server fills it from its settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// Rows listed per table (`--dashboard-rows`); past it the page says
    /// "showing N of M".
    pub rows: usize,
    /// Idle time before a comment line on the dashboard's streams (`--heartbeat`).
    pub heartbeat: Duration,
    /// Whether `/inspector` is served beside the dashboard, so that the
    /// dashboard links to it (not with `--internal-listen`, where the public
    /// API the inspector talks to is on another listener).
    pub inspector: bool,
}

/// Shared by the dashboard's handlers.
#[derive(Clone)]
pub(crate) struct Admin {
    pub(crate) source: Arc<dyn AdminSource>,
    pub(crate) live: Arc<live::Live>,
    pub(crate) options: Arc<Options>,
}

/// The dashboard's router, to nest under `/admin`. Starts the sampler that
/// feeds the live charts (needs a Tokio runtime).
pub fn router(source: Arc<dyn AdminSource>, options: Options) -> Router {
    let live = live::Live::start(Arc::clone(&source), options.rows);
    let admin = Admin { source, live, options: Arc::new(options) };
    Router::new()
        .route("/", get(pages::overview))
        .route("/topics/{topic}", get(pages::topic))
        .route("/topics/{topic}/tail", get(tail::stream))
        .route("/connections", get(pages::connections))
        .route("/connections/{id}/disconnect", post(pages::disconnect))
        .route("/metrics", get(pages::metrics))
        .route("/live", get(live::stream))
        .route("/login", post(auth::login))
        .route("/logout", get(auth::logout))
        .route("/assets/{file}", get(assets::serve))
        .with_state(admin)
}

/// The public topic inspector page (`/inspector`): subscribe to a topic in
/// the browser and publish a test event with a pasted token. Its style
/// sheet is served beside it, as `/admin` may be on another listener.
pub fn inspector() -> Router {
    Router::new().route("/inspector", get(assets::inspector)).route("/inspector/assets/{file}", get(assets::serve))
}

/// The version shown on the dashboard.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
