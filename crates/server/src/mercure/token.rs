//! Mercure tokens: where a request carries one ([`find_token`]) and what a
//! verified one allows ([`MercureVerifier`]).
//!
//! Mercure's rules, not Herald's native ones (`crate::auth`):
//! - publishers and subscribers may have separate keys, and the role picks
//!   the key: a token signed with the subscriber key is no publisher token;
//! - each key's algorithm is pinned: `none` and any other algorithm are
//!   refused before the claims are read;
//! - `exp` is honoured when present and required only of 1.0 tokens (0.x
//!   publisher tokens often have none: the conformance suite's does not);
//!   `nbf` is honoured; `iss` and `aud` are not checked;
//! - a token is 1.0 (draft-08) when its header's `typ` is `at+jwt` or it
//!   has an `authorization_details` claim, else 0.x (draft-07, the
//!   `mercure` claim).

use std::{fmt, sync::Arc, time::Duration};

use axum::http::{HeaderMap, header};
use herald_core::MercureGrants;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::Value;
use url::Url;

use crate::{
    auth::AuthError,
    verified_tokens::{Verified, VerifiedTokens},
};

/// The default name of the cookie that carries a 0.x token.
pub const DEFAULT_COOKIE: &str = "mercureAuthorization";
/// The cookie that carries a 1.0 token.
pub const ACCESS_TOKEN_COOKIE: &str = "__Secure-mercure_access_token";
/// The query parameter that may carry a 0.x token.
pub const QUERY_PARAMETER: &str = "authorization";

/// What a token is presented for; each role has its own key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Publishing updates (the publisher key).
    Publisher,
    /// Subscribing, and reading the subscriptions API (the subscriber key).
    Subscriber,
}

/// Which version of the protocol a token speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// 0.x (draft-07): the `mercure` claim.
    Draft07,
    /// 1.0 (draft-08): header `typ: at+jwt`, or an `authorization_details`
    /// claim.
    Draft08,
}

impl Verified for MercureToken {
    fn expires_at(&self) -> Option<u64> {
        self.expires_at
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MercureToken {
    /// What it allows.
    pub grants: MercureGrants,
    /// Its `exp`, seconds since the Unix epoch; `None` when it has none
    /// (0.x only).
    pub expires_at: Option<u64>,
    /// The dialect it speaks.
    pub dialect: Dialect,
}

/// A verification key as configured: the key itself, as Mercure's
/// `MERCURE_PUBLISHER_JWT_KEY` takes it.
#[derive(Clone, PartialEq, Eq)]
pub enum KeyMaterial {
    /// An HMAC secret (HS256, HS384, HS512).
    Secret(Vec<u8>),
    /// A PEM public key's text (RS*, PS*, ES256, ES384, EdDSA).
    PublicKeyPem(String),
}

impl KeyMaterial {
    /// The key `text` stands for: a PEM public key when it begins with a PEM
    /// header, else an HMAC secret.
    pub fn from_text(text: &str) -> Self {
        if crate::config::mercure::is_pem(text) {
            Self::PublicKeyPem(text.to_owned())
        } else {
            Self::Secret(text.as_bytes().to_vec())
        }
    }
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Secret(_) => f.write_str("Secret([redacted])"),
            Self::PublicKeyPem(pem) => f.debug_tuple("PublicKeyPem").field(pem).finish(),
        }
    }
}

/// Why a configured key cannot verify tokens. Each message names the flag.
#[derive(Debug, thiserror::Error)]
pub enum MercureKeyError {
    /// An empty HMAC secret.
    #[error("{flag}: the secret is empty; give the HMAC secret itself")]
    EmptySecret {
        /// The key's flag.
        flag: &'static str,
    },
    /// A PEM key with an HMAC algorithm.
    #[error(
        "{flag}: {alg:?} takes a secret, but the key is a PEM public key; set the matching *-jwt-alg to the key's \
         algorithm (RS256, ES256, EdDSA, …)"
    )]
    PemWithSecretAlgorithm {
        /// The key's flag.
        flag: &'static str,
        /// The configured algorithm.
        alg: Algorithm,
    },
    /// A secret with a public-key algorithm.
    #[error("{flag}: {alg:?} takes a PEM public key (-----BEGIN PUBLIC KEY-----…), not a secret")]
    SecretWithPublicKeyAlgorithm {
        /// The key's flag.
        flag: &'static str,
        /// The configured algorithm.
        alg: Algorithm,
    },
    /// A PEM that is not a public key of the algorithm.
    #[error("{flag}: not a PEM {alg:?} public key ({error})")]
    NotPem {
        /// The key's flag.
        flag: &'static str,
        /// The configured algorithm.
        alg: Algorithm,
        /// Why.
        error: jsonwebtoken::errors::Error,
    },
}

