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
        atomic::{AtomicBool, AtomicUsize, Ordering},
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

/// A TCP proxy between a node and Redis, to cut the node off and heal it,
/// without root or `tc`. Connections are numbered as they open; a cut
/// applies to those open at its time, and `blackhole` to new ones as well
/// until `pass`.
pub struct CutProxy {
    /// Where nodes connect.
    pub addr: SocketAddr,
    state: Arc<CutState>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct CutState {
    opened: AtomicUsize,
    /// Connections numbered below this forward nothing either way.
    silent_below: AtomicUsize,
    /// Connections numbered below this forward requests, but not replies.
    deaf_below: AtomicUsize,
    /// New connections are held open and silent.
    holding: AtomicBool,
}

impl CutProxy {
    /// Proxies to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(CutState::default());
        let shared = Arc::clone(&state);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let number = shared.opened.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(relay(client, target, number, Arc::clone(&shared)));
            }
        });
        Self { addr, state, task }
    }

    /// `redis://` through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// A partition: bytes stop flowing on every connection, open and new,
    /// and nothing is closed (the node times out, as after a real one).
    pub fn blackhole(&self) {
        self.state.holding.store(true, Ordering::SeqCst);
        self.state.silent_below.store(self.state.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Heals a partition for new connections (those cut stay dead, as their
    /// peers gave up on them).
    pub fn pass(&self) {
        self.state.holding.store(false, Ordering::SeqCst);
    }

    /// Connections open now still forward what the node sends, but not
    /// Redis's replies: Redis runs a command whose answer never comes back
    /// (in doubt). New connections work.
    pub fn lose_replies(&self) {
        self.state.deaf_below.store(self.state.opened.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Forwards connection `number` while its cuts allow; past a cut, reads and
/// drops, closing nothing.
async fn relay(mut client: TcpStream, target: SocketAddr, number: usize, state: Arc<CutState>) {
    use tokio::io::AsyncReadExt as _;
    if state.holding.load(Ordering::SeqCst) {
        // Held open and silent until the test ends.
        let _hold = client;
        std::future::pending::<()>().await;
        return;
    }
    let Ok(mut server) = TcpStream::connect(target).await else {
        let _ = client.shutdown().await;
        return;
    };
    let silent = || number < state.silent_below.load(Ordering::SeqCst);
    let deaf = || silent() || number < state.deaf_below.load(Ordering::SeqCst);
    let (mut client_read, mut client_write) = client.split();
    let (mut server_read, mut server_write) = server.split();
    let (mut up, mut down) = ([0u8; 16 * 1024], [0u8; 16 * 1024]);
    loop {
        tokio::select! {
            read = client_read.read(&mut up) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => if !silent() && server_write.write_all(&up[..n]).await.is_err() { break },
            },
            read = server_read.read(&mut down) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => if !deaf() && client_write.write_all(&down[..n]).await.is_err() { break },
            },
        }
    }
    // A peer closed: a cut connection stays open and silent, as a partition
    // closes nothing.
    if silent() || deaf() {
        std::future::pending::<()>().await;
    }
}
