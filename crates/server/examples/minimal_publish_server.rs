//! A reference under Herald's publish path: an axum server on the same
//! runtime settings and socket options that answers every
//! `POST /topics/{topic}/events` with a fixed 201 receipt, reading the body
//! and nothing else (no token, no JSON, no store). What `herald-bench
//! publish` gets from it on a machine is about the most a publish path on
//! hyper and axum can get there (see BENCHMARKS.md).
//!
//! cargo run --release -p herald-server --example minimal_publish_server -- [ADDR]

use axum::{Router, body::Bytes, http::StatusCode, routing::post, serve::ListenerExt as _};

const RECEIPT: &str = r#"{"id":"00000000-0000000000000001","topic":"bench"}"#;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:8090".into());
    let app =
        Router::new().route("/topics/{topic}/events", post(|_body: Bytes| async { (StatusCode::CREATED, RECEIPT) }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("answering POST /topics/{{topic}}/events on http://{}", listener.local_addr()?);
    // As Herald does: answers are not held back for Nagle's algorithm.
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
