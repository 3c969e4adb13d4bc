//! The events one step hands a reader: shared with the other readers, not
//! copied for each.
//!
//! Under fan-out every reader of a topic takes the same events, a thousand
//! times over. A copy of an event bumps the reference counts of its frame
//! and topic, atomic writes to memory every core shares, and dropping it
//! writes them again. So the ring and the catch-up pages keep their events
//! in [`Block`]s, and a step hands out ranges of blocks: one reference count
//! per block, whatever the number of events in it.

use std::{
    fmt,
    sync::{Arc, OnceLock},
};

use crate::Event;

/// A fixed run of slots, each filled once, in order, and never changed:
/// readers hold ranges of the filled part while its owner fills the rest.
pub(crate) struct Block {
    slots: Box<[OnceLock<Event>]>,
}

impl Block {
    /// An empty block of `capacity` slots.
    pub(crate) fn with_capacity(capacity: usize) -> Arc<Self> {
        Arc::new(Self { slots: (0..capacity.max(1)).map(|_| OnceLock::new()).collect() })
    }

    /// How many events the block holds when full.
    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Fills slot `index`; false if it is out of range or already filled.
    pub(crate) fn fill(&self, index: usize, event: Event) -> bool {
        self.slots.get(index).is_some_and(|slot| slot.set(event).is_ok())
    }

    /// The event in slot `index`, if it is filled.
    pub(crate) fn get(&self, index: usize) -> Option<&Event> {
        self.slots.get(index)?.get()
    }
}

impl fmt::Debug for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Block").field("capacity", &self.slots.len()).finish_non_exhaustive()
    }
}

/// Slots `start..end` of a block, all filled.
#[derive(Debug, Clone)]
struct Run {
    block: Arc<Block>,
    start: usize,
    end: usize,
}

impl Run {
    fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        (self.start..self.end).filter_map(|index| self.block.get(index))
    }

    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Events in id order, held in shared blocks. Cloning is cheap.
#[derive(Debug, Clone, Default)]
pub struct Events {
    runs: Vec<Run>,
    len: usize,
}

impl Events {
    /// How many events.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The events, in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Event> {
        self.runs.iter().flat_map(Run::iter)
    }

    /// The event at `index`.
    pub fn get(&self, mut index: usize) -> Option<&Event> {
        for run in &self.runs {
            if index < run.len() {
                return run.block.get(run.start + index);
            }
            index -= run.len();
        }
        None
    }

    /// The last event.
    pub fn last(&self) -> Option<&Event> {
        self.runs.last()?.iter().next_back()
    }

    /// Appends slots `start..end` of `block`, which must all be filled.
    pub(crate) fn push_run(&mut self, block: &Arc<Block>, start: usize, end: usize) {
        if start < end {
            self.runs.push(Run { block: Arc::clone(block), start, end });
            self.len += end - start;
        }
    }

    /// Keeps the first `len` events.
    pub fn truncate(&mut self, len: usize) {
        let mut kept = 0;
        self.runs.retain_mut(|run| {
            if kept >= len {
                return false;
            }
            run.end = run.start + run.len().min(len - kept);
            kept += run.len();
            true
        });
        self.len = kept;
    }

    /// Events `start..end` (by position), sharing the blocks.
    pub(crate) fn slice(&self, start: usize, end: usize) -> Self {
        let mut out = Self::default();
        let mut offset = 0;
        for run in &self.runs {
            let (from, to) = (start.max(offset), end.min(offset + run.len()));
            if from < to {
                out.push_run(&run.block, run.start + from - offset, run.start + to - offset);
            }
            offset += run.len();
        }
        out
    }

    /// The position of the first event for which `before` is false, when it
    /// holds for a prefix (as for "sequence at most n").
    pub(crate) fn partition_point(&self, before: impl Fn(&Event) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid).is_some_and(&before) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Keeps the events `admit` accepts (copies them into a new block).
    pub fn retain(&mut self, admit: impl Fn(&Event) -> bool) {
        if self.iter().all(&admit) {
            return;
        }
        *self = self.iter().filter(|event| admit(event)).cloned().collect::<Vec<_>>().into();
    }

    /// Puts runs from several topics in id order (copies them into a new
    /// block when they interleave).
    pub(crate) fn sort_by_seq(&mut self) {
        let mut previous = None;
        let ordered = self.runs.iter().all(|run| {
            let (first, last) = (run.iter().next().map(|e| e.id.seq), run.iter().next_back().map(|e| e.id.seq));
            let after_previous = previous.is_none_or(|p| first.is_none_or(|f| f > p));
            previous = last.or(previous);
            after_previous
        });
        if !ordered {
            let mut events: Vec<Event> = self.iter().cloned().collect();
            events.sort_unstable_by_key(|e| e.id.seq);
            *self = events.into();
        }
    }
}

