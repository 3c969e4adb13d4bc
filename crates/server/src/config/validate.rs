//! From [`Settings`] (text) to [`Config`] (typed): every value is parsed and
//! every problem collected, so that all are reported together.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use herald_core::{HubConfig, Retention, RingLimits, TopicPattern, TopicRetention};
use jsonwebtoken::Algorithm;

use crate::tls::{AcmeSettings, LETS_ENCRYPT, TlsFiles, TlsSource};

use super::{
    Config, JwtKey, MercureConfig, MercureKey, RedisOptions, RedisUrl, Secret, Settings, StoreKind, TokenConfig,
    TokenSettings, defaults,
    mercure::{MercureSettings, is_pem},
    values::{guess_public_key_algorithm, parse_algorithm, parse_bool, parse_count, parse_duration, parse_listen},
};

/// Collects the invalid settings, each named by its flag.
#[derive(Default)]
struct Problems {
    errors: Vec<String>,
}

impl Problems {
    /// `text` parsed, or `None` with the problem noted.
    fn value<T>(&mut self, name: &str, text: &str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        parse(text.trim()).map_err(|why| self.errors.push(format!("--{}: {why}", name.replace('_', "-")))).ok()
    }

    /// `text` parsed; a default stands in for an invalid value, which makes
    /// the whole configuration an error anyway.
    fn parse<T: Default>(&mut self, name: &str, text: &str, parse: impl Fn(&str) -> Result<T, String>) -> T {
        self.value(name, text, parse).unwrap_or_default()
    }

    fn duration(&mut self, name: &str, text: &str) -> Duration {
        self.parse(name, text, parse_duration)
    }

    fn positive_duration(&mut self, name: &str, text: &str) -> Duration {
        self.parse(name, text, |text| match parse_duration(text)? {
            Duration::ZERO => Err("must be more than 0".into()),
            duration => Ok(duration),
        })
    }

    fn count(&mut self, name: &str, text: &str) -> usize {
        self.parse(name, text, parse_count)
    }

    /// Notes that `small` must not exceed `large` when both are valid.
    fn at_least(&mut self, large: Option<usize>, small: Option<usize>, problem: &str) {
        if let (Some(large), Some(small)) = (large, small)
            && large < small
        {
            self.errors.push(problem.to_owned());
        }
    }

    fn finish<T>(self, value: T) -> Result<T, Vec<String>> {
        if self.errors.is_empty() { Ok(value) } else { Err(self.errors) }
    }
}

impl TokenConfig {
    /// Validates the settings `herald token` reads. Every problem is listed.
    pub fn from_settings(s: &TokenSettings) -> Result<Self, Vec<String>> {
        let mut p = Problems::default();
        let config = token_config(&mut p, s);
        p.finish(config)
    }
}

/// Where HTTPS gets its certificate, if it is served. The files are loaded
/// once to check them: a bad file stops the start with the others'
/// problems, not at the first connection.
fn tls_source(p: &mut Problems, s: &Settings) -> Option<TlsSource> {
    let (cert, key) = (given(&s.tls_cert), given(&s.tls_key));
    let acme = acme_settings(p, s);
    let files = match (cert, key) {
        (None, None) => None,
        (None, Some(_)) => {
            p.errors.push("--tls-key needs --tls-cert, the certificate it belongs to".into());
            None
        }
        (Some(cert), key) => Some(TlsFiles { key: key.unwrap_or_else(|| cert.clone()).into(), cert: cert.into() }),
    };
    match (files, acme) {
        (Some(_), Some(_)) => {
            p.errors.push(
                "--tls-cert and --acme-domain exclude each other: the certificate comes from files or from ACME".into(),
            );
            None
        }
        (Some(files), None) => {
            if let Err(problem) = files.load() {
                p.errors.push(problem);
            }
            Some(TlsSource::Files(files))
        }
        (None, acme) => acme.map(TlsSource::Acme),
    }
}

