//! `herald`: run the hub (`herald serve`, or plain `herald`) or mint a token
//! (`herald token`).

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use herald_core::{EventStore, Hub, MemoryStore};
use herald_server::{
    AppState, Config,
    auth::{TokenSpec, Verifier, mint},
    config::{JwtKey, Settings, StoreKind, TokenConfig, TokenSettings, defaults, parse_args, parse_duration},
    secret,
    store::{Durability, RedisSettings, RedisStore, SqliteStore},
    tls::TlsSource,
};
use jsonwebtoken::{Algorithm, EncodingKey};

/// Herald: a Server-Sent Events pub/sub hub.
#[derive(Debug, Parser)]
#[command(name = "herald", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the hub (the default).
    Serve(Box<ServeArgs>),
    /// Print a token signed with the server's key and claim settings: give
    /// it the server's `--config FILE`, or the same `--data-dir` /
    /// `--jwt-secret`, `--jwt-issuer` and `--jwt-audience`. It never makes
    /// a key of its own.
    Token(Box<TokenArgs>),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    settings: Settings,
    /// Check the settings, print the configuration they make (secrets
    /// hidden) and exit: 0 if valid, 1 with every problem listed.
    #[arg(long)]
    check_config: bool,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// Who the token is for (`sub`).
    #[arg(long, value_name = "NAME")]
    sub: String,
    /// Topic patterns it may publish to (comma-separated).
    #[arg(long, value_name = "PATTERN", value_delimiter = ',', num_args = 1..)]
    publish: Vec<String>,
    /// Topic patterns it may subscribe to (comma-separated).
    #[arg(long, value_name = "PATTERN", value_delimiter = ',', num_args = 1..)]
    subscribe: Vec<String>,
    /// Operator access (dashboard, all topics' figures).
    #[arg(long)]
    admin: bool,
    /// Lifetime, like 30m, 1h, 7d.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    ttl: String,
    /// PEM private key, to sign RS256/ES256/EdDSA tokens (with --jwt-algorithm).
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
    #[command(flatten)]
    settings: TokenSettings,
}

fn main() -> ExitCode {
    // The config file's problems are reported with the settings' own.
    let (cli, file_errors): (Cli, _) = parse_args();
    let result = match cli.command {
        None => serve(cli.serve, file_errors),
        Some(Command::Serve(args)) => serve(*args, file_errors),
        Some(Command::Token(args)) => token(*args, file_errors),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(errors) => {
            for error in errors {
                eprintln!("error: {error}");
            }
            ExitCode::FAILURE
        }
    }
}

/// `parsed`, or every error: the file's and the settings' together.
fn all_errors<T>(parsed: Result<T, Vec<String>>, mut file_errors: Vec<String>) -> Result<T, Vec<String>> {
    match parsed {
        Ok(value) if file_errors.is_empty() => Ok(value),
        Ok(_) => Err(file_errors),
        Err(errors) => {
            file_errors.extend(errors);
            Err(file_errors)
        }
    }
}

fn serve(args: ServeArgs, file_errors: Vec<String>) -> Result<(), Vec<String>> {
    let config = all_errors(Config::from_settings(&args.settings), file_errors)?;
    if args.check_config {
        println!("{config:#?}");
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&config.log).map_err(|e| vec![format!("--log: {e}")])?)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| vec![format!("cannot start the runtime: {e}")])?;
    runtime.block_on(run(config)).map_err(|e| vec![format!("{e:#}")])
}

