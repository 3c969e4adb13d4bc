//! A TLS server stream whose buffers are its own (rustls's unbuffered API),
//! released whenever they are empty: an idle stream holds no record buffer.
//!
//! Open event streams are most of what a hub holds, and they are idle most
//! of the time. rustls's buffered `ServerConnection` keeps a 4 KiB record
//! buffer from the first read for the connection's life; here an idle
//! stream costs the connection state and its keys only.
//!
//! - `incoming` holds only TLS bytes not yet processed (part of a record, or
//!   of a handshake message that spans records), at most `MAX_INCOMING`:
//!   more is an error, as it is in rustls's own buffer.
//! - `plaintext` holds decrypted bytes the reader has not taken. It is only
//!   filled from `incoming`, so it is bounded by it.
//! - `outgoing` holds TLS bytes not yet sent, in the order rustls made them.
//!   Writes wait while `MAX_UNSENT` or more are unsent. What reading adds
//!   (a key update's reply, alerts) rustls bounds: it holds one key update
//!   reply at a time and ends a connection that misbehaves more than a few
//!   times.
//! - What rustls queues on its own (the handshake, a key update, an alert)
//!   is sent before the stream waits for the peer, and by a flush.
//! - Errors are `io::Error`s: rustls's `InvalidData` (after a best-effort
//!   alert), an EOF without close_notify `UnexpectedEof`, as with
//!   `tokio-rustls`.

