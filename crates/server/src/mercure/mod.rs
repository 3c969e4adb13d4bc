//! The Mercure door: Mercure's protocol on `/.well-known/mercure`, so that
//! applications written for a Mercure hub (Symfony, API Platform, plain
//! `EventSource` pages) work against Herald unchanged, on Herald's hub.
//!
//! Every update is one event of the hub-owned topic `$mercure`, with its
//! Mercure topics, private flag and id beside it ([`herald_core::MercureMeta`]):
//! one id and one place in the hub's order for an update of many topics, and
//! one cursor to resume from. A subscriber's stream is a subscription to that
//! topic, filtered by its selectors and its token's grants.
//!
//! - `token`: the door's tokens (both dialects) and where a request carries one;
//! - `selectors`: compiled selectors, shared and bounded;
//! - `publish`, `subscribe`: the two halves of the protocol;
//! - `presence`, `subscriptions_api`: subscription events and the list of
//!   open subscriptions;
//! - `cors`: the door's cross-origin rules.

mod cors;
pub mod presence;
mod publish;
mod selectors;
mod subscribe;
mod subscriptions_api;
pub mod token;

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::FromRequestParts, http::request::Parts, routing::get};
use herald_core::TopicName;
use jsonwebtoken::Algorithm;
use token::{KeyMaterial, KeySpec, MercureKeyError};
use url::Url;

pub use selectors::SelectorCache;

use crate::{
    auth::Verifier,
    config::{MercureConfig, MercureKey, values::guess_public_key_algorithm},
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// Where the door is.
pub const PATH: &str = "/.well-known/mercure";

/// The hub-owned topic that holds every update.
pub const TOPIC: &str = "$mercure";

/// What relative topics and URL patterns (1.0) are resolved against, as
/// Mercure's hub does when it is given no URL of its own.
const TOPIC_BASE: &str = "http://mercure.invalid/";

/// The door's shared parts.
#[derive(Debug)]
pub struct Door {
    /// Its settings.
    pub config: MercureConfig,
    /// Checks publishers' and subscribers' tokens.
    pub verifier: token::MercureVerifier,
    /// Where requests may carry a token.
    pub places: token::TokenPlaces,
    /// The topic of its updates.
    pub topic: TopicName,
    /// Compiled selectors.
    pub selectors: SelectorCache,
    /// The subscriptions open on this node.
    pub presence: presence::Presence,
}

impl Door {
    /// The door `config` describes; keys it does not set are `herald`'s.
    pub fn new(config: MercureConfig, herald: &Verifier, leeway: Duration) -> Result<Self, MercureKeyError> {
        let spec = |key: &MercureKey, flag| {
            let (material, alg) = match &key.text {
                Some(text) => {
                    let material = KeyMaterial::from_text(&text.0);
                    let alg = key.alg.unwrap_or_else(|| match &material {
                        KeyMaterial::Secret(_) => Algorithm::HS256,
                        KeyMaterial::PublicKeyPem(pem) => guess_public_key_algorithm(pem.as_bytes()),
                    });
                    (material, alg)
                }
                None => {
                    let (material, alg) = herald.material();
                    (material.clone(), key.alg.unwrap_or(alg))
                }
            };
            KeySpec::new(material, alg, flag)
        };
        let publisher = spec(&config.publisher_key, "--mercure-publisher-jwt-key")?;
        let subscriber = spec(&config.subscriber_key, "--mercure-subscriber-jwt-key")?;
        let base = Url::parse(TOPIC_BASE).expect("the topic base is a valid URL");
        let verifier = token::MercureVerifier::new(publisher, subscriber, leeway, base.clone());
        let places = token::TokenPlaces { cookie_name: config.cookie_name.clone(), query: config.query_token };
        let topic = TopicName::new(TOPIC).expect("the door's topic is a valid hub-owned name");
        let selectors = SelectorCache::new(base);
        Ok(Self { config, verifier, places, topic, selectors, presence: presence::Presence::default() })
    }
}

/// The door's routes, when it is on.
pub fn router(state: &AppState) -> Option<Router<AppState>> {
    state.mercure.as_ref()?;
    let subscriptions = presence::SUBSCRIPTIONS_PATH;
    let routes = Router::new()
        .route(PATH, get(subscribe::subscribe).post(publish::publish))
        .route(subscriptions, get(subscriptions_api::all))
        .route(&format!("{subscriptions}/{{topic}}"), get(subscriptions_api::of_topic))
        .route(&format!("{subscriptions}/{{topic}}/{{subscriber}}"), get(subscriptions_api::one));
    Some(match cors::layer(&state.config.cors_origins) {
        Some(layer) => routes.layer(layer),
        None => routes,
    })
}

/// The door, for its handlers (404 when it is off).
struct TheDoor(Arc<Door>);

impl FromRequestParts<AppState> for TheDoor {
    type Rejection = ApiError;

    async fn from_request_parts(_: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let door = state.mercure.clone();
        door.map(Self)
            .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "the Mercure door is off; start Herald with --mercure"))
    }
}
