//! A client's byte stream: plain TCP, or TLS over TCP with rustls driven
//! sans-I/O in the client thread itself (no extra thread per client), or a
//! Unix domain socket ([`Socket`]: the socket under either).
//!
//! On a WebSockets listener either kind is wrapped in a
//! [`WsStream`](crate::websockets::WsStream), which carries MQTT in binary
//! frames.
//!
//! All kinds are non-blocking and read and written the same way by
//! [`crate::client::conn::Conn`]: `read` gives MQTT bytes until it would
//! block, `write` takes MQTT bytes and sends what the socket accepts. With
//! TLS or WebSockets, output may wait inside the stream;
//! [`Stream::wants_write`] tells the client thread to poll for POLLOUT
//! until it is out.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use rustls::{ServerConfig, ServerConnection};

use crate::sys::{self, POLLIN, POLLOUT, PollFd};
use crate::websockets::{self, WsStream};

/// An accepted connection's socket: TCP, or a Unix domain socket
/// (`listener 0 /path`).
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nonblocking(on),
            Socket::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// How long a blocking read may wait; None, for ever.
    pub fn set_read_timeout(&self, d: Option<std::time::Duration>) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_read_timeout(d),
            Socket::Unix(s) => s.set_read_timeout(d),
        }
    }

    /// TCP_NODELAY; a Unix socket has no such delay (nor does Mosquitto
    /// set it on one).
    pub fn set_nodelay(&self, on: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nodelay(on),
            Socket::Unix(_) => Ok(()),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.shutdown(how),
            Socket::Unix(s) => s.shutdown(how),
        }
    }

    /// A second handle on the same socket.
    pub fn try_clone(&self) -> io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    /// The other end: its address, or for a Unix socket the socket's own
    /// path (the peer of a Unix socket has no name; Mosquitto logs the path).
    pub fn peer(&self) -> io::Result<Peer> {
        match self {
            Socket::Tcp(s) => s.peer_addr().map(Peer::Ip),
            Socket::Unix(s) => {
                let local = s.local_addr()?;
                let path = local.as_pathname().unwrap_or(Path::new("unix-socket"));
                Ok(Peer::Unix(Arc::from(path)))
            }
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).read(buf),
            Socket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => (&*s).write(buf),
            Socket::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Who is at the other end of a connection, for log lines.
#[derive(Clone, Debug)]
pub enum Peer {
    Ip(SocketAddr),
    /// A client of a Unix socket listener: the socket's path.
    Unix(Arc<Path>),
}

impl Peer {
    /// The address alone: the IP address, or the socket's path.
    pub fn host(&self) -> String {
        match self {
            Peer::Ip(a) => a.ip().to_string(),
            Peer::Unix(p) => p.display().to_string(),
        }
    }

    /// "address:port", as in Mosquitto's "New connection from" lines; port
    /// 0 on a Unix socket, as Mosquitto writes it.
    pub fn with_port(&self) -> String {
        match self {
            Peer::Ip(a) => format!("{}:{}", a.ip(), a.port()),
            Peer::Unix(p) => format!("{}:0", p.display()),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Ip(a) => a.fmt(f),
            Peer::Unix(p) => p.display().fmt(f),
        }
    }
}

pub enum Stream {
    Plain(Socket),
    Tls(Box<TlsStream>),
    /// MQTT over WebSockets, over a plain or TLS stream.
    Ws(Box<WsStream>),
}

pub struct TlsStream {
    pub sock: Socket,
    pub tls: ServerConnection,
}

impl Stream {
    /// The TLS version and cipher suite of a TLS connection (under
    /// WebSockets too), in OpenSSL's words: ("TLSv1.3", "TLS_AES_256_GCM_SHA384").
    pub fn tls_session(&self) -> Option<(&'static str, String)> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => {
                let version = match t.tls.protocol_version()? {
                    rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
                    rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
                    _ => "TLS",
                };
                let suite = t.tls.negotiated_cipher_suite()?.suite();
                let name = crate::config::ciphers::openssl_name(suite)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{suite:?}"));
                Some((version, name))
            }
            Stream::Ws(w) => w.inner.tls_session(),
        }
    }
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// Not done by the deadline; what was not (TLS, WebSocket).
    Timeout(&'static str),
    /// The peer closed the connection during this handshake.
    Closed(&'static str),
    /// The peer's bytes are not TLS: a plain MQTT client on a TLS port.
    NotTls,
    Tls(rustls::Error),
    Io(io::Error),
    /// The WebSocket upgrade was refused; why.
    WebSocket(String),
    /// A plain HTTP request on a WebSockets listener, answered (`http_dir`).
    Http,
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Timeout(what) => write!(f, "{what} handshake not finished in time"),
            HandshakeError::Closed(what) => {
                write!(f, "connection closed during the {what} handshake")
            }
            HandshakeError::NotTls => write!(
                f,
                "the client does not speak TLS (a plain MQTT client on a TLS port?)"
            ),
            HandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            HandshakeError::Io(e) => write!(f, "handshake failed: {e}"),
            HandshakeError::WebSocket(why) => write!(f, "WebSocket handshake refused: {why}"),
            HandshakeError::Http => write!(f, "HTTP request answered"),
        }
    }
}