/// The ACME settings, if `--acme-domain` names any; the other `--acme-*`
/// flags need it.
fn acme_settings(p: &mut Problems, s: &Settings) -> Option<AcmeSettings> {
    let (email, directory, directory_ca) =
        (given(&s.acme_email), given(&s.acme_directory), given(&s.acme_directory_ca));
    let mut domains: Vec<String> = Vec::new();
    for text in s.acme_domain.iter().map(|d| d.trim()).filter(|d| !d.is_empty()) {
        match acme_domain(text) {
            Ok(name) if !domains.contains(&name) => domains.push(name),
            Ok(_) => {}
            Err(problem) => p.errors.push(format!("--acme-domain {text}: {problem}")),
        }
    }
    if domains.is_empty() {
        for (flag, value) in
            [("--acme-email", &email), ("--acme-directory", &directory), ("--acme-directory-ca", &directory_ca)]
        {
            if value.is_some() {
                p.errors.push(format!("{flag} needs --acme-domain, the names to get a certificate for"));
            }
        }
        return None;
    }
    if domains.len() > MAX_ACME_DOMAINS {
        p.errors
            .push(format!("--acme-domain: {} names; one certificate holds at most {MAX_ACME_DOMAINS}", domains.len()));
    }
    if let Some(email) = &email {
        let (user, host) = email.split_once('@').unwrap_or_default();
        if user.is_empty() || !host.contains('.') || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            p.errors.push(format!("--acme-email {email}: not an email address like ops@example.com"));
        }
    }
    let directory = directory.unwrap_or_else(|| LETS_ENCRYPT.to_owned());
    if !directory.starts_with("https://") {
        p.errors.push(format!("--acme-directory {directory}: an ACME directory is an https:// URL"));
    }
    if let Some(Err(problem)) = directory_ca.as_deref().map(|ca| AcmeSettings::directory_root(Path::new(ca))) {
        p.errors.push(problem);
    }
    Some(AcmeSettings { domains, email, directory, directory_ca: directory_ca.map(PathBuf::from) })
}

/// At least one stream, at most what HTTP/2's setting can say.
fn parse_streams_per_connection(text: &str) -> Result<u32, String> {
    match parse_count(text)? {
        0 => Err("at least 1: a connection must carry a request".into()),
        n => u32::try_from(n).map_err(|_| format!("at most {}", u32::MAX)),
    }
}

/// A flag's value, unless it is empty.
fn given(value: &Option<String>) -> Option<String> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty()).map(str::to_owned)
}

/// Most names one ACME certificate holds (Let's Encrypt's limit).
const MAX_ACME_DOMAINS: usize = 100;

/// `text` as the lowercase DNS name a TLS-ALPN-01 validation can prove.
fn acme_domain(text: &str) -> Result<String, &'static str> {
    if text.starts_with("*.") {
        return Err("a wildcard needs the DNS-01 challenge; Herald proves names by TLS-ALPN-01, so list each name");
    }
    if text.parse::<IpAddr>().is_ok() {
        return Err("an IP address, not a DNS name: ACME CAs issue certificates for names");
    }
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    match rustls::pki_types::DnsName::try_from(name.as_str()) {
        Ok(_) if name.contains('.') => Ok(name),
        _ => Err("not a DNS name like events.example.com"),
    }
}