use std::{
    io::{self, IoSlice},
    mem::MaybeUninit,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use rustls::{
    ServerConfig,
    server::UnbufferedServerConnection,
    unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The largest TLS record on the wire: its header, 16 KiB of data and up
/// to 2 KiB of what encryption adds.
const MAX_RECORD: usize = 5 + 16 * 1024 + 2048;
/// The most unprocessed TLS bytes kept: rustls's limit on a handshake
/// message that spans records (64 KiB), and the record that completes it.
const MAX_INCOMING: usize = 0xffff + MAX_RECORD;
/// How much one read from the socket takes, on the stack: the heap is used
/// only for bytes that arrived.
const READ_SIZE: usize = 8 * 1024;
/// Unsent TLS bytes at which writes (and reads) wait for the socket: as
/// rustls's buffered connection does by default.
const MAX_UNSENT: usize = 64 * 1024;
/// Small slices of a vectored write (a chunk's size line, its data, its
/// CRLF; HTTP/2 frames) are joined into records of up to this size: one
/// full record, as rustls's buffered connection makes them.
const JOIN_SIZE: usize = 16 * 1024;

/// A server-side TLS stream over `IO`, after its handshake ([`accept`]).
pub(super) struct TlsStream<IO> {
    io: IO,
    /// Boxed: the stream is held inline by futures that may keep it twice
    /// (a stream task's argument and its local); the connection is ~1 KB.
    conn: Box<UnbufferedServerConnection>,
    incoming: Vec<u8>,
    plaintext: Queue,
    outgoing: Queue,
    /// The peer sent close_notify: reads end, writes may go on.
    peer_closed: bool,
    /// close_notify is queued: nothing more is written.
    closing: bool,
    /// rustls failed: the connection is unusable.
    failed: bool,
}

/// Accepts a TLS connection on `io` with `config`: the handshake is done,
/// and its last flight sent, when this returns.
pub(super) async fn accept<IO: AsyncRead + AsyncWrite + Unpin>(
    io: IO,
    config: Arc<ServerConfig>,
) -> io::Result<TlsStream<IO>> {
    let conn = UnbufferedServerConnection::new(config).map_err(io::Error::other)?;
    let mut stream = TlsStream {
        io,
        conn: Box::new(conn),
        incoming: Vec::new(),
        plaintext: Queue::default(),
        outgoing: Queue::default(),
        peer_closed: false,
        closing: false,
        failed: false,
    };
    std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

/// What the stream asks rustls to do once it can send application data.
#[derive(Clone, Copy)]
enum Job<'a> {
    /// Nothing: read what there is.
    Read,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where rustls stopped.
enum Stop {
    /// Plaintext arrived, or close_notify did.
    Readable,
    /// Nothing more happens without more bytes from the peer.
    NeedsBytes,
    /// The job's records are in `outgoing`.
    Done,
}

impl<IO> TlsStream<IO> {
    /// The protocol ALPN chose, if any.
    pub(super) fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// Runs rustls over `incoming` until it stops: what it makes is queued
    /// in `outgoing` (handshake records, replies, the job's records), what it
    /// decrypts in `plaintext`.
    fn run(&mut self, job: Job<'_>) -> io::Result<Stop> {
        if self.failed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the TLS connection failed earlier"));
        }
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process_tls_records(&mut self.incoming);
            let stop = match state {
                Err(error) => {
                    self.incoming.drain(..discard.min(self.incoming.len()));
                    return Err(self.fail(error));
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(|error| io::Error::new(io::ErrorKind::InvalidData, error))?;
                        discard += record.discard;
                        self.plaintext.push(record.payload);
                    }
                    matches!(job, Job::Read).then_some(Stop::Readable)
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    self.outgoing.append_with(0, |out| encoded(record.encode(out)))?;
                    None
                }
                // Sent in order before the stream waits for the peer (or by a flush).
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => match job {
                    Job::Read => Some(Stop::NeedsBytes),
                    Job::Encrypt(_) | Job::CloseNotify => return Err(io::ErrorKind::NotConnected.into()),
                },
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match job {
                    Job::Read => Some(Stop::NeedsBytes),
                    Job::Encrypt(data) => {
                        // Each record adds at most a header, a tag and padding.
                        let estimate = data.len() + (data.len() / (16 * 1024) + 1) * 64;
                        self.outgoing.append_with(estimate, |out| encrypted(traffic.encrypt(data, out)))?;
                        Some(Stop::Done)
                    }
                    Job::CloseNotify => {
                        self.outgoing.append_with(64, |out| encrypted(traffic.queue_close_notify(out)))?;
                        Some(Stop::Done)
                    }
                },
                // Edge-triggered: reported once.
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    matches!(job, Job::Read).then_some(Stop::Readable)
                }
                // Both sides sent close_notify; terminal.
                Ok(ConnectionState::Closed) => match job {
                    Job::Read => {
                        self.peer_closed = true;
                        Some(Stop::Readable)
                    }
                    Job::Encrypt(_) | Job::CloseNotify => return Err(io::ErrorKind::BrokenPipe.into()),
                },
                // Early data, which the server's configuration does not accept.
                Ok(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS state")),
            };
            self.incoming.drain(..discard.min(self.incoming.len()));
            if self.peer_closed {
                // rustls reads nothing after close_notify.
                self.incoming.clear();
            }
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            if let Some(stop) = stop {
                return Ok(stop);
            }
        }
    }

    /// Marks the connection failed and queues the alert rustls has for the
    /// peer (sent if the socket takes it before the stream is dropped).
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        self.failed = true;
        // The same buffer as before: rustls keeps an offset into it for a
        // handshake message it has only part of, and indexing an empty one
        // with it panics.
        let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = state {
            let _ = self.outgoing.append_with(0, |out| encoded(alert.encode(out)));
        }
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Drives the handshake; ready once it is done and our last flight is sent.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.conn.is_handshaking() {
                return self.poll_send(cx);
            }
            if self.peer_closed {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "TLS handshake closed")));
            }
            if let Stop::Readable = self.run_or_alert(cx, Job::Read)? {
                continue;
            }
            if !self.conn.is_handshaking() {
                continue;
            }
            // Our flight goes out before we wait for the answer to it.
            ready!(self.poll_send(cx))?;
            ready!(self.poll_fill(cx))?;
        }
    }

    /// [`Self::run`], and on failure an attempt to send the alert that says why.
    fn run_or_alert(&mut self, cx: &mut Context<'_>, job: Job<'_>) -> io::Result<Stop> {
        self.run(job).inspect_err(|_| {
            let _ = self.poll_send(cx);
        })
    }

    /// Sends what `outgoing` holds; ready once it is all sent.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.outgoing.is_empty() {
            match ready!(Pin::new(&mut self.io).poll_write(cx, self.outgoing.unread()))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                sent => self.outgoing.take(sent),
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Ready once fewer than `MAX_UNSENT` bytes wait to be sent.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_send(cx) {
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            _ if self.outgoing.len() < MAX_UNSENT => Poll::Ready(Ok(())),
            _ => Poll::Pending,
        }
    }

    /// Reads more TLS bytes from the socket into `incoming`; the peer closing
    /// the socket here (with no close_notify) is an error.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.incoming.len() >= MAX_INCOMING {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS message too large")));
        }
        let mut chunk = [MaybeUninit::<u8>::uninit(); READ_SIZE];
        let room = READ_SIZE.min(MAX_INCOMING - self.incoming.len());
        let mut read = ReadBuf::uninit(&mut chunk[..room]);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut read))?;
        if read.filled().is_empty() {
            let why = if self.conn.is_handshaking() {
                "TLS handshake cut short"
            } else {
                "peer closed connection without sending TLS close_notify"
            };
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::UnexpectedEof, why)));
        }
        self.incoming.extend_from_slice(read.filled());
        Poll::Ready(Ok(()))
    }

    /// Encrypts what fits of `slices` (joining small ones into one record)
    /// and starts sending it; how many bytes were taken.
    fn poll_encrypt(&mut self, cx: &mut Context<'_>, slices: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        if self.closing {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        ready!(self.poll_room(cx))?;
        let budget = MAX_UNSENT - self.outgoing.len();
        if let [single] = slices {
            let data = &single[..single.len().min(budget)];
            self.run_or_alert(cx, Job::Encrypt(data))?;
            return self.poll_started(cx, data.len());
        }
        let total = slices.iter().map(|slice| slice.len()).sum::<usize>().min(budget);
        let mut joined = Vec::new();
        let mut taken = 0;
        for slice in slices {
            let data = &slice[..slice.len().min(budget - taken)];
            if !joined.is_empty() && joined.len() + data.len() > JOIN_SIZE {
                self.run_or_alert(cx, Job::Encrypt(&joined))?;
                joined.clear();
            }
            if data.len() > JOIN_SIZE {
                // Large enough for records of its own: encrypted where it is.
                self.run_or_alert(cx, Job::Encrypt(data))?;
            } else {
                if joined.capacity() == 0 {
                    joined.reserve(JOIN_SIZE.min(total - taken));
                }
                joined.extend_from_slice(data);
            }
            taken += data.len();
            if taken == budget {
                break;
            }
        }
        if !joined.is_empty() {
            self.run_or_alert(cx, Job::Encrypt(&joined))?;
        }
        self.poll_started(cx, taken)
    }

    /// Starts sending what a write of `taken` bytes encrypted: whatever the
    /// socket does not take now goes with the next write or flush.
    fn poll_started(&mut self, cx: &mut Context<'_>, taken: usize) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Err(error)) = self.poll_send(cx) {
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(taken))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plaintext.is_empty() {
                let n = buf.remaining().min(this.plaintext.len());
                buf.put_slice(&this.plaintext.unread()[..n]);
                this.plaintext.take(n);
                return Poll::Ready(Ok(()));
            }
            if this.peer_closed {
                return Poll::Ready(Ok(()));
            }
            if let Stop::Readable = this.run_or_alert(cx, Job::Read)? {
                // What came with it (a key update's reply) goes out if it can.
                if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                    return Poll::Ready(Err(error));
                }
                continue;
            }
            // Before waiting for the peer, what rustls queued goes out (or
            // starts to: the socket wakes this task when it takes more).
            if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            ready!(this.poll_fill(cx))?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_encrypt(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_encrypt(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// Sends close_notify, then closes the socket's sending side.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.closing && !this.failed {
            this.run(Job::CloseNotify)?;
            this.closing = true;
        }
        ready!(this.poll_send(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            // Already gone: closed all the same.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            result => Poll::Ready(result),
        }
    }
}