/// A key and its pinned algorithm, checked to fit each other.
#[derive(Clone)]
pub struct KeySpec {
    /// The key.
    pub key: KeyMaterial,
    /// The only algorithm accepted.
    pub alg: Algorithm,
    /// The flag it was configured by, for messages.
    flag: &'static str,
    /// The key, parsed.
    decoding: DecodingKey,
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeySpec").field("key", &self.key).field("alg", &self.alg).field("flag", &self.flag).finish()
    }
}

impl KeySpec {
    /// `key` for `alg`, configured by `flag` (`--mercure-publisher-jwt-key`
    /// or `--mercure-subscriber-jwt-key`, named in errors).
    pub fn new(key: KeyMaterial, alg: Algorithm, flag: &'static str) -> Result<Self, MercureKeyError> {
        let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let decoding = match (&key, hmac) {
            (KeyMaterial::Secret(secret), true) if secret.is_empty() => {
                return Err(MercureKeyError::EmptySecret { flag });
            }
            (KeyMaterial::Secret(secret), true) => DecodingKey::from_secret(secret),
            (KeyMaterial::Secret(_), false) => return Err(MercureKeyError::SecretWithPublicKeyAlgorithm { flag, alg }),
            (KeyMaterial::PublicKeyPem(_), true) => return Err(MercureKeyError::PemWithSecretAlgorithm { flag, alg }),
            (KeyMaterial::PublicKeyPem(pem), false) => {
                let pem = pem.as_bytes();
                let parsed = match alg {
                    Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                    Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                    _ => DecodingKey::from_rsa_pem(pem),
                };
                parsed.map_err(|error| MercureKeyError::NotPem { flag, alg, error })?
            }
        };
        Ok(Self { key, alg, flag, decoding })
    }
}

/// Checks Mercure tokens against the publisher and subscriber keys.
#[derive(Debug)]
pub struct MercureVerifier {
    publisher: RoleVerifier,
    subscriber: RoleVerifier,
    /// What 1.0 URL patterns and topics resolve against: the hub's URL.
    base: Url,
}

/// One role's key, rules and cache.
struct RoleVerifier {
    key: KeySpec,
    validation: Validation,
    /// Tokens verified lately.
    verified: VerifiedTokens<MercureToken>,
}

impl fmt::Debug for RoleVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleVerifier").field("key", &self.key).finish_non_exhaustive()
    }
}

impl MercureVerifier {
    /// A verifier with each role's key, `leeway` on `exp` and `nbf`, and
    /// `base` to resolve 1.0 URL patterns and topics against.
    pub fn new(publisher: KeySpec, subscriber: KeySpec, leeway: Duration, base: Url) -> Self {
        let role = |key: KeySpec| {
            let mut validation = Validation::new(key.alg);
            validation.leeway = leeway.as_secs();
            validation.validate_exp = true;
            validation.validate_nbf = true;
            validation.set_required_spec_claims::<&str>(&[]);
            validation.validate_aud = false;
            RoleVerifier { verified: VerifiedTokens::new(validation.leeway), key, validation }
        };
        Self { publisher: role(publisher), subscriber: role(subscriber), base }
    }

    /// Verifies `token` for `role` and returns what it allows.
    pub fn verify(&self, token: &str, role: Role) -> Result<Arc<MercureToken>, AuthError> {
        let verifier = match role {
            Role::Publisher => &self.publisher,
            Role::Subscriber => &self.subscriber,
        };
        verifier.verified.get_or_check(token, || verifier.check(token, role, &self.base))
    }
}

