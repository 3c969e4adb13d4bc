//! Server-Sent Events framing, as the WHATWG HTML standard parses it.
//!
//! Invariants: `id:` and `event:` values never hold CR, LF or NUL (the types
//! guarantee it; this module re-checks and drops a bad field rather than let
//! it inject another); every line of data becomes its own `data:` line, with
//! LF, CRLF and CR all ending a line, so data can never be read as a field.

use bytes::{BufMut, Bytes, BytesMut};

/// Encodes one event frame, ending in the blank line that dispatches it.
pub fn event_frame(id: Option<&str>, event_type: Option<&str>, data: &str, retry_ms: Option<u64>) -> Bytes {
    let mut buf = BytesMut::with_capacity(data.len() + 64);
    if let Some(id) = id.filter(|v| is_single_line(v)) {
        field(&mut buf, "id", id);
    }
    if let Some(kind) = event_type.filter(|v| is_single_line(v)) {
        field(&mut buf, "event", kind);
    }
    if let Some(ms) = retry_ms {
        field(&mut buf, "retry", &ms.to_string());
    }
    for line in data_lines(data) {
        field(&mut buf, "data", line);
    }
    buf.put_u8(b'\n');
    buf.freeze()
}

/// A comment line (ignored by clients; used as heartbeat and to open the stream).
pub fn comment(text: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(text.len() + 3);
    for line in data_lines(text) {
        buf.put_slice(b":");
        if !line.is_empty() {
            buf.put_u8(b' ');
            buf.put_slice(line.as_bytes());
        }
        buf.put_u8(b'\n');
    }
    buf.freeze()
}

/// The reconnection-delay line sent when a stream opens.
pub fn retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n"))
}

fn field(buf: &mut BytesMut, name: &str, value: &str) {
    buf.put_slice(name.as_bytes());
    buf.put_slice(b": ");
    buf.put_slice(value.as_bytes());
    buf.put_u8(b'\n');
}

fn is_single_line(value: &str) -> bool {
    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | b'\0'))
}

/// Splits on LF, CRLF and CR, as an SSE parser does. Empty data is one
/// empty line, so the event still dispatches with empty data.
fn data_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let text = rest?;
        match memchr::memchr2(b'\r', b'\n', text.as_bytes()) {
            None => {
                rest = None;
                Some(text)
            }
            Some(at) => {
                let skip = if text[at..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&text[at + skip..]);
                Some(&text[..at])
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: Bytes) -> String {
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[test]
    fn frames_split_every_kind_of_line_break() {
        let f = event_frame(Some("1"), Some("t"), "a\nb\r\nc\rd", None);
        assert_eq!(text(f), "id: 1\nevent: t\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
        assert_eq!(text(event_frame(None, None, "", None)), "data: \n\n");
        assert_eq!(text(event_frame(None, None, "x\n", Some(5))), "retry: 5\ndata: x\ndata: \n\n");
    }

    #[test]
    fn data_that_looks_like_fields_stays_data() {
        let f = text(event_frame(Some("1"), None, "\n\nevent: evil\nid: 9", None));
        assert_eq!(f, "id: 1\ndata: \ndata: \ndata: event: evil\ndata: id: 9\n\n");
    }

    #[test]
    fn unsafe_single_line_fields_are_dropped() {
        let f = text(event_frame(Some("1\n"), Some("a\rb"), "x", None));
        assert_eq!(f, "data: x\n\n");
    }

    #[test]
    fn comments_cannot_smuggle_fields() {
        assert_eq!(text(comment("hi\ndata: x")), ": hi\n: data: x\n");
        assert_eq!(text(comment("")), ":\n");
    }
}