/// Bytes on their way, taken from the front; the memory is released once
/// all are taken.
#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    /// How many at the front are taken.
    taken: usize,
}

impl Queue {
    fn len(&self) -> usize {
        self.bytes.len() - self.taken
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn unread(&self) -> &[u8] {
        &self.bytes[self.taken..]
    }

    fn take(&mut self, n: usize) {
        self.taken = (self.taken + n).min(self.bytes.len());
        if self.taken == self.bytes.len() {
            *self = Self::default();
        }
    }

    fn push(&mut self, data: &[u8]) {
        self.compact();
        self.bytes.extend_from_slice(data);
    }

    /// Appends what `write` writes into room of `estimate` bytes; `write`
    /// fails with `Some(size)` when it needs that much room, and is tried
    /// once more with it.
    fn append_with(
        &mut self,
        estimate: usize,
        mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
    ) -> io::Result<()> {
        self.compact();
        let start = self.bytes.len();
        self.bytes.resize(start + estimate, 0);
        let mut result = write(&mut self.bytes[start..]);
        if let Err(Some(required)) = result {
            self.bytes.resize(start + required, 0);
            result = write(&mut self.bytes[start..]);
        }
        match result {
            Ok(written) => {
                self.bytes.truncate(start + written);
                Ok(())
            }
            Err(_) => {
                self.bytes.truncate(start);
                if self.bytes.is_empty() {
                    *self = Self::default();
                }
                Err(io::Error::other("TLS could not encode a record"))
            }
        }
    }

    /// Drops the taken bytes, so the queue never grows by what is gone.
    fn compact(&mut self) {
        if self.taken > 0 {
            self.bytes.drain(..self.taken);
            self.taken = 0;
        }
    }
}

/// An encoding's result as [`Queue::append_with`] wants it.
fn encoded(result: Result<usize, EncodeError>) -> Result<usize, Option<usize>> {
    match result {
        Ok(written) => Ok(written),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => Err(Some(required_size)),
        Err(EncodeError::AlreadyEncoded) => Err(None),
    }
}

/// An encryption's result as [`Queue::append_with`] wants it.
fn encrypted(result: Result<usize, EncryptError>) -> Result<usize, Option<usize>> {
    match result {
        Ok(written) => Ok(written),
        Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => Err(Some(required_size)),
        Err(_) => Err(None),
    }
}

#[cfg(test)]
mod tests {
    use std::{process::Command, time::Duration};

