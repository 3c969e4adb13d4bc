//! Event payloads: `hb1 NONCE SEQ SENT_US` padded with `x` to a fixed size.
//!
//! The nonce tells this run's events from any other's; the sequence number
//! identifies the event whatever id the server gave it (Herald's and Nchan's
//! differ); the send time, in microseconds on this process's monotonic
//! clock, gives the publish→receive latency. Only ASCII letters, digits and
//! spaces: the text is the same raw, as a text/plain body or inside a JSON
//! string.

use std::fmt::Write as _;

/// Marks a payload of this format (version 1).
const MAGIC: &str = "hb1";

/// A parsed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payload {
    /// The run that sent it.
    pub nonce: u32,
    /// The event's sequence number in the run, from 0.
    pub seq: u64,
    /// When it was sent, in µs since the run's clock started.
    pub sent_us: u64,
}

/// Appends the payload text to `out`, padded to at least `size` bytes.
pub fn encode(out: &mut String, payload: Payload, size: usize) {
    let start = out.len();
    let _ = write!(out, "{MAGIC} {:08x} {} {} ", payload.nonce, payload.seq, payload.sent_us);
    let len = out.len() - start;
    out.extend(std::iter::repeat_n('x', size.saturating_sub(len)));
}

/// Reads a payload; `None` if the text is not one.
pub fn parse(data: &[u8]) -> Option<Payload> {
    // Byte by byte, without UTF-8 checks: this runs once per delivery, and
    // the load generator should not be what a fan-out run measures.
    let rest = data.strip_prefix(MAGIC.as_bytes())?.strip_prefix(b" ")?;
    let (nonce, rest) = word(rest);
    let (seq, rest) = word(rest);
    let (sent_us, _) = word(rest);
    if nonce.is_empty() || nonce.len() > 8 {
        return None;
    }
    let nonce = nonce.iter().try_fold(0u32, |n, &d| Some(n << 4 | char::from(d).to_digit(16)?))?;
    Some(Payload { nonce, seq: decimal(seq)?, sent_us: decimal(sent_us)? })
}

fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| d.is_ascii_digit().then(|| n * 10 + u64::from(d - b'0')))
}

/// The text up to the next space, and what follows that space.
fn word(text: &[u8]) -> (&[u8], &[u8]) {
    match text.iter().position(|&b| b == b' ') {
        Some(at) => (&text[..at], &text[at + 1..]),
        None => (text, &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_pads() {
        let p = Payload { nonce: 0xdead_beef, seq: 42, sent_us: 1_234_567 };
        let mut text = String::new();
        encode(&mut text, p, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(parse(text.as_bytes()), Some(p));
        let mut short = String::new();
        encode(&mut short, p, 0);
        assert_eq!(parse(short.as_bytes()), Some(p));
        assert_eq!(parse(b"{\"reason\":\"gap\"}"), None);
        assert_eq!(parse(b"hb1 zz 1 2 "), None);
        assert_eq!(parse(b"hb1 123456789 1 2 "), None, "a nonce is at most 8 hex digits");
        assert_eq!(parse(b"hb1 ff 1 "), None, "the send time is missing");
        assert_eq!(parse(b"hb1 ff 7 9"), Some(Payload { nonce: 0xff, seq: 7, sent_us: 9 }));
    }
}
