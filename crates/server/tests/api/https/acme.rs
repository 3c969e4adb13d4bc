//! HTTPS with a certificate from an ACME CA on loopback: Debian's `pebble`
//! (Let's Encrypt's test server) validates by TLS-ALPN-01 on Herald's port
//! and issues short-lived certificates, so a renewal happens within the
//! test. `curl`, trusting only Pebble's root, and `openssl s_client` are
//! the clients.

use std::process::Command;

use common::{pebble::Pebble, redis::free_port};

use super::*;

/// The name Herald gets its certificate for; Pebble's DNS says it is
/// 127.0.0.1.
const NAME: &str = "events.herald.test";
/// A second name, added in a restart.
const OTHER: &str = "feeds.herald.test";

/// How long Pebble's certificates last: Herald renews two thirds in.
const VALIDITY: Duration = Duration::from_secs(30);

/// The SHA-256 fingerprint of the certificate served on `port` for `NAME`
/// (unverified, so a certificate is read even when expired), or `None`
/// without one.
fn served_fingerprint(port: u16) -> Option<String> {
    served_fingerprint_offering(port, "http/1.1")
}

/// As [`served_fingerprint`], the client offering the ALPN protocols
/// `alpn` (a comma list).
fn served_fingerprint_offering(port: u16, alpn: &str) -> Option<String> {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {NAME} -alpn {alpn} </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    );
    let output = Command::new("sh").args(["-c", &script]).output().expect("run openssl");
    let text = show(&output.stdout);
    text.contains("Fingerprint").then(|| text.trim().to_owned())
}

/// The fingerprint of the first certificate in a PEM file.
fn file_fingerprint(path: &Path) -> String {
    let output = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(path)
        .output()
        .expect("run openssl");
    assert!(output.status.success(), "{}: {}", path.display(), show(&output.stderr));
    show(&output.stdout).trim().to_owned()
}

