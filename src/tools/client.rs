//! The connection shared by `midge_pub` and `midge_sub` (Mosquitto's
//! client_shared.c and the part of libmosquitto they use): open the socket,
//! CONNECT, then one poll(2) loop that reads packets with midge's own codec,
//! answers the broker's acknowledgements, keeps the connection alive with
//! PINGREQ and hands messages and SUBACKs to the tool.
//!
//! Everything is on one thread. [`Stream`] is where a TLS stream slots in
//! later: the loop only needs bytes in, bytes out and a file descriptor to
//! poll.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::args::Config;
use crate::codec::{
    self, Ack, Connect, DecodeError, Disconnect, Level, MAX_REMAINING, Packet, Properties,
    PubProps, Publish, QoS, SubAck, Subscribe, SubscribeFilter, Unsubscribe, Value, Will, props,
};
use crate::link::{Stream, strerror, tls};
use crate::sys::{self, PollFd};

/// How a tool run ends: the exit code, and what goes to stderr first
/// (nothing with `--quiet`).
#[derive(Debug)]
pub struct Exit {
    pub code: u8,
    pub msg: String,
}

impl Exit {
    pub fn new(code: u8, msg: impl Into<String>) -> Exit {
        Exit {
            code,
            msg: msg.into(),
        }
    }
}

/// libmosquitto's error numbers, which the tools use as exit codes.
pub mod rc {
    pub const PROTOCOL: u8 = 2;
    pub const CONN_REFUSED: u8 = 5;
    pub const CONN_LOST: u8 = 7;
    pub const TIMEOUT: u8 = 27;
}

/// Opens the socket `cfg` names. The error is the line Mosquitto's tools
/// print, with exit code 1.
pub fn open(cfg: &Config) -> Result<Stream, Exit> {
    if let Some(path) = &cfg.unix {
        return UnixStream::connect(path)
            .map(Stream::Unix)
            .map_err(|e| Exit::new(1, format!("Error: {}\n", strerror(&e))));
    }
    let host = cfg.host.as_deref().unwrap_or("localhost");
    // Certificates and keys are read before connecting, so that a bad
    // file is reported as such.
    let tls = match cfg.tls.enabled() {
        true => Some(
            cfg.tls
                .client_config()
                .map_err(|e| Exit::new(1, format!("{e}\n")))?,
        ),
        false => None,
    };
    // Mosquitto's tools: 8883 when TLS is asked for.
    let port = cfg.port.unwrap_or(if tls.is_some() { 8883 } else { 1883 });
    let lookup = || Exit::new(1, "Unable to connect (Lookup error.).\n");
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|_| lookup())?
        .collect();
    let bind: Option<Vec<SocketAddr>> = match &cfg.bind_address {
        Some(b) => Some(
            (b.as_str(), 0)
                .to_socket_addrs()
                .map_err(|_| lookup())?
                .collect(),
        ),
        None => None,
    };
    let mut last = io::Error::from(io::ErrorKind::NotFound);
    for addr in &addrs {
        let r = match &bind {
            None => TcpStream::connect(addr),
            Some(locals) => match locals.iter().find(|l| l.is_ipv4() == addr.is_ipv4()) {
                Some(l) => sys::connect_from(*l, *addr),
                None => continue,
            },
        };
        match r {
            Ok(s) => {
                if cfg.nodelay {
                    let _ = s.set_nodelay(true);
                }
                let Some(config) = tls else {
                    return Ok(Stream::Tcp(s));
                };
                return tls::connect(config, host, s)
                    .map(|t| Stream::Tls(Box::new(t)))
                    .map_err(|e| Exit::new(1, format!("{e}\n")));
            }
            Err(e) => last = e,
        }
    }
    if addrs.is_empty() {
        return Err(lookup());
    }
    Err(Exit::new(1, format!("Error: {}\n", strerror(&last))))
}

/// Why the loop stopped without a packet.
#[derive(Debug)]
pub enum Broken {
    /// The broker closed the connection, or it failed.
    Lost,
    /// The broker sent bytes midge's codec refuses.
    Protocol(DecodeError),
}

/// What [`Client::next`] returns.
#[derive(Debug)]
pub enum Event {
    /// A message for the tool, once its QoS exchange allows delivery.
    Message(Publish),
    SubAck(SubAck),
    UnsubAck(u16),
    /// The broker acknowledged one of our messages completely.
    Acked(u16),
    /// The extra descriptor passed to `next` is readable.
    Input,
    /// The deadline passed to `next` has come.
    Deadline,
}

