//! The one definition of every setting. Each field is a flag (`--max-connections`),
//! an environment variable (`HERALD_MAX_CONNECTIONS`), a key of the `--config`
//! file (`max-connections`, see [`super::file`]) and a line of `--help`, with
//! its default; nothing else lists them.
//!
//! Values stay text here: [`super::Config::from_settings`] parses them all
//! and reports every invalid one at once, where clap would stop at the first.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Command, FromArgMatches as _};
use herald_core::{HubConfig, Retention, RingLimits};

use super::defaults;
use crate::store::Synchronous;

/// The settings `herald token` shares with the server it mints for: where the
/// settings come from, the signing key and the claims the server checks.
#[derive(Debug, Clone, Args)]
pub struct TokenSettings {
    /// TOML file with settings (keys as the flags, without `--`).
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for the database and the generated signing key.
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR", default_value = defaults::DATA_DIR)]
    pub data_dir: String,
    /// HMAC secret for HS256/384/512 tokens.
    #[arg(long, env = "HERALD_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256, ES256 or EdDSA tokens.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<String>,
    /// Token algorithm accepted (HS256, HS384, HS512, RS256, ES256, EdDSA)
    /// [default: HS256, or the public key's kind].
    #[arg(long, env = "HERALD_JWT_ALGORITHM", value_name = "ALG")]
    pub jwt_algorithm: Option<String>,
    /// Required `iss` claim.
    #[arg(long, env = "HERALD_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,
}

