//! CPU time and memory of a process (and its children) from `/proc`.

use std::path::Path;

use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A sample of a group of processes.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct ProcSample {
    /// User plus system CPU seconds consumed so far.
    pub cpu_seconds: f64,
    /// Resident memory now (`VmRSS`), bytes.
    pub rss_bytes: u64,
    /// Peak resident memory (`VmHWM`), bytes, summed over the processes.
    pub peak_rss_bytes: u64,
    /// Proportional set size (`Pss` of `smaps_rollup`), bytes: shared pages
    /// (nginx's shared memory zone, mapped by every worker) counted once.
    pub pss_bytes: u64,
    /// How many processes were sampled.
    pub processes: usize,
}

/// `pids` and, recursively, their children.
pub fn with_children(pids: &[u32]) -> Vec<u32> {
    let mut all: Vec<u32> = pids.to_vec();
    let Ok(entries) = std::fs::read_dir("/proc") else { return all };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| Some((pid, stat_fields(pid)?.1)))
        .collect();
    let mut i = 0;
    while i < all.len() {
        let parent = all[i];
        for &(pid, ppid) in &parents {
            if ppid == parent && !all.contains(&pid) {
                all.push(pid);
            }
        }
        i += 1;
    }
    all
}

/// Samples `pids` (each one that still exists).
pub fn sample(pids: &[u32]) -> ProcSample {
    let mut total = ProcSample::default();
    for &pid in pids {
        let Some((ticks, _)) = stat_fields(pid) else { continue };
        total.cpu_seconds += ticks as f64 / TICKS_PER_SECOND;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        total.rss_bytes += status_kib(&status, "VmRSS:") * 1024;
        total.peak_rss_bytes += status_kib(&status, "VmHWM:") * 1024;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        total.pss_bytes += status_kib(&rollup, "Pss:") * 1024;
        total.processes += 1;
    }
    total
}

/// This process.
pub fn own() -> ProcSample {
    sample(&[std::process::id()])
}

/// (utime + stime in ticks, parent pid) from `/proc/PID/stat`.
fn stat_fields(pid: u32) -> Option<(u64, u32)> {
    let text = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat")).ok()?;
    // The command name is in parentheses and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the name: state(0) ppid(1) … utime(11) stime(12).
    let ppid = fields.get(1)?.parse().ok()?;
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime, ppid))
}

fn status_kib(status: &str, key: &str) -> u64 {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let s = own();
        assert_eq!(s.processes, 1);
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes / 2);
        assert!(with_children(&[std::process::id()]).contains(&std::process::id()));
    }
}
