//! A real `redis-server` per test, on a free port in a temp dir, and a TCP
//! proxy that can cut a node off from it. Both are killed when dropped.
//!
//! A missing `redis-server` fails the test: `scripts/install-test-deps`
//! installs it, and a skipped cluster test would pass CI without testing.

use std::{
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::AsyncWriteExt as _,
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// How Redis keeps writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// `appendonly yes`, `appendfsync always`.
    Always,
    /// `appendonly yes`, `appendfsync everysec`.
    Everysec,
    /// No append-only file, no snapshots: a restart comes back empty.
    None,
}

/// A `redis-server` of the test's own.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
    persistence: Persistence,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts one in `dir`.
    pub fn start(dir: &Path, persistence: Persistence) -> Self {
        Self::start_with(dir, persistence, &[])
    }

    /// Starts one in `dir` with extra `--name value` settings.
    pub fn start_with(dir: &Path, persistence: Persistence, extra: &[&str]) -> Self {
        let port = free_port();
        let mut server = Self {
            child: None,
            port,
            dir: dir.to_path_buf(),
            persistence,
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        };
        server.spawn();
        server
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        let (appendonly, fsync) = match self.persistence {
            Persistence::Always => ("yes", "always"),
            Persistence::Everysec => ("yes", "everysec"),
            Persistence::None => ("no", "everysec"),
        };
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", appendonly, "--appendfsync", fsync, "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): install it with scripts/install-test-deps (Debian's redis-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().is_err() {
            assert!(Instant::now() < deadline, "redis-server did not answer PING on port {}", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> redis::RedisResult<String> {
        let client = redis::Client::open(self.url())?;
        let mut connection = client.get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query(&mut connection)
    }

    /// A connection to it.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url()).and_then(|c| c.get_connection()).expect("connect to redis")
    }

    /// SIGKILL: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and dir, after a [`RedisServer::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port nobody listens on now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cut {
    /// Forwards both ways.
    Pass = 0,
    /// Forwards nothing and answers nothing: the node times out.
    Blackhole = 1,
}

/// A TCP proxy between a node and Redis, to cut the node off (a partition)
/// and heal it, without root or `tc`.
pub struct CutProxy {
    /// Where nodes connect.
    pub addr: SocketAddr,
    mode: Arc<AtomicU8>,
    /// Bumped by each cut: connections of an older generation stop.
    generation: Arc<std::sync::atomic::AtomicU64>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// Proxies to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let mode = Arc::new(AtomicU8::new(Cut::Pass as u8));
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (m, g) = (Arc::clone(&mode), Arc::clone(&generation));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (mode, generation) = (Arc::clone(&m), Arc::clone(&g));
                tokio::spawn(relay(client, target, mode, generation));
            }
        });
        Self { addr, mode, generation, task }
    }

    /// `redis://` through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Blackholes every connection, open and new: bytes stop flowing, and
    /// nothing is closed (a partition, not a refusal).
    pub fn blackhole(&self) {
        self.mode.store(Cut::Blackhole as u8, Ordering::SeqCst);
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Forwards again (new connections; those cut stay dead, as after a
    /// real partition their peers gave up on them).
    pub fn pass(&self) {
        self.mode.store(Cut::Pass as u8, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    mut client: TcpStream,
    target: SocketAddr,
    mode: Arc<AtomicU8>,
    generation: Arc<std::sync::atomic::AtomicU64>,
) {
    let born = generation.load(Ordering::SeqCst);
    let cut = || mode.load(Ordering::SeqCst) == Cut::Blackhole as u8 || generation.load(Ordering::SeqCst) != born;
    if cut() {
        // Hold it open and silent until the test ends.
        let _hold = client;
        std::future::pending::<()>().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        let _ = client.shutdown().await;
        return;
    };
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let mut up = [0u8; 16 * 1024];
    let mut down = [0u8; 16 * 1024];
    use tokio::io::AsyncReadExt as _;
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !cut() => { if server_write.write_all(&up[..n]).await.is_err() { return } }
                Ok(_) => break,
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) if !cut() => { if client_write.write_all(&down[..n]).await.is_err() { return } }
                Ok(_) => break,
            },
            () = tokio::time::sleep(Duration::from_millis(50)) => if cut() { break },
        }
    }
    // Cut: swallow everything, answer nothing, close nothing.
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => if matches!(read, Ok(0) | Err(_)) { break },
            read = server_read.read(&mut down) => if matches!(read, Ok(0) | Err(_)) { break },
        }
    }
    std::future::pending::<()>().await;
}