fn token_config(p: &mut Problems, s: &TokenSettings) -> TokenConfig {
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
    let key_algorithm = match &jwt_key {
        JwtKey::PublicKey { pem, .. } => guess_public_key_algorithm(pem),
        _ => Algorithm::HS256,
    };
    let jwt_algorithm = match &s.jwt_algorithm {
        Some(text) => p.value("jwt_algorithm", text, parse_algorithm).unwrap_or(key_algorithm),
        None => key_algorithm,
    };
    let is_hmac = matches!(jwt_algorithm, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
    if matches!(jwt_key, JwtKey::PublicKey { .. }) && is_hmac {
        p.errors.push(format!("--jwt-algorithm {jwt_algorithm:?} needs --jwt-secret, not a public key"));
    }
    if !matches!(jwt_key, JwtKey::PublicKey { .. }) && !is_hmac {
        p.errors.push(format!("--jwt-algorithm {jwt_algorithm:?} needs --jwt-public-key FILE"));
    }
    TokenConfig {
        data_dir: PathBuf::from(&s.data_dir),
        jwt_key,
        jwt_algorithm,
        jwt_issuer: s.jwt_issuer.clone(),
        jwt_audience: s.jwt_audience.clone(),
    }
}

impl Config {
    /// Validates `settings`. Every problem is listed.
    pub fn from_settings(s: &Settings) -> Result<Self, Vec<String>> {
        let mut p = Problems::default();
        // Never served: an invalid address is an error.
        let nowhere = SocketAddr::from(([127, 0, 0, 1], 0));
        let tls = tls_source(&mut p, s);
        let (mut listen, mut redirect_listen) = (Vec::new(), Vec::new());
        for text in &s.listen {
            let (scheme, address) = match text.trim().split_once("://") {
                Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest.trim_end_matches('/')),
                None => (None, text.as_str()),
            };
            let address = p.value("listen", address, parse_listen).unwrap_or(nowhere);
            match (scheme.as_deref(), tls.is_some()) {
                (None, _) | (Some("https"), true) | (Some("http"), false) => listen.push(address),
                (Some("http"), true) => redirect_listen.push(address),
                (Some("https"), false) => {
                    p.errors.push(format!("--listen {text}: HTTPS needs --tls-cert or --acme-domain"))
                }
                (Some(other), _) => {
                    p.errors.push(format!("--listen {text}: `{other}://` is neither http:// nor https://"))
                }
            }
        }
        if listen.is_empty() {
            p.errors.push("--listen: give at least one address to serve on, like 0.0.0.0:8080".into());
        }
        let internal_listen =
            s.internal_listen.as_deref().map(|text| p.value("internal_listen", text, parse_listen).unwrap_or(nowhere));
        let token = token_config(&mut p, &s.token);
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
        let max_delivery_bytes = p.value("max_delivery_bytes", &s.max_delivery_bytes, parse_count);
        let catch_up_cache_bytes = p.value("catch_up_cache_bytes", &s.catch_up_cache_bytes, parse_count);
        p.at_least(
            catch_up_cache_bytes,
            max_delivery_bytes,
            "--catch-up-cache-bytes must be at least --max-delivery-bytes: a page of history larger than the cache is never shared",
        );
        let max_body_bytes = p.value("max_body_bytes", &s.max_body_bytes, parse_count);
        let max_event_bytes = p.value("max_event_bytes", &s.max_event_bytes, parse_count);
        p.at_least(max_body_bytes, max_event_bytes, "--max-body-bytes must be at least --max-event-bytes");
        let hub = HubConfig {
            ring: RingLimits {
                max_events: p.count("ring_events", &s.ring_events),
                max_bytes: p.count("ring_bytes", &s.ring_bytes),
            },
            max_topics: p.count("max_topics", &s.max_topics),
            max_delivery_bytes: max_delivery_bytes.unwrap_or_default(),
            catch_up_cache_bytes: catch_up_cache_bytes.unwrap_or_default(),
            ..HubConfig::default()
        };
        let retention_events = p.count("retention_events", &s.retention_events);
        let retention_age = p.duration("retention_age", &s.retention_age);
        // The door's history (`$mercure`) keeps the same unless told otherwise.
        let door = &s.mercure;
        let hub_events = door.mercure_retention_events.as_deref().map(|t| p.count("mercure_retention_events", t));
        let hub_age = door.mercure_retention_age.as_deref().map(|t| p.duration("mercure_retention_age", t));
        let kept = |age: Duration| (!age.is_zero()).then_some(age);
        let retention = Retention {
            max_events_per_topic: retention_events,
            max_age: kept(retention_age),
            hub_topics: TopicRetention {
                max_events: hub_events.unwrap_or(retention_events),
                max_age: kept(hub_age.unwrap_or(retention_age)),
            },
            idempotency_ttl: p.duration("idempotency_ttl", &s.idempotency_ttl),
            hold_bytes: p.parse("retention_hold_bytes", &s.retention_hold_bytes, |t| {
                t.parse::<u64>().map_err(|_| format!("`{t}` is not a number of bytes"))
            }),
        };
        let memory = p.parse("memory", &s.memory, parse_bool);
        let (store, data_dir) = store(&mut p, s, memory, token.data_dir.clone());
        if matches!(store, StoreKind::Redis(_)) && matches!(token.jwt_key, JwtKey::Generated) {
            p.errors.push(
                "--store redis:// needs --jwt-secret or --jwt-public-key: every node must verify the same tokens, \
                 and a key generated in one node's data dir is known to that node alone"
                    .into(),
            );
        }
        let prefix = s.redis_prefix.trim().to_owned();
        if prefix.is_empty() || prefix.contains(['{', '}', '*', '?', '[', ']', ' ']) {
            p.errors.push(format!("--redis-prefix `{prefix}`: use letters, digits, `.`, `_`, `-` or `:`"));
        }
        let redis = RedisOptions {
            prefix,
            timeout: p.positive_duration("redis_timeout", &s.redis_timeout),
            feed_max_lag: p.positive_duration("redis_feed_max_lag", &s.redis_feed_max_lag),
            durable_restarts: p.parse("redis_durable_restarts", &s.redis_durable_restarts, parse_bool),
        };
        let stream_max = p.duration("stream_max_duration", &s.stream_max_duration);
        let heartbeat = p.positive_duration("heartbeat", &s.heartbeat);
        let body_timeout = p.positive_duration("body_timeout", &s.body_timeout);
        let config = Self {
            listen,
            internal_listen,
            redirect_listen,
            tls,
            data_dir,
            store,
            redis,
            sqlite_synchronous: p.parse("sqlite_synchronous", &s.sqlite_synchronous, str::parse),
            jwt_key: token.jwt_key,
            jwt_algorithm: token.jwt_algorithm,
            jwt_issuer: token.jwt_issuer,
            jwt_audience: token.jwt_audience,
            jwt_leeway: p.duration("jwt_leeway", &s.jwt_leeway),
            public_subscribe,
            heartbeat,
            retry: p.duration("retry", &s.retry),
            cors_origins,
            cors_credentials: p.parse("cors_credentials", &s.cors_credentials, parse_bool),
            trusted_proxies,
            max_connections: p.count("max_connections", &s.max_connections),
            max_streams_per_ip: p.count("max_streams_per_ip", &s.max_streams_per_ip),
            max_streams_per_connection: p.parse(
                "max_streams_per_connection",
                &s.max_streams_per_connection,
                parse_streams_per_connection,
            ),
            max_body_bytes: max_body_bytes.unwrap_or_default(),
            max_event_bytes: max_event_bytes.unwrap_or_default(),
            max_topics_per_subscription: p.count("max_topics_per_subscription", &s.max_topics_per_subscription),
            max_batch_events: p.count("max_batch_events", &s.max_batch_events),
            header_timeout: p.duration("header_timeout", &s.header_timeout),
            body_timeout,
            idle_timeout: p.duration("idle_timeout", &s.idle_timeout),
            stall_timeout: p.duration("stall_timeout", &s.stall_timeout),
            stream_max_duration: (!stream_max.is_zero()).then_some(stream_max),
            shutdown_grace: p.duration("shutdown_grace", &s.shutdown_grace),
            hub,
            retention,
            dashboard_rows: p.count("dashboard_rows", &s.dashboard_rows),
            log: s.log.clone(),
            mercure: mercure(&mut p, &s.mercure),
        };
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&s.log) {
            p.errors.push(format!("--log: {e}"));
        }
        p.finish(config)
    }
}

