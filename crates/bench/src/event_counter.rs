//! What a subscriber does with the body of its stream, whatever carried it
//! (a dechunked HTTP/1.1 body, HTTP/2 DATA frames): parse SSE, check each
//! payload against the run, tally it, and add the new deliveries and their
//! latencies to the run's counters once per read, not once per event.

use std::sync::atomic::Ordering;

use crate::{
    payload,
    run::Shared,
    sse::SseParser,
    tally::{Tally, Verdict},
};

/// One stream's SSE parser and the deliveries of the current read.
#[derive(Debug, Default)]
pub struct EventCounter {
    parser: SseParser,
    /// New deliveries of the current read, not yet added to the run's count.
    fresh: u64,
    /// Their latencies (µs), recorded under one lock when the read is done.
    latencies: Vec<u64>,
    /// The subscriber's completion has been counted.
    reported_complete: bool,
}

impl EventCounter {
    /// Parses `body`, received at `now_us`, and tallies every event in it.
    pub fn feed(&mut self, body: &[u8], now_us: u64, nonce: u32, tally: &mut Tally) -> anyhow::Result<()> {
        let fresh = &mut self.fresh;
        let latencies = &mut self.latencies;
        self.parser.feed(body, &mut |event| match payload::parse(event.data) {
            Some(p) if p.nonce == nonce => {
                if tally.record(event.id, p.seq) == Verdict::New {
                    *fresh += 1;
                    latencies.push(now_us.saturating_sub(p.sent_us));
                }
            }
            _ => tally.record_foreign(event.event_type.is_some_and(|t| t.starts_with(b"herald."))),
        })
    }

    /// Adds what the read since the last call delivered to the run's
    /// counters, and counts the subscriber complete once it is.
    pub fn settle(&mut self, now_us: u64, tally: &Tally, shared: &Shared) {
        if self.fresh > 0 {
            shared.delivered.fetch_add(self.fresh, Ordering::Relaxed);
            shared.last_delivery_us.fetch_max(now_us, Ordering::Relaxed);
            let mut histogram = shared.delivery_latency.lock();
            for &micros in &self.latencies {
                histogram.saturating_record(micros.max(1));
            }
            drop(histogram);
            self.latencies.clear();
            self.fresh = 0;
        }
        if !self.reported_complete && tally.complete() {
            self.reported_complete = true;
            shared.completed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
