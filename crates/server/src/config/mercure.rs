//! The Mercure door's settings (`--mercure*`): what Mercure's own hub calls
//! `anonymous`, `publish_origins`, `cookie_name`, the publisher's and the
//! subscriber's JWT keys.

use clap::Args;
use jsonwebtoken::Algorithm;

use super::Secret;

/// The cookie Mercure's clients carry their token in (0.x).
pub const DEFAULT_COOKIE: &str = "mercureAuthorization";

/// The `--mercure*` flags, as text.
#[derive(Debug, Clone, Args)]
pub struct MercureSettings {
    /// Serve the Mercure protocol on /.well-known/mercure, for applications
    /// written for a Mercure hub.
    #[arg(long, env = "HERALD_MERCURE", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", default_value = "false")]
    pub mercure: String,
    /// Let Mercure subscribers without a token receive public updates.
    #[arg(long, env = "HERALD_MERCURE_ANONYMOUS", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", default_value = "false")]
    pub mercure_anonymous: String,
    /// Origins allowed to publish with the cookie's token (comma-separated; `*` for any).
    #[arg(long, env = "HERALD_MERCURE_PUBLISH_ORIGINS", value_name = "ORIGIN", value_delimiter = ',', num_args = 1..)]
    pub mercure_publish_origins: Vec<String>,
    /// The key that verifies publishers' tokens, as Mercure's
    /// MERCURE_PUBLISHER_JWT_KEY: the HMAC secret, or a PEM public key's text
    /// [default: Herald's own key].
    #[arg(long, env = "HERALD_MERCURE_PUBLISHER_JWT_KEY", value_name = "KEY", hide_env_values = true)]
    pub mercure_publisher_jwt_key: Option<String>,
    /// The algorithm of publishers' tokens [default: HS256, or Herald's with its key].
    #[arg(long, env = "HERALD_MERCURE_PUBLISHER_JWT_ALG", value_name = "ALG")]
    pub mercure_publisher_jwt_alg: Option<String>,
    /// The key that verifies subscribers' tokens (as --mercure-publisher-jwt-key).
    #[arg(long, env = "HERALD_MERCURE_SUBSCRIBER_JWT_KEY", value_name = "KEY", hide_env_values = true)]
    pub mercure_subscriber_jwt_key: Option<String>,
    /// The algorithm of subscribers' tokens [default: HS256, or Herald's with its key].
    #[arg(long, env = "HERALD_MERCURE_SUBSCRIBER_JWT_ALG", value_name = "ALG")]
    pub mercure_subscriber_jwt_alg: Option<String>,
    /// The cookie that may carry a Mercure token (0.x).
    #[arg(long, env = "HERALD_MERCURE_COOKIE_NAME", value_name = "NAME", default_value = DEFAULT_COOKIE)]
    pub mercure_cookie_name: String,
    /// Accept a token in the `authorization` query parameter (0.x clients
    /// that cannot set headers); it may end up in proxies' logs.
    #[arg(long, env = "HERALD_MERCURE_QUERY_TOKEN", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", default_value = "true")]
    pub mercure_query_token: String,
    /// Tell subscribers that history was lost with a `herald.gap` event (no
    /// `id:`, ignored by `onmessage`).
    #[arg(long, env = "HERALD_MERCURE_GAP_EVENT", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", default_value = "true")]
    pub mercure_gap_event: String,
    /// Publish subscription events and serve the subscriptions API (presence).
    #[arg(long, env = "HERALD_MERCURE_SUBSCRIPTIONS", num_args = 0..=1, default_missing_value = "true",
          value_name = "BOOL", default_value = "false")]
    pub mercure_subscriptions: String,
    /// Updates the door keeps in its history (Mercure's history size)
    /// [default: --retention-events].
    #[arg(long, env = "HERALD_MERCURE_RETENTION_EVENTS", value_name = "N")]
    pub mercure_retention_events: Option<String>,
    /// Age after which the door drops updates from its history (Mercure's
    /// cleanup); `0` keeps them [default: --retention-age].
    #[arg(long, env = "HERALD_MERCURE_RETENTION_AGE", value_name = "DURATION")]
    pub mercure_retention_age: Option<String>,
}

/// Whether a key's text is a PEM public key, else an HMAC secret (as
/// Mercure's `MERCURE_*_JWT_KEY` variables tell them apart).
pub fn is_pem(text: &str) -> bool {
    text.trim_start().starts_with("-----BEGIN")
}

/// A key of the door's own, or Herald's.
#[derive(Clone)]
pub struct MercureKey {
    /// The key's text (an HMAC secret or a PEM public key); `None` is Herald's.
    pub text: Option<Secret>,
    /// The algorithm its tokens are signed with; `None` is Herald's.
    pub alg: Option<Algorithm>,
}

/// `Herald's key`, `secret ***`, `PEM public key`, then `with ALG` when set.
impl std::fmt::Debug for MercureKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.text {
            None => f.write_str("Herald's key")?,
            Some(text) if is_pem(&text.0) => f.write_str("PEM public key")?,
            Some(_) => f.write_str("secret ***")?,
        }
        match self.alg {
            Some(alg) => write!(f, " with {alg:?}"),
            None => Ok(()),
        }
    }
}

/// The validated settings of the Mercure door.
#[derive(Debug, Clone)]
pub struct MercureConfig {
    /// Whether the door is open (`--mercure`).
    pub enabled: bool,
    /// Public updates for subscribers without a token.
    pub anonymous: bool,
    /// Origins that may publish with the cookie's token.
    pub publish_origins: Vec<String>,
    /// Verifies publishers' tokens.
    pub publisher_key: MercureKey,
    /// Verifies subscribers' tokens.
    pub subscriber_key: MercureKey,
    /// The 0.x cookie's name.
    pub cookie_name: String,
    /// Tokens in the `authorization` query parameter.
    pub query_token: bool,
    /// `herald.gap` events for lost history.
    pub gap_event: bool,
    /// Subscription events and the subscriptions API.
    pub subscriptions: bool,
}
