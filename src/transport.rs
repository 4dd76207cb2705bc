//! A client's byte stream: plain TCP, or TLS over TCP with rustls driven
//! sans-I/O in the client thread itself (no extra thread per client).
//!
//! Both kinds are non-blocking and read and written the same way by
//! [`crate::client::conn::Conn`]: `read` gives plaintext until it would
//! block, `write` takes plaintext and sends what the socket accepts. With
//! TLS, encrypted bytes may wait inside rustls; [`Stream::wants_write`]
//! tells the client thread to poll for POLLOUT until they are out.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Instant;

use rustls::ServerConnection;

use crate::sys::{self, POLLIN, POLLOUT, PollFd};

pub enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

pub struct TlsStream {
    pub sock: TcpStream,
    pub tls: ServerConnection,
}

/// Why a TLS handshake did not complete.
#[derive(Debug)]
pub enum HandshakeError {
    /// Not done by the deadline.
    Timeout,
    /// The peer closed the connection.
    Closed,
    /// The peer's bytes are not TLS: a plain MQTT client on a TLS port.
    NotTls,
    Tls(rustls::Error),
    Io(io::Error),
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Timeout => write!(f, "TLS handshake not finished in time"),
            HandshakeError::Closed => write!(f, "connection closed during the TLS handshake"),
            HandshakeError::NotTls => write!(
                f,
                "the client does not speak TLS (a plain MQTT client on a TLS port?)"
            ),
            HandshakeError::Tls(e) => write!(f, "TLS handshake failed: {e}"),
            HandshakeError::Io(e) => write!(f, "TLS handshake failed: {e}"),
        }
    }
}

impl Stream {
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => &t.sock,
        }
    }

    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp().peer_addr()
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }

    /// Whether encrypted output waits to be written.
    pub fn wants_write(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t.tls.wants_write(),
        }
    }

    /// Writes encrypted output that waits, as far as the socket takes it.
    pub fn push(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.push(),
        }
    }

    /// Whether decrypted bytes wait inside rustls (poll(2) cannot see them).
    pub fn buffered(&mut self) -> bool {
        match self {
            Stream::Plain(_) => false,
            Stream::Tls(t) => t
                .tls
                .process_new_packets()
                .is_ok_and(|s| s.plaintext_bytes_to_read() > 0),
        }
    }

    /// The peer's certificate (the first of its chain), once handshaken.
    pub fn peer_certificate(&self) -> Option<&[u8]> {
        match self {
            Stream::Plain(_) => None,
            Stream::Tls(t) => t.tls.peer_certificates()?.first().map(|c| c.as_ref()),
        }
    }

    /// Runs the TLS handshake to its end or to `deadline`. Plaintext the
    /// client sent right behind its handshake stays buffered for `read`.
    pub fn handshake(&mut self, deadline: Instant) -> Result<(), HandshakeError> {
        let Stream::Tls(t) = self else {
            return Ok(());
        };
        while t.tls.is_handshaking() {
            if t.tls.wants_write() {
                match t.push() {
                    Ok(()) => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        wait(&t.sock, POLLOUT, deadline)?;
                        continue;
                    }
                    Err(e) => return Err(HandshakeError::Io(e)),
                }
            }
            match t.tls.read_tls(&mut t.sock) {
                Ok(0) => return Err(HandshakeError::Closed),
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
                    wait(&t.sock, POLLIN, deadline)?;
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

/// Waits for `events` on `sock` until `deadline`.
fn wait(sock: &TcpStream, events: i16, deadline: Instant) -> Result<(), HandshakeError> {
    let now = Instant::now();
    if now >= deadline {
        return Err(HandshakeError::Timeout);
    }
    let mut fds = [PollFd::new(sock.as_raw_fd(), events)];
    match sys::poll(&mut fds, Some(deadline - now)) {
        Ok(0) => Err(HandshakeError::Timeout),
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
        self.tcp().as_raw_fd()
    }
}

impl Read for Stream {
    /// Plaintext; Ok(0) when the peer closed; WouldBlock when nothing waits.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = match self {
            Stream::Plain(s) => return s.read(buf),
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
