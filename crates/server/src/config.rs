//! Settings: parsed once, from flags, `HERALD_*` environment variables and a
//! TOML file (in that order of precedence), into a documented [`Config`].
//! Every invalid setting is reported at once, not the first one alone.

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use herald_core::{HubConfig, Retention, RingLimits, TopicPattern};
use jsonwebtoken::Algorithm;

/// Defaults, as documented constants.
pub mod defaults {
    use std::time::Duration;

    /// Where Herald listens.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// Where Herald keeps its data.
    pub const DATA_DIR: &str = "./herald-data";
    /// Comment line sent on idle streams, so proxies keep them open.
    pub const HEARTBEAT: Duration = Duration::from_secs(15);
    /// Reconnection delay suggested to clients (`retry:`).
    pub const RETRY: Duration = Duration::from_secs(3);
    /// Leeway for `exp` and `nbf`, for clock skew.
    pub const JWT_LEEWAY: Duration = Duration::from_secs(5);
    /// Open TCP connections, all clients together.
    pub const MAX_CONNECTIONS: usize = 10_000;
    /// Open event streams per client IP address.
    pub const MAX_STREAMS_PER_IP: usize = 256;
    /// Request body size.
    pub const MAX_BODY_BYTES: usize = 1 << 20;
    /// One event's data size.
    pub const MAX_EVENT_BYTES: usize = 256 << 10;
    /// Topics and patterns in one subscription.
    pub const MAX_TOPICS_PER_SUBSCRIPTION: usize = 64;
    /// Events in one batch publish.
    pub const MAX_BATCH_EVENTS: usize = 10_000;
    /// Time a client has to send a complete request head.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Time a client has to send a request's whole body, from the end of its head.
    pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
    /// A keep-alive connection with no request in flight is closed after this.
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
    /// A stream whose client stops reading for this long is disconnected.
    pub const STALL_TIMEOUT: Duration = Duration::from_secs(30);
    /// Time given to in-flight work at shutdown.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
    /// How long a key is remembered for `Idempotency-Key`.
    pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(24 * 3600);
    /// Events retained per topic by the store.
    pub const RETENTION_EVENTS: usize = 10_000;
    /// Age after which the store drops events.
    pub const RETENTION_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
    /// Rows the dashboard lists per table (topics, streams).
    pub const DASHBOARD_ROWS: usize = 500;
}

