//! HTTPS: the TLS configuration every HTTPS listener shares, and where its
//! certificate comes from: files (`--tls-cert`, [`files`]) or an ACME CA
//! (`--acme-domain`, [`acme`]).
//! A new certificate only changes what new connections are offered:
//! connections already open keep the certificate they were made with.

mod acme;
mod acme_files;
mod files;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

pub use acme::{AcmeSettings, LETS_ENCRYPT};
pub use files::TlsFiles;
use parking_lot::RwLock;
use rustls::{
    ServerConfig,
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;

/// The ALPN protocol of TLS-ALPN-01 validations (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// Where the certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// PEM files, reloaded when they change.
    Files(TlsFiles),
    /// An ACME CA, which Herald asks for a certificate and its renewals.
    Acme(AcmeSettings),
}

/// What new connections are offered: the certificate (none before ACME
/// issued the first), and, while an ACME CA validates, the challenge
/// certificates its validator asks for by name.
#[derive(Debug, Default)]
struct Certificates {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// By lowercase name.
    challenges: RwLock<HashMap<String, Arc<CertifiedKey>>>,
}

impl Certificates {
    fn current(&self) -> Option<Arc<CertifiedKey>> {
        self.current.read().clone()
    }

    fn install(&self, certified: Arc<CertifiedKey>) {
        if let Some(validity) = Validity::of(&certified) {
            let expiry = validity.not_after.duration_since(UNIX_EPOCH).unwrap_or_default();
            metrics::gauge!("herald_tls_certificate_expiry_timestamp_seconds").set(expiry.as_secs_f64());
        }
        *self.current.write() = Some(certified);
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A validator offers `acme-tls/1` alone (RFC 8737); a client that
        // also offers HTTP gets the real certificate.
        let validating = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.next() == Some(ACME_TLS_ALPN) && protocols.next().is_none());
        if validating {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.read().get(&name).cloned();
        }
        self.current()
    }
}

/// The TLS side of the HTTPS listeners: their configuration (ALPN `h2`,
/// then `http/1.1`; and `acme-tls/1` with ACME) and the certificates it
/// offers.
#[derive(Debug, Clone)]
pub struct Tls {
    /// For the acceptor.
    pub config: Arc<ServerConfig>,
    certificates: Arc<Certificates>,
    source: TlsSource,
    data_dir: PathBuf,
}

impl Tls {
    /// Loads the certificate files (see [`TlsFiles::load`]), or the
    /// certificate an ACME CA issued earlier if the data dir keeps one.
    pub fn new(source: TlsSource, data_dir: &Path) -> Result<Self, String> {
        let certificates = Arc::new(Certificates::default());
        let mut alpn = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        match &source {
            TlsSource::Files(files) => {
                let certified = files.load()?;
                if let Some(warning) = files.validity_warning(&certified) {
                    tracing::warn!("{warning}");
                }
                certificates.install(certified);
            }
            TlsSource::Acme(settings) => {
                alpn.push(ACME_TLS_ALPN.to_vec());
                if let Some(kept) = acme::kept_certificate(settings, data_dir) {
                    certificates.install(kept);
                }
            }
        }
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&certificates) as Arc<dyn ResolvesServerCert>);
        config.alpn_protocols = alpn;
        Ok(Self { config: Arc::new(config), certificates, source, data_dir: data_dir.to_owned() })
    }

    /// Keeps the certificate current until `stop`: reloads the files when
    /// they change, or obtains and renews the certificate from the ACME CA.
    pub async fn keep_current(self, stop: CancellationToken) {
        match self.source {
            TlsSource::Files(files) => files.watch(&self.certificates, stop).await,
            TlsSource::Acme(settings) => acme::run(settings, &self.data_dir, &self.certificates, stop).await,
        }
    }
}

/// When a certificate's validity begins and ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    fn of(certified: &CertifiedKey) -> Option<Self> {
        let (_, parsed) = x509_parser::parse_x509_certificate(certified.cert.first()?.as_ref()).ok()?;
        let at = |time: x509_parser::time::ASN1Time| {
            let seconds = u64::try_from(time.timestamp()).unwrap_or(0);
            UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
        };
        let validity = parsed.validity();
        Some(Self { not_before: at(validity.not_before)?, not_after: at(validity.not_after)? })
    }

    /// From its start to its end (zero if they are the wrong way round).
    fn life(&self) -> Duration {
        self.not_after.duration_since(self.not_before).unwrap_or_default()
    }
}

/// Why PEM text does not make a certificate chain and its key.
#[derive(Debug)]
enum PemProblem {
    NotPem(String),
    NoCertificate,
    NoKey(String),
    /// The key is not the certificate's.
    Mismatch,
    UnusableKey(String),
    UnusableCertificate(String),
}

impl std::fmt::Display for PemProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotPem(e) => write!(f, "not valid PEM ({e})"),
            Self::NoCertificate => f.write_str("no certificate in it"),
            Self::NoKey(e) => write!(f, "no private key in it ({e})"),
            Self::Mismatch => f.write_str("the key does not go with the certificate"),
            Self::UnusableKey(e) => write!(f, "the key cannot be used ({e})"),
            Self::UnusableCertificate(e) => write!(f, "the certificate cannot be used ({e})"),
        }
    }
}

/// The certificates in PEM text: the certificate, then its chain.
fn pem_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, PemProblem> {
    let chain: Vec<_> =
        CertificateDer::pem_slice_iter(pem).collect::<Result<_, _>>().map_err(|e| PemProblem::NotPem(e.to_string()))?;
    if chain.is_empty() {
        return Err(PemProblem::NoCertificate);
    }
    Ok(chain)
}

/// `chain` with the private key in PEM text `key_pem`, checked to go with it.
fn certified_key(chain: Vec<CertificateDer<'static>>, key_pem: &[u8]) -> Result<Arc<CertifiedKey>, PemProblem> {
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| PemProblem::NoKey(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &ring::default_provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => PemProblem::Mismatch,
        rustls::Error::General(_) => PemProblem::UnusableKey(e.to_string()),
        _ => PemProblem::UnusableCertificate(e.to_string()),
    })?;
    Ok(Arc::new(certified))
}

/// A time as RFC 3339 in UTC, to the second, for logs.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}
