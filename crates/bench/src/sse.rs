//! A streaming Server-Sent Events parser, after the WHATWG rules: lines end
//! in LF, CRLF or CR; `:` starts a comment; a blank line dispatches the event
//! if it had data. Only a partial line is ever buffered, never the stream.

use anyhow::bail;

/// Longest line accepted (a runaway stream is an error, not a memory leak).
pub const MAX_LINE: usize = 1 << 20;

/// One dispatched event, borrowed from the parser.
#[derive(Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `id:` field of this event, if it had one.
    pub id: Option<&'a [u8]>,
    /// The `event:` field, if any.
    pub event_type: Option<&'a [u8]>,
    /// The data lines joined by LF.
    pub data: &'a [u8],
}

/// Parser state between reads.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The last byte seen was CR: an LF right after it ends nothing.
    after_cr: bool,
    id: Vec<u8>,
    has_id: bool,
    event_type: Vec<u8>,
    has_type: bool,
    data: Vec<u8>,
    has_data: bool,
}

impl SseParser {
    /// Feeds body bytes; calls `on_event` for each complete event.
    pub fn feed(&mut self, mut input: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) -> anyhow::Result<()> {
        if self.after_cr && !input.is_empty() {
            self.after_cr = false;
            if input[0] == b'\n' {
                input = &input[1..];
            }
        }
        while !input.is_empty() {
            let Some(pos) = memchr::memchr2(b'\n', b'\r', input) else {
                if self.partial.len() + input.len() > MAX_LINE {
                    bail!("SSE line longer than {MAX_LINE} bytes");
                }
                self.partial.extend_from_slice(input);
                return Ok(());
            };
            let terminator = input[pos];
            if self.partial.is_empty() {
                self.line(&input[..pos], on_event);
            } else {
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..pos]);
                self.line(&line, on_event);
                line.clear();
                self.partial = line;
            }
            input = &input[pos + 1..];
            if terminator == b'\r' {
                match input.first() {
                    None => self.after_cr = true,
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                }
            }
        }
        Ok(())
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent<'_>)) {
        if line.is_empty() {
            if self.has_data {
                on_event(SseEvent {
                    id: self.has_id.then_some(&self.id[..]),
                    event_type: self.has_type.then_some(&self.event_type[..]),
                    data: &self.data,
                });
            }
            self.has_id = false;
            self.has_type = false;
            self.has_data = false;
            self.data.clear();
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"id" if memchr::memchr(0, value).is_none() => {
                self.id.clear();
                self.id.extend_from_slice(value);
                self.has_id = true;
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
                self.has_type = true;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Owned = (Option<Vec<u8>>, Option<Vec<u8>>, Vec<u8>);

    fn parse(wire: &[u8], piece: usize) -> Vec<Owned> {
        let mut parser = SseParser::default();
        let mut events = Vec::new();
        for part in wire.chunks(piece) {
            parser
                .feed(part, &mut |e| {
                    events.push((e.id.map(<[u8]>::to_vec), e.event_type.map(<[u8]>::to_vec), e.data.to_vec()))
                })
                .unwrap();
        }
        events
    }

    #[test]
    fn parses_events_split_anywhere() {
        let wire = b"retry: 3000\n: herald stream open\n\nid: a-1\ndata: one\n\n: hb\r\nid: a-2\r\nevent: x\r\ndata: two\r\ndata:2\r\n\r\ndata: three\r\r";
        let want: Vec<Owned> = vec![
            (Some(b"a-1".to_vec()), None, b"one".to_vec()),
            (Some(b"a-2".to_vec()), Some(b"x".to_vec()), b"two\n2".to_vec()),
            (None, None, b"three".to_vec()),
        ];
        for piece in 1..=wire.len() {
            assert_eq!(parse(wire, piece), want, "piece {piece}");
        }
    }

    #[test]
    fn blank_line_without_data_dispatches_nothing() {
        assert!(parse(b"id: 5\n\n\n", 3).is_empty());
    }
}
