//! The accept loop: accepts connections within the connection bound until
//! the server shuts down; a connection over the bound is answered 503.

use std::{sync::Arc, time::Duration};

use axum::{Router, response::IntoResponse as _};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{connection, h1_response, stream_runtime::StreamTasks};
use crate::{
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// Accepts connections within the connection bound until shutdown; with
/// `tls`, each begins with a TLS handshake.
pub(super) async fn accept_loop(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    state: AppState,
    streams: StreamTasks,
) {
    let tasks = &state.tasks;
    loop {
        let (stream, peer) = tokio::select! {
            // Stopping first: no connection is taken once shutdown has begun.
            biased;
            () = state.shutdown.cancelled() => return,
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
            tasks.spawn(refuse(stream));
            continue;
        };
        metrics::counter!("herald_connections_opened_total").increment(1);
        match &tls {
            Some(tls) => tasks.spawn(connection::handle_tls(
                stream,
                peer,
                router.clone(),
                state.clone(),
                permit,
                Arc::clone(tls),
                streams.clone(),
            )),
            None => {
                tasks.spawn(connection::handle(stream, peer, router.clone(), state.clone(), permit, streams.clone()))
            }
        };
    }
}

/// Answers a connection over the bound with a 503 and closes it.
async fn refuse(mut stream: TcpStream) {
    let error = ApiError::new(ErrorCode::TooManyConnections, "the server is at its connection limit; retry shortly");
    let Ok(response) = h1_response::encode(error.into_response()).await else { return };
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
        stream.write_all(&response).await?;
        stream.shutdown().await
    })
    .await;
}
