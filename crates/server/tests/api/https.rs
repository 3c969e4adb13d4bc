//! HTTPS from certificate files, made here by `openssl` under test
//! authorities: HTTP/2 and HTTP/1.1 chosen by ALPN, events streamed over
//! both, a renewed certificate served without a restart while a stream
//! stays open, each bad file's error, and headless Chromium opening twenty
//! `EventSource`s over one HTTP/2 connection (six over HTTP/1.1). Streams
//! over HTTP/2 keep what they have over HTTP/1.1: exact resume, heartbeats,
//! token expiry, limits per stream, shutdown, the stall cut. The clients
//! are `curl`, Chromium, and `h2` over `tokio-rustls`, which share no code
//! with Herald. Certificates from an ACME CA are tested in `acme`.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use common::certs::{authority, certificate, openssl};

use tokio::io::{AsyncBufReadExt as _, BufReader, Lines};

use super::*;

mod acme;

/// Herald serving HTTPS (memory store, with `extra` flags) under a test
/// authority: the authority's certificate, for the clients to trust.
struct Https {
    herald: Herald,
    ca: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn https_herald(extra: &[&str]) -> Https {
    let dir = tempfile::tempdir().unwrap();
    let ca = authority(dir.path(), "ca");
    let (cert, key) = certificate(dir.path(), "ca", "server");
    let tls = ["--memory", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let herald = Herald::start(dir.path(), &[&tls[..], extra].concat());
    Https { herald, ca, _dir: dir }
}

/// `curl` with `args`: its exit status and what it printed.
fn curl(args: &[&str]) -> (bool, String) {
    let output = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("run curl");
    (output.status.success(), format!("{}{}", show(&output.stdout), show(&output.stderr)))
}

/// `path` on `herald` by name, as a browser would ask for it.
fn localhost(herald: &Herald, path: &str) -> String {
    format!("https://localhost:{}{path}", herald.addr.port())
}

/// Publishes `data` to topic `t` over HTTPS, trusting `ca`.
fn publish_over_tls(herald: &Herald, ca: &Path, token: &str, data: &str) {
    publish_at(&localhost(herald, "/topics/t/events"), &[], ca, token, data);
}

/// Publishes `data` at `url`, with `extra` curl flags, trusting `ca`.
fn publish_at(url: &str, extra: &[&str], ca: &Path, token: &str, data: &str) {
    let body = json!({ "data": data }).to_string();
    let auth = format!("Authorization: Bearer {token}");
    let ca = ca.to_str().unwrap();
    let args = [&["--cacert", ca, "-H", &auth, "-H", "Content-Type: application/json", "-d", &body][..], extra, &[url]];
    let (ok, out) = curl(&args.concat());
    assert!(ok && out.contains("\"id\""), "publish: {out}");
}

/// An event stream read by `curl -N`.
struct CurlStream {
    _child: tokio::process::Child,
    lines: Lines<BufReader<tokio::process::ChildStdout>>,
}

impl CurlStream {
    /// Opens topic `t` with `version` (`--http2` or `--http1.1`), trusting
    /// `ca`; returns once the stream is open.
    async fn open(herald: &Herald, ca: &Path, token: &str, version: &str) -> Self {
        Self::open_at(&localhost(herald, "/topics/t/events"), &[], ca, token, version).await
    }

    /// As [`CurlStream::open`], at `url`, with `extra` curl flags.
    async fn open_at(url: &str, extra: &[&str], ca: &Path, token: &str, version: &str) -> Self {
        let mut child = tokio::process::Command::new("curl")
            .args(["-sSN", version, "--cacert", ca.to_str().unwrap(), "-H"])
            .arg(format!("Authorization: Bearer {token}"))
            .args(extra)
            .arg(url)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run curl");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut stream = Self { _child: child, lines };
        stream.line_with(": herald stream open").await;
        stream
    }

    /// Reads up to the line that holds `needle`.
    async fn line_with(&mut self, needle: &str) -> String {
        within(WAIT, needle, async {
            loop {
                let line = self.lines.next_line().await.unwrap().expect("the stream ended");
                if line.contains(needle) {
                    return line;
                }
            }
        })
        .await
    }
}

#[tokio::test]
async fn https_speaks_http2_and_http1_by_alpn_and_streams_events_over_both() {
    let Https { herald, ca, _dir } = https_herald(&[]);
    assert!(herald.base.starts_with("https://"), "{}", herald.base);
    let token = sign_hs256(&claims(json!({})), SECRET);
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let url = localhost(&herald, "/healthz");
        let (ok, out) =
            curl(&[flag, "--cacert", ca.to_str().unwrap(), "-o", "/dev/null", "-w", "%{http_version}", &url]);
        assert!(ok, "{out}");
        assert_eq!(out, version, "ALPN chose the version asked for");

        let mut stream = CurlStream::open(&herald, &ca, &token, flag).await;
        publish_over_tls(&herald, &ca, &token, &format!("over {flag}"));
        assert_eq!(stream.line_with("data:").await, format!("data: over {flag}"));
        // A client that goes away is noticed: its stream closes.
        drop(stream);
        let metrics = localhost(&herald, "/metrics");
        within(WAIT, "the stream to close", async {
            while !curl(&["--cacert", ca.to_str().unwrap(), &metrics]).1.contains("herald_streams_open 0") {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
    }
    // Plain HTTP on the HTTPS port is refused, not answered in clear.
    let plain = format!("http://{}/healthz", herald.addr);
    let (ok, _) = curl(&[&plain]);
    assert!(!ok, "plain HTTP to the HTTPS listener");
}

#[tokio::test]
async fn a_renewed_certificate_is_served_without_a_restart_and_open_streams_stay() {
    let dir = tempfile::tempdir().unwrap();
    let first = authority(dir.path(), "first");
    let (cert, key) = certificate(dir.path(), "first", "server");
    let herald = Herald::start(
        dir.path(),
        &["--memory", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let token = sign_hs256(&claims(json!({})), SECRET);
    let mut open = CurlStream::open(&herald, &first, &token, "--http2").await;

    // Renewed under another authority, with a new key, written over the
    // files the way a renewal job does: the key first, then the certificate.
    let second = authority(dir.path(), "second");
    let (new_cert, new_key) = certificate(dir.path(), "second", "renewed");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    let url = localhost(&herald, "/healthz");
    within(WAIT, "the renewed certificate", async {
        while !curl(&["--cacert", second.to_str().unwrap(), &url]).0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let (ok, out) = curl(&["--cacert", first.to_str().unwrap(), &url]);
    assert!(!ok, "the old certificate is no longer offered: {out}");
    assert!(herald.output().contains("TLS certificate reloaded"), "{}", herald.output());

    publish_over_tls(&herald, &second, &token, "after the renewal");
    assert_eq!(open.line_with("data:").await, "data: after the renewal", "the stream opened before goes on");
}

#[test]
fn bad_certificate_files_stop_the_start_and_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    authority(dir.path(), "ca");
    let (cert, key) = certificate(dir.path(), "ca", "server");
    let (_, other_key) = certificate(dir.path(), "ca", "other");
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "just some text\n").unwrap();
    let missing = dir.path().join("missing.pem");
    let path = |p: &Path| p.to_str().unwrap().to_owned();
    let cases: [(Vec<String>, String); 5] = [
        (vec!["--tls-cert".into(), path(&missing)], format!("--tls-cert {}: no such file", missing.display())),
        (vec!["--tls-cert".into(), path(&not_pem), "--tls-key".into(), path(&key)], "holds no PEM certificate".into()),
        (vec!["--tls-cert".into(), path(&cert)], format!("--tls-key {}: holds no PEM private key", cert.display())),
        (
            vec!["--tls-cert".into(), path(&cert), "--tls-key".into(), path(&other_key)],
            format!("--tls-key {} does not go with the certificate in --tls-cert", other_key.display()),
        ),
        (vec!["--tls-key".into(), path(&key)], "--tls-key needs --tls-cert".into()),
    ];
    for (args, expected) in cases {
        let output = herald_command()
            .args(["serve", "--memory", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET])
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = show(&output.stderr);
        assert!(stderr.contains(&expected), "{args:?}: expected `{expected}` in:\n{stderr}");
    }
}

/// How many of `count` EventSources one Chromium page has open after a
/// while, over what protocol, and how many get the event then published to
/// each (`tests/browser/many_streams.mjs`), against the server at `base`.
async fn chromium_many_streams(base: &str, count: usize) -> (usize, String, usize) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/many_streams.mjs");
    assert!(Path::new("/usr/bin/chromium").exists(), "chromium is missing: run scripts/install-test-deps");
    let mut node = tokio::process::Command::new("node")
        .arg(&script)
        .env("HERALD_URL", base)
        .env("COUNT", count.to_string())
        .env("WAIT_MS", "2000")
        .env_remove("https_proxy")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node: run scripts/install-test-deps");
    let mut lines = BufReader::new(node.stdout.take().unwrap()).lines();
    let limit = Duration::from_secs(90);
    let first = within(limit, "many_streams.mjs to open its sources", lines.next_line()).await.unwrap();
    let first = first.unwrap_or_else(|| panic!("many_streams.mjs printed nothing"));
    let mut words = first.split_whitespace().skip(1);
    let opened: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{first}"));
    let protocol = words.next().unwrap_or_default().to_owned();
    let auth = format!("Authorization: Bearer {}", sign_hs256(&claims(json!({})), SECRET));
    for i in 0..count {
        let url = format!("{base}/topics/many.{i}/events");
        let (ok, out) = curl(&["-k", "-H", &auth, "-H", "Content-Type: application/json", "-d", "{\"data\": 1}", &url]);
        assert!(ok && out.contains("\"id\""), "publish: {out}");
    }
    let mut stdin = node.stdin.take().unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, b"published\n").await.unwrap();
    let last = within(limit, "many_streams.mjs to count", lines.next_line()).await.unwrap().unwrap_or_default();
    let received = last.strip_prefix("received ").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{last}"));
    let status = within(limit, "node to exit", node.wait()).await.unwrap();
    assert!(status.success(), "many_streams.mjs: {status}");
    (opened, protocol, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_opens_twenty_event_sources_over_one_http2_connection_but_only_six_over_http1() {
    let dir = tempfile::tempdir().unwrap();
    authority(dir.path(), "ca");
    let (cert, key) = certificate(dir.path(), "ca", "server");
    let public = ["--public-subscribe", "many.*", "--memory"];
    let tls = ["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()];
    let https = Herald::start(&dir.path().join("https"), &[&public[..], &tls[..]].concat());
    let plain = Herald::start(&dir.path().join("plain"), &public);
    // Connections the server accepted so far (this request's included).
    let connections = |herald: &Herald| {
        let (ok, text) = curl(&["-k", &format!("https://localhost:{}/metrics", herald.addr.port())]);
        assert!(ok, "{text}");
        let line = text.lines().find(|l| l.starts_with("herald_connections_opened_total")).unwrap_or_default();
        line.split_whitespace().last().and_then(|n| n.parse::<f64>().ok()).unwrap_or(0.0)
    };

    let base = format!("https://localhost:{}", https.addr.port());
    let before = connections(&https);
    let (opened, protocol, received) = chromium_many_streams(&base, 20).await;
    assert_eq!((opened, protocol.as_str(), received), (20, "h2", 20), "all twenty, over HTTP/2");
    // The page and its twenty streams came over one connection (the test's
    // own requests to /metrics and to publish are the others).
    let page_connections = connections(&https) - before - 20.0 - 1.0;
    assert!(page_connections <= 1.0, "the page used {page_connections} connections");

    let (opened, protocol, received) = chromium_many_streams(&plain.base, 20).await;
    assert_eq!(protocol, "http/1.1");
    assert_eq!(opened, 6, "a browser opens six HTTP/1.1 connections per site; the page's other sources wait");
    assert_eq!(received, 6, "the six open sources got their events");
}

#[tokio::test]
async fn a_plain_http_listener_beside_https_redirects_every_request_to_it() {
    let Https { herald, ca, _dir: dir } = https_herald(&["--listen", "http://127.0.0.1:0"]);
    let output = within(WAIT, "the redirecting listener's log line", async {
        loop {
            let output = herald.output();
            if output.contains("redirecting to HTTPS from http://") {
                return output;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let plain = output.split("redirecting to HTTPS from http://").nth(1).unwrap();
    let plain: std::net::SocketAddr =
        plain.split(|c: char| c.is_whitespace() || c == '\u{1b}').next().unwrap().parse().unwrap();
    let port = herald.addr.port();

    let url = format!("http://localhost:{}/topics/a/events?last_event_id=x", plain.port());
    let (ok, out) = curl(&["-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", &url]);
    assert!(ok, "{out}");
    assert_eq!(out, format!("308 https://localhost:{port}/topics/a/events?last_event_id=x"));
    // A client that follows it ends on HTTPS.
    let healthz = format!("http://localhost:{}/healthz", plain.port());
    let (ok, out) = curl(&["-L", "--cacert", ca.to_str().unwrap(), "-w", " %{scheme}", &healthz]);
    assert!(ok, "{out}");
    assert!(out.ends_with(" HTTPS") || out.ends_with(" https"), "{out}");

    // Without a certificate, https:// is refused.
    let refused = herald_command()
        .args(["serve", "--memory", "--jwt-secret", SECRET, "--listen", "https://127.0.0.1:0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(show(&refused.stderr).contains("--listen https://127.0.0.1:0: HTTPS needs --tls-cert"));
}

#[tokio::test]
async fn an_expired_certificate_starts_with_a_warning_that_says_so() {
    let dir = tempfile::tempdir().unwrap();
    authority(dir.path(), "ca");
    certificate(dir.path(), "ca", "server");
    // Re-signed with a validity that ended long ago (`openssl ca` takes dates).
    std::fs::write(
        dir.path().join("ca.cnf"),
        "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\n\
         default_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("index.txt"), "").unwrap();
    std::fs::write(dir.path().join("serial"), "01\n").unwrap();
    openssl(
        dir.path(),
        &[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            "ca.pem",
            "-keyfile",
            "ca.key",
            "-in",
            "server.csr",
            "-out",
            "expired.pem",
            "-startdate",
            "20000101000000Z",
            "-enddate",
            "20010101000000Z",
            "-notext",
            "-extfile",
            "server.ext",
        ],
    );
    let (cert, key) = (dir.path().join("expired.pem"), dir.path().join("server.key"));
    let herald = Herald::start(
        dir.path(),
        &["--memory", "--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()],
    );
    let expected = format!("--tls-cert {}: the certificate expired on", cert.display());
    let output = herald.output();
    assert!(output.contains(&expected) && output.contains("WARN"), "{output}");
    assert!(output.contains("2001"), "the date it expired: {output}");
}

/// An HTTP/2 client over TLS (ALPN `h2`) to `herald`, trusting `ca`, whose
/// streams have `window` bytes of flow-control window; its connection is
/// driven by a task of its own. Written with `h2` and
/// `tokio-rustls`, not with Herald's code.
async fn h2_over_tls(herald: &Herald, ca: &Path, window: u32) -> h2::client::SendRequest<bytes::Bytes> {
    use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_file(ca).unwrap()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(herald.addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
    let handshake = h2::client::Builder::new().initial_window_size(window).handshake(tls);
    let (client, connection) = within(WAIT, "the HTTP/2 handshake", handshake).await.unwrap();
    tokio::spawn(connection);
    within(WAIT, "the HTTP/2 connection", client.ready()).await.unwrap()
}

#[tokio::test]
async fn over_http2_the_per_ip_limit_counts_streams_and_a_refused_one_leaves_the_connection_open() {
    let Https { herald, ca, _dir } = https_herald(&["--max-streams-per-ip", "3"]);
    let token = sign_hs256(&claims(json!({})), SECRET);
    let mut client = h2_over_tls(&herald, &ca, 65_535).await;
    let request = |method: &str, path: &str| {
        axum::http::Request::builder()
            .method(method)
            .uri(format!("https://localhost:{}{path}", herald.addr.port()))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(())
            .unwrap()
    };
    let mut open = Vec::new();
    for _ in 0..3 {
        let (response, _) = client.send_request(request("GET", "/topics/t/events"), true).unwrap();
        let response = within(WAIT, "a stream's head", response).await.unwrap();
        assert_eq!(response.status(), 200);
        open.push(response.into_body());
    }
    let (refused, _) = client.send_request(request("GET", "/topics/t/events"), true).unwrap();
    let refused = within(WAIT, "the fourth stream's head", refused).await.unwrap();
    assert_eq!(refused.status(), 429, "a fourth stream from this address is over the limit of 3");

    // The same connection goes on: a publish on it reaches the three.
    let (published, mut body) = client.send_request(request("POST", "/topics/t/events"), false).unwrap();
    body.send_data(bytes::Bytes::from_static(br#"{"data": "to all three"}"#), true).unwrap();
    assert_eq!(within(WAIT, "the publish", published).await.unwrap().status(), 201);
    for stream in &mut open {
        let text = within(WAIT, "the event", async {
            let mut text = String::new();
            while !text.contains("data: to all three") {
                let data = stream.data().await.expect("the stream goes on").unwrap();
                stream.flow_control().release_capacity(data.len()).unwrap();
                text.push_str(&String::from_utf8_lossy(&data));
            }
            text
        })
        .await;
        assert!(text.contains("data: to all three"), "{text}");
    }

    // A stream that ends gives its place back.
    drop(open.pop());
    within(WAIT, "a place for a new stream", async {
        loop {
            let (response, _) = client.send_request(request("GET", "/topics/t/events"), true).unwrap();
            if response.await.unwrap().status() == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn at_shutdown_https_streams_over_http2_end_with_a_reconnect_comment_and_the_process_exits_0() {
    let Https { mut herald, ca, _dir } = https_herald(&["--shutdown-grace", "3s"]);
    let token = sign_hs256(&claims(json!({})), SECRET);
    let mut client = h2_over_tls(&herald, &ca, 65_535).await;
    let request = axum::http::Request::builder()
        .uri(format!("https://localhost:{}/topics/t/events", herald.addr.port()))
        .header("authorization", format!("Bearer {token}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    let response = within(WAIT, "the stream's head", response).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    // Its opening comment first, so the stream is surely open.
    let first = within(WAIT, "the opening", body.data()).await.unwrap().unwrap();
    body.flow_control().release_capacity(first.len()).unwrap();

    herald.terminate();
    let rest = within(WAIT, "the stream to end", async {
        let mut rest = String::new();
        while let Some(data) = body.data().await {
            let data = data.unwrap();
            body.flow_control().release_capacity(data.len()).unwrap();
            rest.push_str(&String::from_utf8_lossy(&data));
        }
        rest
    })
    .await;
    assert!(rest.contains(": server shutting down; reconnect"), "{rest:?}");
    let status = herald.wait_exit(Duration::from_secs(6)).await;
    assert_eq!(status.code(), Some(0), "output:\n{}", herald.output());
}

#[tokio::test]
async fn over_http2_a_stream_whose_window_stays_shut_is_cut_alone() {
    let Https { herald, ca, _dir } =
        https_herald(&["--stall-timeout", "1s", "--heartbeat", "200ms", "--idle-timeout", "1s"]);
    let token = sign_hs256(&claims(json!({})), SECRET);
    // One connection, two streams, each with a 256-byte window.
    let mut client = h2_over_tls(&herald, &ca, 256).await;
    let get = |topic: &str| {
        axum::http::Request::builder()
            .uri(format!("https://localhost:{}/topics/{topic}/events", herald.addr.port()))
            .header("authorization", format!("Bearer {token}"))
            .body(())
            .unwrap()
    };
    let (shut, _) = client.send_request(get("shut"), true).unwrap();
    let (open, _) = client.send_request(get("t"), true).unwrap();
    let mut shut = within(WAIT, "the first stream", shut).await.unwrap().into_body();
    let mut open = within(WAIT, "the second stream", open).await.unwrap().into_body();
    // The first is read as far as its window lets the server send, and its
    // window is never opened again.
    let auth = format!("Authorization: Bearer {token}");
    let big = json!({ "data": "x".repeat(2000) }).to_string();
    let url = localhost(&herald, "/topics/shut/events");
    let (ok, out) = curl(&[
        "--cacert",
        ca.to_str().unwrap(),
        "-H",
        &auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        &big,
        &url,
    ]);
    assert!(ok, "{out}");
    let error = h2_until_cut(&mut shut).await.expect("the stream was reset, not ended as if complete");
    assert!(error.is_reset(), "{error}");
    // Its neighbour on the same connection still gets events.
    publish_over_tls(&herald, &ca, &token, "still here");
    let mut seen = String::new();
    within(WAIT, "the event on the other stream", async {
        while !seen.contains("data: still here") {
            let data = open.data().await.expect("the other stream is open").expect("and healthy");
            open.flow_control().release_capacity(data.len()).unwrap();
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    })
    .await;
    let (_, metrics) = curl(&["--cacert", ca.to_str().unwrap(), &localhost(&herald, "/metrics")]);
    assert!(metrics.contains("herald_streams_closed_total{reason=\"lagged\"} 1"), "{metrics}");
}

/// Reads `body` until what it gave contains `needle`; all of it.
async fn h2_text_until(body: &mut h2::RecvStream, text: &mut String, needle: &str) {
    within(WAIT, needle, async {
        while !text.contains(needle) {
            let data = body.data().await.expect("the stream goes on").unwrap();
            body.flow_control().release_capacity(data.len()).unwrap();
            text.push_str(&String::from_utf8_lossy(&data));
        }
    })
    .await;
}

#[tokio::test]
async fn over_http2_streams_resume_exactly_get_heartbeats_and_end_when_their_token_expires() {
    let Https { herald, ca, _dir } = https_herald(&["--heartbeat", "1s"]);
    let token = sign_hs256(&claims(json!({})), SECRET);
    let mut client = h2_over_tls(&herald, &ca, 65_535).await;
    let open = |client: &mut h2::client::SendRequest<bytes::Bytes>, token: &str, last_id: Option<&str>| {
        let mut request = axum::http::Request::builder()
            .uri(format!("https://localhost:{}/topics/t/events", herald.addr.port()))
            .header("authorization", format!("Bearer {token}"));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id);
        }
        let (response, _) = client.send_request(request.body(()).unwrap(), true).unwrap();
        async move {
            let response = within(WAIT, "the stream's head", response).await.unwrap();
            assert_eq!(response.status(), 200);
            response.into_body()
        }
    };
    let mut first = open(&mut client, &token, None).await;
    let mut text = String::new();
    h2_text_until(&mut first, &mut text, ": herald stream open").await;
    for i in 1..=3 {
        publish_over_tls(&herald, &ca, &token, &format!("event {i}"));
    }
    h2_text_until(&mut first, &mut text, "data: event 3").await;
    let ids: Vec<&str> = text.lines().filter_map(|line| line.strip_prefix("id: ")).collect();
    assert_eq!(ids.len(), 3, "{text}");

    // Resumed after the first event on the same connection, with a token
    // that expires in two seconds: exactly the two after it, heartbeats
    // while idle, then the end.
    let short = sign_hs256(&claims(json!({ "exp": now() + 2 })), SECRET);
    let mut resumed = open(&mut client, &short, Some(ids[0])).await;
    let mut again = String::new();
    h2_text_until(&mut resumed, &mut again, "data: event 3").await;
    assert!(!again.contains("data: event 1") && again.contains("data: event 2"), "{again}");
    h2_text_until(&mut resumed, &mut again, "\n:\n").await;
    h2_text_until(&mut resumed, &mut again, "event: herald.expired").await;
    let rest = within(WAIT, "the end of the expired stream", async {
        let mut rest = String::new();
        while let Some(data) = resumed.data().await {
            rest.push_str(&String::from_utf8_lossy(&data.unwrap()));
        }
        rest
    })
    .await;
    assert!(again.contains("token_expired") || rest.contains("token_expired"), "{again}{rest}");
    // The first stream, with its own token, goes on over the connection.
    publish_over_tls(&herald, &ca, &token, "event 4");
    h2_text_until(&mut first, &mut text, "data: event 4").await;
}

#[tokio::test]
async fn over_http2_a_connection_carries_at_most_max_streams_per_connection_at_once() {
    let Https { herald, ca, _dir } = https_herald(&["--max-streams-per-connection", "3"]);
    let client = h2_over_tls(&herald, &ca, 65_535).await;
    // The server says so in its SETTINGS, which the client obeys.
    within(WAIT, "the server's SETTINGS", async {
        while client.current_max_send_streams() != 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
