//! `herald-bench compare`: Herald (memory store, SQLite store) against Nchan
//! and Pushpin on the same loopback, scenario by scenario.
//!
//! Each run starts a fresh server, runs one scenario against it and stops
//! it; servers alternate (A B C A B C …) so that drift of a shared machine
//! spreads over all of them; each figure is the median of the runs. Only
//! processes this command started are ever signalled, by their pid.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{
    procstat,
    report::Report,
    run::{BodyFormat, RunConfig},
    run_blocking,
    transport::Transport,
    url::UrlTemplate,
};

/// The signing secret of the Herald servers started here (bench only).
const JWT_SECRET: &str = "herald-bench-secret-at-least-32-bytes-long";
/// Connection bounds given to Herald so that the idle scenario fits (within
/// the 20,000 open files a process may have here).
const MAX_CONNECTIONS: usize = 19_000;
/// Streams the client opens at once.
const CONNECT_CONCURRENCY: usize = 256;
/// The same for Pushpin: its proxy queues at most 100 requests to zurl (a
/// ZeroMQ high-water mark fixed in its code) and answers 502 past that, so
/// with 256 streams opening at once about one in nine failed here; with 128
/// none did.
const PUSHPIN_CONNECT_CONCURRENCY: usize = 64;
/// Ports tried in a row before giving up on finding a free one.
const PORT_TRIES: u16 = 200;
/// The keys of Pushpin's internal.conf that say where zurl's sockets are,
/// and where they go: zurl is started by the runner beside the others, its
/// sockets in the run directory (Debian's default is a system service's
/// /var/run/zurl, which nothing starts here).
const ZURL_SPECS: [(&str, &str); 3] = [
    ("zurl_out_specs", "ipc://{rundir}/{ipc_prefix}zurl-in"),
    ("zurl_out_stream_specs", "ipc://{rundir}/{ipc_prefix}zurl-in-stream"),
    ("zurl_in_specs", "ipc://{rundir}/{ipc_prefix}zurl-out"),
];

/// Options of `compare`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompareArgs {
    /// The `herald` binary (a release build).
    #[arg(long, default_value = "target/release/herald")]
    herald: PathBuf,
    /// The `nginx` binary (with the Nchan module installed).
    #[arg(long, default_value = "/usr/sbin/nginx")]
    nginx: PathBuf,
    /// nginx.conf template; `__PREFIX__` and `__PORT__` are filled in.
    #[arg(long, default_value = "bench/nchan.conf")]
    nchan_conf: PathBuf,
    /// The `pushpin` runner (Debian's `pushpin` package).
    #[arg(long, default_value = "/usr/bin/pushpin")]
    pushpin: PathBuf,
    /// pushpin.conf template; `__PREFIX__`, `__PORT__` and `__PUBLISH_PORT__` are filled in.
    #[arg(long, default_value = "bench/pushpin.conf")]
    pushpin_conf: PathBuf,
    /// Pushpin's internal.conf, copied with zurl's sockets moved into the run directory.
    #[arg(long, default_value = "/usr/lib/pushpin/internal.conf")]
    pushpin_internal_conf: PathBuf,
    /// Servers, in the order they alternate.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "herald-memory,herald-sqlite,nchan,pushpin")]
    servers: Vec<Server>,
    /// Scenarios to run.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "fanout,paced,light,publish,idle,batch")]
    scenarios: Vec<Scenario>,
    /// Runs per scenario and server (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// First loopback port; each server start takes the next one.
    #[arg(long, default_value_t = 18_100)]
    port: u16,
    /// Scratch directory for data dirs and nginx prefixes [default: a new one under /tmp].
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write every run's report and the medians as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write the summary table as Markdown.
    #[arg(long, value_name = "FILE")]
    markdown: Option<PathBuf>,
    /// Runtime worker threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Progress lines of each run on stderr.
    #[arg(long)]
    progress: bool,
}

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Server {
    /// `herald --memory`.
    HeraldMemory,
    /// `herald --data-dir DIR` (SQLite, synchronous=full).
    HeraldSqlite,
    /// nginx with the Nchan module.
    Nchan,
    /// Pushpin, holding streams for a GRIP origin (`herald-bench grip-origin`).
    Pushpin,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::HeraldMemory => "herald-memory",
            Self::HeraldSqlite => "herald-sqlite",
            Self::Nchan => "nchan",
            Self::Pushpin => "pushpin",
        }
    }

    fn is_herald(self) -> bool {
        matches!(self, Self::HeraldMemory | Self::HeraldSqlite)
    }
}

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// N=1,000, 100-byte payloads, publish as fast as possible: deliveries/s.
    Fanout,
    /// N=1,000, 1,000 events/s for 10 s: latency.
    Paced,
    /// N=1,000, 100 events/s for 10 s: latency.
    Light,
    /// No subscribers, K=32, as fast as possible: publish acks/s.
    Publish,
    /// N=15,000 idle streams: server memory (PSS) per stream.
    Idle,
    /// Batches of 100 events to POST /publish, K=8 (Herald only).
    Batch,
}

