//! Tokens: verifying a JWT into [`Grants`], and minting one (`herald token`).
//!
//! The accepted algorithm is pinned by configuration: a token signed with any
//! other (including `none`, and HS256 signed with an RSA public key's bytes)
//! is rejected before its claims are read.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use herald_core::{Grants, TopicError, TopicPattern};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, JwtKey, Secret},
    mercure::token::KeyMaterial,
    verified_tokens::{Verified, VerifiedTokens},
};

/// The claims Herald reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// Who the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// Expiry, seconds since the Unix epoch. Required.
    pub exp: u64,
    /// Issued at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Herald's own grants.
    #[serde(default)]
    pub herald: HeraldClaim,
}

/// The `herald` claim: what the token allows.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HeraldClaim {
    /// Topic patterns it may publish to.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Topic patterns it may subscribe to.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Operator access.
    #[serde(default)]
    pub admin: bool,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was given where one is needed.
    #[error(
        "a token is required: send `Authorization: Bearer <token>` (or ?access_token=, or the herald_token cookie)"
    )]
    Missing,
    /// A token was given but cannot be accepted.
    #[error("invalid token: {reason}")]
    Invalid {
        /// A short machine-readable reason (`expired`, `bad_signature`, …).
        code: &'static str,
        /// What was wrong and how to fix it.
        reason: String,
    },
}

impl AuthError {
    pub(crate) fn invalid(code: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid { code, reason: reason.into() }
    }

    /// The short reason, for logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Invalid { code, .. } => code,
        }
    }
}

/// Why the verifier cannot use the configured key. The cause shows in the
/// message.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The config says the key is generated, and none was given.
    #[error("no signing key: configure --jwt-secret")]
    Missing,
    /// A public key, with an algorithm that takes a secret.
    #[error("--jwt-algorithm {0:?} cannot use a public key")]
    NotPublicKeyAlgorithm(Algorithm),
    /// The public key file is not a key of the configured algorithm.
    #[error("--jwt-public-key {}: not a PEM {alg:?} public key ({error})", path.display())]
    NotPem {
        /// The key file.
        path: PathBuf,
        /// The configured algorithm.
        alg: Algorithm,
        /// Why.
        error: jsonwebtoken::errors::Error,
    },
}

/// Why `herald token` cannot sign. The cause shows in the message.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    /// A publish or subscribe pattern is not a topic pattern.
    #[error("pattern `{pattern}`: {error}")]
    Pattern {
        /// The pattern as given.
        pattern: String,
        /// Why.
        error: TopicError,
    },
    /// Signing failed (a key that does not fit the algorithm).
    #[error("cannot sign the token: {0}")]
    Sign(jsonwebtoken::errors::Error),
}

/// Checks tokens against the configured key and algorithm.
pub struct Verifier {
    key: DecodingKey,
    /// The key as configured, for the Mercure door to verify with too.
    material: KeyMaterial,
    validation: Validation,
    /// Tokens verified lately.
    verified: VerifiedTokens<Grants>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("algorithms", &self.validation.algorithms).finish_non_exhaustive()
    }
}

