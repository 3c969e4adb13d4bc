//! `herald-bench`: a load generator for SSE pub/sub hubs (Herald, Nchan, Pushpin, any
//! server with an HTTP publish endpoint and an EventSource stream).
//!
//! - `herald-bench run`: N subscribers, M events at rate R over K publishing
//!   connections; every delivery is checked (a missing or duplicated event
//!   fails the run) and timed (publish → receive latency). Streams over
//!   plain HTTP/1.1, HTTPS/1.1 or HTTPS/2 (`--transport`).
//! - `herald-bench publish`: publishers only (acks/s), single events or
//!   JSON batches to `POST /publish`.
//! - `herald-bench compare`: Herald (memory and SQLite) against Nchan and
//!   Pushpin, A B C A B C, median of several runs per scenario.
//!
//! Loopback targets only; every run has a deadline.

mod compare;
mod connect;
mod event_counter;
mod grip_origin;
mod h1_stream;
mod h2_stream;
mod http;
mod idle_tls;
mod payload;
mod procstat;
mod publisher;
mod report;
mod run;
mod sse;
mod subscriber;
mod tally;
mod tls;
mod transport;
mod url;

use std::{net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::{
    report::Report,
    run::{BodyFormat, RunConfig},
    tls::TlsClient,
    transport::Transport,
    url::UrlTemplate,
};

/// Client `SO_RCVBUF` from this many subscribers up, so the kernel's buffers
/// are not what is measured.
const SMALL_RECV_BUFFER_FROM: usize = 10_000;
/// That buffer.
const SMALL_RECV_BUFFER: usize = 32 << 10;

/// Load generator and benchmark for Herald and other SSE hubs.
#[derive(Debug, Parser)]
#[command(name = "herald-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N subscribers, M events: fan-out throughput, latency, correctness.
    Run(Box<RunArgs>),
    /// Publishers only (no subscribers): publish acks/s, single or batch.
    Publish(Box<RunArgs>),
    /// Herald (memory, SQLite) against Nchan and Pushpin, scenario by scenario.
    Compare(Box<compare::CompareArgs>),
    /// Idle event streams over HTTPS (HTTP/1.1 or HTTP/2): server memory per stream.
    IdleTls(Box<idle_tls::IdleTlsArgs>),
    /// A GRIP origin for Pushpin: holds every `GET /…/CHANNEL` as a stream on CHANNEL (started by `compare`).
    #[command(hide = true)]
    GripOrigin {
        /// Loopback address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
}

/// Options of `run` and `publish`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// Subscribe URL; `{i}` becomes the subscriber's topic index (see --topics).
    #[arg(long, short = 'u', value_name = "URL")]
    url: Option<String>,
    /// What carries the streams: `plain` HTTP/1.1 (http:// URL), HTTPS `h1`
    /// (one connection a stream) or HTTPS `h2` (--streams-per-connection a
    /// connection) [default: from the URL's scheme: plain, or h1 for https://].
    #[arg(long, value_enum)]
    transport: Option<Transport>,
    /// Streams per HTTP/2 connection (as a browser's EventSources of one site share one).
    #[arg(long, default_value_t = 100)]
    streams_per_connection: usize,
    /// The authority that signed the server's certificate (PEM), for https:// URLs.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name to check the server's certificate against [default: the URL's host].
    #[arg(long)]
    server_name: Option<String>,
    /// Subscribers (N).
    #[arg(long, short = 'n', default_value_t = 100)]
    subscribers: usize,
    /// Events to publish (M).
    #[arg(long, short = 'm', default_value_t = 1000)]
    events: u64,
    /// Events per second over all publishers; 0 = as fast as answers come.
    #[arg(long, short = 'r', default_value_t = 0.0)]
    rate: f64,
    /// Concurrent keep-alive publishing connections (K).
    #[arg(long, short = 'k', default_value_t = 1)]
    publishers: usize,
    /// Publish URL; `{i}` becomes the event's topic index. With --batch, the batch URL (…/publish).
    #[arg(long, short = 'p', value_name = "URL")]
    publish_url: Option<String>,
    /// Topics: subscriber i takes topic i % T, event s goes to topic s % T
    /// [default: N when the subscribe URL has {i}, else 1].
    #[arg(long)]
    topics: Option<usize>,
    /// Extra request header for publishers and subscribers, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "HEADER")]
    headers: Vec<String>,
    /// Extra header for subscribers only.
    #[arg(long = "sub-header", value_name = "HEADER")]
    sub_headers: Vec<String>,
    /// Extra header for publishers only.
    #[arg(long = "pub-header", value_name = "HEADER")]
    pub_headers: Vec<String>,
    /// Bearer token for both sides (same as -H 'Authorization: Bearer TOKEN').
    #[arg(long, env = "HERALD_BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Single-event body: `json` ({"data": …}), `text` (raw text/plain), `form` (Mercure's topic=…&data=…)
    /// or `pushpin` (Pushpin's {"items": [one SSE frame on a channel]}).
    #[arg(long, value_enum, default_value_t = BodyFormat::Json)]
    body: BodyFormat,
    /// Payload size in bytes (the send time and sequence number are padded to it).
    #[arg(long, default_value_t = 100)]
    payload_size: usize,
    /// Publish JSON arrays of B events (`[{"topic", "data"}, …]`) to the publish URL.
    #[arg(long, default_value_t = 0, value_name = "B")]
    batch: usize,
    /// Topic of batch items, of `--body form` publishes and channel of `--body pushpin` ones; `{i}` becomes the topic index.
    #[arg(long, default_value = "bench")]
    batch_topic: String,
    /// Subscribers per local source address (127.0.0.1, .2, …) [default: half the ephemeral port range].
    #[arg(long)]
    subscribers_per_ip: Option<usize>,
    /// Subscriber SO_RCVBUF in bytes; 0 = the OS default [default: 32768 from 10,000 subscribers, else 0].
    #[arg(long)]
    recv_buffer: Option<usize>,
    /// Streams being opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Deadline of the whole run (e.g. 120s, 5m).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
    /// Wait this long for missing deliveries after the last publish answer.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,
    /// Pause after all subscribers connected, before the memory sample and publishing.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    settle: Duration,
    /// Hold the subscribers open this long after connecting (idle runs).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    hold: Duration,
    /// Server process to sample for CPU and memory, children included (repeatable).
    #[arg(long = "server-pid", value_name = "PID")]
    server_pids: Vec<u32>,
    /// Require event ids to increase as byte strings (true of Herald's ids).
    #[arg(long)]
    id_order: bool,
    /// Runtime worker threads (1 = one single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Name of the run in the report.
    #[arg(long, default_value = "run")]
    label: String,
    /// Write the JSON report to FILE too.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// What to print on stdout.
    #[arg(long, value_enum, default_value_t = Output::Table)]
    output: Output,
    /// No progress lines on stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

/// Stdout format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// A human table.
    Table,
    /// The JSON report.
    Json,
}