impl From<Vec<Event>> for Events {
    /// Moves `events` (in id order) into one block of their own.
    fn from(events: Vec<Event>) -> Self {
        let mut out = Self::default();
        if events.is_empty() {
            return out;
        }
        let len = events.len();
        let block = Block::with_capacity(len);
        for (index, event) in events.into_iter().enumerate() {
            block.fill(index, event);
        }
        out.push_run(&block, 0, len);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Epoch, EventDraft, EventId, TopicName};

    fn ev(seq: u64) -> Event {
        let topic = TopicName::new("t").unwrap();
        Event::new(EventId::new(Epoch(1), seq), &EventDraft::new(topic, "x"), seq)
    }

    fn seqs(events: &Events) -> Vec<u64> {
        events.iter().map(|e| e.id.seq).collect()
    }

    fn block(seqs: &[u64]) -> Arc<Block> {
        let block = Block::with_capacity(seqs.len() + 2);
        for (i, seq) in seqs.iter().enumerate() {
            assert!(block.fill(i, ev(*seq)));
        }
        block
    }

    #[test]
    fn runs_read_as_one_sequence() {
        let (a, b) = (block(&[1, 2, 3]), block(&[4, 5]));
        assert!(!a.fill(0, ev(9)), "a slot is filled once");
        assert!(!a.fill(99, ev(9)), "out of range");
        let mut events = Events::default();
        events.push_run(&a, 1, 3);
        events.push_run(&b, 0, 2);
        events.push_run(&b, 1, 1);
        assert_eq!((seqs(&events), events.len()), (vec![2, 3, 4, 5], 4));
        assert_eq!(events.get(2).map(|e| e.id.seq), Some(4));
        assert_eq!(events.get(4).map(|e| e.id.seq), None);
        assert_eq!(events.last().map(|e| e.id.seq), Some(5));
        assert_eq!(events.partition_point(|e| e.id.seq <= 3), 2);
        assert_eq!(seqs(&events.slice(1, 3)), [3, 4]);
        assert_eq!(seqs(&events.slice(3, 9)), [5]);
        events.truncate(3);
        assert_eq!((seqs(&events), events.len()), (vec![2, 3, 4], 3));
        events.truncate(0);
        assert!(events.is_empty() && events.iter().next().is_none());
    }

    #[test]
    fn retain_and_sort_copy_only_when_they_must() {
        let (a, b) = (block(&[1, 4]), block(&[2, 3]));
        let mut events = Events::default();
        events.push_run(&a, 0, 2);
        events.push_run(&b, 0, 2);
        events.sort_by_seq();
        assert_eq!(seqs(&events), [1, 2, 3, 4]);
        events.retain(|e| e.id.seq % 2 == 0);
        assert_eq!((seqs(&events), events.len()), (vec![2, 4], 2));
        let mut ordered = Events::default();
        ordered.push_run(&block(&[7, 8]), 0, 2);
        ordered.push_run(&block(&[9]), 0, 1);
        ordered.sort_by_seq();
        assert_eq!(ordered.runs.len(), 2, "already in order: nothing copied");
        assert_eq!(seqs(&ordered), [7, 8, 9]);
    }
}
