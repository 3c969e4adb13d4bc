//! The hub's upkeep: idle topics dropped from memory, and the store's
//! retention applied, every few seconds until shutdown.

use std::time::Duration;

use crate::state::AppState;

/// How often idle topics and expired history are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Drops idle topics and applies store retention, until shutdown.
pub(crate) async fn sweep(state: AppState) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = herald_core::now_ms();
        state.hub.sweep_idle_topics(now);
        if let Err(error) = state.hub.enforce_retention(now).await {
            tracing::warn!(%error, "retention sweep failed");
        }
    }
}