/// Parses `120`, `120s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = text.find(|c: char| c.is_ascii_alphabetic()).map_or((text, "s"), |i| text.split_at(i));
    let value: f64 = number.trim().parse().map_err(|_| format!("`{text}` is not a duration like 30s, 500ms, 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m, h)")),
    };
    if !(0.0..=86_400.0).contains(&seconds) {
        return Err(format!("`{text}`: out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn header_lines(headers: &[String]) -> anyhow::Result<String> {
    let mut out = String::new();
    for header in headers {
        let Some((name, value)) = header.split_once(':') else { bail!("header `{header}` is not `Name: value`") };
        if name.trim().is_empty() || header.contains(['\r', '\n']) {
            bail!("header `{header}` is not `Name: value`");
        }
        out.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
    }
    Ok(out)
}

/// Ephemeral ports per source address, from the kernel's setting.
fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_ascii_whitespace().map(|p| p.parse::<usize>().ok());
            Some(parts.next()??.abs_diff(parts.next()??) + 1)
        })
        .unwrap_or(28_232)
}

impl RunArgs {
    /// The run configuration, validated.
    pub fn config(&self, publish_only: bool) -> anyhow::Result<RunConfig> {
        let sub_url = match (&self.url, publish_only) {
            (Some(url), false) => Some(UrlTemplate::parse(url)?),
            (None, false) if self.subscribers > 0 => bail!("--url is needed for subscribers (or use `publish`)"),
            _ => None,
        };
        let subscribers = if sub_url.is_some() { self.subscribers } else { 0 };
        let pub_url = self.publish_url.as_deref().map(UrlTemplate::parse).transpose()?;
        if pub_url.is_none() && (self.events > 0 && (publish_only || subscribers > 0)) {
            bail!("--publish-url is needed to publish events (or pass --events 0)");
        }
        if self.batch > 0 && self.batch_topic.is_empty() {
            bail!("--batch-topic is empty");
        }
        if !(self.rate >= 0.0 && self.rate.is_finite()) {
            bail!("--rate must be 0 or more");
        }
        let transport = match (self.transport, sub_url.as_ref().map(UrlTemplate::is_tls)) {
            (None, tls) => Transport::for_scheme(tls.unwrap_or(false)),
            (Some(transport), Some(tls)) if transport.is_tls() != tls => bail!(
                "--transport {} needs an {} subscribe URL",
                transport.name(),
                if transport.is_tls() { "https://" } else { "http://" }
            ),
            (Some(transport), _) => transport,
        };
        if self.streams_per_connection == 0 {
            bail!("--streams-per-connection must be at least 1");
        }
        let any_tls = sub_url.iter().chain(&pub_url).any(UrlTemplate::is_tls);
        let tls = match (&self.ca, any_tls) {
            (Some(ca), true) => Some(Arc::new(TlsClient::new(ca, self.server_name.as_deref())?)),
            (None, true) => bail!("https:// URLs need --ca, the authority that signed the server's certificate"),
            (_, false) => None,
        };
        let topics = match self.topics {
            Some(0) => bail!("--topics must be at least 1"),
            Some(t) => t,
            None if sub_url.as_ref().is_some_and(UrlTemplate::has_placeholder) => subscribers.max(1),
            None => 1,
        };
        let mut both = self.headers.clone();
        if let Some(token) = &self.token {
            both.push(format!("Authorization: Bearer {token}"));
        }
        let recv_buffer = match self.recv_buffer {
            Some(0) => None,
            Some(n) => Some(n),
            None => (subscribers >= SMALL_RECV_BUFFER_FROM).then_some(SMALL_RECV_BUFFER),
        };
        Ok(RunConfig {
            label: self.label.clone(),
            sub_url,
            transport,
            streams_per_connection: self.streams_per_connection,
            tls,
            subscribers,
            topics,
            pub_url,
            events: self.events,
            rate: self.rate,
            publishers: self.publishers.max(1),
            batch: self.batch,
            batch_topic: self.batch_topic.clone(),
            body: self.body,
            payload_size: self.payload_size,
            sub_headers: header_lines(&[both.clone(), self.sub_headers.clone()].concat())?,
            pub_headers: header_lines(&[both, self.pub_headers.clone()].concat())?,
            subscribers_per_ip: self.subscribers_per_ip.unwrap_or(ephemeral_ports() / 2),
            recv_buffer,
            connect_concurrency: self.connect_concurrency,
            timeout: self.timeout,
            drain_timeout: self.drain_timeout,
            settle: self.settle,
            hold: self.hold,
            server_pids: self.server_pids.clone(),
            id_order: self.id_order,
            progress: !self.quiet,
        })
    }
}

