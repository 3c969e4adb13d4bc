//! Event ids: one hub-wide sequence, tagged with the store's epoch.
//!
//! On the wire an id is opaque: `EEEEEEEE-SSSSSSSSSSSSSSSS`, the epoch and the
//! sequence number in fixed-width lowercase hex, so ids of one epoch also sort
//! as strings. The sequence is hub-wide and strictly increasing, so a single
//! `Last-Event-ID` resumes a stream of many topics. The epoch changes when the
//! history is lost (a memory store restarted, a data dir wiped), so an id from
//! another epoch is recognised instead of being mistaken for a position.

use std::{fmt, str::FromStr};

/// Identifies one history of a store. A new, random epoch is drawn whenever
/// a store starts without the history of the previous one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Epoch(pub u32);

impl Epoch {
    /// A fresh random epoch.
    pub fn random() -> Self {
        Self(rand::random())
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A position in the hub's history. Sequence numbers start at 1; 0 means
/// "before the first event".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId {
    /// The history this id belongs to.
    pub epoch: Epoch,
    /// Hub-wide, strictly increasing, never reused within the epoch.
    pub seq: u64,
}

impl EventId {
    /// The id of sequence number `seq` in `epoch`.
    pub fn new(epoch: Epoch, seq: u64) -> Self {
        Self { epoch, seq }
    }

    /// The id's text, `EEEEEEEE-SSSSSSSSSSSSSSSS`, written without `fmt`:
    /// the hub's writer encodes one per event it commits.
    pub fn encode(&self) -> [u8; 25] {
        let mut text = [b'-'; 25];
        write_hex(&mut text[..8], u64::from(self.epoch.0));
        write_hex(&mut text[9..], self.seq);
        text
    }
}

/// Fills `out` with the low digits of `value` in lowercase hex, zero-padded.
fn write_hex(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b"0123456789abcdef"[(value & 0xf) as usize];
        value >>= 4;
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.encode()).map_err(|_| fmt::Error)?)
    }
}

/// The text was not an id this hub issues.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a Herald event id")]
pub struct MalformedId;

impl FromStr for EventId {
    type Err = MalformedId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (epoch, seq) = s.split_once('-').ok_or(MalformedId)?;
        let hex = |part: &str, width: usize| {
            (part.len() == width && part.bytes().all(|b| b.is_ascii_hexdigit()))
                .then(|| u64::from_str_radix(part, 16).ok())
                .flatten()
                .ok_or(MalformedId)
        };
        let epoch = u32::try_from(hex(epoch, 8)?).map_err(|_| MalformedId)?;
        Ok(Self::new(Epoch(epoch), hex(seq, 16)?))
    }
}

impl serde::Serialize for EventId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Where a subscriber asked to resume, as parsed from `Last-Event-ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// No id given: start with live events.
    Live,
    /// Resume after this id.
    After(EventId),
    /// Every retained event, without a notice for what is no longer retained
    /// (Mercure's `earliest`).
    Earliest,
    /// An id was given but it is not one of ours (malformed, or too long to
    /// echo back). Treated as unknown: the stream says so with `herald.gap`.
    Unknown,
}

impl Resume {
    /// Parses a `Last-Event-ID` value; an empty value means no id, as in the
    /// SSE spec. Never fails: anything unparseable is [`Resume::Unknown`].
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None | Some("") => Self::Live,
            Some(text) => text.parse().map_or(Self::Unknown, Self::After),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_sort_as_strings() {
        let a = EventId::new(Epoch(0xdead_beef), 9);
        let b = EventId::new(Epoch(0xdead_beef), 10);
        assert_eq!(a.to_string(), "deadbeef-0000000000000009");
        assert_eq!(a.to_string().parse(), Ok(a));
        assert!(a.to_string() < b.to_string());
        let max = EventId::new(Epoch(u32::MAX), u64::MAX);
        assert_eq!(max.to_string().parse(), Ok(max));
        for (epoch, seq) in [(0, 0), (1, 1), (0x0123_4567, 0x89ab_cdef_0123_4567), (u32::MAX, u64::MAX)] {
            let id = EventId::new(Epoch(epoch), seq);
            assert_eq!(id.to_string(), format!("{epoch:08x}-{seq:016x}"));
        }
    }

    #[test]
    fn malformed_ids_are_unknown_not_panics() {
        for bad in [
            "x",
            "-1",
            "deadbeef-",
            "deadbeef-+000000000000009",
            "DEADBEEG-0000000000000009",
            "deadbeef-00000000000000009",
            "99999999999999999999",
            "é-é",
            "deadbeef_0000000000000009",
        ] {
            assert_eq!(Resume::parse(Some(bad)), Resume::Unknown, "{bad}");
        }
        assert_eq!(Resume::parse(None), Resume::Live);
        assert_eq!(Resume::parse(Some("")), Resume::Live);
        assert!(matches!(Resume::parse(Some("0000000a-0000000000000001")), Resume::After(_)));
    }
}
