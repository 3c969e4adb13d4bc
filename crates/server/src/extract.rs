//! Request extractors: who is calling ([`Caller`]) and from where ([`ClientIp`]).

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, FromRequestParts},
    http::{HeaderMap, header, request::Parts},
};
use herald_core::Grants;

use crate::{
    auth::AuthError,
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// The name of the cookie that may carry a token.
pub const TOKEN_COOKIE: &str = "herald_token";

/// The caller's verified token, if it sent one. A token that was sent but
/// is invalid rejects the request (401), even where none is needed.
#[derive(Debug, Clone)]
pub struct Caller(pub Option<Arc<Grants>>);

impl Caller {
    /// The grants, or 401 `missing_token` if no token was sent.
    pub fn require(&self) -> Result<&Arc<Grants>, ApiError> {
        self.0.as_ref().ok_or_else(|| AuthError::Missing.into())
    }

    /// The answer to a request this caller may not make: 401
    /// `missing_token` when it sent no token (one might allow it), 403
    /// `forbidden` with `message` when its token does not.
    pub fn refuse(&self, message: impl Into<String>) -> ApiError {
        match self.0 {
            None => AuthError::Missing.into(),
            Some(_) => ApiError::new(ErrorCode::Forbidden, message),
        }
    }

    /// The token's grants on top of the public subscribe patterns.
    pub fn with_public(&self, state: &AppState) -> Grants {
        let public = Grants::anonymous(&state.config.public_subscribe);
        match &self.0 {
            Some(grants) => public.merge(Grants::clone(grants)),
            None => public,
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = find_token(parts)? else { return Ok(Self(None)) };
        let grants = state.verifier.verify(&token).inspect_err(|e| {
            metrics::counter!("herald_auth_failures_total", "reason" => e.code()).increment(1);
        })?;
        Ok(Self(Some(grants)))
    }
}

/// The token by herald-core's one rule, with the API's cookie.
fn find_token(parts: &Parts) -> Result<Option<String>, AuthError> {
    let authorization = parts.headers.get(header::AUTHORIZATION).map(|v| v.to_str().unwrap_or_default());
    let cookies = parts.headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok());
    let found = herald_core::find_token(authorization, parts.uri.query(), cookies, TOKEN_COOKIE)
        .map_err(|malformed| AuthError::invalid("malformed", malformed.to_string()))?;
    Ok(found.map(|found| found.token))
}

/// Every value of query parameter `name`, percent-decoded.
pub fn query_values<'a>(query: Option<&'a str>, name: &'a str) -> impl Iterator<Item = String> + 'a {
    form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .filter(move |(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the nearest untrusted address in `X-Forwarded-For`.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

impl FromRequestParts<AppState> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let peer =
            parts.extensions.get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([127, 0, 0, 1]), |info| info.0.ip());
        Ok(Self(client_ip(peer, &parts.headers, &state.config.trusted_proxies)))
    }
}

fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let hops: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse().ok())
        .collect();
    hops.into_iter().rev().find(|hop| !trusted.contains(hop)).unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "203.0.113.9, 198.51.100.7, 10.0.0.1".parse().unwrap());
        assert_eq!(client_ip(proxy, &headers, &[proxy]), "198.51.100.7".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "192.0.2.5".parse().unwrap();
        assert_eq!(client_ip(stranger, &headers, &[proxy]), stranger);
    }
}