/// A secret that never appears in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Raw settings as given on the command line or in the environment. Every
/// field is text so that all errors can be found and reported together.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Settings {
    /// TOML file with settings (keys as the flags, without `--`).
    #[arg(long, env = "HERALD_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on, IP:PORT or HOST:PORT [default: 127.0.0.1:8080].
    #[arg(long, env = "HERALD_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Serve /metrics and /admin on this address only, off the public listener.
    #[arg(long, env = "HERALD_INTERNAL_LISTEN", value_name = "ADDR")]
    pub internal_listen: Option<String>,
    /// Directory for the database and the generated signing key [default: ./herald-data].
    #[arg(long, env = "HERALD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Keep events in memory only (lost at exit).
    #[arg(long, env = "HERALD_MEMORY", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub memory: Option<String>,
    /// SQLite durability: `full` (fsync every commit) or `normal` (opt-in: a
    /// power loss may lose the last acknowledged commits) [default: full].
    #[arg(long, env = "HERALD_SQLITE_SYNCHRONOUS", value_name = "MODE")]
    pub sqlite_synchronous: Option<String>,
    /// HMAC secret for HS256/384/512 tokens.
    #[arg(long, env = "HERALD_JWT_SECRET", value_name = "SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM public key for RS256, ES256 or EdDSA tokens.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY", value_name = "FILE")]
    pub jwt_public_key: Option<String>,
    /// Token algorithm accepted (HS256, HS384, HS512, RS256, ES256, EdDSA).
    #[arg(long, env = "HERALD_JWT_ALGORITHM", value_name = "ALG")]
    pub jwt_algorithm: Option<String>,
    /// Required `iss` claim.
    #[arg(long, env = "HERALD_JWT_ISSUER", value_name = "ISS")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim.
    #[arg(long, env = "HERALD_JWT_AUDIENCE", value_name = "AUD")]
    pub jwt_audience: Option<String>,
    /// Clock-skew leeway for `exp` and `nbf` [default: 5s].
    #[arg(long, env = "HERALD_JWT_LEEWAY", value_name = "DURATION")]
    pub jwt_leeway: Option<String>,
    /// Topic patterns anyone may subscribe to without a token (comma-separated).
    #[arg(long, env = "HERALD_PUBLIC_SUBSCRIBE", value_name = "PATTERN", value_delimiter = ',', num_args = 1..)]
    pub public_subscribe: Vec<String>,
    /// Heartbeat comment interval on idle streams [default: 15s].
    #[arg(long, env = "HERALD_HEARTBEAT", value_name = "DURATION")]
    pub heartbeat: Option<String>,
    /// Reconnection delay sent to clients [default: 3s].
    #[arg(long, env = "HERALD_RETRY", value_name = "DURATION")]
    pub retry: Option<String>,
    /// Origins allowed by CORS (comma-separated; `*` for any).
    #[arg(long, env = "HERALD_CORS_ORIGINS", value_name = "ORIGIN", value_delimiter = ',', num_args = 1..)]
    pub cors_origins: Vec<String>,
    /// Let CORS origins send cookies (Access-Control-Allow-Credentials), for
    /// the `herald_token` cookie across origins; with `*`, any site may then
    /// read streams with its visitors' cookies [default: false].
    #[arg(long, env = "HERALD_CORS_CREDENTIALS", num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub cors_credentials: Option<String>,
    /// Proxies whose X-Forwarded-For is trusted (comma-separated IPs).
    #[arg(long, env = "HERALD_TRUSTED_PROXIES", value_name = "IP", value_delimiter = ',', num_args = 1..)]
    pub trusted_proxies: Vec<String>,
    /// Open connections, all clients together [default: 10000].
    #[arg(long, env = "HERALD_MAX_CONNECTIONS", value_name = "N")]
    pub max_connections: Option<String>,
    /// Open event streams per client IP [default: 256].
    #[arg(long, env = "HERALD_MAX_STREAMS_PER_IP", value_name = "N")]
    pub max_streams_per_ip: Option<String>,
    /// Request body size in bytes [default: 1048576].
    #[arg(long, env = "HERALD_MAX_BODY_BYTES", value_name = "BYTES")]
    pub max_body_bytes: Option<String>,
    /// One event's data size in bytes [default: 262144].
    #[arg(long, env = "HERALD_MAX_EVENT_BYTES", value_name = "BYTES")]
    pub max_event_bytes: Option<String>,
    /// Topics and patterns in one subscription [default: 64].
    #[arg(long, env = "HERALD_MAX_TOPICS_PER_SUBSCRIPTION", value_name = "N")]
    pub max_topics_per_subscription: Option<String>,
    /// Events in one batch publish [default: 10000].
    #[arg(long, env = "HERALD_MAX_BATCH_EVENTS", value_name = "N")]
    pub max_batch_events: Option<String>,
    /// Topics held in memory at once [default: 100000].
    #[arg(long, env = "HERALD_MAX_TOPICS", value_name = "N")]
    pub max_topics: Option<String>,
    /// Events buffered in memory per topic [default: 1024].
    #[arg(long, env = "HERALD_RING_EVENTS", value_name = "N")]
    pub ring_events: Option<String>,
    /// Bytes buffered in memory per topic [default: 1048576].
    #[arg(long, env = "HERALD_RING_BYTES", value_name = "BYTES")]
    pub ring_bytes: Option<String>,
    /// Most bytes of events handed to one stream at once: one write, one
    /// catch-up page (a single larger event still goes whole) [default: 1048576].
    #[arg(long, env = "HERALD_MAX_DELIVERY_BYTES", value_name = "BYTES")]
    pub max_delivery_bytes: Option<String>,
    /// Bytes of history kept in the catch-up pages that readers behind their
    /// topic's ring share [default: 33554432].
    #[arg(long, env = "HERALD_CATCH_UP_CACHE_BYTES", value_name = "BYTES")]
    pub catch_up_cache_bytes: Option<String>,
    /// Events the store retains per topic [default: 10000].
    #[arg(long, env = "HERALD_RETENTION_EVENTS", value_name = "N")]
    pub retention_events: Option<String>,
    /// Age after which the store drops events; `0` keeps them [default: 7d].
    #[arg(long, env = "HERALD_RETENTION_AGE", value_name = "DURATION")]
    pub retention_age: Option<String>,
    /// How long idempotency keys are remembered [default: 24h].
    #[arg(long, env = "HERALD_IDEMPOTENCY_TTL", value_name = "DURATION")]
    pub idempotency_ttl: Option<String>,
    /// Time a client has to send a request head, from its first byte; a new
    /// connection's first head, from the connection [default: 10s].
    #[arg(long, env = "HERALD_HEADER_TIMEOUT", value_name = "DURATION")]
    pub header_timeout: Option<String>,
    /// Time a client has to send a request body, from the end of its head; late is a 408 [default: 10s].
    #[arg(long, env = "HERALD_BODY_TIMEOUT", value_name = "DURATION")]
    pub body_timeout: Option<String>,
    /// Keep-alive connections with no request in flight are closed after this
    /// (never streams); a silent HTTP/2 peer is pinged after it [default: 60s].
    #[arg(long, env = "HERALD_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,
    /// A stream whose client stops reading (over HTTP/2: keeps its window shut,
    /// or leaves a PING unanswered) this long is disconnected [default: 30s].
    #[arg(long, env = "HERALD_STALL_TIMEOUT", value_name = "DURATION")]
    pub stall_timeout: Option<String>,
    /// Streams end after this long and clients reconnect; `0` never [default: 0].
    #[arg(long, env = "HERALD_STREAM_MAX_DURATION", value_name = "DURATION")]
    pub stream_max_duration: Option<String>,
    /// Time given to in-flight work at shutdown, and to a connection told to close [default: 10s].
    #[arg(long, env = "HERALD_SHUTDOWN_GRACE", value_name = "DURATION")]
    pub shutdown_grace: Option<String>,
    /// Rows the dashboard lists per table; past it the page says "showing N of M" [default: 500].
    #[arg(long, env = "HERALD_DASHBOARD_ROWS", value_name = "N")]
    pub dashboard_rows: Option<String>,
    /// Log filter, as RUST_LOG syntax [default: info].
    #[arg(long, env = "HERALD_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

