//! The client side of MQTT, shared by the bridge and the command-line
//! tools: dialling a broker (from a bind address, within a connect
//! timeout), the byte stream to it (TCP, a Unix socket or TLS), the
//! CONNECT exchange, and a packet reader that keeps the connection alive
//! with PINGREQ and polls one extra descriptor of the caller's.
//!
//! [`Link`] knows no QoS flows: the bridge and the tools answer the
//! packets it returns in their own ways.

pub mod tls;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::codec::{
    self, ConnAck, Connect, DecodeError, Level, MAX_REMAINING, Packet, Properties, Value, props,
};
use crate::sys::{self, PollFd};
use tls::TlsStream;

/// How long opening a TCP connection may take; the bridge gives its TLS
/// handshake and CONNACK as long again.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
pub enum LinkStream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream>),
}

impl LinkStream {
    pub(crate) fn fd(&self) -> RawFd {
        match self {
            LinkStream::Tcp(s) => s.as_raw_fd(),
            LinkStream::Unix(s) => s.as_raw_fd(),
            LinkStream::Tls(s) => s.sock.as_raw_fd(),
        }
    }

    pub(crate) fn shutdown(&mut self) {
        let _ = match self {
            LinkStream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            LinkStream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
            LinkStream::Tls(s) => {
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
            LinkStream::Tls(s) => s
                .conn
                .process_new_packets()
                .is_ok_and(|st| st.plaintext_bytes_to_read() > 0),
            _ => false,
        }
    }
}

impl Read for LinkStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            LinkStream::Tcp(s) => s.read(buf),
            LinkStream::Unix(s) => s.read(buf),
            LinkStream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for LinkStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            LinkStream::Tcp(s) => s.write(buf),
            LinkStream::Unix(s) => s.write(buf),
            LinkStream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            LinkStream::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// Why [`dial`] did not connect.
#[derive(Debug)]
pub enum DialError {
    /// The host or the bind address did not resolve.
    Lookup(io::Error),
    /// The host resolved to no address.
    NoAddress,
    /// No address took the connection; the last error.
    Connect(io::Error),
}

/// Opens a TCP connection to `host:port`, from `bind` if given; each
/// address has [`CONNECT_TIMEOUT`].
pub fn dial(host: &str, port: u16, bind: Option<&str>) -> Result<TcpStream, DialError> {
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(DialError::Lookup)?
        .collect();
    let locals: Vec<SocketAddr> = match bind {
        Some(b) => (b, 0)
            .to_socket_addrs()
            .map_err(DialError::Lookup)?
            .collect(),
        None => Vec::new(),
    };
    if addrs.is_empty() {
        return Err(DialError::NoAddress);
    }
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for addr in &addrs {
        let r = match bind {
            None => TcpStream::connect_timeout(addr, CONNECT_TIMEOUT),
            Some(_) => match locals.iter().find(|l| l.is_ipv4() == addr.is_ipv4()) {
                Some(l) => sys::connect_from(*l, *addr),
                None => continue,
            },
        };
        match r {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(DialError::Connect(last))
}

/// MQTT 3 sends a password only with a user name, as libmosquitto does.
pub fn password(username: &Option<String>, password: &Option<String>) -> Option<Vec<u8>> {
    username
        .as_ref()
        .and(password.as_ref())
        .map(|p| p.as_bytes().to_vec())
}

/// MQTT 5: adds the session expiry interval to the CONNECT properties
/// `p`, unless they have one: `asked` if given, else "never" for a
/// persistent session (clean false), which would otherwise end with its
/// connection, as Mosquitto's bridges and tools ask.
pub fn add_session_expiry(p: &mut Properties, level: Level, clean: bool, asked: Option<u32>) {
    if level != Level::V5 || p.get(props::id::SESSION_EXPIRY).is_some() {
        return;
    }
    let expiry = match (asked, clean) {
        (Some(x), _) => Some(x),
        (None, false) => Some(u32::MAX),
        (None, true) => None,
    };
    if let Some(x) = expiry.filter(|&x| x > 0) {
        p.push(props::id::SESSION_EXPIRY, Value::Four(x));
    }
}

/// The connection ended.
#[derive(Debug)]
pub enum Lost {
    /// The broker closed it, or a read or write failed.
    Closed,
    /// No PINGRESP within the keepalive interval.
    Timeout,
    /// The broker sent bytes the codec refuses.
    Protocol(DecodeError),
}

/// What [`Link::next`] returns.
#[derive(Debug)]
pub enum Next {
    Packet(Packet),
    /// The extra descriptor is readable.
    Input,
    Deadline,
}

/// Why [`Link::handshake`] gave no CONNACK.
#[derive(Debug)]
pub enum NoConnAck {
    /// CONNECT could not be written.
    Write(io::Error),
    /// The connection ended first.
    Lost(Lost),
    /// The broker answered another packet.
    Unexpected,
    /// The deadline passed first.
    Deadline,
}

/// A connection to a broker, from CONNECT on.
pub struct Link {
    pub stream: LinkStream,
    level: Level,
    keepalive: Duration,
    /// The client id as libmosquitto's debug lines print it, when they are
    /// printed (the tools' `-d`).
    debug: Option<String>,
    /// Bytes read and not yet decoded; `0 <= pos <= buf.len()`.
    buf: Vec<u8>,
    pos: usize,
    last_in: Instant,
    last_out: Instant,
    ping_sent: Option<Instant>,
}

impl Link {
    /// A link over `stream`, speaking `level`, with a keepalive of
    /// `keepalive` seconds (0: none).
    pub fn new(stream: LinkStream, level: Level, keepalive: u16, debug: Option<String>) -> Link {
        let now = Instant::now();
        Link {
            stream,
            level,
            keepalive: Duration::from_secs(u64::from(keepalive)),
            debug,
            buf: Vec::new(),
            pos: 0,
            last_in: now,
            last_out: now,
            ping_sent: None,
        }
    }

    pub fn level(&self) -> Level {
        self.level
    }

    /// Prints a libmosquitto debug line, with `-d`.
    pub fn log(&self, what: &str) {
        if let Some(id) = &self.debug {
            println!("Client {id} {what}");
        }
    }

    /// Writes encoded packets.
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        self.last_out = Instant::now();
        Ok(())
    }

    /// Encodes and writes one packet.
    pub fn send(&mut self, p: &Packet) -> io::Result<()> {
        let mut out = Vec::new();
        codec::encode(p, self.level, &mut out);
        self.write(&out)
    }

    /// Sends CONNECT and waits for CONNACK until `deadline`.
    pub fn handshake(
        &mut self,
        connect: Connect,
        deadline: Option<Instant>,
    ) -> Result<ConnAck, NoConnAck> {
        self.log("sending CONNECT");
        self.send(&Packet::Connect(connect))
            .map_err(NoConnAck::Write)?;
        match self.next(None, deadline) {
            Ok(Next::Packet(Packet::ConnAck(a))) => {
                self.log(&format!("received CONNACK ({})", a.code));
                Ok(a)
            }
            Ok(Next::Packet(_)) => Err(NoConnAck::Unexpected),
            Ok(_) => Err(NoConnAck::Deadline),
            Err(e) => Err(NoConnAck::Lost(e)),
        }
    }

    /// The next packet from the broker; `Input` when `extra` is readable,
    /// `Deadline` at `deadline`. Sends PINGREQ when the keepalive interval
    /// passes quietly [MQTT-3.1.2-23]; no PINGRESP within another is a
    /// loss.
    pub fn next(&mut self, extra: Option<RawFd>, deadline: Option<Instant>) -> Result<Next, Lost> {
        loop {
            let rest = &self.buf[self.pos..];
            if let Some(h) = codec::check(rest, MAX_REMAINING + 5).map_err(Lost::Protocol)? {
                if rest.len() >= h.total_len() {
                    let body = &rest[h.header_len..h.total_len()];
                    let p = codec::decode(&h, body, self.level).map_err(Lost::Protocol)?;
                    self.pos += h.total_len();
                    if self.pos == self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                    }
                    self.last_in = Instant::now();
                    if matches!(p, Packet::PingResp) {
                        self.ping_sent = None;
                    }
                    return Ok(Next::Packet(p));
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(Next::Deadline);
            }
            let mut wake = deadline;
            if !self.keepalive.is_zero() {
                if let Some(sent) = self.ping_sent {
                    if now >= sent + self.keepalive {
                        return Err(Lost::Timeout);
                    }
                    wake = earliest(wake, sent + self.keepalive);
                } else {
                    let due = self.last_out.min(self.last_in) + self.keepalive;
                    if now >= due {
                        self.log("sending PINGREQ");
                        self.send(&Packet::PingReq).map_err(|_| Lost::Closed)?;
                        self.ping_sent = Some(now);
                        continue;
                    }
                    wake = earliest(wake, due);
                }
            }
            let ready = self.stream.buffered();
            let mut fds = vec![PollFd::new(self.stream.fd(), libc::POLLIN)];
            if let Some(fd) = extra {
                fds.push(PollFd::new(fd, libc::POLLIN));
            }
            if !ready {
                let timeout = wake.map(|w| w.saturating_duration_since(now));
                sys::poll(&mut fds, timeout).map_err(|_| Lost::Closed)?;
            }
            if ready || fds[0].revents() != 0 {
                self.fill()?;
                continue;
            }
            if fds.get(1).is_some_and(|f| f.revents() != 0) {
                return Ok(Next::Input);
            }
        }
    }

    fn fill(&mut self) -> Result<(), Lost> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(Lost::Closed),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(_) => Err(Lost::Closed),
        }
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}
