//! A topic's recent events, bounded by count and by bytes.
//!
//! The ring is a cache in front of the [`EventStore`](crate::EventStore): it
//! holds every event of its topic with a sequence number above `floor`, and
//! nothing else. Eviction raises `floor`; a reader whose cursor is below it
//! must go to the store. Appends are O(1); lookups are a binary search.

use std::collections::VecDeque;

use crate::Event;

/// Bounds of one topic's ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLimits {
    /// Most events kept. Default [`RingLimits::DEFAULT_EVENTS`].
    pub max_events: usize,
    /// Most frame bytes kept; the newest event is kept even if larger.
    /// Default [`RingLimits::DEFAULT_BYTES`].
    pub max_bytes: usize,
}

impl RingLimits {
    /// Default event count per topic.
    pub const DEFAULT_EVENTS: usize = 1024;
    /// Default frame bytes per topic (1 MiB).
    pub const DEFAULT_BYTES: usize = 1 << 20;
}

impl Default for RingLimits {
    fn default() -> Self {
        Self { max_events: Self::DEFAULT_EVENTS, max_bytes: Self::DEFAULT_BYTES }
    }
}

/// The answer to "what came after this position?".
#[derive(Debug, PartialEq, Eq)]
pub enum Since {
    /// The ring holds everything asked for; it was appended to the output.
    Covered,
    /// The ring no longer reaches back; events up to and including `floor`
    /// must come from the store.
    Behind {
        /// Highest sequence number that may be missing from the ring.
        floor: u64,
    },
}

/// A bounded, ordered run of one topic's newest events.
#[derive(Debug)]
pub struct RingBuffer {
    events: VecDeque<Event>,
    bytes: usize,
    floor: u64,
    limits: RingLimits,
}

impl RingBuffer {
    /// An empty ring that holds every event after sequence `floor` (those
    /// up to `floor`, if any, live only in the store).
    pub fn new(limits: RingLimits, floor: u64) -> Self {
        Self { events: VecDeque::new(), bytes: 0, floor, limits }
    }

    /// Appends `event`, whose sequence must exceed every one held, and
    /// evicts the oldest events past the bounds.
    pub fn push(&mut self, event: Event) {
        debug_assert!(self.events.back().is_none_or(|last| last.id.seq < event.id.seq));
        self.bytes += event.size();
        self.events.push_back(event);
        while self.events.len() > self.limits.max_events.max(1)
            || (self.bytes > self.limits.max_bytes && self.events.len() > 1)
        {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(old) = self.events.pop_front() {
            self.bytes -= old.size();
            self.floor = old.id.seq;
        }
    }

    /// Appends to `out` the events with `after < seq <= upto`, if the ring
    /// reaches back to `after`.
    pub fn since(&self, after: u64, upto: u64, out: &mut Vec<Event>) -> Since {
        if after < self.floor {
            return Since::Behind { floor: self.floor };
        }
        let start = self.events.partition_point(|e| e.id.seq <= after);
        out.extend(self.events.range(start..).take_while(|e| e.id.seq <= upto).cloned());
        Since::Covered
    }

    /// Drops every event: the ring holds only events after `floor` from now.
    pub fn restart(&mut self, floor: u64) {
        self.events.clear();
        self.bytes = 0;
        self.floor = floor;
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Frame bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The newest event held.
    pub fn last(&self) -> Option<&Event> {
        self.events.back()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, EventDraft, EventId, TopicName};

    fn ev(seq: u64, data: &str) -> Event {
        let topic = TopicName::new("t").unwrap();
        Event::new(EventId::new(Epoch(1), seq), &EventDraft::new(topic, data), seq)
    }

    fn seqs(out: &[Event]) -> Vec<u64> {
        out.iter().map(|e| e.id.seq).collect()
    }

    #[test]
    fn since_returns_the_tail_or_says_it_is_behind() {
        let mut ring = RingBuffer::new(RingLimits { max_events: 3, max_bytes: 1 << 20 }, 0);
        for seq in [2, 5, 7, 9] {
            ring.push(ev(seq, "x"));
        }
        let mut out = Vec::new();
        assert_eq!(ring.since(1, 100, &mut out), Since::Behind { floor: 2 });
        assert_eq!(ring.since(2, 100, &mut out), Since::Covered);
        assert_eq!(seqs(&out), [5, 7, 9]);
        out.clear();
        assert_eq!(ring.since(6, 7, &mut out), Since::Covered);
        assert_eq!(seqs(&out), [7]);
        out.clear();
        assert_eq!(ring.since(9, 100, &mut out), Since::Covered);
        assert!(out.is_empty());
    }

    #[test]
    fn bytes_bound_keeps_at_least_the_newest() {
        let mut ring = RingBuffer::new(RingLimits { max_events: 100, max_bytes: 40 }, 0);
        ring.push(ev(1, "0123456789"));
        ring.push(ev(2, "0123456789"));
        assert_eq!(ring.len(), 1);
        assert!(ring.bytes() <= 40 || ring.len() == 1);
        ring.push(ev(3, &"y".repeat(100)));
        assert_eq!((ring.len(), ring.last().unwrap().id.seq), (1, 3));
    }
}
