//! `herald-bench compare`: Herald (memory store, SQLite store) against Nchan
//! on the same loopback, scenario by scenario.
//!
//! Each run starts a fresh server, runs one scenario against it and stops
//! it; servers alternate (A B C A B C …) so that drift of a shared machine
//! spreads over all of them; each figure is the median of the runs. Only
//! processes this command started are ever signalled, by their pid.

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpStream},
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
    url::UrlTemplate,
};

/// The signing secret of the Herald servers started here (bench only).
const JWT_SECRET: &str = "herald-bench-secret-at-least-32-bytes-long";
/// Connection bounds given to Herald so that the idle scenario fits (within
/// the 20,000 open files a process may have here).
const MAX_CONNECTIONS: usize = 19_000;

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
    /// Servers, in the order they alternate.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "herald-memory,herald-sqlite,nchan")]
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
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::HeraldMemory => "herald-memory",
            Self::HeraldSqlite => "herald-sqlite",
            Self::Nchan => "nchan",
        }
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
        !(self == Self::Batch && server == Server::Nchan)
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
        server_pid: u32,
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
            connect_concurrency: 256,
            timeout: Duration::from_secs(120),
            drain_timeout: Duration::from_secs(30),
            settle: if self == Self::Idle { Duration::from_secs(3) } else { Duration::from_millis(200) },
            hold: Duration::ZERO,
            server_pids: vec![server_pid],
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
}

/// A server process this command started.
struct Running {
    child: Child,
    endpoints: Endpoints,
}

impl Running {
    /// Stops the server: SIGTERM to the process we started, then SIGKILL to
    /// it and to its children (nginx workers) if it lingers.
    fn stop(mut self) {
        let pid = self.child.id();
        let family = procstat::with_children(&[pid]);
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("compare: pid {pid} did not stop within 15 s; killing it");
        for other in family.iter().skip(1) {
            let _ = Command::new("kill").args(["-KILL", &other.to_string()]).stderr(Stdio::null()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Lab {
    args: CompareArgs,
    work_dir: PathBuf,
    next_port: u16,
    starts: usize,
    token: String,
    nchan_template: Option<String>,
}

impl Lab {
    fn start(&mut self, server: Server) -> anyhow::Result<Running> {
        let port = self.next_port;
        self.next_port = self.next_port.checked_add(1).context("out of ports")?;
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
                    child,
                    endpoints: Endpoints {
                        server,
                        sub_url: topic.clone(),
                        pub_url: Some(topic),
                        batch_url: Some(format!("{base}/publish")),
                        headers: format!("Authorization: Bearer {}\r\n", self.token),
                        body: BodyFormat::Json,
                        id_order: true,
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
                    child,
                    endpoints: Endpoints {
                        server,
                        sub_url: format!("{base}/sub/bench"),
                        pub_url: Some(format!("{base}/pub?id=bench")),
                        batch_url: None,
                        headers: String::new(),
                        body: BodyFormat::Text,
                        id_order: false,
                    },
                }
            }
        };
        let mut running = running;
        let addr: SocketAddr = listen.parse()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = running.child.try_wait() {
                bail!("{} exited at start: {status}", server.name());
            }
            if ready(addr, server) {
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

/// Whether the server answers: `/healthz` for Herald, any answer for nginx.
fn ready(addr: SocketAddr, server: Server) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let path = if server == Server::Nchan { "/" } else { "/healthz" };
    if stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).is_err()
    {
        return false;
    }
    let mut head = [0u8; 64];
    match stream.read(&mut head) {
        Ok(n) if n >= 12 => server == Server::Nchan || &head[9..12] == b"200",
        _ => false,
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
    let uses_herald = args.servers.iter().any(|s| *s != Server::Nchan);
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
    let mut args = args.clone();
    args.herald = std::fs::canonicalize(&args.herald).unwrap_or(args.herald);
    let mut lab = Lab { args: args.clone(), work_dir, next_port: args.port, starts: 0, token, nchan_template };
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
                    .config(&running.endpoints, running.child.id(), label, args.progress)
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
    let heralds: Vec<Server> = args.servers.iter().copied().filter(|s| *s != Server::Nchan).collect();
    let with_nchan = args.servers.contains(&Server::Nchan);
    let mut out = String::from("| scenario | metric |");
    for s in &args.servers {
        let _ = write!(out, " {} |", s.name());
    }
    if with_nchan {
        for s in &heralds {
            let _ = write!(out, " {}/nchan |", s.name().trim_start_matches("herald-"));
        }
    }
    out.push('\n');
    out.push_str(&"|---".repeat(2 + args.servers.len() + if with_nchan { heralds.len() } else { 0 }));
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
        if with_nchan {
            for &s in &heralds {
                let ratio = match (get(s), get(Server::Nchan)) {
                    (Some(h), Some(n)) if n != 0.0 => format!("{:.2}", h / n),
                    _ => "—".into(),
                };
                let _ = write!(out, " {ratio} |");
            }
        }
        out.push('\n');
    }
    let _ = writeln!(out, "\nMedian of {} run(s) per cell; ↑ higher is better, ↓ lower is better.", args.runs);
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
}
