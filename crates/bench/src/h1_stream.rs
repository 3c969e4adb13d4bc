//! An event stream over HTTP/1.1, on a connection of its own (plain or
//! TLS): a hand-written GET, then the body dechunked as it arrives and
//! handed to the stream's [`EventCounter`].
//!
//! Reads go into one buffer per thread, filled and consumed within one poll,
//! so an idle stream holds no read buffer of its own (a TLS one holds
//! rustls's record buffer).

use std::{cell::RefCell, future::poll_fn, io, pin::Pin, task::Poll};

use anyhow::bail;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _, ReadBuf};

use crate::{
    connect::{Dialer, HttpConnection},
    event_counter::EventCounter,
    http::{self, BodyDecoder},
    run::Shared,
    tally::Tally,
    tls::Alpn,
    url::Target,
};

/// Bytes read per `read` call (one buffer per runtime thread).
const READ_BUFFER: usize = 64 << 10;

thread_local! {
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// An open HTTP/1.1 event stream, its response head read.
pub struct H1Stream {
    connection: HttpConnection,
    decoder: BodyDecoder,
    /// Body bytes that arrived with the head.
    leftover: Vec<u8>,
}

impl H1Stream {
    /// Connects with `dialer` and opens the stream at `target`; `headers`
    /// are extra header lines, each ending in CRLF.
    pub async fn open(dialer: &Dialer, target: &Target, headers: &str) -> anyhow::Result<Self> {
        let mut connection = dialer.dial(target, Alpn::Http1).await?;
        let request = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{headers}\r\n",
            target.path, target.host_header
        );
        connection.write_all(request.as_bytes()).await?;
        let mut head = Vec::with_capacity(512);
        let mut buf = [0u8; 2048];
        loop {
            let n = connection.read(&mut buf).await?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
            head.extend_from_slice(&buf[..n]);
            if let Some((response, len)) = http::parse_head(&head)? {
                if response.status != 200 {
                    let body = String::from_utf8_lossy(&head[len..head.len().min(len + 300)]).into_owned();
                    bail!("GET {}: status {} {}", target.path, response.status, body.trim());
                }
                let leftover = head.split_off(len);
                return Ok(Self { connection, decoder: BodyDecoder::new(response.framing), leftover });
            }
        }
    }

    /// Counts the stream's events until the run is cancelled (`Ok`) or the
    /// stream ends or fails (an error: streams are meant to stay open).
    pub async fn count(mut self, counter: &mut EventCounter, tally: &mut Tally, shared: &Shared) -> anyhow::Result<()> {
        let leftover = std::mem::take(&mut self.leftover);
        feed(&mut self.decoder, &leftover, counter, tally, shared)?;
        while !self.decoder.is_done() {
            let (connection, decoder) = (&mut self.connection, &mut self.decoder);
            // The buffer is borrowed only inside one poll: what was read is
            // consumed before the task can yield.
            let read = poll_fn(|cx| {
                READ_BUF.with_borrow_mut(|buf| {
                    let mut read = ReadBuf::new(buf);
                    match Pin::new(&mut *connection).poll_read(cx, &mut read) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Err(error)) => Poll::Ready(Err(anyhow::Error::from(error))),
                        Poll::Ready(Ok(())) if read.filled().is_empty() => {
                            Poll::Ready(Err(anyhow::anyhow!("the server closed the stream")))
                        }
                        Poll::Ready(Ok(())) => Poll::Ready(feed(decoder, read.filled(), counter, tally, shared)),
                    }
                })
            });
            tokio::select! {
                biased;
                () = shared.cancel.cancelled() => return Ok(()),
                read = read => read?,
            }
        }
        bail!("the server ended the stream")
    }
}

/// Decodes `bytes` of the response and counts the events in its body.
fn feed(
    decoder: &mut BodyDecoder,
    bytes: &[u8],
    counter: &mut EventCounter,
    tally: &mut Tally,
    shared: &Shared,
) -> anyhow::Result<()> {
    let now_us = shared.now_us();
    let mut parse_error = None;
    decoder.feed(bytes, &mut |body| {
        if parse_error.is_none() {
            parse_error = counter.feed(body, now_us, shared.nonce, tally).err();
        }
    })?;
    counter.settle(now_us, tally, shared);
    parse_error.map_or(Ok(()), Err)
}
