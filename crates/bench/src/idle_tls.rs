//! `herald-bench idle-tls`: what an idle event stream costs the server over
//! HTTPS, one stream per TLS connection (HTTP/1.1) or many streams on each
//! HTTP/2 connection. Opens the streams, waits, and reports the growth of the
//! server's memory per stream. The client is `tokio-rustls` with `h2`.

use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

use crate::procstat;

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
    #[arg(long, value_enum, default_value_t = Protocol::H2)]
    protocol: Protocol,
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

/// How `idle-tls` opens its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// One TLS connection per stream, HTTP/1.1.
    H1,
    /// --per-connection streams on each TLS connection, HTTP/2.
    H2,
    /// One plain HTTP/1.1 connection per stream, to compare.
    Plain,
}

/// Runs `idle-tls` and prints `IDLE_TLS protocol=… streams=… rss_per_stream_B=…`.
pub async fn run(args: IdleTlsArgs) -> anyhow::Result<()> {
    let pids = [args.server_pid];
    let before = procstat::sample(&pids);
    let connector = connector(&args)?;
    let mut held: Vec<Box<dyn std::any::Any + Send>> = Vec::new();
    let mut opened = 0;
    match args.protocol {
        Protocol::H1 => {
            for _ in 0..args.streams {
                held.push(Box::new(open_h1(&args, tls(&args, &connector).await?).await?));
                opened += 1;
            }
        }
        Protocol::Plain => {
            for _ in 0..args.streams {
                held.push(Box::new(open_h1(&args, TcpStream::connect(args.addr).await?).await?));
                opened += 1;
            }
        }
        Protocol::H2 => {
            while opened < args.streams {
                let streams = args.per_connection.min(args.streams - opened);
                let (client, bodies) = open_h2(&args, &connector, streams).await?;
                held.push(Box::new((client, bodies)));
                opened += streams;
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let after = procstat::sample(&pids);
    let grown = after.rss_bytes.saturating_sub(before.rss_bytes);
    let per_stream = grown / u64::try_from(opened.max(1)).unwrap_or(1);
    println!(
        "IDLE_TLS protocol={} streams={opened} connections={} rss_before_B={} rss_after_B={} rss_per_stream_B={per_stream}",
        format!("{:?}", args.protocol).to_lowercase(),
        held.len(),
        before.rss_bytes,
        after.rss_bytes
    );
    drop(held);
    Ok(())
}

fn connector(args: &IdleTlsArgs) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    let ca = CertificateDer::from_pem_file(&args.ca).with_context(|| format!("--ca {}", args.ca.display()))?;
    roots.add(ca)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![if args.protocol == Protocol::H2 { b"h2".to_vec() } else { b"http/1.1".to_vec() }];
    Ok(TlsConnector::from(Arc::new(config)))
}

async fn tls(args: &IdleTlsArgs, connector: &TlsConnector) -> anyhow::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(args.addr).await?;
    let name = ServerName::try_from(args.server_name.clone())?;
    Ok(connector.connect(name, tcp).await?)
}

/// One HTTP/1.1 stream on `stream`, its head read.
async fn open_h1<S: AsyncRead + AsyncWrite + Unpin>(args: &IdleTlsArgs, mut stream: S) -> anyhow::Result<S> {
    let auth = args.token.as_ref().map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head =
        format!("GET {} HTTP/1.1\r\nHost: {}\r\n{auth}Accept: text/event-stream\r\n\r\n", args.path, args.server_name);
    stream.write_all(head.as_bytes()).await?;
    let mut buf = [0u8; 1024];
    let n = stream.read(&mut buf).await?;
    if !buf[..n].starts_with(b"HTTP/1.1 200") {
        bail!("GET {}: {}", args.path, String::from_utf8_lossy(&buf[..n]));
    }
    Ok(stream)
}

/// `streams` streams on one HTTP/2 connection, their heads received.
async fn open_h2(
    args: &IdleTlsArgs,
    connector: &TlsConnector,
    streams: usize,
) -> anyhow::Result<(h2::client::SendRequest<bytes::Bytes>, Vec<h2::RecvStream>)> {
    let (client, connection) = h2::client::handshake(tls(args, connector).await?).await?;
    tokio::spawn(connection);
    let mut client = client.ready().await?;
    let mut bodies = Vec::with_capacity(streams);
    for _ in 0..streams {
        let mut request = http::Request::builder()
            .uri(format!("https://{}{}", args.server_name, args.path))
            .header("accept", "text/event-stream");
        if let Some(token) = &args.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        client = client.ready().await?;
        let (response, _) = client.send_request(request.body(())?, true)?;
        let response = response.await?;
        if response.status() != 200 {
            bail!("GET {}: status {}", args.path, response.status());
        }
        bodies.push(response.into_body());
    }
    Ok((client, bodies))
}