/// One figure of a scenario.
struct Metric {
    name: &'static str,
    value: fn(&Report) -> Option<f64>,
    /// Higher is better (throughput) or lower (latency, memory).
    higher_is_better: bool,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Self::Fanout => "1 fan-out",
            Self::Paced => "2 paced",
            Self::Light => "3 light",
            Self::Publish => "4 publish",
            Self::Idle => "5 idle",
            Self::Batch => "6 batch",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Self::Fanout => "N=1,000, M=2,000, 100 B, max rate, K=16",
            Self::Paced => "N=1,000, R=1,000/s for 10 s, K=16",
            Self::Light => "N=1,000, R=100/s for 10 s, K=4",
            Self::Publish => "N=0, K=32, M=20,000, max rate",
            Self::Idle => "N=15,000 idle streams",
            Self::Batch => "N=0, batches of 100, K=8, M=200,000",
        }
    }

    fn applies_to(self, server: Server) -> bool {
        self != Self::Batch || server.is_herald()
    }

    fn metrics(self) -> Vec<Metric> {
        let deliveries =
            Metric { name: "deliveries/s", value: |r| Some(r.delivery.deliveries_per_second), higher_is_better: true };
        let bulk = Metric {
            name: "deliveries/s to 99%",
            value: |r| Some(r.delivery.deliveries_per_second_99_percent),
            higher_is_better: true,
        };
        let max = Metric { name: "max ms", value: |r| Some(r.delivery.latency.max_ms), higher_is_better: false };
        let p50 = Metric { name: "p50 ms", value: |r| Some(r.delivery.latency.p50_ms), higher_is_better: false };
        let p99 = Metric { name: "p99 ms", value: |r| Some(r.delivery.latency.p99_ms), higher_is_better: false };
        let server_cpu = Metric {
            name: "server CPU s",
            value: |r| r.server.as_ref().map(|s| s.cpu_seconds),
            higher_is_better: false,
        };
        match self {
            Self::Fanout => vec![deliveries, bulk, p50, p99, max, server_cpu],
            Self::Paced | Self::Light => vec![p50, p99, max, server_cpu],
            Self::Publish | Self::Batch => vec![
                Metric { name: "events/s", value: |r| Some(r.publish.events_per_second), higher_is_better: true },
                Metric { name: "request p50 ms", value: |r| Some(r.publish.latency.p50_ms), higher_is_better: false },
                Metric { name: "request p99 ms", value: |r| Some(r.publish.latency.p99_ms), higher_is_better: false },
                server_cpu,
            ],
            Self::Idle => vec![
                Metric {
                    name: "memory KiB/stream",
                    value: |r| r.server.as_ref().and_then(|s| s.rss_per_connection_bytes).map(|b| b / 1024.0),
                    higher_is_better: false,
                },
                Metric { name: "connect s", value: |r| Some(r.connect.seconds), higher_is_better: false },
            ],
        }
    }

    /// The run configuration against `endpoints`.
    fn config(
        self,
        endpoints: &Endpoints,
        server_pids: Vec<u32>,
        label: String,
        progress: bool,
    ) -> anyhow::Result<RunConfig> {
        let (subscribers, events, rate, publishers, batch) = match self {
            Self::Fanout => (1_000, 2_000, 0.0, 16, 0),
            Self::Paced => (1_000, 10_000, 1_000.0, 16, 0),
            Self::Light => (1_000, 1_000, 100.0, 4, 0),
            Self::Publish => (0, 20_000, 0.0, 32, 0),
            Self::Idle => (15_000, 0, 0.0, 1, 0),
            Self::Batch => (0, 200_000, 0.0, 8, 100),
        };
        let pub_url = if batch > 0 { &endpoints.batch_url } else { &endpoints.pub_url };
        let Some(pub_url) = pub_url else { bail!("{} has no batch endpoint", endpoints.server.name()) };
        Ok(RunConfig {
            label,
            sub_url: (subscribers > 0).then(|| UrlTemplate::parse(&endpoints.sub_url)).transpose()?,
            transport: Transport::Plain,
            streams_per_connection: 1,
            tls: None,
            subscribers,
            topics: 1,
            pub_url: Some(UrlTemplate::parse(pub_url)?),
            events,
            rate,
            publishers,
            batch,
            batch_topic: "bench".into(),
            body: endpoints.body,
            payload_size: 100,
            sub_headers: endpoints.headers.clone(),
            pub_headers: endpoints.headers.clone(),
            subscribers_per_ip: 5_000,
            recv_buffer: (subscribers >= 10_000).then_some(32 << 10),
            connect_concurrency: endpoints.connect_concurrency,
            timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            settle: if self == Self::Idle { Duration::from_secs(3) } else { Duration::from_millis(200) },
            hold: Duration::ZERO,
            server_pids,
            id_order: endpoints.id_order,
            progress,
        })
    }
}

