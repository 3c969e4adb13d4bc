//! Waits between attempts to reach Redis: doubling from 100 ms to 5 s, each
//! give or take a quarter, so nodes cut off together do not retry in step.

use std::time::Duration;

const FIRST: Duration = Duration::from_millis(100);
const LAST: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub(crate) struct Backoff {
    wait: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Self { wait: FIRST }
    }

    /// The wait before the next attempt; the one after is twice as long.
    pub(crate) fn next(&mut self) -> Duration {
        let wait = self.wait.mul_f64(0.75 + rand::random::<f64>() / 2.0);
        self.wait = (self.wait * 2).min(LAST);
        wait
    }

    /// An attempt succeeded: the next failure waits the least again.
    pub(crate) fn reset(&mut self) {
        self.wait = FIRST;
    }
}
