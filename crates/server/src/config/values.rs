//! Readers of settings' text: durations, addresses, algorithms, booleans and
//! counts. Each says in its error what it expected.

use std::{net::SocketAddr, time::Duration};

use jsonwebtoken::Algorithm;

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

/// `true`/`false`, and the usual spellings of either.
pub(super) fn parse_bool(text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("`{text}` is not true or false")),
    }
}

/// A bound: a whole number of at least 1 (`_` may group digits).
pub(super) fn parse_count(text: &str) -> Result<usize, String> {
    match text.replace('_', "").parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// RS256 for RSA keys, ES256 for EC keys, EdDSA for Ed25519 keys.
pub(crate) fn guess_public_key_algorithm(pem: &[u8]) -> Algorithm {
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
    fn listen_addresses_may_name_a_host() {
        let local = parse_listen("localhost:8080").unwrap();
        assert!(local.ip().is_loopback() && local.port() == 8080, "{local}");
        assert_eq!(parse_listen("[::1]:9").unwrap().port(), 9);
        let unknown = parse_listen("no-such-host.invalid:8080").unwrap_err();
        assert!(unknown.contains("cannot resolve `no-such-host.invalid`"), "{unknown}");
        assert!(parse_listen("localhost").unwrap_err().contains("not an address like"));
        assert!(parse_listen("localhost:http").unwrap_err().contains("not an address like"));
    }
}