/// A connected session with the broker.
pub struct Client {
    stream: Stream,
    level: Level,
    /// The id as libmosquitto's debug lines print it.
    log_id: String,
    debug: bool,
    keepalive: Duration,
    /// Bytes read and not yet decoded; `0 <= pos <= buf.len()`.
    buf: Vec<u8>,
    pos: usize,
    last_in: Instant,
    last_out: Instant,
    ping_sent: Option<Instant>,
    next_mid: u16,
    /// Our QoS 1 and 2 messages the broker has not finished acknowledging.
    inflight: HashSet<u16>,
    /// QoS 2 messages received, delivered on PUBREL as libmosquitto does.
    incoming: HashMap<u16, Publish>,
    /// MQTT 5 (`-D`): the properties of every PUBLISH, SUBSCRIBE and
    /// DISCONNECT sent.
    publish_props: Option<Arc<PubProps>>,
    subscribe_props: Properties,
    disconnect_props: Properties,
}

impl Client {
    /// Opens the connection, sends CONNECT and waits for CONNACK. A refusal
    /// is `Err(code)` with the CONNACK return code, after the tool's line.
    pub fn connect(cfg: &Config, deadline: Option<Instant>) -> Result<Client, ConnectError> {
        let stream = open(cfg).map_err(ConnectError::Exit)?;
        let id = cfg.client_id();
        let now = Instant::now();
        let mut c = Client {
            stream,
            level: cfg.level,
            log_id: if id.is_empty() {
                "(null)".into()
            } else {
                id.clone()
            },
            debug: cfg.debug,
            keepalive: Duration::from_secs(u64::from(cfg.keepalive)),
            buf: Vec::new(),
            pos: 0,
            last_in: now,
            last_out: now,
            ping_sent: None,
            next_mid: 0,
            inflight: HashSet::new(),
            incoming: HashMap::new(),
            publish_props: (!cfg.props.publish.is_empty())
                .then(|| Arc::new(PubProps::from_properties(&cfg.props.publish, now))),
            subscribe_props: cfg.props.subscribe.clone(),
            disconnect_props: cfg.props.disconnect.clone(),
        };
        let will = cfg.will_topic.as_ref().map(|t| Will {
            topic: Arc::from(t.as_str()),
            payload: Arc::from(cfg.will_payload.clone().unwrap_or_default()),
            qos: cfg.will_qos,
            retain: cfg.will_retain,
            props: (!cfg.props.will.is_empty())
                .then(|| Arc::new(PubProps::from_properties(&cfg.props.will, now))),
        });
        let connect = Connect {
            level: cfg.level,
            client_id: id,
            clean: cfg.clean,
            keep_alive: cfg.keepalive,
            // MQTT 3 sends a password only with a user name, as libmosquitto.
            password: cfg
                .username
                .as_ref()
                .and(cfg.password.as_ref())
                .map(|p| p.as_bytes().to_vec()),
            username: cfg.username.clone(),
            will,
            props: connect_properties(cfg),
            bridge: false,
        };
        c.log("sending CONNECT");
        c.send(&Packet::Connect(connect))
            .map_err(|_| ConnectError::Lost)?;
        match c.read_packet(None, deadline) {
            Ok(Some(Packet::ConnAck(a))) => {
                c.log(&format!("received CONNACK ({})", a.code));
                if a.code != 0 {
                    return Err(ConnectError::Refused(a.code));
                }
                Ok(c)
            }
            Ok(Some(_)) | Err(Broken::Protocol(_)) => Err(ConnectError::Protocol),
            Ok(None) => Err(ConnectError::Deadline),
            Err(Broken::Lost) => Err(ConnectError::Lost),
        }
    }

    fn log(&self, what: &str) {
        if self.debug {
            println!("Client {} {what}", self.log_id);
        }
    }

    fn send(&mut self, p: &Packet) -> io::Result<()> {
        let mut out = Vec::new();
        codec::encode(p, self.level, &mut out);
        self.stream.write_all(&out)?;
        self.last_out = Instant::now();
        Ok(())
    }

    fn mid(&mut self) -> u16 {
        self.next_mid = self.next_mid.checked_add(1).unwrap_or(1);
        self.next_mid
    }