/// The Mercure door's settings (its history's bounds are read with the
/// other retention settings).
fn mercure(p: &mut Problems, s: &MercureSettings) -> MercureConfig {
    let mut key = |flag: &str, text: &Option<String>, alg_flag: &str, alg: &Option<String>| {
        let text = text.as_deref().map(str::trim).filter(|t| !t.is_empty());
        let alg = alg.as_deref().and_then(|a| p.value(alg_flag, a, parse_algorithm));
        // The key's kind and its algorithm are checked when the door opens.
        if text.is_some_and(|t| !is_pem(t) && t.len() < 32) {
            p.errors.push(format!("--{flag}: an HMAC secret must be at least 32 bytes long"));
        }
        MercureKey { text: text.map(|t| Secret(t.to_owned())), alg }
    };
    let publisher_key = key(
        "mercure-publisher-jwt-key",
        &s.mercure_publisher_jwt_key,
        "mercure_publisher_jwt_alg",
        &s.mercure_publisher_jwt_alg,
    );
    let subscriber_key = key(
        "mercure-subscriber-jwt-key",
        &s.mercure_subscriber_jwt_key,
        "mercure_subscriber_jwt_alg",
        &s.mercure_subscriber_jwt_alg,
    );
    let cookie_name = s.mercure_cookie_name.trim().to_owned();
    let token_char = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if cookie_name.is_empty() || !cookie_name.chars().all(token_char) {
        p.errors.push(format!("--mercure-cookie-name `{cookie_name}`: not a cookie name (letters, digits, -, _, .)"));
    }
    MercureConfig {
        enabled: p.parse("mercure", &s.mercure, parse_bool),
        anonymous: p.parse("mercure_anonymous", &s.mercure_anonymous, parse_bool),
        publish_origins: s.mercure_publish_origins.iter().map(|o| o.trim().trim_end_matches('/').to_owned()).collect(),
        publisher_key,
        subscriber_key,
        cookie_name,
        query_token: p.parse("mercure_query_token", &s.mercure_query_token, parse_bool),
        gap_event: p.parse("mercure_gap_event", &s.mercure_gap_event, parse_bool),
        subscriptions: p.parse("mercure_subscriptions", &s.mercure_subscriptions, parse_bool),
    }
}

