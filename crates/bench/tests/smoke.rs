//! CI smoke test: the real `herald-bench` binary against a real `herald`
//! process on a loopback port, with the memory store and with SQLite in a
//! temporary data dir, and over HTTPS (HTTP/1.1 and HTTP/2, a certificate
//! made by `openssl` under a throwaway authority). N=50 subscribers, M=200
//! events; any missing or duplicated event fails the run (the tool exits
//! non-zero) and the test.
//!
//! Finding `herald`: `HERALD_BIN` if set; otherwise the test runs
//! `cargo build -p herald-server --bin herald` into the same target
//! directory and profile as this test's `herald-bench`. Cargo builds other
//! packages' binaries for integration tests only of their own package, so a
//! path alone could be missing or stale; the build is a no-op when the
//! binary is fresh (as after `cargo test --workspace`).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;

const SECRET: &str = "smoke-test-secret-of-at-least-32-bytes";
const SUBSCRIBERS: u64 = 50;
const EVENTS: u64 = 200;

fn herald_binary() -> &'static Path {
    static HERALD: OnceLock<PathBuf> = OnceLock::new();
    HERALD.get_or_init(|| {
        if let Some(path) = std::env::var_os("HERALD_BIN") {
            return PathBuf::from(path);
        }
        let bench = Path::new(env!("CARGO_BIN_EXE_herald-bench"));
        let profile_dir = bench.parent().expect("the binary is in a profile directory");
        let target_dir = profile_dir.parent().expect("the profile directory is in a target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => "dev",
            Some(other) => other,
        };
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "herald-server", "--bin", "herald", "--profile", profile])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(workspace)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p herald-server failed");
        let herald = profile_dir.join(format!("herald{}", std::env::consts::EXE_SUFFIX));
        assert!(herald.exists(), "{} missing after the build", herald.display());
        herald
    })
}

/// A `herald` process, killed when dropped.
struct Herald {
    child: Child,
    base: String,
    /// The authority that signed the certificate, when serving HTTPS.
    ca: Option<PathBuf>,
    _data: tempfile::TempDir,
}

/// Runs `openssl` with `args` in `dir`.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
    assert!(output.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// A throwaway authority `ca.pem` and a certificate `server.pem` (key
/// `server.key`) it signed for `localhost`, in `dir`.
fn certificates(dir: &Path) {
    let key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        dir,
        &[&["req", "-x509"][..], &key, &["-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=smoke CA"]].concat(),
    );
    openssl(
        dir,
        &[&["req"][..], &key, &["-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]].concat(),
    );
    std::fs::write(dir.join("server.ext"), "subjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n").unwrap();
    let signing = ["-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem"];
    openssl(dir, &[&["x509", "-req"][..], &signing, &["-days", "1", "-extfile", "server.ext"]].concat());
}

impl Herald {
    fn start(memory: bool) -> Self {
        Self::start_with(memory, false)
    }

    /// Over HTTPS (memory store), its URLs `https://localhost:PORT`.
    fn start_https() -> Self {
        Self::start_with(true, true)
    }

    fn start_with(memory: bool, https: bool) -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut command = Command::new(herald_binary());
        command.args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--log", "info"]);
        if memory {
            command.arg("--memory");
        } else {
            command.arg("--data-dir").arg(data.path().join("data"));
        }
        if https {
            certificates(data.path());
            command.arg("--tls-cert").arg(data.path().join("server.pem"));
            command.arg("--tls-key").arg(data.path().join("server.key"));
        }
        let mut child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        // The log says where it listens (port 0 picks a free one).
        let (found, address) = std::sync::mpsc::channel();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let found = found.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let scheme = if https { "https://" } else { "http://" };
                    if let Some(at) = line.find(&format!("listening on {scheme}")) {
                        let addr = line[at + "listening on ".len() + scheme.len()..].split_whitespace().next();
                        let _ = found.send(addr.unwrap_or("").to_owned());
                    }
                }
            });
        }
        let addr: std::net::SocketAddr = address
            .recv_timeout(Duration::from_secs(30))
            .expect("herald logs its address within 30 s")
            .parse()
            .unwrap();
        // The certificate is for `localhost`, which the tool resolves to 127.0.0.1.
        let base = if https { format!("https://localhost:{}", addr.port()) } else { format!("http://{addr}") };
        let ca = https.then(|| data.path().join("ca.pem"));
        Self { child, base, ca, _data: data }
    }

    fn token(&self) -> String {
        let out = Command::new(herald_binary())
            .args(["token", "--sub", "smoke", "--publish", "*", "--subscribe", "*", "--jwt-secret", SECRET])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    }

    /// Runs `herald-bench run` with `extra` arguments; (exit success, JSON report).
    fn bench(&self, extra: &[&str]) -> (bool, Value) {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("report.json");
        let subscribe = format!("{}/topics/smoke/events", self.base);
        let started = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_herald-bench"))
            .arg("run")
            .args(["--url", &subscribe, "--subscribers", &SUBSCRIBERS.to_string()])
            .args(["--events", &EVENTS.to_string(), "--publishers", "4", "--timeout", "60s", "--quiet"])
            .args(["--token", &self.token(), "--server-pid", &self.child.id().to_string(), "--id-order"])
            .arg("--json")
            .arg(&json)
            .args(self.ca.iter().flat_map(|ca| [std::ffi::OsStr::new("--ca"), ca.as_os_str()]))
            .args(extra)
            .output()
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(90));
        let stdout = String::from_utf8_lossy(&out.stdout);
        eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).expect("a JSON report")).unwrap();
        (out.status.success(), report)
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn assert_every_event_once(memory: bool) {
    let herald = Herald::start(memory);
    let single = format!("{}/topics/smoke/events", herald.base);
    let batch = format!("{}/publish", herald.base);
    assert_runs_deliver_every_event_once(
        &herald,
        &[
            vec!["--publish-url", single.as_str()],
            vec!["--publish-url", single.as_str(), "--body", "text", "--rate", "2000"],
            vec!["--publish-url", batch.as_str(), "--batch", "20", "--batch-topic", "smoke"],
        ],
    );
}

