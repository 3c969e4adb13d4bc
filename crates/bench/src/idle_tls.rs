//! `herald-bench idle-tls`: what an idle event stream costs the server over
//! HTTPS, one stream per TLS connection (HTTP/1.1) or many streams on each
//! HTTP/2 connection. Opens the streams, waits, and reports the growth of the
//! server's memory per stream. The streams are `run`'s (`H1Stream`,
//! `H2Connection`), opened one after another and never read.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use crate::{
    connect::Dialer, h1_stream::H1Stream, h2_stream::H2Connection, procstat, tls::TlsClient, transport::Transport,
    url::Target,
};

/// Options of `idle-tls`.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleTlsArgs {
    /// The server's address (loopback).
    #[arg(long)]
    addr: SocketAddr,
    /// The name its certificate is for.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The authority that signed its certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// Path of the stream to open (with its query).
    #[arg(long, default_value = "/topics/bench/events")]
    path: String,
    /// Bearer token.
    #[arg(long, env = "HERALD_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Streams to open.
    #[arg(long, short = 'n', default_value_t = 5000)]
    streams: usize,
    /// How streams are opened.
    #[arg(long, value_enum, default_value_t = Transport::H2)]
    protocol: Transport,
    /// Streams per HTTP/2 connection.
    #[arg(long, default_value_t = 100)]
    per_connection: usize,
    /// The server process, to sample its memory.
    #[arg(long)]
    server_pid: u32,
    /// How long to hold the streams before sampling.
    #[arg(long, default_value_t = 3)]
    hold_secs: u64,
}

/// Runs `idle-tls` and prints `IDLE_TLS protocol=… streams=… rss_per_stream_B=…`.
pub async fn run(args: IdleTlsArgs) -> anyhow::Result<()> {
    let pids = [args.server_pid];
    let before = procstat::sample(&pids);
    let tls = args.protocol.is_tls().then(|| TlsClient::new(&args.ca, Some(&args.server_name))).transpose()?;
    let dialer = Dialer { source: None, recv_buffer: None, tls: tls.map(Arc::new) };
    let target = Target {
        addr: args.addr,
        tls: args.protocol.is_tls(),
        host: args.server_name.clone(),
        host_header: args.server_name.clone(),
        path: args.path.clone(),
    };
    let headers = args.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut connections = 0;
    match args.protocol {
        Transport::Plain | Transport::H1 => {
            for _ in 0..args.streams {
                held.push(Box::new(H1Stream::open(&dialer, &target, &headers).await?));
                connections += 1;
            }
        }
        Transport::H2 => {
            let mut current: Option<Arc<H2Connection>> = None;
            for i in 0..args.streams {
                let connection = match &current {
                    Some(connection) if i % args.per_connection.max(1) != 0 => Arc::clone(connection),
                    _ => {
                        connections += 1;
                        current.insert(Arc::new(H2Connection::new(target.clone(), dialer.clone(), &headers)?)).clone()
                    }
                };
                // The stream and its connection, held until the sample.
                held.push(Box::new((connection.open_stream(&args.path).await?, connection)));
            }
        }
    }
    let opened = args.streams;
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let after = procstat::sample(&pids);
    let grown = after.rss_bytes.saturating_sub(before.rss_bytes);
    let per_stream = grown / u64::try_from(opened.max(1)).unwrap_or(1);
    println!(
        "IDLE_TLS protocol={} streams={opened} connections={connections} rss_before_B={} rss_after_B={} rss_per_stream_B={per_stream}",
        args.protocol.name(),
        before.rss_bytes,
        after.rss_bytes
    );
    drop(held);
    Ok(())
}