/// Every setting of the server.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// The settings `herald token` reads too.
    #[command(flatten)]
    pub token: TokenSettings,
    /// The Mercure door's.
    #[command(flatten)]
    pub mercure: super::mercure::MercureSettings,
    /// Addresses to listen on, IP:PORT or HOST:PORT (repeat the flag, or
    /// separate them with commas). With --tls-cert they serve HTTPS, except
    /// those written http://ADDR, which redirect to HTTPS.
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR", value_delimiter = ',', num_args = 1..,
          default_value = defaults::LISTEN)]
    pub listen: Vec<String>,
    /// Serve /metrics and /admin on this address only, off the public listener.
    #[arg(long, env = "HERALD_INTERNAL_LISTEN", value_name = "ADDR")]
    pub internal_listen: Option<String>,
    /// Serve HTTPS with this certificate (PEM: the certificate, then its
    /// chain); reloaded when the file changes or on SIGHUP.
    #[arg(long, env = "HERALD_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<String>,
    /// The private key of --tls-cert (PEM); default: read from the
    /// --tls-cert file itself.
    #[arg(long, env = "HERALD_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<String>,
    /// Serve HTTPS with a certificate from an ACME CA (Let's Encrypt by
    /// default) for this name (repeat the flag, or separate names with
    /// commas); obtained and renewed by TLS-ALPN-01 on port 443, kept in
    /// --data-dir.
    #[arg(long, env = "HERALD_ACME_DOMAIN", value_name = "NAME", value_delimiter = ',')]
    pub acme_domain: Vec<String>,
    /// The contact address the ACME CA may write to about the certificates
    /// (expiry, problems).
    #[arg(long, env = "HERALD_ACME_EMAIL", value_name = "EMAIL")]
    pub acme_email: Option<String>,
    /// The ACME CA's directory URL [default: Let's Encrypt's production
    /// directory].
    #[arg(long, env = "HERALD_ACME_DIRECTORY", value_name = "URL")]
    pub acme_directory: Option<String>,
    /// Trust this root certificate (PEM) for the ACME directory's HTTPS,
    /// for a private ACME CA; default: the system's roots.
    #[arg(long, env = "HERALD_ACME_DIRECTORY_CA", value_name = "FILE")]
    pub acme_directory_ca: Option<String>,
    /// Keep events in memory only (lost at exit).
    #[arg(long, env = "HERALD_MEMORY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          default_value = "false")]
    pub memory: String,
    /// Where events are kept: `sqlite:DIR`, `memory`, or a Redis URL
    /// (`redis://HOST:PORT`, `rediss://…`, `redis+unix:///PATH`) shared by
    /// several nodes [default: `sqlite:` in --data-dir, or `memory` with
    /// --memory].
    #[arg(long, env = "HERALD_STORE", value_name = "STORE")]
    pub store: Option<String>,
    /// Prefix of Herald's keys in Redis: nodes with the same prefix share topics.
    #[arg(long, env = "HERALD_REDIS_PREFIX", value_name = "PREFIX", default_value = defaults::REDIS_PREFIX)]
    pub redis_prefix: String,
    /// Bound of each Redis command and connection attempt: while Redis is
    /// down, publishes answer 503 within it.
    #[arg(long, env = "HERALD_REDIS_TIMEOUT", value_name = "DURATION", default_value_t = text(defaults::REDIS_TIMEOUT))]
    pub redis_timeout: String,
    /// Longest the Redis feed may lag before the node drops it and repairs
    /// from the streams.
    #[arg(long, env = "HERALD_REDIS_FEED_MAX_LAG", value_name = "DURATION",
          default_value_t = text(defaults::REDIS_FEED_MAX_LAG))]
    pub redis_feed_max_lag: String,
    /// Trust that Redis restarts and failovers keep acknowledged writes even
    /// without `appendfsync always` (else a new Redis process starts a new
    /// history, and streams get `herald.gap` `history_lost`).
    #[arg(long, env = "HERALD_REDIS_DURABLE_RESTARTS", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", default_value = "false")]
    pub redis_durable_restarts: String,
    /// SQLite durability: `full` (fsync every commit) or `normal` (opt-in: a
    /// power loss may lose the last acknowledged commits).
    #[arg(long, env = "HERALD_SQLITE_SYNCHRONOUS", value_name = "MODE",
          default_value_t = Synchronous::default().to_string())]
    pub sqlite_synchronous: String,
    /// Clock-skew leeway for `exp` and `nbf`.
    #[arg(long, env = "HERALD_JWT_LEEWAY", value_name = "DURATION", default_value_t = text(defaults::JWT_LEEWAY))]
    pub jwt_leeway: String,
    /// Topic patterns anyone may subscribe to without a token (comma-separated).
    #[arg(long, env = "HERALD_PUBLIC_SUBSCRIBE", value_name = "PATTERN", value_delimiter = ',', num_args = 1..)]
    pub public_subscribe: Vec<String>,
    /// Heartbeat comment interval on idle streams.
    #[arg(long, env = "HERALD_HEARTBEAT", value_name = "DURATION", default_value_t = text(defaults::HEARTBEAT))]
    pub heartbeat: String,
    /// Reconnection delay sent to clients.
    #[arg(long, env = "HERALD_RETRY", value_name = "DURATION", default_value_t = text(defaults::RETRY))]
    pub retry: String,
    /// Origins allowed by CORS (comma-separated; `*` for any).
    #[arg(long, env = "HERALD_CORS_ORIGINS", value_name = "ORIGIN", value_delimiter = ',', num_args = 1..)]
    pub cors_origins: Vec<String>,
    /// Let CORS origins send cookies (Access-Control-Allow-Credentials), for
    /// the `herald_token` cookie across origins; with `*`, any site may then
    /// read streams with its visitors' cookies.
    #[arg(long, env = "HERALD_CORS_CREDENTIALS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL",
          default_value = "false")]
    pub cors_credentials: String,
    /// Proxies whose X-Forwarded-For is trusted (comma-separated IPs).
    #[arg(long, env = "HERALD_TRUSTED_PROXIES", value_name = "IP", value_delimiter = ',', num_args = 1..)]
    pub trusted_proxies: Vec<String>,
    /// Open connections, all clients together.
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "N", default_value_t = defaults::MAX_CONNECTIONS.to_string())]
    pub max_connections: String,
    /// Open event streams per client IP.
    #[arg(long, env = "HERALD_MAX_STREAMS_PER_IP", value_name = "N",
          default_value_t = defaults::MAX_STREAMS_PER_IP.to_string())]
    pub max_streams_per_ip: String,
    /// Event streams (and other requests) open at once on one HTTP/2
    /// connection; a browser's tabs of one site share a connection.
    #[arg(long, env = "HERALD_MAX_STREAMS_PER_CONNECTION", value_name = "N",
          default_value_t = defaults::MAX_STREAMS_PER_CONNECTION.to_string())]
    pub max_streams_per_connection: String,
    /// Request body size in bytes.
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_name = "BYTES", default_value_t = defaults::MAX_BODY_BYTES.to_string())]
    pub max_body_bytes: String,
    /// One event's data size in bytes.
    #[arg(long, env = "HERALD_MAX_EVENT_BYTES", value_name = "BYTES",
          default_value_t = defaults::MAX_EVENT_BYTES.to_string())]
    pub max_event_bytes: String,
    /// Topics and patterns in one subscription.
    #[arg(long, env = "HERALD_MAX_TOPICS_PER_SUBSCRIPTION", value_name = "N",
          default_value_t = defaults::MAX_TOPICS_PER_SUBSCRIPTION.to_string())]
    pub max_topics_per_subscription: String,
    /// Events in one batch publish.
    #[arg(long, env = "HERALD_MAX_BATCH_EVENTS", value_name = "N", default_value_t = defaults::MAX_BATCH_EVENTS.to_string())]
    pub max_batch_events: String,
    /// Topics held in memory at once.
    #[arg(long, env = "HERALD_MAX_TOPICS", value_name = "N", default_value_t = HubConfig::default().max_topics.to_string())]
    pub max_topics: String,
    /// Events buffered in memory per topic.
    #[arg(long, env = "HERALD_RING_EVENTS", value_name = "N", default_value_t = RingLimits::DEFAULT_EVENTS.to_string())]
    pub ring_events: String,
    /// Bytes buffered in memory per topic.
    #[arg(long, env = "HERALD_RING_BYTES", value_name = "BYTES", default_value_t = RingLimits::DEFAULT_BYTES.to_string())]
    pub ring_bytes: String,
    /// Most bytes of events handed to one stream at once: one write, one
    /// catch-up page (a single larger event still goes whole).
    #[arg(long, env = "HERALD_MAX_DELIVERY_BYTES", value_name = "BYTES",
          default_value_t = HubConfig::DEFAULT_DELIVERY_BYTES.to_string())]
    pub max_delivery_bytes: String,
    /// Bytes of history kept in the catch-up pages that readers behind their
    /// topic's ring share.
    #[arg(long, env = "HERALD_CATCH_UP_CACHE_BYTES", value_name = "BYTES",
          default_value_t = HubConfig::DEFAULT_CATCH_UP_CACHE_BYTES.to_string())]
    pub catch_up_cache_bytes: String,
    /// Events the store retains per topic.
    #[arg(long, env = "HERALD_RETENTION_EVENTS", value_name = "N",
          default_value_t = Retention::default().max_events_per_topic.to_string())]
    pub retention_events: String,
    /// Age after which the store drops events; `0` keeps them.
    #[arg(long, env = "HERALD_RETENTION_AGE", value_name = "DURATION",
          default_value_t = text(Retention::default().max_age.unwrap_or_default()))]
    pub retention_age: String,
    /// How long idempotency keys are remembered.
    #[arg(long, env = "HERALD_IDEMPOTENCY_TTL", value_name = "DURATION",
          default_value_t = text(Retention::default().idempotency_ttl))]
    pub idempotency_ttl: String,
    /// Bytes of one topic's events kept past --retention-events for
    /// connected subscribers that have not had them yet (a burst that
    /// outruns its readers); past it they get `herald.gap`.
    #[arg(long, env = "HERALD_RETENTION_HOLD_BYTES", value_name = "BYTES",
          default_value_t = Retention::default().hold_bytes.to_string())]
    pub retention_hold_bytes: String,
    /// Time a client has to send a request head, from its first byte; a new
    /// connection's first head, from the connection.
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", value_name = "DURATION", default_value_t = text(defaults::HEADER_TIMEOUT))]
    pub header_timeout: String,
    /// Time a client has to send a request body, from the end of its head; late is a 408.
    #[arg(long, env = "HERALD_BODY_TIMEOUT", value_name = "DURATION", default_value_t = text(defaults::BODY_TIMEOUT))]
    pub body_timeout: String,
    /// Keep-alive connections with no request in flight are closed after this
    /// (never streams); a silent HTTP/2 peer is pinged after it.
    #[arg(long, env = "HERALD_IDLE_TIMEOUT", value_name = "DURATION", default_value_t = text(defaults::IDLE_TIMEOUT))]
    pub idle_timeout: String,
    /// A stream whose client stops reading (over HTTP/2: keeps its window shut,
    /// or leaves a PING unanswered) this long is disconnected.
    #[arg(long, env = "HERALD_STALL_TIMEOUT", value_name = "DURATION", default_value_t = text(defaults::STALL_TIMEOUT))]
    pub stall_timeout: String,
    /// Streams end after this long and clients reconnect; `0` never.
    #[arg(long, env = "HERALD_STREAM_MAX_DURATION", value_name = "DURATION",
          default_value_t = text(defaults::STREAM_MAX_DURATION))]
    pub stream_max_duration: String,
    /// Time given to in-flight work at shutdown, and to a connection told to close.
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", value_name = "DURATION", default_value_t = text(defaults::SHUTDOWN_GRACE))]
    pub shutdown_grace: String,
    /// Rows the dashboard lists per table; past it the page says "showing N of M".
    #[arg(long, env = "HERALD_DASHBOARD_ROWS", value_name = "N", default_value_t = defaults::DASHBOARD_ROWS.to_string())]
    pub dashboard_rows: String,
    /// Log filter, as RUST_LOG syntax.
    #[arg(long, env = "HERALD_LOG", value_name = "FILTER", default_value = defaults::LOG)]
    pub log: String,
}

impl Settings {
    /// Every setting at its default, whatever the environment holds: for
    /// tests and embedding.
    pub fn defaults() -> Self {
        let command = Self::augment_args(Command::new("herald")).mut_args(|arg| arg.env(None));
        let matches = command.get_matches_from(["herald"]);
        Self::from_arg_matches(&matches).expect("the defaults are valid settings")
    }
}

/// A duration as `--help` shows it and `parse_duration` reads it back.
fn text(duration: Duration) -> String {
    humantime::format_duration(duration).to_string()
}
