//! Opening a connection to a target: a TCP socket with the load
//! generator's options, then a TLS handshake when the URL is `https://`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::{Context as _, bail};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::either::Either;

use crate::{
    tls::{Alpn, TlsClient},
    url::Target,
};

/// A connection that is TCP or TLS over TCP, read and written alike. The
/// TLS state (about 1 KB) is boxed, so a plain subscriber's task stays small.
pub type HttpConnection = Either<TcpStream, Box<TlsStream<TcpStream>>>;

/// How to open connections: the same for every connection of a kind.
#[derive(Debug, Clone, Default)]
pub struct Dialer {
    /// The source address to bind, when subscribers are spread over several.
    pub source: Option<IpAddr>,
    /// `SO_RCVBUF` to set before connecting.
    pub recv_buffer: Option<usize>,
    /// The TLS client for `https://` targets.
    pub tls: Option<Arc<TlsClient>>,
}

impl Dialer {
    /// A connection to `target`, over TLS for `alpn` if it is `https://`.
    pub async fn dial(&self, target: &Target, alpn: Alpn) -> anyhow::Result<HttpConnection> {
        let tcp = connect(target.addr, self.source, self.recv_buffer).await?;
        if !target.tls {
            return Ok(Either::Left(tcp));
        }
        let Some(tls) = &self.tls else { bail!("https:// needs --ca, the authority that signed the certificate") };
        Ok(Either::Right(Box::new(tls.connect(tcp, &target.host, alpn).await?)))
    }
}

/// A TCP connection to `addr`, from `source` if given, with `SO_RCVBUF` set
/// before the handshake (it fixes the window scale) and linger 0, so that
/// closing sends RST and leaves no TIME_WAIT to exhaust ports in the next run.
pub async fn connect(
    addr: SocketAddr,
    source: Option<IpAddr>,
    recv_buffer: Option<usize>,
) -> anyhow::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_linger(Some(Duration::ZERO))?;
    if let Some(size) = recv_buffer {
        socket.set_recv_buffer_size(size)?;
    }
    if let Some(ip) = source {
        socket.set_reuse_address(true)?;
        socket.bind(&SocketAddr::new(ip, 0).into()).with_context(|| format!("bind {ip}"))?;
    }
    let socket = tokio::net::TcpSocket::from_std_stream(socket.into());
    Ok(socket.connect(addr).await?)
}