impl RoleVerifier {
    /// Checks `token`'s signature and claims.
    fn check(&self, token: &str, role: Role, base: &Url) -> Result<MercureToken, AuthError> {
        // Read apart first, so that a header `jsonwebtoken` cannot read (an
        // `alg` of `none`, or unknown) is not blamed on the claims.
        jsonwebtoken::decode_header(token)
            .map_err(|_| AuthError::invalid("malformed", "not a well-formed JWT, or its `alg` is unknown or `none`"))?;
        let data = jsonwebtoken::decode::<Value>(token, &self.key.decoding, &self.validation)
            .map_err(|e| self.refusal(e.kind(), role))?;
        let claims = data.claims;
        // RFC 9068 allows the media type's long form too.
        let at_jwt =
            data.header.typ.as_deref().is_some_and(|typ| {
                typ.eq_ignore_ascii_case("at+jwt") || typ.eq_ignore_ascii_case("application/at+jwt")
            });
        let dialect =
            if at_jwt || claims.get("authorization_details").is_some() { Dialect::Draft08 } else { Dialect::Draft07 };
        let expires_at = match claims.get("exp") {
            None | Some(Value::Null) => None,
            Some(exp) => Some(seconds(exp).ok_or_else(|| {
                AuthError::invalid("bad_claims", "the token's `exp` is not a number of seconds since the epoch")
            })?),
        };
        if dialect == Dialect::Draft08 && expires_at.is_none() {
            return Err(AuthError::invalid("missing_claim", "a Mercure 1.0 token (at+jwt) must have an `exp` claim"));
        }
        let grants = match dialect {
            Dialect::Draft07 => MercureGrants::from_claims(&claims),
            Dialect::Draft08 => MercureGrants::from_authorization_details(&claims, base),
        }
        .map_err(|e| AuthError::invalid("bad_claims", e.to_string()))?;
        Ok(MercureToken { grants, expires_at, dialect })
    }

    /// The answer to a token that failed `jsonwebtoken`'s checks.
    fn refusal(&self, kind: &ErrorKind, role: Role) -> AuthError {
        let flag = self.key.flag;
        match kind {
            ErrorKind::ExpiredSignature => AuthError::invalid("expired", "the token has expired; mint a new one"),
            ErrorKind::ImmatureSignature => AuthError::invalid("not_yet_valid", "the token's nbf is in the future"),
            ErrorKind::InvalidSignature => AuthError::invalid(
                "bad_signature",
                match role {
                    Role::Publisher => format!(
                        "the signature does not match the publisher key ({flag}); a subscriber's token cannot publish"
                    ),
                    Role::Subscriber => format!("the signature does not match the subscriber key ({flag})"),
                },
            ),
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => AuthError::invalid(
                "wrong_algorithm",
                format!("the token is not signed with {:?}, the algorithm {flag} is for", self.key.alg),
            ),
            ErrorKind::InvalidClaimFormat(claim) => {
                AuthError::invalid("bad_claims", format!("the token's `{claim}` is not a number"))
            }
            ErrorKind::Json(_) => AuthError::invalid("bad_claims", "the token's claims are not a JSON object"),
            _ => AuthError::invalid("malformed", "not a well-formed JWT"),
        }
    }
}

/// A JSON number of seconds, as `jsonwebtoken` reads it (fractions cut).
fn seconds(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| value.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64))
}

/// Where the Mercure door looks for a token besides the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenPlaces {
    /// The 0.x cookie's name (`mercureAuthorization` by default).
    pub cookie_name: String,
    /// Whether `?authorization=` is read (0.x allows it; 1.0 forbids it).
    pub query: bool,
}

impl Default for TokenPlaces {
    fn default() -> Self {
        Self { cookie_name: DEFAULT_COOKIE.to_owned(), query: true }
    }
}

/// A token as the request carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The token's text.
    pub token: String,
    /// It came in a cookie: a cookie-borne POST needs an allowed origin.
    pub from_cookie: bool,
    /// It came in the query string: keep it out of logs.
    pub from_query: bool,
}