async fn run(config: Config) -> anyhow::Result<()> {
    let shutdown = shutdown_signal()?;
    // First: the store records figures (Redis's durability) as it opens.
    herald_server::metrics::handle();
    raise_open_file_limit(config.max_connections);
    survive_file_size_limit();
    // Bound before anything is written: a start that cannot listen leaves no
    // data dir, database or secret behind.
    // Every TLS client and server Herald makes uses ring, whatever else the
    // build's crates enable.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = config.tls.clone().map(|source| herald_server::tls::Tls::new(source, &config.data_dir));
    let tls = tls.transpose().map_err(anyhow::Error::msg)?;
    if matches!(config.tls, Some(TlsSource::Acme(_))) && !config.listen.iter().any(|a| a.port() == 443) {
        tracing::warn!(
            "ACME CAs validate on port 443: no --listen address is on it, so forward port 443 to one that is"
        );
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut listeners = Vec::with_capacity(config.listen.len());
    for address in &config.listen {
        listeners.push(bind(*address, "--listen").await?);
    }
    let mut redirect = Vec::with_capacity(config.redirect_listen.len());
    for address in &config.redirect_listen {
        redirect.push(bind(*address, "--listen http://").await?);
    }
    let internal = match config.internal_listen {
        Some(address) => Some(bind(address, "--internal-listen").await?),
        None => None,
    };
    let secret = match config.jwt_key {
        JwtKey::Generated => Some(secret::load_or_generate(&config.data_dir).map_err(anyhow::Error::msg)?),
        _ => None,
    };
    let verifier = Verifier::new(&config, secret.as_ref().map(|(secret, _)| secret)).map_err(anyhow::Error::msg)?;
    let (mut sqlite, mut redis) = (None, None);
    let store: Arc<dyn EventStore> = match &config.store {
        StoreKind::Memory => Arc::new(MemoryStore::new(config.retention)),
        StoreKind::Sqlite => {
            let store = SqliteStore::open(&config.data_dir, config.retention, config.sqlite_synchronous).await;
            let store = Arc::new(store.map_err(anyhow::Error::msg)?);
            sqlite = Some(Arc::clone(&store));
            store
        }
        StoreKind::Redis(url) => {
            let options = &config.redis;
            let settings = RedisSettings {
                url: url.0.clone(),
                prefix: options.prefix.clone(),
                timeout: options.timeout,
                feed_max_lag: options.feed_max_lag,
                durable_restarts: options.durable_restarts,
                retention: config.retention,
            };
            let store = Arc::new(RedisStore::connect(settings).await?);
            redis = Some(Arc::clone(&store));
            store
        }
    };
    let hub = Hub::start(Arc::clone(&store), config.hub.clone()).await.context("cannot open the store")?;
    if let Some(redis) = &redis {
        redis.start_feed(hub.clone())?;
        report_durability(redis);
    }
    let addresses = listeners.iter().map(tokio::net::TcpListener::local_addr).collect::<Result<Vec<_>, _>>()?;
    for address in &addresses {
        tracing::info!("Herald listening on {scheme}://{address}");
    }
    // The first address stands for all in the hints below.
    let address = addresses[0];
    if config.mercure.enabled {
        tracing::info!("Mercure door on {scheme}://{address}{}", herald_server::mercure::PATH);
    }
    for listener in &redirect {
        tracing::info!("redirecting to HTTPS from http://{}", listener.local_addr()?);
    }
    match &internal {
        Some(internal) => {
            tracing::info!("metrics and dashboard on http://{}/metrics and /admin", internal.local_addr()?);
        }
        None => tracing::info!("metrics and dashboard on {scheme}://{address}/metrics and /admin"),
    }
    tracing::info!("store: {}", store.describe());
    if let Some((_, origin)) = secret {
        log_signing_key(&config, origin);
    }
    let mut state = AppState::new(hub, config, verifier).with_mercure().map_err(anyhow::Error::msg)?;
    if let Some(redis) = redis {
        state = state.with_redis(redis);
    }
    let listeners = herald_server::Listeners { public: listeners, internal, redirect, tls };
    herald_server::serve_all(listeners, state.clone(), shutdown).await?;
    state.hub.shutdown().await;
    tracing::info!("shutdown complete");
    if let Some(sqlite) = sqlite {
        sqlite.close().await;
    }
    Ok(())
}

/// Says once, at start, when Redis may lose acknowledged events.
fn report_durability(redis: &RedisStore) {
    let node = redis.node_id();
    if let Some(policy) = redis.eviction() {
        tracing::warn!(
            node,
            policy,
            "redis may evict Herald's keys (maxmemory-policy {policy}): evicted history is reported as gaps, an \
             evicted epoch as history_lost; set maxmemory-policy noeviction so that a full Redis refuses \
             publishes (503) instead"
        );
    }
    match redis.durability() {
        Durability::Fsync => tracing::info!(node, "redis keeps acknowledged events on disk (appendfsync always)"),
        level => tracing::warn!(
            node,
            durability = level.label(),
            "redis is not `appendonly yes` + `appendfsync always`: a crash of Redis may lose acknowledged \
             events (streams are then told with herald.gap history_lost); see README, Many nodes"
        ),
    }
}

/// Connections the kernel queues for the accept loop. Thousands of clients
/// reconnect at once after a restart; a short queue would drop their SYNs,
/// and each dropped one waits a second or more to retry. The kernel caps
/// it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 65_535;

async fn bind(address: std::net::SocketAddr, flag: &str) -> anyhow::Result<tokio::net::TcpListener> {
    let listen = || {
        let socket =
            if address.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        // As the standard library's bind does: a restart can listen again at once.
        socket.set_reuseaddr(true)?;
        socket.bind(address)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().with_context(|| format!("cannot listen on {address} ({flag})"))
}

/// Says where the data dir's secret came from and how to mint a token with it.
fn log_signing_key(config: &Config, origin: secret::Origin) {
    let dir = if config.data_dir == std::path::Path::new(defaults::DATA_DIR) {
        String::new()
    } else {
        format!(" --data-dir {}", config.data_dir.display())
    };
    let how = match origin {
        secret::Origin::Loaded => "loaded from",
        secret::Origin::Generated => "generated in",
    };
    tracing::info!(
        "signing key: {how} {}; mint a token with: herald token{dir} --sub me --publish '*' --subscribe '*'",
        config.data_dir.join(secret::SECRET_FILE).display()
    );
}

/// Completes on SIGTERM or Ctrl-C. The handlers are installed now, before
/// the server says it is listening, so an early signal still shuts it down
/// cleanly instead of killing it.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = interrupt.recv() => tracing::info!("SIGINT received"),
        }
    })
}

