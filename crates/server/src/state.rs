//! What every handler shares.

use std::sync::Arc;

use herald_core::Hub;
use tokio_util::sync::CancellationToken;

use crate::{auth::Verifier, config::Config, limits::StreamLimits};

/// The server's shared state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The hub: publish into it, subscribe from it.
    pub hub: Hub,
    /// The validated configuration.
    pub config: Arc<Config>,
    /// Checks tokens.
    pub verifier: Arc<Verifier>,
    /// Cancelled when the server shuts down: open streams end themselves.
    pub shutdown: CancellationToken,
    /// Open streams per client IP.
    pub streams: Arc<StreamLimits>,
}

impl AppState {
    /// State for a server running `hub` with `config` and `verifier`.
    pub fn new(hub: Hub, config: Config, verifier: Verifier) -> Self {
        let streams = Arc::new(StreamLimits::new(config.max_streams_per_ip));
        Self {
            hub,
            config: Arc::new(config),
            verifier: Arc::new(verifier),
            shutdown: CancellationToken::new(),
            streams,
        }
    }
}