/// Takes each unset scalar setting from the file table.
macro_rules! fill_from_file {
    ($settings:ident, $table:ident, [$($field:ident),* $(,)?], [$($list:ident),* $(,)?]) => {
        $( let value = $table.remove(&key(stringify!($field)));
           if $settings.$field.is_none() { $settings.$field = value; } )*
        $( if let Some(value) = $table.remove(&key(stringify!($list))) {
            if $settings.$list.is_empty() {
                $settings.$list = value.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
            }
        } )*
    };
}

fn key(field: &str) -> String {
    field.replace('_', "-")
}

impl Settings {
    /// Fills what flags and environment left unset from the `--config`
    /// file. Errors name the file and the key.
    pub fn with_file(mut self) -> Result<Self, Vec<String>> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("cannot read config file {}: {e}", path.display())])?;
        let table: toml::Table =
            text.parse().map_err(|e| vec![format!("config file {} is not valid TOML: {e}", path.display())])?;
        let mut values = BTreeMap::new();
        for (name, value) in table {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Array(items) => items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            values.insert(name.replace('_', "-"), text);
        }
        fill_from_file!(
            self,
            values,
            [
                listen,
                data_dir,
                memory,
                jwt_secret,
                jwt_public_key,
                jwt_algorithm,
                jwt_issuer,
                jwt_audience,
                jwt_leeway,
                heartbeat,
                retry,
                cors_credentials,
                max_connections,
                max_streams_per_ip,
                max_body_bytes,
                max_event_bytes,
                max_topics_per_subscription,
                max_batch_events,
                max_topics,
                ring_events,
                ring_bytes,
                max_delivery_bytes,
                catch_up_cache_bytes,
                retention_events,
                retention_age,
                idempotency_ttl,
                header_timeout,
                body_timeout,
                idle_timeout,
                stall_timeout,
                stream_max_duration,
                shutdown_grace,
                dashboard_rows,
                log,
            ],
            [public_subscribe, cors_origins, trusted_proxies]
        );
        let unknown: Vec<String> =
            values.keys().map(|k| format!("unknown setting `{k}` in config file {}", path.display())).collect();
        if unknown.is_empty() { Ok(self) } else { Err(unknown) }
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
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address for /metrics and /admin alone; `None` serves them publicly.
    pub internal_listen: Option<SocketAddr>,
    /// Data directory (database, generated key).
    pub data_dir: PathBuf,
    /// Events in memory only.
    pub memory: bool,
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
}

