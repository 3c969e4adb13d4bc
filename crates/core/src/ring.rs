//! A topic's recent events, bounded by count and by bytes.
//!
//! The ring is a cache in front of the [`EventStore`](crate::EventStore): it
//! holds every event of its topic with a sequence number above `floor`, and
//! nothing else. Eviction raises `floor`; a reader whose cursor is below it
//! must go to the store. Appends are O(1); lookups are a binary search.

use std::{collections::VecDeque, sync::Arc};

use crate::{
    Event,
    events::{Block, Events},
};

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

/// A block of the ring, with how much of it is filled.
#[derive(Debug)]
struct Held {
    block: Arc<Block>,
    filled: usize,
    /// Frame bytes in it.
    bytes: usize,
}

/// The fewest and most slots of one block of the ring.
const MIN_BLOCK: usize = 4;
const MAX_BLOCK: usize = 64;

/// A bounded, ordered run of one topic's newest events, kept in shared
/// blocks that readers take ranges of ([`Events`]). A block goes when its
/// last event is evicted, so the ring may keep up to one block's worth past
/// its bounds: a block is closed at [`MAX_BLOCK`] events or an eighth of the
/// byte bound, whichever comes first.
#[derive(Debug)]
pub struct RingBuffer {
    blocks: VecDeque<Held>,
    /// Slots of the front block already evicted.
    front_evicted: usize,
    len: usize,
    bytes: usize,
    floor: u64,
    limits: RingLimits,
}

impl RingBuffer {
    /// An empty ring that holds every event after sequence `floor` (those
    /// up to `floor`, if any, live only in the store).
    pub fn new(limits: RingLimits, floor: u64) -> Self {
        Self { blocks: VecDeque::new(), front_evicted: 0, len: 0, bytes: 0, floor, limits }
    }

