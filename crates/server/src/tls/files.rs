//! HTTPS from certificate files (`--tls-cert`, `--tls-key`): loaded and
//! checked at start, with errors that name the flag, the file and what is
//! wrong (and a warning for one that expired); reloaded without a restart
//! when the files change or on SIGHUP.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use rustls::sign::CertifiedKey;
use tokio_util::sync::CancellationToken;

use super::{Certificates, PemProblem, Validity, certified_key, pem_chain, rfc3339};

/// How often the files are checked for a change.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// Where the certificate chain and its key are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM: the certificate, then the chain.
    pub cert: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl TlsFiles {
    /// The certificate chain and key, checked: every problem is said with
    /// the flag and file that hold it.
    pub fn load(&self) -> Result<Arc<CertifiedKey>, String> {
        let (cert, key) = (self.cert.display(), self.key.display());
        let chain = pem_chain(&read(&self.cert, "--tls-cert")?).map_err(|problem| match problem {
            PemProblem::NoCertificate => {
                format!("--tls-cert {cert}: holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)")
            }
            problem => format!("--tls-cert {cert}: {problem}"),
        })?;
        certified_key(chain, &read(&self.key, "--tls-key")?).map_err(|problem| match problem {
            PemProblem::NoKey(e) => format!(
                "--tls-key {key}: holds no PEM private key (a `-----BEGIN PRIVATE KEY-----` block, or RSA or EC) ({e})"
            ),
            PemProblem::Mismatch => format!("--tls-key {key} does not go with the certificate in --tls-cert {cert}"),
            PemProblem::UnusableKey(_) => format!("--tls-key {key}: {problem}"),
            problem => format!("--tls-cert {cert}: {problem}"),
        })
    }

    /// What is wrong with a certificate that loads but that clients will
    /// refuse now: it expired, or is not valid yet. A warning, not an error:
    /// its renewal may be on the way.
    pub fn validity_warning(&self, certified: &CertifiedKey) -> Option<String> {
        let validity = Validity::of(certified)?;
        let now = SystemTime::now();
        let cert = self.cert.display();
        if validity.not_after < now {
            let expired = rfc3339(validity.not_after);
            Some(format!("--tls-cert {cert}: the certificate expired on {expired}; clients refuse it"))
        } else if now < validity.not_before {
            Some(format!("--tls-cert {cert}: the certificate is not valid before {}", rfc3339(validity.not_before)))
        } else {
            None
        }
    }

    /// When either file last changed, if both can be read.
    fn modified(&self) -> Option<(SystemTime, SystemTime)> {
        let at = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
        Some((at(&self.cert)?, at(&self.key)?))
    }
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{flag} {}: no such file", path.display()),
        _ => format!("{flag} {}: cannot read it ({e})", path.display()),
    })
}

impl TlsFiles {
    /// Loads the files again and offers them to new connections; on
    /// failure keeps the certificate in use.
    fn reload(&self, certificates: &Certificates) -> Result<(), String> {
        let fresh = self.load()?;
        if let Some(warning) = self.validity_warning(&fresh) {
            tracing::warn!("{warning}");
        }
        certificates.install(fresh);
        Ok(())
    }

    /// Reloads whenever the files change (checked every
    /// [`WATCH_INTERVAL`]) or the process gets SIGHUP, until `stop`.
    pub(super) async fn watch(self, certificates: &Certificates, stop: CancellationToken) {
        let mut seen = self.modified();
        let mut hangups = hangups();
        let mut tick = tokio::time::interval(WATCH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let asked = tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => false,
                Some(()) = next_hangup(&mut hangups) => true,
            };
            let now = self.modified();
            if !asked && now == seen {
                continue;
            }
            seen = now;
            match self.reload(certificates) {
                Ok(()) => tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded"),
                // A renewal may write one file before the other: the next
                // change of either is tried again.
                Err(error) => tracing::error!("TLS certificate not reloaded, the one in use stays: {error}"),
            }
        }
    }
}

#[cfg(unix)]
fn hangups() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(unix)]
async fn next_hangup(hangups: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(not(unix))]
fn hangups() -> Option<()> {
    None
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Option<()>) -> Option<()> {
    std::future::pending().await
}