/// Collects parse errors so that all are reported together.
#[derive(Default)]
struct Parser {
    errors: Vec<String>,
}

impl Parser {
    fn parse<T>(
        &mut self,
        name: &str,
        value: Option<&str>,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        match value.map(str::trim) {
            None => default,
            Some(text) => parse(text).unwrap_or_else(|why| {
                self.errors.push(format!("--{}: {why}", key(name)));
                default
            }),
        }
    }

    fn duration(&mut self, name: &str, value: Option<&str>, default: Duration) -> Duration {
        self.parse(name, value, default, parse_duration)
    }

    fn count(&mut self, name: &str, value: Option<&str>, default: usize) -> usize {
        self.parse(name, value, default, |s| match s.replace('_', "").parse::<usize>() {
            Ok(0) => Err("must be at least 1".into()),
            Ok(n) => Ok(n),
            Err(_) => Err(format!("`{s}` is not a whole number")),
        })
    }
}

/// Parses `10s`, `5m`, `1h30m`, `250ms`; a bare number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration like 10s, 5m or 1h ({e})"))
}

/// An address to listen on: `IP:PORT`, or `HOST:PORT` resolved now (to the
/// first address the resolver gives).
pub fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    let like = "an address like 127.0.0.1:8080, [::]:8080 or localhost:8080";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!("`{text}` is not {like}"));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!("`{text}` is not {like}"));
    }
    match std::net::ToSocketAddrs::to_socket_addrs(text) {
        Ok(mut addresses) => addresses.next().ok_or_else(|| format!("`{host}` resolves to no address")),
        Err(e) => Err(format!("cannot resolve `{host}` ({e}); give {like}")),
    }
}

/// Parses a token algorithm name.
pub fn parse_algorithm(text: &str) -> Result<Algorithm, String> {
    match text.to_ascii_uppercase().as_str() {
        "HS256" => Ok(Algorithm::HS256),
        "HS384" => Ok(Algorithm::HS384),
        "HS512" => Ok(Algorithm::HS512),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        "EDDSA" => Ok(Algorithm::EdDSA),
        "NONE" => Err("`none` is never accepted: tokens must be signed".into()),
        _ => Err(format!("`{text}` is not one of HS256, HS384, HS512, RS256, ES256, EdDSA")),
    }
}

fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{text}` is not true or false")),
    }
}

impl Config {
    /// Validates `settings` (file already merged). Every problem is listed.
    pub fn from_settings(s: &Settings) -> Result<Self, Vec<String>> {
        let mut p = Parser::default();
        let listen = p.parse("listen", s.listen.as_deref(), defaults_listen(), parse_listen);
        let internal_listen = s
            .internal_listen
            .as_deref()
            .map(|text| p.parse("internal_listen", Some(text), defaults_listen(), parse_listen));
        let data_dir = PathBuf::from(s.data_dir.as_deref().unwrap_or(defaults::DATA_DIR));
        let memory = p.parse("memory", s.memory.as_deref(), false, parse_bool);
        let sqlite_synchronous =
            p.parse("sqlite_synchronous", s.sqlite_synchronous.as_deref(), crate::store::Synchronous::Full, str::parse);
        let secret = s.jwt_secret.clone().filter(|v| !v.is_empty());
        let jwt_key = match (&secret, &s.jwt_public_key) {
            (Some(_), Some(_)) => {
                p.errors.push("--jwt-secret and --jwt-public-key exclude each other: pick one".into());
                JwtKey::Generated
            }
            (Some(secret), None) => {
                if secret.len() < 32 {
                    p.errors.push("--jwt-secret: use at least 32 characters (e.g. `openssl rand -hex 32`)".into());
                }
                JwtKey::Secret(Secret(secret.clone()))
            }
            (None, Some(path)) => match std::fs::read(path) {
                Ok(pem) => JwtKey::PublicKey { path: PathBuf::from(path), pem },
                Err(e) => {
                    p.errors.push(format!("--jwt-public-key: cannot read {path}: {e}"));
                    JwtKey::Generated
                }
            },
            (None, None) => JwtKey::Generated,
        };
        let default_algorithm = match &jwt_key {
            JwtKey::PublicKey { pem, .. } => guess_public_key_algorithm(pem),
            _ => Algorithm::HS256,
        };
        let jwt_algorithm = p.parse("jwt_algorithm", s.jwt_algorithm.as_deref(), default_algorithm, parse_algorithm);
        let is_hmac = matches!(jwt_algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        if matches!(jwt_key, JwtKey::PublicKey { .. }) && is_hmac {
            p.errors.push(format!("--jwt-algorithm {jwt_algorithm:?} needs --jwt-secret, not a public key"));
        }
        if !matches!(jwt_key, JwtKey::PublicKey { .. }) && !is_hmac {
            p.errors.push(format!("--jwt-algorithm {jwt_algorithm:?} needs --jwt-public-key FILE"));
        }
        let jwt_leeway = p.duration("jwt_leeway", s.jwt_leeway.as_deref(), defaults::JWT_LEEWAY);
        let mut public_subscribe = Vec::new();
        for text in &s.public_subscribe {
            match text.parse::<TopicPattern>() {
                Ok(pattern) => public_subscribe.push(pattern),
                Err(e) => p.errors.push(format!("--public-subscribe `{text}`: {e}")),
            }
        }
        let mut trusted_proxies = Vec::new();
        for text in &s.trusted_proxies {
            match text.parse::<IpAddr>() {
                Ok(ip) => trusted_proxies.push(ip),
                Err(_) => p.errors.push(format!("--trusted-proxies: `{text}` is not an IP address")),
            }
        }
        let cors_origins: Vec<String> = s.cors_origins.clone();
        for origin in cors_origins.iter().filter(|o| *o != "*") {
            if !(origin.starts_with("http://") || origin.starts_with("https://")) || origin.ends_with('/') {
                p.errors.push(format!("--cors-origins: `{origin}` is not an origin like https://app.example.com"));
            }
        }
        let ring = RingLimits {
            max_events: p.count("ring_events", s.ring_events.as_deref(), RingLimits::DEFAULT_EVENTS),
            max_bytes: p.count("ring_bytes", s.ring_bytes.as_deref(), RingLimits::DEFAULT_BYTES),
        };
        let hub = HubConfig {
            ring,
            max_topics: p.count("max_topics", s.max_topics.as_deref(), HubConfig::default().max_topics),
            max_delivery_bytes: p.count(
                "max_delivery_bytes",
                s.max_delivery_bytes.as_deref(),
                HubConfig::DEFAULT_DELIVERY_BYTES,
            ),
            catch_up_cache_bytes: p.count(
                "catch_up_cache_bytes",
                s.catch_up_cache_bytes.as_deref(),
                HubConfig::DEFAULT_CATCH_UP_CACHE_BYTES,
            ),
            ..HubConfig::default()
        };
        let retention_age = p.duration("retention_age", s.retention_age.as_deref(), defaults::RETENTION_AGE);
        let retention = Retention {
            max_events_per_topic: p.count(
                "retention_events",
                s.retention_events.as_deref(),
                defaults::RETENTION_EVENTS,
            ),
            max_age: (!retention_age.is_zero()).then_some(retention_age),
            idempotency_ttl: p.duration("idempotency_ttl", s.idempotency_ttl.as_deref(), defaults::IDEMPOTENCY_TTL),
        };
        let stream_max = p.duration("stream_max_duration", s.stream_max_duration.as_deref(), Duration::ZERO);
        let heartbeat = p.duration("heartbeat", s.heartbeat.as_deref(), defaults::HEARTBEAT);
        if heartbeat.is_zero() {
            p.errors.push("--heartbeat: must be more than 0".into());
        }
        let body_timeout = p.duration("body_timeout", s.body_timeout.as_deref(), defaults::BODY_TIMEOUT);
        if body_timeout.is_zero() {
            p.errors.push("--body-timeout: must be more than 0".into());
        }
        let config = Self {
            listen,
            internal_listen,
            data_dir,
            memory,
            sqlite_synchronous,
            jwt_key,
            jwt_algorithm,
            jwt_issuer: s.jwt_issuer.clone(),
            jwt_audience: s.jwt_audience.clone(),
            jwt_leeway,
            public_subscribe,
            heartbeat,
            retry: p.duration("retry", s.retry.as_deref(), defaults::RETRY),
            cors_origins,
            cors_credentials: p.parse("cors_credentials", s.cors_credentials.as_deref(), false, parse_bool),
            trusted_proxies,
            max_connections: p.count("max_connections", s.max_connections.as_deref(), defaults::MAX_CONNECTIONS),
            max_streams_per_ip: p.count(
                "max_streams_per_ip",
                s.max_streams_per_ip.as_deref(),
                defaults::MAX_STREAMS_PER_IP,
            ),
            max_body_bytes: p.count("max_body_bytes", s.max_body_bytes.as_deref(), defaults::MAX_BODY_BYTES),
            max_event_bytes: p.count("max_event_bytes", s.max_event_bytes.as_deref(), defaults::MAX_EVENT_BYTES),
            max_topics_per_subscription: p.count(
                "max_topics_per_subscription",
                s.max_topics_per_subscription.as_deref(),
                defaults::MAX_TOPICS_PER_SUBSCRIPTION,
            ),
            max_batch_events: p.count("max_batch_events", s.max_batch_events.as_deref(), defaults::MAX_BATCH_EVENTS),
            header_timeout: p.duration("header_timeout", s.header_timeout.as_deref(), defaults::HEADER_TIMEOUT),
            body_timeout,
            idle_timeout: p.duration("idle_timeout", s.idle_timeout.as_deref(), defaults::IDLE_TIMEOUT),
            stall_timeout: p.duration("stall_timeout", s.stall_timeout.as_deref(), defaults::STALL_TIMEOUT),
            stream_max_duration: (!stream_max.is_zero()).then_some(stream_max),
            shutdown_grace: p.duration("shutdown_grace", s.shutdown_grace.as_deref(), defaults::SHUTDOWN_GRACE),
            hub,
            retention,
            dashboard_rows: p.count("dashboard_rows", s.dashboard_rows.as_deref(), defaults::DASHBOARD_ROWS),
            log: s.log.clone().unwrap_or_else(|| "info".to_owned()),
        };
        if config.max_body_bytes < config.max_event_bytes {
            p.errors.push("--max-body-bytes must be at least --max-event-bytes".into());
        }
        if config.hub.catch_up_cache_bytes < config.hub.max_delivery_bytes {
            p.errors.push(
                "--catch-up-cache-bytes must be at least --max-delivery-bytes: a page of history larger than the cache is never shared".into(),
            );
        }
        if p.errors.is_empty() { Ok(config) } else { Err(p.errors) }
    }

    /// A configuration for tests and embedding: defaults, memory store, the
    /// given HMAC secret.
    pub fn for_tests(secret: &str) -> Self {
        let settings = Settings { memory: Some("true".into()), jwt_secret: Some(secret.into()), ..Settings::default() };
        match Self::from_settings(&settings) {
            Ok(config) => config,
            Err(errors) => panic!("test config invalid: {errors:?}"),
        }
    }
}

fn defaults_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

/// RS256 for RSA keys, ES256 for EC keys, EdDSA for Ed25519 keys.
fn guess_public_key_algorithm(pem: &[u8]) -> Algorithm {
    use jsonwebtoken::DecodingKey;
    if DecodingKey::from_rsa_pem(pem).is_ok() {
        Algorithm::RS256
    } else if DecodingKey::from_ec_pem(pem).is_ok() {
        Algorithm::ES256
    } else {
        Algorithm::EdDSA
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_setting_is_reported_together() {
        let settings = Settings {
            listen: Some("nowhere".into()),
            heartbeat: Some("soon".into()),
            max_connections: Some("0".into()),
            public_subscribe: vec!["a b".into()],
            jwt_algorithm: Some("none".into()),
            catch_up_cache_bytes: Some("1000".into()),
            ..Settings::default()
        };
        let errors = Config::from_settings(&settings).unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("--catch-up-cache-bytes must be at least --max-delivery-bytes")));
        assert!(errors.iter().any(|e| e.contains("--listen") && e.contains("nowhere")));
        assert!(errors.iter().any(|e| e.contains("never accepted")));
    }

    #[test]
    fn file_settings_fill_gaps_but_flags_win() {
        let dir = std::env::temp_dir().join(format!("herald-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("herald.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nheartbeat = \"2s\"\nmax-connections = 50\npublic-subscribe = [\"news.*\"]\n\
             body-timeout = \"3s\"\ncors-credentials = true\ndashboard-rows = 7\n",
        )
        .unwrap();
        let settings = Settings { config: Some(file.clone()), heartbeat: Some("5s".into()), ..Settings::default() };
        let config = Config::from_settings(&settings.with_file().unwrap()).unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.heartbeat, Duration::from_secs(5));
        assert_eq!(config.max_connections, 50);
        assert_eq!(config.public_subscribe.len(), 1);
        assert_eq!(config.body_timeout, Duration::from_secs(3));
        assert!(config.cors_credentials);
        assert_eq!(config.dashboard_rows, 7);
        assert!(!Config::for_tests("0123456789abcdef0123456789abcdef").cors_credentials, "off by default");
        std::fs::write(&file, "lisen = \"x\"\n").unwrap();
        let errors = Settings { config: Some(file), ..Settings::default() }.with_file().unwrap_err();
        assert!(errors[0].contains("unknown setting `lisen`"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn timeouts_default_and_a_zero_body_timeout_is_refused() {
        let config = Config::for_tests("0123456789abcdef0123456789abcdef-secret");
        assert_eq!(config.body_timeout, defaults::BODY_TIMEOUT);
        let settings = Settings { body_timeout: Some("0".into()), ..Settings::default() };
        let errors = Config::from_settings(&settings).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("--body-timeout")), "{errors:?}");
    }

    #[test]
    fn listen_addresses_may_name_a_host() {
        let local = parse_listen("localhost:8080").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        assert_eq!(parse_listen("[::1]:9").unwrap().port(), 9);
        let unknown = parse_listen("no-such-host.invalid:8080").unwrap_err();
        assert!(unknown.contains("cannot resolve `no-such-host.invalid`"), "{unknown}");
        assert!(parse_listen("localhost").unwrap_err().contains("not an address like"));
        assert!(parse_listen("localhost:http").unwrap_err().contains("not an address like"));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = Config::for_tests("0123456789abcdef0123456789abcdef-secret");
        assert!(!format!("{config:?}").contains("-secret"));
    }
}