fn assert_runs_deliver_every_event_once(herald: &Herald, runs: &[Vec<&str>]) {
    for args in runs {
        let (ok, report) = herald.bench(args);
        let delivery = &report["delivery"];
        assert_eq!(report["connect"]["connected"], SUBSCRIBERS, "{args:?}");
        assert_eq!(report["publish"]["events_acked"], EVENTS, "{args:?}");
        assert_eq!(delivery["expected"], SUBSCRIBERS * EVENTS, "{args:?}");
        assert_eq!(delivery["delivered"], SUBSCRIBERS * EVENTS, "{args:?}");
        for check in ["missing", "duplicates", "unexpected", "id_errors", "notices", "stream_errors"] {
            assert_eq!(delivery[check], 0, "{check} with {args:?}");
        }
        assert!(ok && report["ok"] == true, "the run failed: {}", report["errors"]);
        // The server was sampled. Its CPU comes in 10 ms ticks: a fast
        // (release) run of 200 events may cost none.
        assert!(report["server"]["peak_rss_bytes"].as_u64().unwrap() > 0);
        assert!(report["server"]["cpu_seconds"].as_f64().unwrap() >= 0.0);
    }
}

#[test]
fn memory_store_delivers_every_event_exactly_once() {
    assert_every_event_once(true);
}

#[test]
fn sqlite_store_delivers_every_event_exactly_once() {
    assert_every_event_once(false);
}

#[test]
fn https_streams_over_http1_and_http2_deliver_every_event_exactly_once() {
    let herald = Herald::start_https();
    let single = format!("{}/topics/smoke/events", herald.base);
    assert_runs_deliver_every_event_once(
        &herald,
        &[
            vec!["--publish-url", single.as_str(), "--transport", "h1"],
            // 50 streams on 4 connections: the last one not full.
            vec!["--publish-url", single.as_str(), "--transport", "h2", "--streams-per-connection", "16"],
        ],
    );
    let (_, report) = herald.bench(&["--publish-url", &single, "--transport", "h2"]);
    assert_eq!(report["transport"], "h2");
    assert_eq!(report["streams_per_connection"], 100);
}

#[test]
fn missing_events_fail_the_run() {
    let herald = Herald::start(true);
    // Events go to another topic: every subscriber misses all of them.
    let elsewhere = format!("{}/topics/elsewhere/events", herald.base);
    let (ok, report) = herald.bench(&["--publish-url", &elsewhere, "--drain-timeout", "1s"]);
    assert!(!ok, "the tool must exit non-zero");
    assert_eq!(report["ok"], false);
    assert_eq!(report["delivery"]["missing"], SUBSCRIBERS * EVENTS);
}