/// Turns SIGXFSZ (a write past `ulimit -f`) from a crash into an I/O error:
/// the store then answers 503 and recovers once the limit is raised, as for
/// a full disk.
fn survive_file_size_limit() {
    #[cfg(target_os = "linux")]
    {
        const SIGXFSZ: i32 = 25;
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(SIGXFSZ)) {
            Ok(mut signal) => {
                tokio::spawn(async move {
                    // One per refused write: throttled like the store's errors.
                    let throttle = herald_core::LogThrottle::new(herald_core::LOG_REPEAT_INTERVAL);
                    while signal.recv().await.is_some() {
                        if let Some(unlogged) = throttle.admit() {
                            tracing::error!(
                                unlogged,
                                "file size limit reached (SIGXFSZ): writes fail until `ulimit -f` is raised"
                            );
                        }
                    }
                });
            }
            Err(error) => tracing::warn!(%error, "cannot handle SIGXFSZ"),
        }
    }
}

/// Raises the open-file soft limit to the hard limit, and says how many
/// connections that allows.
fn raise_open_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => {
            // Some descriptors go to the store, the listener and logs.
            let usable = limit.saturating_sub(64);
            tracing::info!("open-file limit {limit}: room for about {usable} connections");
            if max_connections as u64 > usable {
                tracing::warn!(
                    "--max-connections {max_connections} is above what the open-file limit allows; raise `ulimit -n` (see README)"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "cannot raise the open-file limit"),
    }
}

fn token(args: TokenArgs, file_errors: Vec<String>) -> Result<(), Vec<String>> {
    let config = all_errors(TokenConfig::from_settings(&args.settings), file_errors)?;
    let ttl = parse_duration(&args.ttl).map_err(|e| vec![format!("--ttl: {e}")])?;
    if ttl < Duration::from_secs(1) {
        return Err(vec!["--ttl: must be at least 1s".into()]);
    }
    if args.publish.is_empty() && args.subscribe.is_empty() && !args.admin {
        return Err(vec![
            "the token would allow nothing: give it --publish PATTERN, --subscribe PATTERN (comma-separated) or --admin"
                .into(),
        ]);
    }
    let (alg, key) = signing_key(&config, args.private_key.as_ref())?;
    let spec = TokenSpec {
        subject: args.sub,
        publish: args.publish,
        subscribe: args.subscribe,
        admin: args.admin,
        ttl,
        issuer: config.jwt_issuer.clone(),
        audience: config.jwt_audience.clone(),
    };
    let token = mint(&spec, alg, &key).map_err(|e| vec![e.to_string()])?;
    println!("{token}");
    Ok(())
}

fn signing_key(config: &TokenConfig, private_key: Option<&PathBuf>) -> Result<(Algorithm, EncodingKey), Vec<String>> {
    let alg = config.jwt_algorithm;
    if let Some(path) = private_key {
        let pem =
            std::fs::read(path).map_err(|e| vec![format!("--private-key: cannot read {}: {e}", path.display())])?;
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem),
            _ => return Err(vec!["--private-key needs --jwt-algorithm RS256, ES256 or EdDSA".into()]),
        };
        return key.map(|k| (alg, k)).map_err(|e| vec![format!("--private-key {}: {e}", path.display())]);
    }
    let secret = match &config.jwt_key {
        JwtKey::Secret(secret) => secret.clone(),
        // The server's own key, read, never made: a key made here would be
        // one the server does not know.
        JwtKey::Generated => secret::load(&config.data_dir).map_err(|e| vec![e.to_string()])?.ok_or_else(|| {
            let path = config.data_dir.join(secret::SECRET_FILE);
            let path = std::path::absolute(&path).unwrap_or(path);
            vec![format!(
                "no signing key: --jwt-secret is not set and {} does not exist. `herald token` signs with the \
                 server's key and never makes one: point it at the server's settings with --config FILE, at its \
                 data dir with --data-dir DIR (the server makes the key there at its first start), or pass the \
                 server's --jwt-secret",
                path.display()
            )]
        })?,
        JwtKey::PublicKey { .. } => {
            return Err(vec![
                "the server verifies tokens with a public key; sign with the private key: --private-key FILE".into(),
            ]);
        }
    };
    Ok((alg, EncodingKey::from_secret(secret.0.as_bytes())))
}
