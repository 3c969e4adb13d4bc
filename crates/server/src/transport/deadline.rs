//! Deadlines from durations that come from input (a token's `exp`, settings),
//! saturating: no value can overflow `Instant` arithmetic and panic.

use std::time::Duration;

use tokio::time::Instant;

/// Longer than any process lives, and far from overflowing a monotonic clock:
/// a deadline this far off means "never".
pub const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 60 * 60);

/// `from + duration`, with `duration` capped at [`NEVER`].
pub fn after(from: Instant, duration: Duration) -> Instant {
    // `from + NEVER` fits every clock Rust supports; were it not to, an
    // immediate deadline fails closed rather than panicking.
    from.checked_add(bounded(duration)).unwrap_or(from)
}

/// `duration`, at most [`NEVER`]: for libraries that add it to an instant
/// without checking (hyper's HTTP/2 keep-alive does).
pub fn bounded(duration: Duration) -> Duration {
    duration.min(NEVER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_largest_durations_saturate() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + NEVER);
        assert_eq!(after(now, Duration::from_secs(5)), now + Duration::from_secs(5));
        assert_eq!(bounded(Duration::MAX), NEVER);
    }
}