/// Where and how to talk to a started server.
struct Endpoints {
    server: Server,
    sub_url: String,
    pub_url: Option<String>,
    batch_url: Option<String>,
    headers: String,
    body: BodyFormat,
    id_order: bool,
    /// Streams opened at once.
    connect_concurrency: usize,
}

/// A started server: the processes this command started for it (the
/// server first; Pushpin's GRIP origin after it).
struct Running {
    children: Vec<Child>,
    endpoints: Endpoints,
}

impl Running {
    /// The pids to sample (their children are sampled too).
    fn pids(&self) -> Vec<u32> {
        self.children.iter().map(Child::id).collect()
    }

    /// Stops every process, in order.
    fn stop(self) {
        for child in self.children {
            stop(child);
        }
    }
}

/// SIGTERM to a process we started, then SIGKILL to it and to its children
/// (nginx workers, Pushpin's services) if it lingers.
fn stop(mut child: Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id();
    let family = procstat::with_children(&[pid]);
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).stderr(Stdio::null()).status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!("compare: pid {pid} did not stop within 15 s; killing it");
    for other in family.iter().skip(1) {
        let _ = Command::new("kill").args(["-KILL", &other.to_string()]).stderr(Stdio::null()).status();
    }
    let _ = child.kill();
    let _ = child.wait();
}

struct Lab {
    args: CompareArgs,
    work_dir: PathBuf,
    next_port: u16,
    starts: usize,
    token: String,
    nchan_template: Option<String>,
    pushpin_templates: Option<PushpinTemplates>,
}

/// Pushpin's configuration, read once.
struct PushpinTemplates {
    /// bench/pushpin.conf.
    conf: String,
    /// internal.conf, zurl's sockets already moved into the run directory.
    internal: String,
}

