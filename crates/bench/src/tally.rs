//! What one subscriber received, checked event by event.
//!
//! Event `seq` of a run goes to topic `seq % topics`; a subscriber of topic
//! `k` must receive each of those events exactly once. A bitmap of the
//! expected events finds duplicates at once and missing events at the end,
//! whatever order concurrent publishers committed them in.

/// The verdict on one received event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Expected and seen for the first time.
    New,
    /// Seen before: a duplicate.
    Duplicate,
    /// Not an event this subscriber should get (another topic, out of range).
    Unexpected,
}

/// One subscriber's account.
#[derive(Debug, Clone)]
pub struct Tally {
    topic: u64,
    topics: u64,
    expected: u64,
    seen: Vec<u64>,
    /// Distinct expected events received.
    pub unique: u64,
    /// Events received more than once.
    pub duplicates: u64,
    /// Events that were not for this subscriber, or not this run's.
    pub unexpected: u64,
    /// Ids that repeated the previous one, or (with `id_order`) did not increase.
    pub id_errors: u64,
    /// Events of the hub's own (`herald.*` types, such as `herald.gap`).
    pub notices: u64,
    last_id: Vec<u8>,
    has_last_id: bool,
    id_order: bool,
}

impl Tally {
    /// The account of a subscriber of topic `topic` out of `topics`, when
    /// `events` events are published in all. With `id_order`, ids must
    /// increase as byte strings (Herald's do; Nchan's need not).
    pub fn new(topic: usize, topics: usize, events: u64, id_order: bool) -> Self {
        let topics = topics.max(1) as u64;
        let topic = topic as u64 % topics;
        let expected = if events > topic { (events - topic).div_ceil(topics) } else { 0 };
        Self {
            topic,
            topics,
            expected,
            seen: vec![0; usize::try_from(expected.div_ceil(64)).unwrap_or(0)],
            unique: 0,
            duplicates: 0,
            unexpected: 0,
            id_errors: 0,
            notices: 0,
            last_id: Vec::new(),
            has_last_id: false,
            id_order,
        }
    }

    /// Events this subscriber must receive.
    pub fn expected(&self) -> u64 {
        self.expected
    }

    /// Expected events not received (yet).
    pub fn missing(&self) -> u64 {
        self.expected - self.unique
    }

    /// Whether every expected event has arrived.
    pub fn complete(&self) -> bool {
        self.unique == self.expected
    }

    /// Records the event with sequence number `seq` and id `id`.
    pub fn record(&mut self, id: Option<&[u8]>, seq: u64) -> Verdict {
        if let Some(id) = id {
            if self.has_last_id && (id == self.last_id.as_slice() || self.id_order && id <= self.last_id.as_slice()) {
                self.id_errors += 1;
            }
            self.last_id.clear();
            self.last_id.extend_from_slice(id);
            self.has_last_id = true;
        } else if self.id_order {
            self.id_errors += 1;
        }
        if seq % self.topics != self.topic || seq / self.topics >= self.expected {
            self.unexpected += 1;
            return Verdict::Unexpected;
        }
        let index = seq / self.topics;
        let (word, bit) = ((index / 64) as usize, 1u64 << (index % 64));
        if self.seen[word] & bit != 0 {
            self.duplicates += 1;
            return Verdict::Duplicate;
        }
        self.seen[word] |= bit;
        self.unique += 1;
        Verdict::New
    }

    /// Records an event that is not one of this run's payloads.
    pub fn record_foreign(&mut self, hub_notice: bool) {
        if hub_notice {
            self.notices += 1;
        } else {
            self.unexpected += 1;
        }
    }

    /// Whether anything went wrong.
    pub fn has_errors(&self) -> bool {
        self.duplicates + self.unexpected + self.id_errors + self.notices > 0 || !self.complete()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_missing_and_duplicates() {
        let mut t = Tally::new(1, 3, 10, true); // seqs 1, 4, 7
        assert_eq!(t.expected(), 3);
        assert_eq!(t.record(Some(b"a-01"), 4), Verdict::New);
        assert_eq!(t.record(Some(b"a-02"), 1), Verdict::New);
        assert_eq!(t.record(Some(b"a-03"), 4), Verdict::Duplicate);
        assert_eq!(t.record(Some(b"a-04"), 2), Verdict::Unexpected);
        assert_eq!(t.record(Some(b"a-05"), 10), Verdict::Unexpected);
        assert!(!t.complete());
        assert_eq!(t.missing(), 1);
        assert!(t.has_errors());
        assert_eq!(t.id_errors, 0);
        t.record(Some(b"a-05"), 7);
        t.record(Some(b"a-00"), 7);
        assert_eq!(t.id_errors, 2);
        assert!(t.complete());
    }

    #[test]
    fn a_clean_run_has_no_errors() {
        let mut t = Tally::new(0, 1, 200, false);
        for seq in (0..200).rev() {
            assert_eq!(t.record(Some(seq.to_string().as_bytes()), seq), Verdict::New);
        }
        assert!(!t.has_errors());
        assert_eq!(Tally::new(5, 8, 3, false).expected(), 0);
    }
}