    use rustls::{
        ClientConfig, RootCertStore,
        crypto::ring,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    };
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, duplex};

    use super::*;

    /// A server configuration with a new self-signed certificate for
    /// `localhost` (made by `openssl`), offering `alpn`; and a client
    /// configuration that trusts it.
    fn configs(alpn: &[&[u8]]) -> (Arc<ServerConfig>, ClientConfig) {
        configs_with(alpn, rustls::DEFAULT_VERSIONS)
    }

    /// [`configs`], with a client that speaks only `versions` of TLS.
    fn configs_with(
        alpn: &[&[u8]],
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> (Arc<ServerConfig>, ClientConfig) {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args(["-keyout", "key.pem", "-out", "cert.pem", "-days", "1", "-subj", "/CN=localhost"])
            .args(["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
            .current_dir(dir.path())
            .output()
            .expect("run openssl");
        assert!(output.status.success(), "openssl: {}", String::from_utf8_lossy(&output.stderr));
        let cert = CertificateDer::from_pem_file(dir.path().join("cert.pem")).unwrap();
        let key = PrivateKeyDer::from_pem_file(dir.path().join("key.pem")).unwrap();
        let provider = Arc::new(ring::default_provider());
        let mut server = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut roots = RootCertStore::empty();
        roots.add(cert).unwrap();
        let client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), client)
    }

    type Client = tokio_rustls::client::TlsStream<DuplexStream>;

    /// A handshake over an in-memory pipe of `pipe` bytes each way.
    async fn pair(pipe: usize, client: ClientConfig, server: Arc<ServerConfig>) -> (Client, TlsStream<DuplexStream>) {
        let (near, far) = duplex(pipe);
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let name = ServerName::try_from("localhost").unwrap();
        let (client, server) = tokio::join!(connector.connect(name, near), accept(far, server));
        (client.unwrap(), server.unwrap())
    }

    async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), future).await.unwrap_or_else(|_| panic!("{what}: timed out"))
    }

    fn is_idle(server: &TlsStream<DuplexStream>) -> bool {
        server.incoming.capacity() == 0
            && server.plaintext.bytes.capacity() == 0
            && server.outgoing.bytes.capacity() == 0
    }

    #[tokio::test]
    async fn alpn_is_chosen_data_flows_both_ways_and_an_idle_stream_holds_no_buffer() {
        let (server_config, mut client_config) = configs(&[b"h2", b"http/1.1"]);
        client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let (mut client, mut server) = pair(64 * 1024, client_config, server_config).await;
        assert_eq!(server.alpn_protocol(), Some(b"http/1.1".as_slice()));
        assert!(is_idle(&server), "after the handshake");

        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        client.flush().await.unwrap();
        let mut request = [0u8; 18];
        within("the request", server.read_exact(&mut request)).await.unwrap();
        assert_eq!(&request, b"GET / HTTP/1.1\r\n\r\n");
        server.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
        server.flush().await.unwrap();
        let mut response = [0u8; 19];
        within("the response", client.read_exact(&mut response)).await.unwrap();
        assert_eq!(&response, b"HTTP/1.1 200 OK\r\n\r\n");
        assert!(is_idle(&server), "after an exchange");
    }

    #[tokio::test]
    async fn a_tls_1_2_client_is_served_too() {
        let (server_config, mut tls12) = configs_with(&[b"h2", b"http/1.1"], &[&rustls::version::TLS12]);
        tls12.alpn_protocols = vec![b"h2".to_vec()];
        let (mut client, mut server) = pair(16 * 1024, tls12, server_config).await;
        assert_eq!(client.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
        assert_eq!(server.alpn_protocol(), Some(b"h2".as_slice()));
        client.write_all(b"ping").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0u8; 4];
        within("the client's data", server.read_exact(&mut got)).await.unwrap();
        server.write_all(b"pong").await.unwrap();
        server.flush().await.unwrap();
        within("the server's data", client.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"pong");
    }

    /// A pattern that shows a lost, repeated or reordered byte.
    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[tokio::test]
    async fn large_writes_through_a_narrow_pipe_arrive_whole_both_ways() {
        let (server_config, client_config) = configs(&[]);
        let (client, mut server) = pair(1000, client_config, server_config).await;
        let (mut client_reads, mut client_writes) = tokio::io::split(client);
        let down = pattern(300 * 1024);
        let up = pattern(100 * 1024);
        let sending = async {
            // Vectored, with slices both small and larger than one record.
            let parts = [&down[..10], &down[10..20_000], &down[20_000..20_003], &down[20_003..]];
            let mut sent = 0;
            while sent < down.len() {
                let mut skip = sent;
                let slices: Vec<IoSlice<'_>> = parts
                    .iter()
                    .filter_map(|part| {
                        let rest = &part[skip.min(part.len())..];
                        skip = skip.saturating_sub(part.len());
                        (!rest.is_empty()).then(|| IoSlice::new(rest))
                    })
                    .collect();
                let n =
                    std::future::poll_fn(|cx| Pin::new(&mut server).poll_write_vectored(cx, &slices)).await.unwrap();
                assert!(n > 0);
                sent += n;
            }
            server.flush().await.unwrap();
            // Read back in small pieces: a record is larger than what is asked for.
            let mut got = Vec::new();
            let mut piece = [0u8; 100];
            while got.len() < up.len() {
                let n = server.read(&mut piece).await.unwrap();
                assert!(n > 0, "EOF after {} bytes", got.len());
                got.extend_from_slice(&piece[..n]);
            }
            assert!(got == up, "the server read what the client wrote");
            server
        };
        // The client reads while it writes: the server writes all before it reads.
        let receiving = async {
            let writing = async {
                client_writes.write_all(&up).await.unwrap();
                client_writes.flush().await.unwrap();
            };
            let mut got = vec![0u8; down.len()];
            let (_, read) = tokio::join!(writing, client_reads.read_exact(&mut got));
            read.unwrap();
            assert!(got == down, "the client read what the server wrote");
        };
        let (server, ()) = within("the transfer", async { tokio::join!(sending, receiving) }).await;
        assert!(is_idle(&server));
    }

    #[tokio::test]
    async fn close_notify_is_the_end_of_the_stream_and_shutdown_sends_it() {
        let (server_config, client_config) = configs(&[]);
        let (mut client, mut server) = pair(16 * 1024, client_config, server_config).await;
        client.write_all(b"last words").await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        within("EOF", server.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got, b"last words");
        // Half-closed: the server may still answer, then close.
        server.write_all(b"goodbye").await.unwrap();
        server.shutdown().await.unwrap();
        let mut got = Vec::new();
        within("the client's EOF", client.read_to_end(&mut got)).await.unwrap();
        assert_eq!(got, b"goodbye");
    }

    #[tokio::test]
    async fn a_peer_that_hangs_up_without_close_notify_is_an_unexpected_eof() {
        let (server_config, client_config) = configs(&[]);
        let (client, mut server) = pair(16 * 1024, client_config, server_config).await;
        drop(client);
        let error = within("the read", server.read(&mut [0u8; 16])).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_key_update_asked_for_by_the_client_is_answered_and_traffic_goes_on() {
        let (server_config, client_config) = configs(&[]);
        let (mut client, mut server) = pair(16 * 1024, client_config, server_config).await;
        for round in 0..3u8 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client.write_all(&[round; 100]).await.unwrap();
            client.flush().await.unwrap();
            let mut got = [0u8; 100];
            within("the client's data", server.read_exact(&mut got)).await.unwrap();
            assert_eq!(got, [round; 100]);
            // Under the server's new keys: the client reads them only if the
            // server sent its own key update first.
            server.write_all(&[round + 10; 100]).await.unwrap();
            server.flush().await.unwrap();
            within("the server's data", client.read_exact(&mut got)).await.unwrap();
            assert_eq!(got, [round + 10; 100]);
        }
    }

    #[tokio::test]
    async fn bytes_that_are_not_tls_fail_the_handshake_with_an_alert() {
        let (server_config, _) = configs(&[]);
        let (mut near, far) = duplex(16 * 1024);
        near.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let error = within("the handshake", accept(far, server_config)).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        let mut answer = Vec::new();
        near.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer.first(), Some(&0x15), "an alert record: {answer:?}");
    }

    #[tokio::test]
    async fn an_alert_inside_a_handshake_message_fails_the_handshake_without_a_panic() {
        let (server_config, _) = configs(&[]);
        let (mut near, far) = duplex(1024);
        // Part of a ClientHello (4 of its 100 bytes), then an alert record:
        // rustls refuses the interleaving, with a partial message buffered.
        let bytes = [0x16, 3, 1, 0, 5, 1, 0, 0, 100, 0, 0x15, 3, 1, 0, 2, 2, 40];
        near.write_all(&bytes).await.unwrap();
        let handshake = tokio::spawn(accept(far, server_config));
        let outcome = within("the handshake", handshake).await;
        let error = outcome.expect("no panic").err().expect("the handshake fails");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }

    #[tokio::test]
    async fn a_handshake_message_in_tiny_records_is_refused_past_the_bound() {
        let (server_config, _) = configs(&[]);
        let (mut near, far) = duplex(MAX_INCOMING * 8);
        // A ClientHello header claiming 64 KiB, then its body, one byte per
        // record: six bytes buffered for each byte of it.
        let mut flood = Vec::new();
        for byte in [1u8, 0x00, 0xff, 0xff].into_iter().chain(std::iter::repeat_n(0u8, MAX_INCOMING / 5)) {
            flood.extend_from_slice(&[22, 3, 1, 0, 1, byte]);
        }
        near.write_all(&flood).await.unwrap();
        // The peer stays: only the bound ends the handshake.
        let error = within("the handshake", accept(far, server_config)).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert_eq!(error.to_string(), "TLS message too large");
        drop(near);
    }

    #[tokio::test]
    async fn a_hangup_during_the_handshake_is_an_unexpected_eof() {
        let (server_config, _) = configs(&[]);
        let (near, far) = duplex(1024);
        drop(near);
        let error = within("the handshake", accept(far, server_config)).await.err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }
}