/// Raises the open-file soft limit to the hard limit; the new limit.
pub fn raise_open_file_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// Runs `config` on a fresh runtime of `threads` workers.
pub fn run_blocking(config: RunConfig, threads: usize) -> anyhow::Result<Report> {
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    let report = runtime.block_on(run::execute(config));
    // Tasks are all joined; nothing is left to wait for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(report)
}

fn run_command(args: &RunArgs, publish_only: bool) -> anyhow::Result<bool> {
    let config = args.config(publish_only)?;
    let limit = raise_open_file_limit();
    let needed = config.subscribers as u64 + config.publishers as u64 + 64;
    if needed > limit {
        bail!(
            "{} subscribers need about {needed} open files; the limit is {limit} (raise `ulimit -Hn`)",
            config.subscribers
        );
    }
    let report = run_blocking(config, args.threads)?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = &args.json {
        std::fs::write(path, format!("{json}\n")).with_context(|| format!("cannot write {}", path.display()))?;
    }
    match args.output {
        Output::Table => print!("{}", report.table()),
        Output::Json => println!("{json}"),
    }
    Ok(report.ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run_command(args, false),
        Command::Publish(args) => run_command(args, true),
        Command::Compare(args) => compare::main(args),
        Command::GripOrigin { listen } => grip_origin::serve(*listen).map(|()| true),
        Command::IdleTls(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|runtime| runtime.block_on(idle_tls::run((**args).clone())))
            .map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("herald-bench: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("120").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("2 weeks").is_err());
    }

    #[test]
    fn checks_arguments() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["herald-bench", "run"];
            argv.extend_from_slice(extra);
            match Cli::parse_from(argv).command {
                Command::Run(args) => args.config(false),
                _ => unreachable!(),
            }
        };
        assert!(args(&["-u", "http://10.1.1.1/x", "-p", "http://127.0.0.1/p"]).is_err());
        assert!(args(&["-u", "http://127.0.0.1/x"]).is_err(), "events need a publish URL");
        let config =
            args(&["-u", "http://127.0.0.1:1/t{i}", "-p", "http://127.0.0.1:1/t{i}", "-n", "7", "--token", "T"])
                .unwrap();
        assert_eq!(config.topics, 7);
        assert_eq!(config.sub_headers, "Authorization: Bearer T\r\n");
        assert_eq!(config.transport, Transport::Plain);
    }

    #[test]
    fn the_transport_agrees_with_the_scheme() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["herald-bench", "run", "-m", "0"];
            argv.extend_from_slice(extra);
            match Cli::parse_from(argv).command {
                Command::Run(args) => args.config(false).map(|c| c.transport).map_err(|e| e.to_string()),
                _ => unreachable!(),
            }
        };
        let https = "https://localhost:1/t";
        let error = args(&["-u", https, "--transport", "plain"]).unwrap_err();
        assert!(error.contains("needs an http:// subscribe URL"), "{error}");
        let error = args(&["-u", "http://127.0.0.1:1/t", "--transport", "h2"]).unwrap_err();
        assert!(error.contains("needs an https:// subscribe URL"), "{error}");
        let error = args(&["-u", https, "--transport", "h2"]).unwrap_err();
        assert!(error.contains("need --ca"), "{error}");
        assert_eq!(args(&["-u", "http://127.0.0.1:1/t"]), Ok(Transport::Plain));
        let error = args(&["-u", https, "--transport", "h2", "--streams-per-connection", "0"]).unwrap_err();
        assert!(error.contains("at least 1"), "{error}");
    }
}
