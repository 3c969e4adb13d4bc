//! The real `herald` binary as a subprocess, for tests that need a process
//! of its own: restarts, `kill -9`, signals, the command line, a fresh
//! metrics recorder. The one fixture for it: killed when dropped, its output
//! collected line by line, every wait bounded.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use herald_server::auth::{TokenSpec, mint};
use jsonwebtoken::{Algorithm, EncodingKey};

use super::{SECRET, WAIT};

/// A token for `subject` with the given grants, valid for `ttl`, signed with
/// the secret [`Herald::start`] gives the server.
pub fn token_with(subject: &str, publish: &[&str], subscribe: &[&str], admin: bool, ttl: Duration) -> String {
    let spec = TokenSpec {
        subject: subject.into(),
        publish: publish.iter().map(|s| (*s).to_owned()).collect(),
        subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
        admin,
        ttl,
        ..TokenSpec::default()
    };
    mint(&spec, Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes())).expect("mint")
}

/// A token that may do everything, the dashboard included, for an hour.
pub fn token() -> String {
    token_with("test", &["*"], &["*"], true, Duration::from_secs(3600))
}

/// The `herald` binary, with no `HERALD_*` settings from the environment.
pub fn herald_command() -> Command {
    command_of(Path::new(env!("CARGO_BIN_EXE_herald")))
}

fn command_of(binary: &Path) -> Command {
    let mut command = Command::new(binary);
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("HERALD_") {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1").env_remove("RUST_LOG").stdin(Stdio::null());
    command
}

/// A running `herald`.
pub struct Herald {
    /// The process.
    pub child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// `http://` (or `https://`) and that address.
    pub base: String,
    /// Every line it printed so far (its log and its errors), by a thread.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Herald {
    /// `herald serve` on data dir `dir`, on a port of its own, signing with
    /// [`SECRET`], with the `extra` flags.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::launch(Self::command(dir, extra))
    }

    /// The command [`Herald::start`] runs.
    pub fn command(dir: &Path, extra: &[&str]) -> Command {
        Self::command_of(Path::new(env!("CARGO_BIN_EXE_herald")), dir, extra)
    }

    /// As [`Herald::command`], running the binary at `binary`.
    pub fn command_of(binary: &Path, dir: &Path, extra: &[&str]) -> Command {
        let mut command = command_of(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("HERALD_LOG", "info");
        command
    }

    /// `herald` with exactly `args` (which should include `--listen
    /// 127.0.0.1:0`), in `cwd`.
    pub fn run(args: &[&str], cwd: &Path) -> Self {
        let mut command = herald_command();
        command.args(args).current_dir(cwd);
        Self::launch(command)
    }

    /// Spawns `command` (see [`Herald::command`]) and waits for the log line
    /// that says where it listens.
    pub fn launch(mut command: Command) -> Self {
        let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn herald");
        let (lines_tx, lines_rx) = mpsc::channel::<String>();
        let log = Arc::new(Mutex::new(Vec::new()));
        // The log goes to stdout (tracing's fmt); read both so neither pipe fills.
        let stdout = Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>;
        let stderr = Box::new(child.stderr.take().expect("stderr")) as Box<dyn std::io::Read + Send>;
        for (reader, tx) in [(stdout, Some(lines_tx)), (stderr, None)] {
            let sink = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines().map_while(Result::ok) {
                    sink.lock().unwrap().push(line.clone());
                    if let Some(tx) = &tx {
                        let _ = tx.send(line);
                    }
                }
            });
        }
        let deadline = Instant::now() + WAIT;
        let addr = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines_rx.recv_timeout(left) else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("herald did not say where it listens; output:\n{}", log.lock().unwrap().join("\n"));
            };
            if let Some(at) = line.find("listening on ") {
                let rest = &line[at + "listening on ".len()..];
                let end = rest.find(|c: char| c.is_whitespace() || c == '\u{1b}').unwrap_or(rest.len());
                let (scheme, addr) = rest[..end].split_once("://").expect("a URL in the log");
                break (scheme.to_owned(), addr.parse::<SocketAddr>().expect("listen address in the log"));
            }
        };
        let (scheme, addr) = addr;
        Self { child, addr, base: format!("{scheme}://{addr}"), log }
    }

    /// The URL of `path` on it.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Everything it printed so far.
    pub fn output(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM with the `kill` command.
    pub fn terminate(&self) {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits for the process to exit, within `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "herald did not exit within {limit:?}; output:\n{}", self.output());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then its exit status (within 20 s).
    pub fn stop(mut self) -> ExitStatus {
        self.terminate();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "herald did not exit after SIGTERM; output:\n{}", self.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