/// Verifies a token found in a request for `role`. A 1.0 token that came
/// in the query string is refused: that dialect keeps tokens out of URLs,
/// which end up in logs (RFC 9700).
pub fn verify_found(
    verifier: &MercureVerifier,
    found: &FoundToken,
    role: Role,
) -> Result<Arc<MercureToken>, AuthError> {
    let token = verifier.verify(&found.token, role)?;
    if found.from_query && token.dialect == Dialect::Draft08 {
        return Err(AuthError::invalid(
            "token_in_query",
            "an at+jwt (Mercure 1.0) token cannot come in the query string: send it in the Authorization header \
             or the __Secure-mercure_access_token cookie",
        ));
    }
    Ok(token)
}

/// The request's token, if it carries one. In order:
/// `Authorization: Bearer <token>` (when present it is the only place
/// looked at, and anything else in it, or two of it, is refused), then
/// `?authorization=` when `places.query`, then the cookie
/// `places.cookie_name`, then the 1.0 cookie [`ACCESS_TOKEN_COOKIE`]. An
/// empty query value or cookie counts as absent: a cleared cookie is a
/// logged-out visitor, not a bad token.
pub fn find_token(
    headers: &HeaderMap,
    query: Option<&str>,
    places: &TokenPlaces,
) -> Result<Option<FoundToken>, AuthError> {
    let mut authorization = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = authorization.next() {
        let malformed = || AuthError::invalid("malformed", "the Authorization header must be one `Bearer <token>`");
        if authorization.next().is_some() {
            return Err(malformed());
        }
        let value = value.to_str().map_err(|_| malformed())?;
        return match value.trim().split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                Ok(Some(FoundToken { token: token.trim().to_owned(), from_cookie: false, from_query: false }))
            }
            _ => Err(malformed()),
        };
    }
    if places.query {
        let found = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .find(|(key, value)| key == QUERY_PARAMETER && !value.is_empty());
        if let Some((_, token)) = found {
            return Ok(Some(FoundToken { token: token.into_owned(), from_cookie: false, from_query: true }));
        }
    }
    let cookie = cookie(headers, &places.cookie_name).or_else(|| cookie(headers, ACCESS_TOKEN_COOKIE));
    Ok(cookie.map(|token| FoundToken { token, from_cookie: true, from_query: false }))
}

