//! Certificates from an ACME CA (`--acme-domain`), obtained and renewed by
//! Herald itself:
//! - At start, a certificate the data dir keeps for the same names is
//!   served at once (`acme_files`).
//! - Without one, or once two thirds of its life have passed, Herald orders
//!   a new one. It proves each name by TLS-ALPN-01 (RFC 8737): the CA's
//!   validator connects to port 443 of the name offering only ALPN
//!   `acme-tls/1`, and the resolver answers with a self-signed challenge
//!   certificate that carries the digest of the key authorization. Then
//!   Herald sends a request for a fresh key and installs what the CA signs.
//! - A failed attempt is logged with the CA's words and tried again later,
//!   sooner at first; the certificate in use stays.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use instant_acme::{
    Account, AccountBuilder, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, Order, OrderStatus,
    RetryPolicy,
};
use rustls::{
    crypto::ring,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    sign::CertifiedKey,
};
use tokio_util::sync::CancellationToken;
use x509_parser::extensions::GeneralName;

use super::{Certificates, Validity, acme_files::AcmeFiles, pem_chain, rfc3339};

/// Let's Encrypt's production directory: the default CA.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The longest wait between two looks at the certificate: a clock that
/// jumps, or a renewal window that moved, is noticed within it.
const RECHECK: Duration = Duration::from_secs(12 * 60 * 60);
/// The wait after a first failure; it doubles with each failure after it,
/// up to [`RETRY_MAX`]. CAs limit failed validations (Let's Encrypt: five
/// per name and hour), so retries must not come faster.
const RETRY_FIRST: Duration = Duration::from_secs(2 * 60);
const RETRY_MAX: Duration = Duration::from_secs(6 * 60 * 60);
/// The shortest wait before a renewal: a CA that issues certificates for
/// seconds must not make Herald ask in a loop.
const RENEW_MIN: Duration = Duration::from_secs(5);
/// How the order is polled while the CA validates the names, then issues:
/// from 1 s, half as long again each time, for up to 2 minutes.
const POLLING: RetryPolicy =
    RetryPolicy::new().initial_delay(Duration::from_secs(1)).backoff(1.5).timeout(Duration::from_secs(120));
/// The longest one attempt may take, whatever the CA does (the ACME client
/// has no timeouts of its own): then it counts as failed.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// A renewal comes no sooner than this share of the life of the
/// certificate just issued (and [`RENEW_MIN`]): a clock far ahead must not
/// make Herald order again and again.
const RENEW_FLOOR_SHARE: u32 = 10;

/// What `--acme-*` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeSettings {
    /// The names the certificate is for: lowercase, each once.
    pub domains: Vec<String>,
    /// The contact the CA may write to.
    pub email: Option<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// A root to trust for the directory's HTTPS instead of the system's.
    pub directory_ca: Option<PathBuf>,
}

impl AcmeSettings {
    /// Checks that `path` holds a certificate to trust for the directory.
    pub fn directory_root(path: &Path) -> Result<(), String> {
        CertificateDer::from_pem_file(path)
            .map(drop)
            .map_err(|e| format!("--acme-directory-ca {}: no PEM certificate in it ({e})", path.display()))
    }
}

/// The certificate the data dir keeps for this directory, if any: served
/// at start even if it is for other names, until their own is issued.
pub(super) fn kept_certificate(settings: &AcmeSettings, data_dir: &Path) -> Option<Arc<CertifiedKey>> {
    let files = AcmeFiles::new(data_dir, &settings.directory);
    let kept = files.certificate().and_then(|pem| pem.map(|pem| certified_key(&pem)).transpose());
    match kept {
        Ok(Some(certified)) => {
            let until = Validity::of(&certified).map_or_else(String::new, |v| rfc3339(v.not_after));
            let file = files.certificate_path();
            if covers(&certified, &settings.domains) {
                tracing::info!(
                    file = %file.display(),
                    "ACME certificate for {} kept from an earlier run, valid until {until}",
                    settings.domains.join(", "),
                );
            } else {
                // Served until the one for the new names comes: better than none.
                tracing::info!(
                    file = %file.display(),
                    "ACME certificate kept from an earlier run is for {}, served until one for {} is issued",
                    names(&certified).join(", "),
                    settings.domains.join(", "),
                );
            }
            Some(certified)
        }
        Ok(None) => None,
        Err(problem) => {
            tracing::warn!("the kept ACME certificate is not used, a new one is ordered: {problem}");
            None
        }
    }
}

