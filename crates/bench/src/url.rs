//! Target URLs: `http[s]://HOST[:PORT]/PATH[?QUERY]`, with `{i}` replaced per
//! subscriber or topic. Only loopback hosts are accepted (127.0.0.0/8, ::1,
//! `localhost`): this tool generates load, and load goes nowhere else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::{Context as _, bail};

/// The placeholder replaced by an index.
pub const PLACEHOLDER: &str = "{i}";

/// One resolved request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// `https://`: the connection speaks TLS.
    pub tls: bool,
    /// The host as written, without port or brackets: the TLS server name.
    pub host: String,
    /// The `Host` header value, as written in the URL.
    pub host_header: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// A URL with an optional `{i}` placeholder, validated once.
#[derive(Debug, Clone)]
pub struct UrlTemplate {
    raw: String,
    /// Resolved address and Host header, which `{i}` never changes.
    base: Target,
}

impl UrlTemplate {
    /// Parses `raw` and checks that it targets a loopback address. `{i}` is
    /// allowed in the path and query only.
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let base = parse_url(&raw.replace(PLACEHOLDER, "0")).with_context(|| format!("URL `{raw}`"))?;
        let authority_end = raw.find("://").map_or(0, |i| i + 3);
        let authority = &raw[authority_end..raw[authority_end..].find('/').map_or(raw.len(), |i| i + authority_end)];
        if authority.contains(PLACEHOLDER) {
            bail!("URL `{raw}`: {PLACEHOLDER} may appear in the path only");
        }
        Ok(Self { raw: raw.to_owned(), base })
    }

    /// Whether the template has a `{i}` placeholder.
    pub fn has_placeholder(&self) -> bool {
        self.raw.contains(PLACEHOLDER)
    }

    /// The URL as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The target for index `i`.
    pub fn expand(&self, i: usize) -> Target {
        if !self.has_placeholder() {
            return self.base.clone();
        }
        let url = self.raw.replace(PLACEHOLDER, &i.to_string());
        let path_start = url.find("://").map_or(0, |p| p + 3);
        let path = url[path_start..].find('/').map_or("/".to_owned(), |p| url[path_start + p..].to_owned());
        Target { path, ..self.base.clone() }
    }

    /// The resolved address (the same for every index).
    pub fn addr(&self) -> SocketAddr {
        self.base.addr
    }

    /// Whether it is an `https://` URL.
    pub fn is_tls(&self) -> bool {
        self.base.tls
    }
}

/// Parses one concrete URL.
pub fn parse_url(url: &str) -> anyhow::Result<Target> {
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => bail!("only http:// and https:// URLs are supported"),
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.contains('@') {
        bail!("user info in the URL is not supported");
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = split_host_port(authority, default_port)?;
    let ip = resolve_loopback(host)?;
    Ok(Target { addr: SocketAddr::new(ip, port), tls, host: host.to_owned(), host_header: authority.to_owned(), path })
}

fn split_host_port(authority: &str, default_port: u16) -> anyhow::Result<(&str, u16)> {
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').context("unclosed `[` in the host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().context("bad port")?,
            None if after.is_empty() => default_port,
            None => bail!("unexpected text after the host"),
        };
        return Ok((host, port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Ok((host, port.parse().context("bad port")?)),
        None => Ok((authority, default_port)),
    }
}

/// The address of `host`, which must be loopback.
fn resolve_loopback(host: &str) -> anyhow::Result<IpAddr> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    let ip: IpAddr = host.parse().map_err(|_| {
        anyhow::anyhow!("host `{host}` is not an IP address; use 127.0.0.1, [::1] or localhost (loopback only)")
    })?;
    if !ip.is_loopback() {
        bail!("host `{host}` is not a loopback address: this tool only targets 127.0.0.0/8, ::1 and localhost");
    }
    Ok(ip)
}

/// The local source address of subscriber `index` when subscribers are
/// spread `per_ip` to an address: 127.0.0.1, 127.0.0.2, … (loopback /8 only).
pub fn spread_source(index: usize, per_ip: usize) -> anyhow::Result<Ipv4Addr> {
    let offset = u32::try_from(index / per_ip.max(1)).unwrap_or(u32::MAX);
    let ip = u32::from(Ipv4Addr::new(127, 0, 0, 1)).checked_add(offset).map(Ipv4Addr::from);
    match ip {
        Some(ip) if ip.octets()[0] == 127 => Ok(ip),
        _ => bail!("subscriber {index}: no loopback source address left (per-ip {per_ip})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_loopback_only() {
        let t = parse_url("http://127.0.0.1:8080/topics/a/events?x=1").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.path, "/topics/a/events?x=1");
        assert_eq!(t.host_header, "127.0.0.1:8080");
        assert_eq!(parse_url("http://localhost/").unwrap().addr, "127.0.0.1:80".parse().unwrap());
        assert_eq!(parse_url("http://[::1]:9/p").unwrap().addr, "[::1]:9".parse().unwrap());
        assert_eq!(parse_url("http://127.9.8.7:1?q").unwrap().path, "/?q");
        assert!(!t.tls);
        let tls = parse_url("https://localhost/topics/a/events").unwrap();
        assert_eq!((tls.addr, tls.tls, tls.host.as_str()), ("127.0.0.1:443".parse().unwrap(), true, "localhost"));
        assert_eq!(parse_url("https://[::1]:8443/").unwrap().host, "::1");
        for bad in ["http://10.0.0.1/", "http://example.com/", "https://10.0.0.1/", "http://[::2]/", "http://0.0.0.0/"]
        {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        for bad in ["ftp://127.0.0.1/", "127.0.0.1:80/"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn expands_the_placeholder() {
        let t = UrlTemplate::parse("http://127.0.0.1:1/topics/t{i}/events").unwrap();
        assert_eq!(t.expand(42).path, "/topics/t42/events");
        assert!(UrlTemplate::parse("http://127.0.0.{i}:1/").is_err());
    }

    #[test]
    fn spreads_sources_over_loopback() {
        assert_eq!(spread_source(0, 100).unwrap(), Ipv4Addr::new(127, 0, 0, 1));
        assert_eq!(spread_source(250, 100).unwrap(), Ipv4Addr::new(127, 0, 0, 3));
        assert_eq!(spread_source(300 * 100, 100).unwrap(), Ipv4Addr::new(127, 0, 1, 45));
    }
}
