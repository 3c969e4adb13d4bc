//! The accept loop and the server's lifecycle: accept within the connection
//! bound, serve, and at shutdown stop accepting, end every stream, let
//! in-flight requests finish within the grace period, and flush the hub.

use std::{future::Future, time::Duration};

use axum::Router;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    connection,
    error::{ApiError, ErrorCode},
    state::AppState,
    stream_runtime::StreamTasks,
};

/// How often idle topics and expired history are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Serves each router on its listener until `shutdown` completes, then drains.
pub async fn serve(
    listeners: Vec<(TcpListener, Router)>,
    state: AppState,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tracker = TaskTracker::new();
    let (streams, stream_runtime) = StreamTasks::start(tracker.clone())?;
    let stop_accepting = CancellationToken::new();
    tokio::spawn(sweep(state.clone()));
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|(listener, router)| {
            tokio::spawn(accept_loop(listener, router, state.clone(), streams.clone(), stop_accepting.clone()))
        })
        .collect();
    shutdown.await;
    stop_accepting.cancel();
    for accept in accepting {
        let _ = accept.await;
    }
    tracing::info!("shutting down: ending streams, finishing in-flight requests");
    state.shutdown.cancel();
    tracker.close();
    let grace = state.config.shutdown_grace;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(open = tracker.len(), "connections still open after the {grace:?} grace period; closing them");
    }
    drop(stream_runtime);
    state.hub.shutdown().await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Accepts connections within the connection bound until told to stop.
async fn accept_loop(
    listener: TcpListener,
    router: Router,
    state: AppState,
    streams: StreamTasks,
    stop: CancellationToken,
) {
    let tracker = &streams.tracker;
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Out of file descriptors, most likely: wait instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let Some(permit) = state.connections.acquire() else {
            metrics::counter!("herald_rejected_total", "limit" => "connections").increment(1);
            tracker.spawn(refuse(stream));
            continue;
        };
        metrics::counter!("herald_connections_opened_total").increment(1);
        tracker.spawn(connection::serve(stream, peer, router.clone(), state.clone(), permit, streams.clone()));
    }
}

/// Answers a connection over the bound with a 503 and closes it.
async fn refuse(mut stream: tokio::net::TcpStream) {
    let error = ApiError::new(ErrorCode::TooManyConnections, "the server is at its connection limit; retry shortly");
    let body = error.body().to_string();
    let response = format!(
        "HTTP/1.1 {}\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        error.code().status(),
        body.len()
    );
    // Read the request head first (briefly, bounded): an HTTP client takes an
    // answer that arrives before its request as a protocol error, and closing
    // with the request unread resets the connection, losing the answer.
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let mut head = Vec::new();
        let mut buf = [0u8; 2048];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

/// Drops idle topics and applies store retention, until shutdown.
async fn sweep(state: AppState) {
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