/// Obtains a certificate when there is none for the names, and renews it,
/// until `stop`.
pub(super) async fn run(settings: AcmeSettings, data_dir: &Path, certificates: &Certificates, stop: CancellationToken) {
    let files = AcmeFiles::new(data_dir, &settings.directory);
    let names = settings.domains.join(", ");
    let mut failures: u32 = 0;
    // The shortest wait before the next order, after one succeeded.
    let mut floor = Duration::ZERO;
    loop {
        let (wait, only_look) = match failures {
            0 => {
                let due = certificates.current().filter(|c| covers(c, &settings.domains)).map(|c| until_renewal(&c));
                let due = due.unwrap_or(Duration::ZERO).max(floor);
                (due.min(RECHECK), due > RECHECK)
            }
            failures => (retry_delay(failures), false),
        };
        if !wait.is_zero() {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
        if only_look {
            continue;
        }
        tracing::info!(directory = %settings.directory, "ordering a certificate for {names} by ACME");
        floor = Duration::ZERO;
        let attempt = tokio::select! {
            () = stop.cancelled() => return,
            attempt = tokio::time::timeout(ATTEMPT_TIMEOUT, obtain(&settings, &files, certificates)) => attempt
                .unwrap_or_else(|_| Err(format!("no answer within {}", humantime::format_duration(ATTEMPT_TIMEOUT)))),
        };
        match attempt {
            Ok(Issued { certified, validity, pem }) => {
                if let Err(problem) = files.save_certificate(&pem) {
                    tracing::error!("the new ACME certificate is served but not kept for the next start: {problem}");
                }
                let until = rfc3339(validity.not_after);
                tracing::info!(directory = %settings.directory, "ACME certificate for {names} installed, valid until {until}");
                floor = (validity.life() / RENEW_FLOOR_SHARE).max(RENEW_MIN);
                certificates.install(certified);
                failures = 0;
            }
            Err(problem) => {
                failures = failures.saturating_add(1);
                let again = humantime::format_duration(retry_delay(failures));
                tracing::error!(
                    directory = %settings.directory,
                    "no ACME certificate for {names}: {problem}; trying again in {again}"
                );
            }
        }
    }
}

/// The wait after `failures` failures in a row.
fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    RETRY_FIRST.saturating_mul(1 << doublings).min(RETRY_MAX)
}

/// How long until two thirds of the certificate's life have passed.
fn until_renewal(certified: &CertifiedKey) -> Duration {
    let Some(validity) = Validity::of(certified) else { return RENEW_MIN };
    let life = validity.life();
    let renew_at = validity.not_before.checked_add(life - life / 3).unwrap_or(validity.not_after);
    renew_at.duration_since(SystemTime::now()).unwrap_or_default().max(RENEW_MIN)
}

/// Whether the certificate is for exactly these names.
fn covers(certified: &CertifiedKey, domains: &[String]) -> bool {
    let mut have = names(certified);
    have.sort();
    have.dedup();
    let mut want = domains.to_vec();
    want.sort();
    have == want
}

/// The DNS names a certificate is for, lowercase.
fn names(certified: &CertifiedKey) -> Vec<String> {
    let Some(leaf) = certified.cert.first() else { return Vec::new() };
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return Vec::new() };
    let Ok(Some(alternatives)) = parsed.subject_alternative_name() else { return Vec::new() };
    let dns = |name: &GeneralName<'_>| match name {
        GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
        _ => None,
    };
    alternatives.value.general_names.iter().filter_map(dns).collect()
}

