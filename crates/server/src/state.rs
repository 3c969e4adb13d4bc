//! What every handler shares.

use std::sync::Arc;

use herald_core::Hub;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::Verifier,
    config::Config,
    registry::StreamRegistry,
    store::RedisStore,
    transport::limits::{ConnectionLimit, StreamLimits},
};

/// The server's shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The hub: publish into it, subscribe from it.
    pub hub: Hub,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Checks tokens.
    pub verifier: Arc<Verifier>,
    /// Cancelled when the server shuts down: accept loops stop, open streams
    /// end themselves, background tasks return.
    pub shutdown: CancellationToken,
    /// Every task the server spawns (connections, streams, accept loops,
    /// upkeep, the dashboard's sampler): the drain waits for them.
    pub tasks: TaskTracker,
    /// Open streams per client IP.
    pub streams: Arc<StreamLimits>,
    /// Open connections.
    pub connections: Arc<ConnectionLimit>,
    /// Open streams, for the dashboard.
    pub registry: Arc<StreamRegistry>,
    /// The Prometheus recorder's handle.
    pub metrics: PrometheusHandle,
    /// When the server started (ms since the Unix epoch).
    pub started_ms: u64,
    /// The Redis store, when nodes share one (its health and durability
    /// for `/readyz` and the dashboard).
    pub redis: Option<Arc<RedisStore>>,
    /// The Mercure door, when `--mercure` turns it on.
    pub mercure: Option<Arc<crate::mercure::Door>>,
}

impl AppState {
    /// State for a server running `hub` with `config` and `verifier`.
    pub fn new(hub: Hub, config: Config, verifier: Verifier) -> Self {
        let metrics = crate::metrics::handle();
        crate::metrics::observe_commits(&hub);
        Self {
            hub,
            streams: Arc::new(StreamLimits::new(config.max_streams_per_ip)),
            connections: ConnectionLimit::new(config.max_connections),
            config: Arc::new(config),
            verifier: Arc::new(verifier),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            registry: Arc::default(),
            metrics,
            started_ms: herald_core::now_ms(),
            redis: None,
            mercure: None,
        }
    }

    /// Opens the Mercure door, when the configuration turns it on.
    pub fn with_mercure(mut self) -> Result<Self, crate::mercure::token::MercureKeyError> {
        if self.config.mercure.enabled {
            let config = self.config.mercure.clone();
            let door = crate::mercure::Door::new(config, &self.verifier, self.config.jwt_leeway)?;
            self.mercure = Some(Arc::new(door));
        }
        Ok(self)
    }

    /// The same, on the Redis store `redis`.
    pub fn with_redis(mut self, redis: Arc<RedisStore>) -> Self {
        self.redis = Some(redis);
        self
    }
}