impl Lab {
    /// The next port from `--port` up that nothing listens on now.
    fn take_port(&mut self) -> anyhow::Result<u16> {
        for _ in 0..PORT_TRIES {
            let port = self.next_port;
            self.next_port = self.next_port.checked_add(1).context("out of ports")?;
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                return Ok(port);
            }
        }
        bail!("no free loopback port among {PORT_TRIES} from {}; pass another --port", self.next_port - PORT_TRIES)
    }

    /// Starts the GRIP origin, then Pushpin's runner (condure, zurl, proxy,
    /// handler) with a configuration of this start's own under a fresh
    /// prefix: run directory, logs, routes to the origin. Clients on
    /// `port`, publishes on the next free port.
    fn start_pushpin(&mut self, port: u16) -> anyhow::Result<Running> {
        let publish_port = self.take_port()?;
        let origin_port = self.take_port()?;
        let templates = self.pushpin_templates.as_ref().context("no pushpin.conf template")?;
        let prefix = self.work_dir.join(format!("pushpin-{}", self.starts));
        std::fs::create_dir_all(prefix.join("run"))?;
        std::fs::create_dir_all(prefix.join("log"))?;
        std::fs::write(prefix.join("internal.conf"), &templates.internal)?;
        // Not `localhost`, which may resolve to ::1 where the origin does not listen.
        std::fs::write(prefix.join("routes"), format!("* 127.0.0.1:{origin_port}\n"))?;
        let conf = prefix.join("pushpin.conf");
        let text = templates
            .conf
            .replace("__PREFIX__", &prefix.display().to_string())
            .replace("__PUBLISH_PORT__", &publish_port.to_string())
            .replace("__PORT__", &port.to_string());
        std::fs::write(&conf, text)?;
        let exe = std::env::current_exe().context("cannot find herald-bench's own binary for the GRIP origin")?;
        let origin = Command::new(exe)
            .args(["grip-origin", "--listen", &format!("127.0.0.1:{origin_port}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the GRIP origin")?;
        // Pushpin's log lines go to stderr, away from the table on stdout.
        let log = std::io::stderr().as_fd().try_clone_to_owned()?;
        let runner = Command::new(&self.args.pushpin)
            .arg("--config")
            .arg(&conf)
            .args(["--merge-output", "--loglevel", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .spawn();
        let runner = match runner {
            Ok(runner) => runner,
            Err(error) => {
                stop(origin);
                return Err(error).with_context(|| {
                    format!("cannot start {} (install Debian's `pushpin` package)", self.args.pushpin.display())
                });
            }
        };
        Ok(Running {
            children: vec![runner, origin],
            endpoints: Endpoints {
                server: Server::Pushpin,
                sub_url: format!("http://127.0.0.1:{port}/sub/bench"),
                pub_url: Some(format!("http://127.0.0.1:{publish_port}/publish/")),
                batch_url: None,
                headers: String::new(),
                body: BodyFormat::Pushpin,
                id_order: false,
                connect_concurrency: PUSHPIN_CONNECT_CONCURRENCY,
            },
        })
    }

    fn start(&mut self, server: Server) -> anyhow::Result<Running> {
        let port = self.take_port()?;
        self.starts += 1;
        let base = format!("http://127.0.0.1:{port}");
        let listen = format!("127.0.0.1:{port}");
        let running = match server {
            Server::HeraldMemory | Server::HeraldSqlite => {
                let mut command = Command::new(&self.args.herald);
                command.args(["serve", "--listen", &listen, "--jwt-secret", JWT_SECRET, "--log", "warn"]);
                command.args(["--max-connections", &MAX_CONNECTIONS.to_string()]);
                command.args(["--max-streams-per-ip", &MAX_CONNECTIONS.to_string()]);
                if server == Server::HeraldMemory {
                    command.arg("--memory");
                } else {
                    let dir = self.work_dir.join(format!("sqlite-{}", self.starts));
                    command.arg("--data-dir").arg(dir);
                }
                command.current_dir(&self.work_dir).stdin(Stdio::null()).stdout(Stdio::null());
                let child = command.spawn().with_context(|| format!("cannot start {}", self.args.herald.display()))?;
                let topic = format!("{base}/topics/bench/events");
                Running {
                    children: vec![child],
                    endpoints: Endpoints {
                        server,
                        sub_url: topic.clone(),
                        pub_url: Some(topic),
                        batch_url: Some(format!("{base}/publish")),
                        headers: format!("Authorization: Bearer {}\r\n", self.token),
                        body: BodyFormat::Json,
                        id_order: true,
                        connect_concurrency: CONNECT_CONCURRENCY,
                    },
                }
            }
            Server::Nchan => {
                let template = self.nchan_template.as_ref().context("no nchan.conf template")?;
                let prefix = self.work_dir.join(format!("nginx-{}", self.starts));
                std::fs::create_dir_all(prefix.join("logs"))?;
                let conf = prefix.join("nginx.conf");
                let text = template
                    .replace("__PREFIX__", &prefix.display().to_string())
                    .replace("__PORT__", &port.to_string());
                std::fs::write(&conf, text)?;
                let child = Command::new(&self.args.nginx)
                    .arg("-p")
                    .arg(&prefix)
                    .arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .spawn()
                    .with_context(|| format!("cannot start {}", self.args.nginx.display()))?;
                Running {
                    children: vec![child],
                    endpoints: Endpoints {
                        server,
                        sub_url: format!("{base}/sub/bench"),
                        pub_url: Some(format!("{base}/pub?id=bench")),
                        batch_url: None,
                        headers: String::new(),
                        body: BodyFormat::Text,
                        id_order: false,
                        connect_concurrency: CONNECT_CONCURRENCY,
                    },
                }
            }
            Server::Pushpin => self.start_pushpin(port)?,
        };
        let mut running = running;
        let addr: SocketAddr = listen.parse()?;
        let publish_addr = UrlTemplate::parse(running.endpoints.pub_url.as_deref().unwrap_or(&base))?.addr();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = running.children.iter_mut().find_map(|c| c.try_wait().ok().flatten()) {
                running.stop();
                bail!("{} exited at start: {status}", server.name());
            }
            if ready(addr, publish_addr, server) {
                // Let nginx's workers finish starting too.
                std::thread::sleep(Duration::from_millis(300));
                return Ok(running);
            }
            if Instant::now() > deadline {
                running.stop();
                bail!("{} did not answer on {addr} within 20 s", server.name());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Pushpin's internal.conf with zurl's socket specs set to [`ZURL_SPECS`].
fn pushpin_internal_conf(text: &str) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    let mut found = [false; ZURL_SPECS.len()];
    for line in text.lines() {
        let key = line.split_once('=').map(|(k, _)| k.trim());
        match ZURL_SPECS.iter().position(|(name, _)| Some(*name) == key) {
            Some(i) => {
                found[i] = true;
                let _ = writeln!(out, "{}={}", ZURL_SPECS[i].0, ZURL_SPECS[i].1);
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if let Some(i) = found.iter().position(|f| !f) {
        bail!("no `{}=` line: not the internal.conf of Pushpin 1.x, whose zurl sockets this moves", ZURL_SPECS[i].0);
    }
    Ok(out)
}

/// Whether the server answers: `/healthz` for Herald, any answer for nginx,
/// and for Pushpin a held stream (its proxy, zurl, the origin and its
/// handler all up) and a publish port that takes connections.
fn ready(addr: SocketAddr, publish_addr: SocketAddr, server: Server) -> bool {
    match server {
        Server::HeraldMemory | Server::HeraldSqlite => status(addr, "/healthz").is_some_and(|s| s == *b"200"),
        Server::Nchan => status(addr, "/").is_some(),
        Server::Pushpin => {
            status(addr, "/sub/ready").is_some_and(|s| s == *b"200")
                && TcpStream::connect_timeout(&publish_addr, Duration::from_millis(200)).is_ok()
        }
    }
}

/// The status code of `GET path`, if an answer starts within a second.
fn status(addr: SocketAddr, path: &str) -> Option<[u8; 3]> {
    use std::io::{Read as _, Write as _};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut head = [0u8; 64];
    match stream.read(&mut head) {
        Ok(n) if n >= 12 => head[9..12].try_into().ok(),
        _ => None,
    }
}

/// Every run of the comparison.
#[derive(Debug, Serialize)]
struct Results {
    runs_per_scenario: usize,
    medians: Vec<MedianRow>,
    reports: Vec<RunRecord>,
}

#[derive(Debug, Serialize)]
struct RunRecord {
    scenario: Scenario,
    server: Server,
    run: usize,
    report: Report,
}

#[derive(Debug, Serialize)]
struct MedianRow {
    scenario: Scenario,
    metric: &'static str,
    higher_is_better: bool,
    medians: Vec<(Server, Option<f64>)>,
    failed_runs: Vec<(Server, usize)>,
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 { values[mid] } else { (values[mid - 1] + values[mid]) / 2.0 })
}

/// Runs the comparison; `Ok(true)` when every run was clean.
pub fn main(args: &CompareArgs) -> anyhow::Result<bool> {
    crate::raise_open_file_limit();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("herald-bench-compare-{}", std::process::id())),
    };
    std::fs::create_dir_all(&work_dir)?;
    let uses_herald = args.servers.iter().any(|s| s.is_herald());
    if uses_herald && !args.herald.exists() {
        bail!("{} not found: build it with `cargo build --release -p herald-server`", args.herald.display());
    }
    let token = if uses_herald { mint_token(&args.herald)? } else { String::new() };
    let nchan_template = if args.servers.contains(&Server::Nchan) {
        Some(
            std::fs::read_to_string(&args.nchan_conf)
                .with_context(|| format!("cannot read {}", args.nchan_conf.display()))?,
        )
    } else {
        None
    };
    let pushpin_templates = if args.servers.contains(&Server::Pushpin) {
        Some(PushpinTemplates {
            conf: std::fs::read_to_string(&args.pushpin_conf)
                .with_context(|| format!("cannot read {}", args.pushpin_conf.display()))?,
            internal: pushpin_internal_conf(&std::fs::read_to_string(&args.pushpin_internal_conf).with_context(
                || {
                    format!(
                        "cannot read {} (install Debian's `pushpin` package, or pass --pushpin-internal-conf)",
                        args.pushpin_internal_conf.display()
                    )
                },
            )?)
            .with_context(|| format!("in {}", args.pushpin_internal_conf.display()))?,
        })
    } else {
        None
    };
    let mut args = args.clone();
    args.herald = std::fs::canonicalize(&args.herald).unwrap_or(args.herald);
    let mut lab =
        Lab { args: args.clone(), work_dir, next_port: args.port, starts: 0, token, nchan_template, pushpin_templates };
    let mut records: Vec<RunRecord> = Vec::new();
    let outcome = run_all(&mut lab, &args, &mut records);
    if args.work_dir.is_none() {
        let _ = std::fs::remove_dir_all(&lab.work_dir);
    }
    outcome?;
    let all_ok = records.iter().all(|r| r.report.ok);
    let medians = medians(&args, &records);
    let table = markdown(&args, &medians);
    print!("{table}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &table)?;
    }
    if let Some(path) = &args.json {
        let results = Results { runs_per_scenario: args.runs, medians, reports: records };
        std::fs::write(path, serde_json::to_string_pretty(&results)? + "\n")?;
    }
    Ok(all_ok)
}

/// Every scenario, run after run, server after server; each server is
/// stopped before the next starts, whatever happened.
fn run_all(lab: &mut Lab, args: &CompareArgs, records: &mut Vec<RunRecord>) -> anyhow::Result<()> {
    for &scenario in &args.scenarios {
        for run in 0..args.runs {
            for &server in args.servers.iter().filter(|s| scenario.applies_to(**s)) {
                let running = lab.start(server)?;
                let label = format!("{} · {} · run {}", scenario.name(), server.name(), run + 1);
                let report = scenario
                    .config(&running.endpoints, running.pids(), label, args.progress)
                    .and_then(|config| run_blocking(config, args.threads));
                running.stop();
                let report = report?;
                eprintln!("{}", one_line(&report, scenario));
                records.push(RunRecord { scenario, server, run, report });
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Ok(())
}

fn one_line(report: &Report, scenario: Scenario) -> String {
    let figures: Vec<String> = scenario
        .metrics()
        .iter()
        .map(|m| format!("{} {}", m.name, (m.value)(report).map_or("-".into(), |v| format!("{v:.3}"))))
        .collect();
    let verdict = if report.ok { "ok".to_owned() } else { format!("FAILED: {}", report.errors.join("; ")) };
    format!("{}: {} · {verdict}", report.label, figures.join(" · "))
}

fn medians(args: &CompareArgs, records: &[RunRecord]) -> Vec<MedianRow> {
    let mut rows = Vec::new();
    for &scenario in &args.scenarios {
        for metric in scenario.metrics() {
            let mut medians = Vec::new();
            let mut failed_runs = Vec::new();
            for &server in &args.servers {
                let runs: Vec<&RunRecord> =
                    records.iter().filter(|r| r.scenario == scenario && r.server == server).collect();
                let failed = runs.iter().filter(|r| !r.report.ok).count();
                if failed > 0 {
                    failed_runs.push((server, failed));
                }
                let values = runs.iter().filter_map(|r| (metric.value)(&r.report)).collect();
                medians.push((server, if runs.is_empty() { None } else { median(values) }));
            }
            rows.push(MedianRow {
                scenario,
                metric: metric.name,
                higher_is_better: metric.higher_is_better,
                medians,
                failed_runs,
            });
        }
    }
    rows
}

fn figure(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(v) if v.abs() >= 1000.0 => format!("{v:.0}"),
        Some(v) if v.abs() >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.3}"),
    }
}

fn markdown(args: &CompareArgs, rows: &[MedianRow]) -> String {
    let heralds: Vec<Server> = args.servers.iter().copied().filter(|s| s.is_herald()).collect();
    let peers: Vec<Server> = args.servers.iter().copied().filter(|s| !s.is_herald()).collect();
    let ratios: Vec<(Server, Server)> =
        peers.iter().flat_map(|&peer| heralds.iter().map(move |&herald| (herald, peer))).collect();
    let mut out = String::from("| scenario | metric |");
    for s in &args.servers {
        let _ = write!(out, " {} |", s.name());
    }
    for (herald, peer) in &ratios {
        let _ = write!(out, " {}/{} |", herald.name().trim_start_matches("herald-"), peer.name());
    }
    out.push('\n');
    out.push_str(&"|---".repeat(2 + args.servers.len() + ratios.len()));
    out.push_str("|\n");
    let mut last = None;
    for row in rows {
        let first = last != Some(row.scenario);
        last = Some(row.scenario);
        let scenario =
            if first { format!("{} ({})", row.scenario.name(), row.scenario.describe()) } else { String::new() };
        let arrow = if row.higher_is_better { "↑" } else { "↓" };
        let _ = write!(out, "| {scenario} | {} {arrow} |", row.metric);
        let get = |s: Server| row.medians.iter().find(|(x, _)| *x == s).and_then(|(_, v)| *v);
        for &s in &args.servers {
            let failed =
                row.failed_runs.iter().find(|(x, _)| *x == s).map_or(String::new(), |(_, n)| format!(" ({n} failed)"));
            let _ = write!(out, " {}{failed} |", figure(get(s)));
        }
        for &(herald, peer) in &ratios {
            let ratio = match (get(herald), get(peer)) {
                (Some(h), Some(p)) if p != 0.0 => format!("{:.2}", h / p),
                _ => "—".into(),
            };
            let _ = write!(out, " {ratio} |");
        }
        out.push('\n');
    }
    let _ = writeln!(out, "\nMedian of {} run(s) per cell; ↑ higher is better, ↓ lower is better.", args.runs);
    if args.servers.contains(&Server::Pushpin) {
        let _ = writeln!(
            out,
            "Pushpin: one item per `POST /publish/` (a whole SSE frame on channel `bench`); its publish \
             port closes the connection after every answer, so each publish opens a connection. Its \
             streams are held for `herald-bench grip-origin`, whose CPU and memory count as Pushpin's, \
             and open {PUSHPIN_CONNECT_CONCURRENCY} at a time (others: {CONNECT_CONCURRENCY}): past 100 \
             at once its proxy answers some with 502."
        );
    }
    out
}

fn mint_token(herald: &Path) -> anyhow::Result<String> {
    let output = Command::new(herald)
        .args(["token", "--sub", "bench", "--publish", "*", "--subscribe", "*", "--ttl", "12h"])
        .args(["--jwt-secret", JWT_SECRET])
        .output()
        .with_context(|| format!("cannot run {} token", herald.display()))?;
    if !output.status.success() {
        bail!("herald token failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8(output.stdout)?.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn moves_zurls_sockets_into_the_run_directory() {
        let debian = "[proxy]\n# list of connect PUSH\nzurl_out_specs=ipc:///var/run/zurl/zurl-in\n\
                      zurl_out_stream_specs=ipc:///var/run/zurl/zurl-in-stream\n\
                      zurl_in_specs=ipc:///var/run/zurl/zurl-out\nhandler_accept_spec=ipc://{rundir}/{ipc_prefix}accept\n";
        let moved = pushpin_internal_conf(debian).unwrap();
        assert!(!moved.contains("/var/run/zurl"), "{moved}");
        assert!(moved.contains("zurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out\n"), "{moved}");
        assert!(moved.contains("# list of connect PUSH\n") && moved.contains("handler_accept_spec="), "{moved}");
        let error = pushpin_internal_conf("[proxy]\nzurl_out_specs=x\n").unwrap_err();
        assert!(error.to_string().contains("zurl_out_stream_specs"), "{error}");
    }

    #[test]
    fn ratios_against_each_peer() {
        let args = CompareArgs::try_parse_from(["compare", "--runs", "1", "--scenarios", "publish"]).unwrap();
        assert_eq!(args.servers.last(), Some(&Server::Pushpin), "Pushpin is compared by default");
        let medians = |memory, nchan, pushpin| MedianRow {
            scenario: Scenario::Publish,
            metric: "events/s",
            higher_is_better: true,
            medians: vec![
                (Server::HeraldMemory, Some(memory)),
                (Server::HeraldSqlite, None),
                (Server::Nchan, Some(nchan)),
                (Server::Pushpin, Some(pushpin)),
            ],
            failed_runs: vec![(Server::Pushpin, 1)],
        };
        let table = markdown(&args, &[medians(300.0, 100.0, 150.0)]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].ends_with("| memory/nchan | sqlite/nchan | memory/pushpin | sqlite/pushpin |"), "{table}");
        assert_eq!(lines[1].matches("|---").count(), 10, "{table}");
        assert!(lines[2].ends_with("| 300.0 | — | 100.0 | 150.0 (1 failed) | 3.00 | — | 2.00 | — |"), "{table}");
    }

    /// The arguments of `compare` alone, for tests.
    #[derive(Debug, clap::Parser)]
    struct CompareOnly {
        #[command(flatten)]
        args: CompareArgs,
    }

    impl CompareArgs {
        fn try_parse_from(argv: [&str; 5]) -> Result<Self, clap::Error> {
            <CompareOnly as clap::Parser>::try_parse_from(argv).map(|c| c.args)
        }
    }
}
