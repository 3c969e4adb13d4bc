//! Settings: parsed once, from flags, `HERALD_*` environment variables and a
//! TOML file (in that order of precedence), into a documented [`Config`].
//! Every invalid setting is reported at once, not the first one alone.
//!
//! - [`settings`]: the one definition of every setting (flag, variable, file
//!   key, default, help);
//! - [`file`]: the `--config` file, read as the flags' defaults;
//! - `validate`: from text to [`Config`], every problem collected;
//! - [`values`]: readers of durations, addresses and the like;
//! - [`defaults`]: the server's defaults (the hub's and the store's are
//!   `herald-core`'s).

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use herald_core::{HubConfig, Retention, TopicPattern};
use jsonwebtoken::Algorithm;

pub mod defaults;
pub mod file;
pub mod mercure;
pub mod settings;
mod validate;
pub mod values;

pub use file::{parse_args, parse_args_from};
pub use mercure::{MercureConfig, MercureKey};
pub use settings::{Settings, TokenSettings};
pub use values::{parse_algorithm, parse_duration, parse_listen};

/// A secret that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How tokens are verified.
#[derive(Debug, Clone)]
pub enum JwtKey {
    /// An HMAC secret (HS256/384/512).
    Secret(Secret),
    /// A PEM public key file's contents.
    PublicKey {
        /// Where it came from, for messages.
        path: PathBuf,
        /// The PEM text.
        pem: Vec<u8>,
    },
    /// None configured: a secret is generated once and kept in the data dir.
    Generated,
}

/// The validated configuration of a server.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on, each serving the whole API (at least one).
    pub listen: Vec<SocketAddr>,
    /// Plain HTTP addresses that redirect every request to HTTPS
    /// (`--listen http://ADDR` beside `--tls-cert` or `--acme-domain`).
    pub redirect_listen: Vec<SocketAddr>,
    /// Address for /metrics and /admin alone; `None` serves them publicly.
    pub internal_listen: Option<SocketAddr>,
    /// HTTPS on the `listen` addresses, with a certificate from files
    /// (checked) or from an ACME CA.
    pub tls: Option<crate::tls::TlsSource>,
    /// Data directory (database, generated key, ACME account and
    /// certificates).
    pub data_dir: PathBuf,
    /// Where events are kept (`--store`, or `--memory`).
    pub store: StoreKind,
    /// How to use Redis, with `--store redis://`.
    pub redis: RedisOptions,
    /// SQLite durability.
    pub sqlite_synchronous: crate::store::Synchronous,
    /// Token verification key.
    pub jwt_key: JwtKey,
    /// Accepted token algorithm.
    pub jwt_algorithm: Algorithm,
    /// Required issuer.
    pub jwt_issuer: Option<String>,
    /// Required audience.
    pub jwt_audience: Option<String>,
    /// Clock-skew leeway.
    pub jwt_leeway: Duration,
    /// Patterns open to subscribers without a token.
    pub public_subscribe: Vec<TopicPattern>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
    /// Client reconnection delay.
    pub retry: Duration,
    /// CORS origins (`*` for any); empty disables CORS.
    pub cors_origins: Vec<String>,
    /// Whether CORS answers carry `Access-Control-Allow-Credentials: true`.
    pub cors_credentials: bool,
    /// Proxies trusted for X-Forwarded-For.
    pub trusted_proxies: Vec<IpAddr>,
    /// Open connections, all clients.
    pub max_connections: usize,
    /// Open streams per client IP.
    pub max_streams_per_ip: usize,
    /// Requests open at once on one HTTP/2 connection (at least 1).
    pub max_streams_per_connection: u32,
    /// Request body bytes.
    pub max_body_bytes: usize,
    /// Event data bytes.
    pub max_event_bytes: usize,
    /// Topics per subscription.
    pub max_topics_per_subscription: usize,
    /// Events per batch publish.
    pub max_batch_events: usize,
    /// Time for a request head, from its first byte.
    pub header_timeout: Duration,
    /// Time for a request body, from the end of its head.
    pub body_timeout: Duration,
    /// Idle keep-alive timeout.
    pub idle_timeout: Duration,
    /// Stalled-reader timeout.
    pub stall_timeout: Duration,
    /// Longest stream; `None` for no limit.
    pub stream_max_duration: Option<Duration>,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Hub settings (rings, topics).
    pub hub: HubConfig,
    /// Store retention.
    pub retention: Retention,
    /// Rows per table on the dashboard.
    pub dashboard_rows: usize,
    /// Log filter.
    pub log: String,
    /// The Mercure door (open with `--mercure`).
    pub mercure: MercureConfig,
}

/// Where events are kept (`--store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// SQLite in the data dir.
    Sqlite,
    /// Memory, lost at exit.
    Memory,
    /// Redis at this URL, shared by several nodes.
    Redis(RedisUrl),
}

/// A Redis URL, its password hidden when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(pub String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", crate::store::redacted(&self.0))
    }
}

/// The Redis settings (used with `--store redis://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// Key prefix.
    pub prefix: String,
    /// Command and connection timeout.
    pub timeout: Duration,
    /// Longest feed lag.
    pub feed_max_lag: Duration,
    /// Restarts keep acknowledged writes.
    pub durable_restarts: bool,
}

/// What `herald token` needs of the server's configuration: the key tokens
/// are signed with and the claims the server checks. [`Config`] holds the
/// same, field for field.
#[derive(Debug, Clone)]
pub struct TokenConfig {
    /// Data directory, where a generated key is kept.
    pub data_dir: PathBuf,
    /// Token verification key.
    pub jwt_key: JwtKey,
    /// Accepted token algorithm.
    pub jwt_algorithm: Algorithm,
    /// Required issuer.
    pub jwt_issuer: Option<String>,
    /// Required audience.
    pub jwt_audience: Option<String>,
}

impl Config {
    /// A configuration for tests and embedding: defaults, memory store, the
    /// given HMAC secret.
    pub fn for_tests(secret: &str) -> Self {
        let mut settings = Settings::defaults();
        settings.memory = "true".into();
        settings.token.jwt_secret = Some(secret.into());
        match Self::from_settings(&settings) {
            Ok(config) => config,
            Err(errors) => panic!("test config invalid: {errors:?}"),
        }
    }
}