/// A chain and its key from one PEM text.
fn certified_key(pem: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let chain = pem_chain(pem).map_err(|problem| problem.to_string())?;
    super::certified_key(chain, pem).map_err(|problem| problem.to_string())
}

/// A certificate the CA issued.
struct Issued {
    certified: Arc<CertifiedKey>,
    validity: Validity,
    /// The chain, then the key.
    pem: String,
}

/// Orders a certificate for the names and proves them.
async fn obtain(settings: &AcmeSettings, files: &AcmeFiles, certificates: &Certificates) -> Result<Issued, String> {
    let account = account(settings, files).await?;
    let identifiers: Vec<Identifier> = settings.domains.iter().cloned().map(Identifier::Dns).collect();
    let mut order =
        account.new_order(&NewOrder::new(&identifiers)).await.map_err(|e| format!("the CA refused the order: {e}"))?;
    let mut challenges = Challenges { certificates, names: Vec::new() };
    let mut authorizations = order.authorizations();
    while let Some(authorization) = authorizations.next().await {
        let mut authorization = authorization.map_err(|e| format!("reading an authorization: {e}"))?;
        match authorization.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("the authorization of {} is {other:?}", authorization.identifier())),
        }
        let name = authorization.identifier().to_string();
        let mut challenge = authorization
            .challenge(ChallengeType::TlsAlpn01)
            .ok_or_else(|| format!("the CA offers no TLS-ALPN-01 challenge for {name}, the only one Herald answers"))?;
        let digest = challenge.key_authorization().digest();
        challenges.offer(&name, challenge_certificate(&name, digest.as_ref())?);
        challenge.set_ready().await.map_err(|e| format!("the CA did not take the challenge for {name}: {e}"))?;
    }
    let validated = order.poll_ready(&POLLING).await;
    drop(challenges);
    match validated.map_err(|e| format!("validating: {e}"))? {
        OrderStatus::Ready => {}
        status => return Err(why_not_ready(&mut order, status).await),
    }
    let key_pem = order.finalize().await.map_err(|e| format!("the CA refused the certificate request: {e}"))?;
    let chain_pem = order.poll_certificate(&POLLING).await.map_err(|e| format!("waiting for the certificate: {e}"))?;
    let pem = format!("{}\n{key_pem}", chain_pem.trim_end());
    let certified = certified_key(pem.as_bytes()).map_err(|e| format!("the CA's certificate: {e}"))?;
    let Some(validity) = Validity::of(&certified) else {
        return Err("the CA's certificate has no validity Herald can read".into());
    };
    if !covers(&certified, &settings.domains) {
        let names = names(&certified).join(", ");
        return Err(format!("the CA's certificate is for {names}, not exactly the names asked for"));
    }
    Ok(Issued { certified, validity, pem })
}

/// The account kept for the directory, or a new one (kept at once).
async fn account(settings: &AcmeSettings, files: &AcmeFiles) -> Result<Account, String> {
    let builder = || -> Result<AccountBuilder, String> {
        match &settings.directory_ca {
            Some(root) => Account::builder_with_root(root),
            None => Account::builder(),
        }
        .map_err(|e| format!("no HTTPS client for the ACME directory: {e}"))
    };
    if let Some(credentials) = files.account()? {
        return builder()?
            .from_credentials(credentials)
            .await
            .map_err(|e| format!("the ACME directory {}: {e}", settings.directory));
    }
    let contact = settings.email.as_ref().map(|email| format!("mailto:{email}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
    let (account, credentials) = builder()?
        .create(&new, settings.directory.clone(), None)
        .await
        .map_err(|e| format!("the ACME directory {} did not open an account: {e}", settings.directory))?;
    files.save_account(&credentials)?;
    tracing::info!(directory = %settings.directory, id = account.id(), "ACME account opened");
    Ok(account)
}

/// What the CA said of the names it could not validate.
async fn why_not_ready(order: &mut Order, status: OrderStatus) -> String {
    let mut problems = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(mut authorization)) = authorizations.next().await {
        let Ok(state) = authorization.refresh().await else { continue };
        let name = state.identifier().to_string();
        for problem in state.challenges.iter().filter_map(|c| c.error.as_ref()) {
            problems.push(format!("{name}: {problem}"));
        }
    }
    match problems.is_empty() {
        true => format!("the order is {status:?}"),
        false => format!("the order is {status:?}: {}", problems.join("; ")),
    }
}

/// A self-signed certificate for `name` that carries the digest of the key
/// authorization in its `acmeIdentifier` extension (RFC 8737).
fn challenge_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let failed = |e: rcgen::Error| format!("making the challenge certificate for {name}: {e}");
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(failed)?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(failed)?;
    let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
    // Not `from_der`: its consistency check parses the certificate as a
    // peer's, which refuses the critical extension the validator needs.
    let signing = ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("the challenge certificate's key for {name}: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(vec![cert.der().clone()], signing)))
}

/// The challenge certificates of one order: offered while the CA validates,
/// withdrawn when the order ends, however it ends.
struct Challenges<'a> {
    certificates: &'a Certificates,
    names: Vec<String>,
}

