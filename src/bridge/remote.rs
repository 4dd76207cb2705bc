//! The bridge's connection to the remote broker: open TCP (and TLS, through
//! the client tools' rustls set-up and midge's certificate checks), CONNECT
//! with Mosquitto's bridge bit, and a packet reader that polls the socket
//! together with the bridge's outbox wake fd.
//!
//! Packets are built in [`connect_packet`] and by the caller; the protocol
//! version comes from [`level`], the one place that maps the config to it.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use crate::codec::{
    self, Connect, DecodeError, Disconnect, Level, MAX_REMAINING, Packet, Properties, QoS, Value,
    Will,
};
use crate::config::{Bridge, BridgeProtocol, TlsVersion};
use crate::link::{Stream, strerror, tls};
use crate::sys::{self, PollFd};

/// How long opening the socket, the TLS handshake and CONNACK may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The MQTT version for a bridge's configured protocol.
pub fn level(p: BridgeProtocol) -> Level {
    match p {
        BridgeProtocol::V31 => Level::V31,
        BridgeProtocol::V311 => Level::V311,
        BridgeProtocol::V5 => Level::V5,
    }
}

/// The rustls configuration of a TLS bridge, read at start-up so that a
/// bad file stops the broker with its message.
pub fn tls_config(b: &Bridge) -> Result<Option<Arc<ClientConfig>>, String> {
    if !b.tls.enabled() {
        return Ok(None);
    }
    let t = &b.tls;
    let opts = tls::Options {
        cafile: t.cafile.clone(),
        capath: t.capath.clone(),
        cert: t.certfile.clone(),
        key: t.keyfile.clone(),
        insecure: t.insecure,
        version: Some(match t.version {
            TlsVersion::Tls12 => "tlsv1.2".into(),
            TlsVersion::Tls13 => "tlsv1.3".into(),
        }),
        ciphers: None,
        alpn: t.alpn.clone(),
        // No CA file or directory: the public roots midge carries.
        os_certs: t.cafile.is_none() && t.capath.is_none(),
    };
    opts.client_config()
        .map(Some)
        .map_err(|e| format!("bridge {}: {}", b.name, e.replace('\n', " ")))
}

/// Why a connection attempt failed; the text is the log line's.
#[derive(Debug)]
pub enum Failure {
    /// The host name did not resolve.
    Lookup(String),
    /// TCP connect, TLS or the CONNECT exchange failed.
    Io(String),
    /// CONNACK with a non-zero return code.
    Refused(u8),
}

/// The connection ended.
#[derive(Debug)]
pub enum Lost {
    /// The remote closed it, or a read or write failed.
    Closed,
    /// No PINGRESP within the keepalive interval.
    Timeout,
    /// The remote sent bytes the codec refuses.
    Protocol(DecodeError),
}

/// A connected session with the remote broker.
pub struct Remote {
    stream: Stream,
    level: Level,
    keepalive: Duration,
    /// Bytes read and not yet decoded; `0 <= pos <= buf.len()`.
    buf: Vec<u8>,
    pos: usize,
    last_in: Instant,
    last_out: Instant,
    ping_sent: Option<Instant>,
    /// `bridge_max_packet_size`: larger outgoing packets are not sent.
    max_packet: usize,
    pub session_present: bool,
}

/// What [`Remote::send`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    Written,
    /// Larger than `bridge_max_packet_size`, so not sent; its remaining
    /// length, the size Mosquitto's log line gives.
    TooLarge(usize),
}

/// What [`Remote::next`] returns.
#[derive(Debug)]
pub enum Next {
    Packet(Packet),
    /// The extra descriptor is readable.
    Input,
    Deadline,
}

/// MQTT 5: a persistent remote session (cleansession false) must ask for
/// a session expiry, or it ends with the connection; Mosquitto's bridges
/// ask for "never".
fn connect_properties(b: &Bridge) -> Properties {
    let mut p = Properties::default();
    if b.protocol == BridgeProtocol::V5 && !b.clean_session {
        p.push(
            crate::codec::props::id::SESSION_EXPIRY,
            Value::Four(u32::MAX),
        );
    }
    p
}

/// The CONNECT a bridge sends: its client id, credentials, and the will
/// that tells the remote side the bridge is gone.
pub fn connect_packet(b: &Bridge) -> Connect {
    let will = (b.notifications && !b.notifications_local_only).then(|| Will {
        topic: Arc::from(b.notification_topic.as_str()),
        payload: Arc::from(&b"0"[..]),
        qos: QoS::AtLeastOnce,
        retain: true,
        props: None,
    });
    Connect {
        level: level(b.protocol),
        client_id: b.remote_clientid.clone(),
        clean: b.clean_session,
        keep_alive: b.keepalive,
        username: b.remote_username.clone(),
        password: b
            .remote_username
            .as_ref()
            .and(b.remote_password.as_ref())
            .map(|p| p.as_bytes().to_vec()),
        will,
        bridge: false,
        props: connect_properties(b),
    }
}