/// The store `--store` names (or `--memory`), with the data dir it implies;
/// `--store` saying otherwise than `--memory` or `--data-dir` is refused
/// (which one would win?).
fn store(p: &mut Problems, s: &Settings, memory: bool, data_dir: PathBuf) -> (StoreKind, PathBuf) {
    let Some(text) = s.store.as_deref().map(str::trim) else {
        return (if memory { StoreKind::Memory } else { StoreKind::Sqlite }, data_dir);
    };
    if memory && text != "memory" {
        p.errors.push(format!("--memory and --store {}: pick one", crate::store::redacted(text)));
    }
    if text == "memory" {
        return (StoreKind::Memory, data_dir);
    }
    if let Some(dir) = text.strip_prefix("sqlite:") {
        if dir.is_empty() {
            p.errors.push("--store sqlite:DIR: name the directory, like sqlite:./herald-data".into());
        } else if data_dir != std::path::Path::new(defaults::DATA_DIR) && data_dir != std::path::Path::new(dir) {
            p.errors.push(format!("--data-dir {} and --store sqlite:{dir}: pick one", data_dir.display()));
        }
        return (StoreKind::Sqlite, PathBuf::from(dir));
    }
    if ["redis://", "rediss://", "redis+unix://", "unix://"].iter().any(|scheme| text.starts_with(scheme)) {
        if let Err(e) = redis::Client::open(text) {
            p.errors.push(format!("--store {}: {e}", crate::store::redacted(text)));
        }
        return (StoreKind::Redis(RedisUrl(text.to_owned())), data_dir);
    }
    p.errors.push(format!(
        "--store `{}`: expected sqlite:DIR, memory, or a redis://, rediss:// or redis+unix:// URL",
        crate::store::redacted(text)
    ));
    (StoreKind::Sqlite, data_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::defaults;

    #[test]
    fn the_store_is_named_once_and_redis_needs_a_shared_key() {
        let with = |store: &str, secret: Option<&str>, memory: &str| {
            let mut settings = Settings { store: Some(store.into()), memory: memory.into(), ..Settings::defaults() };
            settings.token.jwt_secret = secret.map(Into::into);
            Config::from_settings(&settings)
        };
        let secret = Some("0123456789abcdef0123456789abcdef");
        let errors = with("redis://127.0.0.1:6379", None, "false").unwrap_err();
        assert!(errors.iter().any(|e| e.contains("needs --jwt-secret or --jwt-public-key")), "{errors:?}");
        let config = with("redis://app:hunter2@10.0.0.1:6379/0", secret, "false").unwrap();
        let shown = format!("{config:?}");
        assert!(shown.contains("redis://app:***@10.0.0.1:6379/0") && !shown.contains("hunter2"), "{shown}");
        assert_eq!(with("memory", None, "false").unwrap().store, StoreKind::Memory);
        let sqlite = with("sqlite:some/dir", None, "false").unwrap();
        assert_eq!((sqlite.store, sqlite.data_dir), (StoreKind::Sqlite, PathBuf::from("some/dir")));
        assert!(with("sqlite:some/dir", None, "true").unwrap_err()[0].contains("--memory and --store"));
        assert!(with("postgres://x", None, "false").unwrap_err()[0].contains("expected sqlite:DIR, memory"));
    }

    #[test]
    fn every_bad_setting_is_reported_together() {
        let mut settings = Settings {
            listen: vec!["nowhere".into()],
            heartbeat: "soon".into(),
            max_connections: "0".into(),
            public_subscribe: vec!["a b".into()],
            catch_up_cache_bytes: "1000".into(),
            ..Settings::defaults()
        };
        settings.token.jwt_algorithm = Some("none".into());
        let errors = Config::from_settings(&settings).unwrap_err();
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors.iter().any(|e| e.contains("--catch-up-cache-bytes must be at least --max-delivery-bytes")));
        assert!(errors.iter().any(|e| e.contains("--listen") && e.contains("nowhere")));
        assert!(errors.iter().any(|e| e.contains("never accepted")));
    }

    #[test]
    fn timeouts_default_and_a_zero_body_timeout_is_refused() {
        let config = Config::for_tests("0123456789abcdef0123456789abcdef-secret");
        assert_eq!(config.body_timeout, defaults::BODY_TIMEOUT);
        let settings = Settings { body_timeout: "0".into(), ..Settings::defaults() };
        let errors = Config::from_settings(&settings).unwrap_err();
        assert!(errors.iter().any(|e| e.starts_with("--body-timeout")), "{errors:?}");
    }

    #[test]
    fn the_doors_history_follows_the_retention_flags_unless_told_otherwise() {
        let settings = Settings { retention_events: "50".into(), retention_age: "1h".into(), ..Settings::defaults() };
        let followed = Config::from_settings(&settings).unwrap().retention;
        assert_eq!(followed.hub_topics, TopicRetention { max_events: 50, max_age: Some(Duration::from_secs(3600)) });
        let mut settings = settings;
        settings.mercure.mercure_retention_events = Some("2".into());
        settings.mercure.mercure_retention_age = Some("0".into());
        let own = Config::from_settings(&settings).unwrap().retention;
        assert_eq!(own.hub_topics, TopicRetention { max_events: 2, max_age: None }, "0 keeps updates");
        assert_eq!((own.events_for("news"), own.age_for("news")), (50, Some(Duration::from_secs(3600))));
        settings.mercure.mercure_retention_events = Some("0".into());
        settings.mercure.mercure_retention_age = Some("soon".into());
        let errors = Config::from_settings(&settings).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("--mercure-retention-events: must be at least 1"), "{errors:?}");
        assert!(errors[1].starts_with("--mercure-retention-age"), "{errors:?}");
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let config = Config::from_settings(&Settings::defaults()).unwrap();
        assert_eq!(config.listen, [defaults::LISTEN.parse().unwrap()]);
        assert_eq!(config.data_dir, PathBuf::from(defaults::DATA_DIR));
        assert!(config.store == StoreKind::Sqlite && !config.cors_credentials);
        assert_eq!(config.sqlite_synchronous, crate::store::Synchronous::Full);
        assert!(matches!(config.jwt_key, JwtKey::Generated));
        assert_eq!(config.jwt_algorithm, Algorithm::HS256);
        assert_eq!(
            (config.jwt_leeway, config.heartbeat, config.retry),
            (defaults::JWT_LEEWAY, defaults::HEARTBEAT, defaults::RETRY)
        );
        assert_eq!(config.max_connections, defaults::MAX_CONNECTIONS);
        assert_eq!(config.max_streams_per_ip, defaults::MAX_STREAMS_PER_IP);
        assert_eq!(
            (config.max_body_bytes, config.max_event_bytes),
            (defaults::MAX_BODY_BYTES, defaults::MAX_EVENT_BYTES)
        );
        assert_eq!(config.max_topics_per_subscription, defaults::MAX_TOPICS_PER_SUBSCRIPTION);
        assert_eq!(config.max_batch_events, defaults::MAX_BATCH_EVENTS);
        assert_eq!(config.header_timeout, defaults::HEADER_TIMEOUT);
        assert_eq!(config.idle_timeout, defaults::IDLE_TIMEOUT);
        assert_eq!(config.stall_timeout, defaults::STALL_TIMEOUT);
        assert_eq!(config.stream_max_duration, None);
        assert_eq!(config.shutdown_grace, defaults::SHUTDOWN_GRACE);
        assert_eq!(config.dashboard_rows, defaults::DASHBOARD_ROWS);
        assert_eq!(config.log, defaults::LOG);
        // The hub's and the store's defaults are core's own.
        let hub = HubConfig::default();
        assert_eq!((config.hub.ring.max_events, config.hub.ring.max_bytes), (hub.ring.max_events, hub.ring.max_bytes));
        assert_eq!(config.hub.max_topics, hub.max_topics);
        assert_eq!(config.hub.max_delivery_bytes, hub.max_delivery_bytes);
        assert_eq!(config.hub.catch_up_cache_bytes, hub.catch_up_cache_bytes);
        assert_eq!(config.retention, Retention::default());
        assert_eq!(config.retention.max_age, Some(Duration::from_secs(7 * 24 * 3600)), "7d, as documented");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let config = Config::for_tests("0123456789abcdef0123456789abcdef-secret");
        assert!(!format!("{config:?}").contains("-secret"));
    }
}