    /// Appends `event`, whose sequence must exceed every one held, and
    /// evicts the oldest events past the bounds.
    pub fn push(&mut self, event: Event) {
        debug_assert!(self.last().is_none_or(|last| last.id.seq < event.id.seq));
        let size = event.size();
        let max_block_bytes = self.limits.max_bytes / 8;
        if self.blocks.back().is_none_or(|back| back.filled >= back.block.capacity() || back.bytes >= max_block_bytes) {
            // Small for a quiet topic, up to MAX_BLOCK for a busy one.
            let capacity = (self.len + 1).next_power_of_two().clamp(MIN_BLOCK, MAX_BLOCK);
            self.blocks.push_back(Held { block: Block::with_capacity(capacity), filled: 0, bytes: 0 });
        }
        if let Some(back) = self.blocks.back_mut()
            && back.block.fill(back.filled, event)
        {
            back.filled += 1;
            back.bytes += size;
            self.len += 1;
            self.bytes += size;
        }
        while self.len > self.limits.max_events.max(1) || (self.bytes > self.limits.max_bytes && self.len > 1) {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        let Some(front) = self.blocks.front() else { return };
        if let Some(old) = front.block.get(self.front_evicted) {
            self.bytes -= old.size();
            self.floor = old.id.seq;
            self.len -= 1;
        }
        self.front_evicted += 1;
        if self.front_evicted >= front.filled {
            // Every event of the block is evicted; readers may still hold it.
            self.blocks.pop_front();
            self.front_evicted = 0;
        }
    }

    /// The filled slots of block `index`.
    fn filled(&self, index: usize) -> std::ops::Range<usize> {
        let start = if index == 0 { self.front_evicted } else { 0 };
        start..self.blocks[index].filled
    }

    /// Appends to `out` the events with `after < seq <= upto`, if the ring
    /// reaches back to `after`.
    pub fn since(&self, after: u64, upto: u64, out: &mut Events) -> Since {
        if after < self.floor {
            return Since::Behind { floor: self.floor };
        }
        let seq_at = |index: usize, slot: usize| self.blocks[index].block.get(slot).map_or(u64::MAX, |e| e.id.seq);
        // The last block whose first event is at most `after`: the first
        // event past it is there or in the next block.
        let from =
            partition(0, self.blocks.len(), |index| seq_at(index, self.filled(index).start) <= after).saturating_sub(1);
        for index in from..self.blocks.len() {
            let filled = self.filled(index);
            let start = partition(filled.start, filled.end, |slot| seq_at(index, slot) <= after);
            let end = partition(start, filled.end, |slot| seq_at(index, slot) <= upto);
            out.push_run(&self.blocks[index].block, start, end);
            if end < filled.end {
                break;
            }
        }
        Since::Covered
    }

    /// Drops every event: the ring holds only events after `floor` from now.
    pub fn restart(&mut self, floor: u64) {
        self.blocks.clear();
        self.front_evicted = 0;
        self.len = 0;
        self.bytes = 0;
        self.floor = floor;
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the ring holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Frame bytes held now.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The newest event held.
    pub fn last(&self) -> Option<&Event> {
        let back = self.blocks.back()?;
        back.block.get(back.filled.checked_sub(1)?)
    }
}

/// The first position in `lo..hi` where `before` is false; it must hold
/// for a prefix of the range and not after.
fn partition(mut lo: usize, mut hi: usize, before: impl Fn(usize) -> bool) -> usize {
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, EventDraft, EventId, TopicName};

    fn ev(seq: u64, data: &str) -> Event {
        let topic = TopicName::new("t").unwrap();
        Event::new(EventId::new(Epoch(1), seq), &EventDraft::new(topic, data), seq)
    }

    fn seqs(out: &Events) -> Vec<u64> {
        out.iter().map(|e| e.id.seq).collect()
    }

    fn since(ring: &RingBuffer, after: u64, upto: u64) -> Option<Vec<u64>> {
        let mut out = Events::default();
        (ring.since(after, upto, &mut out) == Since::Covered).then(|| seqs(&out))
    }

    #[test]
    fn since_returns_the_tail_or_says_it_is_behind() {
        let mut ring = RingBuffer::new(RingLimits { max_events: 3, max_bytes: 1 << 20 }, 0);
        for seq in [2, 5, 7, 9] {
            ring.push(ev(seq, "x"));
        }
        assert_eq!(ring.since(1, 100, &mut Events::default()), Since::Behind { floor: 2 });
        assert_eq!(since(&ring, 2, 100).unwrap(), [5, 7, 9]);
        assert_eq!(since(&ring, 6, 7).unwrap(), [7]);
        assert_eq!(since(&ring, 9, 100).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn blocks_are_read_across_and_go_once_evicted() {
        let mut ring = RingBuffer::new(RingLimits { max_events: 300, max_bytes: 1 << 20 }, 0);
        let mut held = Events::default();
        for seq in 1..=1000 {
            ring.push(ev(seq * 2, "x"));
            if seq == 10 {
                assert_eq!(ring.since(0, 20, &mut held), Since::Covered);
            }
        }
        assert_eq!((ring.len(), ring.last().unwrap().id.seq), (300, 2000));
        assert!(ring.blocks.len() <= 300 / MAX_BLOCK + 2, "{} blocks", ring.blocks.len());
        assert_eq!(ring.since(1399, 2000, &mut Events::default()), Since::Behind { floor: 1400 });
        for after in [1400, 1401, 1500, 1663, 1664, 1999] {
            let expected: Vec<u64> = (after + 1..=1900).filter(|s| s % 2 == 0).collect();
            assert_eq!(since(&ring, after, 1900).unwrap(), expected, "after {after}");
        }
        assert_eq!(seqs(&held), (1..=10).map(|s| s * 2).collect::<Vec<_>>(), "a reader keeps what it took");
        ring.restart(5000);
        assert!(ring.is_empty() && ring.last().is_none());
        assert_eq!(since(&ring, 5000, 6000).unwrap(), Vec::<u64>::new());
    }

    #[test]
    fn a_block_closes_at_an_eighth_of_the_byte_bound() {
        let mut ring = RingBuffer::new(RingLimits { max_events: 1000, max_bytes: 8 * 1024 }, 0);
        for seq in 1..=200 {
            ring.push(ev(seq, &"z".repeat(100)));
        }
        assert!(ring.bytes() <= 8 * 1024);
        let held: usize = ring.blocks.iter().map(|held| held.bytes).sum();
        assert!(held <= 8 * 1024 + 1024 + 200, "blocks keep at most an eighth more: {held}");
        let tail = since(&ring, 150, 200).unwrap();
        assert_eq!(tail, (151..=200).collect::<Vec<_>>());
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