/// Opens a TCP connection to `host:port`, from `bind` if given.
fn open_tcp(host: &str, port: u16, bind: Option<&str>) -> Result<TcpStream, Failure> {
    let lookup = |e: io::Error| Failure::Lookup(strerror(&e));
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(lookup)?.collect();
    let locals: Vec<SocketAddr> = match bind {
        Some(b) => (b, 0).to_socket_addrs().map_err(lookup)?.collect(),
        None => Vec::new(),
    };
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
    Err(Failure::Io(strerror(&last)))
}

impl Remote {
    /// Connects to `host:port` and exchanges CONNECT and CONNACK.
    /// `private`: set Mosquitto's bridge bit on the protocol level.
    pub fn connect(
        b: &Bridge,
        host: &str,
        port: u16,
        tls: Option<&Arc<ClientConfig>>,
        private: bool,
    ) -> Result<Remote, Failure> {
        let tcp = open_tcp(host, port, b.bind_address.as_deref())?;
        let _ = tcp.set_nodelay(true);
        let _ = tcp.set_read_timeout(Some(CONNECT_TIMEOUT));
        let _ = tcp.set_write_timeout(Some(CONNECT_TIMEOUT));
        let stream = match tls {
            None => Stream::Tcp(tcp),
            Some(config) => {
                let s = tls::connect(config.clone(), host, tcp).map_err(|e| {
                    // The tools' text is two lines; the first says why.
                    Failure::Io(e.lines().next().unwrap_or("TLS error").to_string())
                })?;
                Stream::Tls(Box::new(s))
            }
        };
        let now = Instant::now();
        let mut r = Remote {
            stream,
            level: level(b.protocol),
            keepalive: Duration::from_secs(u64::from(b.keepalive)),
            buf: Vec::new(),
            pos: 0,
            last_in: now,
            last_out: now,
            ping_sent: None,
            max_packet: if b.max_packet_size == 0 {
                usize::MAX
            } else {
                b.max_packet_size as usize
            },
            session_present: false,
        };
        let mut connect = connect_packet(b);
        // MQTT 5 has no bridge bit (no-local subscriptions instead).
        connect.bridge = private && connect.level != Level::V5;
        let mut out = Vec::new();
        codec::encode(&Packet::Connect(connect), r.level, &mut out);
        r.write(&out).map_err(|e| Failure::Io(strerror(&e)))?;
        let deadline = Instant::now() + CONNECT_TIMEOUT;
        let ack = match r.next(None, Some(deadline)) {
            Ok(Next::Packet(Packet::ConnAck(a))) => a,
            Ok(Next::Packet(_)) => return Err(Failure::Io("protocol error".into())),
            Ok(_) => return Err(Failure::Io("no CONNACK in time".into())),
            Err(Lost::Protocol(e)) => return Err(Failure::Io(format!("protocol error: {e}"))),
            Err(_) => return Err(Failure::Io("connection closed by the remote broker".into())),
        };
        if ack.code != 0 {
            return Err(Failure::Refused(ack.code));
        }
        r.session_present = ack.session_present;
        if let Stream::Tcp(s) = &r.stream {
            let _ = s.set_read_timeout(None);
        } else if let Stream::Tls(s) = &r.stream {
            let _ = s.sock.set_read_timeout(None);
        }
        Ok(r)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()?;
        self.last_out = Instant::now();
        Ok(())
    }

    /// Sends one packet. A packet over `bridge_max_packet_size` is dropped,
    /// as Mosquitto drops it.
    pub fn send(&mut self, p: &Packet) -> Result<Sent, Lost> {
        let mut out = Vec::new();
        codec::encode(p, self.level, &mut out);
        // Mosquitto counts the remaining length and its own length bytes,
        // not the first byte, against the limit.
        if out.len() - 1 > self.max_packet {
            let length_bytes = 1 + out[1..].iter().take_while(|b| *b & 0x80 != 0).count();
            return Ok(Sent::TooLarge(out.len() - 1 - length_bytes));
        }
        self.write(&out).map_err(|_| Lost::Closed)?;
        Ok(Sent::Written)
    }

    /// Sends DISCONNECT and closes.
    pub fn close(mut self) {
        let _ = self.send(&Packet::Disconnect(Disconnect::default()));
        self.stream.shutdown();
    }

    /// The next packet from the remote; `Input` when `extra` is readable,
    /// `Deadline` at `deadline`. Sends PINGREQ when the keepalive interval
    /// passes quietly [MQTT-3.1.2-23].
    pub fn next(&mut self, extra: Option<RawFd>, deadline: Option<Instant>) -> Result<Next, Lost> {
        loop {
            let rest = &self.buf[self.pos..];
            if let Some(h) = codec::check(rest, MAX_REMAINING + 5).map_err(Lost::Protocol)? {
                if rest.len() >= h.total_len() {
                    let body = &rest[h.header_len..h.total_len()];
                    let p = codec::decode(&h, body, self.level).map_err(Lost::Protocol)?;
                    self.pos += h.total_len();
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
                    wake =
                        Some(wake.map_or(sent + self.keepalive, |w| w.min(sent + self.keepalive)));
                } else {
                    let due = self.last_out.min(self.last_in) + self.keepalive;
                    if now >= due {
                        self.send(&Packet::PingReq)?;
                        self.ping_sent = Some(now);
                        continue;
                    }
                    wake = Some(wake.map_or(due, |w| w.min(due)));
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
