//! The client side of MQTT, shared by the bridge and the command-line
//! tools: the byte stream to a broker (TCP, a Unix socket or TLS) and the
//! words a client prints.

pub mod tls;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use tls::TlsStream;

/// Mosquitto's words for a CONNACK return code (mosquitto_connack_string),
/// or for an MQTT 5 reason code (mosquitto_reason_string).
pub fn connack_string(code: u8) -> &'static str {
    if code >= 0x80 {
        return crate::codec::reason::text(code);
    }
    match code {
        0 => "Connection Accepted.",
        1 => "Connection Refused: unacceptable protocol version.",
        2 => "Connection Refused: identifier rejected.",
        3 => "Connection Refused: broker unavailable.",
        4 => "Connection Refused: bad user name or password.",
        5 => "Connection Refused: not authorised.",
        _ => "Connection Refused: unknown reason.",
    }
}

/// An error's text without Rust's " (os error N)", as strerror(3) gives it.
pub fn strerror(e: &io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// The byte stream to the broker.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
}

impl Stream {
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
            Stream::Tls(s) => s.sock.as_raw_fd(),
        }
    }

    pub(crate) fn shutdown(&mut self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Tls(s) => {
                s.conn.send_close_notify();
                let _ = s.conn.complete_io(&mut s.sock);
                s.sock.shutdown(std::net::Shutdown::Both)
            }
        };
    }

    /// Whether bytes were already decrypted and wait to be read (poll(2)
    /// on the socket cannot see them).
    pub(crate) fn buffered(&mut self) -> bool {
        match self {
            Stream::Tls(s) => s
                .conn
                .process_new_packets()
                .is_ok_and(|st| st.plaintext_bytes_to_read() > 0),
            _ => false,
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}
