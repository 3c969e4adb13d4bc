//! The real `herald` binary as a subprocess, for tests that need a process
//! of its own: restarts, `kill -9`, signals, a fresh metrics recorder.

#![allow(dead_code)] // each test binary uses part of it

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use herald_server::auth::{TokenSpec, mint};
use jsonwebtoken::{Algorithm, EncodingKey};

pub const SECRET: &str = "durability-test-secret-0123456789abcdef";

pub fn token() -> String {
    let spec = TokenSpec {
        subject: "test".into(),
        publish: vec!["*".into()],
        subscribe: vec!["*".into()],
        admin: true,
        ttl: Duration::from_secs(3600),
        ..TokenSpec::default()
    };
    mint(&spec, Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

/// A running `herald serve` on a data dir.
pub struct Herald {
    pub child: Child,
    pub base: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Herald {
    pub fn command(dir: &Path, extra: &[&str]) -> Command {
        Self::command_of(Path::new(env!("CARGO_BIN_EXE_herald")), dir, extra)
    }

    /// As [`Herald::command`], running the binary at `binary`.
    pub fn command_of(binary: &Path, dir: &Path, extra: &[&str]) -> Command {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--data-dir"])
            .arg(dir)
            .args(extra)
            .env("HERALD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        let mut child = Self::command(dir, extra).spawn().expect("herald starts");
        let stdout = child.stdout.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (found, address) = mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(at) = line.find("listening on http://") {
                    let _ = found.send(line[at + "listening on ".len()..].trim().to_owned());
                }
                lines.lock().unwrap().push(line);
            }
        });
        let Ok(base) = address.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!("herald did not start: {}", String::from_utf8_lossy(&output.stderr));
        };
        Self { child, base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn stop(mut self) -> ExitStatus {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "herald did not exit after SIGTERM; log: {:?}",
                self.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A token for `subject` with the given grants, valid for `ttl`.
pub fn token_with(subject: &str, publish: &[&str], subscribe: &[&str], admin: bool, ttl: Duration) -> String {
    let spec = TokenSpec {
        subject: subject.into(),
        publish: publish.iter().map(|s| s.to_string()).collect(),
        subscribe: subscribe.iter().map(|s| s.to_string()).collect(),
        admin,
        ttl,
        ..TokenSpec::default()
    };
    mint(&spec, Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}