impl Stream {
    /// The stream for an accepted connection: TLS with the listener's
    /// `tls` configuration, inside WebSockets with `ws` settings.
    pub fn new(
        sock: Socket,
        tls: Option<Arc<ServerConfig>>,
        ws: Option<websockets::Settings>,
    ) -> Result<Stream, rustls::Error> {
        let stream = match tls {
            None => Stream::Plain(sock),
            Some(config) => Stream::Tls(Box::new(TlsStream {
                sock,
                tls: ServerConnection::new(config)?,
            })),
        };
        Ok(match ws {
            None => stream,
            Some(settings) => Stream::Ws(Box::new(WsStream::new(stream, settings))),
        })
    }

    /// The socket under the stream.
    pub fn socket(&self) -> &Socket {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
            Stream::Ws(w) => w.inner.socket(),
        }
    }

    pub fn peer(&self) -> io::Result<Peer> {
        self.socket().peer()
    }

    /// Whether a read shorter than asked for shows that the socket is
    /// drained (plain TCP); TLS and WebSockets return fewer bytes than they
    /// took from the socket.
    pub fn short_read_drains(&self) -> bool {
        matches!(self, Stream::Plain(_))
    }

    /// Whether output (TLS records, WebSocket frames) waits to be written.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.tls.wants_write(),
            Stream::Ws(w) => w.wants_write(),
        }
    }

    /// Bytes of output waiting inside the stream: WebSocket frames, or 1
    /// while TLS records wait.
    pub fn backlog(&self) -> usize {
        match self {
            Stream::Plain(_) => 0,
            Stream::Tls(t) => usize::from(t.tls.wants_write()),
            Stream::Ws(w) => w.backlog(),
        }
    }

    /// Writes output that waits, as far as the socket takes it.
    pub fn push(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.push(),
            Stream::Ws(w) => w.push(),
        }
    }

    /// Whether received bytes wait inside the stream (poll(2) cannot see
    /// them): decrypted by rustls, or read behind a WebSocket request.
    pub fn buffered(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t
                .tls
                .process_new_packets()
                .is_ok_and(|s| s.plaintext_bytes_to_read() > 0),
            Stream::Ws(w) => w.buffered(),
        }
    }

    /// The peer's certificate (the first of its chain), once handshaken.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.tls.peer_certificates()?.first().map(|c| c.as_ref()),
            Stream::Ws(w) => w.inner.peer_certificate(),
        }
    }

    /// Runs the TLS handshake, then the WebSocket one, to its end or to
    /// `deadline`. Bytes the client sent right behind its handshake stay
    /// buffered for `read`.
    pub fn handshake(&mut self, deadline: Instant) -> Result<(), HandshakeError> {
        let t = match self {
            Stream::Plain(_) => return Ok(()),
            Stream::Ws(w) => return w.handshake(deadline),
            Stream::Tls(t) => t,
        };
        while t.tls.is_handshaking() {
            if t.tls.wants_write() {
                match t.push() {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        wait(&t.sock, POLLOUT, deadline, "TLS")?;
                        continue;
                    }
                    Err(e) => return Err(HandshakeError::Io(e)),
                }
            }
            match t.tls.read_tls(&mut t.sock) {
                Ok(0) => return Err(HandshakeError::Closed("TLS")),
                Ok(_) => {
                    if let Err(e) = t.tls.process_new_packets() {
                        return Err(match e {
                            // No alert: the peer would not understand it.
                            rustls::Error::InvalidMessage(
                                rustls::InvalidMessage::InvalidContentType,
                            ) => HandshakeError::NotTls,
                            e => {
                                // Tell the peer why (an alert), best effort.
                                let _ = t.push();
                                HandshakeError::Tls(e)
                            }
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait(&t.sock, POLLIN, deadline, "TLS")?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(HandshakeError::Io(e)),
            }
        }
        match t.push() {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(HandshakeError::Io(e)),
        }
    }
}

/// Waits for `events` on `sock` until `deadline`, in the `what` handshake.
pub(crate) fn wait(
    sock: &Socket,
    events: i16,
    deadline: Instant,
    what: &'static str,
) -> Result<(), HandshakeError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(HandshakeError::Timeout(what));
    }
    let mut fds = [PollFd::new(sock.as_raw_fd(), events)];
    match sys::poll(&mut fds, Some(deadline - now)) {
        Ok(0) => Err(HandshakeError::Timeout(what)),
        Ok(_) => Ok(()),
        Err(e) => Err(HandshakeError::Io(e)),
    }
}

impl TlsStream {
    /// Writes pending TLS records until done or the socket is full.
    fn push(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            match self.tls.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        self.socket().as_raw_fd()
    }
}

impl Read for Stream {
    /// Plaintext; Ok(0) when the peer closed; WouldBlock when nothing waits.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Stream::Plain(s) => return s.read(buf),
            Stream::Ws(w) => return w.read(buf),
            Stream::Tls(t) => t,
        };
        loop {
            match t.tls.reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                // Closed without close_notify: a close all the same.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match t.tls.read_tls(&mut t.sock)? {
                0 => return Ok(0),
                _ => {
                    if let Err(e) = t.tls.process_new_packets() {
                        let _ = t.push();
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
            }
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = match self {
            Stream::Plain(s) => return s.write(buf),
            Stream::Ws(w) => return w.write(buf),
            Stream::Tls(t) => t,
        };
        if buf.is_empty() {
            return Ok(0);
        }
        for _ in 0..2 {
            let n = t.tls.writer().write(buf)?;
            if n > 0 {
                match t.push() {
                    Err(e) if e.kind() != io::ErrorKind::WouldBlock => return Err(e),
                    _ => return Ok(n),
                }
            }
            // rustls's buffer is full: empty it into the socket first.
            t.push()?;
        }
        Err(io::ErrorKind::WriteZero.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.push()
    }
}
