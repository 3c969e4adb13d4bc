//! The transport: sockets in, HTTP responses out. It accepts connections
//! within the connection bound, guards them against slow clients, runs each
//! request through the router, and drains at shutdown. Nothing above it
//! (routes, the event stream, the store) sees a socket.
//!
//! - `accept`: the accept loop; a connection over the bound gets a 503.
//! - `connection`: one connection, HTTP/1.1 or HTTP/2 through hyper, with
//!   its head, body, idle and shutdown deadlines.
//! - `h1_stream`: the hand-written stream path, for a connection whose first
//!   request opens an event stream; `h1_response` encodes its heads.
//! - `h2_stream`: HTTP/2 streams, each cut alone when its window stays shut.
//! - `stall`: the stall guard both paths use, and how a body learns of it.
//! - `tls_stream`: HTTPS connections' TLS, whose buffers are freed when
//!   empty, so an idle stream holds none.
//! - `request_body`, `deadline`, `limits`, `stream_runtime`,
//!   `connection_close`: what those share.

mod accept;
mod connection;
mod connection_close;
pub(crate) mod deadline;
mod h1_response;
mod h1_stream;
mod h2_stream;
pub mod limits;
mod request_body;
mod stall;
mod stream_runtime;
mod tls_stream;

use std::{future::Future, sync::Arc};

use axum::Router;
use tokio::net::TcpListener;

pub use stall::StallReport;

use crate::state::AppState;
use stream_runtime::StreamTasks;

/// Serves each router on its listener until `shutdown` completes, then
/// drains: stops accepting, ends every stream (through the state's shutdown
/// token), and waits, at most `--shutdown-grace`, for every task the state's
/// tracker holds. The hub is the caller's, to start before and shut after.
pub(crate) async fn run(
    listeners: Vec<(TcpListener, Router, Option<Arc<rustls::ServerConfig>>)>,
    state: &AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tasks = &state.tasks;
    let (streams, stream_runtime) = StreamTasks::start(tasks.clone())?;
    for (listener, router, tls) in listeners {
        tasks.spawn(accept::accept_loop(listener, router, tls, state.clone(), streams.clone()));
    }
    shutdown.await;
    tracing::info!("shutting down: ending streams, finishing in-flight requests");
    state.shutdown.cancel();
    tasks.close();
    let grace = state.config.shutdown_grace;
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(open = tasks.len(), "tasks still running after the {grace:?} grace period; closing them");
    }
    drop(stream_runtime);
    Ok(())
}
