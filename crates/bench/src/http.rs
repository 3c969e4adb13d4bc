//! The little of HTTP/1.1 this tool needs: a response head parser and a
//! streaming body decoder (Content-Length, chunked, or until close) that
//! hands out slices of the input without buffering the body.

use anyhow::bail;

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 << 10;

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The status code.
    pub status: u16,
    /// How the body is delimited.
    pub framing: Framing,
    /// The server will close the connection after this response.
    pub close: bool,
    /// The `Content-Type`, if any.
    pub content_type: Option<String>,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: n`.
    Length(u64),
    /// No length: the body ends when the connection closes.
    UntilClose,
}

/// Parses a response head from the start of `buf`. `Ok(None)` means it is
/// not complete yet; `Ok(Some((head, len)))` gives the head and its length.
/// Interim (1xx) responses are skipped.
pub fn parse_head(mut buf: &[u8]) -> anyhow::Result<Option<(ResponseHead, usize)>> {
    let mut consumed = 0;
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 48];
        let mut response = httparse::Response::new(&mut headers);
        let len = match response.parse(buf)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => {
                if buf.len() > MAX_HEAD {
                    bail!("response head longer than {MAX_HEAD} bytes");
                }
                return Ok(None);
            }
        };
        let status = response.code.unwrap_or(0);
        if (100..200).contains(&status) && status != 101 {
            consumed += len;
            buf = &buf[len..];
            continue;
        }
        let mut framing = Framing::UntilClose;
        let mut close = response.version == Some(0);
        let mut content_type = None;
        for header in response.headers.iter() {
            let value = std::str::from_utf8(header.value).unwrap_or_default().trim();
            if header.name.eq_ignore_ascii_case("transfer-encoding") {
                if value.to_ascii_lowercase().ends_with("chunked") {
                    framing = Framing::Chunked;
                }
            } else if header.name.eq_ignore_ascii_case("content-length") {
                if framing != Framing::Chunked {
                    framing = Framing::Length(value.parse()?);
                }
            } else if header.name.eq_ignore_ascii_case("connection") {
                let value = value.to_ascii_lowercase();
                if value.contains("close") {
                    close = true;
                } else if value.contains("keep-alive") {
                    close = false;
                }
            } else if header.name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_owned());
            }
        }
        if status == 204 || status == 304 {
            framing = Framing::Length(0);
        }
        return Ok(Some((ResponseHead { status, framing, close, content_type }, consumed + len)));
    }
}

/// Decodes a response body as it arrives.
#[derive(Debug)]
pub enum BodyDecoder {
    /// Chunked transfer coding.
    Chunked(Dechunker),
    /// This many bytes are still to come.
    Length(u64),
    /// Everything until the connection closes.
    UntilClose,
}

impl BodyDecoder {
    /// The decoder for a response framed as `framing`.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::Chunked => Self::Chunked(Dechunker::default()),
            Framing::Length(n) => Self::Length(n),
            Framing::UntilClose => Self::UntilClose,
        }
    }

    /// Whether the body is complete.
    pub fn is_done(&self) -> bool {
        match self {
            Self::Chunked(d) => d.is_done(),
            Self::Length(n) => *n == 0,
            Self::UntilClose => false,
        }
    }

    /// Feeds raw bytes; calls `out` with each piece of body. Returns how many
    /// bytes of `input` belonged to this body (the rest is the next response).
    pub fn feed<'a>(&mut self, input: &'a [u8], out: &mut impl FnMut(&'a [u8])) -> anyhow::Result<usize> {
        match self {
            Self::Chunked(d) => d.feed(input, out),
            Self::Length(left) => {
                let n = usize::try_from(*left).unwrap_or(usize::MAX).min(input.len());
                if n > 0 {
                    out(&input[..n]);
                }
                *left -= n as u64;
                Ok(n)
            }
            Self::UntilClose => {
                if !input.is_empty() {
                    out(input);
                }
                Ok(input.len())
            }
        }
    }
}

/// A streaming decoder of the chunked transfer coding.
#[derive(Debug, Default)]
pub struct Dechunker {
    state: ChunkState,
    /// Bytes left in the current chunk, or the size being parsed.
    size: u64,
    /// Hex digits seen in the size line.
    digits: u8,
    /// In the trailer: whether the current line is still empty.
    line_empty: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    Done,
}

impl Dechunker {
    /// Whether the last chunk and the trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Feeds raw bytes; see [`BodyDecoder::feed`].
    pub fn feed<'a>(&mut self, input: &'a [u8], out: &mut impl FnMut(&'a [u8])) -> anyhow::Result<usize> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            match self.state {
                ChunkState::Size => match b {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        self.digits += 1;
                        if self.digits > 15 {
                            bail!("chunk size too long");
                        }
                        self.size = self.size * 16 + u64::from((b as char).to_digit(16).unwrap_or(0));
                    }
                    b';' | b' ' | b'\t' => self.state = ChunkState::Extension,
                    b'\r' => self.state = ChunkState::SizeLf,
                    b'\n' => self.end_size_line()?,
                    _ => bail!("invalid byte {b:#04x} in a chunk size"),
                },
                ChunkState::Extension => {
                    if b == b'\n' {
                        self.end_size_line()?;
                    }
                }
                ChunkState::SizeLf => {
                    if b != b'\n' {
                        bail!("chunk size line not ended by CRLF");
                    }
                    self.end_size_line()?;
                }
                ChunkState::Data => {
                    let n = usize::try_from(self.size).unwrap_or(usize::MAX).min(input.len() - i);
                    out(&input[i..i + n]);
                    self.size -= n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = ChunkState::DataCr;
                    }
                    continue;
                }
                ChunkState::DataCr => match b {
                    b'\r' => self.state = ChunkState::DataLf,
                    b'\n' => self.state = ChunkState::Size,
                    _ => bail!("chunk not ended by CRLF"),
                },
                ChunkState::DataLf => {
                    if b != b'\n' {
                        bail!("chunk not ended by CRLF");
                    }
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => match b {
                    b'\n' if self.line_empty => {
                        self.state = ChunkState::Done;
                        return Ok(i + 1);
                    }
                    b'\n' => self.line_empty = true,
                    b'\r' => {}
                    _ => self.line_empty = false,
                },
                ChunkState::Done => return Ok(i),
            }
            i += 1;
        }
        Ok(i)
    }

    fn end_size_line(&mut self) -> anyhow::Result<()> {
        if self.digits == 0 {
            bail!("empty chunk size");
        }
        self.digits = 0;
        if self.size == 0 {
            self.state = ChunkState::Trailer;
            self.line_empty = true;
        } else {
            self.state = ChunkState::Data;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_in_pieces(input: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut d = Dechunker::default();
        let mut body = Vec::new();
        for part in input.chunks(piece) {
            let used = d.feed(part, &mut |s| body.extend_from_slice(s)).unwrap();
            if d.is_done() {
                assert!(used <= part.len());
                break;
            }
            assert_eq!(used, part.len());
        }
        (body, d.is_done())
    }

    #[test]
    fn dechunks_across_any_split() {
        let wire = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in 1..wire.len() {
            let (body, done) = decode_in_pieces(wire, piece);
            assert_eq!(body, b"hello, world", "piece {piece}");
            assert!(done);
        }
        let (body, done) = decode_in_pieces(b"3\r\nabc\r\n", 2);
        assert_eq!(body, b"abc");
        assert!(!done);
    }

    #[test]
    fn rejects_garbage() {
        let mut d = Dechunker::default();
        assert!(d.feed(b"zz\r\n", &mut |_| {}).is_err());
    }

    #[test]
    fn parses_heads() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\nrest";
        let (head, len) = parse_head(raw).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.close);
        assert_eq!(&raw[len..], b"rest");
        assert!(parse_head(b"HTTP/1.1 201 Created\r\nContent-Le").unwrap().is_none());
        let (head, _) =
            parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\nConnection: close\r\n\r\n").unwrap().unwrap();
        assert_eq!((head.framing, head.close), (Framing::Length(12), true));
    }
}