impl Verifier {
    /// A verifier for `config`; `secret` is the key to use when the config
    /// says [`JwtKey::Generated`] (loaded from the data dir by the caller).
    pub fn new(config: &Config, generated: Option<&Secret>) -> Result<Self, KeyError> {
        let alg = config.jwt_algorithm;
        let material = match (&config.jwt_key, generated) {
            (JwtKey::Secret(secret), _) | (JwtKey::Generated, Some(secret)) => {
                KeyMaterial::Secret(secret.0.as_bytes().to_vec())
            }
            (JwtKey::PublicKey { pem, .. }, _) => KeyMaterial::PublicKeyPem(String::from_utf8_lossy(pem).into_owned()),
            (JwtKey::Generated, None) => return Err(KeyError::Missing),
        };
        let key = match (&config.jwt_key, generated) {
            (JwtKey::Secret(secret), _) | (JwtKey::Generated, Some(secret)) => {
                DecodingKey::from_secret(secret.0.as_bytes())
            }
            (JwtKey::Generated, None) => return Err(KeyError::Missing),
            (JwtKey::PublicKey { path, pem }, _) => {
                let parsed = match alg {
                    Algorithm::RS256 | Algorithm::RS384 | Algorithm::RS512 | Algorithm::PS256 => {
                        DecodingKey::from_rsa_pem(pem)
                    }
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                    _ => return Err(KeyError::NotPublicKeyAlgorithm(alg)),
                };
                parsed.map_err(|error| KeyError::NotPem { path: path.clone(), alg, error })?
            }
        };
        let mut validation = Validation::new(alg);
        validation.leeway = config.jwt_leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        if let Some(issuer) = &config.jwt_issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        match &config.jwt_audience {
            Some(audience) => {
                validation.set_audience(&[audience]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let verified = VerifiedTokens::new(validation.leeway);
        Ok(Self { key, material, validation, verified })
    }

    /// The key and algorithm it verifies with (the Mercure door's default).
    pub(crate) fn material(&self) -> (&KeyMaterial, Algorithm) {
        (&self.material, self.validation.algorithms.first().copied().unwrap_or(Algorithm::HS256))
    }

    /// Verifies `token` and returns what it allows.
    pub fn verify(&self, token: &str) -> Result<Arc<Grants>, AuthError> {
        self.verified.get_or_check(token, || self.check(token))
    }

    /// Checks `token`'s signature and claims.
    fn check(&self, token: &str) -> Result<Grants, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(|e| match e.kind() {
            ErrorKind::ExpiredSignature => AuthError::invalid("expired", "the token has expired; mint a new one"),
            ErrorKind::ImmatureSignature => AuthError::invalid("not_yet_valid", "the token's nbf is in the future"),
            ErrorKind::InvalidSignature => AuthError::invalid(
                "bad_signature",
                "the signature does not match the key; was it minted with this server's --jwt-secret / --data-dir \
                 (herald token --config FILE or --data-dir DIR)?",
            ),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::invalid(
                "wrong_algorithm",
                format!(
                    "the token is not signed with {:?}, the algorithm this server accepts",
                    self.validation.algorithms[0]
                ),
            ),
            ErrorKind::InvalidIssuer => {
                AuthError::invalid("wrong_issuer", "the token's iss is not the configured issuer")
            }
            ErrorKind::InvalidAudience => {
                AuthError::invalid("wrong_audience", "the token's aud is not the configured audience")
            }
            ErrorKind::MissingRequiredClaim(claim) => {
                AuthError::invalid("missing_claim", format!("the token has no `{claim}` claim"))
            }
            ErrorKind::Json(_) => AuthError::invalid("bad_claims", "the token's claims do not have the expected shape"),
            _ => AuthError::invalid("malformed", "not a well-formed JWT"),
        })?;
        grants_from(data.claims)
    }
}

fn grants_from(claims: Claims) -> Result<Grants, AuthError> {
    let patterns = |list: &[String], field: &str| -> Result<Vec<TopicPattern>, AuthError> {
        list.iter()
            .map(|p| p.parse().map_err(|e| AuthError::invalid("bad_claims", format!("herald.{field} `{p}`: {e}"))))
            .collect()
    };
    Ok(Grants {
        subject: claims.sub,
        publish: patterns(&claims.herald.publish, "publish")?,
        subscribe: patterns(&claims.herald.subscribe, "subscribe")?,
        admin: claims.herald.admin,
        expires_at: Some(claims.exp),
    })
}

impl Verified for Grants {
    fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }
}

/// Seconds since the Unix epoch, now.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a minted token allows.
#[derive(Debug, Clone, Default)]
pub struct TokenSpec {
    /// `sub`.
    pub subject: String,
    /// Publish patterns.
    pub publish: Vec<String>,
    /// Subscribe patterns.
    pub subscribe: Vec<String>,
    /// Operator access.
    pub admin: bool,
    /// Lifetime.
    pub ttl: Duration,
    /// `iss`, for a server that requires one (`--jwt-issuer`).
    pub issuer: Option<String>,
    /// `aud`, for a server that requires one (`--jwt-audience`).
    pub audience: Option<String>,
}

/// The claims of a minted token: Herald's, and `iss`/`aud` when configured.
#[derive(Serialize)]
struct Minted<'a> {
    #[serde(flatten)]
    claims: Claims,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Signs a token for `spec` with `key` under `alg`.
pub fn mint(spec: &TokenSpec, alg: Algorithm, key: &EncodingKey) -> Result<String, MintError> {
    for pattern in spec.publish.iter().chain(&spec.subscribe) {
        pattern.parse::<TopicPattern>().map_err(|error| MintError::Pattern { pattern: pattern.clone(), error })?;
    }
    let now = now_secs();
    let claims = Claims {
        sub: Some(spec.subject.clone()),
        exp: now.saturating_add(spec.ttl.as_secs()),
        iat: Some(now),
        herald: HeraldClaim { publish: spec.publish.clone(), subscribe: spec.subscribe.clone(), admin: spec.admin },
    };
    let claims = Minted { claims, iss: spec.issuer.as_deref(), aud: spec.audience.as_deref() };
    jsonwebtoken::encode(&Header::new(alg), &claims, key).map_err(MintError::Sign)
}
