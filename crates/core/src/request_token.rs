//! Where a request carries its token: the one rule that the public API and
//! the dashboard both follow.
//!
//! In order: `Authorization: Bearer <token>`, else `?access_token=` (an
//! `EventSource` cannot set headers), else the named cookie. Each front door
//! names its own cookie. An `Authorization` header that is not `Bearer` is
//! refused, not skipped: a client that sends one meant it.
//!
//! The inputs are the request's text, not HTTP types, so this crate stays
//! free of HTTP.

/// Where a request carried its token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    Header,
    /// `?access_token=`.
    Query,
    /// The front door's cookie.
    Cookie,
}

/// A token as the request carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundToken {
    /// The token's text.
    pub token: String,
    /// Where it was.
    pub source: TokenSource,
}

/// The `Authorization` header is there but is not `Bearer <token>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the Authorization header must be `Bearer <token>`")]
pub struct MalformedAuthorization;

/// The request's token, if it carries one.
///
/// `authorization` is the `Authorization` header's value (a value that is
/// not visible ASCII passes as empty, and is refused); `query` the request's
/// query string; `cookie_headers` the values of its `Cookie` headers.
pub fn find_token<'a>(
    authorization: Option<&str>,
    query: Option<&str>,
    cookie_headers: impl IntoIterator<Item = &'a str>,
    cookie: &str,
) -> Result<Option<FoundToken>, MalformedAuthorization> {
    let found = |token: String, source| Ok(Some(FoundToken { token, source }));
    if let Some(value) = authorization {
        return match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() => {
                found(token.trim().to_owned(), TokenSource::Header)
            }
            _ => Err(MalformedAuthorization),
        };
    }
    let from_query =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes()).find(|(key, _)| key == "access_token");
    if let Some((_, token)) = from_query {
        return found(token.into_owned(), TokenSource::Query);
    }
    let from_cookie = cookie_headers
        .into_iter()
        .flat_map(|header| header.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == cookie);
    match from_cookie {
        Some((_, value)) => found(value.trim_matches('"').to_owned(), TokenSource::Cookie),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(found: Result<Option<FoundToken>, MalformedAuthorization>) -> Option<(String, TokenSource)> {
        found.unwrap().map(|f| (f.token, f.source))
    }

    #[test]
    fn the_header_wins_then_the_query_then_the_cookie() {
        let cookies = ["a=1; herald_token=from-cookie"];
        let query = Some("topic=t&access_token=from%20query");
        assert_eq!(
            token(find_token(Some("bearer  from-header "), query, cookies, "herald_token")),
            Some(("from-header".into(), TokenSource::Header))
        );
        assert_eq!(
            token(find_token(None, query, cookies, "herald_token")),
            Some(("from query".into(), TokenSource::Query))
        );
        assert_eq!(
            token(find_token(None, Some("topic=t"), cookies, "herald_token")),
            Some(("from-cookie".into(), TokenSource::Cookie))
        );
        assert_eq!(token(find_token(None, None, [], "herald_token")), None);
    }

    #[test]
    fn an_authorization_header_that_is_not_bearer_is_refused() {
        let cookies = ["herald_token=abc"];
        for value in ["Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", ""] {
            assert_eq!(find_token(Some(value), None, cookies, "herald_token"), Err(MalformedAuthorization), "{value}");
        }
    }

    #[test]
    fn cookies_are_found_among_others() {
        let cookies = ["a=1; herald_token=abc.def; b=2"];
        assert_eq!(
            token(find_token(None, None, cookies, "herald_token")),
            Some(("abc.def".into(), TokenSource::Cookie))
        );
        assert_eq!(token(find_token(None, None, cookies, "herald_admin")), None);
        let quoted = ["herald_admin=\"abc\""];
        assert_eq!(token(find_token(None, None, quoted, "herald_admin")), Some(("abc".into(), TokenSource::Cookie)));
    }
}