/// The first non-empty value of the cookie `name` over all `Cookie`
/// headers, unquoted. Pairs that are not UTF-8 are skipped, not fatal: one
/// odd cookie of another application must not hide ours.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b';'))
        .filter_map(|pair| std::str::from_utf8(pair).ok()?.split_once('='))
        .filter(|(key, _)| key.trim() == name)
        .map(|(_, value)| {
            let value = value.trim();
            value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value)
        })
        .find(|value| !value.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;
    use jsonwebtoken::{EncodingKey, Header};

    use crate::auth::now_secs;
    use serde_json::json;

    use super::*;

    const PUBLISHER_SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
    const SUBSCRIBER_SECRET: &str = "a-different-subscriber-secret-of-32+bytes";
    /// A P-256 key pair made with openssl for these tests only.
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgM3vuAZjlP232LBmL
fpOwYyMdKGQe15WcnLgDUDA5AwShRANCAASi6PcVczg7czooC33KM+knbD57S+FS
zfpbKgThlRFzV/vMmhXvdXJ9JjfMMB49kb1tm8uHE8i6nA7ZDqxBIV00
-----END PRIVATE KEY-----
";
    const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEouj3FXM4O3M6KAt9yjPpJ2w+e0vh
Us36WyoE4ZURc1f7zJoV73VyfSY3zDAePZG9bZvLhxPIupwO2Q6sQSFdNA==
-----END PUBLIC KEY-----
";
    const ED_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAHRUMtanCwobuFe//FuytFNBDva9Ibzmp83OPVU0hCQ8=
-----END PUBLIC KEY-----
";
    const PUBLISHER_FLAG: &str = "--mercure-publisher-jwt-key";
    const SUBSCRIBER_FLAG: &str = "--mercure-subscriber-jwt-key";

    fn base() -> Url {
        Url::parse("https://hub.example.com/.well-known/mercure").unwrap()
    }

    fn secret(text: &str, flag: &'static str) -> KeySpec {
        KeySpec::new(KeyMaterial::from_text(text), Algorithm::HS256, flag).unwrap()
    }

    fn hmac_verifier() -> MercureVerifier {
        MercureVerifier::new(
            secret(PUBLISHER_SECRET, PUBLISHER_FLAG),
            secret(SUBSCRIBER_SECRET, SUBSCRIBER_FLAG),
            Duration::ZERO,
            base(),
        )
    }

    fn hs256(claims: &Value, key: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
    }

    fn at_jwt(claims: &Value, key: &str) -> String {
        let header = Header { typ: Some("at+jwt".into()), ..Header::new(Algorithm::HS256) };
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_secret(key.as_bytes())).unwrap()
    }

    fn code(result: Result<Arc<MercureToken>, AuthError>) -> &'static str {
        result.unwrap_err().code()
    }

    #[test]
    fn a_0x_token_without_exp_is_accepted_and_its_exp_honoured_when_present() {
        let verifier = hmac_verifier();
        let token = hs256(&json!({"mercure": {"publish": ["*"]}}), PUBLISHER_SECRET);
        let verified = verifier.verify(&token, Role::Publisher).unwrap();
        assert_eq!((verified.dialect, verified.expires_at), (Dialect::Draft07, None));
        assert!(verified.grants.may_publish(["https://example.com/books/1"].into_iter()));
        assert!(Arc::ptr_eq(&verified, &verifier.verify(&token, Role::Publisher).unwrap()), "cached");

        let exp = now_secs() + 600;
        let fresh = hs256(&json!({"exp": exp, "mercure": {"subscribe": ["/a"]}}), SUBSCRIBER_SECRET);
        let verified = verifier.verify(&fresh, Role::Subscriber).unwrap();
        assert_eq!(verified.expires_at, Some(exp));
        assert!(verified.grants.publish.is_none());

        let expired = hs256(&json!({"exp": now_secs() - 60, "mercure": {"publish": ["*"]}}), PUBLISHER_SECRET);
        assert_eq!(code(verifier.verify(&expired, Role::Publisher)), "expired");
        let early = hs256(&json!({"nbf": now_secs() + 600, "mercure": {"publish": ["*"]}}), PUBLISHER_SECRET);
        assert_eq!(code(verifier.verify(&early, Role::Publisher)), "not_yet_valid");
        let odd = hs256(&json!({"exp": "tomorrow", "mercure": {}}), PUBLISHER_SECRET);
        assert_eq!(code(verifier.verify(&odd, Role::Publisher)), "bad_claims");
        let bad = hs256(&json!({"mercure": {"publish": "*"}}), PUBLISHER_SECRET);
        assert_eq!(code(verifier.verify(&bad, Role::Publisher)), "bad_claims");
    }

    #[test]
    fn no_iss_or_aud_is_checked() {
        let verifier = hmac_verifier();
        let token = hs256(&json!({"iss": "x", "aud": ["y"], "mercure": {"publish": ["*"]}}), PUBLISHER_SECRET);
        assert!(verifier.verify(&token, Role::Publisher).is_ok());
    }

    #[test]
    fn the_role_picks_the_key() {
        let verifier = hmac_verifier();
        let subscriber = hs256(&json!({"mercure": {"publish": ["*"], "subscribe": ["*"]}}), SUBSCRIBER_SECRET);
        assert!(verifier.verify(&subscriber, Role::Subscriber).is_ok());
        let refused = verifier.verify(&subscriber, Role::Publisher).unwrap_err();
        assert_eq!(refused.code(), "bad_signature");
        assert!(refused.to_string().contains(PUBLISHER_FLAG), "{refused}");
        let publisher = hs256(&json!({"mercure": {"publish": ["*"]}}), PUBLISHER_SECRET);
        assert!(verifier.verify(&publisher, Role::Publisher).is_ok());
        assert_eq!(code(verifier.verify(&publisher, Role::Subscriber)), "bad_signature", "the cache is per role");
    }

    #[test]
    fn a_1_0_token_needs_exp_and_reads_authorization_details() {
        let verifier = hmac_verifier();
        let details = json!([{
            "type": "https://mercure.rocks/authorization-detail",
            "actions": ["subscribe"],
            "topics": [{"match": "/books/:id", "match_type": "urlpattern"}],
        }]);
        let exp = now_secs() + 600;
        let token = at_jwt(&json!({"exp": exp, "authorization_details": details}), SUBSCRIBER_SECRET);
        let verified = verifier.verify(&token, Role::Subscriber).unwrap();
        assert_eq!((verified.dialect, verified.expires_at), (Dialect::Draft08, Some(exp)));
        assert!(verified.grants.may_receive_private(["https://hub.example.com/books/1"].into_iter()));

        let long_typ = Header { typ: Some("application/AT+JWT".into()), ..Header::new(Algorithm::HS256) };
        let claims = json!({"exp": exp, "mercure": {"subscribe": ["*"]}});
        let long = jsonwebtoken::encode(&long_typ, &claims, &EncodingKey::from_secret(SUBSCRIBER_SECRET.as_bytes()));
        assert_eq!(verifier.verify(&long.unwrap(), Role::Subscriber).unwrap().dialect, Dialect::Draft08);

        let no_exp = at_jwt(&json!({"authorization_details": details}), SUBSCRIBER_SECRET);
        assert_eq!(code(verifier.verify(&no_exp, Role::Subscriber)), "missing_claim");
        let untyped_no_exp = hs256(&json!({"authorization_details": details}), SUBSCRIBER_SECRET);
        assert_eq!(code(verifier.verify(&untyped_no_exp, Role::Subscriber)), "missing_claim", "the claim says 1.0");
        let typed_0x_claim = at_jwt(&json!({"exp": exp, "mercure": {"subscribe": ["*"]}}), SUBSCRIBER_SECRET);
        let verified = verifier.verify(&typed_0x_claim, Role::Subscriber).unwrap();
        assert_eq!(verified.dialect, Dialect::Draft08);
        assert_eq!(verified.grants, MercureGrants::default(), "a 1.0 token's `mercure` claim is not read");
        let bad_entry =
            json!([{"type": "https://mercure.rocks/authorization-detail", "actions": ["delete"], "topics": []}]);
        let bad = at_jwt(&json!({"exp": exp, "authorization_details": bad_entry}), SUBSCRIBER_SECRET);
        assert_eq!(code(verifier.verify(&bad, Role::Subscriber)), "bad_claims");
    }

    #[test]
    fn other_algorithms_and_none_are_refused() {
        let verifier = hmac_verifier();
        let claims = json!({"mercure": {"publish": ["*"]}});
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(PUBLISHER_SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(code(verifier.verify(&hs512, Role::Publisher)), "wrong_algorithm");
        let unsigned =
            format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", hs256(&claims, "x").split('.').nth(1).unwrap());
        let refused = verifier.verify(&unsigned, Role::Publisher).unwrap_err();
        assert!(refused.code() == "malformed" && refused.to_string().contains("none"), "{refused}");
        assert_eq!(code(verifier.verify("not.a.jwt", Role::Publisher)), "malformed");
    }

    #[test]
    fn es256_tokens_verify_with_a_pem_public_key() {
        let ec = KeySpec::new(KeyMaterial::from_text(EC_PUBLIC), Algorithm::ES256, PUBLISHER_FLAG).unwrap();
        let verifier = MercureVerifier::new(ec, secret(SUBSCRIBER_SECRET, SUBSCRIBER_FLAG), Duration::ZERO, base());
        let claims = json!({"mercure": {"publish": ["/a"]}});
        let signing = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &signing).unwrap();
        let verified = verifier.verify(&token, Role::Publisher).unwrap();
        assert!(verified.grants.may_publish(["/a"].into_iter()));
        assert_eq!(code(verifier.verify(&hs256(&claims, PUBLISHER_SECRET), Role::Publisher)), "wrong_algorithm");
        assert_eq!(code(verifier.verify(&token, Role::Subscriber)), "wrong_algorithm");
    }

    #[test]
    fn keys_that_do_not_fit_their_algorithm_are_refused_naming_the_flag() {
        let refused = |key: &str, alg| KeySpec::new(KeyMaterial::from_text(key), alg, SUBSCRIBER_FLAG).unwrap_err();
        for error in [
            refused(EC_PUBLIC, Algorithm::HS256),
            refused(PUBLISHER_SECRET, Algorithm::ES256),
            refused(ED_PUBLIC, Algorithm::ES256),
            refused(EC_PUBLIC, Algorithm::RS256),
            refused("", Algorithm::HS256),
        ] {
            assert!(error.to_string().starts_with(SUBSCRIBER_FLAG), "{error}");
        }
        assert!(matches!(refused(EC_PUBLIC, Algorithm::HS384), MercureKeyError::PemWithSecretAlgorithm { .. }));
        assert!(matches!(refused(ED_PUBLIC, Algorithm::ES256), MercureKeyError::NotPem { .. }));
        assert!(KeySpec::new(KeyMaterial::from_text(ED_PUBLIC), Algorithm::EdDSA, SUBSCRIBER_FLAG).is_ok());
        let spec = secret(PUBLISHER_SECRET, PUBLISHER_FLAG);
        assert!(!format!("{spec:?}").contains(PUBLISHER_SECRET), "secrets stay out of Debug");
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn found(headers: &HeaderMap, query: Option<&str>, places: &TokenPlaces) -> Option<(String, bool, bool)> {
        find_token(headers, query, places).unwrap().map(|f| (f.token, f.from_cookie, f.from_query))
    }

    #[test]
    fn tokens_are_found_header_first_then_query_then_cookies() {
        let places = TokenPlaces::default();
        let all = headers(&[
            ("authorization", "Bearer from-header"),
            ("cookie", "mercureAuthorization=from-cookie; __Secure-mercure_access_token=from-1.0-cookie"),
        ]);
        let query = Some("topic=a&authorization=from%20query");
        assert_eq!(found(&all, query, &places), Some(("from-header".into(), false, false)));
        let cookies = headers(&[("cookie", "mercureAuthorization=from-cookie"), ("cookie", ACCESS_TOKEN_COOKIE_PAIR)]);
        assert_eq!(found(&cookies, query, &places), Some(("from query".into(), false, true)));
        let no_query = TokenPlaces { query: false, ..TokenPlaces::default() };
        assert_eq!(found(&cookies, query, &no_query), Some(("from-cookie".into(), true, false)));
        assert_eq!(found(&cookies, Some("authorization="), &places), Some(("from-cookie".into(), true, false)));
        let only_1_0 = headers(&[("cookie", ACCESS_TOKEN_COOKIE_PAIR)]);
        assert_eq!(found(&only_1_0, None, &places), Some(("from-1.0-cookie".into(), true, false)));
        assert_eq!(found(&HeaderMap::new(), Some("topic=a"), &places), None);
    }

    const ACCESS_TOKEN_COOKIE_PAIR: &str = "__Secure-mercure_access_token=from-1.0-cookie";

    #[test]
    fn cookies_are_read_from_every_header_quoted_or_not() {
        let places = TokenPlaces { cookie_name: "hub".into(), query: true };
        let many = headers(&[("cookie", "a=1;b=2"), ("cookie", " x = y ;hub=\"quoted.token\"; c=3")]);
        assert_eq!(found(&many, None, &places), Some(("quoted.token".into(), true, false)));
        let cleared = headers(&[("cookie", "hub=; hub=second"), ("cookie", "mercureAuthorization=not-ours")]);
        assert_eq!(found(&cleared, None, &places), Some(("second".into(), true, false)), "empty means absent");
        let mut odd = HeaderMap::new();
        odd.append("cookie", HeaderValue::from_bytes(b"other=caf\xc3\xa9; hub=tok").unwrap());
        assert_eq!(found(&odd, None, &places), Some(("tok".into(), true, false)), "a non-ASCII neighbour");
        assert_eq!(found(&headers(&[("cookie", "hubby=x; ahub=y")]), None, &places), None);
    }

    #[test]
    fn a_malformed_authorization_header_is_refused_even_with_a_cookie() {
        let places = TokenPlaces::default();
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "", "token-without-scheme"] {
            let request = headers(&[("authorization", value), ("cookie", "mercureAuthorization=ok")]);
            let refused = find_token(&request, Some("authorization=ok"), &places).unwrap_err();
            assert_eq!(refused.code(), "malformed", "{value:?}");
        }
        let twice = headers(&[("authorization", "Bearer a"), ("authorization", "Bearer b")]);
        assert_eq!(find_token(&twice, None, &places).unwrap_err().code(), "malformed");
        let lower = headers(&[("authorization", "bearer  spaced ")]);
        assert_eq!(found(&lower, None, &places), Some(("spaced".into(), false, false)));
    }
}
