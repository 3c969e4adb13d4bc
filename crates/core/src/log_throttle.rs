//! Logging a failure that repeats without flooding the log: the first
//! occurrence is logged, then at most one line per interval, saying how many
//! occurrences went unlogged since the line before. Metrics count every
//! occurrence; the log only says that it goes on.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// The shortest time between two log lines about one repeated failure.
pub const LOG_REPEAT_INTERVAL: Duration = Duration::from_secs(10);

/// One kind of repeated failure's log allowance. `const`, so that each call
/// site can keep its own in a `static`.
#[derive(Debug)]
pub struct LogThrottle {
    interval_ms: u64,
    /// When the next line may be written, in ms since the first use of any
    /// throttle in this process.
    next_ms: AtomicU64,
    /// Occurrences not logged since the last line.
    unlogged: AtomicU64,
}

impl LogThrottle {
    /// A throttle allowing one line per `interval`.
    pub const fn new(interval: Duration) -> Self {
        let ms = interval.as_millis();
        let interval_ms = if ms > u64::MAX as u128 { u64::MAX } else { ms as u64 };
        Self { interval_ms, next_ms: AtomicU64::new(0), unlogged: AtomicU64::new(0) }
    }

    /// Records one occurrence. `Some(n)` when it should be logged, `n` being
    /// the occurrences left unlogged since the last line; `None` to stay quiet.
    pub fn admit(&self) -> Option<u64> {
        let now = elapsed_ms();
        let next = self.next_ms.load(Ordering::Relaxed);
        let due = now >= next
            && self
                .next_ms
                .compare_exchange(next, now.saturating_add(self.interval_ms), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if due {
            Some(self.unlogged.swap(0, Ordering::Relaxed))
        } else {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn elapsed_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    u64::try_from(START.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_occurrence_is_logged_and_the_rest_of_the_interval_counted() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.admit(), Some(0));
        for _ in 0..99 {
            assert_eq!(throttle.admit(), None);
        }
        assert_eq!(throttle.unlogged.load(Ordering::Relaxed), 99);
    }

    #[test]
    fn a_line_is_due_again_after_the_interval_and_says_how_many_went_unlogged() {
        let throttle = LogThrottle::new(Duration::ZERO);
        assert_eq!(throttle.admit(), Some(0));
        throttle.unlogged.store(7, Ordering::Relaxed);
        assert_eq!(throttle.admit(), Some(7));
        assert_eq!(throttle.admit(), Some(0));
    }
}
