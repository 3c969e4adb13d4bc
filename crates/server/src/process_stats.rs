//! The standard `process_*` metrics, read from `/proc/self` at each render
//! (Linux only; elsewhere they are absent), named and computed as the
//! Prometheus client libraries do so that stock dashboards work.

use std::fmt::Write as _;

/// The kernel reports CPU times and start time in clock ticks of USER_HZ,
/// which is 100 on every Linux architecture (Prometheus' procfs assumes it too).
#[cfg(target_os = "linux")]
const TICKS_PER_SECOND: f64 = 100.0;

/// The process's figures now.
#[derive(Debug, Default)]
pub struct ProcessStats {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident memory, bytes.
    pub resident_bytes: Option<f64>,
    /// Open file descriptors.
    pub open_fds: Option<f64>,
    /// The open-file limit (soft).
    pub max_fds: Option<f64>,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: Option<f64>,
}

impl ProcessStats {
    /// Reads what the platform offers; a figure that cannot be read is `None`.
    pub fn read() -> Self {
        #[cfg(target_os = "linux")]
        {
            let stat = std::fs::read_to_string("/proc/self/stat").ok();
            // Fields after the command name, which is in parentheses and may hold spaces.
            let fields: Vec<&str> = stat
                .as_deref()
                .and_then(|s| s.rsplit_once(')'))
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            // Numbered as in proc(5): utime is field 14, the 12th after the name.
            let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
            let cpu_seconds = field(14).zip(field(15)).map(|(user, system)| (user + system) / TICKS_PER_SECOND);
            let boot_time = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
                s.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse::<f64>().ok())
            });
            let start_time_seconds = boot_time.zip(field(22)).map(|(boot, ticks)| boot + ticks / TICKS_PER_SECOND);
            let resident_bytes = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| {
                let kib = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().strip_suffix("kB")?.trim();
                kib.parse::<f64>().ok().map(|kib| kib * 1024.0)
            });
            let open_fds = std::fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count() as f64);
            let max_fds = rlimit::getrlimit(rlimit::Resource::NOFILE).ok().map(|(soft, _)| soft as f64);
            Self { cpu_seconds, resident_bytes, open_fds, max_fds, start_time_seconds }
        }
        #[cfg(not(target_os = "linux"))]
        Self::default()
    }
}

impl ProcessStats {
    /// The figures in the Prometheus text format, each with HELP and TYPE.
    pub fn exposition(&self) -> String {
        let series = [
            ("process_cpu_seconds_total", "counter", "User and system CPU time spent in seconds.", self.cpu_seconds),
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", self.resident_bytes),
            ("process_open_fds", "gauge", "Number of open file descriptors.", self.open_fds),
            ("process_max_fds", "gauge", "Maximum number of open file descriptors (the soft limit).", self.max_fds),
            (
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since the Unix epoch in seconds.",
                self.start_time_seconds,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in series {
            if let Some(value) = value {
                let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n");
            }
        }
        out
    }
}
