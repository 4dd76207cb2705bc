//! The connection shared by `midge_pub` and `midge_sub` (Mosquitto's
//! client_shared.c and the part of libmosquitto they use): open the socket,
//! CONNECT, then one poll(2) loop that reads packets with midge's own codec,
//! answers the broker's acknowledgements, keeps the connection alive with
//! PINGREQ and hands messages and SUBACKs to the tool.
//!
//! Everything is on one thread. Dialling, CONNECT, keepalive and reading
//! packets are the client link's ([`crate::link`]), shared with the bridge;
//! the QoS exchanges and libmosquitto's debug lines are here.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Instant;

use super::args::Config;
use crate::codec::{
    Ack, Connect, DecodeError, Disconnect, Packet, Properties, PubProps, Publish, QoS, SubAck,
    Subscribe, SubscribeFilter, Unsubscribe, Will, props,
};
use crate::link::{self, DialError, Link, LinkStream, Lost, Next, NoConnAck, strerror, tls};

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
pub fn open(cfg: &Config) -> Result<LinkStream, Exit> {
    if let Some(path) = &cfg.unix {
        return UnixStream::connect(path)
            .map(LinkStream::Unix)
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
    let s = link::dial(host, port, cfg.bind_address.as_deref()).map_err(|e| match e {
        DialError::Lookup(_) | DialError::NoAddress => lookup(),
        DialError::Connect(e) => Exit::new(1, format!("Error: {}\n", strerror(&e))),
    })?;
    if cfg.nodelay {
        let _ = s.set_nodelay(true);
    }
    let Some(config) = tls else {
        return Ok(LinkStream::Tcp(s));
    };
    tls::connect(config, host, s)
        .map(|t| LinkStream::Tls(Box::new(t)))
        .map_err(|e| Exit::new(1, format!("{e}\n")))
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
    link: Link,
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
        // The id as libmosquitto's debug lines print it.
        let log_id = if id.is_empty() {
            "(null)".into()
        } else {
            id.clone()
        };
        let mut c = Client {
            link: Link::new(
                stream,
                cfg.level,
                cfg.keepalive,
                cfg.debug.then_some(log_id),
            ),
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
            password: link::password(&cfg.username, &cfg.password),
            username: cfg.username.clone(),
            will,
            props: connect_properties(cfg),
            bridge: false,
        };
        match c.link.handshake(connect, deadline) {
            Ok(a) if a.code != 0 => Err(ConnectError::Refused(a.code)),
            Ok(_) => Ok(c),
            Err(NoConnAck::Write(_)) | Err(NoConnAck::Lost(Lost::Closed | Lost::Timeout)) => {
                Err(ConnectError::Lost)
            }
            Err(NoConnAck::Unexpected) | Err(NoConnAck::Lost(Lost::Protocol(_))) => {
                Err(ConnectError::Protocol)
            }
            Err(NoConnAck::Deadline) => Err(ConnectError::Deadline),
        }
    }

    fn log(&self, what: &str) {
        self.link.log(what);
    }

    fn send(&mut self, p: &Packet) -> io::Result<()> {
        self.link.send(p)
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
        self.link.stream.shutdown();
    }

    /// Waits for the next event: a packet the tool must see (acknowledgements
    /// are answered here), `extra` readable, or `deadline`.
    pub fn next(
        &mut self,
        extra: Option<RawFd>,
        deadline: Option<Instant>,
    ) -> Result<Event, Broken> {
        loop {
            let p = match self.link.next(extra, deadline) {
                Ok(Next::Packet(p)) => p,
                Ok(Next::Deadline) => return Ok(Event::Deadline),
                Ok(Next::Input) => return Ok(Event::Input),
                Err(Lost::Protocol(e)) => return Err(Broken::Protocol(e)),
                Err(Lost::Closed | Lost::Timeout) => return Err(Broken::Lost),
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
                Packet::PingResp => self.log("received PINGRESP"),
                // A broker sends none of the others to a client.
                other => return Err(Broken::Protocol(DecodeError::BadFlags(other.kind()))),
            }
        }
    }
}

/// The CONNECT properties: `-D connect ...`, and the session expiry
/// interval of `-x`, or "never" with `-c` as Mosquitto's tools ask.
fn connect_properties(cfg: &Config) -> Properties {
    let mut p = cfg.props.connect.clone();
    link::add_session_expiry(&mut p, cfg.level, cfg.clean, cfg.session_expiry);
    p
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