/// Waits until the certificate served on `port` is one `wanted` accepts.
async fn served_when(port: u16, what: &str, limit: Duration, wanted: impl Fn(&str) -> bool) -> String {
    within(limit, what, async {
        loop {
            match served_fingerprint(port) {
                Some(print) if wanted(&print) => return print,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    })
    .await
}

#[tokio::test]
async fn herald_gets_its_certificate_by_acme_renews_it_under_an_open_stream_and_keeps_it_for_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pebble = Pebble::start(dir.path(), port, VALIDITY);
    let root = pebble.root(&dir.path().join("pebble-root.pem"));
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{port}");
    let (directory, directory_ca) = (pebble.directory.clone(), pebble.https_ca.clone());
    let args = [
        "serve",
        "--memory",
        "--listen",
        &listen,
        "--jwt-secret",
        SECRET,
        "--data-dir",
        data.to_str().unwrap(),
        "--acme-domain",
        NAME,
        "--acme-email",
        "ops@herald.test",
        "--acme-directory",
        &directory,
        "--acme-directory-ca",
        directory_ca.to_str().unwrap(),
    ];
    let herald = Herald::run(&args, dir.path());

    // Issued: curl, trusting Pebble's root alone, reaches Herald by name.
    let first = served_when(port, "the first certificate", Duration::from_secs(30), |_| true).await;
    let resolve = format!("{NAME}:{port}:127.0.0.1");
    let url = format!("https://{NAME}:{port}/topics/t/events");
    let by_name = ["--resolve", resolve.as_str()];
    let token = sign_hs256(&claims(json!({})), SECRET);
    let mut stream = CurlStream::open_at(&url, &by_name, &root, &token, "--http2").await;
    publish_at(&url, &by_name, &root, &token, "under a certificate from ACME");
    assert_eq!(stream.line_with("data:").await, "data: under a certificate from ACME");
    // Operators can alert on the expiry.
    let metrics = format!("https://{NAME}:{port}/metrics");
    let (ok, text) = curl(&["--cacert", root.to_str().unwrap(), "--resolve", &resolve, &metrics]);
    let expiry = text
        .lines()
        .find_map(|line| line.strip_prefix("herald_tls_certificate_expiry_timestamp_seconds "))
        .and_then(|value| value.parse::<f64>().ok());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let in_life = expiry.is_some_and(|at| now < at && at <= now + VALIDITY.as_secs_f64() + 1.0);
    assert!(ok && in_life, "the expiry gauge ({expiry:?}, now {now}): {text}");
    // Only a validator, which offers `acme-tls/1` alone, is answered as one.
    assert_eq!(served_fingerprint_offering(port, "h2,acme-tls/1").as_deref(), Some(first.as_str()));
    let kept = std::fs::read_dir(data.join("acme")).unwrap().next().unwrap().unwrap().path().join("certificate.pem");
    assert_eq!(file_fingerprint(&kept), first, "the certificate is kept in the data dir");

    // Renewed two thirds into its life, without a restart; the stream
    // opened under the first certificate goes on.
    let renewal = VALIDITY + WAIT;
    let second = served_when(port, "the renewed certificate", renewal, |print| print != first).await;
    publish_at(&url, &by_name, &root, &token, "after the renewal");
    assert_eq!(stream.line_with("data:").await, "data: after the renewal");
    let output = herald.output();
    assert_eq!(output.matches("ACME account opened").count(), 1, "renewals use the account: {output}");
    assert!(output.contains(&format!("ACME certificate for {NAME} installed")), "{output}");
    drop(stream);

    // Restarted with one name more: the kept certificate is served at
    // once, until the one for both names is issued.
    assert!(herald.stop().success());
    let last = file_fingerprint(&kept);
    assert_ne!(last, first, "the renewal was kept ({second} served)");
    let both = format!("{NAME},{OTHER}");
    let renamed_args: Vec<&str> = args.iter().map(|&arg| if arg == NAME { both.as_str() } else { arg }).collect();
    let renamed = Herald::run(&renamed_args, dir.path());
    let said = format!("served until one for {NAME}, {OTHER} is issued");
    assert!(renamed.output().contains(&said), "{}", renamed.output());
    served_when(port, "the certificate for both names", WAIT, |print| print != last).await;
    let other = format!("https://{OTHER}:{port}/healthz");
    let other_by_name = format!("{OTHER}:{port}:127.0.0.1");
    let (ok, out) = curl(&["--cacert", root.to_str().unwrap(), "--resolve", &other_by_name, &other]);
    assert!(ok, "the new name is served: {out}");

    // A restart serves the kept certificate at once, even with the CA gone.
    assert!(renamed.stop().success());
    pebble.kill();
    let last = file_fingerprint(&kept);
    let restarted = Herald::run(&renamed_args, dir.path());
    assert_eq!(served_fingerprint(port).as_deref(), Some(last.as_str()), "{}", restarted.output());
    assert!(restarted.output().contains("kept from an earlier run"), "{}", restarted.output());
}

#[tokio::test]
async fn herald_starts_when_the_acme_ca_cannot_be_reached_and_says_when_it_tries_again() {
    let dir = tempfile::tempdir().unwrap();
    let unreachable = format!("https://127.0.0.1:{}/dir", free_port());
    let herald =
        Herald::start(dir.path(), &["--memory", "--acme-domain", NAME, "--acme-directory", unreachable.as_str()]);
    assert!(herald.base.starts_with("https://"), "{}", herald.base);
    let said = format!("no ACME certificate for {NAME}: ");
    within(WAIT, "the failure in the log", async {
        while !herald.output().contains(&said) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let output = herald.output();
    assert!(output.contains(&unreachable) && output.contains("trying again in 2m"), "{output}");
    // No certificate yet: handshakes fail rather than offer something else.
    assert_eq!(served_fingerprint(herald.addr.port()), None);
}

#[test]
fn acme_settings_that_cannot_work_stop_the_start_and_say_why() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (&["--acme-domain", "*.example.com"], "a wildcard needs the DNS-01 challenge"),
        (&["--acme-domain", "10.0.0.1"], "--acme-domain 10.0.0.1: an IP address"),
        (&["--acme-domain", "bad name.example.com"], "not a DNS name like events.example.com"),
        (&["--acme-email", "ops@example.com"], "--acme-email needs --acme-domain"),
        (&["--acme-domain", "a.example.com", "--acme-email", "ops"], "--acme-email ops: not an email address"),
        (&["--acme-domain", "a.example.com", "--acme-directory", "http://ca.test/dir"], "an https:// URL"),
        (&["--acme-domain", "a.example.com", "--tls-cert", "x.pem"], "--tls-cert and --acme-domain exclude each other"),
    ];
    for (args, expected) in cases {
        let output = herald_command()
            .args(["serve", "--memory", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = show(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: expected `{expected}` in:\n{stderr}");
    }
}