impl Challenges<'_> {
    fn offer(&mut self, name: &str, certified: Arc<CertifiedKey>) {
        let name = name.to_ascii_lowercase();
        self.certificates.challenges.write().insert(name.clone(), certified);
        self.names.push(name);
    }
}

impl Drop for Challenges<'_> {
    fn drop(&mut self) {
        let mut challenges = self.certificates.challenges.write();
        for name in &self.names {
            challenges.remove(name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_up_to_a_bound() {
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(3), RETRY_FIRST * 4);
        assert_eq!(retry_delay(40), RETRY_MAX);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    #[test]
    fn a_challenge_certificate_is_for_its_name_and_carries_the_digest() {
        let digest = [7u8; 32];
        let certified = challenge_certificate("events.example.com", &digest).expect("made");
        assert_eq!(names(&certified), ["events.example.com"]);
        let (_, parsed) = x509_parser::parse_x509_certificate(certified.cert[0].as_ref()).expect("parses");
        // id-pe-acmeIdentifier, critical, an OCTET STRING of the digest.
        let extension = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(extension.critical);
        assert_eq!(extension.value, [[0x04, 32].as_slice(), &digest].concat());
    }

    #[test]
    fn a_certificate_covers_exactly_its_names() {
        let certified = challenge_certificate("a.example.com", &[0; 32]).expect("made");
        assert!(covers(&certified, &["a.example.com".into()]));
        assert!(!covers(&certified, &["a.example.com".into(), "b.example.com".into()]));
        assert!(!covers(&certified, &["b.example.com".into()]));
    }

    /// A certificate for `a.example.com` valid between two dates.
    fn valid(from: (i32, u8, u8), to: (i32, u8, u8)) -> CertifiedKey {
        let mut params = rcgen::CertificateParams::new(vec!["a.example.com".to_owned()]).expect("params");
        params.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
        params.not_after = rcgen::date_time_ymd(to.0, to.1, to.2);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("signed");
        let key = PrivateKeyDer::Pkcs8(key.serialize_der().into());
        CertifiedKey::from_der(vec![cert.der().clone()], key, &ring::default_provider()).expect("certified")
    }

    #[test]
    fn a_certificate_is_renewed_after_two_thirds_of_its_life() {
        // 2000-01-01 to 2100-01-01: renewed two thirds in, at 2066-09-01.
        let (from, to) = (946_684_800u64, 4_102_444_800u64);
        let renew_at = from + (to - from) - (to - from) / 3;
        let now = SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("after 1970").as_secs();
        let expected = Duration::from_secs(renew_at - now);
        let wait = until_renewal(&valid((2000, 1, 1), (2100, 1, 1)));
        assert!(wait.abs_diff(expected) < Duration::from_secs(60), "{wait:?} against {expected:?}");
    }

    #[test]
    fn an_expired_certificate_is_renewed_at_once_but_not_in_a_loop() {
        assert_eq!(until_renewal(&valid((2000, 1, 1), (2001, 1, 1))), RENEW_MIN);
    }
}