    /// Sends a PUBLISH; returns its message id (counted for QoS 0 too, as
    /// libmosquitto does).
    pub fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
        qos: QoS,
        retain: bool,
    ) -> Result<u16, Broken> {
        let mid = self.mid();
        self.log(&format!(
            "sending PUBLISH (d0, q{}, r{}, m{mid}, '{topic}', ... ({} bytes))",
            qos as u8,
            u8::from(retain),
            payload.len()
        ));
        let p = Publish {
            dup: false,
            qos,
            retain,
            topic: Arc::from(topic),
            pkid: if qos == QoS::AtMostOnce { 0 } else { mid },
            payload: Arc::from(payload),
            props: self.publish_props.clone(),
        };
        if qos != QoS::AtMostOnce {
            self.inflight.insert(mid);
        }
        self.send(&Packet::Publish(p)).map_err(|_| Broken::Lost)?;
        Ok(mid)
    }

    /// How many of our messages still wait for their acknowledgement.
    pub fn inflight(&self) -> usize {
        self.inflight.len()
    }

    pub fn subscribe(&mut self, filters: &[String], qos: QoS) -> Result<u16, Broken> {
        let mid = self.mid();
        for f in filters {
            self.log(&format!(
                "sending SUBSCRIBE (Mid: {mid}, Topic: {f}, QoS: {}, Options: 0x00)",
                qos as u8
            ));
        }
        let s = Subscribe {
            pkid: mid,
            filters: filters
                .iter()
                .map(|f| SubscribeFilter::new(f, qos))
                .collect(),
            sub_id: self.subscribe_props.int(props::id::SUBSCRIPTION_ID),
            props: Properties(
                self.subscribe_props
                    .0
                    .iter()
                    .filter(|(i, _)| *i != props::id::SUBSCRIPTION_ID)
                    .cloned()
                    .collect(),
            ),
        };
        self.send(&Packet::Subscribe(s)).map_err(|_| Broken::Lost)?;
        Ok(mid)
    }

    pub fn unsubscribe(&mut self, filter: &str) -> Result<u16, Broken> {
        let mid = self.mid();
        self.log(&format!(
            "sending UNSUBSCRIBE (Mid: {mid}, Topic: {filter})"
        ));
        let u = Unsubscribe {
            pkid: mid,
            filters: vec![filter.to_string()],
        };
        self.send(&Packet::Unsubscribe(u))
            .map_err(|_| Broken::Lost)?;
        Ok(mid)
    }

    /// Sends DISCONNECT and closes the connection.
    pub fn disconnect(mut self) {
        self.log("sending DISCONNECT");
        let d = Disconnect {
            reason: 0,
            props: std::mem::take(&mut self.disconnect_props),
        };
        let _ = self.send(&Packet::Disconnect(d));
        self.stream.shutdown();
    }

    /// Waits for the next event: a packet the tool must see (acknowledgements
    /// are answered here), `extra` readable, or `deadline`.
    pub fn next(
        &mut self,
        extra: Option<RawFd>,
        deadline: Option<Instant>,
    ) -> Result<Event, Broken> {
        loop {
            let Some(p) = self.read_packet(extra, deadline)? else {
                return Ok(if deadline.is_some_and(|d| Instant::now() >= d) {
                    Event::Deadline
                } else {
                    Event::Input
                });
            };
            let send = |c: &mut Client, p: Packet| c.send(&p).map_err(|_| Broken::Lost);
            match p {
                Packet::Publish(m) => {
                    self.log(&format!(
                        "received PUBLISH (d{}, q{}, r{}, m{}, '{}', ... ({} bytes))",
                        u8::from(m.dup),
                        m.qos as u8,
                        u8::from(m.retain),
                        m.pkid,
                        m.topic,
                        m.payload.len()
                    ));
                    match m.qos {
                        QoS::AtMostOnce => return Ok(Event::Message(m)),
                        QoS::AtLeastOnce => {
                            self.log(&format!("sending PUBACK (m{}, rc0)", m.pkid));
                            send(self, Packet::PubAck(Ack::ok(m.pkid)))?;
                            return Ok(Event::Message(m));
                        }
                        QoS::ExactlyOnce => {
                            self.log(&format!("sending PUBREC (m{}, rc0)", m.pkid));
                            send(self, Packet::PubRec(Ack::ok(m.pkid)))?;
                            self.incoming.insert(m.pkid, m);
                        }
                    }
                }
                Packet::PubRel(Ack { pkid: id, .. }) => {
                    self.log(&format!("received PUBREL (Mid: {id})"));
                    self.log(&format!("sending PUBCOMP (m{id})"));
                    send(self, Packet::PubComp(Ack::ok(id)))?;
                    if let Some(m) = self.incoming.remove(&id) {
                        return Ok(Event::Message(m));
                    }
                }
                Packet::PubAck(Ack { pkid: id, reason }) => {
                    self.log(&format!("received PUBACK (Mid: {id}, RC:{reason})"));
                    if self.inflight.remove(&id) {
                        return Ok(Event::Acked(id));
                    }
                }
                Packet::PubRec(Ack { pkid: id, reason }) => {
                    self.log(&format!("received PUBREC (Mid: {id})"));
                    // An error PUBREC ends the exchange [MQTT-4.3.3].
                    if reason >= 0x80 {
                        if self.inflight.remove(&id) {
                            return Ok(Event::Acked(id));
                        }
                        continue;
                    }
                    self.log(&format!("sending PUBREL (m{id})"));
                    send(self, Packet::PubRel(Ack::ok(id)))?;
                }
                Packet::PubComp(Ack { pkid: id, reason }) => {
                    self.log(&format!("received PUBCOMP (Mid: {id}, RC:{reason})"));
                    if self.inflight.remove(&id) {
                        return Ok(Event::Acked(id));
                    }
                }
                Packet::SubAck(s) => {
                    self.log("received SUBACK");
                    return Ok(Event::SubAck(s));
                }
                Packet::UnsubAck(u) => {
                    self.log("received UNSUBACK");
                    return Ok(Event::UnsubAck(u.pkid));
                }
                Packet::PingResp => {
                    self.log("received PINGRESP");
                    self.ping_sent = None;
                }
                // A broker sends none of the others to a client.
                other => return Err(Broken::Protocol(DecodeError::BadFlags(other.kind()))),
            }
        }
    }

    /// The next whole packet; `None` when `extra` is readable or at the
    /// deadline. Sends PINGREQ when the keep alive interval passes quietly.
    fn read_packet(
        &mut self,
        extra: Option<RawFd>,
        deadline: Option<Instant>,
    ) -> Result<Option<Packet>, Broken> {
        loop {
            let rest = &self.buf[self.pos..];
            if let Some(h) = codec::check(rest, MAX_REMAINING + 5).map_err(Broken::Protocol)? {
                if rest.len() >= h.total_len() {
                    let body = &rest[h.header_len..h.total_len()];
                    let p = codec::decode(&h, body, self.level).map_err(Broken::Protocol)?;
                    self.pos += h.total_len();
                    if self.pos == self.buf.len() {
                        self.buf.clear();
                        self.pos = 0;
                    }
                    self.last_in = Instant::now();
                    return Ok(Some(p));
                }
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return Ok(None);
            }
            // Keep alive [MQTT-3.1.2-23]: a PINGREQ when nothing went either
            // way for the interval; no PINGRESP within another is a loss.
            let mut wake = deadline;
            if !self.keepalive.is_zero() {
                if let Some(sent) = self.ping_sent {
                    if now >= sent + self.keepalive {
                        return Err(Broken::Lost);
                    }
                    wake = earliest(wake, sent + self.keepalive);
                } else {
                    let due = self.last_out.min(self.last_in) + self.keepalive;
                    if now >= due {
                        self.log("sending PINGREQ");
                        self.send(&Packet::PingReq).map_err(|_| Broken::Lost)?;
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
            let timeout = wake.map(|w| w.saturating_duration_since(now));
            if !ready {
                sys::poll(&mut fds, timeout).map_err(|_| Broken::Lost)?;
            }
            if ready || fds[0].revents() != 0 {
                if self.pos > 0 {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                let mut chunk = [0u8; 16 * 1024];
                match self.stream.read(&mut chunk) {
                    Ok(0) => return Err(Broken::Lost),
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Err(Broken::Lost),
                }
                continue;
            }
            if fds.get(1).is_some_and(|f| f.revents() != 0) {
                return Ok(None);
            }
        }
    }
}

/// The CONNECT properties: `-D connect ...`, and the session expiry
/// interval of `-x`, or "never" with `-c` as Mosquitto's tools ask.
fn connect_properties(cfg: &Config) -> Properties {
    let mut p = cfg.props.connect.clone();
    if cfg.level == Level::V5 && p.get(props::id::SESSION_EXPIRY).is_none() {
        let expiry = match (cfg.session_expiry, cfg.clean) {
            (Some(x), _) => Some(x),
            (None, false) => Some(u32::MAX),
            (None, true) => None,
        };
        if let Some(x) = expiry.filter(|&x| x > 0) {
            p.push(props::id::SESSION_EXPIRY, Value::Four(x));
        }
    }
    p
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Why [`Client::connect`] did not give a session.
#[derive(Debug)]
pub enum ConnectError {
    /// The socket did not open: print and exit as given.
    Exit(Exit),
    /// CONNACK refused with this return code.
    Refused(u8),
    /// The connection closed before CONNACK.
    Lost,
    /// The broker answered something other than CONNACK.
    Protocol,
    /// The caller's deadline passed first.
    Deadline,
}
