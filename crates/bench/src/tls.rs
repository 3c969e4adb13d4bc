//! The TLS client of `https://` targets: trusts one authority (the test CA
//! given with `--ca`, never the system's roots: targets are loopback test
//! servers) and offers one application protocol per connection by ALPN.

use std::{path::Path, sync::Arc};

use anyhow::{Context as _, bail};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};

/// The protocol a TLS connection is opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alpn {
    /// `http/1.1`.
    Http1,
    /// `h2`.
    H2,
}

impl Alpn {
    fn id(self) -> &'static [u8] {
        match self {
            Self::Http1 => b"http/1.1",
            Self::H2 => b"h2",
        }
    }
}

/// Opens TLS connections to the servers the run targets.
#[derive(Clone)]
pub struct TlsClient {
    /// Offers `http/1.1` only.
    http1: TlsConnector,
    /// Offers `h2` only.
    h2: TlsConnector,
    /// The name to verify the certificate against, when not the URL's host
    /// (`https://127.0.0.1/…` to a certificate for `localhost`).
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClient").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsClient {
    /// A client that trusts the authority in the PEM file `ca`, and checks
    /// certificates against `server_name` if given, else the URL's host.
    pub fn new(ca: &Path, server_name: Option<&str>) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        let mut found = 0;
        for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("--ca {}", ca.display()))? {
            roots.add(cert.with_context(|| format!("--ca {}", ca.display()))?)?;
            found += 1;
        }
        if found == 0 {
            bail!("--ca {}: no certificate in the file", ca.display());
        }
        let roots = Arc::new(roots);
        let connector = |alpn: Alpn| -> anyhow::Result<TlsConnector> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(Arc::clone(&roots))
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.id().to_vec()];
            Ok(TlsConnector::from(Arc::new(config)))
        };
        let server_name = server_name
            .map(|name| ServerName::try_from(name.to_owned()).with_context(|| format!("--server-name `{name}`")))
            .transpose()?;
        Ok(Self { http1: connector(Alpn::Http1)?, h2: connector(Alpn::H2)?, server_name })
    }

    /// The TLS handshake on `tcp` to `host`, for `alpn`. A server that
    /// answers with another protocol (or none) is an error: the run would
    /// otherwise measure a transport it did not ask for.
    pub async fn connect(&self, tcp: TcpStream, host: &str, alpn: Alpn) -> anyhow::Result<TlsStream<TcpStream>> {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host.to_owned()).with_context(|| format!("server name `{host}`"))?,
        };
        let connector = match alpn {
            Alpn::Http1 => &self.http1,
            Alpn::H2 => &self.h2,
        };
        let stream = connector.connect(name, tcp).await?;
        check_alpn(alpn, stream.get_ref().1.alpn_protocol())?;
        Ok(stream)
    }
}

/// Whether the server agreed to `asked`.
fn check_alpn(asked: Alpn, agreed: Option<&[u8]>) -> anyhow::Result<()> {
    if agreed == Some(asked.id()) {
        return Ok(());
    }
    let agreed = agreed.map_or_else(|| "no protocol".to_owned(), |p| format!("`{}`", String::from_utf8_lossy(p)));
    bail!("asked the server for `{}` by ALPN; it chose {agreed}", String::from_utf8_lossy(asked.id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agreed_protocol_must_be_the_one_asked_for() {
        assert!(check_alpn(Alpn::H2, Some(b"h2")).is_ok());
        assert!(check_alpn(Alpn::Http1, Some(b"http/1.1")).is_ok());
        let error = check_alpn(Alpn::H2, None).unwrap_err().to_string();
        assert!(error.contains("no protocol"), "{error}");
        assert!(check_alpn(Alpn::H2, Some(b"http/1.1")).is_err());
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let error = TlsClient::new(&path, None).unwrap_err().to_string();
        assert!(error.contains("no certificate"), "{error}");
    }
}
